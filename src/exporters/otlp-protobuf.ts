/**
 * OTLP protobuf for metrics, byte for byte what otlp-transformer's ProtobufMetricsSerializer
 * writes for the same ResourceMetrics, at a fraction of its cost on a producer's output.
 *
 * Every number in an OTLP data point is fixed-width (times, values, counts, sums, buckets), so
 * a series whose shape stays the same from one export to the next (the same attributes object,
 * value type, bucket count and bounds, sum/min/max present or not) keeps the same bytes apart
 * from those numbers. The encoder keeps the last request's bytes and, per metric, where each
 * point's numbers are; an export checks each metric against it and writes the new numbers in
 * place. A metric whose points changed (series came or went, another shape) is encoded anew,
 * and the metrics around it are copied as they are. Exponential histograms have varint
 * buckets and are always encoded anew. The resource and scopes (a few hundred bytes) are
 * encoded at every export and compared.
 *
 * What is taken as unchanging: an attributes object and a bounds array, once in a data point,
 * keep their contents (the SDK and the producer hand out the same immutable objects at every
 * collection; the SDK keys its series by them).
 *
 * The bytes returned are the encoder's own buffer. They stay as they are until released
 * (release(), which the exporter calls when the export is done): an export while the previous
 * bytes are still held (a slow collector, retries) writes into a copy.
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
  type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import { AttributeCache, encodeAttributes } from './attributes.js';
import {
  AGGREGATION_TEMPORALITY_CUMULATIVE,
  AGGREGATION_TEMPORALITY_DELTA,
  ExponentialBuckets,
  ExponentialHistogramDataPoint as ExpPoint,
  ExportMetricsServiceRequest,
  FIXED_FIELD,
  HISTOGRAM_HEAD,
  HistogramDataPoint as HistogramPoint,
  InstrumentationScope,
  Metric,
  MetricData as MetricDataFields,
  NUMBER_POINT,
  NumberDataPoint as NumberPoint,
  Resource,
  ResourceMetrics as ResourceMetricsFields,
  ScopeMetrics as ScopeMetricsFields,
} from './otlp-schema.js';
// The fixed-width writes are the fused frame's too: written once, in otel/series-frame.ts.
import { TimeWords, setFixed64, setSfixed64, setUnixNanos } from '../otel/series-frame.js';
import { Writer, varintSize } from './wire.js';

// Histogram shapes: which optional fields a point has, and its bucket count.
const HAS_SUM = 1;
const HAS_MIN = 2;
const HAS_MAX = 4;
const SHAPE_BITS = 3;

/** What one metric's encoding was made from, and where its points' numbers are. */
interface MetricLayout {
  readonly name: string;
  readonly description: string;
  readonly unit: string;
  readonly valueType: ValueType;
  readonly type: DataPointType;
  readonly temporality: AggregationTemporality;
  readonly monotonic: boolean;
  /** False for exponential histograms (varint buckets): encoded anew every time. */
  readonly patchable: boolean;
  /** Where the metric (its tag included) is in the current buffer, and its length. */
  offset: number;
  readonly length: number;
  readonly points: number;
  readonly attributes: (Attributes | undefined)[];
  /** Each point's body: start and end, from the metric's offset. */
  readonly bodyStart: Int32Array;
  readonly bodyEnd: Int32Array;
  /** Histograms: each point's shape (HAS_* | buckets << SHAPE_BITS) and bounds. */
  readonly shapes: Int32Array | undefined;
  readonly bounds: number[][] | undefined;
}

/** A metric about to be encoded: its points' attribute bytes and sizes. */
interface PreparedMetric {
  readonly metric: MetricData;
  readonly header: Uint8Array;
  readonly attributes: Uint8Array[];
  /** Exponential histogram points, encoded whole. */
  readonly bodies: Uint8Array[] | undefined;
  readonly bodySizes: Int32Array;
  readonly dataSize: number;
  readonly length: number;
}

