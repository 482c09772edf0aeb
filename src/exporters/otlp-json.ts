/**
 * OTLP JSON for metrics: the bytes otlp-transformer's JsonMetricsSerializer writes for the same
 * ResourceMetrics (the same keys in the same order, numbers as JSON.stringify writes them,
 * times as decimal strings of nanoseconds), written straight into a reused byte buffer.
 *
 * Each metric's text is kept from one export to the next with where its numbers are
 * (slot-text.ts): a metric whose series are those of the last export (the stability rules of
 * otlp-protobuf.ts: the same attributes objects in the same places, start times, value types,
 * histograms of the same shape and bounds) has only its numbers rewritten (end times, values,
 * counts, buckets, sums), in place; a metric whose series changed is written anew, each
 * attributes object's and bounds array's JSON made once (the SDK and the producer hand out the
 * same immutable objects at every collection). The request is the metrics' texts joined into the
 * output buffer. Exponential histogram points (rare; not the producer's) go through
 * JSON.stringify, written anew every time. The price is memory: the texts are kept besides the
 * output buffer (about 15 KB per stats fd of a real kernel's layout, measured on image fds).
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
import { SlotText, boundsHold, digits, patchPointwise } from './slot-text.js';

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

const P_CLOSE = bytesOf('}');
const EMPTY = new Uint8Array(0);

// Histogram shapes: which optional fields a point has, and its bucket count.
const HAS_COUNT = 1;
const HAS_SUM = 2;
const HAS_MIN = 4;
const HAS_MAX = 8;
const SHAPE_BITS = 4;

function histogramShape(value: Histogram): number {
  return (
    (value.count !== undefined ? HAS_COUNT : 0) |
    (value.sum !== undefined ? HAS_SUM : 0) |
    (value.min !== undefined ? HAS_MIN : 0) |
    (value.max !== undefined ? HAS_MAX : 0) |
    (value.buckets.counts.length << SHAPE_BITS)
  );
}

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

/**
 * One metric's text with its number slots, and what its constant bytes were made from: the
 * metric's header, and per point its attributes object, start time and shape (histograms: the
 * optional fields present, bucket count and bounds; numbers: whether there is a value).
 */
interface MetricLayout {
  readonly text: SlotText;
  readonly name: string;
  readonly description: string;
  readonly unit: string;
  readonly valueType: ValueType;
  readonly type: DataPointType;
  readonly temporality: AggregationTemporality;
  readonly monotonic: unknown;
  /** False for exponential histograms and metrics of points without a value type: written anew every time. */
  readonly patchable: boolean;
  readonly points: number;
  readonly attributes: Attributes[];
  readonly startSeconds: Float64Array;
  readonly startNanos: Float64Array;
  readonly shapes: Int32Array;
  readonly bounds: number[][];
}

/** Whether the metric's header and point count are the layout's. */
function fits(layout: MetricLayout, metric: MetricData): boolean {
  const { descriptor } = metric;
  return (
    layout.patchable &&
    metric.dataPointType === layout.type &&
    metric.dataPoints.length === layout.points &&
    descriptor.name === layout.name &&
    descriptor.description === layout.description &&
    descriptor.unit === layout.unit &&
    descriptor.valueType === layout.valueType &&
    metric.aggregationTemporality === layout.temporality &&
    (metric as { isMonotonic?: unknown }).isMonotonic === layout.monotonic
  );
}

/** A metric whose header fits its layout: its points are patched if they fit too. */
interface Candidate {
  readonly layout: MetricLayout;
  readonly metric: MetricData;
  /** Its place: scope and metric. */
  readonly s: number;
  readonly m: number;
  ok: boolean;
}

