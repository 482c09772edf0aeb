/**
 * The mapping from kernel stats to OpenTelemetry metrics: kinds, units for every
 * type/unit/base/exponent combination, names, descriptions, and histogram bounds that put
 * every integer sample into the bucket the kernel counted it in, checked against a real
 * sdk-metrics histogram.
 */
import { AggregationTemporality, AggregationType, DataPointType, type Histogram, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import type { StatBase, StatDescriptor, StatType, StatUnit } from '../../src/stats/descriptors.js';
import { histogramBounds, mapStat, mapTable, metricKind, sumCompanion, unitFor } from '../../src/otel/mapping.js';

function stat(partial: Partial<StatDescriptor> & { name?: string }): StatDescriptor {
  return { name: 'x', type: 'cumulative', unit: 'none', base: 10, exponent: 0, size: 1, bucketSize: 0, offset: 0, index: 0, ...partial };
}

const TYPES: StatType[] = ['cumulative', 'instant', 'peak', 'linear-histogram', 'log2-histogram'];
const UNITS: StatUnit[] = ['none', 'bytes', 'seconds', 'cycles', 'boolean'];
const BASES: StatBase[] = [10, 2];

/** Exponents the kernel allows per unit, the common ones and a few odd ones. */
const EXPONENTS: Record<StatUnit, number[]> = {
  none: [0, 1, 3],
  bytes: [0, 3, 6, 9, 10, 20, 30, 4],
  seconds: [0, -1, -3, -6, -9, -10, -12],
  cycles: [0, 3],
  boolean: [0],
};

/** The unit table: [unit, base, exponent] -> [unit string, scale]. */
function expectedUnit(unit: StatUnit, base: StatBase, exponent: number): [string, number] {
  const exact: Record<string, string> = {
    'seconds/10/-3': 'ms', 'seconds/10/-6': 'us', 'seconds/10/-9': 'ns',
    'bytes/2/10': 'KiBy', 'bytes/2/20': 'MiBy', 'bytes/2/30': 'GiBy',
    'bytes/10/3': 'kBy', 'bytes/10/6': 'MBy', 'bytes/10/9': 'GBy',
  };
  const baseUnit = { none: '1', bytes: 'By', seconds: 's', cycles: '{cycle}', boolean: '1' }[unit];
  if (exponent === 0) return [baseUnit, 1];
  const e = exact[`${unit}/${base}/${exponent}`];
  return e ? [e, 1] : [baseUnit, base ** exponent];
}

const combinations = TYPES.flatMap((type) =>
  UNITS.flatMap((unit) => BASES.flatMap((base) => EXPONENTS[unit].map((exponent) => [type, unit, base, exponent] as const))),
);

describe('mapping every type/unit/base/exponent combination', () => {
  it.each(combinations)('%s %s base %d exponent %d', (type, unit, base, exponent) => {
    const histogram = type.endsWith('histogram');
    const s = stat({ name: 'some_stat', type, unit, base, exponent, size: histogram ? 4 : 1, bucketSize: type === 'linear-histogram' ? 5 : 0 });
    const [expectedUnitString, expectedScale] = expectedUnit(unit, base, exponent);
    for (const target of ['vm', 'vcpu'] as const) {
      const m = mapStat(s, target);
      expect(m.name).toBe(`kvm.${target}.some_stat`);
      expect(m.kind).toBe(histogram ? 'histogram' : type === 'cumulative' && unit !== 'boolean' ? 'sum' : 'gauge');
      expect(m.unit).toBe(expectedUnitString);
      expect(m.scale).toBe(expectedScale);
      expect(m.integer).toBe(Number.isInteger(expectedScale));
      // The description says type, unit, base and exponent in words, and any conversion.
      expect(m.description).toContain(`KVM ${target === 'vm' ? 'VM' : 'vCPU'} stat some_stat: `);
      expect(m.description).toContain(`base ${base}, exponent ${exponent}`);
      expect(m.description.includes('converted')).toBe(expectedScale !== 1);
      if (histogram) {
        expect(m.bounds).toHaveLength(3);
        expect(m.bounds).toEqual(histogramBounds(s).map((b) => (expectedScale < 1 ? b / base ** -exponent : b * expectedScale)));
      } else {
        expect(m.bounds).toBeUndefined();
      }
    }
    // Base units: everything in s, By, {cycle} or 1, with the exponent applied.
    const baseUnits = mapStat(s, 'vcpu', 'base');
    expect(baseUnits.unit).toBe({ none: '1', bytes: 'By', seconds: 's', cycles: '{cycle}', boolean: '1' }[unit]);
    expect(baseUnits.scale).toBe(base ** exponent);
  });

  it('spells the words of each type and unit', () => {
    expect(mapStat(stat({ type: 'log2-histogram', unit: 'seconds', exponent: -9, size: 3 }), 'vcpu').description).toBe(
      'KVM vCPU stat x: log2 histogram, unit seconds, base 10, exponent -9. No sum: the kernel keeps none for this histogram.',
    );
    expect(mapStat(stat({ type: 'linear-histogram', bucketSize: 8, size: 3 }), 'vm').description).toContain('linear histogram (bucket size 8), no unit');
    expect(mapStat(stat({ type: 'peak', unit: 'bytes', base: 2, exponent: 3 }), 'vm').description).toBe(
      'KVM VM stat x: peak value, unit bytes, base 2, exponent 3. Values converted to By (multiplied by 2^3).',
    );
    expect(mapStat(stat({ type: 'instant', unit: 'boolean' }), 'vcpu').description).toContain('instantaneous value, unit boolean (1 set, 0 clear)');
    expect(mapStat(stat({ unit: 'cycles' }), 'vcpu').description).toContain('cumulative counter, unit clock cycles');
  });

  it('keeps kinds as the issue states', () => {
    expect(metricKind(stat({ type: 'cumulative' }))).toBe('sum');
    expect(metricKind(stat({ type: 'instant' }))).toBe('gauge');
    expect(metricKind(stat({ type: 'peak' }))).toBe('gauge');
    expect(metricKind(stat({ type: 'instant', unit: 'boolean' }))).toBe('gauge');
    expect(metricKind(stat({ type: 'log2-histogram' }))).toBe('histogram');
    expect(unitFor(stat({ unit: 'seconds', exponent: -9 }), 'exact')).toEqual({ unit: 'ns', scale: 1 });
  });
});

describe('histogram bounds', () => {
  it('are [0, 1, 3, 7, ...] for log2 and [b-1, 2b-1, ...] for linear', () => {
    const log2 = histogramBounds(stat({ type: 'log2-histogram', size: 32 }));
    expect(log2).toHaveLength(31);
    expect(log2.slice(0, 6)).toEqual([0, 1, 3, 7, 15, 31]);
    expect(log2[30]).toBe(2 ** 30 - 1);
    expect(histogramBounds(stat({ type: 'linear-histogram', size: 5, bucketSize: 10 }))).toEqual([9, 19, 29, 39]);
    expect(histogramBounds(stat({ type: 'linear-histogram', size: 1, bucketSize: 10 }))).toEqual([]);
  });

  /** The kernel's bucket for an integer sample (virt/kvm/binary_stats.c and kvm_host.h). */
  function kernelBucket(s: StatDescriptor, value: number): number {
    if (s.type === 'linear-histogram') return Math.min(Math.floor(value / s.bucketSize), s.size - 1);
    return value === 0 ? 0 : Math.min(Math.floor(Math.log2(value)) + 1, s.size - 1);
  }

  /** The samples at both edges of every bucket, and one past the last bound. */
  function edgeSamples(s: StatDescriptor): number[] {
    const samples: number[] = [];
    for (let i = 0; i < s.size; i++) {
      const [low, high] = s.type === 'linear-histogram'
        ? [i * s.bucketSize, (i + 1) * s.bucketSize - 1]
        : i === 0 ? [0, 0] : [2 ** (i - 1), 2 ** i - 1];
      samples.push(low, high);
    }
    return samples;
  }

  const histograms = [
    stat({ name: 'log2_hist', type: 'log2-histogram', unit: 'seconds', exponent: -9, size: 32 }),
    stat({ name: 'log2_small', type: 'log2-histogram', size: 4 }),
    stat({ name: 'linear_hist', type: 'linear-histogram', size: 16, bucketSize: 8 }),
    stat({ name: 'linear_one', type: 'linear-histogram', size: 6, bucketSize: 1 }),
  ];

  it.each(histograms.map((h) => [h.name, h] as const))('%s: one sample at each bucket edge lands where the kernel put it, in a real sdk-metrics histogram', async (_, s) => {
    const samples = edgeSamples(s);
    const kernelCounts = new Array<number>(s.size).fill(0);
    for (const v of samples) kernelCounts[kernelBucket(s, v)]!++;
    // Every bucket holds exactly two of the edge samples (its lowest and highest integer).
    expect(kernelCounts).toEqual(new Array(s.size).fill(2));

    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
    const bounds = mapStat(s, 'vcpu').bounds!;
    const provider = new MeterProvider({
      readers: [reader],
      views: [{ instrumentName: 'h', aggregation: { type: AggregationType.EXPLICIT_BUCKET_HISTOGRAM, options: { boundaries: [...bounds] } } }],
    });
    const histogram = provider.getMeter('test').createHistogram('h');
    for (const v of samples) histogram.record(v);
    await reader.forceFlush();
    const metric = exporter.getMetrics()[0]!.scopeMetrics[0]!.metrics[0]!;
    expect(metric.dataPointType).toBe(DataPointType.HISTOGRAM);
    expect((metric.dataPoints[0]!.value as Histogram).buckets.counts).toEqual(kernelCounts);
    await provider.shutdown();
  });

  it('would be one bucket off with bounds [1, 2, 4, ...]', () => {
    // The trap the facts file warns of: 2 is in kernel bucket 2 but (1, 2] is OpenTelemetry bucket 1.
    const s = histograms[1]!;
    const naive = [1, 2, 4];
    const otelBucket = (bounds: number[], v: number): number => {
      const i = bounds.findIndex((b) => v <= b);
      return i < 0 ? bounds.length : i;
    };
    expect(otelBucket(naive, 2)).not.toBe(kernelBucket(s, 2));
    expect(otelBucket(histogramBounds(s), 2)).toBe(kernelBucket(s, 2));
  });
});

describe('histogram sums from cumulative companions', () => {
  const table = [
    stat({ name: 'halt_wait_ns', unit: 'seconds', exponent: -9 }),
    stat({ name: 'halt_wait_hist', type: 'log2-histogram', unit: 'seconds', exponent: -9, size: 32 }),
    stat({ name: 'halt_poll_success', unit: 'none' }),
    stat({ name: 'halt_poll_success_ns', unit: 'seconds', exponent: -9 }),
    stat({ name: 'halt_poll_success_hist', type: 'log2-histogram', unit: 'seconds', exponent: -9, size: 32 }),
    stat({ name: 'odd_hist', type: 'log2-histogram', unit: 'seconds', exponent: -9, size: 32 }),
    stat({ name: 'odd_us', unit: 'seconds', exponent: -6 }),
    stat({ name: 'twice_hist', type: 'linear-histogram', bucketSize: 1, size: 4 }),
    stat({ name: 'twice_a' }),
    stat({ name: 'twice_b' }),
  ];

  it('takes the same-named cumulative with the same unit', () => {
    expect(sumCompanion(table[1]!, table)?.name).toBe('halt_wait_ns');
    expect(sumCompanion(table[4]!, table)?.name).toBe('halt_poll_success_ns');
  });

  it('leaves the sum out when the unit differs or the match is ambiguous', () => {
    expect(sumCompanion(table[5]!, table)).toBeUndefined();
    expect(sumCompanion(table[7]!, table)).toBeUndefined();
  });

  it('is worked out once per table', () => {
    const descriptorTable = { nameSize: 48, stats: table, skipped: [], dataSize: 8 };
    const mapping = mapTable(descriptorTable, 'vcpu');
    expect(mapTable(descriptorTable, 'vcpu')).toBe(mapping);
    expect(mapTable(descriptorTable, 'vcpu', 'base')).not.toBe(mapping);
    expect(mapping.metrics.find((m) => m.name === 'kvm.vcpu.halt_wait_hist')?.sumFrom?.name).toBe('halt_wait_ns');
    expect(mapping.metrics.find((m) => m.name === 'kvm.vcpu.halt_wait_hist')?.description).toContain('Sum from halt_wait_ns.');
  });
});
