/**
 * What /proc says about the processes that own VMs: thread to process, start time, fd links,
 * command line. Every function returns undefined (or an empty list) for a process that is gone.
 */
import { readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { ANON_INODE_VCPU_PREFIX, ANON_INODE_VCPU_STATS_PREFIX, ANON_INODE_VM, ANON_INODE_VM_STATS } from '../abi/kvm.js';
import { PF_EXITING, USER_HZ } from '../abi/linux.js';

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
}

/** The process (thread group) a thread belongs to: KVM's id strings name threads. */
export function processOfThread(tid: number): number | undefined {
  const status = readText(`/proc/${tid}/status`);
  const match = status && /^Tgid:\s*(\d+)$/m.exec(status);
  return match ? Number(match[1]) : undefined;
}

/** Field `n` (1-based, as proc(5) numbers them, from 3 on) of /proc/PID/stat; undefined for a
 * process that is gone. */
function statField(pid: number, n: number): number | undefined {
  const stat = readText(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const value = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[n - 3]);
  return Number.isFinite(value) ? value : undefined;
}

/** When the process started, in clock ticks since boot: with the pid, it names one process
 * for the life of the system (pids are reused, start times are not). */
export function processStartTicks(pid: number): number | undefined {
  return statField(pid, 22); // starttime
}

/** Whether the process is exiting or gone. Its fds are closed a moment before its pidfd says
 * it exited, so a scan in between sees a VMM without stats fds: this tells an exit apart. */
export function processExiting(pid: number): boolean {
  const flags = statField(pid, 9); // flags
  return flags === undefined || (flags & PF_EXITING) !== 0;
}

/**
 * When the process started, in milliseconds since the epoch: the boot time (`btime` of
 * /proc/stat, whole seconds) plus the start in clock ticks. The same answer every time it is
 * asked (as `ps` computes it), so cumulative series keep their start across agent restarts.
 */
export function processStartTimeMs(pid: number): number | undefined {
  const startTicks = processStartTicks(pid);
  const btime = /^btime (\d+)$/m.exec(readText('/proc/stat') ?? '')?.[1];
  if (startTicks === undefined || btime === undefined) return undefined;
  return Number(btime) * 1000 + (startTicks * 1000) / USER_HZ;
}

/** Whether an fd link names a KVM stats fd, a VM's or a vCPU's. */
export function isStatsLink(target: string): boolean {
  return target === ANON_INODE_VM_STATS || target.startsWith(ANON_INODE_VCPU_STATS_PREFIX);
}

/** Whether an fd link names a KVM VM or vCPU fd. */
export function isVmLink(target: string): boolean {
  return target === ANON_INODE_VM || target.startsWith(ANON_INODE_VCPU_PREFIX);
}

/** The N of a vCPU stats fd's link (kvm-vcpu-stats:N), its vCPU id; undefined for a VM's stats fd. */
export function vcpuIdOfStatsLink(target: string): number | undefined {
  return target.startsWith(ANON_INODE_VCPU_STATS_PREFIX) ? Number(target.slice(ANON_INODE_VCPU_STATS_PREFIX.length)) : undefined;
}

/** A process's fd table as one stat(2) of /proc/PID/fd tells it: the directory's inode (a new
 * one for a reused pid) and, on Linux 6.2+, how many fds are open (its st_size). */
export interface FdTable {
  readonly ino: number;
  readonly count: number;
}

/** One stat(2), whatever the number of fds (any user may make it); undefined for a process that is gone. */
export function fdTable(pid: number): FdTable | undefined {
  try {
    const stat = statSync(`/proc/${pid}/fd`);
    return { ino: stat.ino, count: stat.size };
  } catch {
    return undefined;
  }
}

let fdCounts: boolean | undefined;
/** Whether this kernel says how many fds a process has open in the st_size of /proc/PID/fd
 * (Linux 6.2+; before, it is 0). This process always has some open. */
export function kernelCountsFds(): boolean {
  fdCounts ??= (fdTable(process.pid)?.count ?? 0) > 0;
  return fdCounts;
}

