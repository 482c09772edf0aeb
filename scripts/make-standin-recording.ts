/**
 * Makes recordings/demo.kvmrec.json.gz's SYNTHETIC STAND-IN, for as long as no recording of a
 * real VM has been made (that needs a KVM host: `npm run record` there replaces this file; see
 * docs/recordings.md).
 *
 * What is real: the descriptor tables, stat by stat (name, type, unit, base, exponent, size,
 * bucket size, in the kernel's order), as docs/metrics.md gives them for Linux 6.18.44-fc-v1045
 * on an AMD host (16 VM and 47 vCPU stats), and their data layout: the kernel's offsets are
 * those of its structs, which follow the descriptor order except at the end of the VM's (x86's
 * struct kvm_vm_stat has max_mmu_page_hash_collisions before max_mmu_rmap_size; the two stats
 * this kernel has beyond mainline's, mmu_kicks_spared and pf_parked/pf_park_timeouts, are put
 * last). The header is laid out as virt/kvm/kvm_main.c does: id at 24, descriptors after the
 * 48-byte name, data after the descriptors.
 *
 * What is made up: every value. A 2-vCPU guest that writes to an I/O port in bursts and halts
 * between timer ticks (250 Hz), with an in-kernel interrupt controller, so that every kind of
 * stat moves: counters (exits, insn_emulation, halt_exits), instants and booleans (pages_4k,
 * blocking), peaks, and the halt-poll and halt-wait histograms with their companion sums, and
 * each vCPU thread's scheduler time (schedstat: on a CPU whenever it neither sleeps in a halt
 * nor waits for a host CPU; run delay, the guest's steal, 2 to 6% of the time; a timeslice per
 * wake-up and per preemption), from a generator of its own, so the KVM values are those the
 * stand-in had before it carried scheduler time. Ten
 * snapshots one second apart, from a seeded generator: the output is the same every run. The
 * identity is made up too and says so: VM "synthetic-demo", pid 4242.
 *
 *   node --import tsx scripts/make-standin-recording.ts [--out recordings/demo.kvmrec.json.gz]
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  KVM_STATS_BASE_POW10,
  KVM_STATS_DESC,
  KVM_STATS_HEADER,
  KVM_STATS_TYPE_CUMULATIVE,
  KVM_STATS_TYPE_INSTANT,
  KVM_STATS_TYPE_LOG_HIST,
  KVM_STATS_TYPE_PEAK,
  KVM_STATS_UNIT_BOOLEAN,
  KVM_STATS_UNIT_NONE,
  KVM_STATS_UNIT_SECONDS,
} from '../src/abi/kvm.js';
import { fieldOffset } from '../src/abi/layout.js';
import { type RecordedFd, type Recording, writeRecording } from '../src/sources/recording.js';

export const STANDIN_PATH = new URL('../recordings/demo.kvmrec.json.gz', import.meta.url).pathname;
export const MADE_BY = 'scripts/make-standin-recording.ts';

const NAME_SIZE = 48;
const SNAPSHOTS = 10;
const INTERVAL_MS = 1000;
/** The VM ran this long before the first snapshot. */
const UPTIME_S = 60;
const RECORDED_AT_MS = Date.parse('2026-12-02T08:00:00.000Z');
const HIST_BUCKETS = 32;

type Kind = 'counter' | 'instant' | 'peak' | 'boolean' | 'ns' | 'hist';

interface Stat {
  readonly name: string;
  readonly kind: Kind;
}

const FLAGS: Record<Kind, { flags: number; exponent: number; size: number }> = {
  counter: { flags: KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_UNIT_NONE, exponent: 0, size: 1 },
  instant: { flags: KVM_STATS_TYPE_INSTANT | KVM_STATS_UNIT_NONE, exponent: 0, size: 1 },
  peak: { flags: KVM_STATS_TYPE_PEAK | KVM_STATS_UNIT_NONE, exponent: 0, size: 1 },
  boolean: { flags: KVM_STATS_TYPE_INSTANT | KVM_STATS_UNIT_BOOLEAN, exponent: 0, size: 1 },
  ns: { flags: KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_UNIT_SECONDS, exponent: -9, size: 1 },
  hist: { flags: KVM_STATS_TYPE_LOG_HIST | KVM_STATS_UNIT_SECONDS, exponent: -9, size: HIST_BUCKETS },
};

