/**
 * The fused path's meeting point: a producer paired with an exporter that writes OTLP protobuf
 * (KvmOtlpMetricExporter) writes its series' numbers straight into that exporter's request bytes
 * (a SeriesFrame), instead of into data points the exporter would read back. Every number such a
 * point carries is fixed width (times, values, counts, sums, bucket counts), so each series has
 * fixed slots in the frame: the exporter lays the frame out (exporters/otlp-fused.ts) whenever
 * the producer's emitters change, and gives each emitter the offsets of its points' bodies
 * (WirePoints); between those changes, a collection only fills the slots.
 *
 * What is written here: little-endian 64-bit words as otlp-transformer converts numbers
 * (sfixed64 and fixed64 integers, doubles) and times as fixed64 nanoseconds. The layout of a
 * point's fields is the exporter's (its schema), handed over as PointSlots.
 */
import type { HrTime } from '@opentelemetry/api';
import type { AggregationTemporality, ScopeMetrics } from '@opentelemetry/sdk-metrics';
import { TWO_POW_32 as POW_32 } from '../stats/u64.js';
import type { Emitter, MetricSlot } from './plan.js';

// Bound to this module's own const (stats/u64.ts says why).
const TWO_POW_32 = POW_32;

/** Writes an sfixed64 (otlp-transformer's conversion: a non-integer is truncated) at `pos`. */
export function setSfixed64(view: DataView, pos: number, value: number): void {
  let low: number;
  let high: number;
  if (value >= 0) {
    low = value >>> 0;
    high = (value / TWO_POW_32) >>> 0;
  } else {
    const abs = Math.abs(value);
    low = (~(abs >>> 0) + 1) >>> 0;
    high = ~((abs / TWO_POW_32) >>> 0) >>> 0;
    if (low === 0) high = (high + 1) >>> 0;
  }
  view.setUint32(pos, low, true);
  view.setUint32(pos + 4, high, true);
}

/** Writes a fixed64 count as otlp-transformer converts it (low and high words by >>> 0). */
export function setFixed64(view: DataView, pos: number, value: number): void {
  view.setUint32(pos, value >>> 0, true);
  view.setUint32(pos + 4, (value / TWO_POW_32) >>> 0, true);
}

/**
 * Writes an HrTime as fixed64 nanoseconds at `pos`. seconds * 1e9 is past 2^53 for any recent
 * date, so seconds are split at bit 16 and the two products (each exact) are added in 32-bit
 * halves with the carry.
 */
export function setUnixNanos(view: DataView, pos: number, time: HrTime): void {
  const seconds = time[0];
  const nanos = time[1];
  const lowPart = (seconds & 0xffff) * 1e9;
  const highPart = ((seconds / 0x1_0000) >>> 0) * 1e9;
  const low = (lowPart >>> 0) + (((highPart & 0xffff) * 0x1_0000) >>> 0) + nanos;
  const carry = Math.floor(low / TWO_POW_32);
  view.setUint32(pos, low >>> 0, true);
  view.setUint32(pos + 4, (Math.floor(lowPart / TWO_POW_32) + ((highPart / 0x1_0000) >>> 0) + carry) >>> 0, true);
}

/** The fixed64 words of the last HrTime converted: a collection's points share a few times
 * (its end, each source's start), so most conversions are a compare. */
export class TimeWords {
  seconds = -1;
  nanos = -1;
  low = 0;
  high = 0;

  /** Writes `time` at `pos`, converting it only if it differs from the last one. */
  set(view: DataView, pos: number, time: HrTime): void {
    const seconds = time[0];
    const nanos = time[1];
    if (seconds !== this.seconds || nanos !== this.nanos) {
      setUnixNanos(view, pos, time);
      this.seconds = seconds;
      this.nanos = nanos;
      this.low = view.getUint32(pos, true);
      this.high = view.getUint32(pos + 4, true);
      return;
    }
    view.setUint32(pos, this.low, true);
    view.setUint32(pos + 4, this.high, true);
  }
}

/** Where a point's 8-byte fields are from the start of its body (the exporter's schema). A
 * histogram's buckets are not here: their place depends on the point (WirePoints.buckets). */
export interface PointSlots {
  readonly start: number;
  readonly time: number;
  /** A number point's value. */
  readonly value: number;
  /** A histogram's count and sum. */
  readonly count: number;
  readonly sum: number;
}

/** An emitter's points in the frame: per entry j of its plan's slots, three offsets in the
 * frame's bytes from `offsets[pointIndex(at, j)]` (POINT_BODY, POINT_END, POINT_BUCKETS): where the
 * point's body starts, where it ends and, for a histogram, where its bucket counts start. One
 * array holds every emitter's offsets of a layout: three arrays per emitter cost 1.1 KB per fd. */
export interface WirePoints {
  readonly frame: SeriesFrame;
  readonly offsets: Int32Array;
  readonly at: number;
}