export interface FdLink {
  readonly fd: number;
  readonly target: string;
}

/** What listing another user's process's fds needs, in words that fit this process: root needs
 * the two capabilities too, and a root that was refused has been run without them. */
export function othersFdsNeed(): string {
  return process.geteuid?.() === 0
    ? 'CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE, which this process lacks although it runs as root (a container or service that drops capabilities: give it these two)'
    : 'root, or CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE';
}

/** The open fds of a process and what they point to. Needs ptrace access to read another's;
 * throws the fs error (ENOENT, EACCES) when the list cannot be read. */
export function fdLinks(pid: number | 'self'): FdLink[] {
  const names = readdirSync(`/proc/${pid}/fd`);
  const links: FdLink[] = [];
  for (const name of names) {
    try {
      links.push({ fd: Number(name), target: readlinkSync(`/proc/${pid}/fd/${name}`) });
    } catch (error) {
      // ENOENT: closed between readdir and readlink. Anything else (EACCES without
      // CAP_SYS_PTRACE) would make the fds look absent, so it is the caller's to report.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  return links.sort((a, b) => a.fd - b.fd);
}

/**
 * The name of the program a process runs: the executable's file name where /proc/PID/exe can
 * be read (same uid or CAP_SYS_PTRACE), else the kernel's 15-character command name.
 */
export function executableName(pid: number): string | undefined {
  try {
    // A binary replaced while it runs (a package upgrade) reads "/usr/bin/x (deleted)".
    return basename(readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, ''));
  } catch {
    return readText(`/proc/${pid}/comm`)?.trim() || undefined;
  }
}

/** The command line, split into arguments. */
export function commandLine(pid: number): string[] {
  const raw = readText(`/proc/${pid}/cmdline`);
  return raw ? raw.split('\0').filter((arg, i, all) => arg !== '' || i < all.length - 1) : [];
}

/** Every value of QEMU option `option` in a command line: `-option X`, `--option X`,
 * `-option=X` and `--option=X`, in order. */
function* optionValues(args: readonly string[], option: string): Generator<string> {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === `-${option}` || arg === `--${option}`) {
      if (args[i + 1] !== undefined) yield args[i + 1]!;
    } else if (arg.startsWith(`-${option}=`) || arg.startsWith(`--${option}=`)) {
      yield arg.slice(arg.indexOf('=') + 1);
    }
  }
}

/** The guest name a VMM was started with: QEMU's `-name guest=X,...` or `-name X`. */
export function vmNameFromCommandLine(args: readonly string[]): string | undefined {
  for (const value of optionValues(args, 'name')) {
    // QEMU options: comma-separated, ",," escapes a comma; the first bare value is the guest.
    const parts = value.replace(/,,/g, '\0').split(',').map((part) => part.replace(/\0/g, ','));
    for (const part of parts) {
      if (part.startsWith('guest=')) return part.slice('guest='.length) || undefined;
    }
    const first = parts[0];
    if (first && !first.includes('=')) return first;
  }
  return undefined;
}

/** RFC 4122's text form, as QEMU's -uuid takes it. */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The VM's UUID a VMM was started with: QEMU's `-uuid X` (libvirt always passes the domain's). */
export function vmUuidFromCommandLine(args: readonly string[]): string | undefined {
  for (const value of optionValues(args, 'uuid')) if (UUID.test(value)) return value.toLowerCase();
  return undefined;
}

/**
 * The VMM's own number of the vCPU whose creating thread is `tid`, where the VMM says it: QEMU
 * with `-name ...,debug-threads=on` (libvirt always sets it) names each vCPU thread "CPU N/KVM",
 * N its cpu-index, and creates each vCPU on that thread. Undefined otherwise (another VMM, no
 * debug-threads, a thread that is gone or belongs to another process).
 */
export function vcpuIndexOfThread(pid: number, tid: number): number | undefined {
  const match = /^CPU (\d+)\/KVM$/.exec(readText(`/proc/${pid}/task/${tid}/comm`)?.trim() ?? '');
  return match ? Number(match[1]) : undefined;
}
