/**
 * KvmStatsProducer and the observable instruments on synthetic images, into a real
 * sdk-metrics MeterProvider with an in-memory exporter, in both temporalities.
 */
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Attributes, diag, DiagLogLevel } from '@opentelemetry/api';
import {
  AggregationTemporality,
  DataPointType,
  type Histogram,
  InMemoryMetricExporter,
  MeterProvider,
  type MetricData,
  PeriodicExportingMetricReader,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { describe, expect, it } from 'vitest';
import {
  KVM_STATS_TYPE_INSTANT,
  KVM_STATS_TYPE_LINEAR_HIST,
  KVM_STATS_TYPE_LOG_HIST,
  KVM_STATS_TYPE_PEAK,
  KVM_STATS_UNIT_BOOLEAN,
  KVM_STATS_UNIT_BYTES,
  KVM_STATS_UNIT_SECONDS,
  KVM_STATS_BASE_POW2,
} from '../../src/abi/kvm.js';
import { observeKvmStats } from '../../src/otel/instruments.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { type StatsSource, closeSources, statsSource } from '../../src/sources/source.js';
import { StatsFile } from '../../src/stats/stats-file.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { type DescSpec, buildImage, writeImage } from '../helpers/image.js';
import { ImageStats, content } from '../helpers/vcpu-images.js';

interface Values {
  exits: number;
  pages: number;
  peak: number;
  mode: number;
  waitNs: number;
  wait: number[];
  linear: number[];
}

function descs(v: Values): DescSpec[] {
  return [
    { name: 'exits', values: [v.exits] },
    { name: 'pages', type: KVM_STATS_TYPE_INSTANT, unit: KVM_STATS_UNIT_BYTES, base: KVM_STATS_BASE_POW2, exponent: 10, values: [v.pages] },
    { name: 'max_run', type: KVM_STATS_TYPE_PEAK, values: [v.peak] },
    { name: 'guest_mode', type: KVM_STATS_TYPE_INSTANT, unit: KVM_STATS_UNIT_BOOLEAN, values: [v.mode] },
    { name: 'halt_wait_ns', unit: KVM_STATS_UNIT_SECONDS, exponent: -9, values: [v.waitNs] },
    { name: 'halt_wait_hist', type: KVM_STATS_TYPE_LOG_HIST, unit: KVM_STATS_UNIT_SECONDS, exponent: -9, size: 4, values: v.wait },
    { name: 'lin_hist', type: KVM_STATS_TYPE_LINEAR_HIST, size: 3, bucketSize: 10, values: v.linear },
  ];
}

const START: Values = { exits: 100, pages: 4, peak: 9, mode: 1, waitNs: 50, wait: [1, 2, 0, 3], linear: [5, 0, 1] };

/** A vCPU image with one stat of each kind the producer treats apart, rewritten in place by set(). */
class FakeVcpu extends ImageStats<Values> {
  constructor(id: string, values: Values, owner = { pid: 4321, vmName: 'guest1', startTimeMs: 1_700_000_000_000 }) {
    super(id, values, owner, descs);
  }
}

function metric(resourceMetrics: ResourceMetrics, name: string): MetricData {
  const found = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
  if (!found) throw new Error(`no metric ${name}`);
  return found;
}

function point(resourceMetrics: ResourceMetrics, name: string, vcpu = 0) {
  const m = metric(resourceMetrics, name);
  const found = (m.dataPoints as { attributes: Attributes; value: unknown; startTime: [number, number]; endTime: [number, number] }[]).find(
    (p) => p.attributes['kvm.vcpu.id'] === vcpu,
  );
  if (!found) throw new Error(`no point for vCPU ${vcpu} in ${name}`);
  return found;
}

const cleanup = cleanupAfterEach();

function setup(temporality: AggregationTemporality, vcpus: FakeVcpu[]) {
  const producer = new KvmStatsProducer({ sources: () => vcpus.map((v) => v.source), temporality });
  const exporter = new InMemoryMetricExporter(temporality);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000, metricProducers: [producer] });
  const provider = new MeterProvider({ readers: [reader] });
  cleanup.push(() => provider.shutdown(), () => closeSources(vcpus.map((v) => v.source)));
  const collect = async (): Promise<ResourceMetrics> => {
    await reader.forceFlush();
    const all = exporter.getMetrics();
    return all[all.length - 1]!;
  };
  return { producer, collect };
}

