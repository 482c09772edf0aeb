/**
 * Unprivileged hand-over, the receiving side: a Unix SOCK_SEQPACKET socket to which a sender
 * (the preload helper inside a VMM, or the privileged `handoff` command) passes stats fds with
 * SCM_RIGHTS and a small JSON header. The receiver needs no privilege at all: a stats fd can be
 * read by whoever holds it.
 *
 * Nothing here waits on a sender. The socket is drained with non-blocking calls every few
 * milliseconds and at every collection, each connection a few messages per turn, and each
 * message is answered on its connection (accepted N / refused, and why). Every received fd is
 * checked before use: its /proc/self/fd link must name a KVM stats inode and its stats header
 * must validate; anything else is closed so that its close never waits on the event loop
 * (FdCloser: lingering off for a socket, a closing thread of its own for any fd whose close can
 * wait) and logged once with the sender's SO_PEERCRED credentials. Who owns a VM comes from the
 * kernel, never from the message: the thread in the fd's id string, else the sender. Limits
 * bound fds per message, per live sender process and per owner, connections (idle ones time
 * out, the longest idle gives way), the header's size, and the refused fds of one user still
 * being closed: past that, that user's connections are not read (their messages wait in the
 * kernel, charged to the sender) until the closes return. The listening socket's backlog is
 * drained whole at every turn (within a time budget), so a flood of connections that come and
 * go leaves room for a sender that waits to connect.
 *
 * The socket's path is checked as sshd's StrictModes checks a path: every directory on it,
 * through any symbolic link, must belong to root or this user and be writable by no one else
 * (unless sticky); and only the socket this receiver bound (the same device and inode) is
 * removed at close.
 */
