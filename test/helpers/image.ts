/**
 * Writes stats images byte by byte, the way the kernel lays them out, so the reader can be
 * tested on any layout, including ones no kernel makes and broken ones.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  KVM_STATS_BASE_POW10,
  KVM_STATS_DESC,
  KVM_STATS_HEADER,
  KVM_STATS_TYPE_CUMULATIVE,
  KVM_STATS_UNIT_NONE,
} from '../../src/abi/kvm.js';
import { StatsFile } from '../../src/stats/stats-file.js';

export interface DescSpec {
  name: string;
  type?: number;
  unit?: number;
  base?: number;
  /** Replaces type | unit | base when given. */
  flags?: number;
  exponent?: number;
  size?: number;
  bucketSize?: number;
  /** Byte offset in the data block; default: after the previous stat. */
  offset?: number;
  /** Values (one per bucket); default zeros. */
  values?: (number | bigint)[];
}

export interface ImageSpec {
  descs: DescSpec[];
  id?: string;
  flags?: number;
  nameSize?: number;
  /** Overrides of header fields; default: header, id, descriptors, data, in that order. */
  numDesc?: number;
  idOffset?: number;
  descOffset?: number;
  dataOffset?: number;
  /** Bytes of data block to write; default: as the descriptors need. */
  dataSize?: number;
  /** Bytes of the whole image; default: up to the end of its last block. */
  length?: number;
}

export function buildImage(spec: ImageSpec): Buffer {
  const nameSize = spec.nameSize ?? 48;
  const descSize = KVM_STATS_DESC.size + nameSize;
  const idOffset = spec.idOffset ?? KVM_STATS_HEADER.size;
  const descOffset = spec.descOffset ?? idOffset + nameSize;
  const dataOffset = spec.dataOffset ?? descOffset + spec.descs.length * descSize;
  let next = 0;
  const offsets = spec.descs.map((d) => {
    const offset = d.offset ?? next;
    next = Math.max(next, offset + (d.size ?? 1) * 8);
    return offset;
  });
  const dataSize = spec.dataSize ?? Math.max(0, ...spec.descs.map((d, i) => offsets[i]! + (d.size ?? 1) * 8));
  const image = Buffer.alloc(spec.length ?? Math.max(idOffset + nameSize, descOffset + spec.descs.length * descSize, dataOffset + dataSize));
  image.writeUInt32LE(spec.flags ?? 0, 0);
  image.writeUInt32LE(nameSize, 4);
  image.writeUInt32LE(spec.numDesc ?? spec.descs.length, 8);
  image.writeUInt32LE(idOffset, 12);
  image.writeUInt32LE(descOffset, 16);
  image.writeUInt32LE(dataOffset, 20);
  image.write(spec.id ?? 'kvm-1234', idOffset, 'latin1');
  spec.descs.forEach((d, i) => {
    const at = descOffset + i * descSize;
    const flags = d.flags ?? (d.type ?? KVM_STATS_TYPE_CUMULATIVE) | (d.unit ?? KVM_STATS_UNIT_NONE) | (d.base ?? KVM_STATS_BASE_POW10);
    image.writeUInt32LE(flags >>> 0, at);
    image.writeInt16LE(d.exponent ?? 0, at + 4);
    image.writeUInt16LE(d.size ?? 1, at + 6);
    image.writeUInt32LE(offsets[i]!, at + 8);
    image.writeUInt32LE(d.bucketSize ?? 0, at + 12);
    image.write(d.name, at + 16, 'latin1');
    (d.values ?? []).forEach((value, bucket) => {
      const position = dataOffset + offsets[i]! + bucket * 8;
      if (position + 8 <= image.length) image.writeBigUInt64LE(BigInt(value), position);
    });
  });
  return image;
}

let dir: string | undefined;

/** Writes an image to a fresh file and returns its path. */
export function writeImage(image: Uint8Array, name = 'image'): string {
  dir ??= mkdtempSync(join(tmpdir(), 'kvm-stats-test-'));
  const path = join(dir, `${name}-${Math.random().toString(36).slice(2)}.kvmstats`);
  writeFileSync(path, image);
  return path;
}

/** An image written to a fresh file and opened as a StatsFile. */
export function openImage(spec: ImageSpec): StatsFile {
  return StatsFile.openImage(writeImage(buildImage(spec)));
}
