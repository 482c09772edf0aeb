/**
 * Each vCPU's scheduler time (kvm.vcpu.sched.*) from its thread's schedstat: which vCPUs get it
 * (a thread of their own), values compared with /proc read directly before and after, selection,
 * VM aggregation, both temporalities, a thread that exits, and VMs whose vCPUs share a thread
 * (the demo VM, a test VMM found by the scan) that get none, said once. Threads here are worker
 * threads of this process standing in for vCPU threads, with stats images naming them.
 */
import { readFileSync, readdirSync } from 'node:fs';
import type { Attributes } from '@opentelemetry/api';
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { observeKvmStats } from '../../src/otel/instruments.js';
import { KvmStatsProducer, type KvmStatsProducerOptions } from '../../src/otel/producer.js';
import { DemoVm } from '../../src/sources/demo.js';
import type { Problem } from '../../src/sources/problem.js';
import { ScanProvider } from '../../src/sources/scan.js';
import { SCHEDSTAT_TABLE, SchedstatFile, attachSchedstats } from '../../src/sources/schedstat.js';
import { type StatsSource, closeSources } from '../../src/sources/source.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { describeKvm } from '../helpers/kvm.js';
import { startVmm } from '../helpers/processes.js';
import { BusyThread, readSchedstat } from '../helpers/threads.js';
import { ImageStats, VCPU, metricOf, pointOf, pointsOf } from '../helpers/vcpu-images.js';

const cleanup = cleanupAfterEach();

async function thread(): Promise<BusyThread> {
  const t = await BusyThread.start();
  cleanup.push(() => t.stop());
  return t;
}

const OWNER = { pid: process.pid, vmName: 'sched', startTimeMs: 1_700_000_000_000 };

/** A vCPU stats image of this process whose id names thread `tid` as its creator. */
function vcpu(id: number, tid: number, vmName = 'sched'): StatsSource {
  const { source } = new ImageStats(`kvm-${tid}/vcpu-${id}`, VCPU, { ...OWNER, vmName });
  cleanup.push(() => closeSources([source]));
  return source;
}

function openFds(): Set<string> {
  return new Set(readdirSync('/proc/self/fd'));
}

const words = () => new Uint32Array(SCHEDSTAT_TABLE.dataSize / 4);
const u64 = (w: Uint32Array, i: number) => w[2 * i]! + w[2 * i + 1]! * 2 ** 32;

