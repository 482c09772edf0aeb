/**
 * Golden tests of the whole pipeline, on every machine (no /dev/kvm needed): the shipped
 * recording (recordings/demo.kvmrec.json.gz, real kernel descriptor tables) replayed through
 * ImageProvider (each fd a memfd read with one pread, as a live stats fd) -> KvmStatsProducer ->
 * every output: the OTLP JSON and protobuf encoders, KvmOtlpMetricExporter over http/json,
 * http/protobuf and gRPC to a real receiver (@elastic/mockotlpserver), PrometheusTextExporter
 * over HTTP (plain and gzip), the agent's console lines; in both unit modes, both temporalities,
 * with and without VM aggregation. The clock is fixed (vitest's fake Date and performance), so
 * the bytes are stable; what comes out is compared with test/golden/expected/, which
 * UPDATE_GOLDEN=1 rewrites when the recording or an encoding changes on purpose.
 */
import { gunzipSync } from 'node:zlib';
import { request as httpRequest } from 'node:http';
import { normalizeMetrics } from '@elastic/mockotlpserver';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType, MeterProvider, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LocalCollector, freePort } from '../../examples/local-collector/collector.js';
import { SHIPPED_RECORDING } from '../../src/setup/demo-fallback.js';
import { exportLines } from '../../src/agent/line-metric-exporter.js';
import { KvmOtlpMetricExporter, type OtlpProtocol } from '../../src/exporters/otlp-exporter.js';
import { OtlpJsonEncoder } from '../../src/exporters/otlp-json.js';
import { OtlpProtobufEncoder } from '../../src/exporters/otlp-protobuf.js';
import { PrometheusTextExporter } from '../../src/exporters/prometheus-exporter.js';
import { PrometheusTextSerializer } from '../../src/exporters/prometheus-text.js';
import type { VcpuAggregation } from '../../src/otel/aggregation.js';
import type { UnitMode } from '../../src/otel/mapping.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { ImageProvider, sourcesOf } from '../../src/sources/provider.js';
import { readRecording } from '../../src/sources/recording.js';
import { HOW_TO_UPDATE, expectGolden, prettyJson, readGolden, sha256 } from './golden.js';

/** The fixed clock: the replay starts here, and each collection is STEP_MS later. */
const T0 = Date.parse('2026-12-02T09:00:00.000Z');
const STEP_MS = 1000;
const RESOURCE = resourceFromAttributes({ 'service.name': 'kvm-stats-otel-golden', 'host.name': 'golden' });

interface Mode {
  readonly name: string;
  readonly units: UnitMode;
  readonly temporality: AggregationTemporality;
  readonly vcpuAggregation: VcpuAggregation;
}

/** Every number as a decimal string: the receiver decodes 64-bit integers (values, counts,
 * times, integer attributes) to strings from protobuf and to numbers or strings from JSON, so
 * requests are compared in one form. Field names still tell an integer from a double. */
function numbersAsStrings(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(numbersAsStrings);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, numbersAsStrings(v)]));
  return typeof value === 'number' ? String(value) : value;
}

const CUMULATIVE = AggregationTemporality.CUMULATIVE;
const DELTA = AggregationTemporality.DELTA;
const OTLP_MODES: readonly Mode[] = [
  { name: 'exact-cumulative', units: 'exact', temporality: CUMULATIVE, vcpuAggregation: 'none' },
  { name: 'exact-delta', units: 'exact', temporality: DELTA, vcpuAggregation: 'none' },
  { name: 'base-cumulative', units: 'base', temporality: CUMULATIVE, vcpuAggregation: 'none' },
  { name: 'base-delta', units: 'base', temporality: DELTA, vcpuAggregation: 'none' },
  { name: 'exact-cumulative-vm', units: 'exact', temporality: CUMULATIVE, vcpuAggregation: 'vm' },
];
/** Prometheus is cumulative only; VM aggregation is covered by OTLP. */
const PROMETHEUS_MODES: readonly Mode[] = OTLP_MODES.filter((mode) => mode.temporality === CUMULATIVE && mode.vcpuAggregation === 'none');

afterEach(() => {
  vi.useRealTimers();
});

/** The clock set to T0 (Date and performance, which the producer's times come from; timers stay
 * real, for the network), the shipped recording opened then, a producer over it in `mode`, and
 * how to move the clock. */
