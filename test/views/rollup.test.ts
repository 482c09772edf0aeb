/**
 * What `top` shows, worked out from two collections of a real producer: percentiles from bucket
 * deltas with the exact bucket ranges, per-VM rollups of vCPU rates, run delay from the vCPU
 * threads' schedstat, sorting, and a VM's detail rows (total, share, rate).
 */
import { describe, expect, it } from 'vitest';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { VmRollup, detailRows, quantileBucket, sortVms } from '../../src/views/rollup.js';
import { attachSchedstats } from '../../src/sources/schedstat.js';
import { closeSources } from '../../src/sources/source.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { BusyThread } from '../helpers/threads.js';
import { ImageStats, VCPU, type VcpuValues, imageVcpu, imageVm } from '../helpers/vcpu-images.js';

const cleanup = cleanupAfterEach();

function images(...list: ImageStats[]): ImageStats[] {
  cleanup.push(() => closeSources(list.map((i) => i.source)));
  return list;
}

const seconds = (t: [number, number]) => t[0] + t[1] / 1e9;

describe('quantileBucket', () => {
  // log2, 4 buckets: {0}, {1}, [2, 3], [4, inf) as the kernel counts; OTel bounds [0, 1, 3].
  const bounds = [0, 1, 3];
  it.each([
    [[0, 10, 0, 0], 0.5, { lower: 1, upper: 1 }],
    [[50, 0, 49, 1], 0.5, { lower: 0, upper: 0 }],
    [[50, 0, 49, 1], 0.99, { lower: 2, upper: 3 }],
    [[50, 0, 48, 2], 0.99, { lower: 4, upper: Infinity }],
    [[0, 0, 0, 1], 0.01, { lower: 4, upper: Infinity }],
  ])('counts %j, q %d: %j', (counts, q, expected) => {
    expect(quantileBucket(bounds, counts, q)).toEqual(expected);
  });

  it('linear buckets of 10: [0, 9], [10, 19], ...', () => {
    expect(quantileBucket([9, 19, 29], [1, 1, 1, 1], 0.5)).toEqual({ lower: 10, upper: 19 });
  });

  it('no samples, no percentile', () => {
    expect(quantileBucket(bounds, [0, 0, 0, 0], 0.5)).toBeUndefined();
  });
});

