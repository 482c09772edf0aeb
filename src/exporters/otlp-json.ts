/**
 * OTLP JSON for metrics: the bytes otlp-transformer's JsonMetricsSerializer writes for the same
 * ResourceMetrics (the same keys in the same order, numbers as JSON.stringify writes them,
 * times as decimal strings of nanoseconds), written straight into a reused byte buffer.
 *
 * JSON numbers have no fixed width, so nothing is patched in place; what is kept between
 * exports is what does not change: per source (attributes object and start time) the text
 * before a number point's end time and the pieces of a histogram point, a few hundred bytes in
 * one allocation, and each bounds array's JSON (the SDK and the producer hand out the same
 * immutable attributes and bounds objects at every collection), and the output buffer. A point
 * is then a copy of its source's text, a copy of the collection's end time with the value's key
 * (converted once per distinct time: a collection's points share it), and the value's digits;
 * bucket counts are digits written in one loop. Exponential histogram points (rare; not the
 * producer's) go through JSON.stringify.
 *
 * The bytes returned are the encoder's own buffer, as with OtlpProtobufEncoder: valid until
 * release(bytes); an encode() while they are held writes into a new buffer.
 */
import { type Attributes, type HrTime, ValueType } from '@opentelemetry/api';
import {
  AggregationTemporality,
  type DataPoint,
  DataPointType,
  type ExponentialHistogram,
  type Histogram,
  type MetricData,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';

const utf8 = new TextEncoder();

/** An attribute value as otlp-transformer's JSON has it. */
function anyValue(value: unknown): unknown {
  const type = typeof value;
  if (type === 'string') return { stringValue: value };
  if (type === 'number') return Number.isInteger(value) ? { intValue: value } : { doubleValue: value };
  if (type === 'boolean') return { boolValue: value };
  if (value instanceof Uint8Array) return { bytesValue: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
  if (Array.isArray(value)) return { arrayValue: { values: value.map(anyValue) } };
  if (type === 'object' && value !== null) {
    const object = value as Record<string, unknown>;
    return { kvlistValue: { values: Object.keys(object).map((key) => ({ key, value: anyValue(object[key]) })) } };
  }
  return {};
}

function keyValues(attributes: Attributes): unknown[] {
  return Object.keys(attributes).map((key) => ({ key, value: anyValue(attributes[key]) }));
}

/** Nanoseconds since the epoch as otlp-transformer writes them (BigInt arithmetic). */
function timeText(time: HrTime): string {
  return (BigInt(Math.trunc(time[0])) * 1_000_000_000n + BigInt(Math.trunc(time[1]))).toString();
}

function temporalityNumber(temporality: AggregationTemporality): number | undefined {
  if (temporality === AggregationTemporality.DELTA) return 1;
  if (temporality === AggregationTemporality.CUMULATIVE) return 2;
  return undefined;
}

const bytesOf = (text: string): Uint8Array => utf8.encode(text);

// The fixed pieces of a data point, as bytes.
const P_ATTRIBUTES = bytesOf('{"attributes":');
const P_START = bytesOf(',"startTimeUnixNano":"');
const P_END = bytesOf('","timeUnixNano":"');
const P_AS_INT = bytesOf('","asInt":');
const P_AS_DOUBLE = bytesOf('","asDouble":');
const P_CLOSE_TIME = bytesOf('"}');
const P_BUCKET_COUNTS = bytesOf(',"bucketCounts":[');
const P_BOUNDS = bytesOf('],"explicitBounds":');
const P_COUNT = bytesOf(',"count":');
const P_SUM = bytesOf(',"sum":');
const P_MIN = bytesOf(',"min":');
const P_MAX = bytesOf(',"max":');
const P_HISTOGRAM_START = bytesOf(',"startTimeUnixNano":"');

/** The last time written as text, converted again only when it changes. */
class TimeText {
  seconds = NaN;
  nanos = NaN;
  readonly #scratch = new Uint8Array(32);
  bytes: Uint8Array = this.#scratch.subarray(0, 0);

  of(time: HrTime): Uint8Array {
    const seconds = time[0];
    const nanos = time[1];
    if (seconds === this.seconds && nanos === this.nanos) return this.bytes;
    this.seconds = seconds;
    this.nanos = nanos;
    if (!(Number.isSafeInteger(seconds) && seconds >= 0 && Number.isInteger(nanos) && nanos >= 0 && nanos < 1e9)) {
      this.bytes = utf8.encode(timeText(time));
      return this.bytes;
    }
    // seconds, then nanoseconds in 9 digits; just the nanoseconds when seconds is 0.
    const scratch = this.#scratch;
    let pos = 0;
    if (seconds > 0) {
      pos = digits(scratch, 0, seconds);
      for (let i = pos + 8, v = nanos; i >= pos; i--, v = Math.floor(v / 10)) scratch[i] = 0x30 + (v % 10);
      pos += 9;
    } else {
      pos = digits(scratch, 0, nanos);
    }
    this.bytes = scratch.subarray(0, pos);
    return this.bytes;
  }
}

/** What follows a point's end time, with the time: the pieces every point of a collection shares. */
class EndText {
  readonly #time = new TimeText();
  /** `…"}` */
  closed: Uint8Array = P_CLOSE_TIME;
  /** `…","asInt":` */
  asInt: Uint8Array = P_AS_INT;
  /** `…","asDouble":` */
  asDouble: Uint8Array = P_AS_DOUBLE;

  of(time: HrTime): this {
    const text = this.#time;
    if (time[0] === text.seconds && time[1] === text.nanos) return this;
    const bytes = text.of(time);
    this.closed = concat(bytes, P_CLOSE_TIME);
    this.asInt = concat(bytes, P_AS_INT);
    this.asDouble = concat(bytes, P_AS_DOUBLE);
    return this;
  }
}

/** Copies `data` into `bytes` at `pos` (which has the room); returns the end. Short pieces by
 * a loop: below a few dozen bytes it beats TypedArray.prototype.set's call. */
function copy(bytes: Uint8Array, pos: number, data: Uint8Array): number {
  const length = data.length;
  if (length < 24) {
    for (let i = 0; i < length; i++) bytes[pos + i] = data[i]!;
  } else {
    bytes.set(data, pos);
  }
  return pos + length;
}

/** "00" to "99": two digits a step halve the divisions of a number's digits. */
const DIGIT_PAIRS = bytesOf(Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0')).join(''));

/** The count of decimal digits of a non-negative safe integer. */
function digitCount(value: number): number {
  if (value < 1e8) {
    if (value < 1e4) return value < 100 ? (value < 10 ? 1 : 2) : value < 1000 ? 3 : 4;
    return value < 1e6 ? (value < 1e5 ? 5 : 6) : value < 1e7 ? 7 : 8;
  }
  let length = 9;
  for (let limit = 1e9; value >= limit && length < 16; limit *= 10) length++;
  return length;
}

/** Writes a non-negative safe integer's decimal digits at `pos`; returns the end. The caller
 * has room for 16 bytes. (Math.floor of an integer quotient below 2^53 is exact: the division's
 * rounding error is below 1/divisor, the distance to the next integer.) */
function digits(bytes: Uint8Array, pos: number, value: number): number {
  const end = pos + digitCount(value);
  let i = end;
  let v = value;
  while (v >= 100) {
    const next = Math.floor(v / 100);
    const pair = (v - next * 100) << 1;
    bytes[--i] = DIGIT_PAIRS[pair + 1]!;
    bytes[--i] = DIGIT_PAIRS[pair]!;
    v = next;
  }
  if (v >= 10) {
    bytes[--i] = DIGIT_PAIRS[(v << 1) + 1]!;
    bytes[--i] = DIGIT_PAIRS[v << 1]!;
  } else {
    bytes[--i] = 0x30 + v;
  }
  return end;
}

/** Writes a safe integer's decimal text at `pos` (room for 17 bytes); returns the end, or -1 for
 * any other value, which JSON.stringify writes. */
function integer(bytes: Uint8Array, pos: number, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) return -1;
  if (value >= 0) return digits(bytes, pos, value);
  bytes[pos] = 0x2d;
  return digits(bytes, pos + 1, -value);
}

/**
 * What the points of one source share: their attributes and start time, as the JSON that
 * precedes a number point's end time and as the pieces of a histogram point.
 */
interface SourceText {
  readonly attributes: Attributes;
  readonly start: HrTime;
  readonly seconds: number;
  readonly nanos: number;
  /** `{"attributes":[...],"startTimeUnixNano":"…","timeUnixNano":"` */
  readonly numberPrefix: Uint8Array;
  /** `{"attributes":[...],"bucketCounts":[` */
  readonly histogramPrefix: Uint8Array;
  /** `,"startTimeUnixNano":"…","timeUnixNano":"` */
  readonly startSuffix: Uint8Array;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let pos = 0;
  for (const part of parts) {
    bytes.set(part, pos);
    pos += part.length;
  }
  return bytes;
}

/** A source's texts, in one allocation: each source's attributes rendered once, kept as the
 * few hundred bytes of its point prefixes. */
function sourceText(attributes: Attributes, start: HrTime, startText: Uint8Array): SourceText {
  const attributesJson = utf8.encode(JSON.stringify(keyValues(attributes)));
  const parts = [P_ATTRIBUTES, attributesJson, P_START, startText, P_END, P_ATTRIBUTES, attributesJson, P_BUCKET_COUNTS, P_HISTOGRAM_START, startText, P_END];
  const all = concat(...parts);
  const numberEnd = P_ATTRIBUTES.length + attributesJson.length + P_START.length + startText.length + P_END.length;
  const histogramEnd = numberEnd + P_ATTRIBUTES.length + attributesJson.length + P_BUCKET_COUNTS.length;
  return {
    attributes,
    start,
    seconds: start[0],
    nanos: start[1],
    numberPrefix: all.subarray(0, numberEnd),
    histogramPrefix: all.subarray(numberEnd, histogramEnd),
    startSuffix: all.subarray(histogramEnd),
  };
}

export class OtlpJsonEncoder {
  #bytes = new Uint8Array(1 << 16);
  #pos = 0;
  #held = false;
  readonly #bounds = new WeakMap<number[], Uint8Array>();
  /** Per metric (by its place in the request), each point's SourceText the last time: found
   * again with a compare while the series stay the same. */
  #pointSources: (SourceText | undefined)[][][] = [];
  readonly #sourceTexts = new WeakMap<Attributes, SourceText>();
  readonly #start = new TimeText();
  readonly #end = new EndText();

  /** The ExportMetricsServiceRequest for one ResourceMetrics, as JSON in UTF-8. */
  encode(request: ResourceMetrics): Uint8Array {
    if (this.#held) this.#bytes = new Uint8Array(this.#bytes.length);
    this.#held = true;
    this.#pos = 0;
    const { resource } = request;
    const resourceJson: Record<string, unknown> = { attributes: keyValues(resource.attributes), droppedAttributesCount: 0 };
    if (resource.schemaUrl) resourceJson.schemaUrl = resource.schemaUrl;
    this.#text(`{"resourceMetrics":[${JSON.stringify({ resource: resourceJson, schemaUrl: resourceJson.schemaUrl }).slice(0, -1)},"scopeMetrics":[`);
    request.scopeMetrics.forEach((scopeMetrics, s) => {
      const { scope } = scopeMetrics;
      const scopeJson: Record<string, unknown> = { name: scope.name, version: scope.version };
      const extra = scope as { attributes?: Attributes; droppedAttributesCount?: number };
      if (extra.attributes && Object.keys(extra.attributes).length > 0) {
        scopeJson.attributes = keyValues(extra.attributes);
        scopeJson.droppedAttributesCount = extra.droppedAttributesCount ?? 0;
      }
      this.#text(`${s > 0 ? ',' : ''}{"scope":${JSON.stringify(scopeJson)},"metrics":[`);
      const cached = (this.#pointSources[s] ??= []);
      scopeMetrics.metrics.forEach((metric, m) => {
        if (m > 0) this.#byte(0x2c);
        this.#metric(metric, (cached[m] ??= []));
      });
      cached.length = scopeMetrics.metrics.length;
      this.#text(scope.schemaUrl !== undefined ? `],"schemaUrl":${JSON.stringify(scope.schemaUrl)}}` : ']}');
    });
    this.#text(']}]}');
    this.#pointSources.length = request.scopeMetrics.length;
    return this.#bytes.subarray(0, this.#pos);
  }

  /** The bytes of an encode() are no longer read: the next one may write over them. */
  release(bytes: Uint8Array): void {
    if (bytes.buffer === this.#bytes.buffer) this.#held = false;
  }

  #metric(metric: MetricData, cache: (SourceText | undefined)[]): void {
    const { descriptor } = metric;
    const header = JSON.stringify({ name: descriptor.name, description: descriptor.description, unit: descriptor.unit }).slice(1, -1);
    const temporality = temporalityNumber(metric.aggregationTemporality);
    let data: Record<string, unknown> | undefined;
    let key = '';
    switch (metric.dataPointType) {
      case DataPointType.SUM:
        key = 'sum';
        data = { aggregationTemporality: temporality, isMonotonic: metric.isMonotonic };
        break;
      case DataPointType.GAUGE:
        key = 'gauge';
        data = {};
        break;
      case DataPointType.HISTOGRAM:
        key = 'histogram';
        data = { aggregationTemporality: temporality };
        break;
      case DataPointType.EXPONENTIAL_HISTOGRAM:
        key = 'exponentialHistogram';
        data = { aggregationTemporality: temporality };
        break;
    }
    if (data === undefined) {
      this.#text(`{${header}}`);
      return;
    }
    const fields = JSON.stringify(data).slice(1, -1);
    this.#text(`{${header}${header ? ',' : ''}"${key}":{${fields}${fields ? ',' : ''}"dataPoints":[`);
    const points = metric.dataPoints;
    if (metric.dataPointType === DataPointType.HISTOGRAM) {
      for (let i = 0; i < points.length; i++) {
        if (i > 0) this.#byte(0x2c);
        const point = points[i] as DataPoint<Histogram>;
        this.#histogramPoint(point, this.#sourceText(cache, i, point));
      }
    } else if (metric.dataPointType === DataPointType.EXPONENTIAL_HISTOGRAM) {
      for (let i = 0; i < points.length; i++) {
        if (i > 0) this.#byte(0x2c);
        this.#exponentialPoint(points[i] as DataPoint<ExponentialHistogram>);
      }
    } else {
      this.#numberPoints(points as DataPoint<number>[], descriptor.valueType, cache);
    }
    cache.length = points.length;
    this.#text(']}}');
  }

  /** Point i's SourceText: the last one if its attributes and start are the same (a start
   * array can be rolled in place, as the producer's delta points' is: its values are compared). */
  #sourceText(cache: (SourceText | undefined)[], i: number, point: DataPoint<unknown>): SourceText {
    const attributes = point.attributes;
    const startTime = point.startTime;
    const last = cache[i];
    if (last !== undefined && last.attributes === attributes && last.start === startTime && last.seconds === startTime[0] && last.nanos === startTime[1]) return last;
    let text = this.#sourceTexts.get(attributes);
    if (text === undefined || text.start !== startTime || text.seconds !== startTime[0] || text.nanos !== startTime[1]) {
      text = sourceText(attributes, startTime, this.#start.of(startTime));
      this.#sourceTexts.set(attributes, text);
    }
    cache[i] = text;
    return text;
  }

  /**
   * A sum's or gauge's points: per point one copy of its source's text, one of the collection's
   * end time with the value's key, and the value's digits, with the buffer's room checked once.
   */
  #numberPoints(points: DataPoint<number>[], valueType: ValueType, cache: (SourceText | undefined)[]): void {
    const end = this.#end;
    let bytes = this.#bytes;
    let pos = this.#pos;
    for (let i = 0; i < points.length; i++) {
      const point = points[i]!;
      const source = this.#sourceText(cache, i, point);
      const value = point.value;
      const time = end.of(point.endTime);
      const keyed = valueType === ValueType.INT ? time.asInt : valueType === ValueType.DOUBLE ? time.asDouble : undefined;
      const room = source.numberPrefix.length + time.asDouble.length + 32;
      if (pos + room > bytes.length) {
        this.#pos = pos;
        this.#ensure(room);
        bytes = this.#bytes;
      }
      if (i > 0) bytes[pos++] = 0x2c;
      pos = copy(bytes, pos, source.numberPrefix);
      if (keyed === undefined || value === undefined) {
        pos = copy(bytes, pos, time.closed);
        continue;
      }
      pos = copy(bytes, pos, keyed);
      const written = integer(bytes, pos, value);
      if (written >= 0) {
        pos = written;
      } else {
        pos = this.#numberAt(pos, value, 1);
        bytes = this.#bytes;
      }
      bytes[pos++] = 0x7d;
    }
    this.#pos = pos;
  }

  /** A histogram point, its bucket counts' digits written in one loop with the room checked per count. */
  #histogramPoint(point: DataPoint<Histogram>, source: SourceText): void {
    const value = point.value;
    const counts = value.buckets.counts;
    const bounds = this.#boundsOf(value.buckets.boundaries);
    this.#ensure(source.histogramPrefix.length + counts.length * 24 + 8);
    let bytes = this.#bytes;
    let pos = copy(bytes, this.#pos, source.histogramPrefix);
    for (let b = 0; b < counts.length; b++) {
      if (b > 0) bytes[pos++] = 0x2c;
      const count = counts[b]!;
      const written = integer(bytes, pos, count);
      if (written >= 0) {
        pos = written;
      } else {
        pos = this.#numberAt(pos, count, (counts.length - b) * 24 + 8);
        bytes = this.#bytes;
      }
    }
    this.#pos = pos;
    this.#raw(P_BOUNDS);
    this.#raw(bounds);
    this.#optional(P_COUNT, value.count);
    this.#optional(P_SUM, value.sum);
    this.#optional(P_MIN, value.min);
    this.#optional(P_MAX, value.max);
    this.#raw(source.startSuffix);
    this.#raw(this.#end.of(point.endTime).closed);
  }

  #exponentialPoint(point: DataPoint<ExponentialHistogram>): void {
    const value = point.value;
    this.#text(
      JSON.stringify({
        attributes: keyValues(point.attributes),
        count: value.count,
        min: value.min,
        max: value.max,
        sum: value.sum,
        positive: { offset: value.positive.offset, bucketCounts: value.positive.bucketCounts },
        negative: { offset: value.negative.offset, bucketCounts: value.negative.bucketCounts },
        scale: value.scale,
        zeroCount: value.zeroCount,
        startTimeUnixNano: timeText(point.startTime),
        timeUnixNano: timeText(point.endTime),
      }),
    );
  }

  #boundsOf(bounds: number[]): Uint8Array {
    let bytes = this.#bounds.get(bounds);
    if (bytes === undefined) {
      bytes = utf8.encode(JSON.stringify(bounds));
      this.#bounds.set(bounds, bytes);
    }
    return bytes;
  }

  /** `,"key":value` unless the value is undefined (JSON.stringify leaves such keys out). */
  #optional(key: Uint8Array, value: number | undefined): void {
    if (value === undefined) return;
    this.#raw(key);
    this.#number(value);
  }

  /** A number as JSON.stringify writes it: integers digit by digit, others through String. */
  #number(value: unknown): void {
    this.#ensure(17);
    const written = integer(this.#bytes, this.#pos, value);
    if (written >= 0) this.#pos = written;
    else this.#text(JSON.stringify(value) ?? 'null');
  }

  /** A point loop's number that integer() did not write (not a safe integer), written at `pos`
   * as #number writes it, with `room` bytes more after it; returns its end. The loop's buffer
   * may have grown: it takes this.#bytes again. */
  #numberAt(pos: number, value: unknown, room: number): number {
    this.#pos = pos;
    this.#number(value);
    this.#ensure(room);
    return this.#pos;
  }

  #ensure(more: number): void {
    const needed = this.#pos + more;
    if (needed <= this.#bytes.length) return;
    // Doubling while small; once large, 32 MiB at a time: the buffer is kept between exports,
    // and doubling would leave up to half of it unused.
    const length = this.#bytes.length;
    const size = Math.max(needed, Math.min(length * 2, length + (32 << 20)));
    const bytes = new Uint8Array(size);
    bytes.set(this.#bytes.subarray(0, this.#pos));
    this.#bytes = bytes;
  }

  #byte(value: number): void {
    this.#ensure(1);
    this.#bytes[this.#pos++] = value;
  }

  #raw(data: Uint8Array): void {
    this.#ensure(data.length);
    this.#pos = copy(this.#bytes, this.#pos, data);
  }

  #text(text: string): void {
    this.#raw(utf8.encode(text));
  }
}