export class OtlpJsonEncoder {
  #bytes = new Uint8Array(1 << 16);
  #held = false;
  readonly #attributes = new WeakMap<Attributes, Uint8Array>();
  readonly #bounds = new WeakMap<number[], Uint8Array>();
  /** Per scope and metric (by place in the request), the last export's text and layout. */
  #layouts: (MetricLayout | undefined)[][] = [];
  readonly #start = new TimeText();
  readonly #end = new TimeText();
  /** Metrics written anew by the last encode(), and patched in place, for tests and the bench. */
  readonly stats = { encoded: 0, patched: 0 };

  /** The ExportMetricsServiceRequest for one ResourceMetrics, as JSON in UTF-8. */
  encode(request: ResourceMetrics): Uint8Array {
    const { resource } = request;
    const resourceJson: Record<string, unknown> = { attributes: keyValues(resource.attributes), droppedAttributesCount: 0 };
    if (resource.schemaUrl) resourceJson.schemaUrl = resource.schemaUrl;
    // The request as pieces: text around the metrics, and each metric's layout.
    const pieces: (Uint8Array | MetricLayout)[] = [utf8.encode(`{"resourceMetrics":[${JSON.stringify({ resource: resourceJson, schemaUrl: resourceJson.schemaUrl }).slice(0, -1)},"scopeMetrics":[`)];
    const candidates: Candidate[] = [];
    const fresh: [MetricLayout | undefined, MetricData, number, number][] = [];
    const layouts: (MetricLayout | undefined)[][] = [];
    request.scopeMetrics.forEach((scopeMetrics, s) => {
      const { scope } = scopeMetrics;
      const scopeJson: Record<string, unknown> = { name: scope.name, version: scope.version };
      const extra = scope as { attributes?: Attributes; droppedAttributesCount?: number };
      if (extra.attributes && Object.keys(extra.attributes).length > 0) {
        scopeJson.attributes = keyValues(extra.attributes);
        scopeJson.droppedAttributesCount = extra.droppedAttributesCount ?? 0;
      }
      pieces.push(utf8.encode(`${s > 0 ? ',' : ''}{"scope":${JSON.stringify(scopeJson)},"metrics":[`));
      const old = this.#layouts[s] ?? [];
      const scopeLayouts: (MetricLayout | undefined)[] = [];
      scopeMetrics.metrics.forEach((metric, m) => {
        if (m > 0) pieces.push(COMMA);
        const layout = old[m];
        if (layout !== undefined && fits(layout, metric)) {
          candidates.push({ layout, metric, s, m, ok: true });
          scopeLayouts.push(layout);
        } else {
          fresh.push([layout, metric, s, m]);
          scopeLayouts.push(undefined);
        }
        pieces.push(EMPTY);
      });
      layouts.push(scopeLayouts);
      pieces.push(utf8.encode(scope.schemaUrl !== undefined ? `],"schemaUrl":${JSON.stringify(scope.schemaUrl)}}` : ']}'));
    });
    pieces.push(utf8.encode(']}]}'));
    patchPointwise(candidates, this.#patchPoint);
    let patched = 0;
    for (const candidate of candidates) {
      if (candidate.ok) patched++;
      else fresh.push([candidate.layout, candidate.metric, candidate.s, candidate.m]);
    }
    for (const [old, metric, s, m] of fresh) layouts[s]![m] = this.#render(metric, old?.text);
    this.#layouts = layouts;
    this.stats.encoded = fresh.length;
    this.stats.patched = patched;
    // Each metric's text in its place.
    let m = 0;
    const ordered = layouts.flat();
    for (let p = 0; p < pieces.length; p++) if (pieces[p] === EMPTY) pieces[p] = ordered[m++]!;
    return this.#join(pieces);
  }

  /** The bytes of an encode() are no longer read: the next one may write over them. */
  release(bytes: Uint8Array): void {
    if (bytes.buffer === this.#bytes.buffer) this.#held = false;
  }

  /** The pieces, one after another, in the output buffer (a new one while the last is held). */
  #join(pieces: (Uint8Array | MetricLayout)[]): Uint8Array {
    let total = 0;
    for (const piece of pieces) total += piece instanceof Uint8Array ? piece.length : piece.text.length;
    if (this.#held || total > this.#bytes.length) {
      let size = this.#bytes.length;
      while (size < total) size *= 2;
      this.#bytes = new Uint8Array(size);
    }
    this.#held = true;
    const bytes = this.#bytes;
    let pos = 0;
    for (const piece of pieces) {
      const part = piece instanceof Uint8Array ? piece : piece.text.view();
      bytes.set(part, pos);
      pos += part.length;
    }
    return bytes.subarray(0, total);
  }

  /** The numbers of point i of a candidate rewritten, if the point still fits its text. */
  readonly #patchPoint = (candidate: Candidate, i: number): boolean => {
    const { layout } = candidate;
    const point = candidate.metric.dataPoints[i]!;
    const { attributes, startTime } = point;
    if (attributes !== layout.attributes[i] || startTime[0] !== layout.startSeconds[i] || startTime[1] !== layout.startNanos[i]) return false;
    if (layout.type === DataPointType.HISTOGRAM) {
      const value = point.value as Histogram;
      if (histogramShape(value) !== layout.shapes[i] || !boundsHold(layout.bounds, i, value.buckets.boundaries)) return false;
      this.#histogramPoint(layout.text, point as DataPoint<Histogram>, i);
    } else {
      if ((point.value === undefined ? 0 : 1) !== layout.shapes[i]) return false;
      this.#numberPoint(layout.text, point as DataPoint<number>, i, valueKeyOf(layout.valueType));
    }
    return true;
  };

