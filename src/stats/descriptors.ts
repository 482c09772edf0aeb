/**
 * The header, id and descriptor table of a stats image: parsed and checked once per fd, with
 * every check the kernel's own selftest makes (tools/testing/selftests/kvm/kvm_binary_stats_test.c).
 * A malformed image is rejected with one StatsImageError naming the field; a stat this code
 * does not understand (a newer kernel's type, unit, base or flag) is skipped and reported.
 */
import { endianness } from 'node:os';
import { fieldOffset } from '../abi/layout.js';
import {
  KVM_STATS_BASE_MASK,
  KVM_STATS_BASE_MAX,
  KVM_STATS_BASE_POW2,
  KVM_STATS_BASE_SHIFT,
  KVM_STATS_DESC,
  KVM_STATS_HEADER,
  KVM_STATS_ID_PATTERN,
  KVM_STATS_TYPE_CUMULATIVE,
  KVM_STATS_TYPE_INSTANT,
  KVM_STATS_TYPE_LINEAR_HIST,
  KVM_STATS_TYPE_LOG_HIST,
  KVM_STATS_TYPE_MASK,
  KVM_STATS_TYPE_MAX,
  KVM_STATS_TYPE_PEAK,
  KVM_STATS_TYPE_SHIFT,
  KVM_STATS_UNIT_BOOLEAN,
  KVM_STATS_UNIT_BYTES,
  KVM_STATS_UNIT_CYCLES,
  KVM_STATS_UNIT_MASK,
  KVM_STATS_UNIT_NONE,
  KVM_STATS_UNIT_SECONDS,
  KVM_STATS_UNIT_SHIFT,
  KVM_STATS_VALUE_SIZE,
} from '../abi/kvm.js';

export type StatType = 'cumulative' | 'instant' | 'peak' | 'linear-histogram' | 'log2-histogram';
export type StatUnit = 'none' | 'bytes' | 'seconds' | 'cycles' | 'boolean';
export type StatBase = 10 | 2;
export type StatsTarget = 'vm' | 'vcpu';

/** Bounds that keep a hostile image from making the reader allocate much. The kernel uses
 * name_size 48, under 100 descriptors and about 1 KiB of data. */
export const LIMITS = {
  maxNameSize: 256,
  maxDescriptors: 1024,
  maxDataSize: 1 << 20,
} as const;

const TYPES = new Map<number, StatType>([
  [KVM_STATS_TYPE_CUMULATIVE, 'cumulative'],
  [KVM_STATS_TYPE_INSTANT, 'instant'],
  [KVM_STATS_TYPE_PEAK, 'peak'],
  [KVM_STATS_TYPE_LINEAR_HIST, 'linear-histogram'],
  [KVM_STATS_TYPE_LOG_HIST, 'log2-histogram'],
]);
const UNITS = new Map<number, StatUnit>([
  [KVM_STATS_UNIT_NONE, 'none'],
  [KVM_STATS_UNIT_BYTES, 'bytes'],
  [KVM_STATS_UNIT_SECONDS, 'seconds'],
  [KVM_STATS_UNIT_CYCLES, 'cycles'],
  [KVM_STATS_UNIT_BOOLEAN, 'boolean'],
]);
const KNOWN_FLAG_BITS = KVM_STATS_TYPE_MASK | KVM_STATS_UNIT_MASK | KVM_STATS_BASE_MASK;

export interface StatsHeader {
  readonly flags: number;
  readonly nameSize: number;
  readonly numDesc: number;
  readonly idOffset: number;
  readonly descOffset: number;
  readonly dataOffset: number;
}

/** One statistic as the kernel describes it. */
export interface StatDescriptor {
  readonly name: string;
  readonly type: StatType;
  readonly unit: StatUnit;
  readonly base: StatBase;
  readonly exponent: number;
  /** Number of u64 values: 1, or the number of histogram buckets. */
  readonly size: number;
  /** Linear histograms only, else 0. */
  readonly bucketSize: number;
  /** Byte offset from the start of the data block. */
  readonly offset: number;
  /** Position in the descriptor table. */
  readonly index: number;
}

export interface SkippedStat {
  readonly name: string;
  readonly reason: string;
}

