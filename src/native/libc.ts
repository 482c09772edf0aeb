/**
 * The libc calls this project makes, bound once with koffi. Every wrapper turns a failure into
 * a NativeError naming the call; nothing here knows about stats images or OpenTelemetry.
 */
import { type Stats, fstatSync, statSync } from 'node:fs';
import koffi from 'koffi';
import { fieldOffset } from '../abi/layout.js';
import {
  DEBUGFS_MAGIC,
  MAP_ANONYMOUS,
  MAP_SHARED,
  MFD_CLOEXEC,
  O_CLOEXEC,
  O_NOCTTY,
  O_NONBLOCK,
  O_RDONLY,
  PROC_SUPER_MAGIC,
  SECURITYFS_MAGIC,
  STATFS,
  SYSFS_MAGIC,
  TRACEFS_MAGIC,
  POLLFD,
  POLLIN,
  PROT_READ,
  PROT_WRITE,
  KCMP_FILE,
  __NR_kcmp,
  __NR_pidfd_getfd,
  __NR_pidfd_open,
} from '../abi/linux.js';
import { NativeError } from './errors.js';

function loadLibc(): ReturnType<typeof koffi.load> {
  try {
    return koffi.load('libc.so.6');
  } catch (error) {
    throw new Error(`loading libc.so.6 failed (${(error as Error).message}): kvm-stats-otel needs Linux with glibc`);
  }
}

const libc = loadLibc();

const c = {
  open: libc.func('open', 'int', ['str', 'int', 'int']),
  close: libc.func('close', 'int', ['int']),
  pread: libc.func('pread', 'int64_t', ['int', 'void *', 'size_t', 'int64_t']),
  ioctlInt: libc.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']),
  ioctlPtr: libc.func('ioctl', 'int', ['int', 'unsigned long', 'void *']),
  syscall3: libc.func('syscall', 'long', ['long', 'long', 'long', 'long']),
  syscall5: libc.func('syscall', 'long', ['long', 'long', 'long', 'long', 'long', 'long']),
  poll: libc.func('poll', 'int', ['void *', 'unsigned long', 'int']),
  mmap: libc.func('mmap', 'void *', ['void *', 'size_t', 'int', 'int', 'int', 'int64_t']),
  munmap: libc.func('munmap', 'int', ['void *', 'size_t']),
  mallocTrim: libc.func('malloc_trim', 'int', ['size_t']),
  memfdCreate: libc.func('memfd_create', 'int', ['str', 'unsigned int']),
  fstatfs: libc.func('fstatfs', 'int', ['int', 'void *']),
};

/** open(2) with O_CLOEXEC always set; `call` names the operation in errors. */
export function openPath(path: string, flags: number = O_RDONLY, call = `open ${path}`): number {
  const fd = c.open(path, flags | O_CLOEXEC, 0) as number;
  if (fd < 0) throw new NativeError(call, koffi.errno());
  return fd;
}

/** fstatfs(2): the magic number of the filesystem `fd`'s file is on (<linux/magic.h>). */
export function filesystemType(fd: number): number {
  const statfs = Buffer.alloc(STATFS.size);
  if ((c.fstatfs(fd, statfs) as number) < 0) throw new NativeError('fstatfs', koffi.errno());
  return Number(statfs.readBigInt64LE(fieldOffset(STATFS, 'f_type')));
}

/** What a file is, in words: "regular file", "FIFO", "character device"... */
export function fileKind(stat: Stats): string {
  if (stat.isFile()) return 'regular file';
  if (stat.isDirectory()) return 'directory';
  if (stat.isFIFO()) return 'FIFO';
  if (stat.isSocket()) return 'socket';
  if (stat.isCharacterDevice()) return 'character device';
  if (stat.isBlockDevice()) return 'block device';
  return 'special file';
}