import { type Stats, lstatSync, readlinkSync, unlinkSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { SCM_MAX_FD } from '../abi/linux.js';
import { FdCloser } from '../native/closer.js';
import { NativeError } from '../native/errors.js';
import { closeFd } from '../native/libc.js';
import {
  MessageBuffer,
  type PeerCredentials,
  type ReceivedMessage,
  acceptConnection,
  connectSeqpacket,
  listenSeqpacket,
  peerCredentials,
} from '../native/socket.js';
import { StatsFile } from '../stats/stats-file.js';
import { type HeldFd, type HeldProcess, HeldProcesses } from './held-process.js';
import { type ProblemReporter, SaidOnce } from './problem.js';
import { isStatsLink, processOfThread } from './proc.js';
import type { SourceProvider } from './provider.js';
import { type SourceAttributes, type StatsSource, statsSource } from './source.js';

export const HANDOVER_LIMITS = {
  /** Bytes of JSON header in one message. */
  headerBytes: 4096,
  /** Fds in one message; a message with more is refused (all of them are received, up to the
   * kernel's SCM_MAX_FD, so the kernel never closes one here). */
  fdsPerMessage: 64,
  /** Fds held at once that one live sender process handed over; freed when it exits. */
  fdsPerSender: 4096,
  /** Fds held at once for one owning process (the VMM); freed when it exits. */
  fdsPerOwner: 4096,
  /** Connections open at once; a new one past this closes the one idle longest. */
  connections: 64,
  /** Messages taken from one connection per turn, so that a flood waits its turn like the rest. */
  messagesPerTurn: 8,
  /** Connections accepted per drain: the whole backlog (SOMAXCONN), within drainBudgetMs. */
  acceptsPerDrain: 4096,
  /** Time one drain may take accepting connections, so that a flood of them costs the event
   * loop at most this much per drainIntervalMs. */
  drainBudgetMs: 10,
  /** Refused fds of one user (uid) whose close has waited longer than closeWaitMs, past which
   * that user's connections are not read until closes return; and of all users together (then
   * only users with none waiting are read). A burst of closes that return at once counts not. */
  waitingClosesPerUser: 64,
  waitingCloses: 1024,
  closeWaitMs: 100,
  /** Refused fds of one user still being closed, however recently given, past which that user's
   * connections are not read. */
  closesPerUser: 1024,
  /** After accept or recvmsg ran out of fds (EMFILE), nothing is received for this long: the
   * kernel would close what it could not give us on our own thread. */
  outOfFdsPauseMs: 1000,
  /** A connection that sends nothing for this long is closed. */
  idleTimeoutMs: 10_000,
  /** How often the socket is drained between collections. */
  drainIntervalMs: 20,
  /** Extra attributes in one header, and the length of their keys and string values. */
  attributes: 16,
  attributeKeyLength: 64,
  stringLength: 256,
  /** Distinct reasons in one answer. */
  reasons: 4,
} as const;

/** Connections accepted one after another before any is served. */
const ACCEPT_BURST = 256;

/** Attributes a sender may not set: the receiver derives them from the kernel. */
const RESERVED_ATTRIBUTES = new Set(['process.pid', 'kvm.vcpu.id', 'kvm.vm.name', 'kvm.vm.uuid', 'kvm.vcpu.index']);
const ATTRIBUTE_KEY = /^[A-Za-z][A-Za-z0-9_.-]*$/;

/** What a sender says about the fds of one message. Every field is optional. */
export interface HandoverHeader {
  /** The vCPU id of each fd in order, null for a VM's stats fd; checked against the fd itself. */
  readonly vcpus?: readonly (number | null)[];
  /** The guest's name (kvm.vm.name); default: from the VMM's command line. */
  readonly vmName?: string;
  /** Ignored (older senders send their pid): who owns a VM comes from the kernel, never from the message. */
  readonly pid?: number;
  /** Extra attributes for the fds' data points. */
  readonly attributes?: SourceAttributes;
  /** Who sends, for logs: "kvm-stats-preload", "kvm-stats-otel handoff". */
  readonly sender?: string;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const isId = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;
/** A string of printable characters (no control a terminal acts on: names end up in logs and on
 * consoles), up to HANDOVER_LIMITS.stringLength. */
// eslint-disable-next-line no-control-regex
const isShortString = (value: unknown): value is string => typeof value === 'string' && value.length <= HANDOVER_LIMITS.stringLength && !/[\x00-\x1f\x7f-\x9f]/.test(value);

/** Parses and checks a header; throws an Error saying which field is wrong. Unknown fields are ignored. */
export function parseHandoverHeader(bytes: Uint8Array): HandoverHeader {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new Error('the header is not JSON');
  }
  if (!isObject(value)) throw new Error('the header is not a JSON object');
  const { vcpus, vmName, pid, attributes, sender } = value;
  if (vcpus !== undefined && !(Array.isArray(vcpus) && vcpus.every((id) => id === null || isId(id)))) {
    throw new Error('header field vcpus is not a list of vCPU ids and nulls');
  }
  if (vmName !== undefined && !(isShortString(vmName) && vmName !== '')) throw new Error(`header field vmName is not a string of 1 to ${HANDOVER_LIMITS.stringLength} printable characters`);
  if (pid !== undefined && !(isId(pid) && pid > 0)) throw new Error('header field pid is not a process id');
  if (sender !== undefined && !isShortString(sender)) throw new Error('header field sender is not a short string of printable characters');
  if (attributes !== undefined) checkAttributes(attributes);
  return value as HandoverHeader;
}

function checkAttributes(attributes: unknown): asserts attributes is SourceAttributes {
  if (!isObject(attributes)) throw new Error('header field attributes is not an object');
  const entries = Object.entries(attributes);
  if (entries.length > HANDOVER_LIMITS.attributes) throw new Error(`header has ${entries.length} attributes, more than ${HANDOVER_LIMITS.attributes}`);
  for (const [key, value] of entries) {
    if (key.length > HANDOVER_LIMITS.attributeKeyLength || !ATTRIBUTE_KEY.test(key)) throw new Error(`attribute name ${JSON.stringify(key.slice(0, 80))} is not a dotted name`);
    if (RESERVED_ATTRIBUTES.has(key)) throw new Error(`attribute ${key} is set by the receiver, not the sender`);
    const ok = isShortString(value) || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
    if (!ok) throw new Error(`attribute ${key} is not a string (up to ${HANDOVER_LIMITS.stringLength} printable characters), number or boolean`);
  }
}

/** What the receiver answers to each message, as JSON on the same connection. */
export interface HandoverAnswer {
  /** Fds taken (or held already: the same VM or vCPU handed over again). */
  readonly accepted: number;
  /** Fds refused and closed. */
  readonly refused: number;
  /** Why, when anything was refused or the connection is closed: distinct reasons joined by "; ". */
  readonly reason?: string;
  /** Closed for the receiver's own limits, not for what was sent: connect again. */
  readonly retry?: boolean;
}

/** Checks an answer's shape; throws an Error if it is not one. */
export function parseHandoverAnswer(bytes: Uint8Array): HandoverAnswer {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new Error('the answer is not JSON');
  }
  if (!isObject(value) || !isId(value.accepted) || !isId(value.refused) || (value.reason !== undefined && typeof value.reason !== 'string')) {
    throw new Error('the answer is not {"accepted":N,"refused":N,"reason":"..."}');
  }
  return value as unknown as HandoverAnswer;
}

