/**
 * StatsFile (src/stats/stats-file.ts) on synthetic images laid out byte by byte: the header, id,
 * every kind of stat and its values, every layout the ABI allows, reads into its own buffer or a
 * caller's, one pread per read. (The descriptor table's checks: test/stats/descriptors.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import {
  KVM_STATS_BASE_POW2,
  KVM_STATS_TYPE_CUMULATIVE,
  KVM_STATS_TYPE_INSTANT,
  KVM_STATS_TYPE_LINEAR_HIST,
  KVM_STATS_TYPE_LOG_HIST,
  KVM_STATS_TYPE_PEAK,
  KVM_STATS_UNIT_BOOLEAN,
  KVM_STATS_UNIT_BYTES,
  KVM_STATS_UNIT_CYCLES,
  KVM_STATS_UNIT_SECONDS,
} from '../../src/abi/kvm.js';
import { StatsFile, StatsReadError } from '../../src/stats/stats-file.js';
import { type DescSpec, buildImage, openImage, writeImage } from '../helpers/image.js';


const counter = (name: string, value = 0): DescSpec => ({ name, values: [value] });

describe('reading a valid image', () => {
  it('reads the header, id, every kind of stat and its values', () => {
    const file = openImage({
      id: 'kvm-4242/vcpu-3',
      descs: [
        { name: 'exits', type: KVM_STATS_TYPE_CUMULATIVE, values: [12345] },
        { name: 'pages', type: KVM_STATS_TYPE_INSTANT, unit: KVM_STATS_UNIT_BYTES, base: KVM_STATS_BASE_POW2, exponent: 10, values: [7] },
        { name: 'max_size', type: KVM_STATS_TYPE_PEAK, values: [99] },
        { name: 'guest_mode', type: KVM_STATS_TYPE_INSTANT, unit: KVM_STATS_UNIT_BOOLEAN, values: [1] },
        { name: 'wait_hist', type: KVM_STATS_TYPE_LOG_HIST, unit: KVM_STATS_UNIT_SECONDS, exponent: -9, size: 4, values: [1, 2, 3, 4] },
        { name: 'lin_hist', type: KVM_STATS_TYPE_LINEAR_HIST, unit: KVM_STATS_UNIT_CYCLES, size: 3, bucketSize: 10, values: [5, 6, 7] },
      ],
    });
    try {
      expect(file.id).toBe('kvm-4242/vcpu-3');
      expect(file.target).toBe('vcpu');
      expect(file.threadId).toBe(4242);
      expect(file.vcpuId).toBe(3);
      expect(file.table.stats.map((s) => [s.name, s.type, s.unit, s.base, s.exponent, s.size, s.bucketSize])).toEqual([
        ['exits', 'cumulative', 'none', 10, 0, 1, 0],
        ['pages', 'instant', 'bytes', 2, 10, 1, 0],
        ['max_size', 'peak', 'none', 10, 0, 1, 0],
        ['guest_mode', 'instant', 'boolean', 10, 0, 1, 0],
        ['wait_hist', 'log2-histogram', 'seconds', 10, -9, 4, 0],
        ['lin_hist', 'linear-histogram', 'cycles', 10, 0, 3, 10],
      ]);
      const [exits, pages, peak, flag, log2, linear] = file.table.stats;
      expect([file.value(exits!), file.value(pages!), file.value(peak!), file.value(flag!)]).toEqual([12345, 7, 99, 1]);
      expect([0, 1, 2, 3].map((b) => file.value(log2!, b))).toEqual([1, 2, 3, 4]);
      expect([0, 1, 2].map((b) => file.value(linear!, b))).toEqual([5, 6, 7]);
      expect(file.table.dataSize).toBe(8 * 11);
      expect(file.table.skipped).toEqual([]);
    } finally {
      file.close();
    }
  });

  it('reads a VM id', () => {
    const file = openImage({ id: 'kvm-77', descs: [counter('a')] });
    expect([file.target, file.threadId, file.vcpuId]).toEqual(['vm', 77, undefined]);
    file.close();
  });

  it('follows the offsets: blocks out of order with gaps between them, stats out of order', () => {
    // Data first, then a gap, the descriptors, another gap, and the id last.
    const descs: DescSpec[] = [
      { name: 'third', offset: 64, values: [3] },
      { name: 'first', offset: 0, values: [1] },
      { name: 'hist', type: KVM_STATS_TYPE_LOG_HIST, size: 3, offset: 16, values: [7, 8, 9] },
    ];
    const file = openImage({ descs, dataOffset: 40, descOffset: 200, idOffset: 600, dataSize: 72 });
    try {
      const byName = Object.fromEntries(file.table.stats.map((s) => [s.name, s]));
      expect(file.value(byName.third!)).toBe(3);
      expect(file.value(byName.first!)).toBe(1);
      expect([0, 1, 2].map((b) => file.value(byName.hist!, b))).toEqual([7, 8, 9]);
      expect(file.table.dataSize).toBe(72);
      expect(file.table.stats.map((s) => s.name)).toEqual(['third', 'first', 'hist']);
    } finally {
      file.close();
    }
  });

  it('decodes u64 values exactly and flags those above 2^53', () => {
    const values = [0n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n];
    const file = openImage({ descs: values.map((v, i) => ({ name: `v${i}`, values: [v] })) });
    try {
      const stats = file.table.stats;
      expect(stats.map((s) => file.exactValue(s))).toEqual([0, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n]);
      expect(stats.map((s) => file.isExact(s))).toEqual([true, true, true, true, false, false, false]);
      expect(file.value(stats[3]!)).toBe(Number.MAX_SAFE_INTEGER);
    } finally {
      file.close();
    }
  });

  it('reads into a caller\'s buffer with readInto, leaving its own data as it was', async () => {
    const { writeFileSync } = await import('node:fs');
    const path = writeImage(buildImage({ descs: [counter('exits', 1), counter('halt_exits', 5)] }));
    const file = StatsFile.openImage(path);
    try {
      writeFileSync(path, buildImage({ descs: [counter('exits', 2), counter('halt_exits', 6)] }));
      const words = new Uint32Array(8);
      file.readInto(new Uint8Array(words.buffer));
      expect([words[0], words[2]]).toEqual([2, 6]);
      expect(file.value(file.table.stats[0]!)).toBe(1);
      expect(() => file.readInto(new Uint8Array(8))).toThrow(/^readInto: the buffer has 8 bytes, but the data block of stats fd \d+ \(kvm-[^)]+\) has 16: pass one of at least table.dataSize bytes$/);
      writeFileSync(path, '');
      expect(() => file.readInto(new Uint8Array(words.buffer))).toThrow(StatsReadError);
    } finally {
      file.close();
    }
  });

  it('keeps no data block of its own with keepOpenData false until a read, and still checks the block at open', async () => {
    const { writeFileSync } = await import('node:fs');
    const path = writeImage(buildImage({ descs: [counter('exits', 7), counter('halt_exits', 9)] }));
    const file = StatsFile.openImage(path, { keepOpenData: false });
    try {
      expect([...file.words]).toEqual([0, 0, 0, 0]);
      const words = new Uint32Array(4);
      file.readInto(new Uint8Array(words.buffer));
      expect([words[0], words[2]]).toEqual([7, 9]);
      expect(file.value(file.table.stats[0]!)).toBe(0);
      file.read();
      expect([file.value(file.table.stats[0]!), file.value(file.table.stats[1]!)]).toEqual([7, 9]);
    } finally {
      file.close();
    }
    // A block cut short is refused at open as with the block kept.
    writeFileSync(path, buildImage({ descs: [counter('exits', 7), counter('halt_exits', 9)] }).subarray(0, -8));
    expect(() => StatsFile.openImage(path, { keepOpenData: false })).toThrow(/data block ends early: 8 of 16 bytes/);
  });

  it('does one pread per read and sees new values', async () => {
    const { writeFileSync } = await import('node:fs');
    const path = writeImage(buildImage({ descs: [counter('exits', 1)] }));
    const file = StatsFile.openImage(path);
    try {
      expect(file.value(file.table.stats[0]!)).toBe(1);
      writeFileSync(path, buildImage({ descs: [counter('exits', 2)] }));
      file.read();
      expect(file.value(file.table.stats[0]!)).toBe(2);
      writeFileSync(path, buildImage({ descs: [counter('exits', 2)] }).subarray(0, 100));
      expect(() => file.read()).toThrow(StatsReadError);
      expect(() => file.read()).toThrow(/returned 0 of 8 bytes: the image is truncated/);
    } finally {
      file.close();
    }
  });
});
