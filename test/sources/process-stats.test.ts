/**
 * Copying the stats fds another process holds (src/sources/process-stats.ts) and keeping them
 * while it lives (ProcessProvider, `--pid`), on real KVM: a stand-in VMM's VM and vCPU stats fds,
 * owned and named as its command line says; what to do when it holds none; what a process that
 * may not look says it needs, root without its capabilities included.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { openProcessStats } from '../../src/sources/process-stats.js';
import { ProcessProvider } from '../../src/sources/provider.js';
import type { Problem } from '../../src/sources/problem.js';
import { closeSources } from '../../src/sources/source.js';
import { describeKvm } from '../helpers/kvm.js';
import { pointsOf } from '../helpers/vcpu-images.js';
import { AS_NOBODY, packageCopy, startVmm } from '../helpers/processes.js';

/** Open fds of this process. */
const openFdCount = (): number => readdirSync('/proc/self/fd').length;

describeKvm('copying the stats fds of another process (real KVM)', () => {
  it('reads a VMM\'s VM and vCPU stats fds, owned by that process, named from its command line', async () => {
    const vmm = await startVmm(['--vcpus', '3', '-name', 'guest=web01,debug-threads=on']);
    const fdsBefore = openFdCount();
    try {
      const found = openProcessStats(vmm.pid);
      expect(found.problems).toEqual([]);
      expect(found.sources.map((s) => [s.file.target, s.file.vcpuId])).toEqual([
        ['vm', undefined],
        ['vcpu', 0],
        ['vcpu', 1],
        ['vcpu', 2],
      ]);
      for (const source of found.sources) {
        expect(source.pid).toBe(vmm.pid);
        expect(source.vmName).toBe('web01');
        expect(source.origin).toMatch(new RegExp(`^pidfd_getfd from process ${vmm.pid} fd \\d+$`));
        expect(Math.abs(source.startTimeMs - Date.now())).toBeLessThan(120_000);
      }
      const { resourceMetrics } = await new KvmStatsProducer({ sources: found.sources }).collect();
      const exits = pointsOf(resourceMetrics, 'kvm.vcpu.exits');
      expect(exits).toHaveLength(3);
      expect(exits[0]!.attributes).toEqual({ 'process.pid': vmm.pid, 'kvm.vm.name': 'web01', 'kvm.vcpu.id': 0 });
      closeSources(found.sources);
      expect(openFdCount()).toBe(fdsBefore);
    } finally {
      await vmm.stop();
    }
  });

  it('ProcessProvider (--pid) lets go of every copy at the first collection after the VMM exits', async () => {
    const fdsBefore = openFdCount();
    const vmm = await startVmm(['--vcpus', '2']);
    const reports: Problem[] = [];
    const provider = new ProcessProvider(vmm.pid, (problem) => reports.push(problem));
    try {
      await provider.refresh();
      expect(provider.sources()).toHaveLength(3);
      await vmm.stop();
      expect(provider.sources()).toEqual([]);
      expect(reports).toEqual([
        // The test VMM creates both vCPUs from one thread: no scheduler time, said once.
        expect.objectContaining({ kind: 'no-schedstat', pid: vmm.pid, message: expect.stringMatching(/: its 2 vCPUs were created by one thread \(\d+\), not each by its own$/) }),
        { kind: 'exited', pid: vmm.pid, message: `process ${vmm.pid} exited: closed its 3 stats fds` },
      ]);
      expect(openFdCount()).toBe(fdsBefore);
    } finally {
      await provider.close();
      await vmm.stop();
    }
  });

  it('says what to do about a VMM that keeps no stats fds, or a process without VMs', async () => {
    const vmm = await startVmm(['--no-stats']);
    try {
      expect(openProcessStats(vmm.pid).problems).toEqual([
        {
          kind: 'no-stats-fds',
          pid: vmm.pid,
          message: `process ${vmm.pid} holds 1 KVM VM(s) but no stats fds: QEMU before 8.1 keeps none open; start the VMM with the preload helper, or read its stats over QMP query-stats`,
        },
      ]);
    } finally {
      await vmm.stop();
    }
    expect(openProcessStats(process.pid).problems).toEqual([{ kind: 'no-stats-fds', pid: process.pid, message: `process ${process.pid} holds no KVM stats fds: is it a VMM running a KVM guest?` }]);
    expect(() => openProcessStats(4_194_304 + 1)).toThrow(/does not exist: check the pid/);
  });
});

it('says what listing another user\'s fds needs, in words that fit: root run without its capabilities is not told to be root', () => {
  const [setpriv, ...asNobody] = AS_NOBODY;
  const theirs = spawn(setpriv!, [...asNobody, 'sleep', '60'], { stdio: 'ignore' });
  try {
    const installed = packageCopy();
    // Root, its bounding set empty: it execs with no capability, as in a container that drops them.
    const result = spawnSync('setpriv', ['--bounding-set=-all', '--inh-caps=-all', process.execPath, join(installed, 'dist', 'cli', 'main.js'), 'read', '--pid', String(theirs.pid)], {
      cwd: '/',
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toBe(
      `kvm-stats-otel: listing /proc/${theirs.pid}/fd failed with EACCES: reading another user's process's fds needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE, which this process lacks although it runs as root (a container or service that drops capabilities: give it these two)\n`,
    );
  } finally {
    theirs.kill();
  }
});
