/**
 * Discovery: every process that holds KVM stats fds, found in /proc/PID/fd, its fds copied with
 * pidfd_getfd. Reading another user's processes needs root or CAP_SYS_PTRACE; what cannot be
 * read is said once per process, with what to do.
 *
 * Lifecycle, kept inside ScanProvider: each refresh() rescans; a known fd is never copied or
 * parsed again; new VMs and hot-plugged vCPUs appear at the next refresh; an fd the VMM closed
 * is closed here at the next refresh; a VMM that exits has its copies closed at the next
 * sources() call (every collection), found by one poll(2) of the VMMs' pidfds.
 *
 * A known fd is keyed by process (its pidfd), fd number and link target, and checked with
 * kcmp(2) against the copy held here: every anon inode has the same inode number, so an fd
 * number reused for another stats fd could not be told apart otherwise.
 *
 * Cost: reading a process's fd links costs one readlink per fd, so a rescan that read every
 * process would cost what the host's busiest fd holders make it cost (any user can open 19,000
 * fds). A rescan therefore stats /proc/PID/fd (one call, whatever the fd count; its size is the
 * number of open fds on Linux 6.2+) and reads the links only of processes whose fd table
 * changed since they were last read, and of those it holds stats fds of (a VMM can swap one
 * stats fd for another without the count moving). Changed fd tables of more than
 * SMALL_FD_TABLE fds, new ones included, share a credit of WALK_BUDGET links per rescan (what a
 * rescan leaves unspent carries over, up to WALK_CREDIT), fewest fds first with each rescan a
 * table waits halving its place: however many large tables appear or change, and however often
 * their processes are replaced (hostile ones), they cost at most WALK_BUDGET links per rescan on
 * average, while a VMM starting (a few dozen fds) is read at once. Without the count (older
 * kernels) every process is read at every rescan.
 */
import { readdirSync } from 'node:fs';
import { ANON_INODE_VM } from '../abi/kvm.js';
import { NativeError } from '../native/errors.js';
import { sameOpenFile } from '../native/libc.js';
import { type HeldProcess, HeldProcesses, copyStatsFd, noStatsFdsProblem, processOwner } from './held-process.js';
import { type Problem, type ProblemReporter, SaidOnce, errnoCode } from './problem.js';
import {
  type FdLink,
  type FdTable,
  executableName,
  fdLinks,
  fdTable,
  isStatsLink,
  kernelCountsFds,
  othersFdsNeed,
  processExiting,
  processStartTicks,
  vcpuIdOfStatsLink,
} from './proc.js';
import type { SourceProvider } from './provider.js';
import { type StatsSource, statsSource } from './source.js';

/** Program names of VMMs, to say which processes that cannot be looked into matter. */
const VMM_NAME = /qemu|kvm|firecracker|cloud-hyperv|crosvm|libkrun|vmm/i;

/** Fd tables up to this size are read whenever they change. */
const SMALL_FD_TABLE = 256;
/** Fd links of larger changed tables one rescan may read, on average. */
const WALK_BUDGET = 4096;
/** The most credit unspent rescans leave for a later one; a table larger than this is read once
 * the credit is full, and the rescans after it pay the difference back. */
const WALK_CREDIT = 8 * WALK_BUDGET;

/** What the last read of a process's fd links found, and its fd table then. */
interface Walked {
  readonly table: FdTable;
  /** Undefined when it holds nothing of KVM's. */
  readonly found: ScannedProcess | undefined;
  /** Rescans it has waited since its table changed (a large table over the budget). */
  readonly waited: number;
}

/** One stats fd of a VMM, as `list` shows it. */
export interface ScannedStatsFd {
  readonly fd: number;
  readonly target: 'vm' | 'vcpu';
  readonly vcpu: number | null;
  /** The VMM's own number of the vCPU (QEMU's cpu-index), where it says it; null otherwise. */
  readonly vcpuIndex: number | null;
  /** The kernel's id string, once read: "kvm-1234" or "kvm-1240/vcpu-0". */
  readonly id: string | null;
  /** How it was obtained, when it is read: "pidfd_getfd from process 1234 fd 17". */
  readonly origin: string | null;
  /** Why it is not read, when it is not. */
  readonly skipped: string | null;
  /** When it is not read because fd `sameAs` has the same id and is read. */
  readonly sameAs: number | null;
  /** When it is a copy of a stats fd of process `copyOf` (another agent's), which is read from there. */
  readonly copyOf: number | null;
}

