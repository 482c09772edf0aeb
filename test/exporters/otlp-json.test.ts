/**
 * The OTLP JSON encoder against otlp-transformer's JsonMetricsSerializer: the same bytes (and so
 * the same document after JSON.parse) for generated ResourceMetrics, over sequences of
 * collections (whose series stay, or change: come and go, new attributes objects, start times,
 * histogram shapes and bounds), on a real producer's output over image fds of the shipped
 * recording (values moving, vCPUs coming and going, both temporalities: a delta point's start is
 * the producer's previous collection time, rolled in place), and on a real producer's output
 * mixed with ordinary SDK instruments (KVM only).
 */
import { JsonMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { AggregationTemporality, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ImageFleet } from '../../src/bench/images.js';
import { OtlpJsonEncoder } from '../../src/exporters/otlp-json.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
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
        }
      }),
      { numRuns: 400 },
    );
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

describe('OtlpJsonEncoder on a real producer over image fds', () => {
  const { CUMULATIVE, DELTA } = AggregationTemporality;
  const cases = [
    { temporality: CUMULATIVE, reuseDataPoints: true, vcpuAggregation: 'none' },
    { temporality: DELTA, reuseDataPoints: true, vcpuAggregation: 'none' },
    { temporality: DELTA, reuseDataPoints: false, vcpuAggregation: 'none' },
    { temporality: CUMULATIVE, reuseDataPoints: true, vcpuAggregation: 'vm' },
  ] as const;
  for (const { temporality, reuseDataPoints, vcpuAggregation } of cases) {
    it(`writes what JsonMetricsSerializer writes at every collection (${temporality === DELTA ? 'delta' : 'cumulative'}, reuseDataPoints ${reuseDataPoints}, vcpuAggregation ${vcpuAggregation})`, async () => {
      const fleet = ImageFleet.create({ vms: 3, vcpus: 2, namePrefix: 'json' });
      try {
        let collection = 0;
        // Every third collection a vCPU is missing (its series go, then come back), every
        // fifth the order of the fds is reversed.
        const sources = () => {
          const present = collection % 3 === 2 ? fleet.sources.filter((_, i) => i !== 2) : [...fleet.sources];
          return collection % 5 === 4 ? present.reverse() : present;
        };
        const producer = new KvmStatsProducer({ sources, temporality, reuseDataPoints, vcpuAggregation });
        const encoder = new OtlpJsonEncoder();
        for (; collection < 10; collection++) {
          fleet.step();
          const { resourceMetrics, errors } = await producer.collect();
          expect(errors).toEqual([]);
          const bytes = encoder.encode(resourceMetrics);
          expectSameJson(bytes, resourceMetrics);
          encoder.release(bytes);
          // The next collection is at least a millisecond on: another end time.
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      } finally {
        fleet.close();
      }
    });
  }
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
