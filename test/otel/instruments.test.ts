/**
 * The observable instruments (observeKvmStats) on synthetic images, on a real sdk-metrics Meter:
 * counters and gauges with one pread per source per collection, histograms only through the
 * producer. (Selection and scheduler time through them: test/otel/selection.test.ts,
 * test/sources/schedstat.test.ts.)
 */
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { observeKvmStats } from '../../src/otel/instruments.js';
import { closeSources } from '../../src/sources/source.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { KINDS, KindsImage, metricNamed, vcpuPoint } from '../helpers/vcpu-images.js';

const cleanup = cleanupAfterEach();

describe('observable instruments on any Meter', () => {
  it('observes counters and gauges with one pread per source per collection; histograms only through the producer', async () => {
    const vcpus = [new KindsImage('kvm-99/vcpu-0', KINDS), new KindsImage('kvm-99/vcpu-1', { ...KINDS, exits: 7 })];
    cleanup.push(() => closeSources(vcpus.map((v) => v.source)));
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
    const provider = new MeterProvider({ readers: [reader] });
    cleanup.push(() => provider.shutdown());
    let reads = 0;
    for (const v of vcpus) {
      const read = v.source.file.read.bind(v.source.file);
      v.source.file.read = () => {
        reads++;
        return read();
      };
    }
    const instruments = observeKvmStats(provider.getMeter('app'), { sources: vcpus.map((v) => v.source) });
    expect(instruments.instrumentNames.sort()).toEqual(['kvm.vcpu.exits', 'kvm.vcpu.guest_mode', 'kvm.vcpu.halt_wait_ns', 'kvm.vcpu.max_run', 'kvm.vcpu.pages']);
    await reader.forceFlush();
    expect(reads).toBe(2);
    const rm = exporter.getMetrics()[0]!;
    expect(rm.scopeMetrics[0]!.scope.name).toBe('app');
    expect(vcpuPoint(rm, 'kvm.vcpu.exits', 0).value).toBe(100);
    expect(vcpuPoint(rm, 'kvm.vcpu.exits', 1).value).toBe(7);
    expect(metricNamed(rm, 'kvm.vcpu.exits').dataPointType).toBe(DataPointType.SUM);
    expect(metricNamed(rm, 'kvm.vcpu.pages').descriptor.unit).toBe('KiBy');
    expect(metricNamed(rm, 'kvm.vcpu.max_run').dataPointType).toBe(DataPointType.GAUGE);
    expect(() => metricNamed(rm, 'kvm.vcpu.halt_wait_hist')).toThrow();
    vcpus[0]!.set({ ...KINDS, exits: 180 });
    await reader.forceFlush();
    expect(reads).toBe(4);
    expect(vcpuPoint(exporter.getMetrics()[1]!, 'kvm.vcpu.exits', 0).value).toBe(180);
    instruments.close();
    await reader.forceFlush();
    expect(reads).toBe(4);
  });
});