interface ScopeLayout {
  readonly header: Uint8Array;
  readonly schemaUrl: string | undefined;
  readonly metrics: MetricLayout[];
}

/** A histogram point's size without attributes. */
export function histogramBodySize(value: Histogram): number {
  let size = value.sum !== undefined ? HISTOGRAM_HEAD.sizeWithSum : HISTOGRAM_HEAD.size;
  size += packedSize(value.buckets.counts.length) + packedSize(value.buckets.boundaries.length);
  if (value.min !== undefined) size += FIXED_FIELD;
  if (value.max !== undefined) size += FIXED_FIELD;
  return size;
}

/** A packed field of `n` 8-byte values, tag included; none when empty. */
function packedSize(n: number): number {
  return n > 0 ? 1 + varintSize(n * 8) + n * 8 : 0;
}

function histogramShape(value: Histogram): number {
  return (value.sum !== undefined ? HAS_SUM : 0) | (value.min !== undefined ? HAS_MIN : 0) | (value.max !== undefined ? HAS_MAX : 0) | (value.buckets.counts.length << SHAPE_BITS);
}

function protoTemporality(temporality: AggregationTemporality): number {
  if (temporality === AggregationTemporality.DELTA) return AGGREGATION_TEMPORALITY_DELTA;
  if (temporality === AggregationTemporality.CUMULATIVE) return AGGREGATION_TEMPORALITY_CUMULATIVE;
  return 0;
}