describe('VmRollup on two collections of a producer', () => {
  const at = (exits: number, wait: number[]): VcpuValues => ({ ...VCPU, exits, wait });

  it('rates per VM from the vCPUs\' changes, halt-wait percentiles from the bucket deltas, detail rows with shares', async () => {
    const [vm, a, b, other] = images(imageVm('web'), imageVcpu('web', 0, at(100, [1, 2, 0, 3])), imageVcpu('web', 1, at(300, [0, 0, 0, 0])), imageVcpu('db', 0, at(5, [0, 0, 0, 0]), 78));
    const producer = new KvmStatsProducer({ sources: [vm!, a!, b!, other!].map((i) => i.source) });
    const rollup = new VmRollup();
    const firstRm = (await producer.collect()).resourceMetrics;
    const first = rollup.update(firstRm);
    // One collection: totals, no rates yet.
    expect(first.map((r) => [r.name, r.pid, r.vcpus, r.exitsPerSecond])).toEqual([['web', 77, 2, undefined], ['db', 78, 1, undefined]]);
    a!.set(at(150, [1, 12, 0, 3])); // 50 more exits; 10 halts that waited 1 ns
    b!.set(at(400, [0, 0, 9, 1])); // 100 more; 9 in [2, 3] ns, 1 of 4 ns or more
    const { resourceMetrics } = await producer.collect();
    const [web, db] = rollup.update(resourceMetrics);
    const end = (rm: typeof firstRm) => seconds(rm.scopeMetrics[0]!.metrics.find((m) => m.descriptor.name === 'kvm.vcpu.exits')!.dataPoints[0]!.endTime as [number, number]);
    const elapsed = end(resourceMetrics) - end(firstRm);
    expect(web!.counters.get('vcpu:exits')!.total).toBe(550);
    expect(web!.exitsPerSecond).toBeCloseTo(150 / elapsed, 6);
    expect(db!.exitsPerSecond).toBe(0);
    const perVcpu = web!.vcpuDetails.map((v) => v.counters.get('exits')!.perSecond!);
    expect(perVcpu[1]! / perVcpu[0]!).toBeCloseTo(2, 9);
    expect(web!.exitsPerSecond).toBeCloseTo(perVcpu[0]! + perVcpu[1]!, 6);
    // 20 halts: 10 of 1 ns, 9 in [2, 3] ns, 1 of 4 ns or more.
    expect(web!.haltWait).toEqual({ samples: 20, p50: { lower: 1, upper: 1 }, p99: { lower: 4, upper: Infinity } });
    expect(db!.haltWait).toEqual({ samples: 0, p50: undefined, p99: undefined });
    // No vCPU here has a thread of its own: no run delay.
    expect(web!.runDelay).toBeUndefined();

    const exits = detailRows(web!).find((r) => r.stat === 'exits')!;
    expect(exits.vm.total).toBe(550);
    expect(exits.vcpus.map((v) => [v.vcpu, v.row.total, v.share])).toEqual([[0, 150, 150 / 550], [1, 400, 400 / 550]]);
    const vmLevel = detailRows(web!).find((r) => r.target === 'vm')!;
    expect([vmLevel.stat, vmLevel.vcpus]).toEqual(['remote_tlb_flush', []]);
    // Fastest first.
    const rates = detailRows(web!).map((r) => r.vm.perSecond ?? -1);
    expect(rates).toEqual([...rates].sort((x, y) => y - x));
  });

  it('a reset counts the new value as the change, and a VM that comes later has rates from its second collection', async () => {
    const [a] = images(imageVcpu('web', 0, at(100, [0, 0, 0, 0])));
    const sources = [a!.source];
    const producer = new KvmStatsProducer({ sources: () => sources });
    const rollup = new VmRollup();
    rollup.update((await producer.collect()).resourceMetrics);
    a!.set(at(7, [0, 0, 0, 0]));
    const [late] = images(imageVcpu('late', 0, at(1, [0, 0, 0, 0]), 90));
    sources.push(late!.source);
    const rows = rollup.update((await producer.collect()).resourceMetrics);
    const web = rows.find((r) => r.name === 'web')!;
    expect(web.exitsPerSecond).toBeGreaterThan(0);
    expect(web.counters.get('vcpu:exits')!.total).toBe(7);
    expect(rows.find((r) => r.name === 'late')!.exitsPerSecond).toBeUndefined();
  });

  it('run delay: the vCPU threads\' run-queue wait per second, averaged over its vCPUs', async () => {
    const threads = [await BusyThread.start(), await BusyThread.start()];
    cleanup.push(() => Promise.all(threads.map((t) => t.stop())).then(() => undefined));
    const list = images(...threads.map((t, i) => new ImageStats(`kvm-${t.tid}/vcpu-${i}`, VCPU, { pid: process.pid, vmName: 'busy' })));
    const sources = list.map((i) => i.source);
    attachSchedstats(process.pid, sources);
    const producer = new KvmStatsProducer({ sources });
    const rollup = new VmRollup();
    rollup.update((await producer.collect()).resourceMetrics);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const { resourceMetrics } = await producer.collect();
    const [busy] = rollup.update(resourceMetrics);
    const delays = busy!.vcpuDetails.map((v) => v.counters.get('sched.run_delay')!.perSecond!);
    expect(busy!.runDelay).toBeCloseTo((delays[0]! + delays[1]!) / 2 / 1e9, 12);
    expect(busy!.runDelay).toBeGreaterThanOrEqual(0);
    expect(busy!.runDelay).toBeLessThanOrEqual(1);
  });
});

describe('sortVms', () => {
  const row = (name: string, pid: number, exits?: number, halts?: number, delay?: number) =>
    ({ key: `${pid}/${name}`, name, pid, vcpus: 1, exitsPerSecond: exits, haltExitsPerSecond: halts, runDelay: delay }) as never;
  const rows = [row('b', 2, 10, 5, 0.1), row('a', 1, 30, 1, undefined), row('c', 3, undefined, 9, 0.5)];
  it.each([
    ['exits', ['a', 'b', 'c']],
    ['halts', ['c', 'b', 'a']],
    ['delay', ['c', 'b', 'a']],
    ['name', ['a', 'b', 'c']],
  ] as const)('by %s', (key, names) => {
    expect(sortVms(rows, key).map((r) => r.name)).toEqual(names);
  });
});