describe('KvmStatsProducer into a real MeterProvider, cumulative', () => {
  it('exports every stat with its kind, unit, attributes, bounds, count and sum', async () => {
    const vcpu = new FakeVcpu('kvm-99/vcpu-0', START);
    const { collect } = setup(AggregationTemporality.CUMULATIVE, [vcpu]);
    const rm = await collect();
    const names = rm.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.descriptor.name)).sort();
    expect(names).toEqual(['kvm.vcpu.exits', 'kvm.vcpu.guest_mode', 'kvm.vcpu.halt_wait_hist', 'kvm.vcpu.halt_wait_ns', 'kvm.vcpu.lin_hist', 'kvm.vcpu.max_run', 'kvm.vcpu.pages']);
    expect(rm.scopeMetrics[0]!.scope.name).toBe('kvm-stats-otel');

    const exits = metric(rm, 'kvm.vcpu.exits');
    expect(exits.dataPointType).toBe(DataPointType.SUM);
    expect(exits.aggregationTemporality).toBe(AggregationTemporality.CUMULATIVE);
    expect(exits.dataPointType === DataPointType.SUM && exits.isMonotonic).toBe(true);
    expect(exits.descriptor.unit).toBe('1');
    const p = point(rm, 'kvm.vcpu.exits');
    expect(p.value).toBe(100);
    expect(p.attributes).toEqual({ 'process.pid': 4321, 'kvm.vm.name': 'guest1', 'kvm.vcpu.id': 0 });
    expect(p.startTime).toEqual([1_700_000_000, 0]);

    expect(metric(rm, 'kvm.vcpu.pages').dataPointType).toBe(DataPointType.GAUGE);
    expect(metric(rm, 'kvm.vcpu.pages').descriptor.unit).toBe('KiBy');
    expect(point(rm, 'kvm.vcpu.pages').value).toBe(4);
    expect(metric(rm, 'kvm.vcpu.max_run').dataPointType).toBe(DataPointType.GAUGE);
    expect(point(rm, 'kvm.vcpu.guest_mode').value).toBe(1);
    expect(metric(rm, 'kvm.vcpu.guest_mode').descriptor.unit).toBe('1');

    const wait = metric(rm, 'kvm.vcpu.halt_wait_hist');
    expect(wait.dataPointType).toBe(DataPointType.HISTOGRAM);
    expect(wait.descriptor.unit).toBe('ns');
    const hist = point(rm, 'kvm.vcpu.halt_wait_hist').value as Histogram;
    expect(hist.buckets).toEqual({ boundaries: [0, 1, 3], counts: [1, 2, 0, 3] });
    expect(hist.count).toBe(6);
    expect(hist.sum).toBe(50);
    const linear = point(rm, 'kvm.vcpu.lin_hist').value as Histogram;
    expect(linear.buckets).toEqual({ boundaries: [9, 19], counts: [5, 0, 1] });
    expect(linear.sum).toBeUndefined();
  });

  it('exports counters that grow, and starts a new series start after a reset', async () => {
    const vcpu = new FakeVcpu('kvm-99/vcpu-0', START);
    const { collect } = setup(AggregationTemporality.CUMULATIVE, [vcpu]);
    const first = await collect();
    vcpu.set({ ...START, exits: 150, wait: [1, 3, 0, 3], waitNs: 60 });
    const second = await collect();
    expect(point(second, 'kvm.vcpu.exits').value).toBe(150);
    expect(point(second, 'kvm.vcpu.exits').startTime).toEqual(point(first, 'kvm.vcpu.exits').startTime);
    expect((point(second, 'kvm.vcpu.halt_wait_hist').value as Histogram).count).toBe(7);

    // Root reset the stats through debugfs: values went down.
    vcpu.set({ ...START, exits: 3, peak: 2, wait: [0, 0, 0, 1], waitNs: 5 });
    const third = await collect();
    const resetStart = point(second, 'kvm.vcpu.exits').endTime;
    expect(point(third, 'kvm.vcpu.exits').value).toBe(3);
    expect(point(third, 'kvm.vcpu.exits').startTime).toEqual(resetStart);
    expect(point(third, 'kvm.vcpu.max_run').startTime).toEqual(resetStart);
    expect(point(third, 'kvm.vcpu.halt_wait_hist').startTime).toEqual(resetStart);
    // Stats that did not go down keep their start.
    expect(point(third, 'kvm.vcpu.pages').startTime).toEqual([1_700_000_000, 0]);
    vcpu.set({ ...START, exits: 10, peak: 2, wait: [0, 0, 0, 2], waitNs: 9 });
    const fourth = await collect();
    expect(point(fourth, 'kvm.vcpu.exits').startTime).toEqual(resetStart);
  });

  it('returns the readable sources and reports a failing one in errors', async () => {
    const good = new FakeVcpu('kvm-99/vcpu-0', START);
    const bad = new FakeVcpu('kvm-99/vcpu-1', START);
    const producer = new KvmStatsProducer({ sources: [good.source, bad.source] });
    cleanup.push(() => closeSources([good.source, bad.source]));
    writeFileSync(bad.path, ''); // truncated: the VM's data is gone
    const result = await producer.collect();
    expect(result.errors).toHaveLength(1);
    expect(String(result.errors[0])).toMatch(/kvm-99\/vcpu-1.*returned 0 of \d+ bytes/);
    expect(point(result.resourceMetrics, 'kvm.vcpu.exits', 0).value).toBe(100);
    expect(() => point(result.resourceMetrics, 'kvm.vcpu.exits', 1)).toThrow();
  });

  it('stops when timeoutMillis runs out and says how far it got', async () => {
    const vcpus = Array.from({ length: 50 }, (_, i) => new FakeVcpu(`kvm-99/vcpu-${i}`, START));
    const producer = new KvmStatsProducer({ sources: vcpus.map((v) => v.source) });
    cleanup.push(() => closeSources(vcpus.map((v) => v.source)));
    const result = await producer.collect({ timeoutMillis: -1 });
    expect(result.errors.map(String)).toEqual(['Error: KVM stats collection ran out of time (timeoutMillis -1): read 0 of 50 sources']);
    const full = await producer.collect({ timeoutMillis: 10_000 });
    expect(full.errors).toEqual([]);
    expect(metric(full.resourceMetrics, 'kvm.vcpu.exits').dataPoints).toHaveLength(50);
  });

  it('flags values above 2^53 instead of rounding them silently', async () => {
    const warnings: string[] = [];
    diag.setLogger({ warn: (...args: unknown[]) => warnings.push(args.join(' ')), error() {}, info() {}, debug() {}, verbose() {} }, DiagLogLevel.WARN);
    cleanup.push(() => diag.disable());
    const vcpu = new FakeVcpu('kvm-99/vcpu-0', { ...START, exits: 2 ** 53 + 2 });
    const producer = new KvmStatsProducer({ sources: [vcpu.source] });
    cleanup.push(() => closeSources([vcpu.source]));
    await producer.collect();
    await producer.collect();
    expect(producer.inexactValues).toBe(2);
    expect(warnings.filter((w) => w.includes('above 2^53'))).toHaveLength(1);
  });

  it('converts to base units on request', async () => {
    const vcpu = new FakeVcpu('kvm-99/vcpu-0', START);
    const producer = new KvmStatsProducer({ sources: [vcpu.source], units: 'base' });
    cleanup.push(() => closeSources([vcpu.source]));
    const { resourceMetrics } = await producer.collect();
    expect(metric(resourceMetrics, 'kvm.vcpu.pages').descriptor.unit).toBe('By');
    expect(point(resourceMetrics, 'kvm.vcpu.pages').value).toBe(4096);
    // The kernel's _ns goes from the name with the conversion to seconds.
    expect(metric(resourceMetrics, 'kvm.vcpu.halt_wait').descriptor.unit).toBe('s');
    expect(point(resourceMetrics, 'kvm.vcpu.halt_wait').value).toBe(50e-9);
    const hist = point(resourceMetrics, 'kvm.vcpu.halt_wait_hist').value as Histogram;
    expect(hist.buckets.boundaries).toEqual([0, 1e-9, 3e-9]);
    expect(hist.sum).toBe(50e-9);
  });
});

