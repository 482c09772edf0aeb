/** A sender that behaves: one message on a new connection, and the receiver's answer. */
import { setTimeout as sleep } from 'node:timers/promises';
import { closeFd } from '../../src/native/libc.js';
import { MessageBuffer, connectSeqpacket } from '../../src/native/socket.js';

export interface Answer {
  accepted: number;
  refused: number;
  reason?: string;
  retry?: boolean;
}

/** Sends `fds` with header `{}` on a new connection to `path` and waits (without blocking this
 * event loop, which a receiver under test may answer from) for the answer; undefined if none
 * comes within `timeoutMs`, or the backlog is full. */
export async function answerTo(path: string, fds: number[], timeoutMs = 2_000): Promise<Answer | undefined> {
  const socket = connectSeqpacket(path);
  if (socket === undefined) return undefined;
  const buffer = new MessageBuffer(8192, Math.max(1, fds.length));
  try {
    if (!buffer.send(socket, Buffer.from('{}'), fds)) return undefined;
    for (const start = Date.now(); Date.now() - start < timeoutMs; await sleep(10)) {
      const answer = buffer.receive(socket);
      if (answer !== undefined && answer !== 'end') return JSON.parse(answer.bytes.toString('utf8')) as Answer;
    }
    return undefined;
  } finally {
    buffer.free();
    closeFd(socket);
  }
}
