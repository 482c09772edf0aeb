/**
 * A process whose stats fds this process holds: copied with pidfd_getfd (one process, the
 * scan) or handed over on a socket (the VMM that owns them, and the process that sent them,
 * which is charged for them while it lives). A held stats fd keeps the VM alive in the kernel,
 * so every one goes as soon as its VMM exits: each process is watched through one pidfd (which
 * also pins its identity: a reused pid is another pidfd), and one poll(2) of all of them, never
 * waiting, says which have exited. Who a process is (its owner: pid, guest name and UUID, start)
 * is read in one place, processOwner.
 */
import { readlinkSync } from 'node:fs';
import { NativeError } from '../native/errors.js';
import { closeFd, pidfdGetfd, pidfdOpen, readableNow } from '../native/libc.js';
import { StatsFile } from '../stats/stats-file.js';
import type { Problem, ProblemReporter } from './problem.js';
import { commandLine, isStatsLink, processOfThread, processStartTimeMs, vmNameFromCommandLine, vmUuidFromCommandLine } from './proc.js';
import { attachSchedstats, noSchedstatMessage } from './schedstat.js';
import { type StatsOwner, type StatsSource, closeSources } from './source.js';

/** One fd held for a process: its source when it is read (the scan also keeps fds it skips; a
 * hand-over sender's are charges for fds its owners hold). */
export interface HeldFd {
  readonly source?: StatsSource;
}

/** Who a process is, for its sources' attributes: the pid, the guest name and UUID on its
 * command line, its start. */
export function processOwner(pid: number): StatsOwner {
  const args = commandLine(pid);
  return { pid, vmName: vmNameFromCommandLine(args), vmUuid: vmUuidFromCommandLine(args), startTimeMs: processStartTimeMs(pid) };
}

/** A process watched through a pidfd, and the fds held for it, by a key of the holder's choosing. */
export class HeldProcess<F extends HeldFd = HeldFd> {
  readonly pid: number;
  /** Its program, where the holder looked it up: said when it exits. */
  readonly executable: string | undefined;
  readonly fds = new Map<number | string, F>();
  readonly #changed: () => void;
  #pidfd: number;
  #owner: StatsOwner | undefined;
  #saidNoSchedstat = false;

  /** Throws NativeError ESRCH when the process has already exited. */
  constructor(pid: number, options: { executable?: string; changed?: () => void } = {}) {
    this.pid = pid;
    this.executable = options.executable;
    this.#changed = options.changed ?? (() => undefined);
    this.#pidfd = pidfdOpen(pid);
  }

  /** -1 once closed. */
  get pidfd(): number {
    return this.#pidfd;
  }

  /** Whether it has exited (one poll of its pidfd, never waiting); true once closed. */
  get exited(): boolean {
    return this.#pidfd < 0 || readableNow([this.#pidfd])[0]!;
  }

  /** Who it is (processOwner), read once. */
  get owner(): StatsOwner {
    this.#owner ??= processOwner(this.pid);
    return this.#owner;
  }

  /** The guest name, if its owner was read (a process that has exited has no command line left). */
  get knownVmName(): string | undefined {
    return this.#owner?.vmName;
  }

  /** How many of its fds are read. */
  get sourceCount(): number {
    let count = 0;
    for (const held of this.fds.values()) if (held.source) count++;
    return count;
  }

  get sources(): StatsSource[] {
    return [...this.fds.values()].flatMap((held) => (held.source ? [held.source] : []));
  }