function encodeAnswer(answer: HandoverAnswer): Buffer {
  // "reason" last: the preload helper prints what follows it without parsing JSON.
  const { accepted, refused, retry, reason } = answer;
  return Buffer.from(JSON.stringify({ accepted, refused, ...(retry ? { retry } : {}), ...(reason !== undefined ? { reason } : {}) }));
}

/**
 * A live process that handed fds over: a held process whose fds are charges, one for each fd it
 * handed over that an owner still holds, until it exits. Watched (its pidfd) only while it has a
 * connection open or fds held, so idle processes cost nothing; once it has exited (its pidfd is
 * -1) nothing is charged to it.
 */
type Sender = HeldProcess<HeldFd>;

/** A connection from one sender. */
interface Connection {
  readonly fd: number;
  readonly peer: PeerCredentials;
  /** Undefined when the sender was gone at connect: it cannot send more, nothing to charge. */
  readonly sender: Sender | undefined;
  /** When it connected or last sent a message. */
  lastActive: number;
}

/** A handed-over stats fd, held for the VMM that owns it and charged to the process that sent
 * it, under `charge` among the sender's fds. */
interface HandedFd extends HeldFd {
  readonly source: StatsSource;
  readonly sender: Sender | undefined;
  readonly charge: string;
}

/** What became of one message's fds. */
class Outcome {
  accepted = 0;
  refused = 0;
  retry = false;
  readonly reasons = new Set<string>();

  refuse(count: number, reason: string): void {
    this.refused += count;
    if (this.reasons.size < HANDOVER_LIMITS.reasons) this.reasons.add(reason);
  }

  get answer(): HandoverAnswer {
    return {
      accepted: this.accepted,
      refused: this.refused,
      ...(this.retry ? { retry: true } : {}),
      ...(this.reasons.size > 0 ? { reason: [...this.reasons].join('; ') } : {}),
    };
  }
}

/** Whom a refused fd's close is counted against: the user who sent it. */
function ownerOf(peer: PeerCredentials): string {
  return `uid ${peer.uid}`;
}

/** A listening path that is taken (EADDRINUSE by a live receiver, EEXIST by a file that is not a
 * socket or cannot be replaced), unsafe (EPERM: a directory someone else could swap the socket
 * in), missing (ENOENT: its directory), or that cannot be followed (ELOOP, ENOTDIR). */
export class HandoverPathError extends Error {
  constructor(
    readonly path: string,
    readonly code: 'EADDRINUSE' | 'EEXIST' | 'EPERM' | 'ENOENT' | 'ELOOP' | 'ENOTDIR',
    message: string,
  ) {
    super(message);
    this.name = 'HandoverPathError';
  }
}

export interface HandoverProviderOptions {
  /** File mode of the socket; default 0o660 (owner and group may hand over). */
  readonly mode?: number;
  /** Called once per problem: a refused fd (once per sender and reason), an exited VMM. */
  readonly report?: ProblemReporter;
  /** Fds held at once per live sender process; default HANDOVER_LIMITS.fdsPerSender. */
  readonly fdsPerSender?: number;
  /** Fds held at once per owning process; default HANDOVER_LIMITS.fdsPerOwner. */
  readonly fdsPerOwner?: number;
  /** Default HANDOVER_LIMITS.idleTimeoutMs. */
  readonly idleTimeoutMs?: number;
}

