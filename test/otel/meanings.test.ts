/**
 * What each stat means (src/otel/meanings.ts): one short line for every stat of the kernel's
 * generic, x86 and arm64 sets, keyed by target, in each metric's description; and on this
 * machine's kernel, a meaning for every stat (or one listed as undocumented upstream).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mapStat, mapTable, vmAggregateMappings } from '../../src/otel/mapping.js';
import { UNDOCUMENTED_STATS, knownStats, statMeaning } from '../../src/otel/meanings.js';
import { DemoVm } from '../../src/sources/demo.js';
import type { StatDescriptor, StatsTarget } from '../../src/stats/descriptors.js';
import { describeKvm } from '../helpers/kvm.js';

function stat(partial: Partial<StatDescriptor> & { name: string }): StatDescriptor {
  return { type: 'cumulative', unit: 'none', base: 10, exponent: 0, size: 1, bucketSize: 0, offset: 0, index: 0, ...partial };
}

const ns = (name: string, partial: Partial<StatDescriptor> = {}) => stat({ name, unit: 'seconds', exponent: -9, ...partial });

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

describeKvm('meanings on this machine\'s kernel (a real VM)', () => {
  let demo: DemoVm;
  beforeAll(async () => {
    demo = await DemoVm.start({ vcpus: 2, name: 'meanings' });
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
});
