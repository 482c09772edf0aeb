/**
 * Names and meanings: in base units a kernel name's unit suffix goes from the metric name (and
 * never at the price of two stats sharing a name), the Prometheus names each mode gives, checked
 * against @opentelemetry/exporter-prometheus's own serializer and promtool, and a one-line
 * meaning for every stat of this machine's kernel.
 */
import { spawnSync } from 'node:child_process';
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type MetricMapping,
  type UnitMode,
  mapStat,
  mapTable,
  metricNames,
  nameWithoutUnit,
  prometheusNames,
  statNames,
  vmAggregateMappings,
} from '../../src/otel/mapping.js';
import { UNDOCUMENTED_STATS, knownStats, statMeaning } from '../../src/otel/meanings.js';
import { prometheusUnit } from '../../src/otel/prometheus-units.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { DemoVm } from '../../src/sources/demo.js';
import type { StatDescriptor, StatsTarget, StatUnit } from '../../src/stats/descriptors.js';
import { describeKvm } from '../helpers/kvm.js';

function stat(partial: Partial<StatDescriptor> & { name: string }): StatDescriptor {
  return { type: 'cumulative', unit: 'none', base: 10, exponent: 0, size: 1, bucketSize: 0, offset: 0, index: 0, ...partial };
}

const ns = (name: string, partial: Partial<StatDescriptor> = {}) => stat({ name, unit: 'seconds', exponent: -9, ...partial });

/** Every name a table's metrics write in Prometheus text, and how often. */
function prometheusSeries(metrics: readonly MetricMapping[], unitSuffix: boolean): string[] {
  return metrics.flatMap((m) => prometheusNames(m, unitSuffix).series);
}

function duplicates(names: readonly string[]): string[] {
  return names.filter((name, i) => names.indexOf(name) !== i);
}

