/**
 * Unix SOCK_SEQPACKET sockets that carry fds (SCM_RIGHTS), bound once with koffi: what the
 * hand-over of stats fds needs and Node's net module cannot do. Every socket is close-on-exec
 * and non-blocking, so nothing here ever waits: a call that would block reports "not now".
 */
import { chmodSync, closeSync, constants, fstatSync, openSync } from 'node:fs';
import koffi from 'koffi';
import { fieldOffset } from '../abi/layout.js';
import {
  AF_UNIX,
  CMSGHDR,
  IOVEC,
  MSGHDR,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSG_TRUNC,
  O_PATH,
  SCM_RIGHTS,
  SOCKADDR_UN,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_SEQPACKET,
  SOL_SOCKET,
  SOMAXCONN,
  SO_PASSCRED,
  SO_PEERCRED,
  UCRED,
} from '../abi/linux.js';
import { NativeError, errnoName } from './errors.js';
import { closeFd, closeOnThrow } from './libc.js';

const libc = koffi.load('libc.so.6');
const c = {
  socket: libc.func('socket', 'int', ['int', 'int', 'int']),
  bind: libc.func('bind', 'int', ['int', 'void *', 'uint32_t']),
  listen: libc.func('listen', 'int', ['int', 'int']),
  connect: libc.func('connect', 'int', ['int', 'void *', 'uint32_t']),
  accept4: libc.func('accept4', 'int', ['int', 'void *', 'void *', 'int']),
  getsockopt: libc.func('getsockopt', 'int', ['int', 'int', 'int', 'void *', '_Inout_ uint32_t *']),
  setsockopt: libc.func('setsockopt', 'int', ['int', 'int', 'int', 'void *', 'uint32_t']),
  recvmsg: libc.func('recvmsg', 'int64_t', ['int', 'void *', 'int']),
  sendmsg: libc.func('sendmsg', 'int64_t', ['int', 'void *', 'int']),
};

const EAGAIN = 'EAGAIN';
const FD_SIZE = 4;
/** The longest path sun_path holds, leaving room for its NUL. */
const MAX_PATH_BYTES = SOCKADDR_UN.size - fieldOffset(SOCKADDR_UN, 'sun_path') - 1;

/** CMSG_ALIGN: control message lengths round up to the size of a long. */
const cmsgAlign = (length: number): number => (length + 7) & ~7;
const CMSG_DATA = fieldOffset(CMSGHDR, '__cmsg_data');

/** What is needed, by errno name; the receiver is whoever listens on the path (a CLI names its flag). */
const HINTS: Record<string, string> = {
  ENOENT: 'nothing listens there: check the path or start the receiver',
  ECONNREFUSED: 'nothing listens there any more: restart the receiver',
  EACCES: 'the socket admits only its owner and group (mode 0660): run as one of them',
  EADDRINUSE: 'another receiver listens on that path: stop it or pick another path',
};

function fail(call: string, path?: string): never {
  const errno = koffi.errno();
  const where = path ? `${call} ${path}` : call;
  throw new NativeError(where, errno, HINTS[errnoName(errno)]);
}

function sockaddr(path: string): Buffer {
  const bytes = Buffer.from(path);
  if (bytes.length === 0 || bytes.length > MAX_PATH_BYTES || bytes.includes(0)) {
    throw new RangeError(`socket path ${JSON.stringify(path)} is ${bytes.length} bytes: a Unix socket path must be 1 to ${MAX_PATH_BYTES} bytes; pick a shorter one`);
  }
  const address = Buffer.alloc(SOCKADDR_UN.size);
  address.writeUInt16LE(AF_UNIX, fieldOffset(SOCKADDR_UN, 'sun_family'));
  bytes.copy(address, fieldOffset(SOCKADDR_UN, 'sun_path'));
  return address;
}

function seqpacketSocket(): number {
  const fd = c.socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket');
  return fd;
}

/** SO_PASSCRED, so that a message of no bytes reads apart from end-of-connection (see receive()). */
function passCredentials(fd: number): void {
  const on = Buffer.alloc(4);
  on.writeInt32LE(1);
  if ((c.setsockopt(fd, SOL_SOCKET, SO_PASSCRED, on, on.length) as number) < 0) fail('setsockopt SO_PASSCRED');
}

/** Thrown when the file at a just-bound path is not our socket: someone swapped it meanwhile. */
export class SocketPathSwappedError extends Error {
  readonly code = 'EEXIST';
  constructor(readonly path: string) {
    super(`${path} was replaced by another file right after it was bound: someone else can write to its directory; use a directory only the receiver's user can change`);
    this.name = 'SocketPathSwappedError';
  }
}

/**
 * Sets the mode of the socket file just bound at `path` without following a link there: chmod
 * on the path would follow a symlink swapped in after bind and change the mode of whatever it
 * names. The file is opened O_PATH|O_NOFOLLOW (a link opens as itself), checked to be a socket
 * of this user, and chmod goes through /proc/self/fd to that very inode. (Linux gives a bound
 * socket the mode of the socket's inode less the umask; the umask is process-wide, so it is not
 * touched here.)
 */
