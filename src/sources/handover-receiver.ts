/**
 * Unprivileged hand-over, the receiving side: a Unix SOCK_SEQPACKET socket to which a sender
 * (the preload helper inside a VMM, or the privileged `handoff` command) passes stats fds with
 * SCM_RIGHTS and a small JSON header. The receiver needs no privilege at all: a stats fd can be
 * read by whoever holds it.
 *
 * Nothing here blocks: the socket is drained with non-blocking calls at every refresh() and
 * sources() (so at every collection). Every received fd is checked before use: its
 * /proc/self/fd link must name a KVM stats inode and its stats header must validate; anything
 * else is closed and logged once with the sender's SO_PEERCRED credentials. There are limits on
 * fds per message and per sender (uid), on open connections and on the header's size.
 */
import { lstatSync, readlinkSync, rmSync } from 'node:fs';
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
import { type HeldFd, HeldProcesses } from './held-process.js';
import { type ProblemReporter, SaidOnce } from './problem.js';
import { commandLine, isStatsLink, processOfThread, vmNameFromCommandLine } from './proc.js';
import type { SourceProvider } from './provider.js';
import { type SourceAttributes, type StatsSource, statsSource } from './source.js';

export const HANDOVER_LIMITS = {
  /** Bytes of JSON header in one message. */
  headerBytes: 4096,
  /** Fds in one message; the kernel closes any beyond this (MSG_CTRUNC) and the message is refused. */
  fdsPerMessage: 64,
  /** Fds held at once for one sender uid. */
  fdsPerSender: 4096,
  /** Connections open at once; more are closed as they come. */
  connections: 64,
  /** Messages taken per drain, so a flooding sender cannot hold the event loop. */
  messagesPerDrain: 1024,
  /** Extra attributes in one header, and the length of their keys and string values. */
  attributes: 16,
  attributeKeyLength: 64,
  stringLength: 256,
} as const;

/** Attributes a sender may not set: the receiver derives them from the kernel. */
const RESERVED_ATTRIBUTES = new Set(['process.pid', 'kvm.vcpu.id', 'kvm.vm.name', 'kvm.vm.uuid', 'kvm.vcpu.index']);
const ATTRIBUTE_KEY = /^[A-Za-z][A-Za-z0-9_.-]*$/;

/** What a sender says about the fds of one message. Every field is optional. */
export interface HandoverHeader {
  /** The vCPU id of each fd in order, null for a VM's stats fd; checked against the fd itself. */
  readonly vcpus?: readonly (number | null)[];
  /** The guest's name (kvm.vm.name); default: from the VMM's command line. */
  readonly vmName?: string;
  /** The VMM's pid; used only when the VM's creating thread cannot be found in /proc. */
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
const isShortString = (value: unknown): value is string => typeof value === 'string' && value.length <= HANDOVER_LIMITS.stringLength;

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
  if (vmName !== undefined && !(isShortString(vmName) && vmName !== '')) throw new Error(`header field vmName is not a string of 1 to ${HANDOVER_LIMITS.stringLength} characters`);
  if (pid !== undefined && !(isId(pid) && pid > 0)) throw new Error('header field pid is not a process id');
  if (sender !== undefined && !isShortString(sender)) throw new Error('header field sender is not a short string');
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
    if (!ok) throw new Error(`attribute ${key} is not a string (up to ${HANDOVER_LIMITS.stringLength} characters), number or boolean`);
  }
}

/** A connection from one sender. */
interface Connection {
  readonly fd: number;
  readonly peer: PeerCredentials;
}

/** A handed-over stats fd, held for the VMM that owns it and charged to the sender's uid. */
interface HandedFd extends HeldFd {
  readonly source: StatsSource;
  readonly uid: number;
}

