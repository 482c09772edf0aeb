/**
 * A fleet of VMs made in this process, N VMs x M vCPUs: for the benchmark and for load tests.
 * Idle, only the stats fds are kept: a stats fd holds a reference on its VM, so each VM and vCPU
 * fd is closed as soon as its stats fds are open; 10,000 stats fds then fit in an open-file
 * limit of 20,000 (which cannot be raised on the machines this was built on).
 *
 * Busy, every vCPU also keeps its fd and runs a tiny guest (a port write, then a halt), a turn
 * at a time: step() runs every vCPU once from a port write to a halt on a bounded pool of worker
 * threads, so that between two collections separated by a step every vCPU's exits and
 * halt_exits have moved. Two cores cannot run thousands of vCPUs at once, and a benchmark that
 * timed collections against guests running meanwhile would time the guests: the steps are taken
 * between the timed collections instead. 10,000 stats fds and their 8,000 vCPU fds still fit.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { Worker } from 'node:worker_threads';
import { NativeError } from '../native/errors.js';
import type { Kvm, VcpuFd } from '../native/kvm-fds.js';
import { Mapping, closeFd } from '../native/libc.js';
import { StatsFile } from '../stats/stats-file.js';
import { openKvm } from '../sources/kvm-check.js';
import { type StatsSource, closeSources, statsSource } from '../sources/source.js';
import type { BusyGuestWorkerData } from './busy-guest.worker.js';

export interface VmFleetOptions {
  /** Number of VMs, at least 1. */
  readonly vms: number;
  /** vCPUs per VM, at least 0. */
  readonly vcpus: number;
  /** VM i is named `${namePrefix}-${i}` (kvm.vm.name), which keeps their series apart. Default "fleet". */
  readonly namePrefix?: string;
  /** Default /dev/kvm. */
  readonly kvmPath?: string;
  /** Keep the vCPUs runnable for step(). Default false. */
  readonly busy?: boolean;
  /** Threads that take turns running a busy fleet's vCPUs; default the number of CPUs, at most 4. */
  readonly guestThreads?: number;
}

/** mov dx,0x10; out: out dx,al; inc al; hlt; jmp out. Each turn: one I/O exit, one halt exit. */
const BUSY_GUEST_CODE = Uint8Array.of(0xba, 0x10, 0x00, 0xee, 0xfe, 0xc0, 0xf4, 0xeb, 0xfa);
const BUSY_GUEST_ENTRY = 0x1000;
const BUSY_GUEST_MEMORY_SIZE = 64 * 1024;

/** The soft open-file limit of this process, from /proc (Node has no getrlimit). Node raises it
 * to the hard limit when it starts, so a fleet cannot get more without a higher hard limit. */
function openFileLimit(): number {
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
  return !match || match[1] === 'unlimited' ? Infinity : Number(match[1]);
}

export class VmFleet {
  /** Per VM: its stats source, then one per vCPU. Closed by close(). */
  readonly sources: readonly StatsSource[];
  readonly #busy: BusyGuests | undefined;

  private constructor(sources: StatsSource[], busy?: BusyGuests) {
    this.sources = sources;
    this.#busy = busy;
  }

  /** Stats fds a fleet of this shape holds. */
  static fdCount(vms: number, vcpus: number): number {
    return vms * (1 + vcpus);
  }

  get busy(): boolean {
    return this.#busy !== undefined;
  }

