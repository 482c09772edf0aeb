/**
 * The agent's heap after a large layout of the OTLP frame. A layout builds a data point for
 * every series new to the frame and drops it once written (exporters/otlp-fused.ts): at 10,000
 * stats fds the first layout leaves some 65 MiB of garbage in V8's old space. The agent then
 * allocates about 0.5 MiB per export, so V8's next full GC (and with it the pages given back)
 * may be an hour away; until then the RSS holds the start-up's high-water mark. Full GCs after
 * such a layout's export give them back (docs/performance.md, issue 20: 273 to about 185 MiB at
 * 10,000 image fds), the last compacting: without, V8 keeps the old space's pages, a few live
 * objects on each.
 *
 * The young generation is kept at its first size: the agent allocates well under a MiB per
 * export, but loading its modules and opening every source grew it to 32 MiB, held ever after.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Points written whole since the last full GC past which one is made (about 200 B of garbage
 * each: 50,000 is some 10 MiB, about 1,000 stats fds laid out anew). A VM that comes or goes
 * lays out a few hundred. */
export const SETTLE_POINTS = 50_000;

let gc: (() => void) | undefined;

/** A full GC, without the process started with --expose-gc: V8's gc() taken from a new
 * context made while the flag is set, then the flag put back. `compact`: every page the
 * collection frees is given back, not only those V8 would choose to compact. */
export function fullGc(compact = false): void {
  if (gc === undefined) {
    const exposed = (globalThis as { gc?: () => void }).gc;
    if (exposed !== undefined) {
      gc = exposed;
    } else {
      // A V8 that does not hand gc() out this way gets no settling: the RSS then stays as it
      // was before, and nothing the agent does fails.
      try {
        setFlagsFromString('--expose-gc');
        const made: unknown = runInNewContext('gc');
        gc = typeof made === 'function' ? (made as () => void) : () => undefined;
      } catch {
        gc = () => undefined;
      } finally {
        setFlagsFromString('--no-expose-gc');
      }
    }
  }
  if (!compact) return gc();
  setFlagsFromString('--compact-on-every-full-gc');
  try {
    gc();
  } finally {
    setFlagsFromString('--no-compact-on-every-full-gc');
  }
}

/** V8's young generation stays at its first size (semi-spaces of 1 MiB): set as the agent's
 * process starts (cli/agent-heap.ts); V8 reads the factor whenever the young generation would
 * grow, where --max-semi-space-size set at run time has no effect. */
export function keepYoungGenerationSmall(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
}

/** When the collections after a large layout's export come, ms after it. Two plain ones first:
 * the pages they empty are given back before the compacting one copies what lives into new
 * pages, which at once would add some 25 MiB to the agent's RSS peak at 10,000 fds. */
export const SETTLE_AFTER_MS = [0, 500, 1500] as const;

/** The least time between two settlings, ms: where collections keep running out of time, each
 * lays the frame out anew, and three full GCs after every export would only add to the load. */
export const SETTLE_SPACING_MS = 30_000;

/** Makes the full GCs after an export that followed layouts of SETTLE_POINTS points or more. */
export class HeapSettler {
  #settledAt = 0;
  #lastMs = -Infinity;

  constructor(
    /** Points laid out so far (KvmOtlpMetricExporter.newPoints). */
    private readonly laidOut: () => number,
    private readonly collect: (compact: boolean) => void = fullGc,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** After an export is done: its request is no longer held. */
  afterExport(): void {
    const points = this.laidOut();
    if (points - this.#settledAt < SETTLE_POINTS) return;
    // Too soon after the last: an export after SETTLE_SPACING_MS settles them.
    const ms = this.now();
    if (ms - this.#lastMs < SETTLE_SPACING_MS) return;
    this.#settledAt = points;
    this.#lastMs = ms;
    // After the export's own callbacks, not inside them; the last one compacts.
    SETTLE_AFTER_MS.forEach((after, i) => setTimeout(() => this.collect(i === SETTLE_AFTER_MS.length - 1), after).unref());
  }
}
