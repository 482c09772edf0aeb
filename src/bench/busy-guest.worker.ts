/**
 * Runs a share of a busy fleet's vCPUs on one thread, a turn at a time: on each "step" message,
 * every vCPU of the share runs its guest from one port write to the next halt (an I/O exit and
 * a halt exit), then the thread answers. A bounded pool of these takes turns over thousands of
 * vCPUs that could never each have a thread of their own.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { fieldOffset } from '../abi/layout.js';
import { KVM_EXIT_HLT, KVM_EXIT_IO, KVM_REGS, KVM_RUN_LAYOUT, KVM_SREGS } from '../abi/kvm.js';
import { NativeError } from '../native/errors.js';
import { VcpuFd } from '../native/kvm-fds.js';
import { Mapping } from '../native/libc.js';

export interface BusyGuestWorkerData {
  readonly vcpuFds: readonly number[];
  readonly mmapSize: number;
  readonly entry: number;
}

const data = workerData as BusyGuestWorkerData;
const vcpus: { vcpu: VcpuFd; kvmRun: Mapping; exitReason: Uint32Array }[] = [];

function setUp(): void {
  const sregs = new Uint8Array(KVM_SREGS.size);
  const sview = Buffer.from(sregs.buffer);
  const regs = Buffer.alloc(KVM_REGS.size);
  regs.writeBigUInt64LE(BigInt(data.entry), fieldOffset(KVM_REGS, 'rip'));
  regs.writeBigUInt64LE(2n, fieldOffset(KVM_REGS, 'rflags')); // bit 1 is reserved and must be set
  for (const fd of data.vcpuFds) {
    const vcpu = VcpuFd.borrow(fd, 0);
    // Real mode, code segment at 0, execution from the guest's entry point.
    vcpu.getSregs(sregs);
    sview.writeBigUInt64LE(0n, fieldOffset(KVM_SREGS, 'cs.base'));
    sview.writeUInt16LE(0, fieldOffset(KVM_SREGS, 'cs.selector'));
    vcpu.setSregs(sregs);
    vcpu.setRegs(regs);
    const kvmRun = Mapping.map(data.mmapSize, fd, 'mmap of kvm_run');
    vcpus.push({ vcpu, kvmRun, exitReason: new Uint32Array(kvmRun.bytes.buffer, fieldOffset(KVM_RUN_LAYOUT, 'exit_reason'), 1) });
  }
}

function runOnce(vcpu: VcpuFd): void {
  for (;;) {
    try {
      vcpu.run();
      return;
    } catch (error) {
      if (!(error instanceof NativeError && (error.code === 'EINTR' || error.code === 'EAGAIN'))) throw error;
    }
  }
}

/** Every vCPU of the share from its port write to its halt. */
function step(): void {
  for (const { vcpu, exitReason } of vcpus) {
    for (;;) {
      runOnce(vcpu);
      const reason = exitReason[0];
      if (reason === KVM_EXIT_HLT) break;
      if (reason !== KVM_EXIT_IO) throw new Error(`busy guest: a vCPU stopped with KVM exit reason ${reason}, not an I/O or halt exit`);
    }
  }
}

function unmapAll(): void {
  for (const { kvmRun } of vcpus.splice(0)) kvmRun.unmap();
}

try {
  setUp();
  parentPort!.postMessage({ ready: true });
  parentPort!.on('message', (command: 'step' | 'stop') => {
    if (command === 'stop') {
      unmapAll();
      parentPort!.close();
      return;
    }
    try {
      step();
      parentPort!.postMessage({ done: true });
    } catch (error) {
      parentPort!.postMessage({ error: (error as Error).message });
    }
  });
} catch (error) {
  unmapAll();
  parentPort!.postMessage({ error: (error as Error).message });
}