/** One process that holds KVM VMs or stats fds, as `list` shows it. */
export interface ScannedProcess {
  readonly pid: number;
  /** Its program, e.g. "qemu-system-x86_64". */
  readonly executable: string | null;
  readonly vmName: string | null;
  /** The VM's UUID on its command line (QEMU's -uuid). */
  readonly vmUuid: string | null;
  /** How many VM fds (links to kvm-vm) it holds. */
  readonly vmFds: number;
  readonly statsFds: readonly ScannedStatsFd[];
  /** What could not be done for it, and what to do. */
  readonly problems: readonly Problem[];
}

interface TrackedFd {
  readonly fd: number;
  readonly link: string;
  /** The copy read here; absent when it is not read (see `skipped`). */
  readonly source?: StatsSource;
  readonly id?: string;
  readonly skipped?: string;
  readonly sameAs?: number;
  readonly copyOf?: number;
}

/** What one rescan cost: how many processes it looked at, whose fd links it read, and how many links. */
export interface RescanCost {
  readonly processes: number;
  readonly fdTablesRead: number;
  readonly fdLinksRead: number;
}

export interface ScanProviderOptions {
  /** Called once per process and problem. */
  readonly report?: ProblemReporter;
}

/** Every VMM's stats fds on this host, kept in step with /proc. */
export class ScanProvider implements SourceProvider {
  readonly description = 'scan of /proc for KVM stats fds';
  readonly #processes: HeldProcesses<TrackedFd>;
  /** Keyed "pid:start ticks:what", so each problem is said once per process. */
  readonly #said: SaidOnce;
  #kcmpWorks = true;
  /** Per process, what its last read found: read again only when its fd table changes. */
  readonly #walked = new Map<number, Walked>();
  #lastScan: ScannedProcess[] = [];
  #lastCost: RescanCost = { processes: 0, fdTablesRead: 0, fdLinksRead: 0 };
  /** Links large tables may still read (WALK_BUDGET more at each rescan, at most WALK_CREDIT). */
  #credit = 0;
  #closed = false;

  constructor(options: ScanProviderOptions = {}) {
    const report = options.report ?? (() => undefined);
    this.#processes = new HeldProcesses<TrackedFd>({ report, order: bySourceOrder });
    this.#said = new SaidOnce(report);
  }

