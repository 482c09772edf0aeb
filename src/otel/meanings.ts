/**
 * What each kernel stat means, one line in an operator's words. The kernel's descriptors carry
 * a name, type and unit but no description; these lines were written from where the kernel
 * counts each stat (virt/kvm/kvm_main.c for the generic sets, arch/x86/kvm and arch/arm64/kvm
 * for the architecture sets) and from Documentation/virt/kvm (halt-polling.rst, api.rst).
 * Keyed by target: the same name may mean something else on the VM fd and on a vCPU fd.
 */
import type { StatsTarget } from '../stats/descriptors.js';

/** Generic VM stats (KVM_GENERIC_VM_STATS) and x86's (kvm_vm_stats_desc). */
const VM: Readonly<Record<string, string>> = {
  // Generic (virt/kvm/kvm_main.c, kvm_flush_remote_tlbs).
  remote_tlb_flush: 'Flushes of the TLBs of all the VM\'s vCPUs that KVM carried out (vCPUs kicked, or an assisted flush done).',
  remote_tlb_flush_requests: 'Requests to flush the TLBs of all the VM\'s vCPUs, counted whether or not any vCPU had to be kicked.',
  // x86 MMU (arch/x86/kvm/mmu).
  mmu_shadow_zapped: 'Shadow page-table pages that KVM\'s MMU tore down (zapped).',
  mmu_pte_write: 'Guest writes to its own page tables that KVM had write-protected and intercepted (shadow paging, nested guests).',
  mmu_pde_zapped: 'Non-leaf shadow entries (page-directory level) dropped because the guest rewrote the entry they mirror.',
  mmu_flooded: 'Shadow pages dropped because the guest wrote to the page table they mirror too often or misaligned (write flooding).',
  mmu_recycled: 'Shadow pages reclaimed because the VM reached its limit of MMU pages.',
  mmu_cache_miss: 'Shadow page lookups that found none to reuse and allocated a new shadow page.',
  mmu_unsync: 'Shadow pages currently out of sync with the guest page table they mirror (the guest may write it untrapped; KVM resyncs later).',
  pages_4k: 'Guest memory mappings in KVM\'s MMU at 4 KiB page size right now.',
  pages_2m: 'Guest memory mappings in KVM\'s MMU at 2 MiB (huge) page size right now.',
  pages_1g: 'Guest memory mappings in KVM\'s MMU at 1 GiB (huge) page size right now.',
  nx_lpage_splits: 'Huge guest mappings currently split into small pages because executable huge pages are disallowed (NX huge page, iTLB multihit mitigation).',
  max_mmu_rmap_size: 'Longest reverse-map chain seen: the most shadow entries mapping one guest page.',
  max_mmu_page_hash_collisions: 'Longest chain walked in the shadow-page hash table when looking up a shadow page.',
};

