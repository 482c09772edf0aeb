/**
 * The demo VM (src/sources/demo.ts) on real KVM, through the producer: its stats checked against
 * an independent read of the same fds, counters that move, fd hygiene, and one pread per fd per
 * collect (counted by strace). (The errors a user meets: test/native/errors.test.ts; another
 * process's stats fds: test/sources/process-stats.test.ts.)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Histogram, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Kvm } from '../../src/native/kvm-fds.js';
import { closeFd, pidfdGetfd, pidfdOpen } from '../../src/native/libc.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { DemoVm } from '../../src/sources/demo.js';
import { StatsFile } from '../../src/stats/stats-file.js';
import { buildImage, writeImage } from '../helpers/image.js';
import { describeKvm } from '../helpers/kvm.js';
import { ROOT, fixtureCommand } from '../helpers/processes.js';

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
