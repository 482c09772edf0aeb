/**
 * What a selection and aggregation export, and how many series that makes for a set of stats
 * fds: what `schema` and `list` show, from the same mapping and grouping as the producer.
 */
import { SCHEDSTAT_TABLE } from '../sources/schedstat.js';
import { type StatsSource, sourceTables } from '../sources/source.js';
import type { DescriptorTable, StatsTarget } from '../stats/descriptors.js';
import { type VcpuAggregation, vmKey } from '../otel/aggregation.js';
import { type MetricMapping, type UnitMode, mapTable, vmAggregateMappings } from '../otel/mapping.js';
import type { StatSelection } from '../otel/selection.js';

/** Per collection: OpenTelemetry data points, and the time series they make in Prometheus (a
 * histogram makes one per bucket, a count and, where it has one, a sum). */
export interface SeriesCount {
  dataPoints: number;
  prometheusSeries: number;
}

/** What one stat of a table becomes: its metric and, when exported, the metrics it feeds. */
export interface StatExport {
  readonly metric: MetricMapping;
  readonly exported: boolean;
  /** One metric per series, or the summed and .max ones of a VM; empty when not exported. */
  readonly outputs: readonly MetricMapping[];
}

export interface ExportOptions {
  readonly selection: StatSelection;
  readonly vcpuAggregation: VcpuAggregation;
  readonly units: UnitMode;
}

/** The selection and aggregation as plain data, for JSON and for saying in words. */
export interface SelectionSummary {
  include: string[];
  exclude: string[];
  vcpuAggregation: VcpuAggregation;
}

export function selectionSummary(options: ExportOptions): SelectionSummary {
  return { include: [...options.selection.include], exclude: [...options.selection.exclude], vcpuAggregation: options.vcpuAggregation };
}

/** Every stat of a table and what it is exported as. */
export function tableExports(table: DescriptorTable, target: StatsTarget, options: ExportOptions): StatExport[] {
  const aggregated = options.vcpuAggregation === 'vm' && target === 'vcpu';
  return mapTable(table, target, options.units).metrics.map((metric) => {
    const exported = options.selection.selects(target, metric.stat.name);
    const outputs = !exported ? [] : aggregated ? vmAggregateMappings(metric).map((o) => o.mapping) : [metric];
    return { metric, exported, outputs };
  });
}

/** The series one fd (or, summed per VM, one VM) of this table makes per collection. */
export function seriesOfTable(exports: readonly StatExport[]): SeriesCount {
  const count: SeriesCount = { dataPoints: 0, prometheusSeries: 0 };
  for (const { outputs } of exports) {
    for (const output of outputs) {
      count.dataPoints++;
      count.prometheusSeries += output.kind === 'histogram' ? output.stat.size + 1 + (output.sumFrom ? 1 : 0) : 1;
    }
  }
  return count;
}

/** The series a set of stats fds makes per collection, and what it is made of. */
export interface HostSeries extends SeriesCount {
  /** Stats fds of VMs, and of vCPUs. */
  vmFds: number;
  vcpuFds: number;
  /** Under VM aggregation: the VMs the vCPU series are summed into; otherwise null. */
  vcpuGroups: number | null;
}

/** The series `sources` make per collection, grouped as the producer groups them. */
export function hostSeries(sources: readonly StatsSource[], options: ExportOptions): HostSeries {
  const perTable = new Map<DescriptorTable, SeriesCount>();
  /** Per vCPU table, the VMs seen (the producer groups by table, owner pid and VM name). */
  const vms = new Map<DescriptorTable, Set<string>>();
  const host: HostSeries = { dataPoints: 0, prometheusSeries: 0, vmFds: 0, vcpuFds: 0, vcpuGroups: null };
  for (const source of sources) {
    if (source.file.target === 'vm') host.vmFds++;
    else host.vcpuFds++;
    // Every table the producer reads for this source: its stats fd, and a vCPU thread's schedstat.
    for (const { table, target } of sourceTables(source)) {
      if (options.vcpuAggregation === 'vm' && target === 'vcpu') {
        let seen = vms.get(table);
        if (!seen) vms.set(table, (seen = new Set()));
        if (seen.has(vmKey(source))) continue;
        seen.add(vmKey(source));
      }
      let count = perTable.get(table);
      if (!count) perTable.set(table, (count = seriesOfTable(tableExports(table, target, options))));
      host.dataPoints += count.dataPoints;
      host.prometheusSeries += count.prometheusSeries;
    }
  }
  // The VMs a vCPU table sums into, counted once: by the stats fds' tables, not again by schedstat's.
  if (options.vcpuAggregation === 'vm') host.vcpuGroups = [...vms].reduce((sum, [table, seen]) => sum + (table === SCHEDSTAT_TABLE ? 0 : seen.size), 0);
  return host;
}

/** The series per collection: of the host, and of each process read. */
export interface ListedSeries {
  selection: SelectionSummary;
  host: HostSeries;
  processes: (HostSeries & { pid: number })[];
}

/** The series of `sources` per collection, for the host and per owning process. */
export function seriesOf(sources: readonly StatsSource[], options: ExportOptions): ListedSeries {
  const byPid = new Map<number, StatsSource[]>();
  for (const source of sources) {
    const pid = source.pid ?? 0;
    byPid.set(pid, [...(byPid.get(pid) ?? []), source]);
  }
  return {
    selection: selectionSummary(options),
    host: hostSeries(sources, options),
    processes: [...byPid].map(([pid, list]) => ({ pid, ...hostSeries(list, options) })),
  };
}
