/**
 * The stats fds another process holds (QEMU 8.1+ keeps one per vCPU), copied with
 * pidfd_getfd. This needs ptrace access to that process: the same uid, or CAP_SYS_PTRACE.
 * A copy is only a reference: the VMM keeps its own, and closing ours changes nothing for it.
 */
import { ANON_INODE_VM } from '../abi/kvm.js';
import { closeFd, pidfdOpen } from '../native/libc.js';
import { copyStatsFd, noStatsFdsProblem } from './held-process.js';
import { type Problem, errnoCode } from './problem.js';
import { type FdLink, commandLine, fdLinks, isStatsLink, processStartTimeMs, vmNameFromCommandLine, vmUuidFromCommandLine } from './proc.js';
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
      throw new Error(`listing /proc/${pid}/fd failed with ${code}: reading another user's process's fds needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (or root)`);
    }
    throw error;
  }
}

/**
 * Copies every KVM stats fd of process `pid` and opens it. Fds that cannot be copied or are
 * not valid stats images are reported in `problems`, not thrown; nothing is left open.
 */
export function openProcessStats(pid: number): ProcessStats {
  const links = linksOf(pid);
  const statsLinks = links.filter((link) => isStatsLink(link.target));
  const sources: StatsSource[] = [];
  const problems: Problem[] = [];
  if (statsLinks.length === 0) {
    const vms = links.filter((link) => link.target === ANON_INODE_VM).length;
    problems.push(vms > 0 ? noStatsFdsProblem(pid, vms, vmNameFromCommandLine(commandLine(pid))) : { kind: 'no-stats-fds', pid, message: `process ${pid} holds no KVM stats fds: is it a VMM running a KVM guest?` });
    return { pid, sources, problems };
  }
  const args = commandLine(pid);
  const owner = {
    vmName: vmNameFromCommandLine(args),
    vmUuid: vmUuidFromCommandLine(args),
    startTimeMs: processStartTimeMs(pid),
  };
  const pidfd = pidfdOpen(pid);
  try {
    for (const link of statsLinks) {
      const what = `process ${pid} fd ${link.fd} (${link.target})`;
      try {
        const copied = copyStatsFd(pidfd, link.fd);
        if (!copied) {
          problems.push({ kind: 'copy-failed', pid, message: `${what}: closed in the meantime, or the process exited; read it again` });
          continue;
        }
        // The creating thread's process, if it still runs; else the holder.
        sources.push(statsSource(copied.file, { ...owner, pid: copied.creator ?? pid }, `pidfd_getfd from process ${pid} fd ${link.fd}`));
      } catch (error) {
        problems.push({ kind: 'copy-failed', pid, code: errnoCode(error), message: `${what}: ${(error as Error).message}` });
      }
    }
  } finally {
    closeFd(pidfd);
  }
  return { pid, sources, problems };
}
