/**
 * Threads of this process that stand in for vCPU threads: worker threads that work and sleep
 * in turns (so their schedstat moves), each knowing its own thread id, stopped on request.
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

const BODY = `
const { parentPort, workerData } = require('node:worker_threads');
const { readlinkSync } = require('node:fs');
// "/proc/thread-self" links to "PID/task/TID".
parentPort.postMessage(Number(readlinkSync('/proc/thread-self').split('/').pop()));
const stop = new Int32Array(workerData);
while (Atomics.load(stop, 0) === 0) {
  const until = Date.now() + 2;
  while (Date.now() < until) {}
  Atomics.wait(stop, 0, 0, 3);
}
`;

export class BusyThread {
  private constructor(
    readonly tid: number,
    private readonly worker: Worker,
    private readonly stopFlag: Int32Array,
  ) {}

  static async start(): Promise<BusyThread> {
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(BODY, { eval: true, workerData: stop.buffer });
    const tid = await new Promise<number>((resolve, reject) => worker.once('message', resolve).once('error', reject));
    return new BusyThread(tid, worker, stop);
  }

  /** Stops the thread and waits until it has exited. */
  async stop(): Promise<void> {
    Atomics.store(this.stopFlag, 0, 1);
    Atomics.notify(this.stopFlag, 0);
    await this.worker.terminate();
  }
}

/** The three numbers of /proc/PID/task/TID/schedstat, read directly. */
export function readSchedstat(tid: number, pid = process.pid): [cpuTimeNs: number, runDelayNs: number, timeslices: number] {
  const [a, b, c] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').trim().split(' ').map(Number);
  return [a!, b!, c!];
}