  /** Rescans /proc: new fds copied and read, fds the VMMs closed let go, exited VMMs dropped. */
  async refresh(): Promise<void> {
    if (this.#closed) throw new Error('internal: ScanProvider.refresh() after close()');
    this.#processes.reap();
    const scanned: ScannedProcess[] = [];
    const live = new Set<number>();
    const changed: { pid: number; table: FdTable; walked: Walked | undefined }[] = [];
    const counts = kernelCountsFds();
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const pid = Number(name);
      live.add(pid);
      // Our own fds are copies (or VMs another provider reads).
      if (pid === process.pid) continue;
      const table = fdTable(pid);
      if (!table) continue; // exited meanwhile
      const walked = this.#walked.get(pid);
      const same = walked !== undefined && counts && walked.table.ino === table.ino && walked.table.count === table.count;
      if (same && !this.#processes.get(pid)) {
        if (walked.found) scanned.push(walked.found);
        continue;
      }
      changed.push({ pid, table, walked });
    }
    // Fewest fds first; a table's turn comes sooner with every rescan it waited.
    const cost = (entry: (typeof changed)[number]): number => (counts ? entry.table.count / 2 ** (entry.walked?.waited ?? 0) : 0);
    changed.sort((a, b) => cost(a) - cost(b));
    this.#credit = Math.min(this.#credit + WALK_BUDGET, WALK_CREDIT);
    // The first large table the credit does not cover saves it up for itself: none after it is read.
    let saving = false;
    let linksRead = 0;
    let tablesRead = 0;
    for (const { pid, table, walked } of changed) {
      const large = counts && table.count > SMALL_FD_TABLE && !this.#processes.get(pid);
      if (large) {
        const fits = !saving && (table.count <= this.#credit || this.#credit >= WALK_CREDIT);
        if (!fits) {
          saving = true;
          this.#walked.set(pid, { table: walked?.table ?? { ino: -1, count: -1 }, found: walked?.found, waited: (walked?.waited ?? 0) + 1 });
          if (walked?.found) scanned.push(walked.found);
          continue;
        }
        this.#credit -= table.count;
      }
      const found = this.#scanProcess(pid);
      tablesRead++;
      linksRead += table.count;
      this.#walked.set(pid, { table, found, waited: 0 });
      if (found) scanned.push(found);
    }
    // Processes that are gone cannot be reported again; forget what was said about them.
    this.#said.forget((key) => !live.has(Number(key.slice(0, key.indexOf(':')))));
    for (const pid of this.#walked.keys()) if (!live.has(pid)) this.#walked.delete(pid);
    this.#lastScan = scanned.sort((a, b) => a.pid - b.pid);
    this.#lastCost = { processes: live.size, fdTablesRead: tablesRead, fdLinksRead: linksRead };
  }

  /** What the last refresh() cost (fd links counted from the kernel's fd counts: 0 before Linux 6.2). */
  get lastRefreshCost(): RescanCost {
    return this.#lastCost;
  }

  /** The sources open now; first closes those of VMMs that have exited. */
  sources(): readonly StatsSource[] {
    this.#processes.reap();
    return this.#processes.sources();
  }

  /** What the last refresh() found, per process holding VMs or stats fds. */
  scanned(): readonly ScannedProcess[] {
    return this.#lastScan;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#processes.close();
  }

  /** Says `problem` unless it was said before about this process. */
  #reportOnce(what: string, problem: Problem & { pid: number }): void {
    this.#said.say(`${problem.pid}:${processStartTicks(problem.pid) ?? '?'}:${what}`, problem);
  }

  #scanProcess(pid: number): ScannedProcess | undefined {
    let links: FdLink[];
    try {
      links = fdLinks(pid);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EACCES' && code !== 'EPERM') return undefined; // exited meanwhile
      const executable = executableName(pid);
      // Most processes of other users are not VMMs: only those that look like one matter.
      if (!executable || !VMM_NAME.test(executable)) return undefined;
      const problem: Problem & { pid: number } = {
        kind: 'no-access',
        pid,
        code,
        message: `cannot look into process ${pid} (${executable}): listing /proc/${pid}/fd failed with ${code}; scanning another user's VMM needs ${othersFdsNeed()}, or hand its stats fds over instead`,
      };
      this.#reportOnce('denied', problem);
      return { pid, executable, ...namesOf(pid), vmFds: 0, statsFds: [], problems: [problem] };
    }
    const statsLinks = links.filter((link) => isStatsLink(link.target));
    const vmFds = links.filter((link) => link.target === ANON_INODE_VM).length;
    let tracked = this.#processes.get(pid);
    if (tracked && statsLinks.length === 0 && processExiting(pid)) {
      // Its fds went with the process: an exit (its pidfd says so a moment later), not VMs closed.
      this.#processes.exited(tracked);
      return undefined;
    }
    const problems: Problem[] = [];
    if (statsLinks.length === 0 && !tracked) {
      if (vmFds === 0) return undefined;
      const names = namesOf(pid);
      const problem = noStatsFdsProblem(pid, vmFds, names.vmName ?? undefined);
      this.#reportOnce('no stats', { ...problem, pid });
      const executable = executableName(pid) ?? null;
      return { pid, executable, ...names, vmFds, statsFds: [], problems: [problem] };
    }
    if (!tracked) {
      try {
        tracked = this.#processes.add(pid, executableName(pid));
      } catch {
        return undefined; // exited between listing its fds and opening its pidfd
      }
    }
    this.#update(tracked, statsLinks, problems);
    const scanned: ScannedProcess = {
      pid,
      executable: tracked.executable ?? null,
      vmName: tracked.owner.vmName ?? null,
      vmUuid: tracked.owner.vmUuid ?? null,
      vmFds,
      statsFds: [...tracked.fds.values()].map((fd) => ({
        fd: fd.fd,
        target: vcpuIdOfStatsLink(fd.link) === undefined ? 'vm' : 'vcpu',
        vcpu: vcpuIdOfStatsLink(fd.link) ?? null,
        vcpuIndex: fd.source?.vcpuIndex ?? null,
        id: fd.id ?? null,
        origin: fd.source?.origin ?? null,
        skipped: fd.skipped ?? null,
        sameAs: fd.sameAs ?? null,
        copyOf: fd.copyOf ?? null,
      })),
      problems,
    };
    if (tracked.fds.size === 0) this.#processes.drop(tracked);
    return scanned;
  }

