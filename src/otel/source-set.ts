/**
 * What the producer and the observable instruments share about the sources they read: the set
 * (a list, or a function asked at every collection), each source's attributes, which tables of a
 * source are read, the mapping of each table (its skipped stats said once), and the key of a
 * metric's slot or instrument.
 */
import { type Attributes, diag } from '@opentelemetry/api';
import type { SourceTable, StatsSource } from '../sources/source.js';
import type { DescriptorTable } from '../stats/descriptors.js';
import { type MetricMapping, type TableMapping, type UnitMode, mapTable } from './mapping.js';
import { ATTR_KVM_VCPU_ID, ATTR_KVM_VCPU_INDEX, ATTR_KVM_VM_NAME, ATTR_KVM_VM_UUID, ATTR_PROCESS_PID, SCOPE_NAME } from './semconv.js';

/** The sources to read: a fixed list, or a function asked at every collection. */
export type SourceSet = Iterable<StatsSource> | (() => Iterable<StatsSource>);

/** The sources of a set for this collection. */
export function currentSources(sources: SourceSet): Iterable<StatsSource> {
  return typeof sources === 'function' ? sources() : sources;
}

const log = diag.createComponentLogger({ namespace: SCOPE_NAME });

/** Attributes of a source's data points, built once; the source's extra attributes first, so
 * the standard ones win. Every table of the source has them. */
export function sourceAttributes(source: StatsSource): Attributes {
  const attributes: Attributes = { ...source.attributes };
  if (source.pid !== undefined) attributes[ATTR_PROCESS_PID] = source.pid;
  if (source.vmName !== undefined) attributes[ATTR_KVM_VM_NAME] = source.vmName;
  if (source.vmUuid !== undefined) attributes[ATTR_KVM_VM_UUID] = source.vmUuid;
  if (source.file.vcpuId !== undefined) attributes[ATTR_KVM_VCPU_ID] = source.file.vcpuId;
  if (source.file.vcpuId !== undefined && source.vcpuIndex !== undefined) attributes[ATTR_KVM_VCPU_INDEX] = source.vcpuIndex;
  return attributes;
}

/**
 * Whether table `index` of a source's tables (sourceTables) is read, with `selected` of its
 * stats exported: the first, the stats fd, always (its read is what says whether the source can
 * be read, and a collection promises one pread per stats fd); a further table only for what it
 * exports, so that excluding every stat of it costs nothing.
 */
export function tableIsRead(index: number, selected: number): boolean {
  return index === 0 || selected > 0;
}

/** The mappings of the tables one reader (a producer, an instruments object) reads, in its unit
 * mode; the first time a table is mapped, its skipped stats are said, once per reader. */
export class TableMappings {
  readonly units: UnitMode;
  readonly #said = new WeakSet<DescriptorTable>();

  constructor(units: UnitMode) {
    this.units = units;
  }

  of(file: SourceTable): TableMapping {
    const { table } = file;
    if (table.skipped.length > 0 && !this.#said.has(table)) {
      this.#said.add(table);
      for (const { name, reason } of table.skipped) log.warn(`skipping KVM stat ${name}: ${reason}`);
    }
    return mapTable(table, file.target, this.units);
  }
}

/** The key of a metric's slot or instrument: one per name, kind and unit. */
export function metricKey(metric: MetricMapping): string {
  return `${metric.name}|${metric.kind}|${metric.unit}`;
}