/** A listening path that is taken: by a live receiver (EADDRINUSE) or by a file that is not a socket (EEXIST). */
export class HandoverPathError extends Error {
  constructor(
    readonly path: string,
    readonly code: 'EADDRINUSE' | 'EEXIST',
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
  /** Fds held at once per sender uid; default HANDOVER_LIMITS.fdsPerSender. */
  readonly fdsPerSender?: number;
}

/** Stats fds handed over on a Unix socket, held until their VMM exits. */
export class HandoverProvider implements SourceProvider {
  readonly description: string;
  readonly path: string;
  readonly #mode: number;
  readonly #fdsPerSender: number;
  readonly #connections = new Map<number, Connection>();
  /** The VMMs whose fds are held, keyed within each by the fd's id and VM name. */
  readonly #owners: HeldProcesses<HandedFd>;
  readonly #heldByUid = new Map<number, number>();
  /** Keyed by sender and kind of problem. */
  readonly #said: SaidOnce;
  #listenFd = -1;
  #buffer: MessageBuffer | undefined;

  constructor(path: string, options: HandoverProviderOptions = {}) {
    this.path = path;
    this.description = `hand-over socket ${path}`;
    this.#mode = options.mode ?? 0o660;
    const report = options.report ?? (() => undefined);
    this.#owners = new HeldProcesses<HandedFd>({ report, noun: 'handed-over stats fds', release: (held) => this.#release(held.uid) });
    this.#said = new SaidOnce(report);
    this.#fdsPerSender = options.fdsPerSender ?? HANDOVER_LIMITS.fdsPerSender;
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

  async close(): Promise<void> {
    for (const connection of this.#connections.values()) closeFd(connection.fd);
    this.#connections.clear();
    this.#owners.close();
    this.#heldByUid.clear();
    this.#buffer?.free();
    this.#buffer = undefined;
    if (this.#listenFd >= 0) {
      closeFd(this.#listenFd);
      this.#listenFd = -1;
      rmSync(this.path, { force: true });
    }
  }

  #listen(): void {
    removeStaleSocket(this.path);
    this.#listenFd = listenSeqpacket(this.path, this.#mode);
    this.#buffer = new MessageBuffer(HANDOVER_LIMITS.headerBytes, HANDOVER_LIMITS.fdsPerMessage);
  }

  #drain(): void {
    this.#owners.reap();
    for (let fd = this.#accept(); fd !== undefined; fd = this.#accept()) {
      let peer: PeerCredentials;
      try {
        peer = peerCredentials(fd);
      } catch {
        closeFd(fd);
        continue;
      }
      if (this.#connections.size >= HANDOVER_LIMITS.connections) {
        closeFd(fd);
        this.#refuse(peer, 'connections', `${HANDOVER_LIMITS.connections} connections are open already; connection closed`);
        continue;
      }
      this.#connections.set(fd, { fd, peer });
    }
    let budget = HANDOVER_LIMITS.messagesPerDrain;
    for (const connection of this.#connections.values()) {
      while (budget-- > 0) {
        let message: ReceivedMessage | 'end' | undefined;
        try {
          message = this.#buffer!.receive(connection.fd);
        } catch (error) {
          this.#refuse(connection.peer, 'recvmsg', `${(error as Error).message}; connection closed`);
          message = 'end';
        }
        if (message === undefined) break;
        if (message === 'end') {
          closeFd(connection.fd);
          this.#connections.delete(connection.fd);
          break;
        }
        this.#take(connection.peer, message);
      }
    }
  }

  /** The next waiting connection. A failure (EMFILE) is said once and leaves the rest waiting for the next drain. */
  #accept(): number | undefined {
    try {
      return acceptConnection(this.#listenFd);
    } catch (error) {
      const code = (error as NativeError).code;
      this.#said.say(`accept:${code}`, { kind: 'accept-failed', code, message: `accepting a hand-over connection on ${this.path} failed: ${(error as Error).message}` });
      return undefined;
    }
  }

  /** Takes the fds of one message, or closes them and says why. */
  #take(peer: PeerCredentials, message: ReceivedMessage): void {
    const fds = [...message.fds];
    const refuseAll = (kind: string, reason: string): void => {
      for (const fd of fds) closeFd(fd);
      this.#refuse(peer, kind, `${reason}; closed ${fds.length} fd(s)`);
    };
    if (message.fdsTruncated) return refuseAll('fds per message', `more than ${HANDOVER_LIMITS.fdsPerMessage} fds in one message`);
    if (message.truncated) return refuseAll('header size', `a header longer than ${HANDOVER_LIMITS.headerBytes} bytes`);
    if (fds.length === 0) return refuseAll('no fds', 'a message without fds');
    let header: HandoverHeader;
    try {
      header = parseHandoverHeader(message.bytes);
    } catch (error) {
      return refuseAll(`header: ${(error as Error).message}`, (error as Error).message);
    }
    if (header.vcpus && header.vcpus.length !== fds.length) {
      return refuseAll('header: vcpus', `header lists ${header.vcpus.length} vCPU ids for ${fds.length} fds`);
    }
    fds.forEach((fd, i) => {
      const refused = this.#takeFd(peer, header, fd, header.vcpus?.[i]);
      if (refused) this.#refuse(peer, refused.kind, `${refused.reason}; fd closed`);
    });
  }

