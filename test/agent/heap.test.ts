/**
 * The agent's full GC after a large layout (agent/heap.ts): fullGc() collects without
 * --expose-gc, and HeapSettler asks for one only after layouts of SETTLE_POINTS points or more.
 */
import { setImmediate as immediate } from 'node:timers/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HeapSettler, SETTLE_AFTER_MS, SETTLE_POINTS, SETTLE_SPACING_MS, fullGc } from '../../src/agent/heap.js';

describe('fullGc', () => {
  it('collects what nothing refers to', async () => {
    let target: object | undefined = { payload: new Array(1000).fill(1) };
    const ref = new WeakRef(target);
    target = undefined;
    // A WeakRef's target lives to the end of the job that made or read it.
    await immediate();
    fullGc();
    expect(ref.deref()).toBeUndefined();
    // A second call uses the same gc(), compacting (what that gives back: the agent's bench).
    fullGc(true);
    expect(ref.deref()).toBeUndefined();
  });
});

describe('HeapSettler', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('collects after an export that followed layouts of SETTLE_POINTS points, compacting last, not after smaller ones, and not more often than SETTLE_SPACING_MS', () => {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    let points = 0;
    let ms = 0;
    const collections: boolean[] = [];
    const settler = new HeapSettler(
      () => points,
      (compact) => collections.push(compact),
      () => ms,
    );
    points = SETTLE_POINTS - 1;
    settler.afterExport();
    vi.runAllTimers();
    expect(collections).toEqual([]);
    points = SETTLE_POINTS;
    settler.afterExport();
    // Not inside the export's callback.
    expect(collections).toEqual([]);
    vi.runAllTimers();
    expect(collections).toEqual([false, false, true]);
    // The same points again, and a few hundred more (a VM that came): nothing.
    settler.afterExport();
    points += 300;
    settler.afterExport();
    vi.runAllTimers();
    expect(collections).toHaveLength(SETTLE_AFTER_MS.length);
    // Another large layout soon after: settled only once SETTLE_SPACING_MS have passed.
    points = 2 * SETTLE_POINTS;
    ms += SETTLE_SPACING_MS - 1;
    settler.afterExport();
    vi.runAllTimers();
    expect(collections).toHaveLength(SETTLE_AFTER_MS.length);
    ms += 1;
    settler.afterExport();
    vi.runAllTimers();
    expect(collections).toHaveLength(2 * SETTLE_AFTER_MS.length);
  });
});