const KERNEL_FILESYSTEMS: Record<number, string> = {
  [PROC_SUPER_MAGIC]: '/proc (procfs)',
  [SYSFS_MAGIC]: '/sys (sysfs)',
  [DEBUGFS_MAGIC]: 'debugfs',
  [TRACEFS_MAGIC]: 'tracefs',
  [SECURITYFS_MAGIC]: 'securityfs',
};

/** A file a user named that is not read: what it is ("a character device", "a file of /proc
 * (procfs)"), and why that matters where it is not plain. */
export class UnreadFileError extends Error {
  constructor(
    readonly path: string,
    readonly kind: string,
    readonly why?: string,
  ) {
    super(`${path} is ${kind}${why ? `: ${why}` : ''}`);
    this.name = 'UnreadFileError';
  }

  /** "PATH is a FIFO, not WANTED", and why where it is not plain. */
  notA(wanted: string): string {
    return `${this.path} is ${this.kind}, not ${wanted}${this.why ? `: ${this.why}` : ''}`;
  }
}

/**
 * Opens a regular file a user named (an image, a recording) for reading, refusing before any
 * read what reading would be wrong for: anything but a regular file is refused before it is
 * opened (opening a device can have effects of its own; a FIFO without a writer would wait),
 * and a file of the kernel's own filesystems (/proc, /sys, debugfs...) once open, before a byte
 * is read (reading /proc/kmsg takes the kernel's log lines). The open does not wait (O_NONBLOCK)
 * and takes no terminal (O_NOCTTY); fstat checks again what was opened.
 */
export function openRegularFile(path: string): number {
  let stat: Stats | undefined;
  try {
    stat = statSync(path);
  } catch {
    // Missing or not allowed: open says so, with its errno.
  }
  if (stat && !stat.isFile()) throw new UnreadFileError(path, `a ${fileKind(stat)}`);
  return closeOnThrow(openPath(path, O_RDONLY | O_NONBLOCK | O_NOCTTY), (fd) => {
    const opened = fstatSync(fd);
    if (!opened.isFile()) throw new UnreadFileError(path, `a ${fileKind(opened)}`);
    const kernel = KERNEL_FILESYSTEMS[filesystemType(fd)];
    if (kernel !== undefined) throw new UnreadFileError(path, `a file of ${kernel}`, "the kernel's own files are never read as input, as reading some of them has effects (/proc/kmsg takes the kernel's log lines)");
    return fd;
  });
}

/** close(2). Never throws: nothing useful can be done about a failed close. */
export function closeFd(fd: number): void {
  if (fd >= 0) c.close(fd);
}

/** Runs `use(fd)`, closing fd if it throws: for the window between getting an fd and owning it. */
export function closeOnThrow<T>(fd: number, use: (fd: number) => T): T {
  try {
    return use(fd);
  } catch (error) {
    closeFd(fd);
    throw error;
  }
}

/** pread(2) into `buffer`; returns the number of bytes read (0 past the end). */
export function pread(fd: number, buffer: Uint8Array, length: number, position: number): number {
  const n = Number(c.pread(fd, buffer, length, position));
  if (n < 0) throw new NativeError('pread', koffi.errno());
  return n;
}

/** ioctl(2) with an integer argument. */
export function ioctl(fd: number, request: number, arg: number, call: string): number {
  const result = c.ioctlInt(fd, request, arg) as number;
  if (result < 0) throw new NativeError(call, koffi.errno());
  return result;
}

/** ioctl(2) with a pointer to `struct` as argument (read, written or both by the kernel). */
export function ioctlStruct(fd: number, request: number, struct: Uint8Array, call: string): number {
  const result = c.ioctlPtr(fd, request, struct) as number;
  if (result < 0) throw new NativeError(call, koffi.errno());
  return result;
}

/** memfd_create(2) with MFD_CLOEXEC: a regular file in memory that pread and fstat treat as
 * any other; `name` shows in /proc/PID/fd as "/memfd:NAME (deleted)". */
