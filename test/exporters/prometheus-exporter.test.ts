/**
 * The Prometheus text exporter (src/exporters): its text is the official PrometheusSerializer's
 * for the same ResourceMetrics (generated ones of every shape, and real producer output from a
 * real DemoVm and VM fleet beside ordinary SDK instruments), it serves over real HTTP with and
 * without gzip, one scrape at a time, and promtool accepts what it writes.
 */
import { spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { type Attributes, type AttributeValue, ValueType } from '@opentelemetry/api';
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  type DataPoint,
  DataPointType,
  type Histogram,
  MeterProvider,
  type MetricData,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../../examples/local-collector/collector.js';
import { PROMETHEUS_CONTENT_TYPE, PrometheusTextExporter, acceptsGzip } from '../../src/exporters/prometheus-exporter.js';
import { PrometheusTextSerializer, type PrometheusTextOptions } from '../../src/exporters/prometheus-text.js';
import { prometheusUnit, withUnitSuffix } from '../../src/otel/prometheus-units.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { DemoVm } from '../../src/sources/demo.js';
import { VmFleet } from '../../src/bench/fleet.js';
import { describeKvm } from '../helpers/kvm.js';

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
const attributes: fc.Arbitrary<Attributes> = fc.dictionary(key, attributeValue, { maxKeys: 4 });

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

  it('writes chunks of the size asked for, larger only for a line that does not fit', () => {
    const long = 'x'.repeat(5000);
    const metrics: ResourceMetrics = {
      resource: resourceFromAttributes({}),
      scopeMetrics: [
        {
          scope: { name: 's' },
          metrics: [
            {
              descriptor: { name: 'g', description: '', unit: '', valueType: ValueType.DOUBLE },
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.GAUGE,
              dataPoints: Array.from({ length: 2000 }, (_, i) => ({ startTime: [0, 0], endTime: [0, 0], attributes: { i: i === 1000 ? long : String(i) }, value: i })),
            },
          ],
        },
      ],
    };
    const sizes = [...new PrometheusTextSerializer().chunks(metrics, 1024)].map((chunk) => chunk.length);
    expect(sizes.filter((size) => size > 1024)).toHaveLength(1);
    expect(sizes.filter((size) => size > 1024)[0]).toBeLessThan(long.length + 200);
    expect(sizes.reduce((a, b) => a + b)).toBe(Buffer.byteLength(official({}).serialize(metrics)));
  });
});