/** A parsed, checked descriptor table. Identical tables (every vCPU of a kernel) share one. */
export interface DescriptorTable {
  readonly nameSize: number;
  /** The stats this code understands, in table order. */
  readonly stats: readonly StatDescriptor[];
  /** The stats it does not, with why. */
  readonly skipped: readonly SkippedStat[];
  /** Bytes of the data block: max(offset + size * 8) over every descriptor. */
  readonly dataSize: number;
}

/** What the id string says: the creating thread, and the vCPU index for a vCPU. */
export interface StatsId {
  readonly id: string;
  readonly target: StatsTarget;
  readonly threadId: number;
  readonly vcpuId: number | undefined;
}

/** A stats image that breaks the ABI: `field` says where (e.g. "header.desc_offset"). */
export class StatsImageError extends Error {
  readonly field: string;

  constructor(field: string, problem: string) {
    super(`invalid KVM stats image: ${field} ${problem}`);
    this.name = 'StatsImageError';
    this.field = field;
  }
}

const LITTLE_ENDIAN = endianness() === 'LE';

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function parseHeader(bytes: Uint8Array): StatsHeader {
  if (bytes.byteLength < KVM_STATS_HEADER.size) {
    throw new StatsImageError('header', `is ${bytes.byteLength} bytes, shorter than the ${KVM_STATS_HEADER.size}-byte struct kvm_stats_header`);
  }
  const v = view(bytes);
  const u32 = (name: string): number => v.getUint32(fieldOffset(KVM_STATS_HEADER, name), LITTLE_ENDIAN);
  const header: StatsHeader = {
    flags: u32('flags'),
    nameSize: u32('name_size'),
    numDesc: u32('num_desc'),
    idOffset: u32('id_offset'),
    descOffset: u32('desc_offset'),
    dataOffset: u32('data_offset'),
  };
  const min = KVM_STATS_HEADER.size;
  if (header.nameSize < 4 || header.nameSize > LIMITS.maxNameSize) {
    throw new StatsImageError('header.name_size', `is ${header.nameSize}, outside 4..${LIMITS.maxNameSize}`);
  }
  if (header.numDesc > LIMITS.maxDescriptors) {
    throw new StatsImageError('header.num_desc', `is ${header.numDesc}, more than the limit of ${LIMITS.maxDescriptors}`);
  }
  for (const [field, offset] of [
    ['id_offset', header.idOffset],
    ['desc_offset', header.descOffset],
    ['data_offset', header.dataOffset],
  ] as const) {
    if (offset < min) throw new StatsImageError(`header.${field}`, `is ${offset}, inside the ${min}-byte header`);
  }
  const descEnd = header.descOffset + descriptorBlockSize(header);
  if (overlaps(header.idOffset, header.idOffset + header.nameSize, header.descOffset, descEnd)) {
    throw new StatsImageError('header.id_offset', `puts the id [${header.idOffset}, ${header.idOffset + header.nameSize}) over the descriptor block [${header.descOffset}, ${descEnd})`);
  }
  return header;
}

/** Bytes of one descriptor including its name. */
export function descriptorSize(header: StatsHeader): number {
  return KVM_STATS_DESC.size + header.nameSize;
}

/** Bytes of the descriptor block. */
export function descriptorBlockSize(header: StatsHeader): number {
  return header.numDesc * descriptorSize(header);
}

/** A NUL-terminated string within `bytes`, or undefined if there is no NUL. */
function cString(bytes: Uint8Array): string | undefined {
  const end = bytes.indexOf(0);
  return end < 0 ? undefined : Buffer.from(bytes.buffer, bytes.byteOffset, end).toString('latin1');
}

export function parseId(bytes: Uint8Array): StatsId {
  const id = cString(bytes);
  if (id === undefined) throw new StatsImageError('id', `has no NUL within name_size (${bytes.byteLength} bytes)`);
  if (!id.startsWith('kvm')) throw new StatsImageError('id', `is ${JSON.stringify(id)}, which does not start with "kvm"`);
  const match = KVM_STATS_ID_PATTERN.exec(id);
  // Kernels write kvm-<tid>[/vcpu-<n>]; anything else that starts with "kvm" is kept as a VM.
  return {
    id,
    target: match?.[2] !== undefined ? 'vcpu' : 'vm',
    threadId: match ? Number(match[1]) : 0,
    vcpuId: match?.[2] !== undefined ? Number(match[2]) : undefined,
  };
}