/** The offsets of point j of a WirePoints: `offsets[pointIndex(at, j) + POINT_...]`. */
export const POINT_BODY = 0;
export const POINT_END = 1;
export const POINT_BUCKETS = 2;

/** Where in WirePoints.offsets the offsets of point j of the emitter whose own start at `at`
 * are (add POINT_BODY, POINT_END, POINT_BUCKETS); with j the emitter's number of points, where
 * the next emitter's start. */
export function pointIndex(at: number, j: number): number {
  return at + 3 * j;
}

/** Where point j of `wire` has its body in the frame. */
export function pointBody(wire: WirePoints, j: number): number {
  return wire.offsets[pointIndex(wire.at, j) + POINT_BODY]!;
}

/** The bytes the series are written into, and what a collection writes into every point. */
export class SeriesFrame {
  bytes: Uint8Array = new Uint8Array(0);
  view: DataView = new DataView(this.bytes.buffer);
  readonly slots: PointSlots;
  /** This collection's time (every point's end), as fixed64 words. */
  #endLow = 0;
  #endHigh = 0;
  readonly #start = new TimeWords();

  constructor(slots: PointSlots) {
    this.slots = slots;
  }

  setBytes(bytes: Uint8Array): void {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** A collection's time, written as every point's end. */
  setEnd(time: HrTime): void {
    const scratch = new DataView(new ArrayBuffer(8));
    setUnixNanos(scratch, 0, time);
    this.#endLow = scratch.getUint32(0, true);
    this.#endHigh = scratch.getUint32(4, true);
  }

  #times(body: number, startTime: HrTime): void {
    const view = this.view;
    this.#start.set(view, body + this.slots.start, startTime);
    this.timeOnly(body);
  }

  /** A counter's or gauge's point: its start, this collection's time, its value. */
  number(body: number, startTime: HrTime, integer: boolean, value: number): void {
    this.#times(body, startTime);
    if (integer) setSfixed64(this.view, body + this.slots.value, value);
    else this.view.setFloat64(body + this.slots.value, value, true);
  }

  /** A point whose value is the same as in the previous collection: only its time is new. */
  timeOnly(body: number): void {
    const view = this.view;
    const time = body + this.slots.time;
    view.setUint32(time, this.#endLow, true);
    view.setUint32(time + 4, this.#endHigh, true);
  }

  /** A point exported as read: this collection's time, and its value's words as the kernel has
   * them (an sfixed64 below 2^53 has the same bytes); its start is already in place. */
  numberAsRead(body: number, low: number, high: number): void {
    this.timeOnly(body);
    const view = this.view;
    const value = body + this.slots.value;
    view.setUint32(value, low, true);
    view.setUint32(value + 4, high, true);
  }

  /** A histogram's point: its start, this collection's time, count, sum where it has one, and
   * its bucket counts: `raw`, the kernel's u64 words as read (the same bytes as fixed64 below
   * 2^53), copied as they are, else each count converted. */
  histogram(body: number, buckets: number, startTime: HrTime, count: number, sum: number | undefined, counts: readonly number[], size: number, raw: Uint8Array | undefined): void {
    this.#times(body, startTime);
    const view = this.view;
    setFixed64(view, body + this.slots.count, count);
    if (sum !== undefined) view.setFloat64(body + this.slots.sum, sum, true);
    if (raw !== undefined) {
      this.bytes.set(raw, buckets);
      return;
    }
    for (let b = 0; b < size; b++) setFixed64(view, buckets + 8 * b, counts[b]!);
  }
}

/**
 * The exporter's side of a pairing (exporters/otlp-fused.ts): it finds the producer's scope in
 * the requests it encodes and splices the frame in its place.
 */
export interface FrameLayout {
  readonly frame: SeriesFrame;
  /** Before a collection writes into the frame: the bytes of the last request, or a copy of
   * them if that request is still being sent. */
  begin(): void;
  /** After a collection whose emitters (in order) differ from the last one's: lays the frame
   * out anew, every metric of `slots` (in order) with its points, in emitter order, taken from
   * the old frame or, for an emitter without WirePoints, from its data points; then gives each
   * emitter its WirePoints (undefined for one that emitted nothing). */
  arrange(slots: Iterable<MetricSlot>, emitters: readonly Emitter[], temporality: AggregationTemporality): void;
}

/** What a producer is paired with: KvmOtlpMetricExporter. Its workings stay this package's
 * own (the public API names only this): pairProducer returns a FrameLayout. */
export interface FramePairing {
  /** The FrameLayout that writes `scope` (the producer's, handed out at every collection)
   * into the exporter's requests; undefined when the exporter does not write OTLP protobuf
   * (http/json): the producer then builds data points as usual. */
  pairProducer(scope: ScopeMetrics): unknown;
}