describe('KvmStatsProducer into a real MeterProvider, delta', () => {
  it('exports differences since the previous collection', async () => {
    const vcpu = new FakeVcpu('kvm-99/vcpu-0', START);
    const { collect } = setup(AggregationTemporality.DELTA, [vcpu]);
    const first = await collect();
    // The first delta covers everything since the source started.
    expect(point(first, 'kvm.vcpu.exits').value).toBe(100);
    expect(point(first, 'kvm.vcpu.exits').startTime).toEqual([1_700_000_000, 0]);
    expect(metric(first, 'kvm.vcpu.exits').aggregationTemporality).toBe(AggregationTemporality.DELTA);

    vcpu.set({ ...START, exits: 130, pages: 6, wait: [1, 4, 1, 3], waitNs: 80, linear: [5, 2, 1] });
    const second = await collect();
    expect(point(second, 'kvm.vcpu.exits').value).toBe(30);
    expect(point(second, 'kvm.vcpu.exits').startTime).toEqual(point(first, 'kvm.vcpu.exits').endTime);
    expect(point(second, 'kvm.vcpu.pages').value).toBe(6); // gauges stay as they are
    const wait = point(second, 'kvm.vcpu.halt_wait_hist');
    expect(wait.value).toEqual({ buckets: { boundaries: [0, 1, 3], counts: [0, 2, 1, 0] }, count: 3, sum: 30 });
    expect(wait.startTime).toEqual(point(first, 'kvm.vcpu.halt_wait_hist').endTime);
    expect((point(second, 'kvm.vcpu.lin_hist').value as Histogram).buckets.counts).toEqual([0, 2, 0]);

    // After a reset the delta is the whole new value.
    vcpu.set({ ...START, exits: 7, wait: [0, 1, 0, 0], waitNs: 2 });
    const third = await collect();
    expect(point(third, 'kvm.vcpu.exits').value).toBe(7);
    expect((point(third, 'kvm.vcpu.halt_wait_hist').value as Histogram)).toEqual({ buckets: { boundaries: [0, 1, 3], counts: [0, 1, 0, 0] }, count: 1, sum: 2 });
  });
});

