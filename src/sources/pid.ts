/**
 * The stats fds another process holds (QEMU 8.1+ keeps one per vCPU), copied with
 * pidfd_getfd. This needs ptrace access to that process: the same uid, or CAP_SYS_PTRACE.
 * A copy is only a reference: the VMM keeps its own, and closing ours changes nothing for it.
 */
import { ANON_INODE_VCPU_PREFIX, ANON_INODE_VCPU_STATS_PREFIX, ANON_INODE_VM, ANON_INODE_VM_STATS } from '../abi/kvm.js';
import { closeFd, pidfdGetfd, pidfdOpen, readableNow } from '../native/libc.js';
import { StatsFile } from '../stats/stats-file.js';
import { type FdLink, commandLine, fdLinks, processOfThread, processStartTimeMs, vmNameFromCommandLine } from './proc.js';
import { type StatsSource, statsSource } from './source.js';

export function isStatsLink(target: string): boolean {
  return target === ANON_INODE_VM_STATS || target.startsWith(ANON_INODE_VCPU_STATS_PREFIX);
}

export function isVmLink(target: string): boolean {
  return target === ANON_INODE_VM || target.startsWith(ANON_INODE_VCPU_PREFIX);
}

/** What to do about a process that holds VMs but no stats fds to copy. */
export function noStatsProblem(pid: number, vms: number): string {
  return `process ${pid} holds ${vms} KVM VM(s) but no stats fds: QEMU before 8.1 keeps none open; start the VMM with the preload helper, or read its stats over QMP query-stats`;
}

/** The N of a vCPU stats fd's link (kvm-vcpu-stats:N), its vCPU id; undefined for a VM's stats fd. */
export function vcpuIdOfStatsLink(target: string): number | undefined {
  return target.startsWith(ANON_INODE_VCPU_STATS_PREFIX) ? Number(target.slice(ANON_INODE_VCPU_STATS_PREFIX.length)) : undefined;
}

/**
 * A process that owns VMs whose stats fds this process holds, watched through a pidfd: a copy
 * keeps the VM alive in the kernel, so it must go as soon as the VMM exits. A pidfd also pins
 * the identity: a reused pid is another pidfd.
 */
export class WatchedProcess {
  readonly pid: number;
  #pidfd: number;

  /** Throws NativeError ESRCH when the process has already exited. */
  constructor(pid: number) {
    this.pid = pid;
    this.#pidfd = pidfdOpen(pid);
  }

  get pidfd(): number {
    return this.#pidfd;
  }

  /** Closes the pidfd; subclasses close what they hold for the process too. */
  close(): void {
    closeFd(this.#pidfd);
    this.#pidfd = -1;
  }
}

/** The processes of `watched` that have exited: one poll(2) of their pidfds, never waiting. */
export function exitedOf<T extends WatchedProcess>(watched: Iterable<T>): T[] {
  const list = [...watched];
  const readable = readableNow(list.map((process) => process.pidfd));
  return list.filter((_, i) => readable[i]);
}

export interface ProcessStats {
  readonly pid: number;
  readonly sources: StatsSource[];
  /** One line per thing that could not be read, with what to do about it. */
  readonly problems: string[];
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
  const problems: string[] = [];
  if (statsLinks.length === 0) {
    const vms = links.filter((link) => link.target === ANON_INODE_VM).length;
    problems.push(vms > 0 ? noStatsProblem(pid, vms) : `process ${pid} holds no KVM stats fds: is it a VMM running a KVM guest?`);
    return { pid, sources, problems };
  }
  const owner = {
    vmName: vmNameFromCommandLine(commandLine(pid)),
    startTimeMs: processStartTimeMs(pid),
  };
  const pidfd = pidfdOpen(pid);
  try {
    for (const link of statsLinks) {
      try {
        const file = StatsFile.open(pidfdGetfd(pidfd, link.fd));
        // The creating thread's process, if it still runs; else the holder.
        const creator = processOfThread(file.threadId);
        sources.push(statsSource(file, { ...owner, pid: creator ?? pid }, `pidfd_getfd from process ${pid} fd ${link.fd}`));
      } catch (error) {
        problems.push(`process ${pid} fd ${link.fd} (${link.target}): ${(error as Error).message}`);
      }
    }
  } finally {
    closeFd(pidfd);
  }
  return { pid, sources, problems };
}
