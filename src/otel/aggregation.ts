/**
 * vCPU series summed per VM (`vcpuAggregation: 'vm'`): one series per VM, as the kernel's debugfs
 * shows them. A VM is the set of vCPU sources with the same owner pid and VM name (and the same
 * descriptor table). Counters and histogram buckets are summed; a boolean is the number of
 * vCPUs for which it is set; any other gauge is exported as its sum and its largest value.
 *
 * Cheap per collection: the grouping is worked out only when the set of sources changes, and a
 * vCPU's read adds (value - its previous value) to its VM's sums, so there is nothing to clear
 * or look up per collection. That also decides what happens to a vCPU that goes away (or
 * cannot be read): its counters and buckets keep their last value in the VM's sums until the
 * VM itself ends (its last vCPU leaves the set of sources), so a sum never goes backwards
 * because of it; its gauges leave the sums and maxima at once.
 *
 * Resets and deltas follow series-rules.ts, as a source's own series do: a vCPU value that goes
 * down was reset (root can, through debugfs); the VM's series then starts again from the previous
 * collection's time, and under delta temporality the vCPU's part of the delta is what it counted
 * since its previous read, after a reset its whole new value.
 */
import type { Attributes, HrTime } from '@opentelemetry/api';
import type { StatsSource } from '../sources/source.js';
import { INEXACT_HIGH_WORD as INEXACT, u64 } from '../stats/u64.js';
import type { Emitter, TablePlan } from './plan.js';
import { type Points, histogramCounts, newPoints, scale, writeHistogram, writeNumber } from './points.js';
import type { WirePoints } from './series-frame.js';
import { ATTR_KVM_VCPU_ID, ATTR_KVM_VCPU_INDEX } from './semconv.js';
import { type SeriesStarts, counted, pointStart } from './series-rules.js';

// Bound to this module's own const, as in producer.ts: V8 folds it into the hot loop.
const INEXACT_HIGH_WORD = INEXACT;

export type VcpuAggregation = 'none' | 'vm';
export const VCPU_AGGREGATIONS: readonly VcpuAggregation[] = ['none', 'vm'];

/** What the aggregation keeps of a vCPU source in the producer's state of it. */
export interface Member {
  /** The vCPU's last values as read (a boolean as 0 or 1), laid out as its plan says. */
  readonly previous: Float64Array;
  readonly group: VmGroup | undefined;
  /** The regrouping that last found it among the sources. */
  stamp: number;
  /** Out of the set of sources since the last regrouping that found it there. */
  departed: boolean;
}

/** The key that puts vCPU sources into one VM. */
export function vmKey(source: StatsSource): string {
  return `${source.pid}|${source.vmName}`;
}

/** One VM's vCPU series, summed. */
export class VmGroup implements Emitter, SeriesStarts {
  readonly key: string;
  readonly plan: TablePlan;
  readonly attributes: Attributes;
  readonly startTime: HrTime;
  /** The vCPUs in the set of sources at the last regrouping. */
  members: Member[] = [];
  /** One data point per plan slot, updated in place (reuseDataPoints only; Emitter.points). */
  points: Points | undefined;
  wire: WirePoints | undefined = undefined;
  /** Per value: the sum of every member's last value; counters of departed members stay in. */
  readonly #sums: Float64Array;
  /** Delta temporality only: per value, what the members counted since the previous export. */
  readonly #counted: Float64Array | undefined;
  /** Delta temporality only: a member's values before its current read (scratch). */
  readonly #befores: Float64Array | undefined;
  /** Per series: a member was reset since the previous export. */
  readonly #reset: Uint8Array;
  resetStarts: (HrTime | undefined)[] | undefined;
  /** The collection in which a member was last read, and the last export and its time in ms. */
  readIn = 0;
  lastCollection = 0;
  lastCollectionMs = 0;
  /** The regrouping that last found it; ended once no member is left. */
  stamp = 0;
  ended = false;
  #next: Member[] = [];

  constructor(key: string, plan: TablePlan, attributes: Attributes, startTime: HrTime, options: { delta: boolean; pointsEnd: HrTime | undefined }) {
    this.key = key;
    this.plan = plan;
    this.attributes = attributes;
    this.startTime = startTime;
    this.#sums = new Float64Array(plan.values);
    this.#counted = options.delta ? new Float64Array(plan.values) : undefined;
    this.#befores = options.delta ? new Float64Array(plan.values) : undefined;
    this.#reset = new Uint8Array(plan.series.length);
    this.points = options.pointsEnd ? newPoints(plan, startTime, options.pointsEnd, attributes) : undefined;
  }

  /** Adds a member's freshly read words to the sums: each value's change since the member's
   * previous read (and under delta, what it counted since then). True if a value is above 2^53. */
  accumulate(member: Member, words: Uint32Array, collection: number): boolean {
    const { series } = this.plan;
    const previous = member.previous;
    const sums = this.#sums;
    const countedSince = this.#counted;
    let highs = 0;
    for (let m = 0; m < series.length; m++) {
      const s = series[m]!;
      if (!s.histogram) {
        const k = s.first;
        highs |= words[s.word + 1]!;
        let value = u64(words, s.word);
        if (s.boolean && value !== 0) value = 1;
        const before = previous[k]!;
        previous[k] = value;
        sums[k]! += value - before;
        const reset = value < before && s.resets;
        if (reset) this.#reset[m] = 1;
        if (countedSince !== undefined && s.delta) countedSince[k]! += counted(value, before, reset);
        continue;
      }
      // A histogram: its buckets, then its sum companion, each value's change added to the sums;
      // reset as a whole when any went down.
      const befores = this.#befores;
      let reset = false;
      let end = s.first + s.size;
      for (let k = s.first, i = s.word; k < end; k++, i += 2) {
        highs |= words[i + 1]!;
        const value = u64(words, i);
        const before = previous[k]!;
        if (befores) befores[k] = before;
        previous[k] = value;
        if (value < before) reset = true;
        sums[k]! += value - before;
      }
      if (s.sumWord >= 0) {
        highs |= words[s.sumWord + 1]!;
        const value = u64(words, s.sumWord);
        const before = previous[end]!;
        if (befores) befores[end] = before;
        previous[end] = value;
        if (value < before) reset = true;
        sums[end++]! += value - before;
      }
      if (reset) this.#reset[m] = 1;
      if (countedSince !== undefined && s.delta) for (let k = s.first; k < end; k++) countedSince[k]! += counted(previous[k]!, befores![k]!, reset);
    }
    this.readIn = collection;
    return highs >>> 0 >= INEXACT_HIGH_WORD;
  }

