/**
 * The kernel ABI this project speaks, defined once.
 *
 * Every number and struct layout taken from the kernel's uapi headers lives here and nowhere
 * else in src/. Names are the C names, so test/abi.test.ts can compile them against the
 * system's <linux/kvm.h> (and the libc headers for the few non-KVM constants) and fail the
 * moment the two disagree.
 */

/** A field of a C struct: byte offset and size, in declaration order. */
export interface FieldLayout {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
}

/** A C struct as this project reads or writes it. `complete` means every field is listed. */
export interface StructLayout {
  readonly cName: string;
  readonly size: number;
  readonly complete: boolean;
  readonly fields: readonly FieldLayout[];
}

function layout(cName: string, size: number, complete: boolean, fields: [string, number, number][]): StructLayout {
  return { cName, size, complete, fields: fields.map(([name, offset, fieldSize]) => ({ name, offset, size: fieldSize })) };
}

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

// ---------------------------------------------------------------------------------------------
// The few non-KVM kernel constants the native layer passes (same on x86_64 and aarch64).

export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_ANONYMOUS = 0x20;
/** syscall numbers of pidfd_open and pidfd_getfd: the generic table, shared by x86_64 and aarch64. */
export const __NR_pidfd_open = 434;
export const __NR_pidfd_getfd = 438;

/** kcmp(2), to tell whether two fds are the same open file: anon inodes share one inode
 * number, so fstat cannot. Its number differs by architecture (x86_64 312, aarch64 272). */
export const __NR_kcmp = process.arch === 'arm64' ? 272 : 312;
export const KCMP_FILE = 0;

// ---------------------------------------------------------------------------------------------
// Unix sockets for the hand-over of stats fds (SCM_RIGHTS), and poll(2) for pidfds.
// Same values and layouts on x86_64 and aarch64 (LP64).

export const AF_UNIX = 1;
export const SOCK_SEQPACKET = 5;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export const SO_PEERCRED = 17;
export const MSG_TRUNC = 0x20;
export const MSG_CTRUNC = 0x8;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SOMAXCONN = 4096;
export const POLLIN = 0x1;

export const SOCKADDR_UN = layout('struct sockaddr_un', 110, true, [
  ['sun_family', 0, 2],
  ['sun_path', 2, 108],
]);

export const IOVEC = layout('struct iovec', 16, true, [
  ['iov_base', 0, 8],
  ['iov_len', 8, 8],
]);

export const MSGHDR = layout('struct msghdr', 56, false, [
  ['msg_name', 0, 8],
  ['msg_namelen', 8, 4],
  ['msg_iov', 16, 8],
  ['msg_iovlen', 24, 8],
  ['msg_control', 32, 8],
  ['msg_controllen', 40, 8],
  ['msg_flags', 48, 4],
]);

/** A control message header; its data starts at __cmsg_data (CMSG_DATA), lengths align to 8. */
export const CMSGHDR = layout('struct cmsghdr', 16, true, [
  ['cmsg_len', 0, 8],
  ['cmsg_level', 8, 4],
  ['cmsg_type', 12, 4],
  ['__cmsg_data', 16, 0], // flexible array member
]);

export const UCRED = layout('struct ucred', 12, true, [
  ['pid', 0, 4],
  ['uid', 4, 4],
  ['gid', 8, 4],
]);

export const POLLFD = layout('struct pollfd', 8, true, [
  ['fd', 0, 4],
  ['events', 4, 2],
  ['revents', 6, 2],
]);

/** Field offset by name; throws if this module does not define it (a programming error). */
export function fieldOffset(struct: StructLayout, name: string): number {
  const field = struct.fields.find((f) => f.name === name);
  if (!field) throw new Error(`internal: ${struct.cName} has no field ${name} in src/abi/kvm.ts`);
  return field.offset;
}

/** Clock ticks per second in /proc/PID/stat (USER_HZ; sysconf(_SC_CLK_TCK)). */
export const USER_HZ = 100;

/** The "exiting" bit of a task's flags (field 9 of /proc/PID/stat). Kernel-internal
 * (include/linux/sched.h), so no header has it: its test watches a process that exits. */
export const PF_EXITING = 0x4;
