/**
 * How each kernel stat becomes an OpenTelemetry metric: name, kind, unit, description and,
 * for histograms, bucket bounds and the stat that supplies the sum. Decided once per
 * descriptor table; the producer and the instruments only apply it.
 */
import type { DescriptorTable, StatDescriptor, StatsTarget, StatUnit } from '../stats/descriptors.js';
import { METRIC_PREFIX } from './semconv.js';

export type MetricKind = 'sum' | 'gauge' | 'histogram';

/**
 * `exact` keeps the kernel's integers and puts the exponent in the unit ("ns", "KiBy");
 * combinations without such a unit are converted to the base unit. `base` converts every value
 * to the base unit ("s", "By"), as doubles where the exponent demands it.
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

function describe(stat: StatDescriptor, target: StatsTarget, unit: string, scale: number, sumFrom: StatDescriptor | undefined): string {
  const words = [
    `KVM ${target === 'vm' ? 'VM' : 'vCPU'} stat ${stat.name}: ${TYPE_WORDS[stat.type]}`,
    stat.type === 'linear-histogram' ? ` (bucket size ${stat.bucketSize})` : '',
    `, ${UNIT_WORDS[stat.unit]}, base ${stat.base}, exponent ${stat.exponent}.`,
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
  return {
    stat,
    name: METRIC_PREFIX[target] + stat.name,
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
