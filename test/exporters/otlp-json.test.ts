/**
 * The OTLP JSON encoder against otlp-transformer's JsonMetricsSerializer: the same bytes (and so
 * the same document after JSON.parse) for generated ResourceMetrics, over sequences of
 * collections whose series stay (numbers rewritten in place) or change (series that come and go,
 * new attributes objects, start times, histogram shapes and bounds), and on a real producer's
 * output mixed with ordinary SDK instruments.
 */
import { JsonMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { ValueType } from '@opentelemetry/api';
import { AggregationTemporality, DataPointType, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OtlpJsonEncoder } from '../../src/exporters/otlp-json.js';
import { describeKvm } from '../helpers/kvm.js';
import { resourceMetrics } from '../helpers/metrics-arbitrary.js';
import { collectMixed, mixedSetup } from '../helpers/mixed-collection.js';
import { nextCollection, seriesChange } from '../helpers/series-changes.js';

const decoder = new TextDecoder();

function expectSameJson(ours: Uint8Array, request: ResourceMetrics): void {
  const official = JsonMetricsSerializer.serializeRequest(request)!;
  const text = decoder.decode(ours);
  const theirs = decoder.decode(official);
  expect(JSON.parse(text)).toEqual(JSON.parse(theirs));
  // Stronger than required: the very same text.
  if (text !== theirs) {
    let i = 0;
    while (text[i] === theirs[i]) i++;
    expect.fail(`JSON differs at character ${i}: ours ${JSON.stringify(text.slice(i, i + 40))}, official ${JSON.stringify(theirs.slice(i, i + 40))}`);
  }
}

describe('OtlpJsonEncoder', () => {
  it('writes what JsonMetricsSerializer writes, for any ResourceMetrics', () => {
    const encoder = new OtlpJsonEncoder();
    fc.assert(
      fc.property(resourceMetrics, (request) => {
        const bytes = encoder.encode(request);
        expectSameJson(bytes, request);
        encoder.release(bytes);
      }),
      { numRuns: 500 },
    );
  });

  it('writes what JsonMetricsSerializer writes over collections whose series stay or change', () => {
    let patched = 0;
    fc.assert(
      fc.property(resourceMetrics, fc.array(seriesChange, { minLength: 1, maxLength: 8 }), fc.boolean(), (first, changes, inPlace) => {
        const encoder = new OtlpJsonEncoder();
        let request = first;
        encoder.release(encoder.encode(request));
        for (const change of changes) {
          request = nextCollection(request, change, inPlace);
          const bytes = encoder.encode(request);
          expectSameJson(bytes, request);
          encoder.release(bytes);
          patched += encoder.stats.patched;
        }
      }),
      { numRuns: 400 },
    );
    // The property ran through the patched path, not only through texts written anew.
    expect(patched).toBeGreaterThan(100);
  });

  it('rewrites only the numbers of series that stayed, and writes anew a metric whose series changed', () => {
    const encoder = new OtlpJsonEncoder();
    fc.assert(
      fc.property(resourceMetrics, fc.nat(), (first, seed) => {
        const metrics = first.scopeMetrics.flatMap((scope) => scope.metrics);
        // Every metric but exponential histograms (their buckets are written anew) and metrics of
        // points without a value type.
        const patchable = metrics.filter((metric) => metric.dataPointType !== DataPointType.EXPONENTIAL_HISTOGRAM && (metric.dataPointType === DataPointType.HISTOGRAM || metric.descriptor.valueType === ValueType.INT || metric.descriptor.valueType === ValueType.DOUBLE)).length;
        encoder.release(encoder.encode(first));
        const second = nextCollection(first, { kind: 'values', seed }, true);
        encoder.release(encoder.encode(second));
        expect(encoder.stats).toEqual({ patched: patchable, encoded: metrics.length - patchable });
        const third = nextCollection(second, { kind: 'drop', at: 0, seed }, true);
        const bytes = encoder.encode(third);
        expectSameJson(bytes, third);
        encoder.release(bytes);
      }),
      { numRuns: 200 },
    );
  });

  it('moves the text after a number whose width changed, however many widths change', () => {
    const points = Array.from({ length: 300 }, (_, i) => ({ startTime: [1, 2] as [number, number], endTime: [3, 4] as [number, number], attributes: { i }, value: 9 }));
    const request = (values: (i: number) => number): ResourceMetrics => ({
      resource: { attributes: {} } as ResourceMetrics['resource'],
      scopeMetrics: [
        {
          scope: { name: 's' },
          metrics: [
            {
              descriptor: { name: 'c', description: '', unit: '', valueType: ValueType.INT },
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.SUM,
              isMonotonic: true,
              dataPoints: points.map((point, i) => Object.assign(point, { value: values(i), endTime: [3, 4 + values(i)] })),
            },
          ],
        },
      ],
    });
    const encoder = new OtlpJsonEncoder();
    for (const [values, stats] of [
      [() => 9, { encoded: 1, patched: 0 }],
      [(i: number) => (i % 50 === 0 ? 10 : 9), { encoded: 0, patched: 1 }],
      [(i: number) => (i % 50 === 0 ? 9 : 10), { encoded: 0, patched: 1 }],
      [(i: number) => (i % 50 === 0 ? -1 : 10), { encoded: 0, patched: 1 }],
    ] as const) {
      const metrics = request(values);
      const bytes = encoder.encode(metrics);
      expectSameJson(bytes, metrics);
      encoder.release(bytes);
      expect(encoder.stats).toEqual(stats);
    }
  });

  it('leaves bytes that are still held as they were', () => {
    fc.assert(
      fc.property(resourceMetrics, resourceMetrics, (first, second) => {
        const encoder = new OtlpJsonEncoder();
        const held = encoder.encode(first);
        const copy = Buffer.from(held);
        expectSameJson(encoder.encode(second), second);
        expect(Buffer.from(held).equals(copy)).toBe(true);
      }),
      { numRuns: 100 },
    );
  });
});

describeKvm('OtlpJsonEncoder on a real producer and SDK instruments', () => {
  for (const reuseDataPoints of [true, false]) {
    it(`writes what JsonMetricsSerializer writes at every collection (reuseDataPoints ${reuseDataPoints})`, async () => {
      const setup = await mixedSetup(reuseDataPoints);
      try {
        const encoder = new OtlpJsonEncoder();
        for (let collection = 0; collection < 6; collection++) {
          const request = await collectMixed(setup, collection);
          const bytes = encoder.encode(request);
          expectSameJson(bytes, request);
          encoder.release(bytes);
        }
      } finally {
        await setup.close();
      }
    });
  }
});
