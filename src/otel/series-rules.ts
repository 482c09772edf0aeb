/**
 * The rules every series follows, written once for a source's own series (producer.ts) and a
 * VM's summed ones (aggregation.ts) alike:
 * - a cumulative or peak value that goes down was reset (root can, through debugfs); an instant
 *   value just changes (SeriesPlan.resets). A histogram is reset as a whole when any of its
 *   buckets, or its sum, went down;
 * - a point starts at its emitter's start; after a reset, at the time of the read before it,
 *   from then on; under delta temporality, at the previous collection's time (pointStart);
 * - under delta a point holds what was counted since the previous read: the change, or after a
 *   reset everything since it, which is the value as read (counted).
 */
import type { HrTime } from '@opentelemetry/api';
import type { TablePlan } from './plan.js';

/** What a series' start depends on: its emitter's start, and the starts of its series reset since. */
export interface SeriesStarts {
  readonly plan: TablePlan;
  readonly startTime: HrTime;
  /** Per series, where it starts again after a reset; undefined until one is. */
  resetStarts: (HrTime | undefined)[] | undefined;
}

/**
 * Where series `m`'s point starts in this collection. `reset`: a value of it went down since the
 * previous read, whose time is `previousTime` (undefined before the first read); `delta`: the
 * point covers only the time since then. A reset is remembered as the series' start from now on:
 * a copy of the previous read's time (reused points roll the collection times in place), or the
 * emitter's start when there was none.
 */
export function pointStart(emitter: SeriesStarts, m: number, delta: boolean, reset: boolean, previousTime: HrTime | undefined): HrTime {
  let start: HrTime;
  if (reset) {
    start = previousTime ? [previousTime[0], previousTime[1]] : emitter.startTime;
    (emitter.resetStarts ??= new Array<HrTime | undefined>(emitter.plan.series.length))[m] = start;
  } else {
    const resetStarts = emitter.resetStarts;
    start = resetStarts === undefined ? emitter.startTime : (resetStarts[m] ?? emitter.startTime);
  }
  return delta && previousTime !== undefined ? previousTime : start;
}

/** What a value counted since the previous read (`before`): its change, or after a reset of its
 * series everything since, which is the value itself. */
export function counted(value: number, before: number, reset: boolean): number {
  return reset ? value : value - before;
}
