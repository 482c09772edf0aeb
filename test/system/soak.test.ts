/**
 * The soak script in a short run, so that it never rots: `npm run soak` takes 30 minutes and is
 * not part of the default run, but its flags, its samples and its verdict are checked here.
 */
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeKvm } from '../helpers/kvm.js';
import { ROOT } from '../helpers/processes.js';

/** node ARGS..., as `npm run soak` runs it. */
const SOAK = ['--expose-gc', '--import', 'tsx', join(ROOT, 'scripts', 'soak.ts')];

function runSoak(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...SOAK, ...args], { cwd: ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

it('soak: --help exits 0, a bad flag exits 2 with one line and the usage', () => {
  const help = spawnSync(process.execPath, [...SOAK, '--help'], { encoding: 'utf8' });
  expect(help.status).toBe(0);
  expect(help.stdout).toMatch(/^usage: npm run soak -- \[--minutes 30\]/);
  const bad = spawnSync(process.execPath, [...SOAK, '--minutes', 'soon'], { encoding: 'utf8' });
  expect(bad.status).toBe(2);
  expect(bad.stderr).toBe('soak: --minutes must be a positive number, not "soon"\n');
});

describeKvm('soak on real KVM, in short', () => {
  it('samples memory and fds while VMs come and go, exports all the while, and says whether anything grew', async () => {
    const { code, stdout, stderr } = await runSoak(['--minutes', '0.2', '--sample-seconds', '2', '--vms', '6', '--vcpus', '2', '--churn-seconds', '1', '--churn-vms', '2', '--json']);
    expect(stderr).toBe('');
    const { samples, verdict } = JSON.parse(stdout) as {
      samples: { rssMiB: number; rssTrimmedMiB: number; heapUsedMiB: number; fds: number; statsFds: number; exportsOk: number; vmsMade: number }[];
      verdict: { statsFds: number; intervalMs: number; vmsMade: number; exportsOk: number; exportsFailed: number; growth: Record<string, number>; grew: boolean };
    };
    expect(code).toBe(verdict.grew ? 1 : 0);
    expect(samples.length).toBeGreaterThanOrEqual(6);
    expect(verdict).toMatchObject({ statsFds: 18, intervalMs: 100, exportsFailed: 0 });
    expect(Object.keys(verdict.growth).sort()).toEqual(['fds', 'heapUsedMiB', 'rssFloorMiB']);
    // 12 s at 10 Hz, with VMs replaced every second: exports and new VMs all along.
    expect(verdict.exportsOk).toBeGreaterThan(50);
    expect(verdict.vmsMade).toBeGreaterThan(6 + 2 * 8);
    for (const s of samples) {
      expect(s.statsFds).toBe(18);
      expect(s.rssTrimmedMiB).toBeGreaterThan(0);
      expect(s.rssTrimmedMiB).toBeLessThanOrEqual(s.rssMiB + 1);
    }
    expect(samples.at(-1)!.exportsOk).toBeGreaterThan(samples[1]!.exportsOk);
  });
});