/** Stats fds handed over on a Unix socket, held until their VMM exits. */
export class HandoverProvider implements SourceProvider {
  readonly description: string;
  readonly path: string;
  readonly #mode: number;
  readonly #fdsPerSender: number;
  readonly #fdsPerOwner: number;
  readonly #idleTimeoutMs: number;
  readonly #connections = new Map<number, Connection>();
  /** The VMMs whose fds are held, keyed within each by the kernel's id string. */
  readonly #owners: HeldProcesses<HandedFd>;
  /** Live senders, watched while they have a connection or charges. */
  readonly #senders: HeldProcesses<HeldFd>;
  /** Keyed by sender and kind of problem. */
  readonly #said: SaidOnce;
  readonly #closer = new FdCloser();
  #listenFd = -1;
  /** The socket file this receiver bound, to remove at close only if it is still that one. */
  #bound: { readonly dev: number; readonly ino: number } | undefined;
  /** Until when nothing is received: accept or recvmsg ran out of fds. */
  #pausedUntil = 0;
  #buffer: MessageBuffer | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(path: string, options: HandoverProviderOptions = {}) {
    this.path = path;
    this.description = `hand-over socket ${path}`;
    this.#mode = options.mode ?? 0o660;
    const report = options.report ?? (() => undefined);
    this.#owners = new HeldProcesses<HandedFd>({ report, noun: 'handed-over stats fds', release: (held) => this.#release(held) });
    // A sender's exit is not news: its fds stay with their owners.
    this.#senders = new HeldProcesses<HeldFd>({ report: () => undefined });
    this.#said = new SaidOnce(report);
    this.#fdsPerSender = options.fdsPerSender ?? HANDOVER_LIMITS.fdsPerSender;
    this.#fdsPerOwner = options.fdsPerOwner ?? HANDOVER_LIMITS.fdsPerOwner;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? HANDOVER_LIMITS.idleTimeoutMs;
  }

  /** Listens on the first call (throws if it cannot), then takes whatever was handed over. */
  async refresh(): Promise<void> {
    if (this.#listenFd < 0) this.#listen();
    this.#drain();
  }

  /** The sources held now: drops those of exited VMMs, takes new ones, without waiting. */
  sources(): readonly StatsSource[] {
    if (this.#listenFd >= 0) this.#drain();
    return this.#owners.sources();
  }

  /** Refused fds still being closed (a close that can wait runs on a thread of its own). */
  get closing(): number {
    return this.#closer.pending;
  }

  /**
   * Resolves true once every fd refused so far is closed (that happens off the event loop) and
   * the threads that closed them have ended, false if fds are still being closed after `timeoutMs`.
   */
  async settled(timeoutMs?: number): Promise<boolean> {
    const done = await this.#closer.settled(timeoutMs);
    await this.#closer.stop();
    return done;
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    for (const connection of this.#connections.values()) this.#closer.close(connection.fd);
    this.#connections.clear();
    this.#owners.close();
    this.#senders.close();
    this.#buffer?.free();
    this.#buffer = undefined;
    if (this.#listenFd >= 0) {
      // Its queue may hold connections with fds in them: closed like any fd from outside.
      this.#closer.close(this.#listenFd);
      this.#listenFd = -1;
      this.#removeBoundSocket();
    }
    await this.settled(1000);
  }

  #listen(): void {
    checkSocketPath(this.path);
    removeStaleSocket(this.path);
    this.#listenFd = listenSeqpacket(this.path, this.#mode);
    try {
      const stat = lstatSync(this.path);
      this.#bound = { dev: stat.dev, ino: stat.ino };
    } catch {
      // Gone already: there is nothing of ours to remove at close.
    }
    this.#buffer = new MessageBuffer(HANDOVER_LIMITS.headerBytes, SCM_MAX_FD);
    this.#timer = setInterval(() => this.#drainSafely(), HANDOVER_LIMITS.drainIntervalMs);
    this.#timer.unref();
  }

  /** Removes the socket file at close, only if it is the one bound here and its path is still safe. */
  #removeBoundSocket(): void {
    const bound = this.#bound;
    this.#bound = undefined;
    if (!bound) return;
    try {
      checkSocketPath(this.path);
      const stat = lstatSync(this.path);
      if (stat.isSocket() && stat.dev === bound.dev && stat.ino === bound.ino) unlinkSync(this.path);
    } catch {
      // Gone, replaced, or its path is no longer safe: what is there now is not ours to remove.
    }
  }

  #drainSafely(): void {
    try {
      if (this.#listenFd >= 0) this.#drain();
    } catch (error) {
      this.#said.say(`drain:${(error as Error).message}`, { kind: 'accept-failed', message: `taking hand-overs on ${this.path} failed: ${(error as Error).message}` });
    }
  }

  #drain(): void {
    const now = Date.now();
    this.#owners.reap();
    // Senders that have exited are charged no more: their quota is free, their fds stay with their owners.
    this.#senders.reap();
    for (const connection of [...this.#connections.values()]) {
      if (now - connection.lastActive > this.#idleTimeoutMs) this.#drop(connection);
    }
    if (now < this.#pausedUntil) return;
    // The backlog is taken whole (within a time budget), in bursts of accept(2) calls with
    // nothing between them: they free room faster than a flood of connections that come and go
    // can take it again, so a sender waiting to connect (the kernel wakes it at each accept) gets
    // in. Each new connection is then served at once: what it sent before it was accepted is
    // answered before a later one can push it out.
    const start = performance.now();
    let accepted = 0;
    while (accepted < HANDOVER_LIMITS.acceptsPerDrain && performance.now() - start < HANDOVER_LIMITS.drainBudgetMs) {
      const burst: number[] = [];
      for (let fd: number | undefined; burst.length < ACCEPT_BURST && (fd = this.#accept()) !== undefined; ) burst.push(fd);
      accepted += burst.length;
      for (const fd of burst) {
        const connection = this.#open(fd, now);
        if (connection) this.#serve(connection, now);
      }
      if (burst.length < ACCEPT_BURST) break; // the backlog is empty
    }
    for (const connection of [...this.#connections.values()]) this.#serve(connection, now);
  }

  /** The next waiting connection. A failure (EMFILE) is said once and leaves the rest waiting for a later drain. */
  #accept(): number | undefined {
    try {
      return acceptConnection(this.#listenFd);
    } catch (error) {
      const code = (error as NativeError).code;
      if (code === 'EMFILE' || code === 'ENFILE') this.#pausedUntil = Date.now() + HANDOVER_LIMITS.outOfFdsPauseMs;
      this.#said.say(`accept:${code}`, { kind: 'accept-failed', code, message: `accepting a hand-over connection on ${this.path} failed: ${(error as Error).message}` });
      return undefined;
    }
  }

  #open(fd: number, now: number): Connection | undefined {
    let peer: PeerCredentials;
    try {
      peer = peerCredentials(fd);
    } catch {
      this.#closer.close(fd);
      return undefined;
    }
    if (this.#connections.size >= HANDOVER_LIMITS.connections) {
      // Idle connections cannot lock senders out: the one idle longest gives way.
      let idlest: Connection | undefined;
      for (const c of this.#connections.values()) if (!idlest || c.lastActive < idlest.lastActive) idlest = c;
      const reason = `${HANDOVER_LIMITS.connections} connections are open and this one was idle longest; connection closed`;
      this.#answer(idlest!, { accepted: 0, refused: 0, retry: true, reason });
      this.#refuse(idlest!.peer, 'connections', reason);
      this.#drop(idlest!);
    }
    const connection: Connection = { fd, peer, sender: this.#senderOf(peer.pid), lastActive: now };
    this.#connections.set(fd, connection);
    return connection;
  }

  /** Whether a connection may be read now: not while its user has too many refused fds whose
   * close waits, nor while all users together have and this one has any. */
  #mayRead(connection: Connection): boolean {
    const owner = ownerOf(connection.peer);
    const pending = this.#closer.pendingFor(owner);
    if (pending >= HANDOVER_LIMITS.closesPerUser) return false;
    // Counting the closes that wait costs a walk over them: only once enough are pending at all.
    if (pending < HANDOVER_LIMITS.waitingClosesPerUser && this.#closer.pending < HANDOVER_LIMITS.waitingCloses) return true;
    const waiting = this.#closer.waitingLongerThan(HANDOVER_LIMITS.closeWaitMs, owner);
    return waiting < HANDOVER_LIMITS.waitingClosesPerUser && (waiting === 0 || this.#closer.waitingLongerThan(HANDOVER_LIMITS.closeWaitMs) < HANDOVER_LIMITS.waitingCloses);
  }

  /** Takes up to messagesPerTurn messages from one connection and answers each. */
  #serve(connection: Connection, now: number): void {
    for (let i = 0; i < HANDOVER_LIMITS.messagesPerTurn && this.#connections.has(connection.fd) && now >= this.#pausedUntil; i++) {
      // Its messages wait in the kernel, charged to its sender; it times out as any idle connection.
      if (!this.#mayRead(connection)) return;
      let message: ReceivedMessage | 'end' | undefined;
      try {
        message = this.#buffer!.receive(connection.fd);
      } catch (error) {
        this.#refuse(connection.peer, 'recvmsg', `${(error as Error).message}; connection closed`);
        this.#drop(connection);
        return;
      }
      if (message === undefined) return;
      if (message === 'end') {
        // The end comes after every message: nothing is queued that a close could wait on.
        this.#forget(connection);
        closeFd(connection.fd);
        return;
      }
      connection.lastActive = now;
      this.#answer(connection, this.#take(connection, message).answer);
    }
  }

  /** Closes a connection off the event loop: messages still queued in it hold fds. */
  #drop(connection: Connection): void {
    this.#forget(connection);
    this.#closer.close(connection.fd, ownerOf(connection.peer));
  }

  #forget(connection: Connection): void {
    this.#connections.delete(connection.fd);
    if (connection.sender) this.#unwatchIfIdle(connection.sender);
  }

  /** A sender with no connection and nothing held is no longer watched. */
  #unwatchIfIdle(sender: Sender): void {
    if (sender.pidfd < 0 || sender.fds.size > 0) return;
    for (const connection of this.#connections.values()) if (connection.sender === sender) return;
    this.#senders.drop(sender);
  }

  /** Answers without waiting; a sender that does not read its answers loses the later ones. */
  #answer(connection: Connection, answer: HandoverAnswer): void {
    try {
      this.#buffer!.send(connection.fd, encodeAnswer(answer), []);
    } catch {
      // The sender has gone (EPIPE, ECONNRESET): nobody to tell.
    }
  }

  /** The live process behind a connection's SO_PEERCRED pid; undefined when it is gone already. */
  #senderOf(pid: number): Sender | undefined {
    const known = this.#senders.get(pid);
    if (known && !known.exited) return known;
    // Exited (its pid may be another process's now): charged no more.
    if (known) this.#senders.drop(known);
    try {
      return this.#senders.add(pid);
    } catch {
      return undefined;
    }
  }

  /** Closes an fd from outside: a KVM stats fd here (its close does not wait), anything else as
   * FdCloser does, counted against the user who sent it. */
  #dispose(fd: number, peer: PeerCredentials, link = linkOf(fd)): void {
    if (isStatsLink(link)) closeFd(fd);
    else this.#closer.close(fd, ownerOf(peer));
  }

  /** Takes the fds of one message, or closes them and says why. */
  #take(connection: Connection, message: ReceivedMessage): Outcome {
    const { peer } = connection;
    const fds = [...message.fds];
    const outcome = new Outcome();
    const refuseAll = (kind: string, reason: string, retry = false): Outcome => {
      for (const fd of fds) this.#dispose(fd, peer);
      outcome.refuse(fds.length, reason);
      if (retry) outcome.retry = true;
      this.#refuse(peer, kind, `${reason}; closed ${fds.length} fd(s)`);
      return outcome;
    };
    if (message.fdsTruncated && fds.length < SCM_MAX_FD) {
      // No message carries more than SCM_MAX_FD fds, for which the buffer has room: the kernel
      // could not give us all of them because this process is out of fds.
      this.#pausedUntil = Date.now() + HANDOVER_LIMITS.outOfFdsPauseMs;
      return refuseAll('out of fds', 'this receiver is out of file descriptors (EMFILE) and could not take every fd of the message; send it again later', true);
    }
    if (message.fdsTruncated || fds.length > HANDOVER_LIMITS.fdsPerMessage) return refuseAll('fds per message', `more than ${HANDOVER_LIMITS.fdsPerMessage} fds in one message`);
    if (message.truncated) return refuseAll('header size', `a header longer than ${HANDOVER_LIMITS.headerBytes} bytes`);
    if (fds.length === 0) return refuseAll('no fds', 'a message without fds');
    let header: HandoverHeader;
    try {
      header = parseHandoverHeader(message.bytes);
    } catch (error) {
      // One kind for every header error: its text names what the sender chose (a key), and a
      // sender choosing a new one per message must not get a new line per message.
      return refuseAll('header', (error as Error).message);
    }
    if (header.vcpus && header.vcpus.length !== fds.length) {
      return refuseAll('header: vcpus', `header lists ${header.vcpus.length} vCPU ids for ${fds.length} fds`);
    }
    fds.forEach((fd, i) => {
      const refused = this.#takeFd(connection, header, fd, header.vcpus?.[i]);
      if (refused) {
        outcome.refuse(1, refused.reason);
        this.#refuse(peer, refused.kind, `${refused.reason}; fd closed`);
      } else outcome.accepted++;
    });
    return outcome;
  }

  /** Takes one fd (or closes it): returns why it was refused, if it was. */
  #takeFd(connection: Connection, header: HandoverHeader, fd: number, claimedVcpu: number | null | undefined): { kind: string; reason: string } | undefined {
    const { peer, sender } = connection;
    const link = linkOf(fd);
    if (!isStatsLink(link)) {
      this.#dispose(fd, peer, link);
      return { kind: 'not stats', reason: `an fd that is ${JSON.stringify(link.slice(0, 80)).slice(1, -1)}, not a KVM stats fd` };
    }
    if (sender !== undefined && sender.pidfd >= 0 && sender.fds.size >= this.#fdsPerSender) {
      closeFd(fd);
      return { kind: 'fds per sender', reason: `process ${sender.pid} has handed over ${this.#fdsPerSender} stats fds that are held here, the limit per sender until it exits` };
    }
    let file: StatsFile;
    try {
      // Closes fd if the image is invalid. The producer reads into its own buffer: no block kept.
      file = StatsFile.open(fd, { keepOpenData: false });
    } catch (error) {
      return { kind: 'invalid', reason: `a stats fd that does not validate: ${(error as Error).message}` };
    }
    if (claimedVcpu !== undefined && (claimedVcpu === null ? file.target !== 'vm' : file.vcpuId !== claimedVcpu)) {
      file.close();
      return { kind: 'claim', reason: `an fd claimed as ${claimedVcpu === null ? 'a VM' : `vCPU ${claimedVcpu}`} that is ${file.id}` };
    }
    // Who owns the VM comes from the kernel: the process of the thread in the fd's id string, and
    // when that thread is gone, the sender itself (SO_PEERCRED). The message names nobody.
    const pid = processOfThread(file.threadId) ?? peer.pid;
    let vmm = this.#owners.get(pid);
    if (vmm?.fds.has(file.id)) {
      // The same VM or vCPU again (the helper and a handoff both sent it, or a second handoff):
      // one series, whatever name the message gives.
      file.close();
      return undefined;
    }
    if (vmm && vmm.fds.size >= this.#fdsPerOwner) {
      file.close();
      return { kind: 'fds per owner', reason: `process ${pid} owns ${this.#fdsPerOwner} stats fds held here already, the limit per owner` };
    }
    if (!vmm) {
      try {
        vmm = this.#owners.add(pid);
      } catch (error) {
        file.close();
        if (error instanceof NativeError && error.code === 'ESRCH') return { kind: 'exited', reason: `its owner, process ${pid}, has exited` };
        return { kind: 'pidfd', reason: `watching process ${pid} failed: ${(error as Error).message}` };
      }
    }
    const origin = `hand-over from pid ${peer.pid} uid ${peer.uid}${header.sender ? ` (${header.sender})` : ''}`;
    // Who owns it is the kernel-named owner (its pid, UUID and start from its command line and
    // /proc, never the header); only the guest's name may come from the header.
    const owner = vmm.owner;
    const source = statsSource(file, { ...owner, vmName: header.vmName ?? owner.vmName, attributes: header.attributes }, origin);
    const charge = `${pid}:${file.id}`;
    vmm.hold(file.id, { source, sender, charge });
    if (sender !== undefined && sender.pidfd >= 0) sender.hold(charge, {});
    return undefined;
  }

  /** An owner let go of a handed-over fd: its sender is charged for it no more. */
  #release(held: HandedFd): void {
    const { sender } = held;
    if (sender === undefined) return;
    sender.forget(held.charge);
    this.#unwatchIfIdle(sender);
  }

  /** Says a refusal once per sender process and kind of problem (each header error is its own kind). */
  #refuse(peer: PeerCredentials, kind: string, reason: string): void {
    this.#said.say(`${peer.pid}:${peer.uid}:${kind}`, {
      kind: 'refused',
      pid: peer.pid,
      message: `hand-over on ${this.path} from pid ${peer.pid} uid ${peer.uid} gid ${peer.gid} refused: ${reason}`,
    });
  }
}