describe('observable instruments on any Meter', () => {
  it('observes counters and gauges with one pread per source per collection; histograms only through the producer', async () => {
    const vcpus = [new FakeVcpu('kvm-99/vcpu-0', START), new FakeVcpu('kvm-99/vcpu-1', { ...START, exits: 7 })];
    cleanup.push(() => closeSources(vcpus.map((v) => v.source)));
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
    const provider = new MeterProvider({ readers: [reader] });
    cleanup.push(() => provider.shutdown());
    let reads = 0;
    for (const v of vcpus) {
      const read = v.source.file.read.bind(v.source.file);
      v.source.file.read = () => {
        reads++;
        return read();
      };
    }
    const instruments = observeKvmStats(provider.getMeter('app'), { sources: vcpus.map((v) => v.source) });
    expect(instruments.instrumentNames.sort()).toEqual(['kvm.vcpu.exits', 'kvm.vcpu.guest_mode', 'kvm.vcpu.halt_wait_ns', 'kvm.vcpu.max_run', 'kvm.vcpu.pages']);
    await reader.forceFlush();
    expect(reads).toBe(2);
    const rm = exporter.getMetrics()[0]!;
    expect(rm.scopeMetrics[0]!.scope.name).toBe('app');
    expect(point(rm, 'kvm.vcpu.exits', 0).value).toBe(100);
    expect(point(rm, 'kvm.vcpu.exits', 1).value).toBe(7);
    expect(metric(rm, 'kvm.vcpu.exits').dataPointType).toBe(DataPointType.SUM);
    expect(metric(rm, 'kvm.vcpu.pages').descriptor.unit).toBe('KiBy');
    expect(metric(rm, 'kvm.vcpu.max_run').dataPointType).toBe(DataPointType.GAUGE);
    expect(() => metric(rm, 'kvm.vcpu.halt_wait_hist')).toThrow();
    vcpus[0]!.set({ ...START, exits: 180 });
    await reader.forceFlush();
    expect(reads).toBe(4);
    expect(point(exporter.getMetrics()[1]!, 'kvm.vcpu.exits', 0).value).toBe(180);
    instruments.close();
    await reader.forceFlush();
    expect(reads).toBe(4);
  });
});

