/**
 * Stat selection: TARGET:STAT include and exclude patterns, in the producer (images and real
 * KVM), in the observable instruments (real sdk-metrics) and as the agent's flags; a pattern
 * that matches nothing is reported once.
 */
import { type DiagLogger, DiagLogLevel, diag } from '@opentelemetry/api';
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { type KvmStatsInstrumentsOptions, observeKvmStats } from '../../src/otel/instruments.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { StatSelection, globMatches } from '../../src/otel/selection.js';
import fc from 'fast-check';
import { DemoVm } from '../../src/sources/demo.js';
import { closeSources } from '../../src/sources/source.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { describeKvm } from '../helpers/kvm.js';
import { VCPU, content, imageVcpu, imageVm, pointOf, pointsOf } from '../helpers/vcpu-images.js';

const cleanup = cleanupAfterEach();

function names(rm: ResourceMetrics): string[] {
  return rm.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.descriptor.name)).sort();
}

/** diag warnings while `run` runs. */
async function warningsOf(run: () => Promise<void>): Promise<string[]> {
  const warnings: string[] = [];
  const logger: DiagLogger = { warn: (...args: unknown[]) => void warnings.push(args.join(' ')), error() {}, info() {}, debug() {}, verbose() {} };
  diag.setLogger(logger, DiagLogLevel.WARN);
  try {
    await run();
  } finally {
    diag.disable();
  }
  return warnings;
}

describe('StatSelection', () => {
  it('exports every stat by default; include selects per target; exclude comes after include', () => {
    expect(new StatSelection().everything).toBe(true);
    expect(new StatSelection().selects('vcpu', 'halt_wait_hist')).toBe(true);
    const selection = new StatSelection({ include: ['vcpu:exits', 'vcpu:halt_*'], exclude: ['vcpu:*_hist', 'vm:pages_?k'] });
    expect(selection.everything).toBe(false);
    const vcpu = ['exits', 'io_exits', 'halt_exits', 'halt_wait_ns', 'halt_wait_hist', 'blocking'].filter((name) => selection.selects('vcpu', name));
    expect(vcpu).toEqual(['exits', 'halt_exits', 'halt_wait_ns']);
    // A target without include patterns keeps every stat but the excluded ones; ? is one character.
    const vm = ['pages_4k', 'pages_2m', 'pages_1g', 'pages_16k', 'mmu_unsync'].filter((name) => selection.selects('vm', name));
    expect(vm).toEqual(['pages_2m', 'pages_1g', 'pages_16k', 'mmu_unsync']);
    expect([selection.include, selection.exclude]).toEqual([['vcpu:exits', 'vcpu:halt_*'], ['vcpu:*_hist', 'vm:pages_?k']]);
    expect(new StatSelection({ exclude: ['vm:*'] }).selects('vm', 'anything')).toBe(false);
  });

  it('rejects a malformed pattern with one line that says what a pattern is', () => {
    const expected = 'is not TARGET:STAT: TARGET is vm or vcpu, STAT the kernel\'s stat name with * and ? (e.g. vcpu:halt_*; kvm-stats-otel schema lists the stats)';
    expect(() => new StatSelection({ include: ['exits'] })).toThrow(`include pattern "exits" ${expected}`);
    expect(() => new StatSelection({ exclude: ['host:exits'] })).toThrow(`exclude pattern "host:exits" ${expected}`);
    expect(() => new StatSelection({ include: ['vcpu:'] })).toThrow(RangeError);
    expect(() => new StatSelection({ include: ['vcpu:halt[0-9]'] })).toThrow(RangeError);
    expect(() => new StatSelection({ include: ['kvm.vcpu.exits'] })).toThrow(
      'include pattern "kvm.vcpu.exits" is not TARGET:STAT (write vcpu:exits: patterns name the kernel\'s stat, not the metric)',
    );
    expect(() => new KvmStatsProducer({ sources: [], exclude: ['*'] })).toThrow(/^exclude pattern "\*" is not TARGET:STAT/);
  });
});

