/**
 * The Prometheus text serializer (src/exporters/prometheus-text.ts): its text is the official
 * PrometheusSerializer's for the same ResourceMetrics, generated ones of every shape, again after
 * values change, over collections whose series stay or change (series that come and go, new
 * attributes objects, histograms of another shape or bounds), in chunks of any size, into chunks
 * given back (release()) but never over one still held; and a producer's reused points over
 * more sources than histograms are read ahead at once, their values gathered before they are
 * written, as sources go and come. (Serving it, unit suffixes and real producer output:
 * test/exporters/prometheus-exporter.test.ts.)
 */
import { type Attributes, type AttributeValue, ValueType } from '@opentelemetry/api';
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  type DataPoint,
  DataPointType,
  type Histogram,
  type MetricData,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PrometheusTextSerializer, type PrometheusTextOptions } from '../../src/exporters/prometheus-text.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { closeSources } from '../../src/sources/source.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { nextCollection, seriesChange } from '../helpers/series-changes.js';
import { VCPU, imageVcpu, imageVm } from '../helpers/vcpu-images.js';

const cleanup = cleanupAfterEach();

function official(options: PrometheusTextOptions): PrometheusSerializer {
  return new PrometheusSerializer(options.prefix, options.appendTimestamp, options.withResourceConstantLabels, options.withoutTargetInfo, options.withoutScopeInfo);
}

// ---- Generated ResourceMetrics -------------------------------------------------------------

/** Text with what needs escaping or sanitizing: quotes, backslashes, newlines, dots, non-ASCII. */
const text = fc.oneof(
  fc.constantFrom('', 'a', 'vm-1', 'x"y', 'back\\slash', 'new\nline', 'é ü', '日本', '\u{1F600}', ' pad ', 'le', '0'),
  fc.string({ maxLength: 12, unit: 'grapheme-ascii' }),
  fc.string({ maxLength: 6, unit: 'binary' }),
);
const key = fc.oneof(fc.constantFrom('process.pid', 'kvm.vm.name', 'le', 'otel.scope.name', 'a-b', '1st', 'service.name', 'x'), fc.string({ minLength: 1, maxLength: 8, unit: 'grapheme-ascii' }));
const scalar: fc.Arbitrary<AttributeValue> = fc.oneof(text, fc.integer(), fc.double(), fc.boolean());
const attributeValue: fc.Arbitrary<AttributeValue> = fc.oneof(
  { weight: 6, arbitrary: scalar },
  { weight: 1, arbitrary: fc.array(fc.oneof(text, fc.constant(null), fc.constant(undefined)), { maxLength: 3 }) as fc.Arbitrary<AttributeValue> },
  { weight: 1, arbitrary: fc.array(fc.oneof(fc.integer(), fc.double()), { maxLength: 3 }) },
);
/** Keys whose label names the official serializer writes validly: it writes a name that starts
 * with a digit, or two keys of one name, as they are, where the specification (and this
 * serializer: test/exporters/prometheus-labels.test.ts) says otherwise. */
function officialLabels(attributes: Attributes): Attributes {
  const names = new Set<string>();
  const kept: Attributes = {};
  for (const [key, value] of Object.entries(attributes)) {
    const name = key.replace(/[^a-z0-9_]/gi, '_').replace(/_{2,}/g, '_');
    if (/^[0-9]/.test(name) || names.has(name)) continue;
    names.add(name);
    kept[key] = value;
  }
  return kept;
}
const attributes: fc.Arbitrary<Attributes> = fc.dictionary(key, attributeValue, { maxKeys: 4 }).map(officialLabels);

/** Values of every kind the text format writes differently. */
const value = fc.oneof(
  fc.constantFrom(0, -0, 1, -1, 0.5, NaN, Infinity, -Infinity, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, -(2 ** 53) + 1, 1e21, 1e-7, 123456789012, 2 ** 31, 2 ** 31 - 1, 2 ** 32),
  fc.integer(),
  fc.maxSafeInteger(),
  fc.double(),
);
const hrTime = fc.tuple(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 0, max: 999_999_999 })) as fc.Arbitrary<[number, number]>;
const name = fc.oneof(
  fc.constantFrom('kvm.vcpu.exits', 'http.server.duration', 'requests_total', 'a-b.c', '1abc', '.', '..', '_', '__x__', 'halt_wait', 'x\\y', 'a\nb', 'kvm.vcpu.halt_wait_seconds'),
  fc.string({ minLength: 1, maxLength: 10, unit: 'grapheme-ascii' }),
);
const unit = fc.constantFrom('', '1', 's', 'ms', 'ns', 'By', 'KiBy', '{packet}', '{cycle}', 'By/s', '{packet}/s', 'Cel', 'weird unit', '%', 'x\ny');