  /** Brings the fds tracked for a process in step with the stats fds it holds now. */
  #update(tracked: HeldProcess<TrackedFd>, statsLinks: readonly FdLink[], problems: Problem[]): void {
    const present = new Set<number>();
    for (const link of statsLinks) {
      present.add(link.fd);
      const known = tracked.fds.get(link.fd);
      if (known && known.link === link.target && this.#sameFile(tracked, known)) continue;
      tracked.forget(link.fd);
      const copied = this.#copy(tracked, link, problems);
      if (copied) tracked.hold(link.fd, copied);
    }
    for (const known of [...tracked.fds.values()]) {
      // The VMM closed it (a VM destroyed, a query-stats done): our copy would keep the VM alive.
      if (!present.has(known.fd)) tracked.forget(known.fd);
    }
  }

  /** Whether the VMM's fd is still the file our copy was made from. */
  #sameFile(tracked: HeldProcess<TrackedFd>, known: TrackedFd): boolean {
    if (!known.source || !this.#kcmpWorks) return true;
    try {
      return sameOpenFile(process.pid, known.source.file.fd, tracked.pid, known.fd);
    } catch (error) {
      const code = (error as NativeError).code;
      if (code === 'EBADF' || code === 'ESRCH') return false;
      // No kcmp in this kernel (CONFIG_KCMP off) or not allowed: fall back to the link alone.
      this.#kcmpWorks = false;
      return true;
    }
  }

  /** Copies and reads one stats fd; undefined when it is gone already. */
  #copy(tracked: HeldProcess<TrackedFd>, link: FdLink, problems: Problem[]): TrackedFd | undefined {
    const { pid } = tracked;
    let copied;
    try {
      copied = copyStatsFd(tracked.pidfd, link.fd);
    } catch (error) {
      const code = errnoCode(error);
      const message = (error as Error).message;
      const problem: Problem & { pid: number } = { kind: 'copy-failed', pid, ...(code ? { code } : {}), message: `process ${pid} fd ${link.fd} (${link.target}): ${message}` };
      problems.push(problem);
      // A failed call (EPERM) fails alike for every fd of the process: said once for all of them.
      this.#reportOnce(code ?? `fd ${link.fd}`, code ? { ...problem, message: `process ${pid}: ${message}` } : problem);
      return { fd: link.fd, link: link.target, skipped: message };
    }
    if (!copied) return undefined; // closed or exited meanwhile
    const { file, creator } = copied;
    const skip = (reason: string, also: { sameAs?: number; copyOf?: number } = {}): TrackedFd => {
      file.close();
      return { fd: link.fd, link: link.target, id: file.id, skipped: reason, ...also };
    };
    if (creator !== undefined && creator !== pid) {
      // A reader's copy (another agent, a hand-over receiver): the VMM itself is scanned.
      return skip(`a copy of a stats fd of process ${creator}, which is read from there`, { copyOf: creator });
    }
    for (const other of tracked.fds.values()) {
      // One series per id: two fds of one VM or vCPU (QEMU 8.1+ with the preload helper too)
      // are one series, and VMs made by one thread have ids that nothing here tells apart.
      if (other.source?.file.id === file.id) return skip(`id ${file.id} is that of fd ${other.fd}, which is read: one series per id`, { sameAs: other.fd });
    }
    return { fd: link.fd, link: link.target, id: file.id, source: statsSource(file, tracked.owner, `pidfd_getfd from process ${pid} fd ${link.fd}`) };
  }
}

/** The guest name and UUID of a process not held, as `list` shows them. */
function namesOf(pid: number): { vmName: string | null; vmUuid: string | null } {
  const { vmName, vmUuid } = processOwner(pid);
  return { vmName: vmName ?? null, vmUuid: vmUuid ?? null };
}

/** By process, then the VM before its vCPUs, then vCPU id. */
function bySourceOrder(a: StatsSource, b: StatsSource): number {
  return (a.pid ?? 0) - (b.pid ?? 0) || (a.file.vcpuId ?? -1) - (b.file.vcpuId ?? -1) || a.file.id.localeCompare(b.file.id);
}
