/**
 * How each kernel stat becomes an OpenTelemetry metric: name, kind, unit, description and,
 * for histograms, bucket bounds and the stat that supplies the sum. Decided once per
 * descriptor table; the producer and the instruments only apply it.
 */
import { isSchedstat } from '../sources/schedstat.js';
import { prometheusUnit } from './prometheus-units.js';
import type { DescriptorTable, StatDescriptor, StatsTarget, StatUnit } from '../stats/descriptors.js';
import { statMeaning } from './meanings.js';
import { METRIC_PREFIX } from './semconv.js';

export type MetricKind = 'sum' | 'gauge' | 'histogram';

/**
 * `exact` keeps the kernel's integers and puts the exponent in the unit ("ns", "KiBy");
 * combinations without such a unit are converted to the base unit. Names are the kernel's,
 * verbatim. `base` converts every value to the base unit ("s", "By"), as doubles where the
 * exponent demands it, and drops a unit suffix from the kernel's name (halt_wait_ns becomes
 * kvm.vcpu.halt_wait, unit s), so the name does not contradict the unit.
 */
export type UnitMode = 'exact' | 'base';

export interface MetricMapping {
  readonly stat: StatDescriptor;
  readonly name: string;
  readonly kind: MetricKind;
  readonly unit: string;
  readonly description: string;
  /** Factor from the kernel's integer to the exported value (base^exponent); 1 keeps it. */
  readonly scale: number;
  /** The scale as value * multiplier / divisor: dividing by an exact 10^n rounds correctly,
   * multiplying by 10^-n does not (3 * 1e-9 is not 3e-9). */
  readonly multiplier: number;
  readonly divisor: number;
  /** Exported values are integers (scale is a whole number). */
  readonly integer: boolean;
  /** Explicit-bucket upper bounds, histograms only. */
  readonly bounds: readonly number[] | undefined;
  /** The cumulative stat holding the sum of this histogram's samples, where the kernel has one. */
  readonly sumFrom: StatDescriptor | undefined;
}

export interface TableMapping {
  readonly target: StatsTarget;
  readonly units: UnitMode;
  readonly metrics: readonly MetricMapping[];
}

const BASE_UNITS: Record<StatUnit, string> = {
  none: '1',
  bytes: 'By',
  seconds: 's',
  cycles: '{cycle}',
  boolean: '1',
};

/** Units that carry the exponent exactly, by unit/base/exponent (UCUM, as OpenTelemetry uses). */
const EXACT_UNITS: Record<string, string> = {
  'seconds/10/-3': 'ms',
  'seconds/10/-6': 'us',
  'seconds/10/-9': 'ns',
  'bytes/2/10': 'KiBy',
  'bytes/2/20': 'MiBy',
  'bytes/2/30': 'GiBy',
  'bytes/10/3': 'kBy',
  'bytes/10/6': 'MBy',
  'bytes/10/9': 'GBy',
};

const TYPE_WORDS: Record<StatDescriptor['type'], string> = {
  cumulative: 'cumulative counter',
  instant: 'instantaneous value',
  peak: 'peak value',
  'linear-histogram': 'linear histogram',
  'log2-histogram': 'log2 histogram',
};

const UNIT_WORDS: Record<StatUnit, string> = {
  none: 'no unit',
  bytes: 'unit bytes',
  seconds: 'unit seconds',
  cycles: 'unit clock cycles',
  boolean: 'unit boolean (1 set, 0 clear)',
};

export function isHistogram(stat: StatDescriptor): boolean {
  return stat.type === 'linear-histogram' || stat.type === 'log2-histogram';
}

export function metricKind(stat: StatDescriptor): MetricKind {
  if (isHistogram(stat)) return 'histogram';
  return stat.type === 'cumulative' && stat.unit !== 'boolean' ? 'sum' : 'gauge';
}

/** The unit string and the multiplier that makes values fit it. */
export function unitFor(stat: StatDescriptor, mode: UnitMode): { unit: string; scale: number } {
  const base = BASE_UNITS[stat.unit];
  if (stat.exponent === 0) return { unit: base, scale: 1 };
  const exact = mode === 'exact' ? EXACT_UNITS[`${stat.unit}/${stat.base}/${stat.exponent}`] : undefined;
  if (exact) return { unit: exact, scale: 1 };
  return { unit: base, scale: stat.base ** stat.exponent };
}

/**
 * Upper-inclusive bounds, in the stat's own integer unit, that put every integer sample in the
 * bucket the kernel counted it in. Log2: bucket 0 holds 0, bucket i >= 1 holds [2^(i-1), 2^i),
 * so bucket i's last integer is 2^i - 1. Linear with bucket size b: bucket i holds
 * [i*b, (i+1)*b), last integer (i+1)*b - 1. The last bucket is open: n buckets, n - 1 bounds.
 */