describe('SchedstatFile', () => {
  it('reads the three numbers of a live thread between two direct reads, and closes itself when the thread exits', async () => {
    const t = await BusyThread.start();
    const file = SchedstatFile.open(process.pid, t.tid);
    try {
      const w = words();
      const buffer = new Uint8Array(w.buffer);
      for (let round = 0; round < 3; round++) {
        const before = readSchedstat(t.tid);
        expect(file.readInto(buffer)).toBe(true);
        const after = readSchedstat(t.tid);
        for (let i = 0; i < 3; i++) {
          expect(u64(w, i)).toBeGreaterThanOrEqual(before[i]!);
          expect(u64(w, i)).toBeLessThanOrEqual(after[i]!);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(u64(w, 2)).toBeGreaterThan(0); // it ran
      // read() fills the file's own words, as a stats fd's does.
      expect(file.read()).toBe(true);
      expect(u64(file.words, 2)).toBeGreaterThanOrEqual(u64(w, 2));
      await t.stop();
      const fd = file.fd;
      expect(openFds().has(String(fd))).toBe(true);
      expect(file.readInto(buffer)).toBe(false);
      expect(file.closed).toBe(true);
      expect(openFds().has(String(fd))).toBe(false);
    } finally {
      file.close();
      await t.stop();
    }
  });

  it('refuses a thread that is not one of the process\'s with ENOENT', async () => {
    expect(() => SchedstatFile.open(process.pid, 1)).toThrow(/ENOENT/);
  });
});

describe('attachSchedstats: only a vCPU with a thread of its own', () => {
  it('gives each vCPU its own thread\'s schedstat, close-on-exec', async () => {
    const [a, b] = [await thread(), await thread()];
    const sources = [vcpu(0, a.tid), vcpu(1, b.tid)];
    expect(attachSchedstats(process.pid, sources)).toBeUndefined();
    expect(sources.map((s) => s.schedstat?.tid)).toEqual([a.tid, b.tid]);
    for (const source of sources) {
      const fdinfo = readFileSync(`/proc/self/fdinfo/${source.schedstat!.fd}`, 'latin1');
      // O_RDONLY (access mode 0) and O_CLOEXEC.
      const flags = parseInt(/^flags:\s*([0-7]+)$/m.exec(fdinfo)![1]!, 8);
      expect([flags & 3, flags & 0o2000000]).toEqual([0, 0o2000000]);
    }
  });

  it('none where vCPUs share their creating thread, the main thread created one, or the thread is not the process\'s', async () => {
    const a = await thread();
    const shared = [vcpu(0, a.tid), vcpu(1, a.tid)];
    expect(attachSchedstats(process.pid, shared)).toBe(`its 2 vCPUs were created by one thread (${a.tid}), not each by its own`);
    expect(shared.map((s) => s.schedstat)).toEqual([undefined, undefined]);
    const main = [vcpu(0, process.pid)];
    expect(attachSchedstats(process.pid, main)).toBe(`vCPU 0 was created by its main thread (${process.pid}), not by a vCPU thread of its own`);
    expect(main[0]!.schedstat).toBeUndefined();
    const stranger = [vcpu(0, 1)];
    expect(attachSchedstats(process.pid, stranger)).toBe('the thread that created vCPU 0 is no longer among its threads');
    expect(stranger[0]!.schedstat).toBeUndefined();
  });

  it('takes it away (closing the file) when a vCPU created later turns out to share the thread', async () => {
    const a = await thread();
    const first = vcpu(0, a.tid);
    expect(attachSchedstats(process.pid, [first])).toBeUndefined();
    const file = first.schedstat!;
    expect(file.closed).toBe(false);
    expect(attachSchedstats(process.pid, [first, vcpu(1, a.tid)])).toMatch(/created by one thread/);
    expect(first.schedstat).toBeUndefined();
    expect(file.closed).toBe(true);
  });

  it('closeSources closes the schedstat file too', async () => {
    const a = await thread();
    const source = vcpu(0, a.tid);
    attachSchedstats(process.pid, [source]);
    const file = source.schedstat!;
    closeSources([source]);
    expect(file.closed).toBe(true);
  });
});

const SCHED = ['kvm.vcpu.sched.cpu_time', 'kvm.vcpu.sched.run_delay', 'kvm.vcpu.sched.timeslices'] as const;

/** Collects once between two direct reads of each thread's schedstat. */
async function bracketed(producer: KvmStatsProducer, tids: number[]): Promise<{ rm: ResourceMetrics; before: number[][]; after: number[][] }> {
  const before = tids.map((tid) => readSchedstat(tid));
  const { resourceMetrics: rm, errors } = await producer.collect();
  const after = tids.map((tid) => readSchedstat(tid));
  expect(errors).toEqual([]);
  return { rm, before, after };
}

describe('kvm.vcpu.sched.* through the producer', () => {
  it.each([false, true])('exports ns sums and a timeslice count per vCPU with its attributes, between two reads of /proc (reuseDataPoints %s)', async (reuseDataPoints) => {
    const [a, b] = [await thread(), await thread()];
    const sources = [vcpu(0, a.tid), vcpu(1, b.tid)];
    attachSchedstats(process.pid, sources);
    const producer = new KvmStatsProducer({ sources, reuseDataPoints });
    for (let round = 0; round < 3; round++) {
      const { rm, before, after } = await bracketed(producer, [a.tid, b.tid]);
      SCHED.forEach((name, i) => {
        const metric = metricOf(rm, name)!;
        expect(metric.dataPointType).toBe(DataPointType.SUM);
        expect(metric.descriptor.unit).toBe(i < 2 ? 'ns' : '1');
        [0, 1].forEach((id) => {
          const value = pointOf(rm, name, { 'kvm.vcpu.id': id }).value as number;
          expect(value, `${name} vCPU ${id}`).toBeGreaterThanOrEqual(before[id]![i]!);
          expect(value, `${name} vCPU ${id}`).toBeLessThanOrEqual(after[id]![i]!);
        });
      });
      // The same attributes as the vCPU's KVM stats.
      expect(pointsOf(rm, 'kvm.vcpu.sched.run_delay').map((p) => p.attributes)).toEqual(pointsOf(rm, 'kvm.vcpu.exits').map((p) => p.attributes));
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    expect(metricOf((await producer.collect()).resourceMetrics, 'kvm.vcpu.sched.cpu_time')!.descriptor.description).toBe(
      "vCPU thread's scheduler stat (/proc/PID/task/TID/schedstat) sched.cpu_time: cumulative counter, unit seconds, base 10, exponent -9. Time the vCPU's thread spent on a host CPU (guest and host work for it alike).",
    );
  });

  it('in base units: seconds', async () => {
    const a = await thread();
    const sources = [vcpu(0, a.tid)];
    attachSchedstats(process.pid, sources);
    const { rm, before, after } = await bracketed(new KvmStatsProducer({ sources, units: 'base' }), [a.tid]);
    const metric = metricOf(rm, 'kvm.vcpu.sched.cpu_time')!;
    expect(metric.descriptor.unit).toBe('s');
    const value = pointsOf(rm, 'kvm.vcpu.sched.cpu_time')[0]!.value as number;
    expect(value).toBeGreaterThanOrEqual(before[0]![0]! / 1e9);
    expect(value).toBeLessThanOrEqual(after[0]![0]! / 1e9);
  });

  it('under delta temporality, the change since the previous collection', async () => {
    const a = await thread();
    const sources = [vcpu(0, a.tid)];
    attachSchedstats(process.pid, sources);
    const producer = new KvmStatsProducer({ sources, temporality: AggregationTemporality.DELTA });
    const first = await bracketed(producer, [a.tid]);
    await new Promise((resolve) => setTimeout(resolve, 30));
    const second = await bracketed(producer, [a.tid]);
    const delta = pointsOf(second.rm, 'kvm.vcpu.sched.timeslices')[0]!.value as number;
    // What moved between the two collections, bracketed by the direct reads around each.
    expect(delta).toBeGreaterThanOrEqual(second.before[0]![2]! - first.after[0]![2]!);
    expect(delta).toBeLessThanOrEqual(second.after[0]![2]! - first.before[0]![2]!);
    expect(delta).toBeGreaterThan(0);
  });

  it.each([
    [{ include: ['vcpu:sched.*'] }, [...SCHED]],
    [{ include: ['vcpu:sched.run_delay', 'vcpu:exits'] }, ['kvm.vcpu.exits', 'kvm.vcpu.sched.run_delay']],
    [{ exclude: ['vcpu:sched.*'] }, []],
    [{ exclude: ['vcpu:sched.cpu_time'] }, ['kvm.vcpu.sched.run_delay', 'kvm.vcpu.sched.timeslices']],
  ] as [Partial<KvmStatsProducerOptions>, string[]][])('selection %j', async (selection, expected) => {
    const a = await thread();
    const sources = [vcpu(0, a.tid)];
    attachSchedstats(process.pid, sources);
    const { resourceMetrics: rm } = await new KvmStatsProducer({ sources, ...selection }).collect();
    const names = rm.scopeMetrics.flatMap((s) => s.metrics).map((m) => m.descriptor.name);
    if ('include' in selection) expect(names.sort()).toEqual(expected);
    else expect(names.filter((n) => n.startsWith('kvm.vcpu.sched.')).sort()).toEqual(expected);
  });

  it.each(['none', 'vm'] as const)('with every scheduler stat excluded the file is not read (vcpuAggregation %s)', async (vcpuAggregation) => {
    const a = await BusyThread.start();
    const sources = [vcpu(0, a.tid)];
    attachSchedstats(process.pid, sources);
    const producer = new KvmStatsProducer({ sources, exclude: ['vcpu:sched.*'], vcpuAggregation });
    await producer.collect();
    await a.stop();
    // A read would find the thread gone and close the file.
    await producer.collect();
    expect(sources[0]!.schedstat!.closed).toBe(false);
    // The same with the stats selected: read, found gone, closed.
    await new KvmStatsProducer({ sources, vcpuAggregation }).collect();
    expect(sources[0]!.schedstat!.closed).toBe(true);
  });

  it.each([false, true])('VM aggregation sums the vCPUs\' scheduler time into one series per VM (reuseDataPoints %s)', async (reuseDataPoints) => {
    const [a, b, c] = [await thread(), await thread(), await thread()];
    const sources = [vcpu(0, a.tid, 'web'), vcpu(1, b.tid, 'web'), vcpu(0, c.tid, 'db')];
    attachSchedstats(process.pid, sources);
    const producer = new KvmStatsProducer({ sources, vcpuAggregation: 'vm', reuseDataPoints });
    for (let round = 0; round < 2; round++) {
      const { rm, before, after } = await bracketed(producer, [a.tid, b.tid, c.tid]);
      const web: Attributes = { 'process.pid': process.pid, 'kvm.vm.name': 'web' };
      SCHED.forEach((name, i) => {
        expect(pointsOf(rm, name).map((p) => p.attributes)).toEqual([web, { ...web, 'kvm.vm.name': 'db' }]);
        const value = pointOf(rm, name, web).value as number;
        expect(value).toBeGreaterThanOrEqual(before[0]![i]! + before[1]![i]!);
        expect(value).toBeLessThanOrEqual(after[0]![i]! + after[1]![i]!);
      });
      expect(metricOf(rm, 'kvm.vcpu.sched.run_delay')!.descriptor.description).toMatch(/Summed over the VM's vCPUs/);
    }
  });

  it.each([false, true])('a thread that exits: its file is closed, its series go, the vCPU\'s KVM stats stay (reuseDataPoints %s)', async (reuseDataPoints) => {
    const [a, b] = [await BusyThread.start(), await thread()];
    const sources = [vcpu(0, a.tid), vcpu(1, b.tid)];
    attachSchedstats(process.pid, sources);
    const producer = new KvmStatsProducer({ sources, reuseDataPoints });
    expect(pointsOf((await producer.collect()).resourceMetrics, 'kvm.vcpu.sched.cpu_time')).toHaveLength(2);
    const fd = String(sources[0]!.schedstat!.fd);
    await a.stop();
    // The collection that finds it gone closes it; the next has no series for it.
    await producer.collect();
    expect(sources[0]!.schedstat!.closed).toBe(true);
    expect(openFds().has(fd)).toBe(false);
    const { resourceMetrics: rm, errors } = await producer.collect();
    expect(errors).toEqual([]);
    expect(pointsOf(rm, 'kvm.vcpu.sched.cpu_time').map((p) => p.attributes['kvm.vcpu.id'])).toEqual([1]);
    expect(pointsOf(rm, 'kvm.vcpu.exits').map((p) => p.attributes['kvm.vcpu.id'])).toEqual([0, 1]);
  });
});

describe('kvm.vcpu.sched.* through observable instruments', () => {
  it('observes each vCPU thread\'s numbers with the vCPU\'s attributes, between two reads of /proc, as selected', async () => {
    const [a, b] = [await thread(), await thread()];
    const sources = [vcpu(0, a.tid), vcpu(1, b.tid)];
    attachSchedstats(process.pid, sources);
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
    const provider = new MeterProvider({ readers: [reader] });
    cleanup.push(() => provider.shutdown());
    const instruments = observeKvmStats(provider.getMeter('app'), { sources, exclude: ['vcpu:sched.timeslices'] });
    expect(instruments.instrumentNames.filter((n) => n.startsWith('kvm.vcpu.sched.'))).toEqual(['kvm.vcpu.sched.cpu_time', 'kvm.vcpu.sched.run_delay']);
    const before = [a.tid, b.tid].map((tid) => readSchedstat(tid));
    await reader.forceFlush();
    const after = [a.tid, b.tid].map((tid) => readSchedstat(tid));
    const rm = exporter.getMetrics().at(-1)!;
    ['kvm.vcpu.sched.cpu_time', 'kvm.vcpu.sched.run_delay'].forEach((name, i) => {
      expect(metricOf(rm, name)!.descriptor.unit).toBe('ns');
      [0, 1].forEach((id) => {
        const value = pointOf(rm, name, { 'process.pid': process.pid, 'kvm.vm.name': 'sched', 'kvm.vcpu.id': id }).value as number;
        expect(value).toBeGreaterThanOrEqual(before[id]![i]!);
        expect(value).toBeLessThanOrEqual(after[id]![i]!);
      });
    });
    expect(metricOf(rm, 'kvm.vcpu.sched.timeslices')).toBeUndefined();
  });
});

describeKvm('VMs whose vCPUs share a thread get none (real KVM)', () => {
  it('the demo VM: every vCPU is created by the agent\'s main thread', async () => {
    const demo = await DemoVm.start({ vcpus: 2 });
    cleanup.push(() => demo.stop());
    expect(demo.sources.map((s) => s.schedstat)).toEqual([undefined, undefined, undefined]);
    const { resourceMetrics: rm } = await new KvmStatsProducer({ sources: demo.sources }).collect();
    expect(rm.scopeMetrics.flatMap((s) => s.metrics).filter((m) => m.descriptor.name.startsWith('kvm.vcpu.sched.'))).toEqual([]);
  });

  it('a test VMM found by the scan: none, said once for the process', async () => {
    const vmm = await startVmm(['--vcpus', '2']);
    cleanup.push(() => vmm.stop());
    const reports: Problem[] = [];
    const scan = new ScanProvider({ report: (problem) => reports.push(problem) });
    cleanup.push(() => scan.close());
    await scan.refresh();
    const sources = scan.sources().filter((s) => s.pid === vmm.pid);
    expect(sources.filter((s) => s.file.target === 'vcpu')).toHaveLength(2);
    expect(sources.map((s) => s.schedstat)).toEqual(sources.map(() => undefined));
    await scan.refresh();
    scan.sources();
    const said = reports.filter((r) => r.kind === 'no-schedstat' && r.pid === vmm.pid);
    expect(said).toHaveLength(1);
    expect(said[0]!.message).toMatch(new RegExp(`^process ${vmm.pid}( \\(VM \\S+\\))?: no per-vCPU scheduler time \\(kvm\\.vcpu\\.sched\\.\\*\\): its 2 vCPUs were created by one thread \\(\\d+\\), not each by its own$`));
  });
});