function numberPoints(count: number): fc.Arbitrary<DataPoint<number>[]> {
  return fc.array(fc.record({ startTime: hrTime, endTime: hrTime, attributes, value }), { maxLength: count });
}

const histogramValue: fc.Arbitrary<Histogram> = fc
  .record({
    boundaries: fc.oneof(
      fc.array(fc.double({ noNaN: true }), { maxLength: 5 }).map((b) => b.sort((x, y) => x - y)),
      fc.constantFrom([0, 5, 10], [0, 100, Infinity], [1, 2, 4, 8, 16, 32], [0.001, 0.25]).map((b) => [...b]),
    ),
    extra: fc.integer({ min: -1, max: 2 }),
    counts: fc.array(fc.oneof(fc.nat(1000), fc.constantFrom(0, 2 ** 53 - 1)), { maxLength: 8 }),
    sum: fc.option(value, { nil: undefined }),
    count: fc.option(fc.nat(), { nil: undefined }),
  })
  .map(({ boundaries, extra, counts, sum, count }) => {
    // Usually one count per bound and one more (the +Inf bucket), sometimes not.
    const length = Math.max(0, boundaries.length + 1 + (extra === 2 ? 0 : extra));
    const filled = Array.from({ length }, (_, i) => counts[i % Math.max(1, counts.length)] ?? 0);
    const histogram: Histogram = { buckets: { boundaries, counts: filled }, count: count as number };
    if (sum !== undefined) histogram.sum = sum;
    return histogram;
  });

const metric: fc.Arbitrary<MetricData> = fc
  .record({
    name,
    description: fc.oneof(text, fc.constant('')),
    unit,
    kind: fc.constantFrom('counter', 'updown', 'gauge', 'histogram', 'exponential'),
    temporality: fc.constantFrom(AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA),
    numbers: numberPoints(4),
    histograms: fc.array(fc.record({ startTime: hrTime, endTime: hrTime, attributes, value: histogramValue }), { maxLength: 3 }),
  })
  .map(({ name, description, unit, kind, temporality, numbers, histograms }): MetricData => {
    const base = { descriptor: { name, description, unit, valueType: ValueType.DOUBLE }, aggregationTemporality: temporality };
    if (kind === 'counter' || kind === 'updown') return { ...base, dataPointType: DataPointType.SUM, isMonotonic: kind === 'counter', dataPoints: numbers };
    if (kind === 'gauge') return { ...base, dataPointType: DataPointType.GAUGE, dataPoints: numbers };
    if (kind === 'histogram') return { ...base, dataPointType: DataPointType.HISTOGRAM, dataPoints: histograms };
    return { ...base, dataPointType: DataPointType.EXPONENTIAL_HISTOGRAM, dataPoints: [] } as unknown as MetricData;
  });

const scope = fc.record({
  name: fc.oneof(text, fc.constantFrom('kvm-stats-otel', 'my-app')),
  version: fc.option(fc.constantFrom('0.1.0', '', '2.0.0-rc.1'), { nil: undefined }),
  schemaUrl: fc.option(fc.constantFrom('https://opentelemetry.io/schemas/1.24.0', ''), { nil: undefined }),
});

const resourceMetrics: fc.Arbitrary<ResourceMetrics> = fc
  .record({
    resource: attributes,
    scopeMetrics: fc.array(fc.record({ scope, metrics: fc.array(metric, { maxLength: 4 }) }), { maxLength: 3 }),
  })
  .map(({ resource, scopeMetrics }) => ({ resource: resourceFromAttributes(resource), scopeMetrics }));

