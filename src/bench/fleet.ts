/**
 * A fleet of idle VMs made in this process, N VMs x M vCPUs, of which only the stats fds are
 * kept: for the benchmark and for load tests. A stats fd holds a reference on its VM, so each
 * VM and vCPU fd is closed as soon as its stats fds are open; 10,000 stats fds then fit in an
 * open-file limit of 20,000 (which cannot be raised on the machines this was built on).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { NativeError } from '../native/errors.js';
import { Kvm } from '../native/kvm.js';
import { closeFd } from '../native/libc.js';
import { StatsFile } from '../stats/stats-file.js';
import { type StatsSource, closeSources, statsSource } from '../sources/source.js';

export interface VmFleetOptions {
  /** Number of VMs, at least 1. */
  readonly vms: number;
  /** vCPUs per VM, at least 0. */
  readonly vcpus: number;
  /** VM i is named `${namePrefix}-${i}` (kvm.vm.name), which keeps their series apart. Default "fleet". */
  readonly namePrefix?: string;
  /** Default /dev/kvm. */
  readonly kvmPath?: string;
}

/** The soft open-file limit of this process, from /proc (Node has no getrlimit). Node raises it
 * to the hard limit when it starts, so a fleet cannot get more without a higher hard limit. */
function openFileLimit(): number {
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
  return !match || match[1] === 'unlimited' ? Infinity : Number(match[1]);
}

export class VmFleet {
  /** Per VM: its stats source, then one per vCPU. Closed by close(). */
  readonly sources: readonly StatsSource[];

  private constructor(sources: StatsSource[]) {
    this.sources = sources;
  }

  /** Stats fds a fleet of this shape holds. */
  static fdCount(vms: number, vcpus: number): number {
    return vms * (1 + vcpus);
  }

  /** Throws the RangeError create() would for a fleet of this shape that cannot be made here. */
  static checkShape(vms: number, vcpus: number): void {
    if (!Number.isInteger(vms) || vms < 1 || !Number.isInteger(vcpus) || vcpus < 0) {
      throw new RangeError(`VM fleet: needs a whole number of VMs (at least 1) and vCPUs (at least 0), not ${vms} x ${vcpus}`);
    }
    // Each VM briefly holds its VM and vCPU fds next to its stats fds.
    const needed = VmFleet.fdCount(vms, vcpus) + 1 + vcpus + 1;
    const open = readdirSync('/proc/self/fd').length;
    const limit = openFileLimit();
    if (open + needed > limit) {
      throw new RangeError(
        `VM fleet: ${vms} VMs x ${vcpus} vCPUs need ${needed} fds but the open-file limit is ${limit} with ${open} open: raise it (ulimit -n) or make fewer`,
      );
    }
  }

  static create(options: VmFleetOptions): VmFleet {
    const { vms, vcpus } = options;
    VmFleet.checkShape(vms, vcpus);
    const prefix = options.namePrefix ?? 'fleet';
    const kvm = Kvm.open(options.kvmPath);
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

  close(): void {
    closeSources(this.sources);
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

/** Makes one VM with its vCPUs, opens their stats fds into `sources`, and closes the rest. */
function addVm(kvm: Kvm, vcpus: number, owner: { pid: number; vmName: string; startTimeMs: number }, sources: StatsSource[]): void {
  const vm = retryInterrupted(() => kvm.createVm());
  const vcpuFds: number[] = [];
  try {
    sources.push(statsSource(StatsFile.open(vm.statsFd()), owner, 'own VM'));
    for (let id = 0; id < vcpus; id++) {
      const vcpu = retryInterrupted(() => vm.createVcpu(id));
      vcpuFds.push(vcpu.fd);
      sources.push(statsSource(StatsFile.open(vcpu.statsFd()), owner, 'own VM'));
    }
  } finally {
    // The stats fds keep the VM and its vCPUs alive in the kernel.
    for (const fd of vcpuFds) closeFd(fd);
    vm.close();
  }
}