/** Stats of one kind, in the order given. */
const of = (kind: Kind, ...names: string[]): Stat[] => names.map((name) => ({ name, kind }));

/** docs/metrics.md's VM table, in descriptor order. */
const VM_STATS: Stat[] = [
  ...of('counter', 'remote_tlb_flush', 'remote_tlb_flush_requests', 'mmu_shadow_zapped', 'mmu_pte_write', 'mmu_pde_zapped', 'mmu_flooded', 'mmu_recycled', 'mmu_cache_miss'),
  ...of('instant', 'mmu_unsync', 'pages_4k', 'pages_2m', 'pages_1g', 'nx_lpage_splits'),
  ...of('peak', 'max_mmu_rmap_size', 'max_mmu_page_hash_collisions'),
  ...of('counter', 'mmu_kicks_spared'),
];
/** Where the VM's values sit: struct kvm_vm_stat's order. */
const VM_DATA_ORDER = [...VM_STATS.slice(0, 13).map((s) => s.name), 'max_mmu_page_hash_collisions', 'max_mmu_rmap_size', 'mmu_kicks_spared'];

/** docs/metrics.md's vCPU table, in descriptor order (also struct kvm_vcpu_stat's). */
const VCPU_STATS: Stat[] = [
  ...of('counter', 'halt_successful_poll', 'halt_attempted_poll', 'halt_poll_invalid', 'halt_wakeup'),
  ...of('ns', 'halt_poll_success_ns', 'halt_poll_fail_ns', 'halt_wait_ns'),
  ...of('hist', 'halt_poll_success_hist', 'halt_poll_fail_hist', 'halt_wait_hist'),
  ...of('boolean', 'blocking'),
  ...of(
    'counter',
    'pf_taken', 'pf_fixed', 'pf_emulate', 'pf_spurious', 'pf_fast', 'pf_mmio_spte_created', 'pf_guest', 'tlb_flush', 'invlpg', 'exits', 'io_exits',
    'mmio_exits', 'signal_exits', 'irq_window_exits', 'nmi_window_exits', 'l1d_flush', 'halt_exits', 'request_irq_exits', 'irq_exits',
    'host_state_reload', 'fpu_reload', 'insn_emulation', 'insn_emulation_fail', 'hypercalls', 'irq_injections', 'nmi_injections', 'req_event',
    'nested_run', 'directed_yield_attempted', 'directed_yield_successful', 'preemption_reported', 'preemption_other',
  ),
  ...of('boolean', 'guest_mode'),
  ...of('counter', 'notify_window_exits', 'pf_parked', 'pf_park_timeouts'),
];

