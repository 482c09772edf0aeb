/**
 * vcpuAggregation 'vm': vCPU series summed per VM. On synthetic images whose values the tests
 * set (resets, departures, read failures, both temporalities, new and reused data points), and
 * on real KVM: a VM of 4 vCPUs running the demo guest, checked against the per-vCPU values read
 * at the same moment, and a vCPU whose stats fd is closed.
 */
import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Attributes } from '@opentelemetry/api';
import { AggregationTemporality, DataPointType, type Histogram, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { DemoVm } from '../../src/sources/demo.js';
import { type StatsSource, closeSources } from '../../src/sources/source.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { describeKvm } from '../helpers/kvm.js';
import { type ImageStats, VCPU, type VcpuValues, content, imageVcpu, imageVm, metricOf, pointOf, pointsOf } from '../helpers/vcpu-images.js';

const WEB = { 'process.pid': 77, 'kvm.vm.name': 'web' };
const DB = { 'process.pid': 77, 'kvm.vm.name': 'db' };
const MODES = [
  ['new data points', false],
  ['reused data points', true],
] as const;
const TEMPORALITIES = [
  ['cumulative', AggregationTemporality.CUMULATIVE],
  ['delta', AggregationTemporality.DELTA],
] as const;

const cleanup = cleanupAfterEach();

function images(...list: ImageStats[]): ImageStats[] {
  cleanup.push(() => closeSources(list.map((i) => i.source)));
  return list;
}

const value = (rm: ResourceMetrics, name: string, attributes: Attributes) => pointOf(rm, name, attributes).value;

describe('vcpuAggregation vm on images', () => {
  it.each(MODES)('sums counters and buckets per VM, counts booleans, exports gauges as sum and max (%s)', async (_, reuseDataPoints) => {
    const [vm, a, b, c] = images(
      imageVm('web'),
      imageVcpu('web', 0, { exits: 100, blocking: 1, load: 4, peak: 9, waitNs: 50, wait: [1, 2, 0, 3] }),
      imageVcpu('web', 1, { exits: 30, blocking: 7, load: 6, peak: 2, waitNs: 5, wait: [0, 1, 1, 0] }),
      imageVcpu('db', 0, { exits: 11, blocking: 0, load: 1, peak: 1, waitNs: 1, wait: [1, 0, 0, 0] }),
    );
    const producer = new KvmStatsProducer({ sources: [vm!, a!, b!, c!].map((i) => i.source), vcpuAggregation: 'vm', reuseDataPoints });
    const { resourceMetrics: rm, errors } = await producer.collect();
    expect(errors).toEqual([]);
    // One series per VM, without kvm.vcpu.id; VM-level stats as they are.
    expect(pointsOf(rm, 'kvm.vcpu.exits').map((p) => [p.attributes, p.value])).toEqual([[WEB, 130], [DB, 11]]);
    expect(pointsOf(rm, 'kvm.vm.remote_tlb_flush').map((p) => [p.attributes, p.value])).toEqual([[WEB, 100]]);
    expect(metricOf(rm, 'kvm.vcpu.exits')!.descriptor.description).toMatch(/Summed over the VM's vCPUs \(one series per VM\)\.$/);

    // A boolean: how many vCPUs have it set (any value but 0).
    const blocking = metricOf(rm, 'kvm.vcpu.blocking')!;
    expect([blocking.dataPointType, blocking.descriptor.unit]).toEqual([DataPointType.GAUGE, '{vcpu}']);
    expect(blocking.descriptor.description).toMatch(/the number of its vCPUs for which it is set\.$/);
    expect([value(rm, 'kvm.vcpu.blocking', WEB), value(rm, 'kvm.vcpu.blocking', DB)]).toEqual([2, 0]);

    // Other gauges: the sum under their name, the largest vCPU's under name.max.
    expect([value(rm, 'kvm.vcpu.load', WEB), value(rm, 'kvm.vcpu.load.max', WEB)]).toEqual([10, 6]);
    expect([value(rm, 'kvm.vcpu.max_peak', WEB), value(rm, 'kvm.vcpu.max_peak.max', WEB)]).toEqual([11, 9]);
    const load = metricOf(rm, 'kvm.vcpu.load')!;
    const loadMax = metricOf(rm, 'kvm.vcpu.load.max')!;
    expect([load.dataPointType, load.descriptor.unit, loadMax.dataPointType, loadMax.descriptor.unit]).toEqual([DataPointType.GAUGE, 'KiBy', DataPointType.GAUGE, 'KiBy']);
    expect(load.descriptor.description).toMatch(/Summed over the VM's vCPUs \(one series per VM\); the largest vCPU's value is kvm\.vcpu\.load\.max\.$/);
    expect(loadMax.descriptor.description).toMatch(/The largest value of one of the VM's vCPUs \(one series per VM\); the sum is kvm\.vcpu\.load\.$/);

    // Histograms: bucket by bucket, count, and the companion's sum.
    expect(value(rm, 'kvm.vcpu.halt_wait_hist', WEB)).toEqual({ buckets: { boundaries: [0, 1, 3], counts: [1, 3, 1, 3] }, count: 8, sum: 55 });
    expect(value(rm, 'kvm.vcpu.halt_wait_hist', DB)).toEqual({ buckets: { boundaries: [0, 1, 3], counts: [1, 0, 0, 0] }, count: 1, sum: 1 });
    expect(value(rm, 'kvm.vcpu.halt_wait_ns', WEB)).toBe(55);
    expect(pointOf(rm, 'kvm.vcpu.exits', WEB).startTime).toEqual([1_700_000_000, 0]);
  });

  it.each(TEMPORALITIES)('equals the sum of the per-vCPU series collection after collection, resets included (%s)', async (_, temporality) => {
    const vcpus = images(imageVcpu('web', 0), imageVcpu('web', 1, { ...VCPU, exits: 7 }), imageVcpu('web', 2, { ...VCPU, exits: 70, blocking: 1 }));
    const sources = vcpus.map((v) => v.source);
    const perVcpu = new KvmStatsProducer({ sources, temporality });
    const aggregated = new KvmStatsProducer({ sources, temporality, vcpuAggregation: 'vm' });
    const reused = new KvmStatsProducer({ sources, temporality, vcpuAggregation: 'vm', reuseDataPoints: true });
    const steps: [number, Partial<VcpuValues>][] = [
      [0, {}],
      [0, { exits: 150, wait: [1, 3, 0, 3], waitNs: 60, load: 8, peak: 12, blocking: 1 }],
      [1, { exits: 9, wait: [0, 1, 0, 0], waitNs: 8 }],
      // Root reset vCPU 0's stats: they went down.
      [0, { exits: 3, wait: [0, 0, 0, 1], waitNs: 5, peak: 1 }],
      [2, { exits: 90, wait: [4, 0, 0, 0], waitNs: 9 }],
    ];
    let previousEnd: [number, number] | undefined;
    for (const [vcpu, change] of steps) {
      vcpus[vcpu]!.set({ ...VCPU, ...(vcpu === 2 ? { exits: 70, blocking: 1 } : vcpu === 1 ? { exits: 7 } : {}), ...change });
      const each = (await perVcpu.collect()).resourceMetrics;
      const rm = (await aggregated.collect()).resourceMetrics;
      expect(content((await reused.collect()).resourceMetrics)).toEqual(content(rm));
      const sum = (name: string) => pointsOf(each, name).reduce((total, p) => total + (p.value as number), 0);
      expect(value(rm, 'kvm.vcpu.exits', WEB)).toBe(sum('kvm.vcpu.exits'));
      expect(value(rm, 'kvm.vcpu.halt_wait_ns', WEB)).toBe(sum('kvm.vcpu.halt_wait_ns'));
      expect(value(rm, 'kvm.vcpu.load', WEB)).toBe(sum('kvm.vcpu.load'));
      expect(value(rm, 'kvm.vcpu.load.max', WEB)).toBe(Math.max(...pointsOf(each, 'kvm.vcpu.load').map((p) => p.value as number)));
      expect(value(rm, 'kvm.vcpu.blocking', WEB)).toBe(pointsOf(each, 'kvm.vcpu.blocking').filter((p) => p.value !== 0).length);
      const hist = value(rm, 'kvm.vcpu.halt_wait_hist', WEB) as Histogram;
      const hists = pointsOf(each, 'kvm.vcpu.halt_wait_hist').map((p) => p.value as Histogram);
      expect(hist.buckets.counts).toEqual([0, 1, 2, 3].map((b) => hists.reduce((total, h) => total + h.buckets.counts[b]!, 0)));
      expect([hist.count, hist.sum]).toEqual([hists.reduce((t, h) => t + h.count, 0), hists.reduce((t, h) => t + h.sum!, 0)]);
      const exits = pointOf(rm, 'kvm.vcpu.exits', WEB);
      if (temporality === AggregationTemporality.DELTA) {
        expect(exits.startTime).toEqual(previousEnd ?? [1_700_000_000, 0]);
      } else if (change.exits === 3) {
        // vCPU 0 was reset: the VM's series starts again from the previous collection.
        expect(exits.startTime).toEqual(previousEnd);
        expect(pointOf(rm, 'kvm.vcpu.halt_wait_hist', WEB).startTime).toEqual(previousEnd);
      }
      previousEnd = exits.endTime;
    }
  });

  it.each(TEMPORALITIES)('keeps a vCPU that leaves (or cannot be read) in the sums until its VM ends (%s)', async (_, temporality) => {
    const [a, b, c] = images(
      imageVcpu('web', 0, { ...VCPU, exits: 100, load: 4, blocking: 1 }),
      imageVcpu('web', 1, { ...VCPU, exits: 30, load: 6, blocking: 1 }),
      imageVcpu('db', 0, { ...VCPU, exits: 11 }),
    );
    for (const reuseDataPoints of [false, true]) {
      let current: StatsSource[] = [a!, b!, c!].map((i) => i.source);
      const producer = new KvmStatsProducer({ sources: () => current, temporality, vcpuAggregation: 'vm', reuseDataPoints });
      const collect = async () => (await producer.collect()).resourceMetrics;
      const delta = temporality === AggregationTemporality.DELTA;
      const web = (rm: ResourceMetrics) => ['kvm.vcpu.exits', 'kvm.vcpu.load', 'kvm.vcpu.load.max', 'kvm.vcpu.blocking'].map((name) => value(rm, name, WEB));
      expect(web(await collect())).toEqual([130, 10, 6, 2]);

      // vCPU 0 goes away: its exits stay in the sum, its gauges leave at once.
      current = [b!.source, c!.source];
      b!.set({ ...VCPU, exits: 35, load: 6, blocking: 1 });
      const gone = await collect();
      expect(web(gone)).toEqual([delta ? 5 : 135, 6, 6, 1]);
      const start = pointOf(gone, 'kvm.vcpu.exits', WEB).startTime;
      if (!delta) expect(start).toEqual([1_700_000_000, 0]);

      // vCPU 1 cannot be read (its VM's data is gone): an error, and its last values stay.
      writeFileSync(b!.path, '');
      const failed = await producer.collect();
      expect(failed.errors).toHaveLength(1);
      // Nothing of the VM was read: no point for it, the other VM's are there.
      expect(pointsOf(failed.resourceMetrics, 'kvm.vcpu.exits').map((p) => p.attributes)).toEqual([DB]);
      b!.set({ ...VCPU, exits: 40, load: 6, blocking: 0 });
      expect(web(await collect())).toEqual([delta ? 5 : 140, 6, 6, 0]);

      // vCPU 0 comes back while its VM lives: counted once, gauges again.
      current = [a!.source, b!.source, c!.source];
      a!.set({ ...VCPU, exits: 120, load: 4, blocking: 1 });
      expect(web(await collect())).toEqual([delta ? 20 : 160, 10, 6, 1]);

      // Every vCPU of the VM goes: the VM ends and its series with it.
      current = [c!.source];
      const ended = await collect();
      expect(pointsOf(ended, 'kvm.vcpu.exits').map((p) => p.attributes)).toEqual([DB]);
      expect(pointsOf(ended, 'kvm.vcpu.load.max').map((p) => p.attributes)).toEqual([DB]);

      // A VM with the same owner and name later is a new one: its sums start from its vCPUs.
      current = [c!.source, b!.source];
      expect(web(await collect())).toEqual([40, 6, 6, 0]);
      a!.set({ ...VCPU, exits: 100, load: 4, blocking: 1 });
      b!.set({ ...VCPU, exits: 30, load: 6, blocking: 1 });
    }
  });

  it('leaves VM-level sources and vCPUs without aggregation untouched', async () => {
    const [a, b] = images(imageVcpu('web', 0), imageVcpu('web', 1, { ...VCPU, exits: 7 }));
    const sources = [a!.source, b!.source];
    const none = await new KvmStatsProducer({ sources, vcpuAggregation: 'none' }).collect();
    const fresh = await new KvmStatsProducer({ sources }).collect();
    expect(content(none.resourceMetrics)).toEqual(content(fresh.resourceMetrics));
    expect(pointsOf(none.resourceMetrics, 'kvm.vcpu.exits').map((p) => p.attributes['kvm.vcpu.id'])).toEqual([0, 1]);
    expect(() => new KvmStatsProducer({ sources, vcpuAggregation: 'host' as 'vm' })).toThrow('vcpuAggregation must be none or vm, not "host"');
  });
});

/** Every value of every vCPU stat of `sources`, read again from each file's last read (the
 * producer's pread), summed per stat and bucket. */
function sumsOf(sources: readonly StatsSource[]): Map<string, number[]> {
  const sums = new Map<string, number[]>();
  for (const { file } of sources) {
    for (const stat of file.table.stats) {
      const values = Array.from({ length: stat.size }, (_, b) => file.value(stat, b));
      const before = sums.get(stat.name);
      sums.set(stat.name, before ? before.map((v, b) => v + values[b]!) : values);
    }
  }
  return sums;
}

describeKvm('vcpuAggregation vm on a demo VM of 4 vCPUs (real KVM)', () => {
  let demo: DemoVm;
  beforeAll(async () => {
    demo = await DemoVm.start({ vcpus: 4, name: 'agg' });
  });
  afterAll(async () => {
    await demo?.stop();
  });
  const VM = { 'process.pid': process.pid, 'kvm.vm.name': 'agg' };

  it.each(MODES)('exports the sums of the per-vCPU values read at the same moment, guest paused (%s)', async (_, reuseDataPoints) => {
    const vcpus = demo.sources.slice(1);
    await demo.pause();
    try {
      const { resourceMetrics: rm, errors } = await new KvmStatsProducer({ sources: demo.sources, vcpuAggregation: 'vm', reuseDataPoints }).collect();
      expect(errors).toEqual([]);
      for (const source of vcpus) source.file.read();
      const sums = sumsOf(vcpus);
      const table = vcpus[0]!.file.table;
      let compared = 0;
      for (const stat of table.stats) {
        const point = pointOf(rm, `kvm.vcpu.${stat.name}`, VM);
        expect(point.attributes).toEqual(VM);
        const got = typeof point.value === 'number' ? [point.value] : point.value.buckets.counts;
        if (stat.unit === 'boolean') {
          expect(got, stat.name).toEqual([vcpus.filter(({ file }) => file.value(stat) !== 0).length]);
        } else {
          expect(got, stat.name).toEqual(sums.get(stat.name));
        }
        compared++;
      }
      // Every stat of the kernel's vCPU table, the demo guest's counters moving.
      expect(compared).toBe(table.stats.length);
      expect(sums.get('exits')![0]).toBeGreaterThan(0);
      expect(pointsOf(rm, 'kvm.vcpu.exits')).toHaveLength(1);
      expect(pointsOf(rm, 'kvm.vm.remote_tlb_flush')).toHaveLength(1);
    } finally {
      demo.resume();
    }
  });

  it.each(TEMPORALITIES)('does not go backwards when a vCPU\'s stats fd is closed and it leaves (%s)', async (_, temporality) => {
    // A VM of its own, so its vCPU can be taken away.
    const own = await DemoVm.start({ vcpus: 4, name: 'unplug' });
    cleanup.push(() => own.stop());
    const where = { 'process.pid': process.pid, 'kvm.vm.name': 'unplug' };
    let current = [...own.sources];
    const producers = [false, true].map((reuseDataPoints) => new KvmStatsProducer({ sources: () => current, temporality, vcpuAggregation: 'vm', reuseDataPoints }));
    const delta = temporality === AggregationTemporality.DELTA;
    const totals = [0, 0];
    /** exits of the VM as each producer sees it now, as a running total under delta. */
    const exits = async (expectErrors = 0): Promise<number[]> => {
      const seen: number[] = [];
      for (const [i, producer] of producers.entries()) {
        const { resourceMetrics, errors } = await producer.collect();
        expect(errors).toHaveLength(expectErrors);
        const v = value(resourceMetrics, 'kvm.vcpu.exits', where) as number;
        totals[i] = delta ? totals[i]! + v : v;
        seen.push(totals[i]!);
      }
      return seen;
    };
    await sleep(100);
    await own.pause();
    const before = await exits();
    const removed = own.sources[4]!;
    removed.file.read();
    const removedExits = removed.file.value(removed.file.table.stats.find((s) => s.name === 'exits')!);
    expect(removedExits).toBeGreaterThan(0);

    // Its stats fd closed, still listed: an error, and its last value stays in the sum.
    removed.file.close();
    const failed = await exits(1);
    expect(failed).toEqual(before);
    // Gone from the set of sources: still in the sum, which the other vCPUs would not reach.
    current = own.sources.slice(0, 4);
    const after = await exits();
    expect(after).toEqual(before);
    for (const source of current.slice(1)) source.file.read();
    expect(sumsOf(current.slice(1)).get('exits')![0]! + removedExits).toBe(after[0]);
    // The guest runs on: the sum grows from there.
    own.resume();
    await sleep(200);
    const later = await exits();
    for (const [i, total] of later.entries()) expect(total).toBeGreaterThan(after[i]!);
  });
});
