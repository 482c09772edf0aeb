/**
 * FdCloser (src/native/closer.ts): what cannot wait is closed at once, a socket loses its
 * lingering, and a close that never returns (a Unix socket whose queue holds a TCP socket that
 * lingers 100,000 s: no SO_LINGER of ours reaches it) holds one native thread and keeps no
 * process from ending. (The hand-over's use of it under attack: test/sources/handover-receiver.test.ts.)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { FdCloser } from '../../src/native/closer.js';
import { closeFd, openPath } from '../../src/native/libc.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { FIXTURES, JsonLineChild, compiledFixture } from '../helpers/processes.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;

describe('FdCloser', () => {
  const cleanup = cleanupAfterEach();

  it('closes a pipe at once and anything else on a thread, counted per owner until it is closed', async () => {
    const closer = new FdCloser();
    const pipe = readdirSync('/proc/self/fd').map(Number).find((fd) => {
      try {
        return /^pipe:/.test(readlinkSync(`/proc/self/fd/${fd}`));
      } catch {
        return false;
      }
    });
    expect(pipe).toBeDefined();
    const before = openFds();
    const copy = openPath(`/proc/self/fd/${pipe}`);
    const file = openPath('/dev/null');
    closer.close(copy, 'a');
    expect(closer.pending).toBe(0); // closed already
    closer.close(file, 'a');
    expect(closer.pendingFor('a')).toBe(1);
    expect(await closer.settled(2_000)).toBe(true);
    expect(closer.pendingFor('a')).toBe(0);
    expect(openFds()).toBe(before);
  });

  it('a close that never returns holds one thread, and the process still ends when its event loop runs out', async () => {
    const socket = join(mkdtempSync(join(tmpdir(), 'kvm-closer-')), 'closer.sock');
    const { child, first } = await JsonLineChild.start<{ listening?: boolean; closing?: number; threads?: number }>([process.execPath, join(FIXTURES, 'closer-exit.mjs'), socket], 'closer-exit');
    expect(first).toEqual({ listening: true });
    const exited = once(child.child as ChildProcess, 'exit');
    // One Unix socket whose queue holds a TCP socket lingering 100,000 s, its peer held and never read.
    const { child: sender } = await JsonLineChild.start([compiledFixture('handover-sender.c', ['-lpthread']), 'nested', socket, '1', '100000'], 'handover-sender nested');
    cleanup.push(() => sender.stop());
    // Its close is on a thread that will not return while the sender lives.
    expect(await child.request()).toMatchObject({ closing: 1 });
    const start = performance.now();
    const [code] = (await Promise.race([exited, sleep(10_000).then(() => ['still running'])])) as [number | string];
    expect(code).toBe(0);
    expect(performance.now() - start).toBeLessThan(5_000);
  }, 30_000);
});