function setSocketMode(path: string, mode: number): void {
  let fd: number;
  try {
    fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
  } catch {
    throw new SocketPathSwappedError(path);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isSocket() || stat.uid !== process.geteuid?.()) throw new SocketPathSwappedError(path);
    chmodSync(`/proc/self/fd/${fd}`, mode);
  } finally {
    closeSync(fd);
  }
}

/**
 * A listening socket at `path` with file mode `mode`. The mode is set between bind and listen,
 * so no one can connect while the file still has the umask's mode, and without following a
 * link (see setSocketMode). Accepted connections carry SO_PASSCRED.
 */
export function listenSeqpacket(path: string, mode: number): number {
  const address = sockaddr(path);
  return closeOnThrow(seqpacketSocket(), (fd) => {
    if ((c.bind(fd, address, address.length) as number) < 0) fail('bind', path);
    setSocketMode(path, mode);
    passCredentials(fd);
    if ((c.listen(fd, SOMAXCONN) as number) < 0) fail('listen', path);
    return fd;
  });
}

/** A connected socket (with SO_PASSCRED, for the answers); undefined when the listener's backlog is full (EAGAIN). */
export function connectSeqpacket(path: string): number | undefined {
  const address = sockaddr(path);
  return closeOnThrow(seqpacketSocket(), (fd) => {
    passCredentials(fd);
    if ((c.connect(fd, address, address.length) as number) < 0) {
      if (errnoName(koffi.errno()) === EAGAIN) {
        closeFd(fd);
        return undefined;
      }
      fail('connect', path);
    }
    return fd;
  });
}

/** The next pending connection (non-blocking, close-on-exec), or undefined if none waits. */
export function acceptConnection(listenFd: number): number | undefined {
  const fd = c.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
  if (fd >= 0) return fd;
  if (errnoName(koffi.errno()) === EAGAIN) return undefined;
  return fail('accept4');
}

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** SO_PEERCRED: who connected, as the kernel recorded it at connect time. */
export function peerCredentials(fd: number): PeerCredentials {
  const ucred = Buffer.alloc(UCRED.size);
  if ((c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ucred, [ucred.length]) as number) < 0) fail('getsockopt SO_PEERCRED');
  return {
    pid: ucred.readInt32LE(fieldOffset(UCRED, 'pid')),
    uid: ucred.readUInt32LE(fieldOffset(UCRED, 'uid')),
    gid: ucred.readUInt32LE(fieldOffset(UCRED, 'gid')),
  };
}

export interface ReceivedMessage {
  readonly bytes: Buffer;
  /** Received fds, close-on-exec, now owned by the caller. */
  readonly fds: number[];
  /** The payload was longer than the buffer (MSG_TRUNC): the rest is lost. */
  readonly truncated: boolean;
  /** More fds came than the control buffer holds (MSG_CTRUNC): the kernel closed the rest. */
  readonly fdsTruncated: boolean;
}

/**
 * A msghdr, its iovec, control and payload buffers in one block of native memory that does not
 * move, reused for every message. One per socket user; call free() when done.
 */
export class MessageBuffer {
  readonly maxBytes: number;
  readonly maxFds: number;
  readonly #pointer: unknown;
  readonly #view: Buffer;
  readonly #controlAt: number;
  readonly #controlSize: number;
  readonly #dataAt: number;
  #freed = false;

  constructor(maxBytes: number, maxFds: number) {
    this.maxBytes = maxBytes;
    this.maxFds = maxFds;
    this.#controlAt = MSGHDR.size + IOVEC.size;
    // Room for the sender's credentials (SO_PASSCRED) and for maxFds fds.
    this.#controlSize = CMSG_DATA + cmsgAlign(UCRED.size) + CMSG_DATA + cmsgAlign(maxFds * FD_SIZE);
    this.#dataAt = this.#controlAt + this.#controlSize;
    const size = this.#dataAt + maxBytes;
    this.#pointer = koffi.alloc('uint8_t', size);
    this.#view = Buffer.from(koffi.view(this.#pointer, size));
  }

