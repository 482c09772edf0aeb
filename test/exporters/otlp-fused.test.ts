/**
 * The fused path (a KvmStatsProducer paired with its exporter's frame, otlp-fused.ts) against
 * otlp-transformer's ProtobufMetricsSerializer, byte for byte: at every collection its request
 * equals the official serialization of what the plain producer returns for the same reads, the
 * SDK's own metrics of the same reader in the same request. Over many collections of image fds
 * with VMs and vCPUs coming and going, counters moving, being reset and going past 2^53, in both unit modes,
 * both temporalities, with VM aggregation and with a selection.
 */
import { ValueType } from '@opentelemetry/api';
import { ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, MeterProvider, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { KvmOtlpMetricExporter } from '../../src/exporters/otlp-exporter.js';
import { FrameOnly } from '../../src/exporters/otlp-fused.js';
import type { VcpuAggregation } from '../../src/otel/aggregation.js';
import type { UnitMode } from '../../src/otel/mapping.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import type { StatsSource } from '../../src/sources/source.js';
import { KINDS, type KindValues, KindsImage, VCPU, imageVm } from '../helpers/vcpu-images.js';

class CollectingReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

function expectSameBytes(ours: Uint8Array, theirs: Uint8Array, what: string): void {
  const a = Buffer.from(ours.buffer, ours.byteOffset, ours.byteLength);
  const b = Buffer.from(theirs.buffer, theirs.byteOffset, theirs.byteLength);
  if (a.equals(b)) return;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  expect.fail(`${what}: requests differ at byte ${i} of ${a.length} (official ${b.length}): fused ${a.subarray(i, i + 16).toString('hex')}, official ${b.subarray(i, i + 16).toString('hex')}`);
}

/** A deterministic random walk. */
function random(seed: number): (max: number) => number {
  let state = seed;
  return (max) => {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    return Math.floor((state / 0x7fffffff) * max);
  };
}

interface Case {
  readonly units: UnitMode;
  readonly temporality: AggregationTemporality;
  readonly vcpuAggregation: VcpuAggregation;
  readonly exclude?: readonly string[];
  /** VMs of the fleet (3 vCPUs each); default 3. */
  readonly vms?: number;
}

const CASES: Case[] = [];
for (const units of ['exact', 'base'] as const) {
  for (const temporality of [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]) {
    for (const vcpuAggregation of ['none', 'vm'] as const) CASES.push({ units, temporality, vcpuAggregation });
  }
}
CASES.push({ units: 'exact', temporality: AggregationTemporality.CUMULATIVE, vcpuAggregation: 'none', exclude: ['vcpu:lin_hist', 'vcpu:max_*'] });
CASES.push({ units: 'base', temporality: AggregationTemporality.DELTA, vcpuAggregation: 'vm', exclude: ['vcpu:halt_wait_ns'] });
// More stats fds than a batch of reads (plan.ts, READ_BATCH): the batches' buffers and bounds.
CASES.push({ units: 'exact', temporality: AggregationTemporality.CUMULATIVE, vcpuAggregation: 'none', vms: 13 });
CASES.push({ units: 'exact', temporality: AggregationTemporality.DELTA, vcpuAggregation: 'vm', vms: 13 });

/** A fleet of image fds: VMs (each a VM image and vCPU images) that come and go, vCPUs that
 * come and go, values that move, now and then go down (a reset) or stay as they were. */
class ImageFleet {
  readonly #images: { image: KindsImage | ReturnType<typeof imageVm>; vcpu: boolean; values: KindValues }[] = [];
  readonly #next: (max: number) => number;
  current: StatsSource[] = [];

  constructor(seed: number, vms = 3) {
    this.#next = random(seed);
    for (let vm = 0; vm < vms; vm++) {
      const owner = { pid: 1000 + vm, vmName: `vm${vm}`, startTimeMs: 1_700_000_000_000 + vm * 1000 };
      this.#images.push({ image: imageVm(`vm${vm}`, 1000 + vm), vcpu: false, values: { ...KINDS } });
      for (let vcpu = 0; vcpu < 3; vcpu++) {
        this.#images.push({ image: new KindsImage(`kvm-${1000 + vm}/vcpu-${vcpu}`, KINDS, owner), vcpu: true, values: structuredClone(KINDS) });
      }
    }
  }

  /** The next collection's values and set of sources. */
  step(collection: number): void {
    const next = this.#next;
    // Now and then an idle spell: every value stays as it was (a value above 2^53 included),
    // and the series whose words are the same write only their time.
    const idle = collection % 6 === 3 || collection % 6 === 4;
    for (const entry of this.#images) {
      if (idle) continue;
      const v = entry.values;
      const reset = next(10) === 0;
      // Now and then a counter above 2^53 (exported rounded), and a bucket too.
      v.exits = reset ? next(5) : next(40) === 0 ? 2 ** 60 + next(1000) * 4096 : v.exits + next(1000);
      v.pages = next(1 << 20);
      v.peak = reset ? 0 : v.peak + next(3);
      v.mode = next(2);
      v.waitNs = reset ? 0 : v.waitNs + next(1e6);
      v.wait = v.wait.map((c) => (reset ? 0 : next(200) === 0 ? 2 ** 58 : c + next(50)));
      v.linear = v.linear.map((c) => (next(20) === 0 ? 0 : c + next(7)));
      if (entry.vcpu) (entry.image as KindsImage).set(v);
      else (entry.image as ReturnType<typeof imageVm>).set({ ...VCPU, exits: v.exits });
    }
    // Every collection some images are left out (a vCPU gone, a whole VM gone), and sometimes
    // the order changes; the first collections have them all.
    if (collection % 3 !== 2 && this.current.length > 0) return;
    const present = this.#images.filter(() => collection < 2 || next(6) !== 0);
    if (collection % 5 === 4) present.reverse();
    this.current = present.map((entry) => entry.image.source);
  }
}

describe('the fused path (KvmStatsProducer paired with KvmOtlpMetricExporter)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  for (const c of CASES) {
    const name = `${c.units} units, ${c.temporality === AggregationTemporality.DELTA ? 'delta' : 'cumulative'}, vcpuAggregation ${c.vcpuAggregation}${c.exclude ? `, exclude ${c.exclude.join(' ')}` : ''}${c.vms ? `, ${c.vms} VMs` : ''}`;
    it(`writes what ProtobufMetricsSerializer writes for the plain producer's collections (${name})`, async () => {
      vi.useFakeTimers({ toFake: ['Date', 'performance'] });
      vi.setSystemTime(1_800_000_000_000);
      const fleet = new ImageFleet(c.units.length * 7 + c.temporality * 3 + c.vcpuAggregation.length + (c.exclude?.length ?? 0), c.vms);
      const options = { sources: () => fleet.current, units: c.units, temporality: c.temporality, vcpuAggregation: c.vcpuAggregation, exclude: c.exclude };
      const pairing = new FrameOnly();
      const fused = new KvmStatsProducer({ ...options, pairedExporter: pairing });
      const frame = pairing.frame;
      const plain = new KvmStatsProducer(options);
      const reader = new CollectingReader({ metricProducers: [fused], aggregationTemporalitySelector: () => c.temporality });
      const provider = new MeterProvider({ resource: resourceFromAttributes({ 'service.name': 'fused-test', 'host.id': 'h' }), readers: [reader] });
      const meter = provider.getMeter('kvm-stats-otel.agent', '1.0.0');
      const counter = meter.createCounter('agent.cycles', { valueType: ValueType.INT });
      const histogram = meter.createHistogram('agent.duration', { unit: 's', advice: { explicitBucketBoundaries: [0.001, 0.01] } });
      let held: { bytes: Uint8Array; copy: Buffer } | undefined;
      try {
        let arranged = 0;
        for (let collection = 0; collection < 40; collection++) {
          fleet.step(collection);
          counter.add(1, { output: collection % 3 === 0 ? 'otlp' : 'console' });
          histogram.record(collection / 1000);
          vi.advanceTimersByTime(1000 + (collection % 7));
          const { resourceMetrics, errors } = await reader.collect();
          expect(errors).toEqual([]);
          arranged += frame!.stats.arranged;
          const bytes = frame!.encode(resourceMetrics);
          const expected: ResourceMetrics = {
            resource: resourceMetrics.resource,
            scopeMetrics: [...resourceMetrics.scopeMetrics.slice(0, -1), ...(await plain.collect()).resourceMetrics.scopeMetrics],
          };
          expectSameBytes(bytes, ProtobufMetricsSerializer.serializeRequest(expected)!, `collection ${collection}`);
          // Bytes still being sent are not written over: every fourth request is held over the next.
          if (held) {
            expectSameBytes(held.bytes, held.copy, `held request before collection ${collection}`);
            frame!.release(held.bytes);
            held = undefined;
          }
          if (collection % 4 === 1) held = { bytes, copy: Buffer.from(bytes) };
          else frame!.release(bytes);
        }
        // Values above 2^53 are counted at every read, the same ones again included.
        expect(fused.inexactValues).toBe(plain.inexactValues);
        expect(fused.inexactValues).toBeGreaterThan(0);
        // Most collections only filled the frame's slots; the others laid it out anew.
        expect(arranged).toBeGreaterThan(5);
        expect(arranged).toBeLessThan(25);
      } finally {
        await provider.shutdown();
      }
    });
  }

  it('makes room for a head larger than the room kept before the frame, and writes the resource\'s schema URL after it', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'performance'] });
    vi.setSystemTime(1_800_000_000_000);
    const images = [new KindsImage('kvm-9/vcpu-0', KINDS), new KindsImage('kvm-9/vcpu-1', KINDS)];
    const pairing = new FrameOnly();
    const fused = new KvmStatsProducer({ sources: images.map((i) => i.source), pairedExporter: pairing });
    const plain = new KvmStatsProducer({ sources: images.map((i) => i.source) });
    const reader = new CollectingReader({ metricProducers: [fused] });
    // A resource of 6 kB: the head outgrows the 4 kB kept before the frame at the first export.
    const resource = resourceFromAttributes({ 'service.name': 'fused-test', note: 'x'.repeat(6000) }, { schemaUrl: 'https://opentelemetry.io/schemas/1.30.0' });
    const provider = new MeterProvider({ resource, readers: [reader] });
    const counter = provider.getMeter('kvm-stats-otel.agent').createCounter('agent.cycles');
    try {
      for (let collection = 0; collection < 4; collection++) {
        counter.add(collection + 1);
        vi.advanceTimersByTime(1000);
        const { resourceMetrics } = await reader.collect();
        const bytes = pairing.frame!.encode(resourceMetrics);
        const expected: ResourceMetrics = { resource: resourceMetrics.resource, scopeMetrics: [...resourceMetrics.scopeMetrics.slice(0, -1), ...(await plain.collect()).resourceMetrics.scopeMetrics] };
        expectSameBytes(bytes, ProtobufMetricsSerializer.serializeRequest(expected)!, `collection ${collection}`);
        pairing.frame!.release(bytes);
      }
    } finally {
      await provider.shutdown();
    }
  });

  it('pairs over http/protobuf and gRPC, not over http/json (the producer then builds data points)', async () => {
    const image = new KindsImage('kvm-7/vcpu-0', KINDS);
    for (const protocol of ['http/protobuf', 'grpc', 'http/json'] as const) {
      const exporter = new KvmOtlpMetricExporter({ protocol, url: 'http://127.0.0.1:1/v1/metrics' });
      const producer = new KvmStatsProducer({ sources: [image.source], pairedExporter: exporter });
      const { resourceMetrics } = await producer.collect();
      expect(resourceMetrics.scopeMetrics[0]!.metrics.length > 0).toBe(protocol === 'http/json');
      await exporter.shutdown();
    }
  });

  it('counts the points its layouts wrote from data points (KvmOtlpMetricExporter.newPoints), and only those', async () => {
    const images = [new KindsImage('kvm-6/vcpu-0', KINDS), new KindsImage('kvm-6/vcpu-1', KINDS)];
    const sources = images.map((i) => i.source);
    let current = sources.slice(0, 1);
    const exporter = new KvmOtlpMetricExporter({ protocol: 'http/protobuf', url: 'http://127.0.0.1:1/v1/metrics' });
    const producer = new KvmStatsProducer({ sources: () => current, pairedExporter: exporter });
    const plain = new KvmStatsProducer({ sources: sources.slice(0, 1) });
    const pointsOfOne = (await plain.collect()).resourceMetrics.scopeMetrics[0]!.metrics.reduce((n, m) => n + m.dataPoints.length, 0);
    expect(pointsOfOne).toBeGreaterThan(0);
    await producer.collect();
    expect(exporter.newPoints).toBe(pointsOfOne);
    // Laid out already: its points are taken from the frame.
    await producer.collect();
    expect(exporter.newPoints).toBe(pointsOfOne);
    // A second vCPU: only its points are new.
    current = sources;
    await producer.collect();
    expect(exporter.newPoints).toBe(2 * pointsOfOne);
    await exporter.shutdown();
  });

  it('says what to do when the paired producer is not its reader\'s last', async () => {
    const image = new KindsImage('kvm-8/vcpu-0', KINDS);
    const pairing = new FrameOnly();
    const fused = new KvmStatsProducer({ sources: [image.source], pairedExporter: pairing });
    const frame = pairing.frame;
    const other = new KvmStatsProducer({ sources: [image.source] });
    const reader = new CollectingReader({ metricProducers: [fused, other] });
    const provider = new MeterProvider({ readers: [reader] });
    const { resourceMetrics } = await reader.collect();
    expect(() => frame!.encode(resourceMetrics)).toThrow("the paired KvmStatsProducer must be the last of its reader's metricProducers: list it last");
    await provider.shutdown();
  });
});
