/**
 * The Prometheus names the mixin queries, for each way the metrics reach Prometheus:
 *
 * - `agent`: a scrape of the agent's own endpoint (`--prometheus`), named as its exporter names
 *   them (exporters/prometheus-text.ts): the metric name sanitized, the unit's word added in base
 *   units when the name does not already end with it (withUnitSuffix), `_total` on counters.
 * - `collector`: OTLP through an OpenTelemetry Collector (its Prometheus or remote-write
 *   exporter) or a Prometheus OTLP receiver, named by the translator they share (Prometheus'
 *   otlptranslator, formerly the Collector's pkg/translator/prometheus, in its default
 *   UnderscoreEscapingWithSuffixes): the name split into words at every character outside
 *   [a-zA-Z0-9:], the unit's word added unless it is one of the name's words (in either unit
 *   mode: `ns` adds `nanoseconds`), every word "total" of a counter moved to the end, and a gauge
 *   of unit "1" ending in `ratio`.
 *
 * Label names are the same both ways (dots to underscores: `kvm.vcpu.id` is `kvm_vcpu_id`), and so
 * are `job` and `instance`: the scrape's on the agent's endpoint, `service.name` and
 * `service.instance.id` through the Collector (scraped with honor_labels).
 */
import { type MetricKind, type MetricMapping, prometheusSanitize, prometheusUnitSuffixes, type UnitMode } from '../otel/mapping.js';
import { prometheusUnit, withUnitSuffix } from '../otel/prometheus-units.js';

/** How the metrics reach Prometheus, which decides their names. */
export type NamingWay = 'agent' | 'collector';

export const NAMING_WAYS: readonly NamingWay[] = ['agent', 'collector'];

/** What naming needs of a metric: as the SDK holds it. */
export interface NamedMetric {
  readonly name: string;
  readonly kind: MetricKind;
  readonly unit: string;
  /** A histogram whose data points carry a sum (the kernel's companion counter, or the SDK's). */
  readonly hasSum?: boolean;
}

/** A metric's Prometheus family name and the series names it writes. */
export interface PrometheusFamily {
  readonly name: string;
  /** The name itself, or a histogram's `_bucket`, `_sum` (where it has one) and `_count`. */
  readonly series: readonly string[];
}

/** What the agent's Prometheus endpoint calls a metric, in a unit mode (the exporter's rules). */
export function agentName(metric: NamedMetric, units: UnitMode): string {
  let name = prometheusSanitize(metric.name);
  const total = metric.kind === 'sum';
  if (prometheusUnitSuffixes(units)) name = withUnitSuffix(name, prometheusUnit(metric.unit), total);
  if (total && !name.endsWith('_total')) name += '_total';
  return name;
}

/** The translator's "per" words (its perUnitMap). */
const PER_UNITS: Readonly<Record<string, string>> = { s: 'second', m: 'minute', h: 'hour', d: 'day', w: 'week', mo: 'month', y: 'year' };

/** As the translator's cleanUpUnit: characters outside [a-zA-Z0-9:] as `_`, runs of `_` as one,
 * no leading `_`. */
function cleanUp(unit: string): string {
  return unit.replace(/[^a-zA-Z0-9:]/g, '_').replace(/_{2,}/g, '_').replace(/^_/, '');
}

/** The unit's main and "per" words as the translator builds them (buildUnitSuffixes): a part
 * with braces is none, a known one its word (the unitMap prometheus-units.ts follows), another
 * itself. */
function translatorUnits(unit: string): [main: string, per: string] {
  const slash = unit.indexOf('/');
  const mainUnit = (slash < 0 ? unit : unit.slice(0, slash)).trim();
  const perUnit = slash < 0 ? '' : unit.slice(slash + 1).trim();
  // A known unit's word ("1" has none); any other unit as it is, cleaned up.
  const known = /^[A-Za-z0-9%]+$/.test(mainUnit);
  const main = mainUnit === '' || /[{}]/.test(mainUnit) ? '' : cleanUp(known ? prometheusUnit(mainUnit) : mainUnit);
  const perWord = perUnit !== '' && !/[{}]/.test(perUnit) ? (PER_UNITS[perUnit] ?? perUnit) : '';
  return [main, perWord !== '' ? cleanUp(`per_${perWord}`) : ''];
}

/** What OTLP through the Collector (or Prometheus' OTLP receiver) calls a metric. */
export function collectorName(metric: NamedMetric): string {
  let words = metric.name.split(/[^a-zA-Z0-9:]+/).filter((word) => word !== '');
  // addUnitTokens: each part unless the name already has it as one of its words.
  let [main, per] = translatorUnits(metric.unit);
  if (words.includes(main)) main = '';
  per = per === 'per_' ? '' : per.replace(/_$/, '');
  if (words.includes(per)) per = '';
  if (per !== '') main = main.replace(/_$/, '');
  if (main !== '') words.push(main);
  if (per !== '') words.push(per);
  if (metric.kind === 'sum') words = [...words.filter((word) => word !== 'total'), 'total'];
  if (metric.unit === '1' && metric.kind === 'gauge') words = [...words.filter((word) => word !== 'ratio'), 'ratio'];
  const name = words.join('_');
  return /^[0-9]/.test(name) ? `_${name}` : name;
}

/** A metric's family and series names, as they reach Prometheus `way`. */
export function prometheusFamily(metric: NamedMetric, way: NamingWay, units: UnitMode): PrometheusFamily {
  const name = way === 'agent' ? agentName(metric, units) : collectorName(metric);
  if (metric.kind !== 'histogram') return { name, series: [name] };
  return { name, series: [`${name}_bucket`, ...(metric.hasSum ? [`${name}_sum`] : []), `${name}_count`] };
}

/** A KVM stat's mapping as the naming needs it. */
export function namedMapping(mapping: MetricMapping): NamedMetric {
  return { name: mapping.name, kind: mapping.kind, unit: mapping.unit, hasSum: mapping.sumFrom !== undefined };
}