/** Generic vCPU stats (KVM_GENERIC_VCPU_STATS), x86's (kvm_vcpu_stats_desc) and arm64's. */
const VCPU: Readonly<Record<string, string>> = {
  // Generic halt polling (virt/kvm/kvm_main.c kvm_vcpu_halt; Documentation/virt/kvm/halt-polling.rst).
  halt_successful_poll: 'Halts that ended while KVM polled for a wake-up, so the vCPU never went to sleep.',
  halt_attempted_poll: 'Halts for which KVM polled (busy-waited) for a wake-up before putting the vCPU to sleep.',
  halt_poll_invalid: 'Successful halt polls whose wake-up did not make the vCPU runnable (invalid wake-ups).',
  halt_wakeup: 'Times a sleeping (halted) vCPU was woken up.',
  halt_poll_success_ns: 'Time spent in halt polls that ended with a wake-up (polling that paid off).',
  halt_poll_fail_ns: 'Time spent in halt polls that saw no wake-up, after which the vCPU slept (polling wasted).',
  halt_wait_ns: 'Time the halted vCPU slept waiting for a wake-up, after any polling.',
  halt_poll_success_hist: 'How long successful halt polls took.',
  halt_poll_fail_hist: 'How long failed halt polls took.',
  halt_wait_hist: 'How long a halted vCPU slept before it was woken.',
  blocking: '1 while the vCPU is blocked in the host waiting for a wake-up (the guest halted), else 0.',
  // x86 (arch/x86/kvm/x86.c, mmu/, vmx/, svm/).
  pf_taken: 'Faults on guest memory that KVM\'s MMU handled (EPT/NPT violations, or guest page faults under shadow paging).',
  pf_fixed: 'MMU faults fixed by installing a new mapping of guest memory.',
  pf_emulate: 'MMU faults that needed the faulting instruction emulated (MMIO, or a write to a write-protected page table).',
  pf_spurious: 'MMU faults that needed no change: the mapping was already in place (for example fixed by another vCPU).',
  pf_fast: 'MMU faults fixed on the lock-free fast path (restoring write access or access-tracking bits).',
  pf_mmio_spte_created: 'MMU faults that installed an MMIO marker, so later accesses to that address go straight to MMIO emulation.',
  pf_guest: 'Page faults KVM injected into the guest for the guest\'s own page-fault handler.',
  tlb_flush: 'Flushes of this vCPU\'s TLB that KVM performed.',
  invlpg: 'Guest INVLPG instructions (invalidate one TLB entry) that KVM handled.',
  exits: 'VM exits: times the guest stopped running and KVM took over.',
  io_exits: 'VM exits caused by guest port I/O instructions (IN, OUT).',
  mmio_exits: 'Exits to the VMM (userspace) to complete a guest access to memory-mapped I/O.',
  signal_exits: 'Returns to the VMM because a signal was pending for the vCPU thread.',
  irq_window_exits: 'VM exits when the guest became able to take an interrupt that KVM was waiting to inject (interrupt window).',
  nmi_window_exits: 'VM exits when the guest became able to take a pending NMI (NMI window).',
  l1d_flush: 'L1 data cache flushes before entering the guest (L1TF mitigation).',
  halt_exits: 'VM exits for the guest\'s HLT instruction: the vCPU went idle.',
  request_irq_exits: 'Returns to the VMM because it asked to be told when it can inject an interrupt (interrupt controller in userspace).',
  irq_exits: 'VM exits caused by host (external) interrupts arriving while the guest ran.',
  host_state_reload: 'Times the host\'s CPU state (segment registers, MSRs) was restored after running this vCPU.',
  fpu_reload: 'Times the guest\'s FPU state was saved and the VMM thread\'s restored, at the end of a KVM_RUN.',
  insn_emulation: 'Guest instructions emulated by KVM\'s instruction emulator.',
  insn_emulation_fail: 'Guest instructions KVM\'s emulator could not emulate.',
  hypercalls: 'Hypercalls the guest made to KVM.',
  irq_injections: 'Interrupts injected into the guest.',
  nmi_injections: 'Non-maskable interrupts (NMIs) injected into the guest.',
  req_event: 'Times KVM re-evaluated pending interrupts and exceptions before entering the guest.',
  nested_run: 'Entries into a nested (L2) guest by this vCPU\'s guest hypervisor (VMLAUNCH, VMRESUME, VMRUN).',
  directed_yield_attempted: 'Guest requests (PV sched-yield hypercall) to hand this vCPU\'s time to another vCPU.',
  directed_yield_successful: 'Guest requests to yield to another vCPU that the host scheduler carried out.',
  preemption_reported: 'Times the host descheduled this vCPU and reported it to the guest (steal time\'s preempted flag).',
  preemption_other: 'Times the host descheduled this vCPU when that could not be reported to the guest (not at an instruction boundary).',
  guest_mode: '1 while the vCPU runs a nested (L2) guest, else 0.',
  notify_window_exits: 'VM exits from the notify VM exit: the guest went too long without an event window (guards against a guest stalling the CPU).',
  // arm64 (arch/arm64/kvm/guest.c, handle_exit.c, mmio.c).
  hvc_exit_stat: 'Exits for hypervisor calls (HVC) made by the guest.',
  wfe_exit_stat: 'Exits for the guest\'s WFE instruction (wait for event, often spinning on a lock).',
  wfi_exit_stat: 'Exits for the guest\'s WFI instruction (wait for interrupt): the vCPU went idle.',
  mmio_exit_user: 'Guest MMIO accesses passed to the VMM (userspace) to emulate.',
  mmio_exit_kernel: 'Guest MMIO accesses emulated in the kernel (such as the in-kernel interrupt controller).',
};

const MEANINGS: Readonly<Record<StatsTarget, Readonly<Record<string, string>>>> = { vm: VM, vcpu: VCPU };

/** The vCPU thread's scheduler stats (sources/schedstat.ts; Documentation/scheduler/sched-stats.rst),
 * not the kernel's KVM stats: kept apart from knownStats. */
const SCHEDSTAT: Readonly<Record<string, string>> = {
  'sched.cpu_time': 'Time the vCPU\'s thread spent on a host CPU (guest and host work for it alike).',
  'sched.run_delay': 'Time the vCPU\'s thread was runnable but waited for a host CPU: what the guest sees as steal time.',
  'sched.timeslices': 'Times the vCPU\'s thread was given a host CPU (timeslices run).',
};

/**
 * Stats seen on the project's machines whose meaning no upstream Linux source states: they come
 * from a kernel with local patches. Listed so that the test of "every stat of this kernel has a
 * meaning" still notices a stat nobody has looked at, without a meaning made up for these.
 */
export const UNDOCUMENTED_STATS: Readonly<Record<StatsTarget, readonly string[]>> = {
  vm: ['mmu_kicks_spared'],
  vcpu: ['pf_parked', 'pf_park_timeouts'],
};

/** The stat's meaning in one line, or undefined for a stat the table does not know. */
export function statMeaning(target: StatsTarget, name: string): string | undefined {
  if (target === 'vcpu' && Object.hasOwn(SCHEDSTAT, name)) return SCHEDSTAT[name];
  return Object.hasOwn(MEANINGS[target], name) ? MEANINGS[target][name] : undefined;
}

/** Every stat name the table knows for a target. */
export function knownStats(target: StatsTarget): readonly string[] {
  return Object.keys(MEANINGS[target]);
}
