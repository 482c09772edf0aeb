/**
 * What an operator's live view (`top`) shows, worked out from two collections of a cumulative
 * KvmStatsProducer (exact units): per VM one row (vCPUs, exits/s, halt exits/s, run delay, and
 * the interval's p50/p99 of the halt-wait and halt-poll histograms), and a VM opened to its
 * vCPUs and their counters (total, share of the VM's total, rate), kvm_stat-like. Rates and
 * percentiles come from the differences between the two collections: for a histogram, the
 * bucket counts' differences, whose bounds are the exact integer ranges the kernel counts in.
 * Nothing here renders: the CLI lays it out.
 */
import type { Attributes } from '@opentelemetry/api';
import { type DataPoint, DataPointType, type Histogram, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { StatsTarget } from '../stats/descriptors.js';
import { ATTR_KVM_VCPU_ID, ATTR_KVM_VM_NAME, ATTR_PROCESS_PID, METRIC_PREFIX } from '../otel/semconv.js';

/** Where a percentile falls: the bucket's exact range, in the histogram's unit (ns here), both
 * ends inclusive; `upper` is Infinity for the last, open bucket. */
export interface BucketRange {
  readonly lower: number;
  readonly upper: number;
}

/**
 * The bucket that holds quantile `q` (0 < q <= 1) of the samples counted in `counts`, with
 * upper-inclusive explicit bounds (OpenTelemetry's): bucket 0 holds values <= bounds[0], bucket
 * i values in (bounds[i-1], bounds[i]], the last those above the last bound. For the kernel's
 * integer samples, bucket i > 0 is [bounds[i-1] + 1, bounds[i]] exactly. Undefined with no
 * samples.
 */
export function quantileBucket(bounds: readonly number[], counts: readonly number[], q: number): BucketRange | undefined {
  let total = 0;
  for (const count of counts) total += count;
  if (total <= 0) return undefined;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i]!;
    if (seen >= rank) {
      return { lower: i === 0 ? Math.min(0, bounds[0] ?? 0) : bounds[i - 1]! + 1, upper: i < bounds.length ? bounds[i]! : Infinity };
    }
  }
  return undefined;
}

/** p50 and p99 of one interval's samples. */
export interface Percentiles {
  readonly samples: number;
  readonly p50: BucketRange | undefined;
  readonly p99: BucketRange | undefined;
}

/** One counter of a VM or vCPU over the interval. */
export interface CounterRow {
  /** A VM-level stat, or a vCPU's (summed over the VM's vCPUs in the VM's counters). */
  readonly target: StatsTarget;
  /** The stat's name (the metric name without kvm.vcpu. / kvm.vm.). */
  readonly stat: string;
  readonly unit: string;
  /** The cumulative value at the second collection. */
  readonly total: number;
  /** Its change per second over the interval; undefined before a second collection. */
  readonly perSecond: number | undefined;
}

export interface VcpuDetail {
  readonly vcpu: number;
  readonly counters: ReadonlyMap<string, CounterRow>;
}

/** One VM: its row in the list, and what its detail view shows. */
export interface VmRow {
  /** `pid/name`: stays the same while the VM lives. */
  readonly key: string;
  readonly pid: number | undefined;
  readonly name: string | undefined;
  readonly vcpus: number;
  readonly exitsPerSecond: number | undefined;
  readonly haltExitsPerSecond: number | undefined;
  /** The vCPUs' run-queue wait (kvm.vcpu.sched.run_delay) per second of the interval, averaged
   * over the vCPUs that have it: 0.05 is 5% of the time runnable but not running (the guest's
   * steal). Undefined where no vCPU has a thread of its own, or before a second collection. */
  readonly runDelay: number | undefined;
  readonly haltWait: Percentiles;
  /** halt_poll_success_hist and halt_poll_fail_hist together: every poll of the interval. */
  readonly haltPoll: Percentiles;
  /** The VM's counters (VM-level stats, and its vCPUs' summed), by `target:stat`. */
  readonly counters: ReadonlyMap<string, CounterRow>;
  /** Its vCPUs, by id. */
  readonly vcpuDetails: readonly VcpuDetail[];
}

export type SortKey = 'exits' | 'halts' | 'delay' | 'name';
export const SORT_KEYS: readonly SortKey[] = ['exits', 'halts', 'delay', 'name'];

