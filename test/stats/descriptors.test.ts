/**
 * The descriptor table of a stats image (src/stats/descriptors.ts), on synthetic images laid out
 * byte by byte: tables shared between fds, stats of an unknown kind skipped and said, and every
 * check of the kernel's selftest and the limits that stop a hostile image. (Reading values:
 * test/stats/stats-file.test.ts; mutated images by the hundred thousand: image-properties.test.ts.)
 */
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  KVM_STATS_TYPE_LINEAR_HIST,
  KVM_STATS_TYPE_LOG_HIST,
  KVM_STATS_UNIT_BOOLEAN,
  KVM_STATS_UNIT_BYTES,
  KVM_STATS_UNIT_CYCLES,
  KVM_STATS_UNIT_SECONDS,
} from '../../src/abi/kvm.js';
import { LIMITS, StatsImageError } from '../../src/stats/descriptors.js';
import { StatsFile } from '../../src/stats/stats-file.js';
import { type DescSpec, type ImageSpec, buildImage, openImage, writeImage } from '../helpers/image.js';

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

describe('the descriptor table', () => {
  it('shares one descriptor table between fds with the same descriptors', () => {
    const descs = [counter('exits'), counter('halt_exits')];
    const a = openImage({ id: 'kvm-1/vcpu-0', descs: descs.map((d) => ({ ...d, values: [1] })) });
    const b = openImage({ id: 'kvm-1/vcpu-1', descs: descs.map((d) => ({ ...d, values: [2] })) });
    const c = openImage({ id: 'kvm-1/vcpu-2', descs: [counter('exits'), counter('other')] });
    expect(a.table).toBe(b.table);
    expect(a.table).not.toBe(c.table);
    expect([a.value(a.table.stats[0]!), b.value(b.table.stats[0]!)]).toEqual([1, 2]);
    for (const f of [a, b, c]) f.close();
  });

  it('skips stats of an unknown type, unit, base or flag, says why, and reads the rest', () => {
    const file = openImage({
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
    const file = openImage({ descs: [], dataSize: 0 });
    expect(file.table.stats).toEqual([]);
    file.close();
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