  /** Runs every vCPU of a busy fleet from a port write to a halt; resolves when all have. */
  async step(): Promise<void> {
    if (!this.#busy) throw new Error('VM fleet: step() needs a fleet made with busy: true');
    await this.#busy.step();
  }

  /** Throws the RangeError create() would for a fleet of this shape that cannot be made here. */
  static checkShape(vms: number, vcpus: number, busy = false): void {
    if (!Number.isInteger(vms) || vms < 1 || !Number.isInteger(vcpus) || vcpus < 0) {
      throw new RangeError(`VM fleet: needs a whole number of VMs (at least 1) and vCPUs (at least 0), not ${vms} x ${vcpus}`);
    }
    // Each VM briefly holds its VM and vCPU fds next to its stats fds.
    const needed = VmFleet.fdCount(vms, vcpus) + 1 + vcpus + 1 + (busy ? vms * vcpus : 0);
    const open = readdirSync('/proc/self/fd').length;
    const limit = openFileLimit();
    if (open + needed > limit) {
      throw new RangeError(
        `VM fleet: ${vms} VMs x ${vcpus} vCPUs need ${needed} fds but the open-file limit is ${limit} with ${open} open: raise it (ulimit -n) or make fewer`,
      );
    }
  }

  static create(options: Omit<VmFleetOptions, 'busy'> & { busy?: false }): VmFleet {
    const { vms, vcpus } = options;
    VmFleet.checkShape(vms, vcpus);
    const prefix = options.namePrefix ?? 'fleet';
    const kvm = openKvm(options.kvmPath);
    const sources: StatsSource[] = [];
    try {
      if (!kvm.hasBinaryStats()) throw new Error('VM fleet: this kernel has no binary stats (KVM_CAP_BINARY_STATS_FD); Linux 5.14 or newer is needed');
      for (let i = 0; i < vms; i++) addVm(kvm, vcpus, { pid: process.pid, vmName: `${prefix}-${i}`, startTimeMs: Date.now() }, sources);
    } catch (error) {
      closeSources(sources);
      throw error;
    } finally {
      kvm.close();
    }
    return new VmFleet(sources);
  }

  /** A fleet whose vCPUs run a guest at each step(); its guest threads are started. */
  static async createBusy(options: Omit<VmFleetOptions, 'busy'>): Promise<VmFleet> {
    const { vms, vcpus } = options;
    VmFleet.checkShape(vms, vcpus, true);
    const prefix = options.namePrefix ?? 'fleet';
    const kvm = openKvm(options.kvmPath);
    const sources: StatsSource[] = [];
    const kept: VcpuFd[] = [];
    // One guest image, mapped into every VM: the guest only reads it.
    const memory = Mapping.map(BUSY_GUEST_MEMORY_SIZE);
    let mmapSize: number;
    try {
      if (!kvm.hasBinaryStats()) throw new Error('VM fleet: this kernel has no binary stats (KVM_CAP_BINARY_STATS_FD); Linux 5.14 or newer is needed');
      memory.bytes.set(BUSY_GUEST_CODE, BUSY_GUEST_ENTRY);
      mmapSize = kvm.vcpuMmapSize();
      for (let i = 0; i < vms; i++) {
        addVm(kvm, vcpus, { pid: process.pid, vmName: `${prefix}-${i}`, startTimeMs: Date.now() }, sources, { memory, kept });
      }
    } catch (error) {
      closeSources(sources);
      for (const vcpu of kept) vcpu.close();
      memory.unmap();
      throw error;
    } finally {
      kvm.close();
    }
    const threads = Math.max(1, Math.min(options.guestThreads ?? Math.min(cpus().length, 4), kept.length));
    const busy = new BusyGuests(kept, memory);
    const fleet = new VmFleet(sources, busy);
    try {
      await busy.start(threads, mmapSize);
    } catch (error) {
      await fleet.close();
      throw error;
    }
    return fleet;
  }

  /** Closes every stats fd; a busy fleet first stops its guest threads, then closes its vCPUs. */
  close(): void | Promise<void> {
    if (!this.#busy) {
      closeSources(this.sources);
      return;
    }
    return this.#busy.stop().finally(() => closeSources(this.sources));
  }
}

function workerFor(workerData: BusyGuestWorkerData): Worker {
  // From the TypeScript sources (tests), the worker needs a loader; from dist/ it is plain JS.
  if (import.meta.url.endsWith('.ts')) {
    const url = new URL('./busy-guest.worker.ts', import.meta.url).href;
    const bootstrap = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(url)}); })`;
    return new Worker(bootstrap, { eval: true, workerData });
  }
  return new Worker(new URL('./busy-guest.worker.js', import.meta.url), { workerData });
}

/** The next message of a guest thread: its answer, or why it has none. */
function answer(worker: Worker, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: { error?: string }): void => {
      done();
      if (message.error !== undefined) reject(new Error(`VM fleet: a guest thread failed to ${what}: ${message.error}`));
      else resolve();
    };
    const onError = (error: Error): void => {
      done();
      reject(new Error(`VM fleet: a guest thread failed to ${what}: ${error.message}`));
    };
    const onExit = (code: number): void => {
      done();
      reject(new Error(`VM fleet: a guest thread exited with code ${code} instead of being able to ${what}`));
    };
    const done = (): void => {
      worker.off('message', onMessage).off('error', onError).off('exit', onExit);
    };
    worker.on('message', onMessage).on('error', onError).on('exit', onExit);
  });
}

/** The vCPU fds of a busy fleet and the threads that take turns running them. */
class BusyGuests {
  readonly #vcpus: VcpuFd[];
  readonly #memory: Mapping;
  readonly #workers: Worker[] = [];

  constructor(vcpus: VcpuFd[], memory: Mapping) {
    this.#vcpus = vcpus;
    this.#memory = memory;
  }

  async start(threads: number, mmapSize: number): Promise<void> {
    const per = Math.ceil(this.#vcpus.length / threads);
    const started: Promise<void>[] = [];
    for (let t = 0; t < threads; t++) {
      const share = this.#vcpus.slice(t * per, (t + 1) * per).map((vcpu) => vcpu.fd);
      if (share.length === 0) break;
      const worker = workerFor({ vcpuFds: share, mmapSize, entry: BUSY_GUEST_ENTRY });
      this.#workers.push(worker);
      started.push(answer(worker, 'start'));
    }
    await Promise.all(started);
  }

  async step(): Promise<void> {
    await Promise.all(
      this.#workers.map((worker) => {
        const done = answer(worker, 'step');
        worker.postMessage('step');
        return done;
      }),
    );
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.#workers.splice(0).map(async (worker) => {
        const exited = new Promise((resolve) => worker.once('exit', resolve));
        worker.postMessage('stop');
        const timer = setTimeout(() => void worker.terminate(), 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
    for (const vcpu of this.#vcpus.splice(0)) vcpu.close();
    this.#memory.unmap();
  }
}

/** Runs an ioctl again when a signal interrupted it (EINTR): KVM_CREATE_VM can be interrupted,
 * for one by a profiler's SIGPROF. */
function retryInterrupted<T>(call: () => T): T {
  for (let attempt = 1; ; attempt++) {
    try {
      return call();
    } catch (error) {
      if (!(error instanceof NativeError && error.code === 'EINTR') || attempt === 10) throw error;
    }
  }
}

/** Makes one VM with its vCPUs, opens their stats fds into `sources`, and closes the rest; a
 * busy one gets the guest's memory and keeps its vCPU fds in `busy.kept`. */
function addVm(
  kvm: Kvm,
  vcpus: number,
  owner: { pid: number; vmName: string; startTimeMs: number },
  sources: StatsSource[],
  busy?: { memory: Mapping; kept: VcpuFd[] },
): void {
  const vm = retryInterrupted(() => kvm.createVm());
  const vcpuFds: number[] = [];
  try {
    if (busy) vm.setUserMemoryRegion(0, 0n, busy.memory.length, busy.memory.address);
    sources.push(statsSource(StatsFile.open(vm.statsFd()), owner, 'own VM'));
    for (let id = 0; id < vcpus; id++) {
      const vcpu = retryInterrupted(() => vm.createVcpu(id));
      if (busy) busy.kept.push(vcpu);
      else vcpuFds.push(vcpu.fd);
      sources.push(statsSource(StatsFile.open(vcpu.statsFd()), owner, 'own VM'));
    }
  } finally {
    // The stats fds (and a busy fleet's vCPU fds) keep the VM and its vCPUs alive in the kernel.
    for (const fd of vcpuFds) closeFd(fd);
    vm.close();
  }
}
