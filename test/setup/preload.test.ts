/**
 * The preload helper on real KVM: built by `helper build|path`, then loaded into a probe that
 * calls ioctl the way a VMM does. What the probe sees must not change; the stats fds the helper
 * keeps must be there; with KVM_STATS_OTEL_SOCKET they must reach a HandoverProvider.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PRELOAD_SOCKET_ENV, buildPreloadHelper } from '../../src/setup/preload.js';
import { closeFd } from '../../src/native/libc.js';
import { listenSeqpacket } from '../../src/native/socket.js';
import { HandoverProvider } from '../../src/sources/handover-receiver.js';
import type { Problem } from '../../src/sources/problem.js';
import { describeKvm } from '../helpers/kvm.js';
import { FIXTURES, JsonLineChild, compiledFixture, runBin } from '../helpers/processes.js';

const THREADS = 8;

interface ProbeResult {
  calls: { call: string; result: number | 'fd'; errno: number }[];
  vmStats: number;
  vcpuStats: number;
}

const cli = (args: string[], env: Record<string, string> = {}) => runBin(args, { timeoutMs: 120_000, env });

describe('kvm-stats-otel helper', () => {
  it('builds the helper into a folder, prints its path, and builds again only when asked', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-helper-'));
    const built = cli(['helper', 'build', '--dir', dir]);
    expect(built, built.stderr).toMatchObject({ code: 0, stderr: '' });
    const path = built.stdout.trim();
    expect(path).toMatch(new RegExp(`^${dir}/libkvm-stats-preload-[0-9a-f]{12}\\.so$`));
    expect(statSync(path).mode & 0o777).toBe(0o755);
    // A shared object that defines ioctl, and nothing else a VMM could trip over.
    const symbols = execFileSync('nm', ['-D', '--defined-only', path], { encoding: 'utf8' });
    expect(symbols.split('\n').filter((line) => / T /.test(line)).map((line) => line.split(' ').pop())).toEqual(['ioctl']);

    // A stable name for configuration that outlives a rebuild (libvirt's XML).
    expect(realpathSync(join(dir, 'libkvm-stats-preload.so'))).toBe(path);

    const inode = statSync(path).ino;
    expect(cli(['helper', 'path', '--dir', dir]).stdout).toBe(`${path}\n`);
    expect(statSync(path).ino).toBe(inode); // not built again
    expect(cli(['helper', 'build', '--dir', dir, '--force']).stdout).toBe(`${path}\n`);
    expect(statSync(path).ino).not.toBe(inode); // built again, and renamed into place
  });

  it('says what to install when there is no C compiler', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-helper-'));
    const result = cli(['helper', 'build', '--dir', dir], { CC: '/nonexistent/cc' });
    expect(result).toMatchObject({
      code: 1,
      stderr: 'kvm-stats-otel: building the preload helper needs a C compiler, and /nonexistent/cc was not found: install gcc and libc6-dev (or set CC)\n',
    });
  });
});

describe('the preload helper\'s hand-over while a flood keeps the receiver\'s backlog full (KVM\'s ioctls stood in for by test/fixtures/fake-kvm-ioctl.c)', () => {
  it('hands over every VM made meanwhile, and never holds the VMM\'s ioctl for it', async () => {
    const helper = buildPreloadHelper(mkdtempSync(join(tmpdir(), 'kvm-preload-')));
    const fakeKvm = compiledFixture('fake-kvm-ioctl.c', ['-shared', '-fPIC']);
    const path = join(mkdtempSync(join(tmpdir(), 'kvm-preload-')), 'agent.sock');
    const reports: Problem[] = [];
    const provider = new HandoverProvider(path, { report: (problem) => reports.push(problem) });
    await provider.refresh();
    // Connections that come and go, as fast as one process makes them, for 30 s at most.
    const { child: flood } = await JsonLineChild.start<{ connections: number; full: number }>([compiledFixture('handover-sender.c', ['-lpthread']), 'flood', path, '30000'], 'flood');
    try {
      // 100 VMMs at once, each making one VM, handing its stats fd over as it does, and living
      // while the helper retries (10 s at most, and a little longer here).
      // Not spawnSync: the receiver answers from this event loop.
      const vmms = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
        execFile(compiledFixture('fake-vmms.c'), ['100', '12000'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, LD_PRELOAD: `${helper}:${fakeKvm}`, [PRELOAD_SOCKET_ENV]: path } }, (error, stdout, stderr) =>
          error ? reject(new Error(`${error.message}: ${stderr}`)) : resolve({ stdout, stderr }),
        ),
      );
      const { vms, failed, maxIoctlUs } = JSON.parse(vmms.stdout) as { vms: number; failed: number; maxIoctlUs: number };
      expect({ vms, failed }).toEqual({ vms: 100, failed: 0 });
      // The flood went on all along, finding the backlog full more often than not.
      const flooded = await flood.request();
      expect(flooded.full).toBeGreaterThan(flooded.connections);
      // The receiver refuses each (an eventfd is no stats fd) and says so once per sender: one
      // line per VMM whose hand-over got in. What got in last waits in the backlog behind the
      // flood's last connections: the receiver takes them within a few turns.
      const gotInNow = () => new Set(reports.filter((problem) => problem.kind === 'refused' && /not a KVM stats fd/.test(problem.message)).map((problem) => problem.pid));
      for (let i = 0; i < 100 && gotInNow().size < 100; i++) await sleep(50);
      const gotIn = gotInNow();
      console.log(`hand-overs during a flood (${flooded.connections} connections, ${flooded.full} refused for a full backlog): ${gotIn.size} of 100 got in; the longest KVM_CREATE_VM took ${maxIoctlUs} us`);
      expect(gotIn.size).toBe(100);
      // A full backlog costs the VMM's ioctl a failed connect and a thread's start, not the
      // retry's wait of up to 10 s (a hand-over that gets in at once waits up to 100 ms for its
      // answer; the rest is 100 processes, the flood and the receiver sharing this machine's CPUs).
      expect(maxIoctlUs).toBeLessThan(1_000_000);
    } finally {
      await flood.stop();
      await provider.close();
    }
  }, 60_000);
});

describeKvm('the preload helper in a process that makes VMs', () => {
  let helper: string;
  let probe: string;
  beforeAll(() => {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-preload-'));
    helper = buildPreloadHelper(dir);
    probe = join(dir, 'preload-probe');
    execFileSync('cc', ['-O2', '-pthread', '-o', probe, join(FIXTURES, 'preload-probe.c')], { stdio: 'pipe' });
  });

  /** Runs the probe to the end (its stdin is closed at once). */
  function runProbe(env: Record<string, string> = {}): ProbeResult {
    const result = spawnSync(probe, [String(THREADS)], { encoding: 'utf8', input: '', timeout: 60_000, env: { ...process.env, ...env } });
    expect(result.status, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as ProbeResult;
  }

  it('changes no return value and no errno, and keeps a stats fd per VM and vCPU, from many threads at once', () => {
    const plain = runProbe();
    const preloaded = runProbe({ LD_PRELOAD: helper });
    expect(plain.calls).toHaveLength(7 + 1 + THREADS);
    expect(preloaded.calls).toEqual(plain.calls);
    // Every successful call left errno alone, also where the helper's own KVM_GET_STATS_FD failed (EMFILE).
    expect(plain.calls.filter((c) => c.result === 'fd' || c.result === 12 || c.result === 1).every((c) => c.errno === 77)).toBe(true);
    expect(plain).toMatchObject({ vmStats: 0, vcpuStats: 0 });
    // vCPU 0 and one per thread; vCPU 1 was made with no fd to spare, so it has none.
    expect(preloaded).toMatchObject({ vmStats: 1, vcpuStats: 1 + THREADS });
  });

  it('never waits on a receiver that is missing or does not accept', () => {
    const plain = runProbe();
    const missing = runProbe({ LD_PRELOAD: helper, [PRELOAD_SOCKET_ENV]: '/nonexistent/agent.sock' });
    expect(missing.calls).toEqual(plain.calls);
    expect(missing).toMatchObject({ vmStats: 1, vcpuStats: 1 + THREADS });
    const path = join(mkdtempSync(join(tmpdir(), 'kvm-preload-')), 'deaf.sock');
    const deaf = listenSeqpacket(path, 0o600); // listens, never accepts
    try {
      expect(runProbe({ LD_PRELOAD: helper, [PRELOAD_SOCKET_ENV]: path }).calls).toEqual(plain.calls);
    } finally {
      closeFd(deaf);
    }
  });

  describe('with KVM_STATS_OTEL_SOCKET', () => {
    let provider: HandoverProvider;
    const reports: Problem[] = [];
    afterAll(() => provider.close());

    it('hands each new stats fd to the receiver, which drops them when the process exits', async () => {
      const path = join(mkdtempSync(join(tmpdir(), 'kvm-preload-')), 'agent.sock');
      provider = new HandoverProvider(path, { report: (problem) => reports.push(problem) });
      await provider.refresh();
      const { child, first } = await JsonLineChild.start<ProbeResult>([probe, String(THREADS)], 'preload probe', {
        env: { ...process.env, LD_PRELOAD: helper, [PRELOAD_SOCKET_ENV]: path },
      });
      try {
        expect(first).toMatchObject({ vmStats: 1, vcpuStats: 1 + THREADS });
        // Sent inside the ioctls, so all are queued by the time the probe prints.
        await provider.refresh();
        const sources = provider.sources();
        expect(sources.map((s) => s.file.vcpuId ?? 'vm').sort()).toEqual(['vm', 0, 2, 3, 4, 5, 6, 7, 8, 9].sort());
        for (const source of sources) {
          expect(source.pid).toBe(child.pid);
          expect(source.origin).toMatch(new RegExp(`^hand-over from pid ${child.pid} uid 0 \\(kvm-stats-preload\\)$`));
        }
        await child.stop();
        expect(provider.sources()).toEqual([]);
        expect(sources.every((s) => s.file.closed)).toBe(true);
        expect(reports).toEqual([
          // vCPU 0 comes from the probe's main thread, the others from threads that have exited.
          expect.objectContaining({ kind: 'no-schedstat', pid: child.pid, message: expect.stringContaining(`vCPU 0 was created by its main thread (${child.pid}), not by a vCPU thread of its own`) }),
          { kind: 'exited', pid: child.pid, message: `process ${child.pid} exited: closed its 10 handed-over stats fds` },
        ]);
      } finally {
        await child.stop();
      }
      await provider.close();
      expect(existsSync(path)).toBe(false);
    });
  });
});