const HALT_WAIT = 'halt_wait_hist';
const HALT_POLL = ['halt_poll_success_hist', 'halt_poll_fail_hist'];
const RUN_DELAY = 'sched.run_delay';

interface Series {
  readonly time: number;
  readonly value: number | readonly number[];
}

function seconds(time: readonly [number, number]): number {
  return time[0] + time[1] / 1e9;
}

/** Keeps the previous collection's values and turns each new collection into VM rows. */
export class VmRollup {
  #previous = new Map<string, Series>();

  /** The VMs of a cumulative collection, with rates and percentiles over the time since the
   * previous one (undefined for a VM or vCPU not seen then). */
  update(metrics: ResourceMetrics): VmRow[] {
    const current = new Map<string, Series>();
    const vms = new Map<string, VmBuilder>();
    for (const scope of metrics.scopeMetrics) {
      for (const metric of scope.metrics) {
        const name = metric.descriptor.name;
        const vcpuMetric = name.startsWith(METRIC_PREFIX.vcpu);
        const stat = name.slice(vcpuMetric ? METRIC_PREFIX.vcpu.length : METRIC_PREFIX.vm.length);
        for (const point of metric.dataPoints as DataPoint<number | Histogram>[]) {
          const vm = vmOf(vms, point.attributes);
          const vcpu = point.attributes[ATTR_KVM_VCPU_ID] as number | undefined;
          const key = `${vm.key}/${vcpu ?? ''}/${name}`;
          const time = seconds(point.endTime);
          const before = this.#previous.get(key);
          if (metric.dataPointType === DataPointType.HISTOGRAM) {
            const counts = (point.value as Histogram).buckets.counts;
            current.set(key, { time, value: counts.slice() });
            if (!vcpuMetric) continue;
            const deltas = before && Array.isArray(before.value) ? counts.map((c, i) => delta(c, (before.value as number[])[i] ?? 0)) : undefined;
            if (deltas) vm.histogram(stat, (point.value as Histogram).buckets.boundaries, deltas);
          } else if (metric.dataPointType === DataPointType.SUM) {
            const value = point.value as number;
            current.set(key, { time, value });
            const perSecond = before && typeof before.value === 'number' && time > before.time ? delta(value, before.value) / (time - before.time) : undefined;
            vm.counter(vcpuMetric ? 'vcpu' : 'vm', stat, metric.descriptor.unit, vcpu, value, perSecond);
          } else if (vcpu !== undefined) {
            vm.vcpuSeen(vcpu);
          }
        }
      }
    }
    this.#previous = current;
    return [...vms.values()].map((vm) => vm.row());
  }
}

/** A counter's change: its new value after a reset (it went down). */
function delta(value: number, before: number): number {
  return value >= before ? value - before : value;
}

function vmOf(vms: Map<string, VmBuilder>, attributes: Attributes): VmBuilder {
  const pid = attributes[ATTR_PROCESS_PID] as number | undefined;
  const name = attributes[ATTR_KVM_VM_NAME] as string | undefined;
  const key = `${pid ?? ''}/${name ?? ''}`;
  let vm = vms.get(key);
  if (!vm) vms.set(key, (vm = new VmBuilder(key, pid, name)));
  return vm;
}

class VmBuilder {
  readonly #counters = new Map<string, { target: StatsTarget; stat: string; unit: string; total: number; perSecond: number | undefined }>();
  readonly #vcpus = new Map<number, Map<string, CounterRow>>();
  readonly #histograms = new Map<string, { bounds: number[]; counts: number[] }>();

  constructor(
    readonly key: string,
    readonly pid: number | undefined,
    readonly name: string | undefined,
  ) {}

  vcpuSeen(vcpu: number): Map<string, CounterRow> {
    let counters = this.#vcpus.get(vcpu);
    if (!counters) this.#vcpus.set(vcpu, (counters = new Map()));
    return counters;
  }

  counter(target: StatsTarget, stat: string, unit: string, vcpu: number | undefined, total: number, perSecond: number | undefined): void {
    if (vcpu !== undefined) this.vcpuSeen(vcpu).set(stat, { target, stat, unit, total, perSecond });
    const key = `${target}:${stat}`;
    const sum = this.#counters.get(key);
    if (!sum) {
      this.#counters.set(key, { target, stat, unit, total, perSecond });
      return;
    }
    sum.total += total;
    // A VM's rate is known when every one of its vCPUs' is.
    sum.perSecond = sum.perSecond === undefined || perSecond === undefined ? undefined : sum.perSecond + perSecond;
  }

