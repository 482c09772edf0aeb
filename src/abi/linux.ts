/**
 * The few non-KVM parts of the kernel ABI the native layer and /proc readers use: open and
 * mmap flags, syscall numbers, Unix sockets with SCM_RIGHTS and lingering, poll(2), threads for
 * closing, and /proc/PID/stat's units and flags. Same values and layouts on x86_64 and aarch64 (LP64) unless said. Checked
 * against the libc headers by test/abi/headers.test.ts, as ./kvm.ts is against <linux/kvm.h>.
 */
import { layout } from './layout.js';

// ---------------------------------------------------------------------------------------------
// Files, memory and processes.

export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
/** An fd that only names a file (fstat, and chmod through /proc/self/fd), never opens it. */
export const O_PATH = 0o10000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_ANONYMOUS = 0x20;
/** memfd_create(2): an anonymous regular file in memory, for replaying a recording's images. */
export const MFD_CLOEXEC = 1;
/** syscall numbers of pidfd_open and pidfd_getfd: the generic table, shared by x86_64 and aarch64. */
export const __NR_pidfd_open = 434;
export const __NR_pidfd_getfd = 438;

/** kcmp(2), to tell whether two fds are the same open file: anon inodes share one inode
 * number, so fstat cannot. Its number differs by architecture (x86_64 312, aarch64 272). */
export const __NR_kcmp = process.arch === 'arm64' ? 272 : 312;
export const KCMP_FILE = 0;

/** open(2): a terminal opened here does not become the process's controlling terminal. */
export const O_NOCTTY = 0o400;

/** fstatfs(2): only f_type is read (the filesystem's magic number, <linux/magic.h>). */
export const STATFS = layout('struct statfs', 120, false, [['f_type', 0, 8]]);
/** Filesystems whose files are the kernel's own: reading one can have effects (/proc/kmsg takes
 * the kernel's log lines), so a file a user names is never read from them. */
export const PROC_SUPER_MAGIC = 0x9fa0;
export const SYSFS_MAGIC = 0x62656572;
export const DEBUGFS_MAGIC = 0x64626720;
export const TRACEFS_MAGIC = 0x74726163;
export const SECURITYFS_MAGIC = 0x73636673;

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
/** Every message then carries the sender's credentials (SCM_CREDENTIALS): a message of no bytes
 * reads apart from end-of-connection, which carries none. Inherited by accepted sockets. */
export const SO_PASSCRED = 16;
export const SCM_CREDENTIALS = 2;
/** The most fds one message can carry (include/net/scm.h, kernel-internal: no uapi header has
 * it); test/sources/handover-receiver.test.ts sends this many and one more. */
export const SCM_MAX_FD = 253;
export const MSG_TRUNC = 0x20;
export const MSG_CTRUNC = 0x8;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SOMAXCONN = 4096;
export const POLLIN = 0x1;
/** struct linger: whether close(2) waits for unsent data, and for how many seconds. */
export const SO_LINGER = 13;

export const LINGER = layout('struct linger', 8, true, [
  ['l_onoff', 0, 4],
  ['l_linger', 4, 4],
]);

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

// ---------------------------------------------------------------------------------------------
// Threads

/** sizeof(pthread_attr_t): glibc's differs by architecture (x86_64 56, aarch64 64). */
export const PTHREAD_ATTR_SIZE = process.arch === 'arm64' ? 64 : 56;

// ---------------------------------------------------------------------------------------------
// /proc

/** Clock ticks per second in /proc/PID/stat (USER_HZ; sysconf(_SC_CLK_TCK)). */
export const USER_HZ = 100;

/** The "exiting" bit of a task's flags (field 9 of /proc/PID/stat). Kernel-internal
 * (include/linux/sched.h), so no header has it: its test watches a process that exits. */
export const PF_EXITING = 0x4;
