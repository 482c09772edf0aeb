/**
 * Closing fds that came from outside without anything waiting on them. close(2) of the last
 * reference waits as long as the file's kind says: a TCP socket with unsent data and
 * SO_LINGER (1, N) waits N seconds, a FUSE file waits for its daemon to answer FLUSH, an NFS file
 * for its server, a tty for its output to drain, a Unix socket closed with messages still queued
 * closes the fds inside them too, and a large memfd frees its pages. So:
 *
 * - what cannot wait is closed at once: a pipe or FIFO (its release wakes its other end and
 *   returns, whatever anyone set on it);
 * - a socket has lingering turned off first (SO_LINGER (0, 0): its close then hands unsent data
 *   to the kernel and returns), which the receiver of a socket may do;
 * - everything else (sockets included: whoever still holds a copy could turn lingering on again
 *   between our setsockopt and our close) is closed on a native thread of its own, made for that
 *   one close(2) and joined (pthread_tryjoin_np) when it returns. Up to `maxThreads` at once, and
 *   `maxThreadsPerOwner` for any one owner (the hand-over: a sender's uid), so one owner's closes
 *   that never return hold only their own threads; the rest wait their turn, counted per owner,
 *   so a caller can stop taking fds from an owner with too many pending.
 *
 * Native threads rather than worker_threads: a thread stuck in close(2) costs a small stack and no
 * fd (close removes the fd from the table before it waits), and Node never joins it: a process
 * ends (process.exit, or its event loop running out) whatever its closing threads do, where Node
 * waits for a worker thread to stop at a natural exit, forever if it is stuck in a system call.
 */
import { fstatSync } from 'node:fs';
import koffi from 'koffi';
import { fieldOffset } from '../abi/layout.js';
import { LINGER, PTHREAD_ATTR_SIZE, SOL_SOCKET, SO_LINGER } from '../abi/linux.js';
import { closeFd } from './libc.js';

const libc = koffi.load('libc.so.6');
const c = {
  dlsym: libc.func('dlsym', 'void *', ['void *', 'str']),
  attrInit: libc.func('pthread_attr_init', 'int', ['void *']),
  attrSetStackSize: libc.func('pthread_attr_setstacksize', 'int', ['void *', 'size_t']),
  // pthread_create(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *): the fd is the argument.
  create: libc.func('pthread_create', 'int', ['void *', 'void *', 'void *', 'intptr_t']),
  tryJoin: libc.func('pthread_tryjoin_np', 'int', ['uint64_t', 'void *']),
  setsockopt: libc.func('setsockopt', 'int', ['int', 'int', 'int', 'void *', 'uint32_t']),
};

/**
 * libc's close(2) as a thread's start routine: close(int) called as void *(*)(void *) with the
 * fd as the pointer. On the LP64 ABIs this package runs on (x86_64, aarch64) the first integer or
 * pointer argument travels in the same register, and the int the function returns becomes the
 * thread's result, which is never read.
 */
const CLOSE = c.dlsym(null, 'close');
/** The thread's stack: close(2) needs next to none. */
const STACK_BYTES = 64 * 1024;
/** How often running closes are looked at while there are any. */
const POLL_MS = 10;

const attributes = Buffer.alloc(PTHREAD_ATTR_SIZE);
if ((c.attrInit(attributes) as number) !== 0 || (c.attrSetStackSize(attributes, STACK_BYTES) as number) !== 0) {
  throw new Error('pthread_attr_init failed: kvm-stats-otel needs Linux with glibc');
}

/** SO_LINGER (0, 0) on a socket: its close returns at once and the kernel sends what is queued. */
function lingerOff(fd: number): void {
  const off = Buffer.alloc(LINGER.size);
  off.writeInt32LE(0, fieldOffset(LINGER, 'l_onoff'));
  off.writeInt32LE(0, fieldOffset(LINGER, 'l_linger'));
  c.setsockopt(fd, SOL_SOCKET, SO_LINGER, off, off.length);
}

/** Prepares an fd for closing (lingering off for a socket); true when its close cannot wait. */
function prepare(fd: number): boolean {
  let stat;
  try {
    stat = fstatSync(fd);
  } catch {
    return true; // not open (EBADF): a close does nothing
  }
  if (stat.isFIFO()) return true;
  if (stat.isSocket()) lingerOff(fd);
  return false;
}

