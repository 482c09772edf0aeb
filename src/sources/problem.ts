/**
 * What the providers report when something cannot be read, as data: a kind to act on, the
 * process it is about, and one line of text that says what failed and what is needed. The
 * text names no command-line flag: a CLI adds which of its flags gives what is needed.
 */

/**
 * - `exited`: a VMM exited; the stats fds held for it were closed (said for the record).
 * - `no-stats-fds`: a process holds no KVM stats fds to copy (QEMU before 8.1 keeps none).
 * - `no-access`: a process's fds cannot be listed: another user's, without the privilege.
 * - `copy-failed`: one stats fd could not be copied (pidfd_getfd) or does not validate.
 * - `refused`: a hand-over (a connection, a message or one fd) was refused and closed.
 * - `accept-failed`: the hand-over socket could not accept a connection (EMFILE, say).
 * - `no-schedstat`: a VM's vCPUs get no scheduler time (kvm.vcpu.sched.*): they have no thread
 *   each of their own (a VMM that creates every vCPU from one thread). Said once per process.
 */
export type ProblemKind = 'exited' | 'no-stats-fds' | 'no-access' | 'copy-failed' | 'refused' | 'accept-failed' | 'no-schedstat';

export interface Problem {
  readonly kind: ProblemKind;
  /** The process it is about: the VMM, or for a refused hand-over the sender (SO_PEERCRED). */
  readonly pid?: number;
  /** The guest's name, where the problem is about a VMM that gives one (QEMU's -name). */
  readonly vmName?: string;
  /** The errno name, where a system call failed: "EPERM", "EMFILE". */
  readonly code?: string;
  /** One line: what went wrong and what is needed. */
  readonly message: string;
}

/** Called with each problem, when something cannot be read or a VMM's fds were let go. */
export type ProblemReporter = (problem: Problem) => void;

/** The errno name of a failed system call (NativeError, Node's fs errors), if it is one. */
export function errnoCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Says each problem once per key, however often it recurs. Bounded: past `limit` keys it starts
 * over, so a flood may repeat a line but never grows memory.
 */
export class SaidOnce {
  readonly #report: ProblemReporter;
  readonly #limit: number;
  readonly #said = new Set<string>();

  constructor(report: ProblemReporter, limit = 10_000) {
    this.#report = report;
    this.#limit = limit;
  }

  say(key: string, problem: Problem): void {
    if (this.#said.has(key)) return;
    if (this.#said.size >= this.#limit) this.#said.clear();
    this.#said.add(key);
    this.#report(problem);
  }

  /** Forgets the keys `stale` picks (those of processes that are gone: they cannot recur). */
  forget(stale: (key: string) => boolean): void {
    for (const key of this.#said) if (stale(key)) this.#said.delete(key);
  }
}