  /** One vCPU's bucket deltas, added to the VM's. */
  histogram(stat: string, bounds: number[], deltas: number[]): void {
    const sum = this.#histograms.get(stat);
    if (!sum) this.#histograms.set(stat, { bounds, counts: deltas });
    else deltas.forEach((d, i) => (sum.counts[i] = (sum.counts[i] ?? 0) + d));
  }

  #percentiles(stats: readonly string[]): Percentiles {
    const parts = stats.flatMap((stat) => this.#histograms.get(stat) ?? []);
    if (parts.length === 0) return { samples: 0, p50: undefined, p99: undefined };
    // The halt-poll histograms share their bounds (log2, same size): their counts add up.
    const counts = parts[0]!.counts.map((_, i) => parts.reduce((sum, part) => sum + (part.counts[i] ?? 0), 0));
    const bounds = parts[0]!.bounds;
    return { samples: counts.reduce((a, b) => a + b, 0), p50: quantileBucket(bounds, counts, 0.5), p99: quantileBucket(bounds, counts, 0.99) };
  }

  row(): VmRow {
    const counters = new Map<string, CounterRow>([...this.#counters].map(([key, c]) => [key, { ...c }]));
    const delays = [...this.#vcpus.values()].map((c) => c.get(RUN_DELAY)).filter((c): c is CounterRow => c !== undefined);
    const delayPerSecond = delays.every((c) => c.perSecond !== undefined) ? delays.reduce((sum, c) => sum + c.perSecond!, 0) : undefined;
    return {
      key: this.key,
      pid: this.pid,
      name: this.name,
      vcpus: this.#vcpus.size,
      exitsPerSecond: counters.get('vcpu:exits')?.perSecond,
      haltExitsPerSecond: counters.get('vcpu:halt_exits')?.perSecond,
      // ns of waiting per second, over the vCPUs that have it: a fraction of the time.
      runDelay: delays.length > 0 && delayPerSecond !== undefined ? delayPerSecond / 1e9 / delays.length : undefined,
      haltWait: this.#percentiles([HALT_WAIT]),
      haltPoll: this.#percentiles(HALT_POLL),
      counters,
      vcpuDetails: [...this.#vcpus].sort(([a], [b]) => a - b).map(([vcpu, c]) => ({ vcpu, counters: c })),
    };
  }
}

/** Sorts VM rows: by a rate, highest first (unknown last), or by name; ties by pid. */
export function sortVms(rows: readonly VmRow[], key: SortKey): VmRow[] {
  const value = (row: VmRow): number | undefined =>
    key === 'exits' ? row.exitsPerSecond : key === 'halts' ? row.haltExitsPerSecond : key === 'delay' ? row.runDelay : undefined;
  return [...rows].sort((a, b) => {
    if (key === 'name') return (a.name ?? '').localeCompare(b.name ?? '') || (a.pid ?? 0) - (b.pid ?? 0);
    const [x, y] = [value(a) ?? -1, value(b) ?? -1];
    return y - x || (a.pid ?? 0) - (b.pid ?? 0);
  });
}

/** A counter of the detail view: the VM's, and each vCPU's total, share of the VM's total and rate. */
export interface DetailRow {
  readonly target: StatsTarget;
  readonly stat: string;
  readonly unit: string;
  readonly vm: CounterRow;
  readonly vcpus: readonly { readonly vcpu: number; readonly row: CounterRow; readonly share: number | undefined }[];
}

/** A VM's counters for its detail view, fastest first (then by total), kvm_stat-like. VM-level
 * stats have no vCPU rows. */
export function detailRows(vm: VmRow): DetailRow[] {
  const rows = [...vm.counters.values()].map((counter): DetailRow => ({
    target: counter.target,
    stat: counter.stat,
    unit: counter.unit,
    vm: counter,
    vcpus: vm.vcpuDetails.flatMap(({ vcpu, counters }) => {
      const row = counter.target === 'vcpu' ? counters.get(counter.stat) : undefined;
      return row ? [{ vcpu, row, share: counter.total > 0 ? row.total / counter.total : undefined }] : [];
    }),
  }));
  return rows.sort((a, b) => (b.vm.perSecond ?? -1) - (a.vm.perSecond ?? -1) || b.vm.total - a.vm.total || a.stat.localeCompare(b.stat));
}
