/**
 * The fast OTLP protobuf encoder against otlp-transformer's ProtobufMetricsSerializer, byte for
 * byte: on generated ResourceMetrics (every point kind and attribute type), on sequences of them
 * that keep their shape while numbers change (the in-place path) or change shape, and on a real
 * producer's output mixed with ordinary SDK instruments over several collections.
 */
import { type Attributes, ValueType } from '@opentelemetry/api';
import { ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { type DataPoint, DataPointType, type Histogram, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OtlpProtobufEncoder } from '../../src/exporters/otlp-protobuf.js';
import { resourceMetrics } from '../helpers/metrics-arbitrary.js';
import { collectMixed, mixedSetup } from '../helpers/mixed-collection.js';
import { describeKvm } from '../helpers/kvm.js';

function official(request: ResourceMetrics): Buffer {
  return Buffer.from(ProtobufMetricsSerializer.serializeRequest(request)!);
}

/** Equal bytes; on a difference, where it starts (a 30 MB diff is no help). */
function expectSameBytes(ours: Uint8Array, theirs: Uint8Array): void {
  const a = Buffer.from(ours.buffer, ours.byteOffset, ours.byteLength);
  const b = Buffer.from(theirs.buffer, theirs.byteOffset, theirs.byteLength);
  if (a.equals(b)) return;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  expect.fail(`encodings differ at byte ${i} of ${a.length} (official ${b.length}): ours ${a.subarray(i, i + 16).toString('hex')}, official ${b.subarray(i, i + 16).toString('hex')}`);
}

/** The next collection of the same series, as a reused producer or the SDK makes it: the same
 * attributes and bounds objects, new numbers; points updated in place or made anew. */
function nextCollection(request: ResourceMetrics, seed: number, inPlace: boolean): ResourceMetrics {
  let state = seed;
  const random = () => ((state = (state * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const integer = (max: number) => Math.floor(random() * max);
  const scopeMetrics = request.scopeMetrics.map((scope) => ({
    scope: scope.scope,
    metrics: scope.metrics.map((metric): MetricData => {
      const points = metric.dataPoints.map((point) => {
        const int = metric.descriptor.valueType === ValueType.INT;
        const startTime: [number, number] = [point.startTime[0] + integer(3), integer(1e9)];
        const endTime: [number, number] = [point.endTime[0] + integer(100), integer(1e9)];
        let value: unknown = point.value;
        if (metric.dataPointType === DataPointType.SUM || metric.dataPointType === DataPointType.GAUGE) {
          value = int ? integer(2 ** 31) * (random() < 0.5 ? -1 : 1) * (random() < 0.5 ? 2 ** 20 : 1) : random() * 1e12 - 5e11;
        } else if (metric.dataPointType === DataPointType.HISTOGRAM) {
          const old = point.value as Histogram;
          const counts = old.buckets.counts.map(() => integer(2 ** 40));
          const next: Histogram = { buckets: { boundaries: old.buckets.boundaries, counts }, count: counts.reduce((a, b) => a + b, 0) };
          if (old.sum !== undefined) next.sum = random() * 1e9;
          if (old.min !== undefined) next.min = -random();
          if (old.max !== undefined) next.max = random() * 1e6;
          value = next;
        }
        if (!inPlace) return { ...point, startTime, endTime, value };
        const mutable = point as { startTime: unknown; endTime: unknown; value: unknown };
        mutable.startTime = startTime;
        mutable.endTime = endTime;
        mutable.value = value;
        return point;
      });
      return { ...metric, dataPoints: points } as MetricData;
    }),
  }));
  return { resource: request.resource, scopeMetrics };
}

describe('OtlpProtobufEncoder', () => {
  it('writes what ProtobufMetricsSerializer writes, for any ResourceMetrics', () => {
    const encoder = new OtlpProtobufEncoder();
    fc.assert(
      fc.property(resourceMetrics, (request) => {
        expectSameBytes(encoder.encode(request), official(request));
      }),
      { numRuns: 500 },
    );
  });

  it('writes what ProtobufMetricsSerializer writes over a sequence of collections, in place where the shape holds', () => {
    fc.assert(
      fc.property(resourceMetrics, fc.array(fc.tuple(fc.nat(), fc.boolean(), fc.boolean()), { minLength: 1, maxLength: 4 }), resourceMetrics, (first, steps, other) => {
        const encoder = new OtlpProtobufEncoder();
        let request = first;
        let bytes = encoder.encode(request);
        expectSameBytes(bytes, official(request));
        for (const [seed, inPlace, release] of steps) {
          if (release) encoder.release(bytes);
          const held = release ? undefined : Buffer.from(bytes);
          request = nextCollection(request, seed, inPlace);
          const next = encoder.encode(request);
          expectSameBytes(next, official(request));
          // Bytes still held were not written over.
          if (held) expectSameBytes(bytes, held);
          bytes = next;
        }
        // Something else entirely, then the first shape again.
        expectSameBytes(encoder.encode(other), official(other));
        expectSameBytes(encoder.encode(request), official(request));
      }),
      { numRuns: 300 },
    );
  });

  it('patches in place what keeps its shape and encodes anew what does not', () => {
    const attributes: Attributes = { 'kvm.vcpu.id': 1 };
    const points: DataPoint<number>[] = [{ startTime: [1, 2], endTime: [3, 4], attributes, value: 5 }];
    const metric = (dataPoints: DataPoint<number>[]): MetricData => ({
      descriptor: { name: 'kvm.vcpu.exits', description: 'd', unit: '1', valueType: ValueType.INT },
      aggregationTemporality: 1,
      dataPointType: DataPointType.SUM,
      isMonotonic: true,
      dataPoints,
    });
    const scope = { name: 'kvm-stats-otel' };
    const resource = resourceFromAttributes({ 'service.name': 's' });
    const encoder = new OtlpProtobufEncoder();
    const request = (dataPoints: DataPoint<number>[]): ResourceMetrics => ({ resource, scopeMetrics: [{ scope, metrics: [metric(dataPoints), metric([])] }] });
    encoder.encode(request(points));
    expect(encoder.stats).toEqual({ encoded: 2, patched: 0 });
    points[0] = { ...points[0]!, value: 7 };
    let r = request(points);
    expectSameBytes(encoder.encode(r), official(r));
    expect(encoder.stats).toEqual({ encoded: 0, patched: 2 });
    // A series came: that metric is encoded anew, the other one copied.
    points.push({ startTime: [1, 2], endTime: [3, 4], attributes: { 'kvm.vcpu.id': 2 }, value: 1 });
    r = request(points);
    expectSameBytes(encoder.encode(r), official(r));
    expect(encoder.stats).toEqual({ encoded: 1, patched: 1 });
  });
});

describeKvm('OtlpProtobufEncoder on a real producer and SDK instruments', () => {
  for (const reuseDataPoints of [true, false]) {
    it(`writes what ProtobufMetricsSerializer writes at every collection (reuseDataPoints ${reuseDataPoints})`, async () => {
      const setup = await mixedSetup(reuseDataPoints);
      try {
        const encoder = new OtlpProtobufEncoder();
        let patched = 0;
        for (let collection = 0; collection < 8; collection++) {
          const request = await collectMixed(setup, collection);
          const bytes = encoder.encode(request);
          expectSameBytes(bytes, official(request));
          encoder.release(bytes);
          patched += encoder.stats.patched;
        }
        // The in-place path was taken, not only fresh encodings.
        expect(patched).toBeGreaterThan(0);
      } finally {
        await setup.close();
      }
    });
  }
});