  /** A metric's text anew (in `text`, reused, if given), and its layout. */
  #render(metric: MetricData, reuse: SlotText | undefined): MetricLayout {
    const text = reuse ?? new SlotText();
    text.build();
    const { descriptor } = metric;
    const points = metric.dataPoints;
    const n = points.length;
    const layout: MetricLayout = {
      text,
      name: descriptor.name,
      description: descriptor.description,
      unit: descriptor.unit,
      valueType: descriptor.valueType,
      type: metric.dataPointType,
      temporality: metric.aggregationTemporality,
      monotonic: (metric as { isMonotonic?: unknown }).isMonotonic,
      patchable: true,
      points: n,
      attributes: new Array<Attributes>(n),
      startSeconds: new Float64Array(n),
      startNanos: new Float64Array(n),
      shapes: new Int32Array(n),
      bounds: new Array<number[]>(n),
    };
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
      text.raw(utf8.encode(`{${header}}`));
      return { ...layout, patchable: false };
    }
    const fields = JSON.stringify(data).slice(1, -1);
    text.raw(utf8.encode(`{${header}${header ? ',' : ''}"${key}":{${fields}${fields ? ',' : ''}"dataPoints":[`));
    let patchable = true;
    if (metric.dataPointType === DataPointType.EXPONENTIAL_HISTOGRAM) {
      patchable = false;
      for (let i = 0; i < n; i++) {
        if (i > 0) text.raw(COMMA);
        text.raw(utf8.encode(exponentialPointJson(points[i] as DataPoint<ExponentialHistogram>)));
      }
    } else {
      const histogram = metric.dataPointType === DataPointType.HISTOGRAM;
      const valueKey = valueKeyOf(descriptor.valueType);
      if (!histogram && valueKey === undefined) patchable = false;
      for (let i = 0; i < n; i++) {
        const point = points[i]!;
        layout.attributes[i] = point.attributes;
        layout.startSeconds[i] = point.startTime[0];
        layout.startNanos[i] = point.startTime[1];
        if (histogram) {
          const value = point.value as Histogram;
          layout.shapes[i] = histogramShape(value);
          layout.bounds[i] = value.buckets.boundaries;
          this.#histogramPoint(text, point as DataPoint<Histogram>, i);
        } else {
          layout.shapes[i] = point.value === undefined ? 0 : 1;
          this.#numberPoint(text, point as DataPoint<number>, i, valueKey);
        }
      }
    }
    text.raw(P_METRIC_END);
    return patchable ? layout : { ...layout, patchable };
  }

  /** A number point, written or patched: its constant bytes (attributes, start time) only when written. */
  #numberPoint(text: SlotText, point: DataPoint<number>, i: number, valueKey: Uint8Array | undefined): void {
    if (!text.patching) {
      if (i > 0) text.byte(0x2c);
      text.raw(P_ATTRIBUTES);
      text.raw(this.#attributesOf(point.attributes));
      text.raw(P_START);
      text.raw(this.#start.of(point.startTime));
      text.raw(P_END);
    }
    text.copy(this.#end.of(point.endTime));
    if (valueKey === undefined || point.value === undefined) {
      text.raw(P_CLOSE_TIME);
      return;
    }
    text.raw(valueKey);
    number(text, point.value);
    text.raw(P_CLOSE);
  }

  #histogramPoint(text: SlotText, point: DataPoint<Histogram>, i: number): void {
    const value = point.value;
    const patching = text.patching;
    if (!patching) {
      if (i > 0) text.byte(0x2c);
      text.raw(P_ATTRIBUTES);
      text.raw(this.#attributesOf(point.attributes));
      text.raw(P_BUCKET_COUNTS);
    }
    const counts = value.buckets.counts;
    for (let b = 0; b < counts.length; b++) {
      if (b > 0) text.byte(0x2c);
      number(text, counts[b]);
    }
    text.raw(patching ? EMPTY : P_BOUNDS);
    text.raw(patching ? EMPTY : this.#boundsOf(value.buckets.boundaries));
    optional(text, P_COUNT, value.count);
    optional(text, P_SUM, value.sum);
    optional(text, P_MIN, value.min);
    optional(text, P_MAX, value.max);
    if (!patching) {
      text.raw(P_START);
      text.raw(this.#start.of(point.startTime));
      text.raw(P_END);
    }
    text.copy(this.#end.of(point.endTime));
    text.raw(P_CLOSE_TIME);
  }

  #attributesOf(attributes: Attributes): Uint8Array {
    let bytes = this.#attributes.get(attributes);
    if (bytes === undefined) {
      bytes = utf8.encode(JSON.stringify(keyValues(attributes)));
      this.#attributes.set(attributes, bytes);
    }
    return bytes;
  }

  #boundsOf(bounds: number[]): Uint8Array {
    let bytes = this.#bounds.get(bounds);
    if (bytes === undefined) {
      bytes = utf8.encode(JSON.stringify(bounds));
      this.#bounds.set(bounds, bytes);
    }
    return bytes;
  }
}

const COMMA = bytesOf(',');

function valueKeyOf(valueType: ValueType): Uint8Array | undefined {
  return valueType === ValueType.INT ? P_AS_INT : valueType === ValueType.DOUBLE ? P_AS_DOUBLE : undefined;
}
const P_METRIC_END = bytesOf(']}}');

function exponentialPointJson(point: DataPoint<ExponentialHistogram>): string {
  const value = point.value;
  return JSON.stringify({
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
  });
}

/** `,"key":value` unless the value is undefined (JSON.stringify leaves such keys out). */
function optional(text: SlotText, key: Uint8Array, value: number | undefined): void {
  if (value === undefined) return;
  text.raw(key);
  number(text, value);
}

/** A number as JSON.stringify writes it, in a slot: integers digit by digit, others through JSON.stringify. */
function number(text: SlotText, value: unknown): void {
  if (typeof value !== 'number') text.copy(utf8.encode(JSON.stringify(value) ?? 'null'));
  else if (Number.isSafeInteger(value)) text.integer(value);
  else if (!text.same(value)) text.ascii(JSON.stringify(value) ?? 'null', value);
}
