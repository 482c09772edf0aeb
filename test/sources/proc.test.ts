/** What /proc says about a process (src/sources/proc.ts), on real processes. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { processExiting } from '../../src/sources/proc.js';

it('processExiting: false for a running process, true for one that exited (a zombie) or is gone', async () => {
  // The background sleep exits, and its parent (now the exec'd sleep 30) never reaps it. It exits
  // after the exec: the shell would reap one that exited before.
  const parent = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const [chunk] = (await once(parent.stdout!, 'data')) as [Buffer];
    const zombie = Number(chunk.toString().trim());
    for (let i = 0; i < 200 && !/\) Z /.test(readFileSync(`/proc/${zombie}/stat`, 'latin1')); i++) await sleep(10);
    expect(readFileSync(`/proc/${zombie}/stat`, 'latin1')).toMatch(/\) Z /);
    expect(processExiting(zombie)).toBe(true);
    expect(processExiting(parent.pid!)).toBe(false);
    expect(processExiting(process.pid)).toBe(false);
  } finally {
    parent.kill('SIGKILL');
    await once(parent, 'exit');
  }
  expect(processExiting(parent.pid!)).toBe(true);
});