describe('unit suffixes', () => {
  it('maps OpenTelemetry units to Prometheus unit words', () => {
    expect(['s', 'ms', 'us', 'ns', 'By', 'KiBy', 'kBy', '1', '{packet}', '{cycle}', 'By/s', '{packet}/s', '', 'Cel', 'weird unit'].map(prometheusUnit)).toEqual([
      'seconds',
      'milliseconds',
      'microseconds',
      'nanoseconds',
      'bytes',
      'kibibytes',
      'kilobytes',
      '',
      '',
      '',
      'bytes_per_second',
      'per_second',
      '',
      'celsius',
      'weird_unit',
    ]);
  });

  it('puts the unit before _total, once', () => {
    expect(withUnitSuffix('kvm_vcpu_halt_wait', 'seconds', true)).toBe('kvm_vcpu_halt_wait_seconds');
    expect(withUnitSuffix('kvm_vcpu_halt_wait_total', 'seconds', true)).toBe('kvm_vcpu_halt_wait_seconds_total');
    expect(withUnitSuffix('kvm_vcpu_halt_wait_seconds_total', 'seconds', true)).toBe('kvm_vcpu_halt_wait_seconds_total');
    expect(withUnitSuffix('kvm_vcpu_halt_wait_seconds', 'seconds', false)).toBe('kvm_vcpu_halt_wait_seconds');
    expect(withUnitSuffix('seconds_left', 'seconds', false)).toBe('seconds_left_seconds');
    expect(withUnitSuffix('x', '', true)).toBe('x');
  });

  it('names series with the unit and writes the Prometheus unit in the UNIT line; without the option, the text is the official one', () => {
    const exporter = new PrometheusTextExporter({ preventServerStart: true, unitSuffixes: true });
    const plain = new PrometheusTextExporter({ preventServerStart: true });
    const both = new MeterProvider({ resource: resourceFromAttributes({ 'service.name': 't' }), readers: [exporter, plain] });
    const meter = both.getMeter('m', '1.0.0');
    meter.createCounter('kvm.vcpu.halt_wait', { unit: 's', description: 'Time halted.' }).add(1.5, { vcpu: '0' });
    meter.createUpDownCounter('queue.size', { unit: 'By' }).add(10);
    meter.createHistogram('request.duration', { unit: 'ms', advice: { explicitBucketBoundaries: [1, 10] } }).record(5);
    meter.createCounter('packets', { unit: '{packet}' }).add(3);
    meter.createCounter('rx', { unit: 'By/s' }).add(3);
    return (async () => {
      const { resourceMetrics } = await exporter.collect();
      const text = new PrometheusTextSerializer({ unitSuffixes: true }).serialize(resourceMetrics);
      expect(text).toContain('# UNIT kvm_vcpu_halt_wait_seconds_total seconds\n# TYPE kvm_vcpu_halt_wait_seconds_total counter\nkvm_vcpu_halt_wait_seconds_total{vcpu="0",');
      expect(text).toMatch(/^queue_size_bytes\{otel_scope_name="m",otel_scope_version="1.0.0"\} 10$/m);
      expect(text).toMatch(/^request_duration_milliseconds_bucket\{.*le="10"\} 1$/m);
      expect(text).toMatch(/^request_duration_milliseconds_sum\{.*\} 5$/m);
      // Braces are no unit: no suffix, no UNIT line.
      expect(text).toMatch(/^# HELP packets_total description missing\n# TYPE packets_total counter$/m);
      expect(text).toMatch(/^rx_bytes_per_second_total\{/m);
      const exact = await plain.collect();
      expect(new PrometheusTextSerializer().serialize(exact.resourceMetrics)).toBe(official({}).serialize(exact.resourceMetrics));
      await both.shutdown();
    })();
  });

  it('reads Accept-Encoding as HTTP does', () => {
    expect([undefined, '', 'gzip', 'br, gzip;q=0.5', 'gzip;q=0', 'identity', 'x-gzip', 'deflate, GZIP'].map((h) => acceptsGzip(h))).toEqual([false, false, true, true, false, false, true, true]);
  });
});

// ---- Real producer output and real HTTP -----------------------------------------------------

interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function get(port: number, path: string, headers: Record<string, string> = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function promtool(text: string): { status: number | null; output: string } {
  const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 60_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describeKvm('the Prometheus text exporter on real KVM stats', () => {
  let demo: DemoVm | undefined;
  let fleet: VmFleet | undefined;
  let provider: MeterProvider | undefined;

  afterEach(async () => {
    await provider?.shutdown();
    provider = undefined;
    await demo?.stop();
    demo = undefined;
    fleet?.close();
    fleet = undefined;
  });

  /** A MeterProvider with SDK instruments, the demo VM and the fleet through `reader`'s producers. */
  async function setUp(make: (producers: KvmStatsProducer[]) => PrometheusTextExporter, units: 'exact' | 'base' = 'exact', vmSums = true): Promise<PrometheusTextExporter> {
    demo = await DemoVm.start({ vcpus: 2, name: 'prom-demo' });
    fleet = VmFleet.create({ vms: 3, vcpus: 2, namePrefix: 'prom-fleet' });
    const producers = [
      new KvmStatsProducer({ sources: [...demo.sources, ...fleet.sources], reuseDataPoints: true, units }),
      // A second family of the same names (kvm_vm_*) from the VM sums: as a user could set it up.
      ...(vmSums ? [new KvmStatsProducer({ sources: fleet.sources, reuseDataPoints: true, units, vcpuAggregation: 'vm' })] : []),
    ];
    const reader = make(producers);
    provider = new MeterProvider({ resource: resourceFromAttributes({ 'service.name': 'prom-test', 'host.name': 'h"1' }), readers: [reader] });
    const meter = provider.getMeter('app', '1.2.3');
    meter.createCounter('app.requests').add(3, { route: '/a"b' });
    meter.createHistogram('app.latency', { unit: 's' }).record(0.25, { route: '/a' });
    meter.createObservableGauge('app.temperature', { unit: 'Cel' }).addCallback((r) => r.observe(21.5, { room: 'é' }));
    meter.createUpDownCounter('app.queue').add(-2);
    return reader;
  }

  it('writes the official text for a DemoVm and a fleet beside SDK instruments, collection after collection', async () => {
    for (const opts of [{}, { withoutScopeInfo: true, withResourceConstantLabels: /host/ }, { prefix: 'p', appendTimestamp: true }] as PrometheusTextOptions[]) {
      const reader = await setUp((producers) => new PrometheusTextExporter({ preventServerStart: true, metricProducers: producers }));
      const ours = new PrometheusTextSerializer(opts);
      const theirs = official(opts);
      for (let i = 0; i < 3; i++) {
        const { resourceMetrics } = await reader.collect();
        const expected = theirs.serialize(resourceMetrics);
        expect(expected).toMatch(/^(p_)?kvm_vcpu_exits_total\{process_pid="\d+",kvm_vm_name="prom-demo",kvm_vcpu_id="1"/m);
        expect(ours.serialize(resourceMetrics)).toBe(expected);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await provider!.shutdown();
      provider = undefined;
      await demo!.stop();
      demo = undefined;
      fleet!.close();
      fleet = undefined;
    }
  });

  it('serves the text over HTTP, gzipped when asked, one scrape at a time, waiting for the resource', async () => {
    const port = await freePort();
    const reader = await setUp((producers) => new PrometheusTextExporter({ host: '127.0.0.1', port, preventServerStart: true, metricProducers: producers }));
    await reader.startServer();
    await demo!.pause();
    const plain = await get(port, '/metrics');
    expect(plain.status).toBe(200);
    expect(plain.headers['content-type']).toBe(PROMETHEUS_CONTENT_TYPE);
    expect(plain.headers['content-encoding']).toBeUndefined();
    const { resourceMetrics } = await reader.collect();
    // Paused guests: the KVM series are as they were; the SDK's are too (cumulative, unchanged).
    expect(plain.body.toString('utf8')).toBe(official({}).serialize(resourceMetrics));
    const zipped = await get(port, '/metrics', { 'accept-encoding': 'gzip, deflate' });
    expect(zipped.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(zipped.body).toString('utf8')).toBe(plain.body.toString('utf8'));
    // Concurrent scrapes each get a whole body.
    const many = await Promise.all(Array.from({ length: 4 }, (_, i) => get(port, '/metrics', i % 2 ? { 'accept-encoding': 'gzip' } : {})));
    for (const [i, response] of many.entries()) expect((i % 2 ? gunzipSync(response.body) : response.body).toString('utf8')).toBe(plain.body.toString('utf8'));
    expect((await get(port, '/other')).status).toBe(404);
  });

  it('with unit suffixes and base units, promtool accepts the scrape, and finds nothing when no name has an abbreviated unit', async () => {
    const port = await freePort();
    const reader = await setUp(
      (producers) => new PrometheusTextExporter({ host: '127.0.0.1', port, preventServerStart: true, metricProducers: producers, unitSuffixes: true }),
      'base',
      false,
    );
    await reader.startServer();
    const text = (await get(port, '/metrics')).body.toString('utf8');
    // The kernel's `_ns` stays in the name until base-unit names drop it (issue 14).
    expect(text).toMatch(/^kvm_vcpu_halt_wait(_ns)?_seconds_total\{/m);
    // Everything parses; the only complaints are about the kernel's own abbreviations (_ns),
    // which base-unit names drop (issue 14).
    const all = promtool(text);
    expect([0, 3], all.output).toContain(all.status);
    for (const line of all.output.split('\n').filter(Boolean)) expect(line).toMatch(/metric names should not contain abbreviated units$/);
    const flagged = new Set(all.output.split('\n').filter(Boolean).map((line) => line.split(' ')[0]));
    expect(flagged.size === 0).toBe(all.status === 0);
    // The same scrape without those families: clean.
    const families = text.split(/(?=^# HELP )/m).filter((family) => ![...flagged].some((name) => family.startsWith(`# HELP ${name} `)));
    const clean = promtool(families.join(''));
    expect(clean).toEqual({ status: 0, output: '' });
  });
});
