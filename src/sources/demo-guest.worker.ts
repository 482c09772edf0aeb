/**
 * Runs one vCPU of the demo VM on its own thread, so KVM_RUN never blocks the main thread's
 * collection. The loop checks a shared control word between exits: run, pause or stop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { fieldOffset } from '../abi/layout.js';
import { KVM_EXIT_HLT, KVM_EXIT_IO, KVM_REGS, KVM_RUN_LAYOUT, KVM_SREGS } from '../abi/kvm.js';
import { Mapping } from '../native/libc.js';
import { VcpuFd } from '../native/kvm-fds.js';
import { NativeError } from '../native/errors.js';
import { Command, type GuestWorkerData, State } from './demo-protocol.js';

const data = workerData as GuestWorkerData;
const control = new Int32Array(data.control);
const slot = 1 + data.index;

function setState(state: State): void {
  Atomics.store(control, slot, state);
  Atomics.notify(control, slot);
}

function run(): void {
  const vcpu = VcpuFd.borrow(data.vcpuFd, data.vcpuId);
  const kvmRun = Mapping.map(data.mmapSize, data.vcpuFd, 'mmap of kvm_run');
  try {
    // Real mode, code segment at 0, execution from the guest's entry point.
    const sregs = new Uint8Array(KVM_SREGS.size);
    vcpu.getSregs(sregs);
    const sview = Buffer.from(sregs.buffer);
    sview.writeBigUInt64LE(0n, fieldOffset(KVM_SREGS, 'cs.base'));
    sview.writeUInt16LE(0, fieldOffset(KVM_SREGS, 'cs.selector'));
    vcpu.setSregs(sregs);
    const regs = Buffer.alloc(KVM_REGS.size);
    regs.writeBigUInt64LE(BigInt(data.entry), fieldOffset(KVM_REGS, 'rip'));
    regs.writeBigUInt64LE(2n, fieldOffset(KVM_REGS, 'rflags')); // bit 1 is reserved and must be set
    vcpu.setRegs(regs);

    // Host-endian u32 inside the shared kvm_run page.
    const exitReason = new Uint32Array(kvmRun.bytes.buffer, fieldOffset(KVM_RUN_LAYOUT, 'exit_reason'), 1);
    setState(State.Running);
    parentPort?.postMessage({ ready: true });
    for (;;) {
      const command = Atomics.load(control, 0);
      if (command === Command.Stop) break;
      if (command === Command.Pause) {
        setState(State.Paused);
        Atomics.wait(control, 0, Command.Pause);
        setState(State.Running);
        continue;
      }
      try {
        vcpu.run();
      } catch (error) {
        if (error instanceof NativeError && (error.code === 'EINTR' || error.code === 'EAGAIN')) continue;
        throw error;
      }
      const reason = exitReason[0];
      if (reason === KVM_EXIT_HLT) {
        vcpu.setRegs(regs); // back to the entry point
      } else if (reason !== KVM_EXIT_IO) {
        throw new Error(`demo guest vCPU ${data.vcpuId} stopped with KVM exit reason ${reason}; please report it`);
      }
    }
  } finally {
    kvmRun.unmap();
    setState(State.Stopped);
  }
}

try {
  run();
} catch (error) {
  parentPort?.postMessage({ error: (error as Error).message });
}
