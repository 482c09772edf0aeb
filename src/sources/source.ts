/**
 * A source is one open stats file plus what is known about who owns it. Everything that finds
 * stats fds (own VMs, another process's, saved images) produces these; the mapping to
 * OpenTelemetry reads nothing else.
 */
import type { StatsFile } from '../stats/stats-file.js';
import type { SchedstatFile } from './schedstat.js';

export interface StatsOwner {
  /** The process that owns the VM (not the creating thread in the id string). */
  readonly pid?: number | undefined;
  /** A name for the VM, where the VMM gives one. */
  readonly vmName?: string | undefined;
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
  readonly startTimeMs: number;
  /** How the fd was obtained, for `read` and logs: "own VM", "pidfd_getfd from 1234 fd 17", a path. */
  readonly origin: string;
  readonly attributes?: SourceAttributes | undefined;
  /** A vCPU's thread's scheduler time, where the vCPU has a thread of its own (schedstat.ts:
   * attachSchedstats sets it, and it closes when the thread exits). */
  schedstat?: SchedstatFile | undefined;
}

/** Wraps an open StatsFile; without a known start time, cumulative values start now. */
export function statsSource(file: StatsFile, owner: StatsOwner, origin: string): StatsSource {
  return {
    file,
    pid: owner.pid,
    vmName: owner.vmName,
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