describe('KvmStatsProducer with reuseDataPoints', () => {
  const steps: Values[] = [
    START,
    { ...START, exits: 150, pages: 6, wait: [1, 3, 0, 3], waitNs: 60, linear: [5, 1, 1] },
    // Root reset the stats: values went down.
    { ...START, exits: 3, peak: 2, wait: [0, 0, 0, 1], waitNs: 5, linear: [0, 0, 0] },
    { ...START, exits: 10, peak: 2, wait: [0, 2, 0, 1], waitNs: 9, linear: [1, 0, 0] },
  ];

  it.each([
    ['cumulative', AggregationTemporality.CUMULATIVE],
    ['delta', AggregationTemporality.DELTA],
  ])('exports what new data points would, collection after collection (%s)', async (_, temporality) => {
    const vcpus = [new FakeVcpu('kvm-99/vcpu-0', START), new FakeVcpu('kvm-99/vcpu-1', { ...START, exits: 7 })];
    cleanup.push(() => closeSources(vcpus.map((v) => v.source)));
    const sources = vcpus.map((v) => v.source);
    const fresh = new KvmStatsProducer({ sources, temporality });
    const reused = new KvmStatsProducer({ sources, temporality, reuseDataPoints: true });
    for (const step of steps) {
      vcpus[0]!.set(step);
      const expected = content((await fresh.collect()).resourceMetrics);
      const got = content((await reused.collect()).resourceMetrics);
      expect(got).toEqual(expected);
    }
    expect(content((await reused.collect()).resourceMetrics)).toEqual(content((await fresh.collect()).resourceMetrics));
  });

  it('updates the same data points in place: a result is valid until the next collect()', async () => {
    const vcpu = new FakeVcpu('kvm-99/vcpu-0', START);
    const producer = new KvmStatsProducer({ sources: [vcpu.source], reuseDataPoints: true });
    cleanup.push(() => closeSources([vcpu.source]));
    const first = (await producer.collect()).resourceMetrics;
    const exits = point(first, 'kvm.vcpu.exits');
    const wait = point(first, 'kvm.vcpu.halt_wait_hist');
    expect(exits.value).toBe(100);
    expect(exits.startTime).toEqual([1_700_000_000, 0]);
    const firstEnd = [...exits.endTime];

    vcpu.set({ ...START, exits: 150, wait: [1, 3, 0, 3] });
    const second = (await producer.collect()).resourceMetrics;
    expect(point(second, 'kvm.vcpu.exits')).toBe(exits);
    expect(metric(second, 'kvm.vcpu.exits')).toBe(metric(first, 'kvm.vcpu.exits'));
    expect(point(second, 'kvm.vcpu.halt_wait_hist')).toBe(wait);
    // The first result now shows the second collection: it was valid until then.
    expect(exits.value).toBe(150);
    expect((wait.value as Histogram).buckets.counts).toEqual([1, 3, 0, 3]);
    expect((wait.value as Histogram).count).toBe(7);
    const secondEnd = [...exits.endTime];

    // A reset starts the series again from the previous collection's time, kept as a copy.
    vcpu.set({ ...START, exits: 3, wait: [0, 0, 0, 1] });
    const third = (await producer.collect()).resourceMetrics;
    expect(point(third, 'kvm.vcpu.exits').startTime).toEqual(secondEnd);
    expect(point(third, 'kvm.vcpu.halt_wait_hist').startTime).toEqual(secondEnd);
    expect(point(third, 'kvm.vcpu.pages').startTime).toEqual([1_700_000_000, 0]);
    expect(secondEnd).not.toEqual(firstEnd);
    await producer.collect();
    expect(point(third, 'kvm.vcpu.exits').startTime).toEqual(secondEnd);
  });

  it('lists each source\'s points in its metrics when the set of sources changes', async () => {
    const a = new FakeVcpu('kvm-99/vcpu-0', START);
    const b = new FakeVcpu('kvm-99/vcpu-1', { ...START, exits: 7 });
    cleanup.push(() => closeSources([a.source, b.source]));
    let current = [a.source, b.source];
    const producer = new KvmStatsProducer({ sources: () => current, reuseDataPoints: true });
    const listed = async (): Promise<[unknown, unknown][]> => {
      const rm = (await producer.collect()).resourceMetrics;
      expect(metric(rm, 'kvm.vcpu.halt_wait_hist').dataPoints).toHaveLength(current.length);
      return (metric(rm, 'kvm.vcpu.exits').dataPoints as { attributes: Attributes; value: number }[]).map((p) => [p.attributes['kvm.vcpu.id'], p.value]);
    };
    expect(await listed()).toEqual([[0, 100], [1, 7]]);
    current = [b.source];
    expect(await listed()).toEqual([[1, 7]]);
    current = [b.source, a.source];
    expect(await listed()).toEqual([[1, 7], [0, 100]]);
    writeFileSync(a.path, ''); // a's VM is gone: its points leave the result
    const result = await producer.collect();
    expect(result.errors).toHaveLength(1);
    expect((metric(result.resourceMetrics, 'kvm.vcpu.exits').dataPoints as { attributes: Attributes }[]).map((p) => p.attributes['kvm.vcpu.id'])).toEqual([1]);
  });

  it('exports each collection\'s own values through PeriodicExportingMetricReader and the OTLP/HTTP exporter', async () => {
    const bodies: Buffer[] = [];
    const server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        bodies.push(Buffer.concat(chunks));
        response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const { port } = server.address() as AddressInfo;
    const vcpu = new FakeVcpu('kvm-99/vcpu-0', START);
    cleanup.push(() => closeSources([vcpu.source]));
    const exporter = new OTLPMetricExporter({ url: `http://127.0.0.1:${port}/v1/metrics` });
    const reader = new PeriodicExportingMetricReader({
      exporter,
      exportIntervalMillis: 3_600_000,
      metricProducers: [new KvmStatsProducer({ sources: [vcpu.source], reuseDataPoints: true })],
    });
    const provider = new MeterProvider({ readers: [reader] });
    cleanup.push(() => provider.shutdown());
    for (const exits of [100, 150, 160]) {
      vcpu.set({ ...START, exits });
      await reader.forceFlush();
    }
    const exported = bodies.map((body) => {
      const request = JSON.parse(body.toString()) as {
        resourceMetrics: { scopeMetrics: { metrics: { name: string; sum?: { dataPoints: { asInt?: string | number }[] } }[] }[] }[];
      };
      const exits = request.resourceMetrics.flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics)).find((m) => m.name === 'kvm.vcpu.exits')!;
      return Number(exits.sum!.dataPoints[0]!.asInt);
    });
    expect(exported).toEqual([100, 150, 160]);
  });
});
