/**
 * A source is one open stats file plus what is known about who owns it. Everything that finds
 * stats fds (own VMs, another process's, saved images) produces these; the mapping to
 * OpenTelemetry reads nothing else. A source is read from one or more tables (SourceTable): its
 * stats fd, and for a vCPU with a thread of its own that thread's scheduler time.
 */
import type { DescriptorTable, StatsTarget } from '../stats/descriptors.js';
import type { StatsFile } from '../stats/stats-file.js';
import { vcpuIndexOfThread } from './proc.js';
import type { SchedstatFile } from './schedstat.js';

export interface StatsOwner {
  /** The process that owns the VM (not the creating thread in the id string). */
  readonly pid?: number | undefined;
  /** A name for the VM, where the VMM gives one. */
  readonly vmName?: string | undefined;
  /** The VM's UUID, where the VMM was given one (QEMU's -uuid): unlike the pid, it survives a restart. */
  readonly vmUuid?: string | undefined;
  /** Start of the cumulative values, ms since the epoch: the owner's start where known. */
  readonly startTimeMs?: number | undefined;
  /** More attributes for every data point, e.g. from a hand-over sender; the standard ones win. */
  readonly attributes?: SourceAttributes | undefined;
}

export type SourceAttributes = Readonly<Record<string, string | number | boolean>>;

export interface StatsSource {
  readonly file: StatsFile;
  readonly pid: number | undefined;
  readonly vmName: string | undefined;
  readonly vmUuid?: string | undefined;
  /**
   * The VMM's own number of this vCPU (QEMU's cpu-index, libvirt's vCPU number), where the VMM
   * says it; the kernel's vCPU id (file.vcpuId, the APIC id on x86) may differ from it.
   */
  readonly vcpuIndex?: number | undefined;
  readonly startTimeMs: number;
  /** How the fd was obtained, for `read` and logs: "own VM", "pidfd_getfd from 1234 fd 17", a path. */
  readonly origin: string;
  readonly attributes?: SourceAttributes | undefined;
  /** A vCPU's thread's scheduler time, where the vCPU has a thread of its own (schedstat.ts:
   * attachSchedstats sets it, and it closes when the thread exits). */
  schedstat?: SchedstatFile | undefined;
}

/**
 * One file a source is read from at every collection, its values laid out as its descriptor
 * table says: a stats fd (StatsFile), or a vCPU thread's schedstat (SchedstatFile). Every stage
 * (planning, the producer, VM aggregation, the instruments) treats the tables of a source alike.
 */
export interface SourceTable {
  readonly table: DescriptorTable;
  readonly target: StatsTarget;
  readonly closed: boolean;
  /** The values as last read (read()), as host-endian 32-bit words, two per u64. */
  readonly words: Uint32Array;
  /** One pread into `words`, as readInto. */
  read(): boolean;
  /**
   * One pread into `buffer` (at least table.dataSize bytes): true when the buffer holds this
   * read's values; false when the file has ended for good (a vCPU thread that exited: the file
   * closed itself); a StatsReadError when a read that should work failed (an fd closed under it,
   * a truncated image), which the reader reports.
   */
  readInto(buffer: Uint8Array): boolean;
}

/** A vCPU's schedstat while it is open; undefined for a VM or without one. */
function openSchedstat(source: StatsSource): SchedstatFile | undefined {
  const schedstat = source.schedstat;
  return schedstat !== undefined && !schedstat.closed && source.file.target === 'vcpu' ? schedstat : undefined;
}

/** The tables of a source in the order a collection reads them: its stats fd, then its vCPU
 * thread's schedstat while it has one open. The one place that says what a source is read from. */
export function sourceTables(source: StatsSource): SourceTable[] {
  const schedstat = openSchedstat(source);
  return schedstat === undefined ? [source.file] : [source.file, schedstat];
}

/** Whether `tables` (sourceTables of this source, some time ago) are still its tables: what a
 * reader of thousands of sources asks at every collection, so it allocates nothing. */
export function sameTables(source: StatsSource, tables: readonly SourceTable[]): boolean {
  const schedstat = openSchedstat(source);
  return tables[0] === source.file && (schedstat === undefined ? tables.length === 1 : tables.length === 2 && tables[1] === schedstat);
}

/** Wraps an open StatsFile; without a known start time, cumulative values start now. A vCPU of
 * a known process gets its index from the name of the thread that created it (vcpuIndexOfThread). */
export function statsSource(file: StatsFile, owner: StatsOwner, origin: string): StatsSource {
  const vcpuIndex = owner.pid !== undefined && file.vcpuId !== undefined ? vcpuIndexOfThread(owner.pid, file.threadId) : undefined;
  return {
    file,
    pid: owner.pid,
    vmName: owner.vmName,
    ...(owner.vmUuid !== undefined ? { vmUuid: owner.vmUuid } : {}),
    ...(vcpuIndex !== undefined ? { vcpuIndex } : {}),
    startTimeMs: owner.startTimeMs ?? Date.now(),
    origin,
    ...(owner.attributes ? { attributes: owner.attributes } : {}),
  };
}

/** Closes every source's fd (and its schedstat file); safe to call twice. */
export function closeSources(sources: Iterable<StatsSource>): void {
  for (const source of sources) {
    source.file.close();
    source.schedstat?.close();
  }
}