/** What /proc/self/fd says an fd is; '' if it cannot be read. */
function linkOf(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return '';
  }
}

/** Symbolic links followed on one path before it counts as a loop (the kernel's MAXSYMLINKS). */
const MAX_LINKS = 40;

/** Throws when a directory on the socket's path could be changed by someone else. */
function checkDirectory(path: string, dir: string, stat: Stats, what: string): void {
  const euid = process.geteuid?.() ?? 0;
  const mode = `0${(stat.mode & 0o7777).toString(8)}`;
  if (stat.uid !== euid && stat.uid !== 0) {
    throw new HandoverPathError(path, 'EPERM', `${dir} belongs to uid ${stat.uid}, who could swap ${what} for a link: put the socket in a directory of uid ${euid} or root, on a path of such directories`);
  }
  if ((stat.mode & 0o022) !== 0 && (stat.mode & 0o1000) === 0) {
    throw new HandoverPathError(path, 'EPERM', `${dir} can be written by other users (mode ${mode}) and is not sticky, so they could swap ${what} for a link: use a directory only its owner can write, or make it sticky (chmod +t)`);
  }
}

/**
 * The socket's path must be one nobody else can change, as sshd's StrictModes checks a path:
 * whoever can rename an entry in any directory on it can swap that entry (the socket, or a
 * directory above it) for a link, and receive the fds senders hand over, or make this receiver
 * remove or chmod another file. So every directory from / to the socket's, and through every
 * symbolic link on the way (the link's own directory, then its target), must belong to this
 * user or root and not be writable by group or others unless sticky (as /tmp is: then only an
 * entry's owner can rename it).
 */
