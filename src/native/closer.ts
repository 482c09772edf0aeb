/**
 * Closing fds that came from outside, off the event loop. close(2) of the last reference waits
 * as long as the file's kind says: a TCP socket with unsent data and SO_LINGER (1, N) waits N
 * seconds, a FUSE file waits for its daemon to answer FLUSH, a tty for its output to drain, and a
 * Unix socket closed with messages still queued closes the fds inside them too. So such fds are
 * closed on threads of their own (worker_threads, not libuv's pool, which DNS and fs share).
 *
 * One thread does the work; a thread whose close has not returned for STUCK_MS is passed over
 * and the next fds go to another, up to MAX_THREADS, so one close that never returns holds
 * only its own thread. Threads are started when first needed and end after IDLE_MS without work.
 */
import { Worker } from 'node:worker_threads';

const MAX_THREADS = 4;
const STUCK_MS = 100;
const IDLE_MS = 10_000;

// CommonJS, evaluated: nothing to resolve from wherever the package is installed.
const SOURCE = `
const { parentPort } = require('node:worker_threads');
const { closeSync } = require('node:fs');
parentPort.on('message', (fd) => {
  try { closeSync(fd); } catch {}
  parentPort.postMessage(fd);
});
`;

interface Closer {
  readonly worker: Worker;
  pending: number;
  /** When it last finished a close, or took work while idle. */
  progress: number;
  idleTimer: NodeJS.Timeout | undefined;
}

/** Closes fds on worker threads; the caller must not use an fd once given here. */
export class FdCloser {
  readonly #closers: Closer[] = [];
  #pending = 0;
  #stopping = false;
  #settled: (() => void)[] = [];

  /** Fds given and not closed yet. */
  get pending(): number {
    return this.#pending;
  }

  close(fd: number): void {
    if (fd < 0) return;
    this.#stopping = false;
    const now = Date.now();
    const closer = this.#closers.find((c) => c.pending === 0) ?? this.#closers.find((c) => now - c.progress < STUCK_MS) ?? this.#start() ?? this.#leastLoaded();
    if (closer.pending === 0) closer.progress = now;
    if (closer.idleTimer) clearTimeout(closer.idleTimer);
    closer.idleTimer = undefined;
    closer.pending++;
    this.#pending++;
    closer.worker.postMessage(fd);
  }

  /** Resolves true once every fd given is closed, or false after `timeoutMs`. */
  settled(timeoutMs = 10_000): Promise<boolean> {
    if (this.#pending === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#settled.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** Ends the idle threads now and the others once their fds are closed (a thread cannot be stopped inside a system call). */
  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#closers.filter((closer) => closer.pending === 0).map((closer) => this.#end(closer)));
  }

  async #end(closer: Closer): Promise<void> {
    if (closer.idleTimer) clearTimeout(closer.idleTimer);
    const i = this.#closers.indexOf(closer);
    if (i >= 0) this.#closers.splice(i, 1);
    await closer.worker.terminate();
  }

  #start(): Closer | undefined {
    if (this.#closers.length >= MAX_THREADS) return undefined;
    const worker = new Worker(SOURCE, { eval: true, trackUnmanagedFds: false });
    worker.unref();
    const closer: Closer = { worker, pending: 0, progress: Date.now(), idleTimer: undefined };
    worker.on('message', () => this.#done(closer, 1));
    // A thread that dies takes its queue with it: whether those fds were closed cannot be known.
    worker.on('error', () => this.#done(closer, closer.pending));
    worker.on('exit', () => {
      this.#done(closer, closer.pending);
      const i = this.#closers.indexOf(closer);
      if (i >= 0) this.#closers.splice(i, 1);
    });
    this.#closers.push(closer);
    return closer;
  }

  #leastLoaded(): Closer {
    return this.#closers.reduce((a, b) => (b.pending < a.pending ? b : a));
  }

  #done(closer: Closer, count: number): void {
    if (count === 0) return;
    closer.pending -= count;
    closer.progress = Date.now();
    this.#pending -= count;
    if (closer.pending === 0 && this.#closers.includes(closer)) {
      if (this.#stopping) void this.#end(closer);
      else closer.idleTimer = setTimeout(() => closer.pending === 0 && void this.#end(closer), IDLE_MS).unref();
    }
    if (this.#pending === 0) for (const resolve of this.#settled.splice(0)) resolve();
  }
}
