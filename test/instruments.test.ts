/**
 * The observable instruments select stats as the producer does: include and exclude patterns,
 * into a real sdk-metrics MeterProvider.
 */
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it } from 'vitest';
import { type KvmStatsInstrumentsOptions, observeKvmStats } from '../src/otel/instruments.js';
import { KvmStatsProducer } from '../src/otel/producer.js';
import { closeSources } from '../src/sources/source.js';
import { VCPU, imageVcpu, imageVm, pointOf } from './helpers/vcpu-images.js';

let cleanup: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup = [];
});

function names(rm: ResourceMetrics): string[] {
  return rm.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.descriptor.name)).sort();
}

/** One collection of the instruments made with `options`, through a real reader. */
async function observe(options: KvmStatsInstrumentsOptions): Promise<{ instrumentNames: string[]; rm: ResourceMetrics }> {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const provider = new MeterProvider({ readers: [reader] });
  cleanup.push(() => provider.shutdown());
  const instruments = observeKvmStats(provider.getMeter('app'), options);
  await reader.forceFlush();
  return { instrumentNames: instruments.instrumentNames.sort(), rm: exporter.getMetrics()[0]! };
}

describe('observable instruments with include and exclude', () => {
  it('observe the selected stats only, the same counters and gauges as the producer exports', async () => {
    const vm = imageVm('web');
    const vcpu = imageVcpu('web', 0, { ...VCPU, exits: 123, load: 8 });
    cleanup.push(() => closeSources([vm.source, vcpu.source]));
    const sources = [vm.source, vcpu.source];

    const all = await observe({ sources });
    expect(all.instrumentNames).toEqual(['kvm.vcpu.blocking', 'kvm.vcpu.exits', 'kvm.vcpu.halt_wait_ns', 'kvm.vcpu.load', 'kvm.vcpu.max_peak', 'kvm.vm.remote_tlb_flush']);

    const selection = { include: ['vcpu:exits', 'vcpu:load', 'vcpu:halt_*'], exclude: ['vcpu:*_ns', 'vm:remote_*'] };
    const selected = await observe({ sources, ...selection });
    expect(selected.instrumentNames).toEqual(['kvm.vcpu.exits', 'kvm.vcpu.load']);
    expect(names(selected.rm)).toEqual(['kvm.vcpu.exits', 'kvm.vcpu.load']);
    expect(pointOf(selected.rm, 'kvm.vcpu.exits', { 'kvm.vcpu.id': 0 }).value).toBe(123);
    expect(pointOf(selected.rm, 'kvm.vcpu.load', { 'kvm.vcpu.id': 0 }).value).toBe(8);

    // The producer with the same patterns: the same metrics, and the histogram it alone can export.
    const produced = await new KvmStatsProducer({ sources, ...selection }).collect();
    expect(names(produced.resourceMetrics)).toEqual(['kvm.vcpu.exits', 'kvm.vcpu.halt_wait_hist', 'kvm.vcpu.load']);

    // Exclude alone keeps every other stat.
    const excluded = await observe({ sources, exclude: ['vcpu:exits'] });
    expect(names(excluded.rm)).toEqual(all.instrumentNames.filter((name) => name !== 'kvm.vcpu.exits'));
  });

  it('make no instrument for an excluded stat of a source that joins later', async () => {
    const first = imageVcpu('web', 0);
    const later = imageVm('db', 78);
    cleanup.push(() => closeSources([first.source, later.source]));
    const sources = [first.source];
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
    const provider = new MeterProvider({ readers: [reader] });
    cleanup.push(() => provider.shutdown());
    const instruments = observeKvmStats(provider.getMeter('app'), { sources: () => sources, include: ['vcpu:exits'], exclude: ['vm:*'] });
    await reader.forceFlush();
    sources.push(later.source);
    await reader.forceFlush();
    await reader.forceFlush();
    expect(instruments.instrumentNames).toEqual(['kvm.vcpu.exits']);
    expect(names(exporter.getMetrics().at(-1)!)).toEqual(['kvm.vcpu.exits']);
  });

  it('reject a malformed pattern as the producer does', () => {
    const meter = new MeterProvider().getMeter('app');
    expect(() => observeKvmStats(meter, { sources: [], include: ['exits'] })).toThrow(RangeError);
    expect(() => observeKvmStats(meter, { sources: [], exclude: ['kvm.vcpu.exits'] })).toThrow(/^exclude pattern "kvm.vcpu.exits" is not TARGET:STAT/);
  });
});