function sameBounds(a: readonly number[], b: readonly number[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The metric's name, description and unit fields. */
export function metricHeader(metric: MetricData): Uint8Array {
  const writer = new Writer(64);
  const { name, description, unit } = metric.descriptor;
  writer.byte(Metric.name.tag);
  writer.string(name);
  writeStringField(writer, Metric.description.tag, description);
  writeStringField(writer, Metric.unit.tag, unit);
  return writer.finish();
}

/** The resource field (1) of ResourceMetrics, tag included. */
export function resourceField(attributes: Attributes | undefined): Uint8Array {
  const body = new Writer();
  body.raw(encodeAttributes(attributes, Resource.attributes.number));
  body.byte(Resource.droppedAttributesCount.tag);
  body.byte(0);
  const writer = new Writer();
  writer.byte(ResourceMetricsFields.resource.tag);
  writer.lengthDelimited(body.finish());
  return writer.finish();
}

/** The scope field (1) of ScopeMetrics, tag included. */
export function scopeField(scope: ScopeMetrics['scope']): Uint8Array {
  const body = new Writer();
  body.byte(InstrumentationScope.name.tag);
  body.string(scope.name);
  writeStringField(body, InstrumentationScope.version.tag, scope.version);
  const extra = scope as { attributes?: Attributes; droppedAttributesCount?: number };
  if (extra.attributes) body.raw(encodeAttributes(extra.attributes, InstrumentationScope.attributes.number));
  if (extra.droppedAttributesCount) {
    body.byte(InstrumentationScope.droppedAttributesCount.tag);
    body.varint(extra.droppedAttributesCount);
  }
  const writer = new Writer();
  writer.byte(ScopeMetricsFields.scope.tag);
  writer.lengthDelimited(body.finish());
  return writer.finish();
}

const utf8 = new TextEncoder();

export function stringFieldSize(text: string | undefined): number {
  if (!text) return 0;
  const length = utf8.encode(text).length;
  return 1 + varintSize(length) + length;
}

export function writeStringField(writer: Writer, tag: number, text: string | undefined): void {
  if (!text) return;
  writer.byte(tag);
  writer.string(text);
}

interface ScopePlan {
  readonly header: Uint8Array;
  readonly schemaUrl: string | undefined;
  /** The request's metrics, replaced by their patched layouts or prepared encodings. */
  readonly metrics: (MetricData | MetricLayout | PreparedMetric)[];
}

interface PreparedScope {
  readonly header: Uint8Array;
  readonly schemaUrl: string | undefined;
  readonly metrics: (MetricLayout | PreparedMetric)[];
}

/** A metric whose header fits its layout: its points are patched if they fit too. */
interface Candidate {
  readonly plan: ScopePlan;
  readonly index: number;
  readonly layout: MetricLayout;
  readonly metric: MetricData;
  ok: boolean;
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
    !!(metric as { isMonotonic?: boolean }).isMonotonic === layout.monotonic
  );
}

const startWords = new TimeWords();
const endWords = new TimeWords();

function patchNumber(view: DataView, layout: MetricLayout, point: DataPoint<number>, i: number): boolean {
  if (point.attributes !== layout.attributes[i]) return false;
  const at = layout.offset + layout.bodyStart[i]! + 1;
  startWords.set(view, at + NUMBER_POINT.start, point.startTime);
  endWords.set(view, at + NUMBER_POINT.time, point.endTime);
  if (layout.valueType === ValueType.INT) setSfixed64(view, at + NUMBER_POINT.value, point.value);
  else view.setFloat64(at + NUMBER_POINT.value, point.value, true);
  return true;
}

function patchHistogram(view: DataView, layout: MetricLayout, point: DataPoint<Histogram>, i: number): boolean {
  const value = point.value;
  const counts = value.buckets.counts;
  if (point.attributes !== layout.attributes[i] || histogramShape(value) !== layout.shapes![i]) return false;
  const boundaries = value.buckets.boundaries;
  const bounds = layout.bounds!;
  if (boundaries !== bounds[i]) {
    if (!sameBounds(boundaries, bounds[i]!)) return false;
    bounds[i] = boundaries;
  }
  const body = layout.offset + layout.bodyStart[i]!;
  startWords.set(view, body + HISTOGRAM_HEAD.start + 1, point.startTime);
  endWords.set(view, body + HISTOGRAM_HEAD.time + 1, point.endTime);
  setFixed64(view, body + HISTOGRAM_HEAD.count + 1, value.count);
  let at = body + HISTOGRAM_HEAD.size;
  if (value.sum !== undefined) {
    view.setFloat64(body + HISTOGRAM_HEAD.sum + 1, value.sum, true);
    at = body + HISTOGRAM_HEAD.sizeWithSum;
  }
  if (counts.length > 0) {
    at += 1 + varintSize(counts.length * 8);
    for (let b = 0; b < counts.length; b++, at += 8) setFixed64(view, at, counts[b]!);
  }
  // min and max are the body's last fields, after the attributes.
  let end = layout.offset + layout.bodyEnd[i]!;
  if (value.max !== undefined) {
    end -= FIXED_FIELD;
    view.setFloat64(end + 1, value.max, true);
  }
  if (value.min !== undefined) {
    end -= FIXED_FIELD;
    view.setFloat64(end + 1, value.min, true);
  }
  return true;
}

export class OtlpProtobufEncoder {
  readonly #attributes = new AttributeCache();
  #buffer: Uint8Array = new Uint8Array(0);
  #view: DataView = new DataView(this.#buffer.buffer);
  #length = 0;
  #held = false;
  #resource: Uint8Array | undefined;
  #resourceSchemaUrl: string | undefined;
  #scopes: ScopeLayout[] = [];
  /** Metrics encoded anew by the last encode(), patched in place, for tests and the bench. */
  readonly stats = { encoded: 0, patched: 0 };

  /**
   * The ExportMetricsServiceRequest for one ResourceMetrics. The bytes are the encoder's until
   * release(bytes): the next encode() writes into a copy while they are held.
   */
  encode(request: ResourceMetrics): Uint8Array {
    if (this.#held && this.#length > 0) {
      // Someone still reads the last bytes: work on a copy of them.
      this.#setBuffer(this.#buffer.slice(0, this.#length));
    }
    const resource = resourceField(request.resource.attributes);
    const resourceSchemaUrl = request.resource.schemaUrl || undefined;
    let same = this.#resource !== undefined && sameBytes(resource, this.#resource) && resourceSchemaUrl === this.#resourceSchemaUrl;
    same = request.scopeMetrics.length === this.#scopes.length && same;
    // Per scope and metric: the layout that still holds (patched in place), or what to encode.
    const plans: ScopePlan[] = [];
    const candidates: Candidate[] = [];
    for (let s = 0; s < request.scopeMetrics.length; s++) {
      const scopeMetrics = request.scopeMetrics[s]!;
      const header = scopeField(scopeMetrics.scope);
      const schemaUrl = scopeMetrics.scope.schemaUrl || undefined;
      const old = this.#scopes[s];
      if (old === undefined || !sameBytes(header, old.header) || schemaUrl !== old.schemaUrl || old.metrics.length !== scopeMetrics.metrics.length) same = false;
      const plan: ScopePlan = { header, schemaUrl, metrics: [] };
      for (let m = 0; m < scopeMetrics.metrics.length; m++) {
        const metric = scopeMetrics.metrics[m]!;
        const layout = old?.metrics[m];
        plan.metrics.push(metric);
        if (layout !== undefined && fits(layout, metric)) candidates.push({ plan, index: m, layout, metric, ok: true });
      }
      plans.push(plan);
    }
    this.#patchAll(candidates);
    let patched = 0;
    for (const candidate of candidates) {
      if (!candidate.ok) continue;
      candidate.plan.metrics[candidate.index] = candidate.layout;
      patched++;
    }
    let encoded = 0;
    for (const plan of plans) {
      for (let m = 0; m < plan.metrics.length; m++) {
        const entry = plan.metrics[m]!;
        if ('offset' in entry) continue;
        plan.metrics[m] = this.#prepare(entry as MetricData);
        encoded++;
      }
    }
    if (encoded > 0) same = false;
    if (!same) this.#rebuild(resource, resourceSchemaUrl, plans as PreparedScope[]);
    this.stats.encoded = encoded;
    this.stats.patched = patched;
    this.#held = true;
    return this.#buffer.subarray(0, this.#length);
  }

  /** The bytes of an encode() are no longer read: the next one may write over them. */
  release(bytes: Uint8Array): void {
    if (bytes.buffer === this.#buffer.buffer) this.#held = false;
  }

  #setBuffer(buffer: Uint8Array): void {
    this.#buffer = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /**
   * Writes the candidates' numbers over their layouts', point i of every metric before point
   * i + 1 of any: a producer's point i of one metric and of the next belong to the same source
   * and sit together in memory, where one metric's points are spread over the heap (reading
   * them metric by metric was several times slower, from cache misses). A candidate whose
   * point no longer fits its layout gets ok = false, and is encoded anew.
   */
  #patchAll(candidates: Candidate[]): void {
    const view = this.#view;
    let longest = 0;
    for (const candidate of candidates) longest = Math.max(longest, candidate.layout.points);
    for (let i = 0; i < longest; i++) {
      for (let c = 0; c < candidates.length; c++) {
        const candidate = candidates[c]!;
        const { layout } = candidate;
        if (i >= layout.points || !candidate.ok) continue;
        const ok =
          layout.type === DataPointType.HISTOGRAM
            ? patchHistogram(view, layout, candidate.metric.dataPoints[i] as DataPoint<Histogram>, i)
            : patchNumber(view, layout, candidate.metric.dataPoints[i] as DataPoint<number>, i);
        if (!ok) candidate.ok = false;
      }
    }
  }

  /** A metric's attribute bytes and sizes, ready to be written. */
  #prepare(metric: MetricData): PreparedMetric {
    const header = metricHeader(metric);
    const n = metric.dataPoints.length;
    const attributes: Uint8Array[] = new Array(n);
    const bodySizes = new Int32Array(n);
    let bodies: Uint8Array[] | undefined;
    let dataSize = 0;
    if (metric.dataPointType === DataPointType.EXPONENTIAL_HISTOGRAM) {
      bodies = metric.dataPoints.map((point) => this.#exponentialBody(point));
      bodies.forEach((body, i) => (bodySizes[i] = body.length));
    } else {
      const histogram = metric.dataPointType === DataPointType.HISTOGRAM;
      const field = histogram ? HistogramPoint.attributes.number : NumberPoint.attributes.number;
      for (let i = 0; i < n; i++) {
        const point = metric.dataPoints[i]!;
        const bytes = (attributes[i] = this.#attributes.get(point.attributes, field));
        bodySizes[i] = bytes.length + (histogram ? histogramBodySize(point.value as Histogram) : NUMBER_POINT.size);
      }
    }
    for (let i = 0; i < n; i++) dataSize += 1 + varintSize(bodySizes[i]!) + bodySizes[i]!;
    dataSize += metricDataTailSize(metric);
    const body = header.length + 1 + varintSize(dataSize) + dataSize;
    return { metric, header, attributes, bodies, bodySizes, dataSize, length: 1 + varintSize(body) + body };
  }

  #exponentialBody(point: DataPoint<number | Histogram | ExponentialHistogram>): Uint8Array {
    const value = point.value as ExponentialHistogram;
    const writer = new Writer();
    writer.raw(this.#attributes.get(point.attributes, ExpPoint.attributes.number));
    writeHistogramHead(writer, point, value);
    if (value.scale !== 0) {
      writer.byte(ExpPoint.scale.tag);
      writer.varint(((value.scale << 1) ^ (value.scale >> 31)) >>> 0);
    }
    writer.byte(ExpPoint.zeroCount.tag);
    writeFixed64(writer, value.zeroCount);
    writer.byte(ExpPoint.positive.tag);
    writer.lengthDelimited(exponentialBuckets(value.positive));
    writer.byte(ExpPoint.negative.tag);
    writer.lengthDelimited(exponentialBuckets(value.negative));
    writeDoubleField(writer, ExpPoint.min.tag, value.min);
    writeDoubleField(writer, ExpPoint.max.tag, value.max);
    return writer.finish();
  }

  /** A new buffer: patched metrics copied from the old one, the others encoded. */
  #rebuild(resource: Uint8Array, resourceSchemaUrl: string | undefined, plans: PreparedScope[]): void {
    const scopeSizes = plans.map((plan) => plan.header.length + plan.metrics.reduce((sum, m) => sum + m.length, 0) + stringFieldSize(plan.schemaUrl));
    let body = resource.length + stringFieldSize(resourceSchemaUrl);
    for (const size of scopeSizes) body += 1 + varintSize(size) + size;
    const total = 1 + varintSize(body) + body;
    const old = this.#buffer;
    const writer = new Writer(total);
    writer.byte(ExportMetricsServiceRequest.resourceMetrics.tag);
    writer.varint(body);
    writer.raw(resource);
    const scopes: ScopeLayout[] = [];
    for (let s = 0; s < plans.length; s++) {
      const plan = plans[s]!;
      writer.byte(ResourceMetricsFields.scopeMetrics.tag);
      writer.varint(scopeSizes[s]!);
      writer.raw(plan.header);
      const metrics: MetricLayout[] = [];
      for (const entry of plan.metrics) {
        if ('metric' in entry) {
          metrics.push(this.#writeMetric(writer, entry));
        } else {
          writer.raw(old.subarray(entry.offset, entry.offset + entry.length));
          entry.offset = writer.pos - entry.length;
          metrics.push(entry);
        }
      }
      writeStringField(writer, ScopeMetricsFields.schemaUrl.tag, plan.schemaUrl);
      scopes.push({ header: plan.header, schemaUrl: plan.schemaUrl, metrics });
    }
    writeStringField(writer, ResourceMetricsFields.schemaUrl.tag, resourceSchemaUrl);
    if (writer.pos !== total) throw new Error(`OTLP protobuf encoding wrote ${writer.pos} bytes where it planned ${total}: an encoder defect`);
    this.#setBuffer(writer.bytes);
    this.#length = total;
    this.#resource = resource;
    this.#resourceSchemaUrl = resourceSchemaUrl;
    this.#scopes = scopes;
  }

  #writeMetric(writer: Writer, prepared: PreparedMetric): MetricLayout {
    const { metric, header, attributes, bodies, bodySizes, dataSize } = prepared;
    const offset = writer.pos;
    writeMetricHead(writer, metric, header, dataSize);
    const type = metric.dataPointType;
    const n = metric.dataPoints.length;
    const bodyStart = new Int32Array(n);
    const bodyEnd = new Int32Array(n);
    const histogram = type === DataPointType.HISTOGRAM;
    const shapes = histogram ? new Int32Array(n) : undefined;
    const bounds = histogram ? new Array<number[]>(n) : undefined;
    const attributeObjects = new Array<Attributes | undefined>(n);
    const int = metric.descriptor.valueType === ValueType.INT;
    for (let i = 0; i < n; i++) {
      const point = metric.dataPoints[i]!;
      attributeObjects[i] = point.attributes;
      writer.byte(MetricDataFields.dataPoints.tag);
      writer.varint(bodySizes[i]!);
      bodyStart[i] = writer.pos - offset;
      if (bodies !== undefined) {
        writer.raw(bodies[i]!);
      } else if (histogram) {
        const value = point.value as Histogram;
        shapes![i] = histogramShape(value);
        bounds![i] = value.buckets.boundaries;
        writeHistogramBody(writer, point as DataPoint<Histogram>, attributes[i]!);
      } else {
        writeNumberPoint(writer, point.startTime, point.endTime, int, point.value as number, attributes[i]!);
      }
      bodyEnd[i] = writer.pos - offset;
    }
    writeMetricDataTail(writer, metric);
    return {
      name: metric.descriptor.name,
      description: metric.descriptor.description,
      unit: metric.descriptor.unit,
      valueType: metric.descriptor.valueType,
      type,
      temporality: metric.aggregationTemporality,
      monotonic: type === DataPointType.SUM && !!metric.isMonotonic,
      patchable: bodies === undefined,
      offset,
      length: writer.pos - offset,
      points: n,
      attributes: attributeObjects,
      bodyStart,
      bodyEnd,
      shapes,
      bounds,
    };
  }
}

