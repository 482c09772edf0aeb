/**
 * Protobuf wire primitives for the OTLP encoder, each writing what otlp-transformer's writer
 * writes for the same JavaScript value (the same integer conversions, the same varints for
 * negative numbers, TextEncoder's UTF-8), so that encodings can be compared byte for byte.
 */
import { TWO_POW_32 as POW_32 } from '../stats/u64.js';

// Bound to this module's own const (stats/u64.ts says why).
const TWO_POW_32 = POW_32;
const encoder = new TextEncoder();

/** Bytes of a varint for a length or tag (0 to 2^53). */
export function varintSize(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x20_0000) return 3;
  if (value < 0x1000_0000) return 4;
  if (value < 0x8_0000_0000) return 5;
  if (value < 0x400_0000_0000) return 6;
  if (value < 0x2_0000_0000_0000) return 7;
  if (value < 0x100_0000_0000_0000) return 8;
  return 9;
}

/** A growable byte buffer with the protobuf writes the encoder needs. */
export class Writer {
  bytes: Uint8Array;
  view: DataView;
  pos = 0;

  constructor(size = 256) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }

  /** Writes into `bytes` from `pos` on (which must have room for what is written). */
  static over(bytes: Uint8Array, pos: number): Writer {
    const writer = new Writer(0);
    writer.bytes = bytes;
    writer.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    writer.pos = pos;
    return writer;
  }

  ensure(more: number): void {
    const needed = this.pos + more;
    if (needed <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < needed) size *= 2;
    const bytes = new Uint8Array(size);
    bytes.set(this.bytes.subarray(0, this.pos));
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer);
  }

  /** A varint of any integer: negative ones as their 64-bit two's complement (10 bytes), as
   * protobuf's int64 has them. */
  varint(value: number): void {
    this.ensure(10);
    const bytes = this.bytes;
    let pos = this.pos;
    if (value >= 0 && value <= 0xffff_ffff) {
      let v = value >>> 0;
      while (v > 0x7f) {
        bytes[pos++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      bytes[pos++] = v;
    } else {
      let [low, high] = splitU64(value);
      while (high > 0 || low > 0x7f) {
        bytes[pos++] = (low & 0x7f) | 0x80;
        low = ((low >>> 7) | (high << 25)) >>> 0;
        high >>>= 7;
      }
      bytes[pos++] = low & 0x7f;
    }
    this.pos = pos;
  }

  tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  byte(value: number): void {
    this.ensure(1);
    this.bytes[this.pos++] = value;
  }

  fixed64(low: number, high: number): void {
    this.ensure(8);
    this.view.setUint32(this.pos, low >>> 0, true);
    this.view.setUint32(this.pos + 4, high >>> 0, true);
    this.pos += 8;
  }

  double(value: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, value, true);
    this.pos += 8;
  }

  /** Length and UTF-8 bytes (TextEncoder's: a lone surrogate becomes U+FFFD). */
  string(text: string): void {
    let ascii = true;
    for (let i = 0; i < text.length; i++) {
      if (text.charCodeAt(i) > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (!ascii) return this.lengthDelimited(encoder.encode(text));
    this.varint(text.length);
    this.ensure(text.length);
    const bytes = this.bytes;
    let pos = this.pos;
    for (let i = 0; i < text.length; i++) bytes[pos++] = text.charCodeAt(i);
    this.pos = pos;
  }

  /** Length and bytes. */
  lengthDelimited(data: Uint8Array): void {
    this.varint(data.length);
    this.raw(data);
  }

  raw(data: Uint8Array): void {
    this.ensure(data.length);
    this.bytes.set(data, this.pos);
    this.pos += data.length;
  }

  /** A copy of what was written. */
  finish(): Uint8Array {
    return this.bytes.slice(0, this.pos);
  }
}

/** Low and high 32 bits of an integer's 64-bit two's complement, as otlp-transformer splits a
 * number for sfixed64 and varints. */
export function splitU64(value: number): [number, number] {
  if (value >= 0) return [value >>> 0, (value / TWO_POW_32) >>> 0];
  const abs = Math.abs(value);
  let low = ~(abs >>> 0) >>> 0;
  let high = ~((abs / TWO_POW_32) >>> 0) >>> 0;
  low = (low + 1) >>> 0;
  if (low === 0) high = (high + 1) >>> 0;
  return [low, high];
}
