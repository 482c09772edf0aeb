/**
 * Real KVM: the demo VM's stats through the producer, checked against an independent read of
 * the same fds; counters that move; one pread per fd per collect (counted by strace); fd
 * hygiene; the errors a user meets; and copying another process's stats fds.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Histogram, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kvm, VmFd } from '../../src/native/kvm-fds.js';
import { NativeError } from '../../src/native/errors.js';
import { closeFd, pidfdGetfd, pidfdOpen } from '../../src/native/libc.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { DemoVm } from '../../src/sources/demo.js';
import { openProcessStats } from '../../src/sources/process-stats.js';
import { ProcessProvider } from '../../src/sources/provider.js';
import { errorText } from '../../src/cli/hints.js';
import type { Problem } from '../../src/sources/problem.js';
import { fdLinks } from '../../src/sources/proc.js';
import { closeSources } from '../../src/sources/source.js';
import { StatsFile } from '../../src/stats/stats-file.js';
import { buildImage, writeImage } from '../helpers/image.js';
import { describeKvm } from '../helpers/kvm.js';
import { AS_NOBODY, ROOT, fixtureCommand, startVmm, unprivilegedCopy } from '../helpers/processes.js';

/** name -> values, read with Node's own pread and a decoder written here, not the project's. */
function independentRead(fd: number): Map<string, bigint[]> {
  const header = Buffer.alloc(24);
  readSync(fd, header, 0, 24, 0);
  const [nameSize, numDesc, , descOffset, dataOffset] = [4, 8, 12, 16, 20].map((o) => header.readUInt32LE(o));
  const descSize = 16 + nameSize!;
  const descs = Buffer.alloc(numDesc! * descSize);
  readSync(fd, descs, 0, descs.length, descOffset!);
  const data = Buffer.alloc(64 * 1024);
  readSync(fd, data, 0, data.length, dataOffset!);
  const values = new Map<string, bigint[]>();
  for (let i = 0; i < numDesc!; i++) {
    const at = i * descSize;
    const size = descs.readUInt16LE(at + 6);
    const offset = descs.readUInt32LE(at + 8);
    const name = descs.toString('latin1', at + 16, at + 16 + nameSize!).replace(/\0.*$/s, '');
    values.set(name, Array.from({ length: size }, (_, b) => data.readBigUInt64LE(offset + b * 8)));
  }
  return values;
}

function isCloseOnExec(fd: number): boolean {
  const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!;
  return (parseInt(flags, 8) & 0o2000000) !== 0;
}

function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

function dataPoints(rm: ResourceMetrics, name: string) {
  const metric = rm.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name)!;
  return metric.dataPoints as { attributes: Record<string, unknown>; value: number | Histogram }[];
}

describeKvm('the demo VM through the producer (real KVM)', () => {
  let demo: DemoVm;
  let fdsBefore: number;
  beforeAll(async () => {
    fdsBefore = openFdCount();
    demo = await DemoVm.start({ vcpus: 2 });
  });
  afterAll(async () => {
    await demo.stop();
    // Every VM, vCPU and stats fd is closed again.
    expect(openFdCount()).toBe(fdsBefore);
  });

  it('has a VM and two vCPUs with the kernel\'s tables, vCPUs sharing one', () => {
    expect(demo.sources.map((s) => [s.file.target, s.file.vcpuId, s.pid, s.vmName])).toEqual([
      ['vm', undefined, process.pid, 'demo'],
      ['vcpu', 0, process.pid, 'demo'],
      ['vcpu', 1, process.pid, 'demo'],
    ]);
    expect(demo.sources[1]!.file.table).toBe(demo.sources[2]!.file.table);
    expect(demo.sources[1]!.file.table.stats.map((s) => s.name)).toEqual(expect.arrayContaining(['exits', 'halt_exits', 'insn_emulation', 'halt_wait_hist', 'blocking']));
  });

  it('exports the values an independent pread of the same fds sees, guest stopped', async () => {
    await demo.pause();
    try {
      const producer = new KvmStatsProducer({ sources: demo.sources });
      const { resourceMetrics, errors } = await producer.collect();
      expect(errors).toEqual([]);
      let compared = 0;
      for (const source of demo.sources) {
        const expected = independentRead(source.file.fd);
        expect(expected.size).toBe(source.file.table.stats.length);
        for (const [name, values] of expected) {
          const points = dataPoints(resourceMetrics, `kvm.${source.file.target}.${name}`).filter(
            (p) => p.attributes['kvm.vcpu.id'] === source.file.vcpuId,
          );
          expect(points, name).toHaveLength(1);
          const value = points[0]!.value;
          const got = typeof value === 'number' ? [value] : value.buckets.counts;
          expect(got.map(BigInt), `${source.file.id} ${name}`).toEqual(values);
          compared += values.length;
        }
      }
      // 15 VM values and 2 x 138 vCPU values on this kernel.
      expect(compared).toBeGreaterThanOrEqual(15 + 2 * 100);
    } finally {
      demo.resume();
    }
  });

  it('sees exits, halt_exits and insn_emulation grow while the guest runs', async () => {
    const producer = new KvmStatsProducer({ sources: demo.sources });
    const before = (await producer.collect()).resourceMetrics;
    await sleep(300);
    const after = (await producer.collect()).resourceMetrics;
    for (const name of ['exits', 'halt_exits', 'insn_emulation']) {
      for (const vcpu of [0, 1]) {
        const pick = (rm: ResourceMetrics) => dataPoints(rm, `kvm.vcpu.${name}`).find((p) => p.attributes['kvm.vcpu.id'] === vcpu)!.value as number;
        expect(pick(after), `${name} of vCPU ${vcpu}`).toBeGreaterThan(pick(before));
      }
    }
    expect(demo.errors).toEqual([]);
  });

  it('opens every fd close-on-exec', () => {
    for (const source of demo.sources) expect(isCloseOnExec(source.file.fd)).toBe(true);
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    const stats = vm.statsFd();
    const pidfd = pidfdOpen(process.pid);
    const copy = pidfdGetfd(pidfd, stats);
    const image = StatsFile.openImage(writeImage(buildImage({ descs: [{ name: 'a' }] })));
    try {
      for (const fd of [kvm.fd, vm.fd, vcpu.fd, stats, pidfd, copy, image.fd]) expect(isCloseOnExec(fd), `fd ${fd}`).toBe(true);
    } finally {
      for (const fd of [stats, pidfd, copy]) closeFd(fd);
      image.close();
      vcpu.close();
      vm.close();
      kvm.close();
    }
  });
});