function metricBodySize(prepared: PreparedMetric): number {
  return prepared.header.length + 1 + varintSize(prepared.dataSize) + prepared.dataSize;
}

/** The Metric field's tag and length, its header (name, description, unit), and the tag and
 * length of its data (Gauge, Sum, Histogram or ExponentialHistogram) of `dataSize` bytes. */
export function writeMetricHead(writer: Writer, metric: MetricData, header: Uint8Array, dataSize: number): void {
  writer.byte(ScopeMetricsFields.metrics.tag);
  writer.varint(header.length + 1 + varintSize(dataSize) + dataSize);
  writer.raw(header);
  const type = metric.dataPointType;
  const data = type === DataPointType.GAUGE ? Metric.gauge : type === DataPointType.SUM ? Metric.sum : type === DataPointType.HISTOGRAM ? Metric.histogram : Metric.exponentialHistogram;
  writer.byte(data.tag);
  writer.varint(dataSize);
}

/** The fields of a metric's data after its points: temporality (all but gauges), monotonic (sums). */
export function metricDataTailSize(metric: MetricData): number {
  if (metric.dataPointType === DataPointType.GAUGE) return 0;
  let size = protoTemporality(metric.aggregationTemporality) !== 0 ? 2 : 0;
  if (metric.dataPointType === DataPointType.SUM && metric.isMonotonic) size += 2;
  return size;
}