  /** Gives its vCPU sources their threads' scheduler time where each has a thread of its own
   * (schedstat.ts); says once when some get none. */
  updateSchedstats(report: ProblemReporter): void {
    const sources = this.sources;
    const verdict = attachSchedstats(this.pid, sources);
    if (verdict === undefined || this.#saidNoSchedstat) return;
    this.#saidNoSchedstat = true;
    const vmName = sources.find((s) => s.vmName !== undefined)?.vmName;
    report({ kind: 'no-schedstat', pid: this.pid, ...(vmName !== undefined ? { vmName } : {}), message: noSchedstatMessage(this.pid, vmName, verdict) });
  }

  hold(key: number | string, held: F): void {
    this.fds.set(key, held);
    this.#changed();
  }

  /** Closes the fd held under `key`, if any. */
  forget(key: number | string): void {
    const held = this.fds.get(key);
    if (!held) return;
    if (held.source) closeSources([held.source]);
    this.fds.delete(key);
    this.#changed();
  }

  /** Closes every fd held for it and the pidfd. */
  close(): void {
    for (const key of [...this.fds.keys()]) this.forget(key);
    if (this.#pidfd >= 0) closeFd(this.#pidfd);
    this.#pidfd = -1;
  }
}

export interface HeldProcessesOptions<F extends HeldFd> {
  /** Told of every process let go because it exited, with how many fds were closed. */
  readonly report: ProblemReporter;
  /** What its fds are called when it exits: "stats fds" (default), "handed-over stats fds". */
  readonly noun?: string;
  /** Called for each fd of a process let go, before it is closed (the hand-over's per-sender count). */
  readonly release?: (held: F) => void;
  /** The order of sources(); default: by process, in the order held. */
  readonly order?: (a: StatsSource, b: StatsSource) => number;
}

/** The processes one provider holds fds for; what every way in shares: reap, close, report. */
export class HeldProcesses<F extends HeldFd = HeldFd> {
  readonly #options: HeldProcessesOptions<F>;
  readonly #processes = new Map<number, HeldProcess<F>>();
  #sources: StatsSource[] = [];
  #changed = false;

  constructor(options: HeldProcessesOptions<F>) {
    this.#options = options;
  }

  get size(): number {
    return this.#processes.size;
  }

  get(pid: number): HeldProcess<F> | undefined {
    return this.#processes.get(pid);
  }

  values(): IterableIterator<HeldProcess<F>> {
    return this.#processes.values();
  }

  /** Starts watching `pid`. Throws NativeError ESRCH when it has exited already. */
  add(pid: number, executable?: string): HeldProcess<F> {
    const held = new HeldProcess<F>(pid, { executable, changed: () => (this.#changed = true) });
    this.#processes.set(pid, held);
    return held;
  }

  /** Lets go of every process that has exited (one poll(2) of their pidfds) and says so. */
  reap(): void {
    if (this.#processes.size === 0) return;
    const list = [...this.#processes.values()];
    const readable = readableNow(list.map((held) => held.pidfd));
    list.forEach((held, i) => readable[i] && this.exited(held));
  }

  /** Lets go of a process known to have exited, and says how many of its fds were closed. */
  exited(held: HeldProcess<F>): void {
    const count = held.sourceCount;
    const vmName = held.knownVmName;
    this.drop(held);
    if (count > 0) this.#options.report({ ...exitedProblem(held.pid, count, this.#options.noun, held.executable), ...(vmName !== undefined ? { vmName } : {}) });
  }

  /** Lets go of a process without a word (the scan: it holds no stats fds any more). */
  drop(held: HeldProcess<F>): void {
    if (this.#options.release) for (const fd of held.fds.values()) this.#options.release(fd);
    held.close();
    this.#processes.delete(held.pid);
    this.#changed = true;
  }

  /** The sources of every process held, the same array until something changes. */
  sources(): readonly StatsSource[] {
    if (this.#changed) {
      this.#changed = false;
      for (const held of this.#processes.values()) held.updateSchedstats(this.#options.report);
      this.#sources = [...this.#processes.values()].flatMap((held) => held.sources);
      if (this.#options.order) this.#sources.sort(this.#options.order);
    }
    return this.#sources;
  }

  close(): void {
    for (const held of this.#processes.values()) held.close();
    this.#processes.clear();
    this.#sources = [];
    this.#changed = false;
  }
}

/** "process 1234 (qemu-system-x86_64) exited: closed its 3 stats fds". */
export function exitedProblem(pid: number, count: number, noun = 'stats fds', executable?: string): Problem {
  return { kind: 'exited', pid, message: `process ${pid}${executable ? ` (${executable})` : ''} exited: closed its ${count} ${noun}` };
}

/** What to do about a process that holds VMs but no stats fds to copy; names the guest where its command line does. */
export function noStatsFdsProblem(pid: number, vms: number, vmName?: string): Problem {
  return {
    kind: 'no-stats-fds',
    pid,
    ...(vmName !== undefined ? { vmName } : {}),
    message: `process ${pid}${vmName !== undefined ? ` (VM ${vmName})` : ''} holds ${vms} KVM VM(s) but no stats fds: QEMU before 8.1 keeps none open; start the VMM with the preload helper, or read its stats over QMP query-stats`,
  };
}

export interface CopiedStatsFd {
  readonly file: StatsFile;
  /** The process of the thread that created the VM or vCPU, if it still runs. */
  readonly creator: number | undefined;
}

/**
 * Copies fd `fd` of the process behind `pidfd` (pidfd_getfd: same uid or CAP_SYS_PTRACE) and
 * opens it as a stats fd. Undefined when it is gone: closed or reused for another file since it
 * was listed, or the process exited. Throws NativeError when it cannot be copied, and the
 * stats reader's error when it does not validate; nothing is left open either way.
 */
export function copyStatsFd(pidfd: number, fd: number): CopiedStatsFd | undefined {
  let copy: number;
  try {
    copy = pidfdGetfd(pidfd, fd);
  } catch (error) {
    if (error instanceof NativeError && (error.code === 'EBADF' || error.code === 'ESRCH')) return undefined;
    throw error;
  }
  // The number may name another file by now: read only what is a stats fd (a pipe's read could wait).
  let link = '';
  try {
    link = readlinkSync(`/proc/self/fd/${copy}`);
  } catch {
    // unreadable: treated as not a stats fd
  }
  if (!isStatsLink(link)) {
    closeFd(copy);
    return undefined;
  }
  // Closes the copy if it does not validate. The producer reads into its own buffer: no block kept.
  const file = StatsFile.open(copy, { keepOpenData: false });
  return { file, creator: processOfThread(file.threadId) };
}