describe('metric names in each unit mode', () => {
  it('base units drop a unit suffix that agrees with the stat\'s unit; exact keeps the kernel\'s name', () => {
    const table = [
      ns('halt_wait_ns'),
      stat({ name: 'window_ms' }), // unit none: not a time, whatever its name says
      stat({ name: 'guest_mem_kib', unit: 'bytes', base: 2, exponent: 10 }),
      stat({ name: 'tsc_cycles', unit: 'cycles' }),
      ns('ns'), // nothing would be left
    ];
    const base = metricNames(table, 'vcpu', 'base');
    expect(table.map((s) => base.get(s))).toEqual(['kvm.vcpu.halt_wait', 'kvm.vcpu.window_ms', 'kvm.vcpu.guest_mem', 'kvm.vcpu.tsc', 'kvm.vcpu.ns']);
    const exact = metricNames(table, 'vm', 'exact');
    expect(table.map((s) => exact.get(s))).toEqual(table.map((s) => `kvm.vm.${s.name}`));
    expect(mapStat(table[0]!, 'vcpu', 'base', table)).toMatchObject({ name: 'kvm.vcpu.halt_wait', unit: 's' });
    expect(mapStat(table[0]!, 'vcpu', 'exact', table)).toMatchObject({ name: 'kvm.vcpu.halt_wait_ns', unit: 'ns' });
    expect(nameWithoutUnit(stat({ name: 'exits' }))).toBeUndefined();
  });

  it('keeps the kernel\'s name where dropping the suffix would give two stats one metric name', () => {
    const table = [stat({ name: 'halt_wait' }), ns('halt_wait_ns'), ns('halt_poll_ns')];
    const names = metricNames(table, 'vcpu', 'base');
    expect(table.map((s) => names.get(s))).toEqual(['kvm.vcpu.halt_wait', 'kvm.vcpu.halt_wait_ns', 'kvm.vcpu.halt_poll']);
  });

  it('keeps it too where only the Prometheus series would collide, and follows a chain of collisions', () => {
    // wait_ns -> wait, unit s -> kvm_vcpu_wait_seconds_total, which the counter wait_seconds already is.
    const prometheus = [stat({ name: 'wait_seconds' }), ns('wait_ns')];
    expect(prometheus.map((s) => metricNames(prometheus, 'vcpu', 'base').get(s))).toEqual(['kvm.vcpu.wait_seconds', 'kvm.vcpu.wait_ns']);
    // a_ns -> a collides with a; kept, a_ns_us -> a_ns then collides with it: both keep their names.
    const chain = [stat({ name: 'a' }), ns('a_ns'), ns('a_ns_us', { exponent: -6 })];
    expect(chain.map((s) => metricNames(chain, 'vm', 'base').get(s))).toEqual(['kvm.vm.a', 'kvm.vm.a_ns', 'kvm.vm.a_ns_us']);
  });

  it('counts the NAME.max a vCPU gauge becomes under VM aggregation among the names', () => {
    // lat_ns -> lat, whose kvm.vcpu.lat.max would be kvm_vcpu_lat_max_seconds, as lat_max_ns -> lat_max is.
    const table = [ns('lat_ns', { type: 'instant' }), ns('lat_max_ns', { type: 'instant' })];
    expect(table.map((s) => metricNames(table, 'vcpu', 'base').get(s))).toEqual(['kvm.vcpu.lat_ns', 'kvm.vcpu.lat_max_ns']);
    // The VM fd has no aggregation: both go.
    expect(table.map((s) => metricNames(table, 'vm', 'base').get(s))).toEqual(['kvm.vm.lat', 'kvm.vm.lat_max']);
  });

  it('a histogram and its companion counter keep distinct names and the sum still comes from the counter', () => {
    const table = [ns('halt_wait_ns'), ns('halt_wait_hist', { type: 'log2-histogram', size: 32 })];
    const { metrics } = mapTable({ nameSize: 48, stats: table, skipped: [], dataSize: 8 * 33 }, 'vcpu', 'base');
    expect(metrics.map((m) => m.name)).toEqual(['kvm.vcpu.halt_wait', 'kvm.vcpu.halt_wait_hist']);
    expect(metrics[1]!.sumFrom).toBe(table[0]);
    expect(prometheusSeries(metrics, true)).toEqual([
      'kvm_vcpu_halt_wait_seconds_total',
      'kvm_vcpu_halt_wait_hist_seconds_bucket',
      'kvm_vcpu_halt_wait_hist_seconds_sum',
      'kvm_vcpu_halt_wait_hist_seconds_count',
    ]);
  });

  it('dropping suffixes never causes a collision that the kernel\'s names did not already have (generated tables)', () => {
    const units: StatUnit[] = ['none', 'seconds', 'bytes', 'cycles', 'boolean'];
    const part = fc.constantFrom('halt', 'wait', 'poll', 'a', 'seconds', 'ns', 'us', 'bytes', 'kib', 'cycles', 'hist', 'total', 'sum', 'count', 'bucket', 'max');
    const spec = fc.record({
      words: fc.array(part, { minLength: 1, maxLength: 3 }),
      unit: fc.constantFrom(...units),
      type: fc.constantFrom('cumulative', 'instant', 'peak', 'log2-histogram') as fc.Arbitrary<StatDescriptor['type']>,
    });
    fc.assert(
      fc.property(fc.uniqueArray(spec, { selector: (s) => s.words.join('_'), minLength: 1, maxLength: 12 }), fc.constantFrom<StatsTarget>('vm', 'vcpu'), (specs, target) => {
        const table = specs.map((s) =>
          stat({ name: s.words.join('_'), unit: s.unit, type: s.type, size: s.type === 'log2-histogram' ? 4 : 1, exponent: s.unit === 'seconds' ? -9 : 0 }),
        );
        const metrics = table.map((s) => mapStat(s, target, 'base', table));
        // Metric names are unique, always.
        expect(duplicates(metrics.map((m) => m.name))).toEqual([]);
        // Every Prometheus collision left is one the kernel's own names make in base units.
        const verbatim = table.map((s) => ({ ...mapStat(s, target, 'base', table), name: `kvm.${target}.${s.name}` }));
        const before = new Set(duplicates(prometheusSeries(verbatim, true)));
        for (const name of duplicates(prometheusSeries(metrics, true))) {
          const owners = metrics.filter((m) => prometheusNames(m, true).series.includes(name));
          expect(owners.every((m) => m.name === `kvm.${target}.${m.stat.name}`), name).toBe(true);
          expect(before.size, name).toBeGreaterThan(0);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('Prometheus names', () => {
  it('exact units: as exporter-prometheus 0.223 writes them, no unit suffix', () => {
    expect(prometheusNames({ name: 'kvm.vcpu.halt_wait_ns', kind: 'sum', unit: 'ns' }, false)).toEqual({
      name: 'kvm_vcpu_halt_wait_ns_total', series: ['kvm_vcpu_halt_wait_ns_total'],
    });
    expect(prometheusNames({ name: 'kvm.vm.pages_4k', kind: 'gauge', unit: '1' }, false).series).toEqual(['kvm_vm_pages_4k']);
    expect(prometheusNames({ name: 'kvm.vcpu.halt_wait_hist', kind: 'histogram', unit: 'ns', sumFrom: ns('halt_wait_ns') }, false).series).toEqual([
      'kvm_vcpu_halt_wait_hist_bucket', 'kvm_vcpu_halt_wait_hist_sum', 'kvm_vcpu_halt_wait_hist_count',
    ]);
    expect(prometheusNames({ name: 'kvm.vcpu.lonely_hist', kind: 'histogram', unit: '1' }, false).series).toEqual([
      'kvm_vcpu_lonely_hist_bucket', 'kvm_vcpu_lonely_hist_count',
    ]);
  });

  it('base units: the unit\'s word before _total, as the specification\'s Prometheus rules say', () => {
    expect(prometheusNames({ name: 'kvm.vcpu.halt_wait', kind: 'sum', unit: 's' }, true).name).toBe('kvm_vcpu_halt_wait_seconds_total');
    expect(prometheusNames({ name: 'kvm.vm.guest_mem', kind: 'gauge', unit: 'By' }, true).name).toBe('kvm_vm_guest_mem_bytes');
    expect(prometheusNames({ name: 'kvm.vcpu.halt_wait_hist', kind: 'histogram', unit: 's' }, true).series[0]).toBe('kvm_vcpu_halt_wait_hist_seconds_bucket');
    // Not added twice, and nothing for counts ({cycle}, {vcpu}, 1).
    expect(prometheusNames({ name: 'kvm.vcpu.wait_seconds', kind: 'sum', unit: 's' }, true).name).toBe('kvm_vcpu_wait_seconds_total');
    expect(prometheusNames({ name: 'kvm.vcpu.tsc', kind: 'sum', unit: '{cycle}' }, true).name).toBe('kvm_vcpu_tsc_total');
    expect(prometheusNames({ name: 'kvm.vcpu.blocking', kind: 'gauge', unit: '{vcpu}' }, true).name).toBe('kvm_vcpu_blocking');
    expect(prometheusNames({ name: 'kvm.vcpu.exits', kind: 'sum', unit: '1' }, true).name).toBe('kvm_vcpu_exits_total');
    expect(prometheusNames({ name: 'kvm.vcpu.x.max', kind: 'gauge', unit: 's' }, true).name).toBe('kvm_vcpu_x_max_seconds');
    expect(['ms', 'us', 'ns', 'KiBy', 'MiBy', 'GiBy', 'kBy', 'MBy', 'GBy', 'By/s'].map(prometheusUnit)).toEqual([
      'milliseconds', 'microseconds', 'nanoseconds', 'kibibytes', 'mebibytes', 'gibibytes', 'kilobytes', 'megabytes', 'gigabytes', 'bytes_per_second',
    ]);
  });

  it('statNames gives both names of a stat per mode', () => {
    const table = [ns('halt_wait_ns'), ns('halt_wait_hist', { type: 'log2-histogram', size: 4 })];
    expect(statNames(table[0]!, 'vcpu', 'base', table)).toEqual({
      otel: 'kvm.vcpu.halt_wait', prometheus: { name: 'kvm_vcpu_halt_wait_seconds_total', series: ['kvm_vcpu_halt_wait_seconds_total'] },
    });
    expect(statNames(table[0]!, 'vcpu', 'exact', table)).toEqual({
      otel: 'kvm.vcpu.halt_wait_ns', prometheus: { name: 'kvm_vcpu_halt_wait_ns_total', series: ['kvm_vcpu_halt_wait_ns_total'] },
    });
    expect(statNames(table[1]!, 'vcpu', 'exact', table).prometheus.series).toContain('kvm_vcpu_halt_wait_hist_sum');
  });
});

describe('meanings', () => {
  /** The stat sets of the kernel's sources: KVM_GENERIC_VM_STATS / KVM_GENERIC_VCPU_STATS
   * (include/linux/kvm_host.h), x86's kvm_vm_stats_desc / kvm_vcpu_stats_desc (arch/x86/kvm/x86.c)
   * and arm64's kvm_vcpu_stats_desc (arch/arm64/kvm/guest.c). */
  const SOURCES: Record<StatsTarget, string[]> = {
    vm: [
      'remote_tlb_flush', 'remote_tlb_flush_requests',
      'mmu_shadow_zapped', 'mmu_pte_write', 'mmu_pde_zapped', 'mmu_flooded', 'mmu_recycled', 'mmu_cache_miss', 'mmu_unsync',
      'pages_4k', 'pages_2m', 'pages_1g', 'nx_lpage_splits', 'max_mmu_rmap_size', 'max_mmu_page_hash_collisions',
    ],
    vcpu: [
      'halt_successful_poll', 'halt_attempted_poll', 'halt_poll_invalid', 'halt_wakeup', 'halt_poll_success_ns', 'halt_poll_fail_ns',
      'halt_wait_ns', 'halt_poll_success_hist', 'halt_poll_fail_hist', 'halt_wait_hist', 'blocking',
      'pf_taken', 'pf_fixed', 'pf_emulate', 'pf_spurious', 'pf_fast', 'pf_mmio_spte_created', 'pf_guest', 'tlb_flush', 'invlpg',
      'exits', 'io_exits', 'mmio_exits', 'signal_exits', 'irq_window_exits', 'nmi_window_exits', 'l1d_flush', 'halt_exits',
      'request_irq_exits', 'irq_exits', 'host_state_reload', 'fpu_reload', 'insn_emulation', 'insn_emulation_fail', 'hypercalls',
      'irq_injections', 'nmi_injections', 'req_event', 'nested_run', 'directed_yield_attempted', 'directed_yield_successful',
      'preemption_reported', 'preemption_other', 'guest_mode', 'notify_window_exits',
      'hvc_exit_stat', 'wfe_exit_stat', 'wfi_exit_stat', 'mmio_exit_user', 'mmio_exit_kernel',
    ],
  };

  it('every stat of the generic, x86 and arm64 sets has one short line, and nothing else is in the table', () => {
    for (const target of ['vm', 'vcpu'] as const) {
      expect([...knownStats(target)].sort()).toEqual([...SOURCES[target]].sort());
      for (const name of SOURCES[target]) {
        const meaning = statMeaning(target, name);
        expect(meaning, `${target}:${name}`).toMatch(/^[A-Z0-9].*\.$/);
        expect(meaning!.length, `${target}:${name}`).toBeLessThanOrEqual(150);
        expect(meaning, `${target}:${name}`).not.toContain('\n');
      }
    }
  });

  it('is keyed by target', () => {
    expect(statMeaning('vcpu', 'exits')).toBeDefined();
    expect(statMeaning('vm', 'exits')).toBeUndefined();
    expect(statMeaning('vm', 'pages_4k')).toBeDefined();
    expect(statMeaning('vcpu', 'pages_4k')).toBeUndefined();
    expect(statMeaning('vcpu', 'toString')).toBeUndefined();
  });

  it('goes into the description after the type and unit words; a stat the table does not know keeps today\'s', () => {
    expect(mapStat(ns('halt_wait_ns'), 'vcpu').description).toBe(
      `KVM vCPU stat halt_wait_ns: cumulative counter, unit seconds, base 10, exponent -9. ${statMeaning('vcpu', 'halt_wait_ns')}`,
    );
    expect(mapStat(ns('halt_wait_ns'), 'vcpu', 'base').description).toBe(
      `KVM vCPU stat halt_wait_ns: cumulative counter, unit seconds, base 10, exponent -9. ${statMeaning('vcpu', 'halt_wait_ns')} Values converted to s (multiplied by 10^-9).`,
    );
    expect(mapStat(stat({ name: 'from_the_future' }), 'vcpu').description).toBe('KVM vCPU stat from_the_future: cumulative counter, no unit, base 10, exponent 0.');
    // Under VM aggregation the meaning stays, with how the vCPUs were summed after it.
    const [summed] = vmAggregateMappings(mapStat(stat({ name: 'exits' }), 'vcpu'));
    expect(summed!.mapping.description).toContain(`${statMeaning('vcpu', 'exits')} Summed over the VM's vCPUs`);
  });
});

describeKvm('names and meanings on this machine\'s kernel (a real VM)', () => {
  let demo: DemoVm;
  beforeAll(async () => {
    demo = await DemoVm.start({ vcpus: 2, name: 'names' });
  });
  afterAll(async () => {
    await demo?.stop();
  });

  const tables = () => demo.sources.slice(0, 2).map((source) => source.file);

  it('every VM and vCPU stat has a meaning, or is one listed as undocumented upstream', () => {
    expect(tables().map((f) => f.target)).toEqual(['vm', 'vcpu']);
    for (const { table, target } of tables()) {
      const missing = table.stats.filter((s) => statMeaning(target, s.name) === undefined && !UNDOCUMENTED_STATS[target].includes(s.name));
      expect(missing.map((s) => `${target}:${s.name}`), 'a stat this kernel has that src/otel/meanings.ts does not explain').toEqual([]);
      for (const s of table.stats) {
        const { description } = mapTable(table, target, 'exact').metrics.find((m) => m.stat === s)!;
        const meaning = statMeaning(target, s.name);
        if (meaning) expect(description).toContain(meaning);
      }
    }
    // The list of undocumented ones names no stat that has a meaning.
    for (const target of ['vm', 'vcpu'] as const) for (const name of UNDOCUMENTED_STATS[target]) expect(statMeaning(target, name)).toBeUndefined();
  });

  it.each(['exact', 'base'] as UnitMode[])('%s units: metric names and Prometheus series are unique per table', (units) => {
    for (const { table, target } of tables()) {
      const { metrics } = mapTable(table, target, units);
      expect(duplicates(metrics.map((m) => m.name))).toEqual([]);
      expect(duplicates(prometheusSeries(metrics, units === 'base'))).toEqual([]);
      for (const m of metrics) {
        const suffix = nameWithoutUnit(m.stat);
        expect(m.name).toBe(`kvm.${target}.${units === 'base' && suffix !== undefined ? suffix : m.stat.name}`);
      }
    }
  });

  it('base units: halt_wait_ns is kvm.vcpu.halt_wait in seconds, and still the sum of halt_wait_hist', async () => {
    const vcpu = tables()[1]!;
    const { metrics } = mapTable(vcpu.table, 'vcpu', 'base');
    const byStat = (name: string) => metrics.find((m) => m.stat.name === name)!;
    expect(byStat('halt_wait_ns')).toMatchObject({ name: 'kvm.vcpu.halt_wait', unit: 's' });
    for (const histogram of metrics.filter((m) => m.kind === 'histogram')) {
      expect(histogram.name).toBe(`kvm.vcpu.${histogram.stat.name}`);
      expect(histogram.sumFrom, histogram.stat.name).toBeDefined();
    }
    expect(byStat('halt_wait_hist').sumFrom!.name).toBe('halt_wait_ns');

    // What the producer exports: the new names, and the histogram's sum equal to its counter.
    await demo.pause();
    const { resourceMetrics } = await new KvmStatsProducer({ sources: demo.sources, units: 'base' }).collect();
    const exported = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics);
    const names = exported.map((m) => m.descriptor.name);
    expect(names).toContain('kvm.vcpu.halt_wait');
    expect(names).not.toContain('kvm.vcpu.halt_wait_ns');
    const counter = exported.find((m) => m.descriptor.name === 'kvm.vcpu.halt_wait')!;
    const histogram = exported.find((m) => m.descriptor.name === 'kvm.vcpu.halt_wait_hist')!;
    for (const point of histogram.dataPoints) {
      const same = counter.dataPoints.find((p) => p.attributes['kvm.vcpu.id'] === point.attributes['kvm.vcpu.id'])!;
      expect((point.value as { sum?: number }).sum).toBe(same.value);
    }
  });

  /** Series names of a Prometheus text body (sample lines only). */
  const seriesIn = (text: string) => new Set(text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).map((line) => /^[^{ ]+/.exec(line)![0]));

  it.each(['exact', 'base'] as UnitMode[])('%s units: prometheusNames without unit suffixes is what exporter-prometheus writes', async (units) => {
    const { resourceMetrics } = await new KvmStatsProducer({ sources: demo.sources, units }).collect();
    const text = new PrometheusSerializer(undefined, false, undefined, true, true).serialize(resourceMetrics);
    const expected = new Set(tables().flatMap(({ table, target }) => prometheusSeries(mapTable(table, target, units).metrics, false)));
    expect(seriesIn(text)).toEqual(expected);
  });

  it('promtool check metrics: base names with unit suffixes pass; exact names are flagged (exit 3)', async () => {
    const promtool = (text: string) => spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    const scrape = async (units: UnitMode) => {
      const { resourceMetrics } = await new KvmStatsProducer({ sources: demo.sources, units }).collect();
      return new PrometheusSerializer(undefined, false, undefined, true, true).serialize(resourceMetrics);
    };
    const exact = promtool(await scrape('exact'));
    expect(exact.status).toBe(3);
    expect(exact.stdout + exact.stderr).toContain('kvm_vcpu_halt_wait_ns_total metric names should not contain abbreviated units');

    // exporter-prometheus 0.223 adds no unit suffix: rename its families as base units name them.
    let text = await scrape('base');
    for (const { table, target } of tables()) {
      for (const metric of mapTable(table, target, 'base').metrics) {
        const [plain, suffixed] = [prometheusNames(metric, false), prometheusNames(metric, true)];
        const renames = [[plain.name, suffixed.name], ...plain.series.map((s, i) => [s, suffixed.series[i]!])];
        for (const [from, to] of renames) text = text.replace(new RegExp(`^(# (?:HELP|UNIT|TYPE) )?${from}(?=[ {])`, 'gm'), `$1${to}`);
      }
    }
    expect(text).toContain('kvm_vcpu_halt_wait_seconds_total{');
    const base = promtool(text);
    expect(base.stdout + base.stderr).toBe('');
    expect(base.status).toBe(0);
  });
});