function checkSocketPath(path: string): void {
  const socket = resolve(path);
  const parts = dirname(socket).split('/').filter(Boolean);
  let dir = '/';
  let links = 0;
  const check = (at: string, what: string): Stats => {
    let stat: Stats;
    try {
      stat = lstatSync(at);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new HandoverPathError(path, 'ENOENT', `${at} does not exist: create the directory for ${basename(path)} first (owned by this user or root, writable by no one else)`);
      throw error;
    }
    if (stat.isDirectory()) checkDirectory(path, at, stat, what);
    return stat;
  };
  check(dir, parts[0] ?? basename(socket));
  while (parts.length > 0) {
    const name = parts.shift()!;
    const next = join(dir, name);
    const stat = check(next, parts[0] ?? basename(socket));
    if (stat.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new HandoverPathError(path, 'ELOOP', `${path} has more than ${MAX_LINKS} symbolic links on its way (a loop?): use a path without them`);
      // The link sits in a directory checked already; where it points is checked from its start.
      const target = readlinkSync(next);
      const absolute = isAbsolute(target) ? target : join(dir, target);
      parts.unshift(...absolute.split('/').filter(Boolean));
      dir = '/';
      continue;
    }
    if (!stat.isDirectory()) throw new HandoverPathError(path, 'ENOTDIR', `${next} is not a directory: ${path} cannot be created under it`);
    dir = next;
  }
}

