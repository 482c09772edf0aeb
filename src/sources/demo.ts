/**
 * The demo VM: a real KVM VM made by this process, N vCPUs running a tiny real-mode guest that
 * writes to an I/O port 256 times and halts, forever. Each vCPU runs on its own worker thread.
 * It makes `exits`, `halt_exits` and `insn_emulation` move, so there is always something to see.
 */
import { Worker } from 'node:worker_threads';
import type { VcpuFd, VmFd } from '../native/kvm-fds.js';
import { Mapping } from '../native/libc.js';
import { StatsFile } from '../stats/stats-file.js';
import { Command, type GuestWorkerData, State } from './demo-protocol.js';
import { openKvm } from './kvm-check.js';
import { attachSchedstats } from './schedstat.js';
import { type StatsSource, closeSources, statsSource } from './source.js';

/** mov dx,0x10; out dx,al; inc al; jnz out; hlt; jmp out */
const GUEST_CODE = Uint8Array.of(0xba, 0x10, 0x00, 0xee, 0xfe, 0xc0, 0x75, 0xfb, 0xf4, 0xeb, 0xf8);
const GUEST_ENTRY = 0x1000;
const GUEST_MEMORY_SIZE = 64 * 1024;
export const DEMO_MAX_VCPUS = 64;
const WORKER_TIMEOUT_MS = 5000;

export interface DemoVmOptions {
  /** vCPUs, 1 to 64; default 2. */
  readonly vcpus?: number;
  /** Becomes kvm.vm.name; default "demo". */
  readonly name?: string;
  /** Default /dev/kvm. */
  readonly kvmPath?: string;
}

