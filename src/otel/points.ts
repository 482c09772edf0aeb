/**
 * What the producer and the VM aggregation share: the plan of how each stat of a descriptor
 * table becomes data points (worked out once per table), the metrics those points gather in,
 * and the data points that are updated in place with reuseDataPoints.
 */
import type { Attributes, HrTime } from '@opentelemetry/api';
import type { DataPoint, Histogram, MetricDescriptor, MetricData } from '@opentelemetry/sdk-metrics';
import type { MetricKind, MetricMapping } from './mapping.js';

export type Point = DataPoint<number | Histogram>;

const TWO_POW_32 = 0x1_0000_0000;

/** The u64 at `word` of a data block's 32-bit words, as a double: exact up to 2^53. Small
 * enough for V8 to inline into a caller's loop. */
export function u64(words: Uint32Array, word: number): number {
  return words[word]! + words[word + 1]! * TWO_POW_32;
}

/** Where one metric's data points gather during a collection: one per name, kind and unit. */
export interface MetricSlot {
  readonly descriptor: MetricDescriptor;
  readonly kind: MetricKind;
  /** This collection's points, `count` of them (reused arrays may hold more until trimmed). */
  points: Point[];
  count: number;
  /** The MetricData handed out again at every collection (reuseDataPoints). */
  data: MetricData | undefined;
}

/**
 * How one selected stat of a descriptor table is decoded and where its points go, worked out
 * once per table. Stats that the selection excludes have none.
 */
export interface SeriesPlan {
  readonly mapping: MetricMapping;
  /** Its metric; under VM aggregation the summed one. */
  readonly slot: MetricSlot;
  /** Under VM aggregation, a gauge's second metric: the largest vCPU's value. */
  readonly maxSlot: MetricSlot | undefined;
  /** Index of the value's low 32-bit word in the data block (offset / 4). */
  readonly word: number;
  /** Index of the series' first value in the previous values: a histogram keeps its buckets
   * there, then its sum. */
  readonly first: number;
  readonly histogram: boolean;
  /** Buckets of a histogram; 1 otherwise. */
  readonly size: number;
  /** Word of the histogram's sum companion; -1 without one. */
  readonly sumWord: number;
  /** A value that goes down was reset (cumulative and peak stats); instant values just change. */
  readonly resets: boolean;
  /** Exported as the difference to the previous collection (sums and histograms under DELTA). */
  readonly delta: boolean;
  /** Under VM aggregation, a boolean counts as 1 when set (any value but 0). */
  readonly boolean: boolean;
  /** Values need value * multiplier / divisor. */
  readonly scaled: boolean;
  readonly multiplier: number;
  readonly divisor: number;
}

/** The plan of one descriptor table. */
export interface TablePlan {
  /** Tells plans apart in grouping keys. */
  readonly id: number;
  readonly series: readonly SeriesPlan[];
  /** How many previous values the series keep. */
  readonly values: number;
  /** The metric of each data point an emitter of this plan has, in order: per series its slot,
   * then its maxSlot where it has one. */
  readonly slots: readonly MetricSlot[];
}

/** Whatever owns data points for a plan: a source, or a VM's summed vCPUs. */
export interface Emitter {
  readonly plan: TablePlan;
  /** One data point per entry of plan.slots, updated in place (reuseDataPoints only). */
  readonly points: (NumberPoint | HistogramPoint)[] | undefined;
}

/** A counter's or gauge's data point, updated in place (reuseDataPoints). Number and histogram
 * points are classes of their own, so that each kind keeps one hidden class in V8. */
export class NumberPoint {
  constructor(
    public startTime: HrTime,
    public endTime: HrTime,
    public attributes: Attributes,
    public value: number,
  ) {}
}

/** A histogram's data point, updated in place (reuseDataPoints). */
export class HistogramPoint {
  constructor(
    public startTime: HrTime,
    public endTime: HrTime,
    public attributes: Attributes,
    public value: Histogram,
  ) {}
}

export function millisToHrTime(ms: number): HrTime {
  return setHrTime([0, 0], ms);
}

export function setHrTime(time: HrTime, ms: number): HrTime {
  const seconds = Math.floor(ms / 1000);
  time[0] = seconds;
  time[1] = Math.round((ms - seconds * 1000) * 1e6);
  return time;
}

/** Where a series starts again after a reset: a copy of the previous read's time (reused
 * points roll the collection times in place), or the start when there was none. */
export function resetStartTime(previousTime: HrTime | undefined, startTime: HrTime): HrTime {
  return previousTime ? [previousTime[0], previousTime[1]] : startTime;
}

/** Appends this collection's point for one series to its metric. */
export function addPoint(slot: MetricSlot, point: Point): void {
  slot.points[slot.count++] = point;
}

/** The data points an emitter of `plan` updates in place (reuseDataPoints), one per plan.slots. */
export function newPoints(plan: TablePlan, startTime: HrTime, endTime: HrTime, attributes: Attributes): (NumberPoint | HistogramPoint)[] {
  const points: (NumberPoint | HistogramPoint)[] = [];
  for (const series of plan.series) {
    if (series.histogram) {
      const value: Histogram = { buckets: { boundaries: series.mapping.bounds as number[], counts: new Array<number>(series.size).fill(0) }, count: 0 };
      if (series.sumWord >= 0) value.sum = 0;
      points.push(new HistogramPoint(startTime, endTime, attributes, value));
    } else {
      points.push(new NumberPoint(startTime, endTime, attributes, 0));
    }
    if (series.maxSlot) points.push(new NumberPoint(startTime, endTime, attributes, 0));
  }
  // A copy of the exact length: an array grown by push keeps up to half again as much spare
  // room, which is 250 bytes per fd here.
  return points.slice();
}