export function memfdCreate(name: string): number {
  const fd = c.memfdCreate(name, MFD_CLOEXEC) as number;
  if (fd < 0) throw new NativeError('memfd_create', koffi.errno());
  return fd;
}

/** pidfd_open(2): a close-on-exec fd that refers to the process `pid`. */
export function pidfdOpen(pid: number): number {
  const fd = Number(c.syscall3(__NR_pidfd_open, pid, 0, 0));
  if (fd < 0) throw new NativeError('pidfd_open', koffi.errno());
  return fd;
}

/** pidfd_getfd(2): a close-on-exec copy of fd `targetFd` of the process behind `pidfd`. */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  const fd = Number(c.syscall3(__NR_pidfd_getfd, pidfd, targetFd, 0));
  if (fd < 0) throw new NativeError('pidfd_getfd', koffi.errno());
  return fd;
}

/**
 * kcmp(2) KCMP_FILE: whether fd `fd1` of process `pid1` and fd `fd2` of `pid2` are the same
 * open file. Needs ptrace read access to both. Every anon inode (all KVM fds) has the same
 * inode number, so this is the only way to tell two stats fds apart from outside.
 */
export function sameOpenFile(pid1: number, fd1: number, pid2: number, fd2: number): boolean {
  const result = Number(c.syscall5(__NR_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2));
  if (result < 0) throw new NativeError('kcmp', koffi.errno());
  return result === 0;
}

/**
 * Which of `fds` are readable now, without waiting: one poll(2) with timeout 0. A pidfd is
 * readable once its process has exited.
 */
export function readableNow(fds: readonly number[]): boolean[] {
  if (fds.length === 0) return [];
  const size = POLLFD.size;
  const pollfds = Buffer.alloc(fds.length * size);
  fds.forEach((fd, i) => {
    pollfds.writeInt32LE(fd, i * size + fieldOffset(POLLFD, 'fd'));
    pollfds.writeInt16LE(POLLIN, i * size + fieldOffset(POLLFD, 'events'));
  });
  if ((c.poll(pollfds, fds.length, 0) as number) < 0) throw new NativeError('poll', koffi.errno());
  // POLLIN, or POLLHUP/POLLERR/POLLNVAL: anything but silence means there is nothing to wait for.
  return fds.map((_, i) => pollfds.readInt16LE(i * size + fieldOffset(POLLFD, 'revents')) !== 0);
}

/** Gives the C heap's free pages back to the kernel, so that RSS measures memory in use (the
 * soak compares it over time; glibc otherwise keeps freed pages as long as it likes). */
export function trimMallocHeap(): void {
  c.mallocTrim(0);
}

/** A shared mapping: anonymous memory, or an fd's pages (the vCPU's kvm_run). */
export class Mapping {
  readonly #pointer: unknown;
  readonly length: number;
  /** The host virtual address, as the kernel wants it in kvm_userspace_memory_region. */
  readonly address: bigint;
  /** The mapped bytes. Invalid after unmap(). */
  readonly bytes: Uint8Array;
  #mapped = true;

  private constructor(pointer: unknown, length: number) {
    this.#pointer = pointer;
    this.length = length;
    this.address = koffi.address(pointer);
    this.bytes = new Uint8Array(koffi.view(pointer, length));
  }

  static map(length: number, fd = -1, call = 'mmap'): Mapping {
    const flags = fd < 0 ? MAP_SHARED | MAP_ANONYMOUS : MAP_SHARED;
    const pointer = c.mmap(null, length, PROT_READ | PROT_WRITE, flags, fd, 0);
    // MAP_FAILED is (void *)-1.
    if (pointer === null || koffi.address(pointer) === 0xffffffffffffffffn) throw new NativeError(call, koffi.errno());
    return new Mapping(pointer, length);
  }

  unmap(): void {
    if (!this.#mapped) return;
    this.#mapped = false;
    c.munmap(this.#pointer, this.length);
  }
}
