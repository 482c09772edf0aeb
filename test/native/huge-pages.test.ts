/**
 * adviseHugePages (src/native/libc.ts) and the frames it backs (otel/series-frame.ts,
 * frameBytes): the 2 MiB-aligned interior of a buffer V8 owns is marked for transparent huge
 * pages (the kernel's VmFlags "hg" in /proc/self/smaps), the buffer stays whole and usable, and
 * a buffer with no whole huge page in it is left alone.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { adviseHugePages } from '../../src/native/libc.js';
import { frameBytes } from '../../src/otel/series-frame.js';

const MiB = 1024 * 1024;

/** Bytes of this process's mappings marked MADV_HUGEPAGE. */
function advisedBytes(): number {
  let total = 0;
  let size = 0;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) size = Number(BigInt(`0x${range[2]}`) - BigInt(`0x${range[1]}`));
    else if (line.startsWith('VmFlags:') && line.split(/\s+/).includes('hg')) total += size;
  }
  return total;
}

const thp = (() => {
  try {
    return !readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8').includes('[never]');
  } catch {
    return false;
  }
})();

describe.skipIf(!thp)('adviseHugePages', () => {
  it('marks the whole huge pages inside a buffer, which stays whole and usable', () => {
    const before = advisedBytes();
    const bytes = frameBytes(9 * MiB + 12_345);
    // At least 3 whole 2 MiB pages lie inside 9 MiB, wherever it starts.
    expect(advisedBytes() - before).toBeGreaterThanOrEqual(6 * MiB);
    expect(bytes.every((byte) => byte === 0)).toBe(true);
    for (let i = 0; i < bytes.length; i += 4093) bytes[i] = i & 0xff;
    for (let i = 0; i < bytes.length; i += 4093) expect(bytes[i]).toBe(i & 0xff);
    expect(bytes.length).toBe(9 * MiB + 12_345);
  });

  it('leaves a buffer with no whole huge page in it alone', () => {
    const before = advisedBytes();
    expect(adviseHugePages(new Uint8Array(MiB))).toBe(false);
    expect(advisedBytes()).toBe(before);
  });
});