/**
 * A socket file left by a receiver that is gone is removed; a live receiver or a file that is
 * not a socket is an error.
 */
function removeStaleSocket(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new HandoverPathError(path, 'EEXIST', `${path} exists and is not a socket: remove it or pick another path`);
  let fd: number | undefined;
  try {
    fd = connectSeqpacket(path);
  } catch (error) {
    const code = error instanceof NativeError ? error.code : undefined;
    const uid = lstatSync(path, { throwIfNoEntry: false })?.uid;
    if (code === 'ECONNREFUSED') {
      try {
        unlinkSync(path);
      } catch (removing) {
        const why = (removing as NodeJS.ErrnoException).code;
        // A sticky directory (/tmp): only the socket's owner may remove it.
        if (why !== 'ENOENT') throw new HandoverPathError(path, 'EEXIST', `${path} is a stale socket of uid ${uid} that this user cannot remove (${why}): ask its owner or root to remove it, or pick another path`);
      }
      return;
    }
    if (code === 'EACCES' || code === 'EPERM') {
      throw new HandoverPathError(path, 'EEXIST', `${path} is a socket of uid ${uid} that this user cannot connect to (another user's receiver, or a stale socket of theirs): pick another path, or ask its owner or root to remove it`);
    }
    throw error;
  }
  if (fd !== undefined) closeFd(fd);
  throw new HandoverPathError(path, 'EADDRINUSE', `another receiver listens on ${path}: stop it or pick another path`);
}
