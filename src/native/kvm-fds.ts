/**
 * One type per kind of KVM fd, each ioctl a method (the shape of rust-vmm's kvm-ioctls).
 * Every fd is close-on-exec: the kernel creates VM, vCPU and stats fds with O_CLOEXEC and
 * /dev/kvm is opened with it.
 */
import { fieldOffset } from '../abi/layout.js';
import {
  KVM_API_VERSION,
  KVM_CAP_BINARY_STATS_FD,
  KVM_CHECK_EXTENSION,
  KVM_CREATE_VCPU,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_SREGS,
  KVM_GET_STATS_FD,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_RUN,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_USER_MEMORY_REGION,
  KVM_USERSPACE_MEMORY_REGION,
} from '../abi/kvm.js';
import { O_RDWR } from '../abi/linux.js';
import { closeFd, closeOnThrow, ioctl, ioctlStruct, openPath } from './libc.js';

export const DEFAULT_KVM_PATH = '/dev/kvm';

abstract class OwnedFd {
  #fd: number;

  protected constructor(fd: number) {
    this.#fd = fd;
  }

  /** The raw fd; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  close(): void {
    closeFd(this.#fd);
    this.#fd = -1;
  }
}

/** The system fd: /dev/kvm. */
export class Kvm extends OwnedFd {
  static open(path: string = DEFAULT_KVM_PATH): Kvm {
    const fd = openPath(path, O_RDWR, `open ${path}`);
    return closeOnThrow(fd, () => {
      const version = ioctl(fd, KVM_GET_API_VERSION, 0, 'KVM_GET_API_VERSION');
      if (version !== KVM_API_VERSION) {
        throw new Error(`KVM_GET_API_VERSION returned ${version}, expected ${KVM_API_VERSION}: this KVM is not supported`);
      }
      return new Kvm(fd);
    });
  }

  checkExtension(capability: number): number {
    return ioctl(this.fd, KVM_CHECK_EXTENSION, capability, 'KVM_CHECK_EXTENSION');
  }

  /** Whether KVM_GET_STATS_FD exists here (Linux 5.14+). */
  hasBinaryStats(): boolean {
    return this.checkExtension(KVM_CAP_BINARY_STATS_FD) > 0;
  }

  /** Size of the kvm_run area to mmap from each vCPU fd. */
  vcpuMmapSize(): number {
    return ioctl(this.fd, KVM_GET_VCPU_MMAP_SIZE, 0, 'KVM_GET_VCPU_MMAP_SIZE');
  }

  createVm(): VmFd {
    return new VmFd(ioctl(this.fd, KVM_CREATE_VM, 0, 'KVM_CREATE_VM'));
  }
}

/** A VM fd, as KVM_CREATE_VM returns it. */
export class VmFd extends OwnedFd {
  /** @internal Use Kvm.createVm(). */
  constructor(fd: number) {
    super(fd);
  }

  createVcpu(id: number): VcpuFd {
    return new VcpuFd(ioctl(this.fd, KVM_CREATE_VCPU, id, 'KVM_CREATE_VCPU'), id);
  }

  /** A new stats fd for this VM; the caller owns it. */
  statsFd(): number {
    return ioctl(this.fd, KVM_GET_STATS_FD, 0, 'KVM_GET_STATS_FD');
  }

  setUserMemoryRegion(slot: number, guestPhysAddr: bigint, memorySize: number, userspaceAddr: bigint): void {
    const region = Buffer.alloc(KVM_USERSPACE_MEMORY_REGION.size);
    region.writeUInt32LE(slot, fieldOffset(KVM_USERSPACE_MEMORY_REGION, 'slot'));
    region.writeUInt32LE(0, fieldOffset(KVM_USERSPACE_MEMORY_REGION, 'flags'));
    region.writeBigUInt64LE(guestPhysAddr, fieldOffset(KVM_USERSPACE_MEMORY_REGION, 'guest_phys_addr'));
    region.writeBigUInt64LE(BigInt(memorySize), fieldOffset(KVM_USERSPACE_MEMORY_REGION, 'memory_size'));
    region.writeBigUInt64LE(userspaceAddr, fieldOffset(KVM_USERSPACE_MEMORY_REGION, 'userspace_addr'));
    ioctlStruct(this.fd, KVM_SET_USER_MEMORY_REGION, region, 'KVM_SET_USER_MEMORY_REGION');
  }
}

/** A vCPU fd, as KVM_CREATE_VCPU returns it. */
export class VcpuFd extends OwnedFd {
  readonly id: number;

  /** @internal Use VmFd.createVcpu(), or borrow(fd) in a thread that does not own the fd. */
  constructor(fd: number, id: number) {
    super(fd);
    this.id = id;
  }

  /** A wrapper for an fd owned elsewhere (a worker thread running a vCPU of the main thread). */
  static borrow(fd: number, id: number): VcpuFd {
    return new (class extends VcpuFd {
      override close(): void {
        // Borrowed: the owner closes it.
      }
    })(fd, id);
  }

  /** A new stats fd for this vCPU; the caller owns it. */
  statsFd(): number {
    return ioctl(this.fd, KVM_GET_STATS_FD, 0, 'KVM_GET_STATS_FD');
  }

  run(): void {
    ioctl(this.fd, KVM_RUN, 0, 'KVM_RUN');
  }

  getSregs(sregs: Uint8Array): void {
    ioctlStruct(this.fd, KVM_GET_SREGS, sregs, 'KVM_GET_SREGS');
  }

  setSregs(sregs: Uint8Array): void {
    ioctlStruct(this.fd, KVM_SET_SREGS, sregs, 'KVM_SET_SREGS');
  }

  setRegs(regs: Uint8Array): void {
    ioctlStruct(this.fd, KVM_SET_REGS, regs, 'KVM_SET_REGS');
  }
}