const options: fc.Arbitrary<PrometheusTextOptions> = fc.record(
  {
    prefix: fc.constantFrom('', 'app', 'my.app'),
    appendTimestamp: fc.boolean(),
    withResourceConstantLabels: fc.constantFrom(/service/, /.*/, /^le$/, /^x/),
    withoutScopeInfo: fc.boolean(),
    withoutTargetInfo: fc.boolean(),
  },
  { requiredKeys: [] },
);

/** Every value of `metrics` changed in place, as a producer with reused points does. */
function bump(metrics: ResourceMetrics): void {
  for (const { metrics: list } of metrics.scopeMetrics) {
    for (const m of list) {
      for (const point of m.dataPoints as { value: number | Histogram }[]) {
        if (typeof point.value === 'number') point.value = point.value + 1;
        else {
          const counts = point.value.buckets.counts;
          for (let i = 0; i < counts.length; i++) counts[i] = counts[i]! + 2;
          if (point.value.sum !== undefined) point.value.sum = point.value.sum * 2;
        }
      }
    }
  }
}

/** One gauge of 2,000 series, series i labelled `i="label(i)"`. */
function gauge(label: (i: number) => string): ResourceMetrics {
  const metric: MetricData = {
    descriptor: { name: 'g', description: '', unit: '', valueType: ValueType.DOUBLE },
    aggregationTemporality: AggregationTemporality.CUMULATIVE,
    dataPointType: DataPointType.GAUGE,
    dataPoints: Array.from({ length: 2000 }, (_, i) => ({ startTime: [0, 0], endTime: [0, 0], attributes: { i: label(i) }, value: i })),
  };
  return { resource: resourceFromAttributes({}), scopeMetrics: [{ scope: { name: 's' }, metrics: [metric] }] };
}

