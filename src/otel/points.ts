/**
 * Data points, for the producer and the VM aggregation alike: the one writer of a series' point
 * of a collection (a new point appended to its metric, or a reused one updated in place), the
 * points that are updated in place with reuseDataPoints, and the scaling and time helpers both
 * use.
 */
import type { Attributes, HrTime } from '@opentelemetry/api';
import type { DataPoint, Histogram } from '@opentelemetry/sdk-metrics';
import type { Emitter, MetricSlot, SeriesPlan, TablePlan } from './plan.js';
import { POINT_BODY, POINT_BUCKETS, pointBody, pointIndex } from './series-frame.js';

export type Point = DataPoint<number | Histogram>;
/** An emitter's reused data points, one per entry of its plan's slots. */
export type Points = (NumberPoint | HistogramPoint)[];

/** A series' value in its metric's unit. */
export function scale(series: SeriesPlan, value: number): number {
  return series.scaled ? (value * series.multiplier) / series.divisor : value;
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

/** Appends a point to its metric's points of this collection. */
export function addPoint(slot: MetricSlot, point: Point): void {
  slot.points[slot.count++] = point;
}

/**
 * This collection's point j of an emitter, a counter or gauge in `slot`: the emitter's reused
 * point updated in place (reuseDataPoints; its endTime is the collection time the producer
 * rolls in place), else a new point appended to the metric.
 */
export function writeNumber(emitter: Emitter, j: number, slot: MetricSlot, startTime: HrTime, endTime: HrTime, value: number): void {
  const wire = emitter.wire;
  if (wire !== undefined) {
    wire.frame.number(pointBody(wire, j), startTime, slot.integer, value);
    return;
  }
  const points = emitter.points;
  if (points === undefined) {
    addPoint(slot, { startTime, endTime, attributes: emitter.attributes, value });
    return;
  }
  const point = points[j] as NumberPoint;
  if (point.startTime !== startTime) point.startTime = startTime;
  point.value = value;
}

/** Where this collection's bucket counts of an emitter's histogram point j go: the reused
 * point's own array, else a new one for a new point; for a point in a frame, a scratch array
 * that writeHistogram writes from at once. */
export function histogramCounts(emitter: Emitter, j: number, size: number): number[] {
  if (emitter.wire !== undefined) return wireCounts.length >= size ? wireCounts : (wireCounts = new Array<number>(size).fill(0));
  const points = emitter.points;
  return points === undefined ? new Array<number>(size) : (points[j] as HistogramPoint).value.buckets.counts;
}

let wireCounts: number[] = [];

/** This collection's point j of an emitter, a histogram, as writeNumber does: its counts filled
 * in the array that histogramCounts gave, its sum (where it has one) as read, scaled here. */
export function writeHistogram(
  emitter: Emitter,
  j: number,
  series: SeriesPlan,
  startTime: HrTime,
  endTime: HrTime,
  counts: number[],
  count: number,
  sum: number | undefined,
  /** The buckets as read, when they are exported as read (cumulative, each below 2^53). */
  raw?: Uint8Array,
): void {
  if (sum !== undefined) sum = scale(series, sum);
  const wire = emitter.wire;
  if (wire !== undefined) {
    const at = pointIndex(wire.at, j);
    wire.frame.histogram(wire.offsets[at + POINT_BODY]!, wire.offsets[at + POINT_BUCKETS]!, startTime, count, sum, counts, series.size, raw);
    return;
  }
  const points = emitter.points;
  if (points === undefined) {
    const value: Histogram = { buckets: { boundaries: series.mapping.bounds as number[], counts }, count };
    if (sum !== undefined) value.sum = sum;
    addPoint(series.slot, { startTime, endTime, attributes: emitter.attributes, value });
    return;
  }
  const point = points[j] as HistogramPoint;
  point.value.count = count;
  if (sum !== undefined) point.value.sum = sum;
  if (point.startTime !== startTime) point.startTime = startTime;
}

/** The data points an emitter of `plan` updates in place (reuseDataPoints), one per plan.slots. */
export function newPoints(plan: TablePlan, startTime: HrTime, endTime: HrTime, attributes: Attributes): Points {
  const points: Points = [];
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
