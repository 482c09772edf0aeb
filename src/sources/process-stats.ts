/**
 * The stats fds another process holds (QEMU 8.1+ keeps one per vCPU), copied with
 * pidfd_getfd. This needs ptrace access to that process: the same uid, or CAP_SYS_PTRACE.
 * A copy is only a reference: the VMM keeps its own, and closing ours changes nothing for it.
 * The process is watched through its HeldProcess (held-process.ts), whose one pidfd the copies
 * are made through and whose owner they carry.
 */
import { ANON_INODE_VM } from '../abi/kvm.js';
import { type HeldProcess, HeldProcesses, copyStatsFd, noStatsFdsProblem } from './held-process.js';
import { type Problem, errnoCode } from './problem.js';
import { type FdLink, commandLine, fdLinks, isStatsLink, othersFdsNeed, vmNameFromCommandLine } from './proc.js';
import { type StatsSource, statsSource } from './source.js';

export interface ProcessStats {
  readonly pid: number;
  readonly sources: StatsSource[];
  /** One per thing that could not be read, with what to do about it. */
  readonly problems: Problem[];
}

/** Lists a process's fds; a clear error when that is not allowed or the process is gone. */
function linksOf(pid: number): FdLink[] {
  try {
    return fdLinks(pid);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`process ${pid} does not exist: check the pid`);
    if (code === 'EACCES' || code === 'EPERM') {
      throw new Error(`listing /proc/${pid}/fd failed with ${code}: reading another user's process's fds needs ${othersFdsNeed()}`);
    }
    throw error;
  }
}

/**
 * The KVM stats fds process `pid` holds, as /proc/PID/fd lists them, or why there is nothing
 * to copy. Throws a clear error when its fds cannot be listed.
 */
export function statsLinksOf(pid: number): { links: FdLink[]; problem?: Problem } {
  const links = linksOf(pid);
  const statsLinks = links.filter((link) => isStatsLink(link.target));
  if (statsLinks.length > 0) return { links: statsLinks };
  const vms = links.filter((link) => link.target === ANON_INODE_VM).length;
  const problem: Problem =
    vms > 0 ? noStatsFdsProblem(pid, vms, vmNameFromCommandLine(commandLine(pid))) : { kind: 'no-stats-fds', pid, message: `process ${pid} holds no KVM stats fds: is it a VMM running a KVM guest?` };
  return { links: [], problem };
}

/**
 * Copies each of `links` (statsLinksOf) through the pidfd of `held`, the process that holds
 * them, and opens it; each source's owner is the held process's, or for a reader's copy the
 * process of the thread that created it. Fds that cannot be copied or are not valid stats images
 * are reported in `problems`, not thrown; nothing is left open for them.
 */
export function copyProcessStats(held: HeldProcess, links: readonly FdLink[]): { sources: StatsSource[]; problems: Problem[] } {
  const { pid } = held;
  const sources: StatsSource[] = [];
  const problems: Problem[] = [];
  for (const link of links) {
    const what = `process ${pid} fd ${link.fd} (${link.target})`;
    try {
      const copied = copyStatsFd(held.pidfd, link.fd);
      if (!copied) {
        problems.push({ kind: 'copy-failed', pid, message: `${what}: closed in the meantime, or the process exited; read it again` });
        continue;
      }
      // The creating thread's process, if it still runs; else the holder.
      sources.push(statsSource(copied.file, { ...held.owner, pid: copied.creator ?? pid }, `pidfd_getfd from process ${pid} fd ${link.fd}`));
    } catch (error) {
      problems.push({ kind: 'copy-failed', pid, code: errnoCode(error), message: `${what}: ${(error as Error).message}` });
    }
  }
  return { sources, problems };
}

/**
 * Copies every KVM stats fd of process `pid` and opens it, once: the caller closes the sources
 * (closeSources). Fds that cannot be copied or are not valid stats images are reported in
 * `problems`, not thrown; nothing is left open. ProcessProvider keeps them instead, and lets
 * go when the process exits.
 */
export function openProcessStats(pid: number): ProcessStats {
  const { links, problem } = statsLinksOf(pid);
  if (problem) return { pid, sources: [], problems: [problem] };
  // Watched only while copying: the copies go to the caller, the pidfd is closed.
  const processes = new HeldProcesses({ report: () => undefined });
  const held = processes.add(pid);
  try {
    return { pid, ...copyProcessStats(held, links) };
  } finally {
    processes.close();
  }
}