  /** Points the msghdr at the iovec, the payload (`length` bytes) and `controlLength` bytes of control. */
  #prepare(length: number, controlLength: number): void {
    const base = koffi.address(this.#pointer);
    const v = this.#view;
    v.fill(0, 0, MSGHDR.size + IOVEC.size);
    v.writeBigUInt64LE(base + BigInt(MSGHDR.size), fieldOffset(MSGHDR, 'msg_iov'));
    v.writeBigUInt64LE(1n, fieldOffset(MSGHDR, 'msg_iovlen'));
    v.writeBigUInt64LE(controlLength > 0 ? base + BigInt(this.#controlAt) : 0n, fieldOffset(MSGHDR, 'msg_control'));
    v.writeBigUInt64LE(BigInt(controlLength), fieldOffset(MSGHDR, 'msg_controllen'));
    v.writeBigUInt64LE(base + BigInt(this.#dataAt), MSGHDR.size + fieldOffset(IOVEC, 'iov_base'));
    v.writeBigUInt64LE(BigInt(length), MSGHDR.size + fieldOffset(IOVEC, 'iov_len'));
  }

  /**
   * One recvmsg without waiting. Returns undefined when nothing is queued, 'end' when the peer
   * has closed, else the message and the fds that came with it. On SOCK_SEQPACKET recvmsg
   * returns 0 both for a message of no bytes and at the end: on a socket with SO_PASSCRED (those
   * of listenSeqpacket and connectSeqpacket) every message carries SCM_CREDENTIALS and the end
   * carries nothing, which tells them apart; on any other socket an empty message without fds
   * reads as 'end'.
   */
  receive(fd: number): ReceivedMessage | 'end' | undefined {
    this.#checkLive();
    this.#prepare(this.maxBytes, this.#controlSize);
    this.#view.fill(0, this.#controlAt, this.#controlAt + this.#controlSize);
    const n = Number(c.recvmsg(fd, this.#pointer, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
    if (n < 0) {
      if (errnoName(koffi.errno()) === EAGAIN) return undefined;
      fail('recvmsg');
    }
    const flags = this.#view.readInt32LE(fieldOffset(MSGHDR, 'msg_flags'));
    const controlLength = Number(this.#view.readBigUInt64LE(fieldOffset(MSGHDR, 'msg_controllen')));
    if (n === 0 && controlLength === 0) return 'end';
    const fds = this.#receivedFds(controlLength);
    return {
      bytes: Buffer.from(this.#view.subarray(this.#dataAt, this.#dataAt + Math.min(n, this.maxBytes))),
      fds,
      truncated: (flags & MSG_TRUNC) !== 0,
      fdsTruncated: (flags & MSG_CTRUNC) !== 0,
    };
  }

  /** Every fd of every SCM_RIGHTS control message (normally there is one). */
  #receivedFds(controlLength: number): number[] {
    const v = this.#view;
    const fds: number[] = [];
    let at = 0;
    while (at + CMSG_DATA <= controlLength) {
      const header = this.#controlAt + at;
      const length = Number(v.readBigUInt64LE(header + fieldOffset(CMSGHDR, 'cmsg_len')));
      if (length < CMSG_DATA || at + length > controlLength) break;
      const level = v.readInt32LE(header + fieldOffset(CMSGHDR, 'cmsg_level'));
      const type = v.readInt32LE(header + fieldOffset(CMSGHDR, 'cmsg_type'));
      // SCM_CREDENTIALS (SO_PASSCRED) is skipped: who connected comes from SO_PEERCRED.
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        for (let p = CMSG_DATA; p + FD_SIZE <= length; p += FD_SIZE) fds.push(v.readInt32LE(header + p));
      }
      at += cmsgAlign(length);
    }
    return fds;
  }

  /**
   * One sendmsg of `bytes` with `fds` attached, without waiting. Returns false when the
   * receiver's queue is full (EAGAIN): try again later.
   */
  send(fd: number, bytes: Uint8Array, fds: readonly number[]): boolean {
    this.#checkLive();
    if (bytes.length > this.maxBytes || fds.length > this.maxFds) {
      throw new RangeError(`a hand-over message holds at most ${this.maxBytes} bytes and ${this.maxFds} fds, not ${bytes.length} and ${fds.length}`);
    }
    const controlLength = fds.length > 0 ? CMSG_DATA + cmsgAlign(fds.length * FD_SIZE) : 0;
    this.#prepare(bytes.length, controlLength);
    this.#view.set(bytes, this.#dataAt);
    if (fds.length > 0) {
      const header = this.#controlAt;
      this.#view.fill(0, header, header + controlLength);
      this.#view.writeBigUInt64LE(BigInt(CMSG_DATA + fds.length * FD_SIZE), header + fieldOffset(CMSGHDR, 'cmsg_len'));
      this.#view.writeInt32LE(SOL_SOCKET, header + fieldOffset(CMSGHDR, 'cmsg_level'));
      this.#view.writeInt32LE(SCM_RIGHTS, header + fieldOffset(CMSGHDR, 'cmsg_type'));
      fds.forEach((sent, i) => this.#view.writeInt32LE(sent, header + CMSG_DATA + i * FD_SIZE));
    }
    const n = Number(c.sendmsg(fd, this.#pointer, MSG_DONTWAIT | MSG_NOSIGNAL));
    if (n >= 0) return true;
    if (errnoName(koffi.errno()) === EAGAIN) return false;
    return fail('sendmsg');
  }

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    koffi.free(this.#pointer);
  }

  #checkLive(): void {
    if (this.#freed) throw new Error('internal: MessageBuffer used after free()');
  }
}
