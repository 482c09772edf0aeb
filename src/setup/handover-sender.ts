/**
 * Unprivileged hand-over, the sending side: copy a VMM's stats fds (privileged: same uid or
 * CAP_SYS_PTRACE) and pass them to a receiver's socket, so the long-running receiver needs no
 * privilege. One-shot: the copies here are closed once sent; the receiver holds its own.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { closeFd } from '../native/libc.js';
import { MessageBuffer, connectSeqpacket } from '../native/socket.js';
import { HANDOVER_LIMITS, type HandoverAnswer, type HandoverHeader, parseHandoverAnswer, parseHandoverHeader } from '../sources/handover-receiver.js';
import { openProcessStats } from '../sources/process-stats.js';
import type { Problem } from '../sources/problem.js';
import { type SourceAttributes, type StatsSource, closeSources } from '../sources/source.js';

export interface HandoffOptions {
  /** kvm.vm.name for the receiver; default: from the VMM's command line. */
  readonly vmName?: string;
  readonly attributes?: SourceAttributes;
  /** How long to wait for the receiver to take and answer each message; default 10 s. */
  readonly timeoutMs?: number;
  /** Who sends, for the receiver's logs (the header's `sender`); default "kvm-stats-otel". */
  readonly sender?: string;
}

export interface HandoffResult {
  /** "VM" or "vCPU N" for each fd sent, in order. */
  readonly sent: string[];
  readonly vmName: string | undefined;
  /** Fds of the process that could not be copied or read, with what to do. */
  readonly problems: Problem[];
}

/** The receiver did not take the fds within the timeout (HandoffOptions.timeoutMs). */
export class HandoverTimeoutError extends Error {
  readonly code = 'ETIMEDOUT';

  constructor(
    readonly path: string,
    readonly timeoutMs: number,
    message: string,
  ) {
    super(message);
    this.name = 'HandoverTimeoutError';
  }
}

/** The receiver refused some or all of the fds, and said why. */
export class HandoverRefusedError extends Error {
  readonly code = 'EREFUSED';

  constructor(
    readonly path: string,
    readonly accepted: number,
    readonly refused: number,
    readonly reasons: readonly string[],
  ) {
    super(`the receiver on ${path} refused ${refused} of ${accepted + refused} stats fds: ${reasons.join('; ') || 'no reason given'}`);
    this.name = 'HandoverRefusedError';
  }
}

/** The header's bytes, checked with the receiver's own rules so a bad one fails here, not there. */
export function encodeHandoverHeader(header: HandoverHeader): Buffer {
  const bytes = Buffer.from(JSON.stringify(header));
  if (bytes.length > HANDOVER_LIMITS.headerBytes) {
    throw new RangeError(`the hand-over header is ${bytes.length} bytes, more than ${HANDOVER_LIMITS.headerBytes}: use fewer or shorter attributes`);
  }
  parseHandoverHeader(bytes);
  return bytes;
}

/** Copies every stats fd of process `pid` and hands them to the receiver listening at `path`. */
export async function handOffProcessStats(pid: number, path: string, options: HandoffOptions = {}): Promise<HandoffResult> {
  const found = openProcessStats(pid);
  try {
    if (found.sources.length === 0) throw new Error(found.problems.map((problem) => problem.message).join('; ') || `process ${pid} holds no KVM stats fds`);
    const vmName = options.vmName ?? found.sources[0]!.vmName;
    const batches: StatsSource[][] = [];
    for (let i = 0; i < found.sources.length; i += HANDOVER_LIMITS.fdsPerMessage) {
      batches.push(found.sources.slice(i, i + HANDOVER_LIMITS.fdsPerMessage));
    }
    const messages = batches.map((batch) => ({
      fds: batch.map((source) => source.file.fd),
      bytes: encodeHandoverHeader({
        vcpus: batch.map((source) => source.file.vcpuId ?? null),
        ...(vmName !== undefined ? { vmName } : {}),
        ...(options.attributes ? { attributes: options.attributes } : {}),
        sender: options.sender ?? 'kvm-stats-otel',
      }),
    }));
    await sendAll(path, messages, options.timeoutMs ?? 10_000);
    return {
      sent: found.sources.map((source) => (source.file.vcpuId === undefined ? 'VM' : `vCPU ${source.file.vcpuId}`)),
      vmName,
      problems: found.problems,
    };
  } finally {
    closeSources(found.sources);
  }
}

/**
 * Sends each message on one connection and waits for its answer, without blocking: while the
 * receiver's queue is full, and for the answer. A connection the receiver closed for its own
 * limits (retry) is opened again. Throws HandoverRefusedError when anything was refused.
 */
async function sendAll(path: string, messages: readonly { bytes: Buffer; fds: number[] }[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const busy = async (what: string): Promise<void> => {
    if (Date.now() > deadline) throw new HandoverTimeoutError(path, timeoutMs, `the receiver on ${path} ${what} for ${timeoutMs} ms: is it running? raise the timeout or check it`);
    await sleep(10);
  };
  const connect = async (): Promise<number> => {
    for (;;) {
      const fd = connectSeqpacket(path);
      if (fd !== undefined) return fd;
      await busy('accepted no connection');
    }
  };
  const buffer = new MessageBuffer(HANDOVER_LIMITS.headerBytes, HANDOVER_LIMITS.fdsPerMessage);
  let socket = await connect();
  let accepted = 0;
  let refused = 0;
  const reasons = new Set<string>();
  try {
    for (let i = 0; i < messages.length; ) {
      const message = messages[i]!;
      while (!buffer.send(socket, message.bytes, message.fds)) await busy('took no message');
      let answer: HandoverAnswer | 'end' | undefined;
      while ((answer = receiveAnswer(buffer, socket)) === undefined) await busy('did not answer');
      if (answer === 'end') throw new Error(`the receiver on ${path} closed the connection without an answer: is it an older kvm-stats-otel? update it`);
      if (answer.retry) {
        // Closed for the receiver's limits before this message was read: send it again.
        closeFd(socket);
        socket = -1;
        await busy('kept closing the connection');
        socket = await connect();
        continue;
      }
      accepted += answer.accepted;
      refused += answer.refused;
      if (answer.reason && (answer.refused > 0 || answer.accepted < message.fds.length)) reasons.add(answer.reason);
      if (answer.accepted + answer.refused < message.fds.length) refused += message.fds.length - answer.accepted - answer.refused;
      i++;
    }
  } finally {
    buffer.free();
    closeFd(socket);
  }
  if (refused > 0) throw new HandoverRefusedError(path, accepted, refused, [...reasons]);
}

/** The receiver's answer, if one has come; fds sent with it (none should be) are closed. */
function receiveAnswer(buffer: MessageBuffer, socket: number): HandoverAnswer | 'end' | undefined {
  const message = buffer.receive(socket);
  if (message === undefined || message === 'end') return message;
  for (const fd of message.fds) closeFd(fd);
  return parseHandoverAnswer(message.bytes);
}