export function writeMetricDataTail(writer: Writer, metric: MetricData): void {
  if (metric.dataPointType === DataPointType.GAUGE) return;
  const temporality = protoTemporality(metric.aggregationTemporality);
  if (temporality !== 0) {
    writer.byte(MetricDataFields.aggregationTemporality.tag);
    writer.byte(temporality);
  }
  if (metric.dataPointType === DataPointType.SUM && metric.isMonotonic) {
    writer.byte(MetricDataFields.isMonotonic.tag);
    writer.byte(1);
  }
}

function writeTime(writer: Writer, time: HrTime): void {
  writer.ensure(8);
  setUnixNanos(writer.view, writer.pos, time);
  writer.pos += 8;
}

function writeFixed64(writer: Writer, value: number): void {
  writer.ensure(8);
  setFixed64(writer.view, writer.pos, value);
  writer.pos += 8;
}

function writeDoubleField(writer: Writer, tag: number, value: number | undefined): void {
  if (value === undefined) return;
  writer.byte(tag);
  writer.double(value);
}

/** A NumberDataPoint's body, as NUMBER_POINT lays it out: NUMBER_POINT.size + attributes bytes. */
export function writeNumberPoint(writer: Writer, startTime: HrTime, endTime: HrTime, int: boolean, value: number, attributes: Uint8Array): void {
  writer.byte(NumberPoint.startTimeUnixNano.tag);
  writeTime(writer, startTime);
  writer.byte(NumberPoint.timeUnixNano.tag);
  writeTime(writer, endTime);
  if (int) {
    writer.byte(NumberPoint.asInt.tag);
    writer.ensure(8);
    setSfixed64(writer.view, writer.pos, value);
    writer.pos += 8;
  } else {
    writer.byte(NumberPoint.asDouble.tag);
    writer.double(value);
  }
  writer.raw(attributes);
}