/** mulberry32: a small seeded generator, so that every run makes the same recording. */
function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A stats image as the kernel lays it out, the values at `values` (by stat name). */
function image(id: string, stats: readonly Stat[], dataOrder: readonly string[], values: ReadonlyMap<string, readonly number[]>): { image: Buffer; data: (v: ReadonlyMap<string, readonly number[]>) => Buffer } {
  const descSize = KVM_STATS_DESC.size + NAME_SIZE;
  const idOffset = KVM_STATS_HEADER.size;
  const descOffset = idOffset + NAME_SIZE;
  const dataOffset = descOffset + stats.length * descSize;
  const offsets = new Map<string, number>();
  let next = 0;
  for (const name of dataOrder) {
    offsets.set(name, next);
    next += FLAGS[stats.find((s) => s.name === name)!.kind].size * 8;
  }
  const dataSize = next;
  const data = (v: ReadonlyMap<string, readonly number[]>): Buffer => {
    const block = Buffer.alloc(dataSize);
    for (const [name, list] of v) list.forEach((value, i) => block.writeBigUInt64LE(BigInt(value), offsets.get(name)! + i * 8));
    return block;
  };
  const bytes = Buffer.alloc(dataOffset + dataSize);
  bytes.writeUInt32LE(0, fieldOffset(KVM_STATS_HEADER, 'flags'));
  bytes.writeUInt32LE(NAME_SIZE, fieldOffset(KVM_STATS_HEADER, 'name_size'));
  bytes.writeUInt32LE(stats.length, fieldOffset(KVM_STATS_HEADER, 'num_desc'));
  bytes.writeUInt32LE(idOffset, fieldOffset(KVM_STATS_HEADER, 'id_offset'));
  bytes.writeUInt32LE(descOffset, fieldOffset(KVM_STATS_HEADER, 'desc_offset'));
  bytes.writeUInt32LE(dataOffset, fieldOffset(KVM_STATS_HEADER, 'data_offset'));
  bytes.write(id, idOffset, 'latin1');
  stats.forEach((stat, i) => {
    const at = descOffset + i * descSize;
    const { flags, exponent, size } = FLAGS[stat.kind];
    bytes.writeUInt32LE(flags | KVM_STATS_BASE_POW10, at + fieldOffset(KVM_STATS_DESC, 'flags'));
    bytes.writeInt16LE(exponent, at + fieldOffset(KVM_STATS_DESC, 'exponent'));
    bytes.writeUInt16LE(size, at + fieldOffset(KVM_STATS_DESC, 'size'));
    bytes.writeUInt32LE(offsets.get(stat.name)!, at + fieldOffset(KVM_STATS_DESC, 'offset'));
    bytes.writeUInt32LE(0, at + fieldOffset(KVM_STATS_DESC, 'bucket_size'));
    bytes.write(stat.name, at + fieldOffset(KVM_STATS_DESC, 'name'), 'latin1');
  });
  data(values).copy(bytes, dataOffset);
  return { image: bytes, data };
}

/** The log2 bucket of a sample (kernel's rule: 0 -> 0, else floor(log2(v)) + 1, capped). */
function bucketOf(ns: number): number {
  return ns <= 0 ? 0 : Math.min(HIST_BUCKETS - 1, Math.floor(Math.log2(ns)) + 1);
}

/** One vCPU's values over time: per second, timer ticks end halts; bursts of port writes between. */
class GuestVcpu {
  readonly counters = new Map<string, number>();
  readonly hists = new Map<string, number[]>([
    ['halt_poll_success_hist', new Array<number>(HIST_BUCKETS).fill(0)],
    ['halt_poll_fail_hist', new Array<number>(HIST_BUCKETS).fill(0)],
    ['halt_wait_hist', new Array<number>(HIST_BUCKETS).fill(0)],
  ]);
  blocking = 0;
  /** The thread's schedstat: ns on a CPU, ns runnable but waiting (steal), timeslices. */
  cpuTimeNs = 0;
  runDelayNs = 0;
  timeslices = 0;

  constructor(
    private readonly random: () => number,
    /** Draws of the scheduler's values only: the KVM values do not depend on them. */
    private readonly scheduler: () => number,
    /** Port writes per burst: the vCPUs differ a little. */
    private readonly burst: number,
  ) {
    for (const stat of VCPU_STATS) if (stat.kind === 'counter' || stat.kind === 'ns') this.counters.set(stat.name, 0);
    // What the guest's start did once: fault its memory in, emulate its first instructions.
    this.add('pf_taken', 46);
    this.add('pf_fixed', 42);
    this.add('pf_spurious', 4);
    this.add('pf_mmio_spte_created', 2);
    this.add('mmio_exits', 3);
  }

  add(name: string, n: number): void {
    this.counters.set(name, this.counters.get(name)! + Math.round(n));
  }

