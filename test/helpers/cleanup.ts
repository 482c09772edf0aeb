/**
 * The cleanup stack of a test file: what a test makes, it pushes a step to undo; after each test
 * the steps run last first (what was made last goes first), each awaited, every one of them even
 * when one fails (the first failure is thrown after).
 *
 *   const cleanup = cleanupAfterEach();
 *   cleanup.push(() => provider.shutdown());
 */
import { afterEach } from 'vitest';

export interface CleanupStack {
  push(...steps: (() => unknown)[]): void;
}

/** Registers the file's afterEach and returns its stack. */
export function cleanupAfterEach(): CleanupStack {
  let steps: (() => unknown)[] = [];
  afterEach(async () => {
    const due = steps.reverse();
    steps = [];
    let failure: unknown;
    for (const step of due) {
      try {
        await step();
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure !== undefined) throw failure;
  });
  return { push: (...more) => void steps.push(...more) };
}