export function histogramBounds(stat: StatDescriptor): number[] {
  const bounds: number[] = [];
  for (let i = 0; i < stat.size - 1; i++) {
    bounds.push(stat.type === 'log2-histogram' ? 2 ** i - 1 : (i + 1) * stat.bucketSize - 1);
  }
  return bounds;
}

/** The cumulative stat with a histogram's unit whose name is the histogram's stem plus a suffix:
 * halt_wait_hist <- halt_wait_ns. Only an unambiguous match counts. */
export function sumCompanion(histogram: StatDescriptor, stats: readonly StatDescriptor[]): StatDescriptor | undefined {
  const stem = `${histogram.name.replace(/_hist$/, '')}_`;
  const matches = stats.filter(
    (s) =>
      s !== histogram &&
      s.type === 'cumulative' &&
      s.name.startsWith(stem) &&
      s.unit === histogram.unit &&
      s.base === histogram.base &&
      s.exponent === histogram.exponent,
  );
  return matches.length === 1 ? matches[0] : undefined;
}

/**
 * Unit suffixes the kernel's names may end in, by the stat's unit: dropped from the name in base
 * units only where the descriptor's unit agrees (a "none" stat named *_ms is not a time). The
 * kernel's sets (generic, x86, arm64, s390, powerpc) use only `_ns` today; the rest are the
 * spellings its STATS_DESC_* time, size and cycle macros would invite.
 */
export const NAME_UNIT_SUFFIXES: Readonly<Record<StatUnit, readonly string[]>> = {
  none: [],
  boolean: [],
  seconds: ['_ns', '_nsec', '_us', '_usec', '_ms', '_msec', '_sec', '_secs', '_seconds'],
  bytes: ['_bytes', '_byte', '_kb', '_kib', '_mb', '_mib', '_gb', '_gib'],
  cycles: ['_cycles', '_cycle'],
};

/** The kernel's name without a unit suffix that matches its unit, or undefined when it has none. */
export function nameWithoutUnit(stat: StatDescriptor): string | undefined {
  const suffix = NAME_UNIT_SUFFIXES[stat.unit].find((s) => stat.name.endsWith(s) && stat.name.length > s.length);
  return suffix ? stat.name.slice(0, -suffix.length) : undefined;
}

/** Characters Prometheus does not allow become `_`, runs of `_` one, as
 * @opentelemetry/exporter-prometheus (0.223) sanitizes metric names. */
export function prometheusSanitize(name: string): string {
  const sanitized = name.replace(/[^a-z0-9_]/gi, '_').replace(/_{2,}/g, '_');
  return /^[0-9]/.test(sanitized) ? `_${sanitized}` : sanitized;
}

/**
 * Whether Prometheus names carry unit suffixes in a unit mode: in base units, as the
 * OpenTelemetry specification's Prometheus compatibility rules say (kvm_vcpu_halt_wait_seconds_total);
 * in exact units, the kernel's names as @opentelemetry/exporter-prometheus writes them. The one
 * place where this follows from `units`: for the names schema shows and for the agent's
 * Prometheus output alike.
 */
export function prometheusUnitSuffixes(units: UnitMode): boolean {
  return units === 'base';
}

/** How a metric is named in Prometheus text: the name on its HELP/TYPE lines and its series. */
export interface PrometheusNames {
  /** The metric family's name as on its HELP, UNIT and TYPE lines (a counter's ends in _total). */
  readonly name: string;
  /** Every series name it writes: the name; or a histogram's _bucket, _sum (only with a sum) and _count. */
  readonly series: readonly string[];
}

/**
 * The Prometheus names of a metric. Without `unitSuffix`, as @opentelemetry/exporter-prometheus
 * 0.223 names them: sanitized, and `_total` on monotonic sums. With it, as the OpenTelemetry
 * specification's Prometheus compatibility rules say: the unit's word is added unless the name
 * already has it as a word, before `_total` (kvm.vcpu.halt_wait, unit s, a sum:
 * kvm_vcpu_halt_wait_seconds_total).
 */
