/**
 * What each stat of a source becomes: the kernel's descriptor beside its metric, read once with
 * its value (reportSource: what `read` shows), or per distinct descriptor table under a selection
 * and aggregation, with the series that makes (schemaOf: what `schema` and docs/metrics.md show).
 */
import { machine, release } from 'node:os';
import type { StatsSource } from '../sources/source.js';
import type { DescriptorTable, StatsTarget } from '../stats/descriptors.js';
import { type MetricMapping, type PrometheusNames, type UnitMode, mapTable, prometheusNames, prometheusUnitSuffixes, vmAggregateMappings } from '../otel/mapping.js';
import { statMeaning } from '../otel/meanings.js';
import { type ExportOptions, type HostSeries, type SelectionSummary, type SeriesCount, hostSeries, selectionSummary, seriesOfTable, tableExports } from './series.js';

export interface StatReport {
  name: string;
  type: string;
  unit: string;
  base: number;
  exponent: number;
  size: number;
  bucketSize: number;
  /** A number, or bucket counts; a decimal string for a value above 2^53. */
  value: number | string | (number | string)[];
  otel: { name: string; kind: string; unit: string; bounds?: number[] };
}

export interface SourceReport {
  id: string;
  target: 'vm' | 'vcpu';
  pid: number | null;
  vcpu: number | null;
  vmName: string | null;
  origin: string;
  stats: StatReport[];
  skipped: { name: string; reason: string }[];
}

function json(value: number | bigint): number | string {
  return typeof value === 'bigint' ? value.toString() : value;
}

/** Reads `source` once (one pread) and reports every stat. */
export function reportSource(source: StatsSource, units: UnitMode): SourceReport {
  const { file } = source;
  file.read();
  const { metrics } = mapTable(file.table, file.target, units);
  return {
    id: file.id,
    target: file.target,
    pid: source.pid ?? null,
    vcpu: file.vcpuId ?? null,
    vmName: source.vmName ?? null,
    origin: source.origin,
    stats: metrics.map(({ stat, name, kind, unit, bounds }) => ({
      name: stat.name,
      type: stat.type,
      unit: stat.unit,
      base: stat.base,
      exponent: stat.exponent,
      size: stat.size,
      bucketSize: stat.bucketSize,
      value: kind === 'histogram'
        ? Array.from({ length: stat.size }, (_, bucket) => json(file.exactValue(stat, bucket)))
        : json(file.exactValue(stat)),
      otel: { name, kind, unit, ...(bounds ? { bounds: [...bounds] } : {}) },
    })),
    skipped: [...file.table.skipped],
  };
}

/** A metric's name and its Prometheus names in one unit mode. */
export interface ModeNames {
  otel: string;
  prometheus: PrometheusNames;
}

/** What a stat is called in a unit mode: under VM aggregation a gauge's `.max` metric too. */
export type StatModeNames = ModeNames & { max?: ModeNames };

/** A stat as the kernel states it and the metric it becomes; under VM aggregation the summed
 * metric, with `max` for a gauge's second one. `exported` false: the selection leaves it out.
 * `names` holds its names in both unit modes, whichever `units` the rest is in; `meaning` is the
 * one line of src/otel/meanings.ts, null for a stat it does not know. */
export type SchemaStat = Omit<StatReport, 'value'> & {
  exported: boolean;
  meaning: string | null;
  names: Record<UnitMode, StatModeNames>;
  otel: StatReport['otel'] & { description: string; sumFrom: string | null; max?: { name: string; description: string } };
};

export interface SchemaTable {
  target: 'vm' | 'vcpu';
  /** The id of the fd it was read from, e.g. "kvm-1234/vcpu-0". */
  example: string;
  stats: SchemaStat[];
  skipped: { name: string; reason: string }[];
  /** Per collection, from one fd of this table (under VM aggregation, one VM's vCPUs). */
  series: SeriesCount;
  /** Patterns of this target that match none of its stats, as "include vcpu:exitz". */
  unmatched: string[];
}

export interface Schema {
  kernel: { release: string; arch: string };
  units: UnitMode;
  selection: SelectionSummary;
  tables: SchemaTable[];
  /** Per collection, for every fd read. */
  series: HostSeries;
}

/**
 * The names of every stat of a table in a unit mode, as the agent exports them: the metric name,
 * and the Prometheus names (exact units: as @opentelemetry/exporter-prometheus writes them; base
 * units: with the unit's word, as the OpenTelemetry specification's Prometheus compatibility says).
 */
function tableNames(table: DescriptorTable, target: StatsTarget, units: UnitMode, aggregated: boolean): StatModeNames[] {
  const named = (metric: MetricMapping): ModeNames => ({ otel: metric.name, prometheus: prometheusNames(metric, prometheusUnitSuffixes(units)) });
  return mapTable(table, target, units).metrics.map((metric) => {
    const [main = metric, max] = aggregated ? vmAggregateMappings(metric).map((o) => o.mapping) : [metric];
    return { ...named(main), ...(max ? { max: named(max) } : {}) };
  });
}

/** One table per target and distinct descriptor table: every vCPU of a kernel shares one. */
export function schemaOf(sources: readonly StatsSource[], options: ExportOptions): Schema {
  const { units, selection } = options;
  const seen = new Set<unknown>();
  const tables: SchemaTable[] = [];
  for (const source of sources) {
    const { file } = source;
    const key = mapTable(file.table, file.target, units);
    if (seen.has(key)) continue;
    seen.add(key);
    const report = reportSource(source, units);
    const exports = tableExports(file.table, file.target, options);
    const aggregated = options.vcpuAggregation === 'vm' && file.target === 'vcpu';
    const names = { exact: tableNames(file.table, file.target, 'exact', aggregated), base: tableNames(file.table, file.target, 'base', aggregated) };
    tables.push({
      target: report.target,
      example: report.id,
      stats: report.stats.map(({ value: _, ...stat }, i) => {
        const { metric, exported, outputs } = exports[i]!;
        const [main = metric, max] = outputs;
        return {
          ...stat,
          exported,
          meaning: statMeaning(file.target, stat.name) ?? null,
          names: { exact: names.exact[i]!, base: names.base[i]! },
          otel: {
            ...stat.otel,
            name: main.name,
            unit: main.unit,
            description: main.description,
            sumFrom: metric.sumFrom?.name ?? null,
            ...(max ? { max: { name: max.name, description: max.description } } : {}),
          },
        };
      }),
      skipped: report.skipped,
      series: seriesOfTable(exports),
      unmatched: selection.unmatched(file.table, file.target),
    });
  }
  tables.sort((a, b) => (a.target === b.target ? 0 : a.target === 'vm' ? -1 : 1));
  return {
    kernel: { release: release(), arch: machine() },
    units,
    selection: selectionSummary(options),
    tables,
    series: hostSeries(sources, options),
  };
}