  sample(hist: string, sum: string, ns: number): void {
    this.hists.get(hist)![bucketOf(ns)]!++;
    this.add(sum, ns);
  }

  /** One second of the guest. */
  second(): void {
    const waitedBefore = this.counters.get('halt_wait_ns')!;
    const wakeupsBefore = this.counters.get('halt_wakeup')! + this.counters.get('preemption_reported')! + this.counters.get('preemption_other')!;
    this.guestSecond();
    // The thread waited 2 to 6% of the second for a host CPU, slept through its halts, and ran
    // the rest; it was put on a CPU at each wake-up and after each preemption.
    const delay = Math.round(20_000_000 + this.scheduler() * 40_000_000);
    const slept = this.counters.get('halt_wait_ns')! - waitedBefore;
    this.runDelayNs += delay;
    this.cpuTimeNs += 1_000_000_000 - slept - delay;
    this.timeslices += this.counters.get('halt_wakeup')! + this.counters.get('preemption_reported')! + this.counters.get('preemption_other')! - wakeupsBefore;
  }

  /** The schedstat text of the vCPU's thread, as /proc gives it (without its newline). */
  schedstat(): string {
    return `${this.cpuTimeNs} ${this.runDelayNs} ${this.timeslices}`;
  }

  /** One second of the guest's KVM values. */
  private guestSecond(): void {
    const r = this.random;
    const ticks = 250;
    for (let t = 0; t < ticks; t++) {
      const writes = this.burst + Math.floor(r() * 16);
      this.add('exits', writes + 1);
      this.add('insn_emulation', writes);
      this.add('host_state_reload', writes);
      this.add('fpu_reload', writes);
      // The HLT: KVM polls for a wake-up first (mostly in vain: the next tick is ms away), then sleeps.
      this.add('halt_exits', 1);
      this.add('halt_attempted_poll', 1);
      if (r() < 0.04) {
        this.add('halt_successful_poll', 1);
        this.sample('halt_poll_success_hist', 'halt_poll_success_ns', 8_000 + Math.floor(r() * 90_000));
      } else {
        this.sample('halt_poll_fail_hist', 'halt_poll_fail_ns', 90_000 + Math.floor(r() * 150_000));
        this.sample('halt_wait_hist', 'halt_wait_ns', 400_000 + Math.floor(r() * 3_500_000));
        this.add('halt_wakeup', 1);
      }
      this.add('irq_injections', 1);
      this.add('req_event', 2);
    }
    this.add('irq_exits', 40 + r() * 30);
    this.add('exits', 40 + r() * 30);
    this.add('irq_window_exits', r() * 4);
    this.add('signal_exits', r() < 0.3 ? 1 : 0);
    this.add('tlb_flush', 1 + r() * 3);
    this.add('preemption_reported', 12 + r() * 20);
    this.add('preemption_other', r() < 0.5 ? 1 : 0);
    this.blocking = r() < 0.6 ? 1 : 0;
  }

  values(): Map<string, number[]> {
    const values = new Map<string, number[]>();
    for (const [name, value] of this.counters) values.set(name, [value]);
    for (const [name, counts] of this.hists) values.set(name, [...counts]);
    values.set('blocking', [this.blocking]);
    values.set('guest_mode', [0]);
    return values;
  }
}

/** The VM's values: a few MMU changes a second, small page counts that come and go. */
class GuestVm {
  readonly counters = new Map<string, number>(VM_STATS.filter((s) => s.kind === 'counter').map((s) => [s.name, 0]));
  readonly gauges = new Map<string, number>([
    ['mmu_unsync', 0],
    ['pages_4k', 0],
    ['pages_2m', 0],
    ['pages_1g', 0],
    ['nx_lpage_splits', 0],
    ['max_mmu_rmap_size', 0],
    ['max_mmu_page_hash_collisions', 0],
  ]);

  constructor(private readonly random: () => number) {
    this.counters.set('mmu_cache_miss', 14);
    this.gauges.set('max_mmu_page_hash_collisions', 1);
  }