/** An fd given to be closed on a thread: when, and whom it is counted against. */
interface Closing {
  readonly fd: number;
  readonly owner: string;
  readonly since: number;
}

interface Running extends Closing {
  readonly thread: bigint;
}

export interface FdCloserOptions {
  /** Closing threads at once; default 32. */
  readonly maxThreads?: number;
  /** Closing threads at once for one owner; default 8. */
  readonly maxThreadsPerOwner?: number;
}

/** Closes fds so that no close waits on the event loop; the caller must not use an fd once given here. */
export class FdCloser {
  readonly #maxThreads: number;
  readonly #maxPerOwner: number;
  readonly #running: Running[] = [];
  /** Fds waiting for a thread, in order. */
  readonly #waiting: Closing[] = [];
  /** Fds given and not closed yet, per owner. */
  readonly #pending = new Map<string, number>();
  #total = 0;
  #timer: NodeJS.Timeout | undefined;
  #settled: (() => void)[] = [];

  constructor(options: FdCloserOptions = {}) {
    this.#maxThreads = options.maxThreads ?? 32;
    this.#maxPerOwner = options.maxThreadsPerOwner ?? 8;
  }

  /** Fds given and not closed yet. */
  get pending(): number {
    return this.#total;
  }

  /** Fds of `owner` given and not closed yet. */
  pendingFor(owner: string): number {
    return this.#pending.get(owner) ?? 0;
  }

  /** Closing threads running now (some may never return). */
  get threads(): number {
    return this.#running.length;
  }

  /** Fds of `owner` (every owner's, if undefined) given more than `ms` ago and not closed yet:
   * closes that wait, where pendingFor also counts a burst of quick ones. */
  waitingLongerThan(ms: number, owner?: string): number {
    const before = performance.now() - ms;
    let count = 0;
    for (const closing of [...this.#running, ...this.#waiting]) if (closing.since < before && (owner === undefined || closing.owner === owner)) count++;
    return count;
  }

  /** Closes `fd`, at once if its close cannot wait, else on a thread; `owner` is whom it is counted against. */
  close(fd: number, owner = ''): void {
    if (fd < 0) return;
    if (prepare(fd)) {
      closeFd(fd);
      return;
    }
    this.#pending.set(owner, this.pendingFor(owner) + 1);
    this.#total++;
    this.#waiting.push({ fd, owner, since: performance.now() });
    this.#startWaiting();
  }

  /** Resolves true once every fd given is closed, or false after `timeoutMs`. */
  settled(timeoutMs = 10_000): Promise<boolean> {
    if (this.#total === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#settled.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** Nothing to end: a thread ends with its close, and one that never returns ends with the process. */
  async stop(): Promise<void> {}

  /** Starts a thread for each waiting fd there is room for. */
  #startWaiting(): void {
    for (let i = 0; i < this.#waiting.length && this.#running.length < this.#maxThreads; ) {
      const closing = this.#waiting[i]!;
      if (this.#running.filter((running) => running.owner === closing.owner).length >= this.#maxPerOwner) {
        i++;
        continue;
      }
      const id = Buffer.alloc(8);
      if ((c.create(id, attributes, CLOSE, closing.fd) as number) !== 0) break; // EAGAIN: no thread now; the next poll tries again
      this.#waiting.splice(i, 1);
      this.#running.push({ ...closing, thread: id.readBigUInt64LE() });
    }
    if (this.#total > 0) this.#timer ??= setInterval(() => this.#poll(), POLL_MS).unref();
  }

  /** Joins the threads whose close has returned, and starts waiting ones in their place. */
  #poll(): void {
    for (let i = this.#running.length - 1; i >= 0; i--) {
      const running = this.#running[i]!;
      if ((c.tryJoin(running.thread, null) as number) !== 0) continue; // EBUSY: still in close(2)
      this.#running.splice(i, 1);
      const left = this.pendingFor(running.owner) - 1;
      if (left > 0) this.#pending.set(running.owner, left);
      else this.#pending.delete(running.owner);
      this.#total--;
    }
    this.#startWaiting();
    if (this.#total === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      for (const resolve of this.#settled.splice(0)) resolve();
    }
  }
}
