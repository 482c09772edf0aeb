/**
 * The image reader on synthetic images laid out byte by byte: every layout the ABI allows,
 * every check of the kernel's selftest, and the limits that stop a hostile image.
 */
import { readdirSync } from 'node:fs';
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
  KVM_STATS_UNIT_NONE,
  KVM_STATS_UNIT_SECONDS,
} from '../../src/abi/kvm.js';
import { LIMITS, StatsImageError } from '../../src/stats/descriptors.js';
import { StatsFile, StatsReadError } from '../../src/stats/stats-file.js';
import { type DescSpec, type ImageSpec, buildImage, writeImage } from '../helpers/image.js';

function open(spec: ImageSpec): StatsFile {
  return StatsFile.openImage(writeImage(buildImage(spec)));
}

function openFails(spec: ImageSpec | Uint8Array): StatsImageError {
  const bytes = spec instanceof Uint8Array ? spec : buildImage(spec);
  try {
    StatsFile.openImage(writeImage(bytes)).close();
  } catch (error) {
    expect(error).toBeInstanceOf(StatsImageError);
    return error as StatsImageError;
  }
  throw new Error('the image was accepted');
}

const counter = (name: string, value = 0): DescSpec => ({ name, values: [value] });

describe('reading a valid image', () => {
  it('reads the header, id, every kind of stat and its values', () => {
    const file = open({
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
    const file = open({ id: 'kvm-77', descs: [counter('a')] });
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
    const file = open({ descs, dataOffset: 40, descOffset: 200, idOffset: 600, dataSize: 72 });
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
    const file = open({ descs: values.map((v, i) => ({ name: `v${i}`, values: [v] })) });
    try {
      const stats = file.table.stats;
      expect(stats.map((s) => file.exactValue(s))).toEqual([0, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n]);
      expect(stats.map((s) => file.isExact(s))).toEqual([true, true, true, true, false, false, false]);
      expect(file.value(stats[3]!)).toBe(Number.MAX_SAFE_INTEGER);
    } finally {
      file.close();
    }
  });

  it('shares one descriptor table between fds with the same descriptors', () => {
    const descs = [counter('exits'), counter('halt_exits')];
    const a = open({ id: 'kvm-1/vcpu-0', descs: descs.map((d) => ({ ...d, values: [1] })) });
    const b = open({ id: 'kvm-1/vcpu-1', descs: descs.map((d) => ({ ...d, values: [2] })) });
    const c = open({ id: 'kvm-1/vcpu-2', descs: [counter('exits'), counter('other')] });
    expect(a.table).toBe(b.table);
    expect(a.table).not.toBe(c.table);
    expect([a.value(a.table.stats[0]!), b.value(b.table.stats[0]!)]).toEqual([1, 2]);
    for (const f of [a, b, c]) f.close();
  });

  it('skips stats of an unknown type, unit, base or flag, says why, and reads the rest', () => {
    const file = open({
      descs: [
        { name: 'future_type', flags: 0x5, values: [1] },
        { name: 'future_unit', flags: 0x50, values: [2] },
        { name: 'future_base', flags: 0x200, values: [3] },
        { name: 'future_flag', flags: 0x1000, values: [4] },
        { name: 'bad name!', values: [5] },
        { name: 'known', values: [6] },
      ],
    });
    try {
      expect(file.table.skipped).toEqual([
        { name: 'future_type', reason: 'unknown type 5' },
        { name: 'future_unit', reason: 'unknown unit 5' },
        { name: 'future_base', reason: 'unknown base 2' },
        { name: 'future_flag', reason: 'unknown flag bits 0x1000' },
        { name: 'bad name!', reason: 'name "bad name!" cannot be a metric name' },
      ]);
      expect(file.table.stats.map((s) => [s.name, file.value(s)])).toEqual([['known', 6]]);
      // The data block still spans every descriptor, skipped or not.
      expect(file.table.dataSize).toBe(48);
    } finally {
      file.close();
    }
  });

  it('accepts a table with no stats', () => {
    const file = open({ descs: [], dataSize: 0 });
    expect(file.table.stats).toEqual([]);
    file.close();
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

describe('rejecting a malformed image', () => {
  const ok: DescSpec[] = [{ name: 'a' }, { name: 'b' }];
  const cases: [string, ImageSpec | Uint8Array, string, RegExp][] = [
    ['an image shorter than the header', new Uint8Array(10), 'header', /ends early: 10 of 24 bytes/],
    ['name_size 0', { descs: ok, nameSize: 0 }, 'header.name_size', /outside 4\.\.256/],
    ['a huge name_size', { descs: ok, nameSize: 100_000 }, 'header.name_size', /outside/],
    ['a huge num_desc', { descs: ok, numDesc: 5_000_000 }, 'header.num_desc', /more than the limit/],
    ['desc_offset inside the header', { descs: ok, descOffset: 8 }, 'header.desc_offset', /inside the 24-byte header/],
    ['data_offset inside the header', { descs: ok, dataOffset: 0 }, 'header.data_offset', /inside/],
    ['id_offset inside the header', { descs: ok, idOffset: 4, id: '' }, 'header.id_offset', /inside/],
    ['an id without NUL', { descs: ok, id: 'kvm-'.padEnd(48, '9') }, 'id', /no NUL/],
    ['an id that is not kvm', { descs: ok, id: 'xen-1' }, 'id', /does not start with "kvm"/],
    ['a name without NUL', { descs: [{ name: 'x'.repeat(48) }] }, 'descriptor[0].name', /no NUL within name_size/],
    ['size 0', { descs: [counter('a'), { name: 'b', size: 0 }] }, 'descriptor[1] (b).size', /is 0/],
    ['bucket_size 0 for a linear histogram', { descs: [{ name: 'h', type: KVM_STATS_TYPE_LINEAR_HIST, size: 2 }] }, 'descriptor[0] (h).bucket_size', /is 0 for a linear/],
    ['bucket_size for a counter', { descs: [{ name: 'c', bucketSize: 4 }] }, 'descriptor[0] (c).bucket_size', /only linear histograms/],
    ['bucket_size for a log2 histogram', { descs: [{ name: 'h', type: KVM_STATS_TYPE_LOG_HIST, size: 2, bucketSize: 1 }] }, 'descriptor[0] (h).bucket_size', /only linear/],
    ['a negative exponent without unit', { descs: [{ name: 'n', exponent: -1 }] }, 'descriptor[0] (n).exponent', /must be >= 0 for unit none/],
    ['a negative exponent for bytes', { descs: [{ name: 'n', unit: KVM_STATS_UNIT_BYTES, exponent: -3 }] }, 'descriptor[0] (n).exponent', /unit bytes/],
    ['a negative exponent for cycles', { descs: [{ name: 'n', unit: KVM_STATS_UNIT_CYCLES, exponent: -1 }] }, 'descriptor[0] (n).exponent', /unit cycles/],
    ['a positive exponent for seconds', { descs: [{ name: 'n', unit: KVM_STATS_UNIT_SECONDS, exponent: 3 }] }, 'descriptor[0] (n).exponent', /<= 0 for unit seconds/],
    ['an exponent for a boolean', { descs: [{ name: 'n', unit: KVM_STATS_UNIT_BOOLEAN, exponent: 1 }] }, 'descriptor[0] (n).exponent', /must be 0/],
    ['an unaligned offset', { descs: [{ name: 'a', offset: 4 }] }, 'descriptor[0] (a).offset', /not 8-byte aligned/],
    ['stats sharing data', { descs: [counter('a'), { name: 'b', offset: 0 }] }, 'data', /less than num_desc \* 8/],
    ['overlapping stat data', { descs: [{ name: 'h', type: KVM_STATS_TYPE_LOG_HIST, size: 3 }, { name: 'c', offset: 8 }, counter('d')] }, 'descriptor (c).offset', /overlaps the data of h/],
    ['a data block over the descriptors', { descs: ok, dataOffset: 24 + 48 + 8 }, 'header.data_offset', /over the descriptor block/],
    ['an id over the data', { descs: ok, descOffset: 24, dataOffset: 24 + 128, idOffset: 24 + 128 + 8 }, 'header.id_offset', /over the data block/],
    ['an id over the descriptors', { descs: ok, descOffset: 24, idOffset: 40 }, 'header.id_offset', /over the descriptor block/],
    ['a data offset beyond the limit', { descs: [{ name: 'a', offset: 0xfffffff0 }], dataSize: 0 }, 'descriptor[0] (a).offset', /past 1048576 bytes/],
    ['data past the end of the file', { descs: ok, dataSize: 8 }, 'data', /ends early: 8 of 16 bytes/],
    ['data_offset far past the end', { descs: ok, dataOffset: 0xfffffff8, length: 300 }, 'data', /ends early: 0 of 16 bytes/],
  ];

  it.each(cases)('rejects %s', (_, spec, field, message) => {
    const error = openFails(spec);
    expect(error.field).toBe(field);
    expect(error.message).toMatch(message);
    expect(error.message).toMatch(/^invalid KVM stats image: /);
  });

  it('rejects an image that ends inside the descriptors', () => {
    const image = buildImage({ descs: ok });
    expect(openFails(image.subarray(0, 24 + 48 + 20)).field).toBe('descriptors');
  });

  it('rejects an image that ends inside the id', () => {
    expect(openFails(buildImage({ descs: ok }).subarray(0, 30)).field).toBe('id');
  });

  it('stays within its limits', () => {
    expect(LIMITS.maxDataSize).toBeLessThanOrEqual(1 << 20);
    expect(LIMITS.maxDescriptors * (16 + LIMITS.maxNameSize)).toBeLessThanOrEqual(1 << 19);
  });

  it('closes the fd of every image it rejects', () => {
    const before = readdirSync('/proc/self/fd').length;
    for (let i = 0; i < 200; i++) openFails(cases[i % cases.length]![1]);
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });
});
