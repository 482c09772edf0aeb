/**
 * Real output to encode: a DemoVm's stats through KvmStatsProducer (data points reused or not)
 * and a small VmFleet, mixed by a real MeterProvider's reader with ordinary SDK instruments of
 * every kind (counter, up-down counter, gauge, histogram, exponential histogram, observable
 * gauge), over collections where values move and series come and go.
 */
import { ValueType } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  AggregationType,
  MeterProvider,
  MetricReader,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { DemoVm } from '../../src/sources/demo.js';
import { VmFleet } from '../../src/bench/fleet.js';
import type { StatsSource } from '../../src/sources/source.js';

class CollectingReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

export interface MixedSetup {
  readonly reader: CollectingReader;
  readonly record: (collection: number) => void;
  close(): Promise<void>;
}

/** reuseDataPoints true: cumulative everywhere; false: delta for the producer and the reader. */
export async function mixedSetup(reuseDataPoints: boolean): Promise<MixedSetup> {
  const demo = await DemoVm.start({ vcpus: 2, name: `encode-${reuseDataPoints}` });
  const fleet = VmFleet.create({ vms: 2, vcpus: 1, namePrefix: `encode-fleet-${reuseDataPoints}` });
  let collection = 0;
  // Every third collection the demo's last vCPU is missing: its series go, then come back.
  const sources = (): StatsSource[] => [...(collection % 3 === 2 ? demo.sources.slice(0, -1) : demo.sources), ...fleet.sources];
  const temporality = reuseDataPoints ? AggregationTemporality.CUMULATIVE : AggregationTemporality.DELTA;
  const producer = new KvmStatsProducer({ sources, reuseDataPoints, temporality });
  const reader = new CollectingReader({ metricProducers: [producer], aggregationTemporalitySelector: () => temporality });
  const provider = new MeterProvider({
    resource: resourceFromAttributes({ 'service.name': 'encode-test', 'host.id': 42, 'deployment.ids': ['a', 'b'], ratio: 0.5, on: true }),
    readers: [reader],
    views: [{ instrumentName: 'app.latency.exp', aggregation: { type: AggregationType.EXPONENTIAL_HISTOGRAM } }],
  });
  const meter = provider.getMeter('app', '1.2.3');
  const other = provider.getMeter('empty-scope');
  void other;
  const counter = meter.createCounter('app.requests', { unit: '{request}', valueType: ValueType.INT });
  const upDown = meter.createUpDownCounter('app.queue', { description: 'queued' });
  const gauge = meter.createGauge('app.temperature', { unit: 'Cel' });
  const histogram = meter.createHistogram('app.latency', { unit: 'ms', advice: { explicitBucketBoundaries: [1, 10, 100] } });
  const noMinMax = meter.createHistogram('app.size', { unit: 'By', valueType: ValueType.INT });
  const exponential = meter.createHistogram('app.latency.exp', { unit: 's' });
  meter.createObservableGauge('app.load', { description: 'load' }).addCallback((result) => {
    result.observe(collection / 3, { cpu: 0 });
    if (collection % 2 === 0) result.observe(collection, { cpu: 1 });
  });
  const record = (n: number): void => {
    collection = n;
    counter.add(n + 1, { route: '/a' });
    if (n >= 2) counter.add(3, { route: `/b${n % 3}`, ok: n % 2 === 0 });
    upDown.add(n % 2 === 0 ? 2.5 : -1, { tags: ['x', 'y'] });
    gauge.record(20 + n / 10);
    histogram.record(n * 7.5, { route: '/a' });
    histogram.record(0.5, {});
    noMinMax.record(n * 1000);
    exponential.record(0.001 * (n + 1), { route: '/a' });
    exponential.record(-(n + 1));
  };
  return {
    reader,
    record,
    async close() {
      await provider.shutdown();
      fleet.close();
      await demo.stop();
    },
  };
}

/** Records collection `n`'s values, waits for the guests to move, and collects. */
export async function collectMixed(setup: MixedSetup, n: number): Promise<ResourceMetrics> {
  setup.record(n);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const { resourceMetrics, errors } = await setup.reader.collect();
  if (errors.length > 0) throw new Error(`collection ${n} failed: ${String(errors[0])}`);
  return resourceMetrics;
}