describe('glob matching', () => {
  // The reference: the regular expression the glob means (slow on some patterns, exact on all).
  const reference = (glob: string, name: string) => new RegExp(`^${glob.replace(/\*+/g, '.*').replace(/\?/g, '.')}$`).test(name);

  it('agrees with the regular expression a glob means, on every pattern and name', () => {
    const glob = fc.stringMatching(/^[ab_*?]{0,12}$/);
    const name = fc.stringMatching(/^[ab_]{0,16}$/);
    fc.assert(fc.property(glob, name, (g, n) => globMatches(g, n) === reference(g, n)), { numRuns: 20_000 });
  });

  it('matches pathological patterns in bounded work: stars that made a regular expression spin', () => {
    const name = 'halt_poll_success_hist_and_some_more_letters_a';
    const started = process.hrtime.bigint();
    // 12 stars made the agent spin at 194% CPU; 40 alternating stars and letters is worse for a backtracker.
    const cases: [string, boolean][] = [
      [`vcpu:${'*'.repeat(12)}x`, true], // ends in x
      [`vcpu:${'*a'.repeat(40)}x`, false], // the name has 3 a's, not 40
      [`vcpu:${'*?'.repeat(20)}x`, true], // 47 characters, at least 21 needed
      [`vcpu:${'*?'.repeat(60)}x`, false], // at least 61 needed
    ];
    for (const [pattern, matchesWithX] of cases) {
      const selection = new StatSelection({ include: [pattern] });
      expect(selection.selects('vcpu', name)).toBe(false);
      expect(selection.selects('vcpu', `${name}x`)).toBe(matchesWithX);
    }
    // Generous: well under a millisecond each here; a backtracker takes seconds to hours.
    expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(500);
  });

  it('refuses a pattern longer than any stat name could need, in one line', () => {
    expect(() => new StatSelection({ include: [`vcpu:${'*'.repeat(300)}`] })).toThrow(/^include pattern of 305 characters is longer than 256/);
  });
});

describe('selection in the producer (images)', () => {
  it('exports exactly the selected stats, a histogram keeping its sum when the companion is excluded', async () => {
    const vm = imageVm('web');
    const vcpu = imageVcpu('web', 0);
    cleanup.push(() => closeSources([vm.source, vcpu.source]));
    const sources = [vm.source, vcpu.source];
    const all = names((await new KvmStatsProducer({ sources }).collect()).resourceMetrics);
    expect(all).toEqual(['kvm.vcpu.blocking', 'kvm.vcpu.exits', 'kvm.vcpu.halt_wait_hist', 'kvm.vcpu.halt_wait_ns', 'kvm.vcpu.load', 'kvm.vcpu.max_peak', 'kvm.vm.remote_tlb_flush']);
    for (const reuseDataPoints of [false, true]) {
      const producer = new KvmStatsProducer({ sources, include: ['vcpu:exits', 'vcpu:halt_*'], exclude: ['vcpu:*_ns'], reuseDataPoints });
      const { resourceMetrics } = await producer.collect();
      expect(names(resourceMetrics)).toEqual(['kvm.vcpu.exits', 'kvm.vcpu.halt_wait_hist', 'kvm.vm.remote_tlb_flush']);
      expect(pointsOf(resourceMetrics, 'kvm.vcpu.halt_wait_hist')[0]!.value).toEqual({ buckets: { boundaries: [0, 1, 3], counts: [1, 2, 0, 3] }, count: 6, sum: 50 });
    }
    const noVm = await new KvmStatsProducer({ sources, exclude: ['vm:*', 'vcpu:load', 'vcpu:max_peak'], vcpuAggregation: 'vm' }).collect();
    expect(names(noVm.resourceMetrics)).toEqual(['kvm.vcpu.blocking', 'kvm.vcpu.exits', 'kvm.vcpu.halt_wait_hist', 'kvm.vcpu.halt_wait_ns']);
  });

  it('does not decode an excluded stat at all: a value above 2^53 in it goes unnoticed', async () => {
    const vcpu = imageVcpu('web', 0, { ...VCPU, load: 2 ** 53 + 2 });
    cleanup.push(() => closeSources([vcpu.source]));
    for (const vcpuAggregation of ['none', 'vm'] as const) {
      const excluded = new KvmStatsProducer({ sources: [vcpu.source], exclude: ['vcpu:load'], vcpuAggregation });
      const included = new KvmStatsProducer({ sources: [vcpu.source], vcpuAggregation });
      const warnings = await warningsOf(async () => {
        await excluded.collect();
        await included.collect();
      });
      expect([excluded.inexactValues, included.inexactValues]).toEqual([0, 1]);
      expect(warnings.filter((w) => w.includes('above 2^53'))).toHaveLength(1);
    }
  });

  it('reports a pattern that matches no stat of a table once, however many producers and collections', async () => {
    // A table of its own: reports are kept per descriptor table.
    const vcpu = imageVcpu('web', 0, { ...VCPU, exits: 5 }, 91);
    const vm = imageVm('web', 91);
    cleanup.push(() => closeSources([vm.source, vcpu.source]));
    const options = { sources: [vm.source, vcpu.source], include: ['vcpu:exitz', 'vcpu:exits', 'vm:*'], exclude: ['vcpu:*_hizt', 'vm:nothing_*'] };
    const warnings = await warningsOf(async () => {
      for (const producer of [new KvmStatsProducer(options), new KvmStatsProducer({ ...options, vcpuAggregation: 'vm' })]) {
        for (let i = 0; i < 3; i++) expect((await producer.collect()).errors).toEqual([]);
      }
    });
    expect(warnings.sort()).toEqual([
      'kvm-stats-otel KVM stat exclude pattern vcpu:*_hizt matches none of the 6 vCPU stats of this kernel, so it excludes nothing: check the name (kvm-stats-otel schema lists them)',
      'kvm-stats-otel KVM stat exclude pattern vm:nothing_* matches none of the 1 VM stats of this kernel, so it excludes nothing: check the name (kvm-stats-otel schema lists them)',
      'kvm-stats-otel KVM stat include pattern vcpu:exitz matches none of the 6 vCPU stats of this kernel, so it selects nothing: check the name (kvm-stats-otel schema lists them)',
    ]);
  });
});

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