export function prometheusNames(
  metric: Pick<MetricMapping, 'name' | 'kind' | 'unit'> & { readonly sumFrom?: StatDescriptor | undefined },
  unitSuffix: boolean,
): PrometheusNames {
  let name = prometheusSanitize(metric.name);
  const counter = metric.kind === 'sum';
  if (unitSuffix) {
    if (counter && name.endsWith('_total')) name = name.slice(0, -'_total'.length);
    // The unit's word: full words for abbreviations, nothing for annotations in braces ({cycle},
    // {vcpu}: a count is unitless in Prometheus) and for "1", "a/b" as "a_per_b".
    const word = prometheusUnit(metric.unit);
    // "Unless the name already contains the unit": as whole words (halt_wait_seconds has it, halt_waits does not).
    if (word !== '' && !`_${name}_`.includes(`_${word}_`)) name += `_${word}`;
  }
  if (counter && !name.endsWith('_total')) name += '_total';
  if (metric.kind !== 'histogram') return { name, series: [name] };
  return { name, series: [`${name}_bucket`, ...(metric.sumFrom ? [`${name}_sum`] : []), `${name}_count`] };
}

/**
 * The metric name of every stat of a table in a unit mode. Exact: the prefix plus the kernel's
 * name. Base: the unit suffix goes where the stat has one, unless that would make its metric name,
 * or one of its Prometheus series, the same as another stat's; then the colliding stats keep their
 * kernel names (repeated until no collision is left that dropping a suffix caused).
 */
export function metricNames(stats: readonly StatDescriptor[], target: StatsTarget, units: UnitMode): ReadonlyMap<StatDescriptor, string> {
  const key = `${target}/${units}`;
  let byMode = namesCache.get(stats);
  if (!byMode) namesCache.set(stats, (byMode = new Map()));
  let names = byMode.get(key);
  if (!names) byMode.set(key, (names = resolveNames(stats, target, units)));
  return names;
}

/** Names worked out once per list of stats (a table's), target and mode. */
const namesCache = new WeakMap<readonly StatDescriptor[], Map<string, ReadonlyMap<StatDescriptor, string>>>();

function resolveNames(stats: readonly StatDescriptor[], target: StatsTarget, units: UnitMode): Map<StatDescriptor, string> {
  const names = new Map<StatDescriptor, string>(stats.map((stat) => [stat, METRIC_PREFIX[target] + stat.name]));
  if (units === 'exact') return names;
  const stripped = new Set<StatDescriptor>();
  for (const stat of stats) {
    const short = nameWithoutUnit(stat);
    if (short !== undefined) {
      names.set(stat, METRIC_PREFIX[target] + short);
      stripped.add(stat);
    }
  }
  for (;;) {
    const owners = new Map<string, StatDescriptor[]>();
    const claim = (key: string, stat: StatDescriptor) => {
      const list = owners.get(key);
      if (list) list.push(stat);
      else owners.set(key, [stat]);
    };
    for (const stat of stats) {
      const name = names.get(stat)!;
      claim(`otel:${name}`, stat);
      const { unit } = unitFor(stat, units);
      const kind = metricKind(stat);
      // Every series a histogram could write, its _sum included, whether or not it has one; and
      // the NAME.max a vCPU gauge also becomes under VM aggregation.
      const claimed = [name, ...(target === 'vcpu' && kind === 'gauge' && stat.unit !== 'boolean' ? [name + MAX_SUFFIX] : [])];
      for (const each of claimed) {
        if (each !== name) claim(`otel:${each}`, stat);
        for (const series of prometheusNames({ name: each, kind, unit, sumFrom: stat }, true).series) claim(`prometheus:${series}`, stat);
      }
    }
    const revert = new Set<StatDescriptor>();
    for (const list of owners.values()) {
      if (list.length > 1) for (const stat of list) if (stripped.has(stat)) revert.add(stat);
    }
    if (revert.size === 0) return names;
    for (const stat of revert) {
      names.set(stat, METRIC_PREFIX[target] + stat.name);
      stripped.delete(stat);
    }
  }
}

/** What a stat is called in a unit mode: its metric name and its Prometheus names (unit suffixes
 * in base mode, as the agent's Prometheus output writes them then; none in exact mode). */
export interface StatNames {
  readonly otel: string;
  readonly prometheus: PrometheusNames;
}

/** The names of `stat` of a table (`stats`, for collisions and the histogram sum) in a unit mode. */
export function statNames(stat: StatDescriptor, target: StatsTarget, units: UnitMode, stats: readonly StatDescriptor[] = [stat]): StatNames {
  const metric = mapStat(stat, target, units, stats);
  return { otel: metric.name, prometheus: prometheusNames(metric, prometheusUnitSuffixes(units)) };
}