async function pipeline(mode: Mode) {
  vi.useRealTimers();
  vi.useFakeTimers({ now: T0, toFake: ['Date', 'performance'] });
  const provider = new ImageProvider(SHIPPED_RECORDING);
  await provider.refresh();
  const producer = new KvmStatsProducer({
    sources: sourcesOf([provider]),
    units: mode.units,
    temporality: mode.temporality,
    vcpuAggregation: mode.vcpuAggregation,
    resource: RESOURCE,
  });
  return { provider, producer, advance: (ms: number) => vi.advanceTimersByTime(ms) };
}

/** Collections at T0 and T0 + STEP_MS; the second is the golden one (its deltas are one
 * recorded step, its cumulative values one step on). */
async function secondCollection(mode: Mode): Promise<ResourceMetrics> {
  const { provider, producer, advance } = await pipeline(mode);
  try {
    const first = await producer.collect();
    expect(first.errors).toEqual([]);
    advance(STEP_MS);
    const { resourceMetrics, errors } = await producer.collect();
    expect(errors).toEqual([]);
    return resourceMetrics;
  } finally {
    await provider.close();
  }
}

function bytesLine(kind: string, bytes: Uint8Array): string {
  return `${kind} ${bytes.byteLength} bytes sha256 ${sha256(bytes)}\n`;
}

describe('the shipped recording, replayed', () => {
  it('reads back: a VM and its 2 vCPUs, ten snapshots a second apart (npm run record makes it so)', () => {
    const recording = readRecording(SHIPPED_RECORDING);
    expect(recording.snapshotsMs).toHaveLength(10);
    recording.snapshotsMs.slice(1).forEach((ms, k) => expect(ms - recording.snapshotsMs[k]!).toBeGreaterThanOrEqual(900));
    expect(recording.vms).toHaveLength(1);
    expect(recording.vms[0]!.fds.map((fd) => fd.id)).toEqual([expect.stringMatching(/^kvm-\d+$/), expect.stringMatching(/^kvm-\d+\/vcpu-0$/), expect.stringMatching(/^kvm-\d+\/vcpu-1$/)]);
  });

  it('moves at the recorded pace, loops without resets, and carries cumulative values forward (replay-steps.txt)', async () => {
    const { provider, producer, advance } = await pipeline(OTLP_MODES[0]!);
    try {
      const rows = ['time  vcpu0.exits  vcpu0.halt_exits  vcpu0.halt_wait_hist.count  vcpu0.blocking  vm.pages_4k  vm.max_mmu_rmap_size'];
      let previous: Map<string, number> | undefined;
      const starts = new Set<string>();
      // Three loops of nine steps, and one more: every wrap is crossed twice.
      for (let step = 0; step <= 28; step++) {
        const { resourceMetrics, errors } = await producer.collect();
        expect(errors).toEqual([]);
        // Per stat and vCPU (the recording holds one VM): "kvm.vcpu.exits|0", "kvm.vm.pages_4k|vm".
        const values = new Map<string, number>();
        for (const metric of resourceMetrics.scopeMetrics[0]!.metrics) {
          for (const point of metric.dataPoints) {
            const key = `${metric.descriptor.name}|${point.attributes['kvm.vcpu.id'] ?? 'vm'}`;
            if (metric.dataPointType === DataPointType.GAUGE) {
              values.set(key, point.value as number);
              continue;
            }
            starts.add(`${key}@${point.startTime.join('.')}`);
            const value = metric.dataPointType === DataPointType.SUM ? (point.value as number) : (point.value as { count: number }).count;
            values.set(key, value);
            // No fake reset: no counter or histogram count goes down, at a wrap or elsewhere.
            if (previous?.has(key)) expect(value, `${key} at step ${step}`).toBeGreaterThanOrEqual(previous.get(key)!);
          }
        }
        const row = ['kvm.vcpu.exits|0', 'kvm.vcpu.halt_exits|0', 'kvm.vcpu.halt_wait_hist|0', 'kvm.vcpu.blocking|0', 'kvm.vm.pages_4k|vm', 'kvm.vm.max_mmu_rmap_size|vm'].map((key) => values.get(key));
        rows.push([`${step}s`, ...row].join('  '));
        if (previous) expect(values.get('kvm.vcpu.exits|0'), `exits move at step ${step}`).toBeGreaterThan(previous.get('kvm.vcpu.exits|0')!);
        previous = values;
        advance(STEP_MS);
      }
      // Every series kept its start time: nothing was taken for a reset.
      const series = new Set([...starts].map((s) => s.slice(0, s.lastIndexOf('@'))));
      expect(starts.size).toBe(series.size);
      expectGolden('replay-steps.txt', `${rows.join('\n')}\n`);
    } finally {
      await provider.close();
    }
  });
});

