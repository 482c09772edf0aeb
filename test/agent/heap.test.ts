/**
 * The agent's full GC after a large layout (agent/heap.ts): fullGc() collects without
 * --expose-gc, and HeapSettler asks for one only after layouts of SETTLE_POINTS points or more.
 */
import { setImmediate as immediate } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { HeapSettler, SETTLE_POINTS, fullGc } from '../../src/agent/heap.js';

describe('fullGc', () => {
  it('collects what nothing refers to', async () => {
    let target: object | undefined = { payload: new Array(1000).fill(1) };
    const ref = new WeakRef(target);
    target = undefined;
    // A WeakRef's target lives to the end of the job that made or read it.
    await immediate();
    fullGc();
    expect(ref.deref()).toBeUndefined();
    // A second call uses the same gc().
    fullGc();
  });
});

describe('HeapSettler', () => {
  it('collects once after an export that followed layouts of SETTLE_POINTS points, not after smaller ones', async () => {
    let points = 0;
    let collections = 0;
    const settler = new HeapSettler(
      () => points,
      () => collections++,
    );
    points = SETTLE_POINTS - 1;
    settler.afterExport();
    await immediate();
    expect(collections).toBe(0);
    points = SETTLE_POINTS;
    settler.afterExport();
    await immediate();
    expect(collections).toBe(1);
    // The same points again, and a few hundred more (a VM that came): nothing.
    settler.afterExport();
    points += 300;
    settler.afterExport();
    await immediate();
    expect(collections).toBe(1);
    points = 2 * SETTLE_POINTS;
    settler.afterExport();
    await immediate();
    expect(collections).toBe(2);
  });
});