describeKvm('one pread per stats fd (and per schedstat file) per collect (real KVM, counted by strace)', () => {
  it('reads each fd exactly once per collection and nothing else', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'kvm-strace-')), 'trace');
    const collections = 7;
    const command = fixtureCommand('collect.ts', [String(collections)]);
    execFileSync('strace', ['-f', '-qq', '--seccomp-bpf', '-e', 'trace=pread64,write', '-o', out, ...command], { cwd: ROOT, stdio: 'pipe' });
    const lines = readFileSync(out, 'utf8').split('\n');
    const begin = lines.findIndex((l) => l.includes('"BEGIN '));
    const end = lines.findIndex((l) => l.includes('"END\\n"'));
    expect(begin).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(begin);
    const [, list, sched] = /"BEGIN ([\d,]+) SCHED (\d+)\\n"/.exec(lines[begin]!)!;
    const fds = list!.split(',').map(Number);
    // The demo VM and its 2 vCPUs, and a vCPU image whose creating thread has a schedstat file.
    expect(fds).toHaveLength(4);
    const preads = new Map<number, number>();
    for (const line of lines.slice(begin + 1, end)) {
      const match = /pread64\((\d+),/.exec(line);
      if (match) preads.set(Number(match[1]), (preads.get(Number(match[1])) ?? 0) + 1);
    }
    // One pread per stats fd, and one per schedstat file, per collection.
    expect(Object.fromEntries(preads)).toEqual(Object.fromEntries([...fds, Number(sched)].map((fd) => [fd, collections])));
  });
});

describeKvm('errors name the call, the errno and what to do (real KVM)', () => {
  it('says how to get at /dev/kvm, copy an fd, or read a path', () => {
    expect(() => Kvm.open('/nonexistent/kvm')).toThrow('open /nonexistent/kvm failed with ENOENT: check the path');
    expect(() => StatsFile.openImage('/nonexistent.kvmstats')).toThrow('open /nonexistent.kvmstats failed with ENOENT: check the path');
    let free = 4_000_000;
    while (readdirSync('/proc').includes(String(free))) free++;
    expect(() => pidfdOpen(free)).toThrow('pidfd_open failed with ESRCH: no such process: check the pid, it may have exited');
  });

  it('refuses KVM_GET_STATS_FD on a VM fd copied from its creator, with EIO', async () => {
    const vmm = await startVmm(['--no-stats']);
    try {
      const vmLink = fdLinks(vmm.pid).find((l) => l.target === 'anon_inode:kvm-vm')!;
      const pidfd = pidfdOpen(vmm.pid);
      const copy = new VmFd(pidfdGetfd(pidfd, vmLink.fd));
      closeFd(pidfd);
      try {
        copy.statsFd();
        expect.unreachable('KVM_GET_STATS_FD worked on a copied VM fd');
      } catch (error) {
        expect(error).toBeInstanceOf(NativeError);
        expect((error as NativeError).code).toBe('EIO');
        expect((error as Error).message).toBe(
          'KVM_GET_STATS_FD failed with EIO: only the process that created the VM can do this; copy the stats fds the VMM holds instead',
        );
        // The command line says which flag copies them.
        expect(errorText(error as Error)).toBe(`${(error as Error).message} (read --pid)`);
      } finally {
        copy.close();
      }
    } finally {
      await vmm.stop();
    }
  });

  it('tells an unprivileged user to join the kvm group and that copying fds needs ptrace rights', () => {
    const fixture = unprivilegedCopy('unprivileged.mjs');
    const [setpriv, ...asNobody] = AS_NOBODY;
    const result = spawnSync(setpriv!, [...asNobody, process.execPath, fixture, '1', '0'], { cwd: '/', encoding: 'utf8' });
    expect(result.status, result.stderr).toBe(0);
    const messages = JSON.parse(result.stdout) as Record<string, string>;
    expect(messages.openKvm).toBe('open /dev/kvm failed with EACCES: run as root or join the kvm group');
    expect(messages.pidfdGetfd).toMatch(/^pidfd_getfd failed with EPERM: copying another process's fd needs the same uid or CAP_SYS_PTRACE/);
  });
});

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
      const exits = dataPoints(resourceMetrics, 'kvm.vcpu.exits');
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
