/**
 * KvmStatsProducer on synthetic images, into a real sdk-metrics MeterProvider with an in-memory
 * exporter, in both temporalities, with new and reused data points. (On real KVM:
 * test/sources/demo.test.ts.)
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
  PeriodicExportingMetricReader,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { describe, expect, it } from 'vitest';
import { READ_BATCH } from '../../src/otel/plan.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { closeSources } from '../../src/sources/source.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { KINDS, type KindValues, KindsImage, content, metricNamed, vcpuPoint } from '../helpers/vcpu-images.js';

const cleanup = cleanupAfterEach();

function setup(temporality: AggregationTemporality, vcpus: KindsImage[]) {
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
    const vcpu = new KindsImage('kvm-99/vcpu-0', KINDS);
    const { collect } = setup(AggregationTemporality.CUMULATIVE, [vcpu]);
    const rm = await collect();
    const names = rm.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.descriptor.name)).sort();
    expect(names).toEqual(['kvm.vcpu.exits', 'kvm.vcpu.guest_mode', 'kvm.vcpu.halt_wait_hist', 'kvm.vcpu.halt_wait_ns', 'kvm.vcpu.lin_hist', 'kvm.vcpu.max_run', 'kvm.vcpu.pages']);
    expect(rm.scopeMetrics[0]!.scope.name).toBe('kvm-stats-otel');

    const exits = metricNamed(rm, 'kvm.vcpu.exits');
    expect(exits.dataPointType).toBe(DataPointType.SUM);
    expect(exits.aggregationTemporality).toBe(AggregationTemporality.CUMULATIVE);
    expect(exits.dataPointType === DataPointType.SUM && exits.isMonotonic).toBe(true);
    expect(exits.descriptor.unit).toBe('1');
    const p = vcpuPoint(rm, 'kvm.vcpu.exits');
    expect(p.value).toBe(100);
    expect(p.attributes).toEqual({ 'process.pid': 4321, 'kvm.vm.name': 'guest1', 'kvm.vcpu.id': 0 });
    expect(p.startTime).toEqual([1_700_000_000, 0]);

    expect(metricNamed(rm, 'kvm.vcpu.pages').dataPointType).toBe(DataPointType.GAUGE);
    expect(metricNamed(rm, 'kvm.vcpu.pages').descriptor.unit).toBe('KiBy');
    expect(vcpuPoint(rm, 'kvm.vcpu.pages').value).toBe(4);
    expect(metricNamed(rm, 'kvm.vcpu.max_run').dataPointType).toBe(DataPointType.GAUGE);
    expect(vcpuPoint(rm, 'kvm.vcpu.guest_mode').value).toBe(1);
    expect(metricNamed(rm, 'kvm.vcpu.guest_mode').descriptor.unit).toBe('1');

    const wait = metricNamed(rm, 'kvm.vcpu.halt_wait_hist');
    expect(wait.dataPointType).toBe(DataPointType.HISTOGRAM);
    expect(wait.descriptor.unit).toBe('ns');
    const hist = vcpuPoint(rm, 'kvm.vcpu.halt_wait_hist').value as Histogram;
    expect(hist.buckets).toEqual({ boundaries: [0, 1, 3], counts: [1, 2, 0, 3] });
    expect(hist.count).toBe(6);
    expect(hist.sum).toBe(50);
    const linear = vcpuPoint(rm, 'kvm.vcpu.lin_hist').value as Histogram;
    expect(linear.buckets).toEqual({ boundaries: [9, 19], counts: [5, 0, 1] });
    expect(linear.sum).toBeUndefined();
  });

  it('exports counters that grow, and starts a new series start after a reset', async () => {
    const vcpu = new KindsImage('kvm-99/vcpu-0', KINDS);
    const { collect } = setup(AggregationTemporality.CUMULATIVE, [vcpu]);
    const first = await collect();
    vcpu.set({ ...KINDS, exits: 150, wait: [1, 3, 0, 3], waitNs: 60 });
    const second = await collect();
    expect(vcpuPoint(second, 'kvm.vcpu.exits').value).toBe(150);
    expect(vcpuPoint(second, 'kvm.vcpu.exits').startTime).toEqual(vcpuPoint(first, 'kvm.vcpu.exits').startTime);
    expect((vcpuPoint(second, 'kvm.vcpu.halt_wait_hist').value as Histogram).count).toBe(7);

    // Root reset the stats through debugfs: values went down.
    vcpu.set({ ...KINDS, exits: 3, peak: 2, wait: [0, 0, 0, 1], waitNs: 5 });
    const third = await collect();
    const resetStart = vcpuPoint(second, 'kvm.vcpu.exits').endTime;
    expect(vcpuPoint(third, 'kvm.vcpu.exits').value).toBe(3);
    expect(vcpuPoint(third, 'kvm.vcpu.exits').startTime).toEqual(resetStart);
    expect(vcpuPoint(third, 'kvm.vcpu.max_run').startTime).toEqual(resetStart);
    expect(vcpuPoint(third, 'kvm.vcpu.halt_wait_hist').startTime).toEqual(resetStart);
    // Stats that did not go down keep their start.
    expect(vcpuPoint(third, 'kvm.vcpu.pages').startTime).toEqual([1_700_000_000, 0]);
    vcpu.set({ ...KINDS, exits: 10, peak: 2, wait: [0, 0, 0, 2], waitNs: 9 });
    const fourth = await collect();
    expect(vcpuPoint(fourth, 'kvm.vcpu.exits').startTime).toEqual(resetStart);
  });

  it('returns the readable sources and reports a failing one in errors', async () => {
    const good = new KindsImage('kvm-99/vcpu-0', KINDS);
    const bad = new KindsImage('kvm-99/vcpu-1', KINDS);
    const producer = new KvmStatsProducer({ sources: [good.source, bad.source] });
    cleanup.push(() => closeSources([good.source, bad.source]));
    writeFileSync(bad.path, ''); // truncated: the VM's data is gone
    const result = await producer.collect();
    expect(result.errors).toHaveLength(1);
    expect(String(result.errors[0])).toMatch(/kvm-99\/vcpu-1.*returned 0 of \d+ bytes/);
    expect(vcpuPoint(result.resourceMetrics, 'kvm.vcpu.exits', 0).value).toBe(100);
    expect(() => vcpuPoint(result.resourceMetrics, 'kvm.vcpu.exits', 1)).toThrow();
  });

  it('takes each source\'s own values when reads come in batches, failing sources among them', async () => {
    // More sources than a batch of reads (plan.ts, READ_BATCH), each with values of its own, two
    // truncated: in the first batch and in a later one.
    const vcpus = Array.from({ length: 2 * READ_BATCH + 5 }, (_, i) => new KindsImage(`kvm-98/vcpu-${i}`, { ...KINDS, exits: 1000 + i, wait: [i, 1, 0, 2 * i] }));
    const producer = new KvmStatsProducer({ sources: vcpus.map((v) => v.source) });
    cleanup.push(() => closeSources(vcpus.map((v) => v.source)));
    const bad = [3, READ_BATCH + 7];
    for (const i of bad) writeFileSync(vcpus[i]!.path, '');
    const result = await producer.collect();
    expect(result.errors).toHaveLength(bad.length);
    vcpus.forEach((_, i) => {
      if (bad.includes(i)) {
        expect(() => vcpuPoint(result.resourceMetrics, 'kvm.vcpu.exits', i)).toThrow();
        return;
      }
      expect(vcpuPoint(result.resourceMetrics, 'kvm.vcpu.exits', i).value).toBe(1000 + i);
      expect((vcpuPoint(result.resourceMetrics, 'kvm.vcpu.halt_wait_hist', i).value as Histogram).buckets.counts).toEqual([i, 1, 0, 2 * i]);
    });
  });

  it('stops when timeoutMillis runs out and says how far it got', async () => {
    const vcpus = Array.from({ length: 50 }, (_, i) => new KindsImage(`kvm-99/vcpu-${i}`, KINDS));
    const producer = new KvmStatsProducer({ sources: vcpus.map((v) => v.source) });
    cleanup.push(() => closeSources(vcpus.map((v) => v.source)));
    const result = await producer.collect({ timeoutMillis: -1 });
    expect(result.errors.map(String)).toEqual(['Error: KVM stats collection ran out of time (timeoutMillis -1): read 0 of 50 sources']);
    const full = await producer.collect({ timeoutMillis: 10_000 });
    expect(full.errors).toEqual([]);
    expect(metricNamed(full.resourceMetrics, 'kvm.vcpu.exits').dataPoints).toHaveLength(50);
  });

  it('flags values above 2^53 instead of rounding them silently', async () => {
    const warnings: string[] = [];
    diag.setLogger({ warn: (...args: unknown[]) => warnings.push(args.join(' ')), error() {}, info() {}, debug() {}, verbose() {} }, DiagLogLevel.WARN);
    cleanup.push(() => diag.disable());
    const vcpu = new KindsImage('kvm-99/vcpu-0', { ...KINDS, exits: 2 ** 53 + 2 });
    const producer = new KvmStatsProducer({ sources: [vcpu.source] });
    cleanup.push(() => closeSources([vcpu.source]));
    await producer.collect();
    await producer.collect();
    expect(producer.inexactValues).toBe(2);
    expect(warnings.filter((w) => w.includes('above 2^53'))).toHaveLength(1);
  });

  it('converts to base units on request', async () => {
    const vcpu = new KindsImage('kvm-99/vcpu-0', KINDS);
    const producer = new KvmStatsProducer({ sources: [vcpu.source], units: 'base' });
    cleanup.push(() => closeSources([vcpu.source]));
    const { resourceMetrics } = await producer.collect();
    expect(metricNamed(resourceMetrics, 'kvm.vcpu.pages').descriptor.unit).toBe('By');
    expect(vcpuPoint(resourceMetrics, 'kvm.vcpu.pages').value).toBe(4096);
    // The kernel's _ns goes from the name with the conversion to seconds.
    expect(metricNamed(resourceMetrics, 'kvm.vcpu.halt_wait').descriptor.unit).toBe('s');
    expect(vcpuPoint(resourceMetrics, 'kvm.vcpu.halt_wait').value).toBe(50e-9);
    const hist = vcpuPoint(resourceMetrics, 'kvm.vcpu.halt_wait_hist').value as Histogram;
    expect(hist.buckets.boundaries).toEqual([0, 1e-9, 3e-9]);
    expect(hist.sum).toBe(50e-9);
  });
});

describe('KvmStatsProducer into a real MeterProvider, delta', () => {
  it('exports differences since the previous collection', async () => {
    const vcpu = new KindsImage('kvm-99/vcpu-0', KINDS);
    const { collect } = setup(AggregationTemporality.DELTA, [vcpu]);
    const first = await collect();
    // The first delta covers everything since the source started.
    expect(vcpuPoint(first, 'kvm.vcpu.exits').value).toBe(100);
    expect(vcpuPoint(first, 'kvm.vcpu.exits').startTime).toEqual([1_700_000_000, 0]);
    expect(metricNamed(first, 'kvm.vcpu.exits').aggregationTemporality).toBe(AggregationTemporality.DELTA);

    vcpu.set({ ...KINDS, exits: 130, pages: 6, wait: [1, 4, 1, 3], waitNs: 80, linear: [5, 2, 1] });
    const second = await collect();
    expect(vcpuPoint(second, 'kvm.vcpu.exits').value).toBe(30);
    expect(vcpuPoint(second, 'kvm.vcpu.exits').startTime).toEqual(vcpuPoint(first, 'kvm.vcpu.exits').endTime);
    expect(vcpuPoint(second, 'kvm.vcpu.pages').value).toBe(6); // gauges stay as they are
    const wait = vcpuPoint(second, 'kvm.vcpu.halt_wait_hist');
    expect(wait.value).toEqual({ buckets: { boundaries: [0, 1, 3], counts: [0, 2, 1, 0] }, count: 3, sum: 30 });
    expect(wait.startTime).toEqual(vcpuPoint(first, 'kvm.vcpu.halt_wait_hist').endTime);
    expect((vcpuPoint(second, 'kvm.vcpu.lin_hist').value as Histogram).buckets.counts).toEqual([0, 2, 0]);

    // After a reset the delta is the whole new value.
    vcpu.set({ ...KINDS, exits: 7, wait: [0, 1, 0, 0], waitNs: 2 });
    const third = await collect();
    expect(vcpuPoint(third, 'kvm.vcpu.exits').value).toBe(7);
    expect((vcpuPoint(third, 'kvm.vcpu.halt_wait_hist').value as Histogram)).toEqual({ buckets: { boundaries: [0, 1, 3], counts: [0, 1, 0, 0] }, count: 1, sum: 2 });
  });
});

describe('KvmStatsProducer with reuseDataPoints', () => {
  const steps: KindValues[] = [
    KINDS,
    { ...KINDS, exits: 150, pages: 6, wait: [1, 3, 0, 3], waitNs: 60, linear: [5, 1, 1] },
    // Root reset the stats: values went down.
    { ...KINDS, exits: 3, peak: 2, wait: [0, 0, 0, 1], waitNs: 5, linear: [0, 0, 0] },
    { ...KINDS, exits: 10, peak: 2, wait: [0, 2, 0, 1], waitNs: 9, linear: [1, 0, 0] },
  ];

  it.each([
    ['cumulative', AggregationTemporality.CUMULATIVE],
    ['delta', AggregationTemporality.DELTA],
  ])('exports what new data points would, collection after collection (%s)', async (_, temporality) => {
    const vcpus = [new KindsImage('kvm-99/vcpu-0', KINDS), new KindsImage('kvm-99/vcpu-1', { ...KINDS, exits: 7 })];
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
    const vcpu = new KindsImage('kvm-99/vcpu-0', KINDS);
    const producer = new KvmStatsProducer({ sources: [vcpu.source], reuseDataPoints: true });
    cleanup.push(() => closeSources([vcpu.source]));
    const first = (await producer.collect()).resourceMetrics;
    const exits = vcpuPoint(first, 'kvm.vcpu.exits');
    const wait = vcpuPoint(first, 'kvm.vcpu.halt_wait_hist');
    expect(exits.value).toBe(100);
    expect(exits.startTime).toEqual([1_700_000_000, 0]);
    const firstEnd = [...exits.endTime];

    vcpu.set({ ...KINDS, exits: 150, wait: [1, 3, 0, 3] });
    const second = (await producer.collect()).resourceMetrics;
    expect(vcpuPoint(second, 'kvm.vcpu.exits')).toBe(exits);
    expect(metricNamed(second, 'kvm.vcpu.exits')).toBe(metricNamed(first, 'kvm.vcpu.exits'));
    expect(vcpuPoint(second, 'kvm.vcpu.halt_wait_hist')).toBe(wait);
    // The first result now shows the second collection: it was valid until then.
    expect(exits.value).toBe(150);
    expect((wait.value as Histogram).buckets.counts).toEqual([1, 3, 0, 3]);
    expect((wait.value as Histogram).count).toBe(7);
    const secondEnd = [...exits.endTime];

    // A reset starts the series again from the previous collection's time, kept as a copy.
    vcpu.set({ ...KINDS, exits: 3, wait: [0, 0, 0, 1] });
    const third = (await producer.collect()).resourceMetrics;
    expect(vcpuPoint(third, 'kvm.vcpu.exits').startTime).toEqual(secondEnd);
    expect(vcpuPoint(third, 'kvm.vcpu.halt_wait_hist').startTime).toEqual(secondEnd);
    expect(vcpuPoint(third, 'kvm.vcpu.pages').startTime).toEqual([1_700_000_000, 0]);
    expect(secondEnd).not.toEqual(firstEnd);
    await producer.collect();
    expect(vcpuPoint(third, 'kvm.vcpu.exits').startTime).toEqual(secondEnd);
  });

  it('lists each source\'s points in its metrics when the set of sources changes', async () => {
    const a = new KindsImage('kvm-99/vcpu-0', KINDS);
    const b = new KindsImage('kvm-99/vcpu-1', { ...KINDS, exits: 7 });
    cleanup.push(() => closeSources([a.source, b.source]));
    let current = [a.source, b.source];
    const producer = new KvmStatsProducer({ sources: () => current, reuseDataPoints: true });
    const listed = async (): Promise<[unknown, unknown][]> => {
      const rm = (await producer.collect()).resourceMetrics;
      expect(metricNamed(rm, 'kvm.vcpu.halt_wait_hist').dataPoints).toHaveLength(current.length);
      return (metricNamed(rm, 'kvm.vcpu.exits').dataPoints as { attributes: Attributes; value: number }[]).map((p) => [p.attributes['kvm.vcpu.id'], p.value]);
    };
    expect(await listed()).toEqual([[0, 100], [1, 7]]);
    current = [b.source];
    expect(await listed()).toEqual([[1, 7]]);
    current = [b.source, a.source];
    expect(await listed()).toEqual([[1, 7], [0, 100]]);
    writeFileSync(a.path, ''); // a's VM is gone: its points leave the result
    const result = await producer.collect();
    expect(result.errors).toHaveLength(1);
    expect((metricNamed(result.resourceMetrics, 'kvm.vcpu.exits').dataPoints as { attributes: Attributes }[]).map((p) => p.attributes['kvm.vcpu.id'])).toEqual([1]);
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
    const vcpu = new KindsImage('kvm-99/vcpu-0', KINDS);
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
      vcpu.set({ ...KINDS, exits });
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