  second(): void {
    const r = this.random;
    const add = (name: string, n: number) => this.counters.set(name, this.counters.get(name)! + Math.round(n));
    const requests = 2 + Math.floor(r() * 3);
    add('remote_tlb_flush_requests', requests);
    add('remote_tlb_flush', requests - (r() < 0.5 ? 1 : 0));
    add('mmu_kicks_spared', r() < 0.5 ? 1 : 0);
    this.gauges.set('pages_4k', 14 + Math.floor(r() * 6));
    this.gauges.set('pages_2m', r() < 0.3 ? 1 : 0);
    this.gauges.set('max_mmu_rmap_size', Math.max(this.gauges.get('max_mmu_rmap_size')!, 1 + Math.floor(r() * 3)));
  }

  values(): Map<string, number[]> {
    const values = new Map<string, number[]>();
    for (const [name, value] of [...this.counters, ...this.gauges]) values.set(name, [value]);
    return values;
  }
}

const PID = 4242;

/** The stand-in, made the same way every time. */
export function standinRecording(): Recording {
  const random = generator(0x6b766d);
  const scheduler = generator(0x736368);
  const vm = new GuestVm(random);
  const vcpus = [new GuestVcpu(random, scheduler, 252), new GuestVcpu(random, scheduler, 246)];
  for (let s = 0; s < UPTIME_S; s++) {
    vm.second();
    for (const vcpu of vcpus) vcpu.second();
  }
  const vmImage = image(`kvm-${PID}`, VM_STATS, VM_DATA_ORDER, vm.values());
  const vcpuImages = vcpus.map((vcpu, i) => image(`kvm-${PID + 1 + i}/vcpu-${i}`, VCPU_STATS, VCPU_STATS.map((s) => s.name), vcpu.values()));
  const vmData: Buffer[] = [];
  const vcpuData: Buffer[][] = vcpus.map(() => []);
  const schedstats: string[][] = vcpus.map((vcpu) => [vcpu.schedstat()]);
  for (let k = 1; k < SNAPSHOTS; k++) {
    vm.second();
    vmData.push(vmImage.data(vm.values()));
    vcpus.forEach((vcpu, i) => {
      vcpu.second();
      vcpuData[i]!.push(vcpuImages[i]!.data(vcpu.values()));
      schedstats[i]!.push(vcpu.schedstat());
    });
  }
  const fds: RecordedFd[] = [
    { id: `kvm-${PID}`, image: vmImage.image, data: vmData },
    ...vcpus.map((_, i): RecordedFd => ({ id: `kvm-${PID + 1 + i}/vcpu-${i}`, vcpuIndex: i, image: vcpuImages[i]!.image, data: vcpuData[i]!, schedstat: schedstats[i]! })),
  ];
  return {
    madeBy: MADE_BY,
    synthetic: true,
    note:
      'A synthetic stand-in, not a real VM\'s values: descriptor tables of Linux 6.18.44-fc-v1045 (AMD; docs/metrics.md) with made-up values of a ' +
      '2-vCPU guest doing port I/O and HLT. Replace it with `npm run record` on a KVM host (docs/recordings.md).',
    host: { kernel: '6.18.44-fc-v1045', arch: 'x64', cpu: 'AMD EPYC (nested); synthetic', endianness: 'LE' },
    recordedAtMs: RECORDED_AT_MS,
    snapshotsMs: Array.from({ length: SNAPSHOTS }, (_, k) => k * INTERVAL_MS),
    vms: [{ pid: PID, vmName: 'synthetic-demo', vmUuid: '5e7d1c2a-0b9f-4c3e-8a61-2f4d9b7e1c05', startTimeMs: RECORDED_AT_MS - UPTIME_S * 1000, fds }],
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({ options: { out: { type: 'string', default: STANDIN_PATH } } });
  writeRecording(values.out!, standinRecording());
  process.stdout.write(`wrote ${values.out}\n`);
}