  /** Takes one fd (or closes it): returns why it was refused, if it was. */
  #takeFd(peer: PeerCredentials, header: HandoverHeader, fd: number, claimedVcpu: number | null | undefined): { kind: string; reason: string } | undefined {
    let link: string;
    try {
      link = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      link = 'unknown';
    }
    if (!isStatsLink(link)) {
      closeFd(fd);
      return { kind: 'not stats', reason: `an fd that is ${link.slice(0, 80)}, not a KVM stats fd` };
    }
    if ((this.#heldByUid.get(peer.uid) ?? 0) >= this.#fdsPerSender) {
      closeFd(fd);
      return { kind: 'fds per sender', reason: `uid ${peer.uid} has ${this.#fdsPerSender} stats fds here already, the limit per sender` };
    }
    let file: StatsFile;
    try {
      file = StatsFile.open(fd); // closes fd if the image is invalid
    } catch (error) {
      return { kind: 'invalid', reason: `a stats fd that does not validate: ${(error as Error).message}` };
    }
    if (claimedVcpu !== undefined && (claimedVcpu === null ? file.target !== 'vm' : file.vcpuId !== claimedVcpu)) {
      file.close();
      return { kind: 'claim', reason: `an fd claimed as ${claimedVcpu === null ? 'a VM' : `vCPU ${claimedVcpu}`} that is ${file.id}` };
    }
    // Who owns the VM comes from the kernel's id string where it can; the sender is trusted only for names.
    const pid = processOfThread(file.threadId) ?? header.pid ?? peer.pid;
    const vmName = header.vmName ?? vmNameFromCommandLine(commandLine(pid));
    const key = `${file.id}\0${vmName ?? ''}`;
    let vmm = this.#owners.get(pid);
    if (vmm?.fds.has(key)) {
      file.close(); // the same VM or vCPU again (the helper and a handoff both sent it): one series
      return undefined;
    }
    if (!vmm) {
      try {
        vmm = this.#owners.add(pid);
      } catch (error) {
        file.close();
        if (error instanceof NativeError && error.code === 'ESRCH') return undefined; // its VMM is gone already
        return { kind: 'pidfd', reason: `watching process ${pid} failed: ${(error as Error).message}` };
      }
    }
    const origin = `hand-over from pid ${peer.pid} uid ${peer.uid}${header.sender ? ` (${header.sender})` : ''}`;
    // The UUID, like the start time, from the owner's command line (kernel-named owner), never the header.
    const source = statsSource(file, { pid, vmName, vmUuid: vmm.owner.vmUuid, startTimeMs: vmm.owner.startTimeMs, attributes: header.attributes }, origin);
    vmm.hold(key, { source, uid: peer.uid });
    this.#heldByUid.set(peer.uid, (this.#heldByUid.get(peer.uid) ?? 0) + 1);
    return undefined;
  }

  #release(uid: number): void {
    const held = (this.#heldByUid.get(uid) ?? 1) - 1;
    if (held > 0) this.#heldByUid.set(uid, held);
    else this.#heldByUid.delete(uid);
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
    if (error instanceof NativeError && error.code === 'ECONNREFUSED') {
      rmSync(path, { force: true });
      return;
    }
    throw error;
  }
  if (fd !== undefined) closeFd(fd);
  throw new HandoverPathError(path, 'EADDRINUSE', `another receiver listens on ${path}: stop it or pick another path`);
}