/** Fields 2 to 5 of a HistogramDataPoint and an ExponentialHistogramDataPoint alike (their
 * numbers are the same, HISTOGRAM_HEAD): start and end time, count, and the sum when there is one. */
function writeHistogramHead(writer: Writer, point: DataPoint<unknown>, value: { count: number; sum?: number | undefined }): void {
  writer.byte(HistogramPoint.startTimeUnixNano.tag);
  writeTime(writer, point.startTime);
  writer.byte(HistogramPoint.timeUnixNano.tag);
  writeTime(writer, point.endTime);
  writer.byte(HistogramPoint.count.tag);
  writeFixed64(writer, value.count);
  writeDoubleField(writer, HistogramPoint.sum.tag, value.sum);
}

/** A HistogramDataPoint's body: histogramBodySize(value) + attributes bytes. */
export function writeHistogramBody(writer: Writer, point: DataPoint<Histogram>, attributes: Uint8Array): void {
  const value = point.value;
  writeHistogramHead(writer, point, value);
  const { counts, boundaries } = value.buckets;
  if (counts.length > 0) {
    writer.byte(HistogramPoint.bucketCounts.tag);
    writer.varint(counts.length * 8);
    writer.ensure(counts.length * 8);
    for (const count of counts) writeFixed64(writer, count);
  }
  if (boundaries.length > 0) {
    writer.byte(HistogramPoint.explicitBounds.tag);
    writer.varint(boundaries.length * 8);
    for (const bound of boundaries) writer.double(bound);
  }
  writer.raw(attributes);
  writeDoubleField(writer, HistogramPoint.min.tag, value.min);
  writeDoubleField(writer, HistogramPoint.max.tag, value.max);
}

/** ExponentialHistogramDataPoint.Buckets: offset (sint32) and varint counts. */
function exponentialBuckets(buckets: { offset: number; bucketCounts: number[] }): Uint8Array {
  const writer = new Writer();
  if (buckets.offset !== 0) {
    writer.byte(ExponentialBuckets.offset.tag);
    writer.varint(((buckets.offset << 1) ^ (buckets.offset >> 31)) >>> 0);
  }
  if (buckets.bucketCounts.length > 0) {
    const counts = new Writer();
    for (const count of buckets.bucketCounts) counts.varint(count);
    writer.byte(ExponentialBuckets.bucketCounts.tag);
    writer.lengthDelimited(counts.finish());
  }
  return writer.finish();
}