function describe(stat: StatDescriptor, target: StatsTarget, unit: string, scale: number, sumFrom: StatDescriptor | undefined): string {
  const meaning = statMeaning(target, stat.name);
  const what = isSchedstat(stat) ? 'vCPU thread\'s scheduler stat (/proc/PID/task/TID/schedstat)' : `KVM ${target === 'vm' ? 'VM' : 'vCPU'} stat`;
  const words = [
    `${what} ${stat.name}: ${TYPE_WORDS[stat.type]}`,
    stat.type === 'linear-histogram' ? ` (bucket size ${stat.bucketSize})` : '',
    `, ${UNIT_WORDS[stat.unit]}, base ${stat.base}, exponent ${stat.exponent}.`,
    meaning ? ` ${meaning}` : '',
  ];
  if (scale !== 1) words.push(` Values converted to ${unit} (multiplied by ${stat.base}^${stat.exponent}).`);
  if (isHistogram(stat)) {
    words.push(sumFrom ? ` Sum from ${sumFrom.name}.` : ' No sum: the kernel keeps none for this histogram.');
  }
  return words.join('');
}

export function mapStat(
  stat: StatDescriptor,
  target: StatsTarget,
  units: UnitMode = 'exact',
  stats: readonly StatDescriptor[] = [stat],
): MetricMapping {
  const { unit, scale } = unitFor(stat, units);
  const multiplier = scale >= 1 ? scale : 1;
  const divisor = scale >= 1 ? 1 : stat.base ** -stat.exponent;
  const kind = metricKind(stat);
  const sumFrom = kind === 'histogram' ? sumCompanion(stat, stats) : undefined;
  const name = units === 'exact' ? METRIC_PREFIX[target] + stat.name : metricNames(stats.includes(stat) ? stats : [...stats, stat], target, units).get(stat)!;
  return {
    stat,
    name,
    kind,
    unit,
    description: describe(stat, target, unit, scale, sumFrom),
    scale,
    integer: Number.isInteger(scale),
    multiplier,
    divisor,
    bounds: kind === 'histogram' ? histogramBounds(stat).map((bound) => (bound * multiplier) / divisor) : undefined,
    sumFrom,
  };
}

const tableMappings = new WeakMap<DescriptorTable, Map<string, TableMapping>>();

/** The mapping of a whole table, made once per table, target and unit mode. */
export function mapTable(table: DescriptorTable, target: StatsTarget, units: UnitMode = 'exact'): TableMapping {
  let byMode = tableMappings.get(table);
  if (!byMode) tableMappings.set(table, (byMode = new Map()));
  const key = `${target}/${units}`;
  let mapping = byMode.get(key);
  if (!mapping) {
    mapping = { target, units, metrics: table.stats.map((stat) => mapStat(stat, target, units, table.stats)) };
    byMode.set(key, mapping);
  }
  return mapping;
}

/** Suffix of the metric that carries a gauge's largest per-vCPU value under VM aggregation. */
export const MAX_SUFFIX = '.max';

/** One metric a vCPU stat becomes when vCPU series are summed per VM, and how it is computed:
 * `sum` over the VM's vCPUs (a boolean's 0/1 sums to the count of vCPUs with it set), or `max`. */
export interface VmAggregateMapping {
  readonly mapping: MetricMapping;
  readonly aggregate: 'sum' | 'max';
}

/**
 * What a vCPU stat becomes under `vcpuAggregation: 'vm'`, one series per VM as the kernel's
 * debugfs shows them: counters and histogram buckets summed; a boolean as the number of vCPUs
 * for which it is set (unit {vcpu}); any other gauge twice, summed under its own name and as
 * the largest vCPU's value under the name plus ".max".
 */
export function vmAggregateMappings(metric: MetricMapping): VmAggregateMapping[] {
  const summed = (text: string, changes: Partial<MetricMapping> = {}): MetricMapping => ({ ...metric, ...changes, description: `${metric.description} ${text}` });
  if (metric.kind !== 'gauge') {
    const what = metric.kind === 'histogram' ? 'Buckets, count and sum added up' : 'Summed';
    return [{ mapping: summed(`${what} over the VM's vCPUs (one series per VM).`), aggregate: 'sum' }];
  }
  if (metric.stat.unit === 'boolean') {
    const counted = summed('Exported per VM as the number of its vCPUs for which it is set.', { unit: '{vcpu}', scale: 1, multiplier: 1, divisor: 1, integer: true });
    return [{ mapping: counted, aggregate: 'sum' }];
  }
  const max = `${metric.name}${MAX_SUFFIX}`;
  return [
    { mapping: summed(`Summed over the VM's vCPUs (one series per VM); the largest vCPU's value is ${max}.`), aggregate: 'sum' },
    { mapping: { ...metric, name: max, description: `${metric.description} The largest value of one of the VM's vCPUs (one series per VM); the sum is ${metric.name}.` }, aggregate: 'max' },
  ];
}