describe('OTLP encoders (golden): the second collection, as JSON (reviewable) and the bytes of both encodings', () => {
  for (const mode of OTLP_MODES) {
    it(`${mode.name}: otlp-${mode.name}.json, otlp-${mode.name}.bytes.txt`, async () => {
      const metrics = await secondCollection(mode);
      const json = new OtlpJsonEncoder().encode(metrics);
      const protobuf = new OtlpProtobufEncoder().encode(metrics);
      expectGolden(`otlp-${mode.name}.json`, `${prettyJson(JSON.parse(Buffer.from(json).toString('utf8')))}\n`);
      expectGolden(`otlp-${mode.name}.bytes.txt`, bytesLine('protobuf', protobuf) + bytesLine('json', json));
    });
  }

  it('console lines (exact, cumulative): console-exact-cumulative.txt', async () => {
    const metrics = await secondCollection(OTLP_MODES[0]!);
    expectGolden('console-exact-cumulative.txt', `${exportLines(metrics, new Date(T0 + STEP_MS)).join('\n')}\n`);
  });
});

describe('KvmOtlpMetricExporter to a real OTLP receiver (golden): what it decodes is the golden JSON', () => {
  let collector: LocalCollector | undefined;

  afterEach(async () => {
    await collector?.close();
    collector = undefined;
  });

  function exported(exporter: KvmOtlpMetricExporter, metrics: ResourceMetrics): Promise<void> {
    return new Promise((resolve, reject) =>
      exporter.export(metrics, (result) => (result.code === 0 ? resolve() : reject(result.error ?? new Error(`export failed (${result.code})`)))),
    );
  }

  it('http/protobuf, http/json and gRPC, every mode', async () => {
    collector = await LocalCollector.start(0, { grpc: true });
    const protocols: OtlpProtocol[] = ['http/protobuf', 'http/json', 'grpc'];
    const exporters = protocols.map(
      (protocol) => new KvmOtlpMetricExporter({ protocol, url: protocol === 'grpc' ? collector!.grpcEndpoint : `${collector!.endpoint}/v1/metrics` }),
    );
    try {
      for (const mode of OTLP_MODES) {
        const metrics = await secondCollection(mode);
        // The golden JSON as the receiver normalizes a request (attributes as objects, 64-bit
        // integers as strings): what every protocol must deliver.
        const expected = numbersAsStrings(JSON.parse(JSON.stringify(normalizeMetrics(readGolden(`otlp-${mode.name}.json`)))));
        for (const [i, exporter] of exporters.entries()) {
          const before = collector.requests.length;
          await exported(exporter, metrics);
          const [received] = (await collector.waitForRequests(before + 1, 20_000)).slice(before);
          expect(numbersAsStrings(received), `${protocols[i]} ${mode.name}: the receiver decodes otlp-${mode.name}.json; ${HOW_TO_UPDATE}`).toEqual(expected);
        }
      }
    } finally {
      for (const exporter of exporters) await exporter.shutdown();
    }
  });
});

describe('PrometheusTextExporter (golden): a scrape over HTTP, plain and gzip, equals the serializer\'s text', () => {
  function scrape(port: number, gzip: boolean): Promise<string> {
    return new Promise((resolve, reject) => {
      const request = httpRequest({ host: '127.0.0.1', port, path: '/metrics', headers: gzip ? { 'accept-encoding': 'gzip' } : {} }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve((response.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body).toString('utf8'));
        });
        response.on('error', reject);
      });
      request.on('error', reject);
      request.end();
    });
  }

  for (const mode of PROMETHEUS_MODES) {
    it(`${mode.name}: prometheus-${mode.name}.txt`, async () => {
      const { provider, producer, advance } = await pipeline(mode);
      const port = await freePort();
      const exporter = new PrometheusTextExporter({ host: '127.0.0.1', port, preventServerStart: true, metricProducers: [producer], unitSuffixes: mode.units === 'base' });
      const meterProvider = new MeterProvider({ resource: RESOURCE, readers: [exporter] });
      try {
        await exporter.startServer();
        await scrape(port, false); // the first collection, at T0
        advance(STEP_MS);
        const text = await scrape(port, false);
        expectGolden(`prometheus-${mode.name}.txt`, text);
        // The same scrape again (the clock has not moved): gzip'd, and from the serializer alone.
        expect(await scrape(port, true)).toBe(text);
        const { resourceMetrics } = await producer.collect();
        expect(new PrometheusTextSerializer({ unitSuffixes: mode.units === 'base' }).serialize({ ...resourceMetrics, resource: RESOURCE })).toBe(text);
      } finally {
        await meterProvider.shutdown();
        await provider.close();
      }
    });
  }
});