function workerFor(workerData: GuestWorkerData): Worker {
  // From the TypeScript sources (tests), the worker needs a loader; from dist/ it is plain JS.
  if (import.meta.url.endsWith('.ts')) {
    const url = new URL('./demo-guest.worker.ts', import.meta.url).href;
    const bootstrap = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(url)}); })`;
    return new Worker(bootstrap, { eval: true, workerData });
  }
  return new Worker(new URL('./demo-guest.worker.js', import.meta.url), { workerData });
}

function waitForMessage(worker: Worker, vcpuId: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (message: string): void => reject(new Error(`demo VM: vCPU ${vcpuId} did not start: ${message}`));
    worker.once('message', (message: { ready?: boolean; error?: string }) =>
      message.ready ? resolve() : fail(message.error ?? 'unknown error'),
    );
    worker.once('error', (error) => fail(error.message));
    worker.once('exit', (code) => fail(`its thread exited with code ${code}`));
  });
}

export class DemoVm {
  readonly name: string;
  /** The VM's stats source first, then one per vCPU. Owned by the DemoVm: stop() closes them. */
  readonly sources: readonly StatsSource[];
  readonly #vm: VmFd;
  readonly #vcpus: readonly VcpuFd[];
  readonly #memory: Mapping;
  readonly #control: Int32Array;
  readonly #workers: { worker: Worker; exited: Promise<unknown> }[] = [];
  #errors: string[] = [];
  #stopped = false;

  private constructor(name: string, vm: VmFd, vcpus: VcpuFd[], memory: Mapping, sources: StatsSource[]) {
    this.name = name;
    this.#vm = vm;
    this.#vcpus = vcpus;
    this.#memory = memory;
    this.sources = sources;
    this.#control = new Int32Array(new SharedArrayBuffer(4 * (1 + vcpus.length)));
  }

  /** Creates the VM and its vCPUs and starts the guest on every vCPU. Where the KVM device
   * cannot be opened, a KvmUnavailableError says why. */
  static async start(options: DemoVmOptions = {}): Promise<DemoVm> {
    const vcpuCount = options.vcpus ?? 2;
    if (!Number.isInteger(vcpuCount) || vcpuCount < 1 || vcpuCount > DEMO_MAX_VCPUS) {
      throw new RangeError(`demo VM: vcpus must be a whole number from 1 to ${DEMO_MAX_VCPUS}, not ${vcpuCount}`);
    }
    const name = options.name ?? 'demo';
    // No KVM here: a KvmUnavailableError says why (no module, no vmx/svm, no permission).
    const kvm = openKvm(options.kvmPath);
    let mmapSize: number;
    // Everything made so far, undone in reverse if a later step fails.
    const undo: (() => void)[] = [];
    let demo: DemoVm;
    try {
      if (!kvm.hasBinaryStats()) {
        throw new Error('KVM_CHECK_EXTENSION(KVM_CAP_BINARY_STATS_FD) says no: this kernel has no binary stats; Linux 5.14 or newer is needed');
      }
      mmapSize = kvm.vcpuMmapSize();
      const vm = kvm.createVm();
      undo.push(() => vm.close());
      const memory = Mapping.map(GUEST_MEMORY_SIZE);
      undo.push(() => memory.unmap());
      memory.bytes.set(GUEST_CODE, GUEST_ENTRY);
      vm.setUserMemoryRegion(0, 0n, GUEST_MEMORY_SIZE, memory.address);
      const vcpus: VcpuFd[] = [];
      for (let id = 0; id < vcpuCount; id++) {
        const vcpu = vm.createVcpu(id);
        undo.push(() => vcpu.close());
        vcpus.push(vcpu);
      }
      const owner = { pid: process.pid, vmName: name, startTimeMs: Date.now() };
      const sources: StatsSource[] = [];
      for (const fdOwner of [vm, ...vcpus]) {
        const file = StatsFile.open(fdOwner.statsFd());
        undo.push(() => file.close());
        sources.push(statsSource(file, owner, 'own VM'));
      }
      // Every vCPU is created by this thread, the agent's main one: none gets scheduler time.
      attachSchedstats(process.pid, sources);
      demo = new DemoVm(name, vm, vcpus, memory, sources);
    } catch (error) {
      for (const step of undo.reverse()) step();
      throw error;
    } finally {
      kvm.close();
    }
    try {
      await demo.#startWorkers(mmapSize);
    } catch (error) {
      await demo.stop();
      throw error;
    }
    return demo;
  }

  async #startWorkers(mmapSize: number): Promise<void> {
    const started = this.#vcpus.map((vcpu, index) => {
      const worker = workerFor({
        control: this.#control.buffer as SharedArrayBuffer,
        index,
        vcpuFd: vcpu.fd,
        vcpuId: vcpu.id,
        mmapSize,
        entry: GUEST_ENTRY,
      });
      this.#workers.push({ worker, exited: new Promise((resolve) => worker.once('exit', resolve)) });
      const ready = waitForMessage(worker, vcpu.id);
      // After start, a failing vCPU thread is kept as an error rather than crashing the process.
      ready.then(
        () => {
          worker.on('message', (m: { error?: string }) => m.error && this.#errors.push(`vCPU ${vcpu.id}: ${m.error}`));
          worker.on('error', (e) => this.#errors.push(`vCPU ${vcpu.id}: ${e.message}`));
        },
        () => undefined,
      );
      return ready;
    });
    await Promise.all(started);
  }

  /** Errors of vCPU threads since start; empty while the guest runs as it should. */
  get errors(): readonly string[] {
    return this.#errors;
  }

  get vcpuCount(): number {
    return this.#vcpus.length;
  }

  /** Takes every vCPU out of KVM_RUN and holds it there; values stop moving. */
  async pause(): Promise<void> {
    this.#command(Command.Pause);
    await this.#waitForStates([State.Paused, State.Stopped], 'pause');
  }

  /** Lets every vCPU run the guest again. */
  resume(): void {
    this.#command(Command.Run);
  }

  /** Stops the guest, joins the vCPU threads, closes every fd and unmaps the guest's memory. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#command(Command.Stop);
    await Promise.all(
      this.#workers.map(async ({ worker, exited }) => {
        const timer = setTimeout(() => void worker.terminate(), WORKER_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }),
    );
    closeSources(this.sources);
    for (const vcpu of this.#vcpus) vcpu.close();
    this.#vm.close();
    this.#memory.unmap();
  }

  #command(command: number): void {
    Atomics.store(this.#control, 0, command);
    Atomics.notify(this.#control, 0);
  }

  async #waitForStates(states: readonly number[], what: string): Promise<void> {
    const deadline = Date.now() + WORKER_TIMEOUT_MS;
    for (;;) {
      let pending = 0;
      for (let i = 0; i < this.#vcpus.length; i++) {
        if (!states.includes(Atomics.load(this.#control, 1 + i))) pending++;
      }
      if (pending === 0) return;
      if (Date.now() > deadline) throw new Error(`demo VM: ${pending} vCPU thread(s) did not ${what} within ${WORKER_TIMEOUT_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }
}