/** Names become metric names: keep to what OpenTelemetry instrument names allow. */
const USABLE_NAME = /^[A-Za-z][A-Za-z0-9_.\-/]{0,200}$/;

/** Exponent rules of the selftest, by unit. */
function exponentProblem(unit: StatUnit, exponent: number): string | undefined {
  switch (unit) {
    case 'none':
    case 'bytes':
    case 'cycles':
      return exponent < 0 ? `is ${exponent}, but must be >= 0 for unit ${unit}` : undefined;
    case 'seconds':
      return exponent > 0 ? `is ${exponent}, but must be <= 0 for unit seconds` : undefined;
    case 'boolean':
      return exponent !== 0 ? `is ${exponent}, but must be 0 for unit boolean` : undefined;
  }
}

/**
 * Parses and checks the descriptor block (num_desc * (16 + name_size) bytes). Problems that
 * break the ABI throw; stats of an unknown kind are returned in `skipped`.
 */
export function parseDescriptors(block: Uint8Array, header: StatsHeader): DescriptorTable {
  const size = descriptorSize(header);
  if (block.byteLength < header.numDesc * size) {
    throw new StatsImageError('descriptors', `block is ${block.byteLength} bytes, shorter than num_desc * ${size}`);
  }
  const v = view(block);
  const stats: StatDescriptor[] = [];
  const skipped: SkippedStat[] = [];
  const names = new Set<string>();
  const blocks: [start: number, end: number, name: string][] = [];
  let dataSize = 0;
  for (let i = 0; i < header.numDesc; i++) {
    const at = i * size;
    const flags = v.getUint32(at + fieldOffset(KVM_STATS_DESC, 'flags'), LITTLE_ENDIAN);
    const exponent = v.getInt16(at + fieldOffset(KVM_STATS_DESC, 'exponent'), LITTLE_ENDIAN);
    const count = v.getUint16(at + fieldOffset(KVM_STATS_DESC, 'size'), LITTLE_ENDIAN);
    const offset = v.getUint32(at + fieldOffset(KVM_STATS_DESC, 'offset'), LITTLE_ENDIAN);
    const bucketSize = v.getUint32(at + fieldOffset(KVM_STATS_DESC, 'bucket_size'), LITTLE_ENDIAN);
    const nameStart = at + fieldOffset(KVM_STATS_DESC, 'name');
    const name = cString(block.subarray(nameStart, nameStart + header.nameSize));
    const field = (f: string): string => `descriptor[${i}]${name ? ` (${name})` : ''}.${f}`;
    if (name === undefined) throw new StatsImageError(field('name'), `has no NUL within name_size (${header.nameSize} bytes)`);
    if (count === 0) throw new StatsImageError(field('size'), 'is 0');
    if (offset % KVM_STATS_VALUE_SIZE !== 0) throw new StatsImageError(field('offset'), `is ${offset}, not 8-byte aligned`);
    const end = offset + count * KVM_STATS_VALUE_SIZE;
    if (end > LIMITS.maxDataSize) {
      throw new StatsImageError(field('offset'), `puts the data block past ${LIMITS.maxDataSize} bytes (offset ${offset}, size ${count})`);
    }
    dataSize = Math.max(dataSize, end);
    blocks.push([offset, end, name]);

    const typeCode = (flags & KVM_STATS_TYPE_MASK) >>> KVM_STATS_TYPE_SHIFT;
    const unitCode = (flags & KVM_STATS_UNIT_MASK) >>> KVM_STATS_UNIT_SHIFT;
    const baseCode = flags & KVM_STATS_BASE_MASK;
    const isLinear = (flags & KVM_STATS_TYPE_MASK) === KVM_STATS_TYPE_LINEAR_HIST;
    // bucket_size is meaningful only for linear histograms, whatever else is unknown.
    if (isLinear && bucketSize === 0) throw new StatsImageError(field('bucket_size'), 'is 0 for a linear histogram');
    if (!isLinear && bucketSize !== 0 && typeCode <= KVM_STATS_TYPE_MAX) {
      throw new StatsImageError(field('bucket_size'), `is ${bucketSize}, but only linear histograms have one`);
    }

    let reason: string | undefined;
    if (!TYPES.has(flags & KVM_STATS_TYPE_MASK)) reason = `unknown type ${typeCode}`;
    else if (!UNITS.has(flags & KVM_STATS_UNIT_MASK)) reason = `unknown unit ${unitCode}`;
    else if (baseCode > KVM_STATS_BASE_MAX) reason = `unknown base ${baseCode >>> KVM_STATS_BASE_SHIFT}`;
    else if ((flags & ~KNOWN_FLAG_BITS) !== 0) reason = `unknown flag bits 0x${(flags & ~KNOWN_FLAG_BITS).toString(16)}`;
    else if (!USABLE_NAME.test(name)) reason = `name ${JSON.stringify(name)} cannot be a metric name`;
    else if (names.has(name)) reason = 'duplicate name';
    if (reason !== undefined) {
      skipped.push({ name, reason });
      continue;
    }
    const unit = UNITS.get(flags & KVM_STATS_UNIT_MASK)!;
    const problem = exponentProblem(unit, exponent);
    if (problem) throw new StatsImageError(field('exponent'), problem);
    names.add(name);
    stats.push({
      name,
      type: TYPES.get(flags & KVM_STATS_TYPE_MASK)!,
      unit,
      base: baseCode === KVM_STATS_BASE_POW2 ? 2 : 10,
      exponent,
      size: count,
      bucketSize,
      offset,
      index: i,
    });
  }
  if (dataSize < header.numDesc * KVM_STATS_VALUE_SIZE) {
    throw new StatsImageError('data', `block is ${dataSize} bytes, less than num_desc * 8 (${header.numDesc * KVM_STATS_VALUE_SIZE})`);
  }
  blocks.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < blocks.length; i++) {
    const [start, , name] = blocks[i]!;
    const [, previousEnd, previousName] = blocks[i - 1]!;
    if (start < previousEnd) throw new StatsImageError(`descriptor (${name}).offset`, `overlaps the data of ${previousName}`);
  }
  return { nameSize: header.nameSize, stats, skipped, dataSize };
}