describeKvm('selection on the demo VM (real KVM)', () => {
  it('removes exactly the chosen stats and leaves the others\' values as they are', async () => {
    const demo = await DemoVm.start({ vcpus: 2, name: 'selected' });
    cleanup.push(() => demo.stop());
    const [vmTable, vcpuTable] = [demo.sources[0]!.file.table, demo.sources[1]!.file.table];
    const chosen = { vm: ['pages_4k', 'pages_2m', 'pages_1g'], vcpu: vcpuTable.stats.filter((s) => s.name.endsWith('_hist') || s.name === 'exits').map((s) => s.name) };
    expect(chosen.vcpu).toHaveLength(4);
    await demo.pause();
    try {
      for (const reuseDataPoints of [false, true]) {
        const all = await new KvmStatsProducer({ sources: demo.sources, reuseDataPoints }).collect();
        const selected = await new KvmStatsProducer({ sources: demo.sources, exclude: ['vm:pages_*', 'vcpu:*_hist', 'vcpu:exits'], reuseDataPoints }).collect();
        const expected = [
          ...vmTable.stats.filter((s) => !chosen.vm.includes(s.name)).map((s) => `kvm.vm.${s.name}`),
          ...vcpuTable.stats.filter((s) => !chosen.vcpu.includes(s.name)).map((s) => `kvm.vcpu.${s.name}`),
        ].sort();
        expect(names(selected.resourceMetrics)).toEqual(expected);
        expect(names(all.resourceMetrics)).toHaveLength(vmTable.stats.length + vcpuTable.stats.length);
        const kept = content(all.resourceMetrics).filter((m) => expected.includes(m.descriptor.name));
        expect(content(selected.resourceMetrics)).toEqual(kept);
      }
      // include: only those of their target.
      const only = await new KvmStatsProducer({ sources: demo.sources, include: ['vcpu:exits', 'vcpu:halt_exits'] }).collect();
      expect(names(only.resourceMetrics)).toEqual(['kvm.vcpu.exits', 'kvm.vcpu.halt_exits', ...vmTable.stats.map((s) => `kvm.vm.${s.name}`)].sort());
    } finally {
      demo.resume();
    }
  });
});
