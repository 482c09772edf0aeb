/**
 * The KVM ABI this project speaks, defined once: <linux/kvm.h>'s stats structs and flags,
 * ioctl numbers, and what the demo guest needs. The rest of the kernel ABI (files, memory,
 * sockets, poll, /proc) is in ./linux.ts.
 *
 * Every number and struct layout taken from the kernel's uapi headers lives in src/abi/ and
 * nowhere else in src/. Names are the C names, so test/abi/headers.test.ts can compile them
 * against the system's headers and fail the moment the two disagree.
 */
import { layout } from './layout.js';


// ---------------------------------------------------------------------------------------------
// Binary statistics (Documentation/virt/kvm/api.rst, KVM_GET_STATS_FD; Linux 5.14+)

/** struct kvm_stats_header: at offset 0 of every stats fd. */
export const KVM_STATS_HEADER = layout('struct kvm_stats_header', 24, true, [
  ['flags', 0, 4],
  ['name_size', 4, 4],
  ['num_desc', 8, 4],
  ['id_offset', 12, 4],
  ['desc_offset', 16, 4],
  ['data_offset', 20, 4],
]);

/** struct kvm_stats_desc: 16 fixed bytes, then `name_size` bytes of name. */
export const KVM_STATS_DESC = layout('struct kvm_stats_desc', 16, true, [
  ['flags', 0, 4],
  ['exponent', 4, 2], // __s16
  ['size', 6, 2], // __u16
  ['offset', 8, 4],
  ['bucket_size', 12, 4],
  ['name', 16, 0], // flexible array member: name_size bytes
]);

export const KVM_STATS_TYPE_SHIFT = 0;
export const KVM_STATS_TYPE_MASK = 0xf << KVM_STATS_TYPE_SHIFT;
export const KVM_STATS_TYPE_CUMULATIVE = 0x0 << KVM_STATS_TYPE_SHIFT;
export const KVM_STATS_TYPE_INSTANT = 0x1 << KVM_STATS_TYPE_SHIFT;
export const KVM_STATS_TYPE_PEAK = 0x2 << KVM_STATS_TYPE_SHIFT;
export const KVM_STATS_TYPE_LINEAR_HIST = 0x3 << KVM_STATS_TYPE_SHIFT;
export const KVM_STATS_TYPE_LOG_HIST = 0x4 << KVM_STATS_TYPE_SHIFT;
export const KVM_STATS_TYPE_MAX = KVM_STATS_TYPE_LOG_HIST;

export const KVM_STATS_UNIT_SHIFT = 4;
export const KVM_STATS_UNIT_MASK = 0xf << KVM_STATS_UNIT_SHIFT;
export const KVM_STATS_UNIT_NONE = 0x0 << KVM_STATS_UNIT_SHIFT;
export const KVM_STATS_UNIT_BYTES = 0x1 << KVM_STATS_UNIT_SHIFT;
export const KVM_STATS_UNIT_SECONDS = 0x2 << KVM_STATS_UNIT_SHIFT;
export const KVM_STATS_UNIT_CYCLES = 0x3 << KVM_STATS_UNIT_SHIFT;
export const KVM_STATS_UNIT_BOOLEAN = 0x4 << KVM_STATS_UNIT_SHIFT;
export const KVM_STATS_UNIT_MAX = KVM_STATS_UNIT_BOOLEAN;

export const KVM_STATS_BASE_SHIFT = 8;
export const KVM_STATS_BASE_MASK = 0xf << KVM_STATS_BASE_SHIFT;
export const KVM_STATS_BASE_POW10 = 0x0 << KVM_STATS_BASE_SHIFT;
export const KVM_STATS_BASE_POW2 = 0x1 << KVM_STATS_BASE_SHIFT;
export const KVM_STATS_BASE_MAX = KVM_STATS_BASE_POW2;

/** Every value in the data block is a __u64 in host byte order. */
export const KVM_STATS_VALUE_SIZE = 8;

/**
 * The id string: "kvm-<tid>" for a VM, "kvm-<tid>/vcpu-<n>" for a vCPU (virt/kvm/kvm_main.c).
 * The tid is the thread that created the VM or vCPU, not necessarily the process.
 */
export const KVM_STATS_ID_PATTERN = /^kvm-(\d+)(?:\/vcpu-(\d+))?$/;

/** The names the kernel gives the anonymous inodes, as /proc/PID/fd links show them. */
export const ANON_INODE_VM_STATS = 'anon_inode:kvm-vm-stats';
export const ANON_INODE_VCPU_STATS_PREFIX = 'anon_inode:kvm-vcpu-stats:';
export const ANON_INODE_VM = 'anon_inode:kvm-vm';
export const ANON_INODE_VCPU_PREFIX = 'anon_inode:kvm-vcpu:';

// ---------------------------------------------------------------------------------------------
// ioctls. KVMIO is 0xAE; _IO(type, nr) = type << 8 | nr; _IOW/_IOR add the direction and size.

export const KVM_API_VERSION = 12;
export const KVM_GET_API_VERSION = 0xae00;
export const KVM_CREATE_VM = 0xae01;
export const KVM_CHECK_EXTENSION = 0xae03;
export const KVM_GET_VCPU_MMAP_SIZE = 0xae04;
export const KVM_CREATE_VCPU = 0xae41;
export const KVM_SET_USER_MEMORY_REGION = 0x4020ae46;
export const KVM_RUN = 0xae80;
export const KVM_SET_REGS = 0x4090ae82;
export const KVM_GET_SREGS = 0x8138ae83;
export const KVM_SET_SREGS = 0x4138ae84;
export const KVM_GET_STATS_FD = 0xaece;

export const KVM_CAP_BINARY_STATS_FD = 203;

// ---------------------------------------------------------------------------------------------
// What the demo guest needs (x86_64 only): memory slots, registers, the shared kvm_run page.

export const KVM_USERSPACE_MEMORY_REGION = layout('struct kvm_userspace_memory_region', 32, true, [
  ['slot', 0, 4],
  ['flags', 4, 4],
  ['guest_phys_addr', 8, 8],
  ['memory_size', 16, 8],
  ['userspace_addr', 24, 8],
]);

export const KVM_REGS = layout('struct kvm_regs', 144, false, [
  ['rip', 128, 8],
  ['rflags', 136, 8],
]);

export const KVM_SREGS = layout('struct kvm_sregs', 312, false, [
  ['cs.base', 0, 8],
  ['cs.selector', 12, 2],
]);

export const KVM_RUN_LAYOUT = layout('struct kvm_run', 2352, false, [
  ['immediate_exit', 1, 1],
  ['exit_reason', 8, 4],
]);

export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HLT = 5;