function overlaps(start1: number, end1: number, start2: number, end2: number): boolean {
  return start1 < end1 && start2 < end2 && start1 < end2 && start2 < end1;
}

/** The layout checks that need the data block's size: it must not overlap the others. */
export function checkBlocks(header: StatsHeader, table: DescriptorTable): void {
  const descEnd = header.descOffset + descriptorBlockSize(header);
  const dataEnd = header.dataOffset + table.dataSize;
  const idEnd = header.idOffset + header.nameSize;
  if (overlaps(header.dataOffset, dataEnd, header.descOffset, descEnd)) {
    throw new StatsImageError(
      'header.data_offset',
      `puts the data block [${header.dataOffset}, ${dataEnd}) over the descriptor block [${header.descOffset}, ${descEnd})`,
    );
  }
  if (overlaps(header.dataOffset, dataEnd, header.idOffset, idEnd)) {
    throw new StatsImageError('header.id_offset', `puts the id [${header.idOffset}, ${idEnd}) over the data block [${header.dataOffset}, ${dataEnd})`);
  }
}

const TABLE_CACHE_LIMIT = 64;

/** Headers seen so far, by their fields: every fd of a kernel has one of two, so thousands of
 * fds share them rather than hold a copy each. Bounded like the tables. */
const headerCache = new Map<string, StatsHeader>();

/** `header`, or an equal one seen before. */
export function sharedHeader(header: StatsHeader): StatsHeader {
  const key = `${header.flags},${header.nameSize},${header.numDesc},${header.idOffset},${header.descOffset},${header.dataOffset}`;
  const cached = headerCache.get(key);
  if (cached) return cached;
  if (headerCache.size < TABLE_CACHE_LIMIT) headerCache.set(key, header);
  return header;
}

/**
 * Tables parsed so far, by their exact bytes. Every vCPU of a kernel has the same table, so a
 * host with thousands of vCPUs keeps two. Bounded, so a stream of odd images cannot grow it.
 */
const tableCache = new Map<string, DescriptorTable>();

export function sharedDescriptorTable(block: Uint8Array, header: StatsHeader): DescriptorTable {
  const key = `${header.nameSize}:${Buffer.from(block.buffer, block.byteOffset, block.byteLength).toString('latin1')}`;
  const cached = tableCache.get(key);
  if (cached) return cached;
  const table = parseDescriptors(block, header);
  if (tableCache.size < TABLE_CACHE_LIMIT) tableCache.set(key, table);
  return table;
}