describe('PrometheusTextSerializer', () => {
  it('writes the official serializer\'s text for generated ResourceMetrics, again after values change, in chunks of any size', () => {
    fc.assert(
      fc.property(resourceMetrics, options, fc.integer({ min: 1, max: 300 }), (metrics, opts, chunkBytes) => {
        const ours = new PrometheusTextSerializer(opts);
        const theirs = official(opts);
        expect(ours.serialize(metrics)).toBe(theirs.serialize(metrics));
        // The labels are cached now; the values must still be this scrape's.
        bump(metrics);
        const chunks = [...ours.chunks(metrics, chunkBytes)];
        expect(chunks.filter((chunk) => chunk.length === 0)).toEqual([]);
        expect(Buffer.concat(chunks).toString('utf8')).toBe(theirs.serialize(metrics));
      }),
      { numRuns: 400 },
    );
  });

  it("writes the official serializer's text over collections whose series stay or change", () => {
    fc.assert(
      fc.property(resourceMetrics, options, fc.array(seriesChange, { minLength: 1, maxLength: 8 }), fc.boolean(), (first, opts, changes, inPlace) => {
        const ours = new PrometheusTextSerializer(opts);
        const theirs = official(opts);
        let metrics = first;
        expect(ours.serialize(metrics)).toBe(theirs.serialize(metrics));
        for (const change of changes) {
          metrics = nextCollection(metrics, change, inPlace);
          expect(ours.serialize(metrics)).toBe(theirs.serialize(metrics));
        }
      }),
      { numRuns: 400 },
    );
  });

  it("writes the official serializer's text into chunks given back, and never over a chunk still held", () => {
    // What the consumer does with each chunk: give it back at once, hold it to the end of the
    // scrape (then give it back, or give it back twice), or keep it.
    const fate = fc.constantFrom('release', 'hold', 'hold-twice', 'keep');
    fc.assert(
      fc.property(resourceMetrics, options, fc.array(seriesChange, { minLength: 1, maxLength: 6 }), fc.integer({ min: 1, max: 300 }), fc.infiniteStream(fate), (first, opts, changes, chunkBytes, fates) => {
        const ours = new PrometheusTextSerializer(opts);
        const theirs = official(opts);
        let metrics = first;
        for (const change of [undefined, ...changes]) {
          if (change) metrics = nextCollection(metrics, change, true);
          const copies: Buffer[] = [];
          const held: { chunk: Buffer; copy: Buffer; twice: boolean }[] = [];
          for (const chunk of ours.chunks(metrics, chunkBytes)) {
            const copy = Buffer.from(chunk);
            copies.push(copy);
            const what = fates.next().value;
            if (what === 'release') ours.release(chunk);
            else if (what !== 'keep') held.push({ chunk, copy, twice: what === 'hold-twice' });
          }
          expect(Buffer.concat(copies).toString('utf8')).toBe(theirs.serialize(metrics));
          for (const { chunk, copy, twice } of held) {
            expect(chunk.equals(copy)).toBe(true);
            ours.release(chunk);
            if (twice) ours.release(chunk);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it("writes the official serializer's text for a producer's reused points over many sources, collection after collection, as values move and sources go and come", async () => {
    // More vCPUs than histograms are read ahead at once (32), so that a block of them, and a
    // chunk, can end anywhere; each source's points made together, as the gathering expects.
    const vcpus = Array.from({ length: 75 }, (_, i) => imageVcpu(`vm-${i % 5}`, i, { ...VCPU, exits: 100 + i, wait: [i, 2 * i, 0, 3] }, 100 + (i % 5)));
    const vms = Array.from({ length: 5 }, (_, i) => imageVm(`vm-${i}`, 100 + i));
    cleanup.push(() => closeSources([...vms, ...vcpus].map((image) => image.source)));
    let live = [...vms, ...vcpus];
    const producer = new KvmStatsProducer({ sources: () => live.map((image) => image.source), reuseDataPoints: true });
    const ours = new PrometheusTextSerializer();
    const theirs = official({});
    for (let collection = 0; collection < 6; collection++) {
      const { resourceMetrics, errors } = await producer.collect();
      expect(errors).toEqual([]);
      const expected = theirs.serialize(resourceMetrics);
      expect(expected.match(/^kvm_vcpu_halt_wait_hist_bucket\{/gm)?.length).toBe(4 * live.filter((image) => vcpus.includes(image)).length);
      for (const chunkBytes of [97, 4096, undefined]) {
        const copies: Buffer[] = [];
        for (const chunk of ours.chunks(resourceMetrics, chunkBytes)) {
          copies.push(Buffer.from(chunk));
          ours.release(chunk);
        }
        expect(Buffer.concat(copies).toString('utf8')).toBe(expected);
      }
      for (const [i, image] of vcpus.entries()) image.set({ ...VCPU, exits: 100 + i + 7 * collection, load: collection, wait: [i + collection, 2 * i, collection, 3] });
      // Every fifth source goes, then comes back.
      if (collection === 2) live = live.filter((_, i) => i % 5 !== 2);
      if (collection === 4) live = [...vms, ...vcpus];
    }
  });

  it('writes a scrape whose chunks are given back into the same few chunks, and ignores buffers not its own', () => {
    const metrics = gauge((i) => String(i));
    const ours = new PrometheusTextSerializer();
    const expected = official({}).serialize(metrics);
    const foreign = Buffer.alloc(1024);
    for (let scrape = 0; scrape < 3; scrape++) {
      const memory = new Set<ArrayBufferLike>();
      let text = '';
      let chunks = 0;
      for (const chunk of ours.chunks(metrics, 1024)) {
        memory.add(chunk.buffer);
        text += chunk.toString('utf8');
        chunks++;
        ours.release(chunk);
        ours.release(foreign);
      }
      expect(text).toBe(expected);
      expect(chunks).toBeGreaterThan(30);
      expect(memory.size).toBeLessThanOrEqual(2);
      expect(memory.has(foreign.buffer)).toBe(false);
    }
  });

  it('writes chunks of the size asked for, larger only for a line that does not fit', () => {
    const long = 'x'.repeat(5000);
    const metrics = gauge((i) => (i === 1000 ? long : String(i)));
    const sizes = [...new PrometheusTextSerializer().chunks(metrics, 1024)].map((chunk) => chunk.length);
    expect(sizes.filter((size) => size > 1024)).toHaveLength(1);
    expect(sizes.filter((size) => size > 1024)[0]).toBeLessThan(long.length + 200);
    expect(sizes.reduce((a, b) => a + b)).toBe(Buffer.byteLength(official({}).serialize(metrics)));
  });
});
