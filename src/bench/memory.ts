/**
 * Memory figures: what stays allocated after a full garbage collection, and how many bytes a
 * step allocates (counted through V8's GC profiler, so collections in between do not hide any).
 */
import { GCProfiler, getHeapStatistics } from 'node:v8';

export interface MemoryUse {
  /** V8 heap in use plus the bytes of every ArrayBuffer (typed arrays' contents live outside). */
  readonly heapAndBuffers: number;
  readonly rss: number;
}

/** The garbage collector, as `node --expose-gc` exposes it; undefined without the flag. */
export function exposedGc(): (() => void) | undefined {
  const gc = (globalThis as { gc?: () => void }).gc;
  return typeof gc === 'function' ? gc : undefined;
}

/** Memory in use after full collections (needs --expose-gc). */
export function retainedMemory(): MemoryUse {
  const gc = exposedGc();
  if (!gc) throw new Error('measuring retained memory needs node --expose-gc');
  // Twice: the first pass can leave weakly held objects for the second.
  gc();
  gc();
  const usage = process.memoryUsage();
  return { heapAndBuffers: usage.heapUsed + usage.arrayBuffers, rss: usage.rss };
}

/** The GC profiler's heap statistics name their fields in camel case, unlike getHeapStatistics()
 * (and unlike @types/node says). */
function usedHeapSize(statistics: object): number {
  const used = (statistics as { usedHeapSize?: unknown; used_heap_size?: unknown }).usedHeapSize ?? (statistics as { used_heap_size?: unknown }).used_heap_size;
  if (typeof used !== 'number') throw new Error('the GC profiler reported no used heap size: this Node.js version is not supported by the benchmark');
  return used;
}

/** Bytes of V8 heap that `runs` calls of `step` allocate, per call. */
export async function allocatedPerRun(runs: number, step: () => unknown): Promise<number> {
  const profiler = new GCProfiler();
  profiler.start();
  const before = getHeapStatistics().used_heap_size;
  for (let i = 0; i < runs; i++) await step();
  const after = getHeapStatistics().used_heap_size;
  const { statistics } = profiler.stop();
  // What each collection freed was allocated too.
  let freed = 0;
  for (const gc of statistics) freed += usedHeapSize(gc.beforeGC.heapStatistics) - usedHeapSize(gc.afterGC.heapStatistics);
  return Math.max(0, after - before + freed) / runs;
}