  /** This collection's points: `previousTime` is when the previous export was (undefined before
   * the first), `now` this collection's time. */
  emit(now: HrTime, nowMs: number, collection: number, previousTime: HrTime | undefined): void {
    const { series } = this.plan;
    for (let m = 0, j = 0; m < series.length; m++, j++) {
      const s = series[m]!;
      const start = pointStart(this, m, s.delta, this.#reset[m] === 1, previousTime);
      this.#reset[m] = 0;
      // Under delta what the members counted since the previous export; else the VM's sums.
      const values = s.delta ? this.#counted! : this.#sums;
      const k = s.first;
      if (s.histogram) {
        const counts = histogramCounts(this, j, s.size);
        let count = 0;
        for (let b = 0; b < s.size; b++) count += counts[b] = values[k + b]!;
        let sum: number | undefined;
        if (s.sumWord >= 0) sum = values[k + s.size]!;
        writeHistogram(this, j, s, start, now, counts, count, sum);
      } else {
        writeNumber(this, j, s.slot, start, now, scale(s, values[k]!));
        if (s.maxSlot) {
          let max = 0;
          for (const member of this.members) if (member.previous[k]! > max) max = member.previous[k]!;
          writeNumber(this, ++j, s.maxSlot, start, now, scale(s, max));
        }
      }
    }
    this.#counted?.fill(0);
    this.lastCollection = collection;
    this.lastCollectionMs = nowMs;
  }

  /** A member left the set of sources: its gauges leave the sums; its counters stay. */
  #depart(member: Member, sign: 1 | -1): void {
    for (const s of this.plan.series) if (s.mapping.kind === 'gauge') this.#sums[s.first]! += sign * member.previous[s.first]!;
  }

  /** Regrouping, step 1: `member` is in the set of sources. */
  found(member: Member, stamp: number): boolean {
    const fresh = this.stamp !== stamp;
    if (fresh) {
      this.stamp = stamp;
      this.#next = [];
    }
    this.#next.push(member);
    member.stamp = stamp;
    if (member.departed) {
      // Back again: its gauges count again; its counters never left.
      member.departed = false;
      this.#depart(member, 1);
    }
    return fresh;
  }

  /** Regrouping, step 2 (once per group): members not found leave; a VM with none left ends. */
  settle(stamp: number): void {
    for (const member of this.members) {
      if (member.stamp === stamp || member.departed) continue;
      member.departed = true;
      this.#depart(member, -1);
    }
    if (this.stamp === stamp) {
      this.members = this.#next;
    } else {
      this.members = [];
      this.ended = true;
    }
    this.#next = [];
  }
}

/** The VMs of a producer's vCPU sources. */
export class VmGroups {
  readonly #byKey = new Map<string, VmGroup>();
  readonly #delta: boolean;
  /** The end time of reused points (the producer rolls it in place); undefined without reuse. */
  readonly #pointsEnd: HrTime | undefined;
  /** The VMs with a vCPU in the set of sources, in the order of their first vCPU there. */
  live: VmGroup[] = [];
  #stamp = 0;

  constructor(options: { delta: boolean; pointsEnd: HrTime | undefined }) {
    this.#delta = options.delta;
    this.#pointsEnd = options.pointsEnd;
  }

  /** The VM a new vCPU source belongs to; made when it is the first. */
  groupOf(source: StatsSource, plan: TablePlan, attributes: Attributes, startTime: HrTime): VmGroup {
    const key = `${plan.id}|${vmKey(source)}`;
    let group = this.#byKey.get(key);
    if (group === undefined || group.ended) {
      const { [ATTR_KVM_VCPU_ID]: _id, [ATTR_KVM_VCPU_INDEX]: _index, ...vmAttributes } = attributes;
      group = new VmGroup(key, plan, vmAttributes, startTime, { delta: this.#delta, pointsEnd: this.#pointsEnd });
      this.#byKey.set(key, group);
    }
    return group;
  }

  /** Called when the set of sources changed: which vCPUs each VM has now, and which VMs ended.
   * A vCPU's scheduler time (`sched`) is a member of its VM's summed scheduler series. */
  regroup(states: readonly (Member & { readonly sched?: Member | undefined })[]): void {
    const stamp = ++this.#stamp;
    const live: VmGroup[] = [];
    for (const state of states) {
      const group = state.group;
      if (group !== undefined && group.found(state, stamp)) live.push(group);
      const sched = state.sched;
      if (sched?.group !== undefined && sched.group.found(sched, stamp)) live.push(sched.group);
    }
    for (const group of live) group.settle(stamp);
    for (const group of this.live) {
      if (group.stamp === stamp) continue;
      group.settle(stamp);
      if (this.#byKey.get(group.key) === group) this.#byKey.delete(group.key);
    }
    this.live = live;
  }
}
