/** Timing samples: loops that stop by themselves, and their median and spread. */

export interface Summary {
  readonly median: number;
  /** 10th and 90th percentiles: the spread. */
  readonly p10: number;
  readonly p90: number;
  readonly count: number;
}

/** How many times to run a measured step: exactly `fixed`, or until both `minimum` runs and
 * `budgetMs` have passed (never more than `maximum`). */
export interface Iterations {
  readonly fixed?: number | undefined;
  readonly minimum: number;
  readonly maximum: number;
  readonly budgetMs: number;
}

function percentile(sorted: readonly number[], p: number): number {
  const at = (sorted.length - 1) * p;
  const low = Math.floor(at);
  const high = Math.ceil(at);
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (at - low);
}

export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) throw new RangeError('summarize: no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  return { median: percentile(sorted, 0.5), p10: percentile(sorted, 0.1), p90: percentile(sorted, 0.9), count: sorted.length };
}

/**
 * Runs `steps` in turn, once per iteration, and returns each step's durations in milliseconds.
 * Interleaving keeps steps that are compared with each other under the same machine load.
 * `untimed`, if given, runs before each step outside its timing (a busy fleet's guest turn).
 */
export async function sample(iterations: Iterations, steps: readonly (() => unknown)[], untimed?: (step: () => unknown) => unknown): Promise<number[][]> {
  const samples = steps.map((): number[] => []);
  const began = performance.now();
  for (let i = 0; ; i++) {
    const enough = iterations.fixed !== undefined ? i >= iterations.fixed : i >= iterations.maximum || (i >= iterations.minimum && performance.now() - began >= iterations.budgetMs);
    if (enough) return samples;
    for (let s = 0; s < steps.length; s++) {
      if (untimed) await untimed(steps[s]!);
      const start = performance.now();
      await steps[s]!();
      samples[s]!.push(performance.now() - start);
    }
  }
}
