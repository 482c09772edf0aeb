/**
 * The fused path's exporter side: the OTLP protobuf request of a KvmStatsProducer paired with
 * KvmOtlpMetricExporter (otel/series-frame.ts says how the two meet). The producer's metrics
 * live in a frame, the bytes its series are written into at each collection; this file lays
 * the frame out when the producer's emitters change, and at each export splices in front of it
 * the request's head: the resource and the SDK's own scopes (the agent's self-telemetry),
 * encoded by OtlpProtobufEncoder, and the producer's scope. The request is then the frame's
 * own buffer, nothing copied: byte for byte what ProtobufMetricsSerializer writes for the
 * ResourceMetrics the plain producer would have returned.
 *
 * The producer's scope must be the request's last (its reader lists it last among its
 * metricProducers, after the SDK's scopes, which a reader always puts first).
 */
import { type AggregationTemporality, DataPointType, type Histogram, type MetricData, type ResourceMetrics, type ScopeMetrics } from '@opentelemetry/sdk-metrics';
import type { Emitter, MetricSlot } from '../otel/plan.js';
import type { HistogramPoint, NumberPoint } from '../otel/points.js';
import { type FrameLayout, type FramePairing, POINT_BODY, POINT_BUCKETS, POINT_END, SeriesFrame, pointIndex } from '../otel/series-frame.js';
import { AttributeCache } from './attributes.js';
import {
  OtlpProtobufEncoder,
  histogramBodySize,
  metricDataTailSize,
  metricHeader,
  scopeField,
  stringFieldSize,
  writeHistogramBody,
  writeMetricDataTail,
  writeMetricHead,
  writeNumberPoint,
  writeStringField,
} from './otlp-protobuf.js';
import {
  ExportMetricsServiceRequest,
  HISTOGRAM_HEAD,
  HistogramDataPoint,
  MetricData as MetricDataFields,
  NUMBER_POINT,
  NumberDataPoint,
  ResourceMetrics as ResourceMetricsFields,
  ScopeMetrics as ScopeMetricsFields,
} from './otlp-schema.js';
import { Writer, varintSize } from './wire.js';

/** Room kept before the frame's metrics for the request's head, and after for its tail; grown
 * when a head does not fit. */
const HEAD_ROOM = 4096;
const TAIL_ROOM = 256;

/** Where the 8 bytes of each fixed field are in a point's body (OTLP's schema). */
const POINT_SLOTS = {
  start: NUMBER_POINT.start + 1,
  time: NUMBER_POINT.time + 1,
  value: NUMBER_POINT.value + 1,
  count: HISTOGRAM_HEAD.count + 1,
  sum: HISTOGRAM_HEAD.sum + 1,
} as const;
if (NUMBER_POINT.start !== HISTOGRAM_HEAD.start || NUMBER_POINT.time !== HISTOGRAM_HEAD.time) throw new Error('the number point and histogram head layouts must share their times: the frame writes them alike');

/** A metric of the frame as the plain producer would return it: the header's source. */
interface FrameMetric {
  readonly data: MetricData;
  readonly header: Uint8Array;
}

export class OtlpFusedFrame implements FrameLayout {
  readonly frame = new SeriesFrame(POINT_SLOTS);
  /** The producer's scope, as its collect() hands it out. */
  readonly scope: ScopeMetrics;
  readonly #encoder: OtlpProtobufEncoder;
  readonly #attributes = new AttributeCache();
  readonly #metrics = new WeakMap<MetricSlot, FrameMetric>();
  /** The emitters laid out, and where the metrics are in the frame's bytes. */
  #emitters: readonly Emitter[] = [];
  #base = HEAD_ROOM;
  #length = 0;
  #held = false;
  /** Whether the frame was laid out anew since the last encode(), for tests and the bench; and
   * how many points every layout so far wrote from data points (each such point was built for
   * the layout and is garbage after it: the agent's cue for a full GC, agent/heap.ts). */
  readonly stats = { arranged: 0, newPoints: 0 };

  /** `encoder` encodes the rest of the request (resource and the SDK's scopes). */
  constructor(scope: ScopeMetrics, encoder: OtlpProtobufEncoder) {
    this.scope = scope;
    this.#encoder = encoder;
    this.frame.setBytes(new Uint8Array(HEAD_ROOM + TAIL_ROOM));
  }

  begin(): void {
    if (!this.#held) return;
    // The last request is still being sent: this collection writes into a copy.
    this.frame.setBytes(this.frame.bytes.slice());
    this.#held = false;
  }

  arrange(slots: Iterable<MetricSlot>, emitters: readonly Emitter[], temporality: AggregationTemporality): void {
    // Each metric's points, in emitter order, as the plain producer lists them: a counting sort
    // of every point by its metric into flat arrays (an object per point was 30 MiB of garbage
    // at a first layout of 10,000 fds, at its RSS peak).
    // Read twice below: `slots` may be an iterator.
    const slotList = [...slots];
    const slotIndex = new Map<MetricSlot, number>();
    for (const slot of slotList) slotIndex.set(slot, slotIndex.size);
    const metricCount = slotIndex.size;
    // Per plan (shared by the emitters of a table), the metric of each of its points.
    const planIndexes = new Map<readonly MetricSlot[], Int32Array>();
    const counts = new Int32Array(metricCount + 1);
    let points = 0;
    for (const emitter of emitters) {
      const planSlots = emitter.plan.slots;
      let indexes = planIndexes.get(planSlots);
      if (indexes === undefined) planIndexes.set(planSlots, (indexes = Int32Array.from(planSlots, (slot) => slotIndex.get(slot)!)));
      for (let j = 0; j < indexes.length; j++) counts[indexes[j]! + 1]!++;
      points += indexes.length;
    }
    // counts[m] becomes where metric m's points start.
    for (let m = 0; m < metricCount; m++) counts[m + 1]! += counts[m]!;
    const next = counts.slice(0, metricCount);
    const entryEmitter = new Int32Array(points);
    const entryJ = new Int32Array(points);
    const entrySize = new Int32Array(points);
    // Where each emitter's offsets start in the layout's one array.
    const ats = new Int32Array(emitters.length);
    let at = 0;
    for (let e = 0; e < emitters.length; e++) {
      const emitter = emitters[e]!;
      const indexes = planIndexes.get(emitter.plan.slots)!;
      ats[e] = at;
      at = pointIndex(at, indexes.length);
      for (let j = 0; j < indexes.length; j++) {
        const i = next[indexes[j]!]!++;
        entryEmitter[i] = e;
        entryJ[i] = j;
        entrySize[i] = this.#bodySize(emitter, j);
      }
    }
    const metrics: { metric: FrameMetric; first: number; end: number; dataSize: number }[] = [];
    let length = 0;
    let m = 0;
    for (const slot of slotList) {
      const first = counts[m]!;
      const end = counts[++m]!;
      if (first === end) continue;
      const metric = this.#metricOf(slot, temporality);
      let dataSize = metricDataTailSize(metric.data);
      for (let i = first; i < end; i++) dataSize += 1 + varintSize(entrySize[i]!) + entrySize[i]!;
      const body = metric.header.length + 1 + varintSize(dataSize) + dataSize;
      length += 1 + varintSize(body) + body;
      metrics.push({ metric, first, end, dataSize });
    }
    const old = this.frame.bytes;
    const base = this.#base;
    const writer = Writer.over(new Uint8Array(base + length + TAIL_ROOM), base);
    const offsets = new Int32Array(pointIndex(0, points));
    for (const { metric, first, end, dataSize } of metrics) {
      writeMetricHead(writer, metric.data, metric.header, dataSize);
      for (let i = first; i < end; i++) {
        const size = entrySize[i]!;
        const e = entryEmitter[i]!;
        const j = entryJ[i]!;
        const emitter = emitters[e]!;
        writer.byte(MetricDataFields.dataPoints.tag);
        writer.varint(size);
        const start = writer.pos;
        const k = pointIndex(ats[e]!, j);
        const before = emitter.wire;
        if (before !== undefined) {
          // Its bytes in the old frame are this collection's.
          const b = pointIndex(before.at, j);
          const body = before.offsets[b + POINT_BODY]!;
          writer.raw(old.subarray(body, before.offsets[b + POINT_END]!));
          offsets[k + POINT_BUCKETS] = start + before.offsets[b + POINT_BUCKETS]! - body;
        } else {
          offsets[k + POINT_BUCKETS] = this.#writePoint(writer, emitter, j);
          this.stats.newPoints++;
        }
        offsets[k + POINT_BODY] = start;
        offsets[k + POINT_END] = writer.pos;
      }
      writeMetricDataTail(writer, metric.data);
    }
    if (writer.pos !== base + length) throw new Error(`the OTLP frame wrote ${writer.pos - base} bytes where it planned ${length}: an encoder defect`);
    for (const emitter of this.#emitters) emitter.wire = undefined;
    for (let e = 0; e < emitters.length; e++) emitters[e]!.wire = { frame: this.frame, offsets, at: ats[e]! };
    this.#emitters = emitters.slice();
    this.frame.setBytes(writer.bytes);
    this.#length = length;
    this.stats.arranged = 1;
  }

  /** The request for `request`, whose last scope is the producer's: the frame's bytes, with
   * the head written in front of its metrics. Held until release(). */
  encode(request: ResourceMetrics): Uint8Array {
    const scopes = request.scopeMetrics;
    if (scopes[scopes.length - 1] !== this.scope) throw new Error('the paired KvmStatsProducer must be the last of its reader\'s metricProducers: list it last');
    const sdk = this.#encoder.encode({ resource: request.resource, scopeMetrics: scopes.slice(0, -1) });
    // The SDK's request: its ResourceMetrics' tag and length, then the resource and scopes, then
    // the resource's schema URL, which goes after the producer's scope here.
    let pos = 1;
    while (sdk[pos]! & 0x80) pos++;
    pos++;
    const resourceSchemaUrl = request.resource.schemaUrl || undefined;
    const resourceTail = stringFieldSize(resourceSchemaUrl);
    const inner = sdk.subarray(pos, sdk.length - resourceTail);
    const scopeHeader = scopeField(this.scope.scope);
    const scopeSchemaUrl = this.scope.scope.schemaUrl || undefined;
    const scopeBody = scopeHeader.length + this.#length + stringFieldSize(scopeSchemaUrl);
    const body = inner.length + 1 + varintSize(scopeBody) + scopeBody + resourceTail;
    const head = 1 + varintSize(body) + inner.length + 1 + varintSize(scopeBody) + scopeHeader.length;
    const tail = stringFieldSize(scopeSchemaUrl) + resourceTail;
    if (head > this.#base || tail > TAIL_ROOM) this.#move(Math.max(HEAD_ROOM, 2 * head), tail);
    const base = this.#base;
    const writer = Writer.over(this.frame.bytes, base - head);
    writer.byte(ExportMetricsServiceRequest.resourceMetrics.tag);
    writer.varint(body);
    writer.raw(inner);
    writer.byte(ResourceMetricsFields.scopeMetrics.tag);
    writer.varint(scopeBody);
    writer.raw(scopeHeader);
    writer.pos = base + this.#length;
    writeStringField(writer, ScopeMetricsFields.schemaUrl.tag, scopeSchemaUrl);
    writeStringField(writer, ResourceMetricsFields.schemaUrl.tag, resourceSchemaUrl);
    this.#encoder.release(sdk);
    this.#held = true;
    const bytes = this.frame.bytes.subarray(base - head, base + this.#length + tail);
    this.stats.arranged = 0;
    return bytes;
  }

  /** The bytes of an encode() are no longer read. */
  release(bytes: Uint8Array): void {
    if (bytes.buffer === this.frame.bytes.buffer) this.#held = false;
  }

  /** Moves the metrics to a buffer with `headRoom` before them and room for `tail` after. */
  #move(headRoom: number, tail: number): void {
    const bytes = new Uint8Array(headRoom + this.#length + Math.max(TAIL_ROOM, tail));
    bytes.set(this.frame.bytes.subarray(this.#base, this.#base + this.#length), headRoom);
    const shift = headRoom - this.#base;
    // Every emitter laid out shares one array of offsets.
    const offsets = this.#emitters[0]?.wire!.offsets;
    if (offsets !== undefined) for (let i = 0; i < offsets.length; i++) offsets[i]! += shift;
    this.#base = headRoom;
    this.frame.setBytes(bytes);
    this.#held = false;
  }

  #metricOf(slot: MetricSlot, temporality: AggregationTemporality): FrameMetric {
    let metric = this.#metrics.get(slot);
    if (metric === undefined) {
      const base = { descriptor: slot.descriptor, aggregationTemporality: temporality, dataPoints: [] };
      const data: MetricData =
        slot.kind === 'sum'
          ? { ...base, dataPointType: DataPointType.SUM, isMonotonic: true }
          : slot.kind === 'gauge'
            ? { ...base, dataPointType: DataPointType.GAUGE }
            : { ...base, dataPointType: DataPointType.HISTOGRAM };
      metric = { data, header: metricHeader(data) };
      this.#metrics.set(slot, metric);
    }
    return metric;
  }

  /** The size of an emitter's point j: as laid out in the frame, else as its data point says. */
  #bodySize(emitter: Emitter, j: number): number {
    const wire = emitter.wire;
    if (wire !== undefined) {
      const at = pointIndex(wire.at, j);
      return wire.offsets[at + POINT_END]! - wire.offsets[at + POINT_BODY]!;
    }
    const point = emitter.points![j]!;
    if (point.value !== null && typeof point.value === 'object') {
      return histogramBodySize(point.value) + this.#attributes.get(point.attributes, HistogramDataPoint.attributes.number).length;
    }
    return NUMBER_POINT.size + this.#attributes.get(point.attributes, NumberDataPoint.attributes.number).length;
  }

  /** Writes an emitter's point j from its data point; returns where its buckets start. */
  #writePoint(writer: Writer, emitter: Emitter, j: number): number {
    const point = emitter.points![j]!;
    const start = writer.pos;
    if (point.value !== null && typeof point.value === 'object') {
      const value = (point as HistogramPoint).value as Histogram;
      writeHistogramBody(writer, point as HistogramPoint, this.#attributes.get(point.attributes, HistogramDataPoint.attributes.number));
      return start + (value.sum !== undefined ? HISTOGRAM_HEAD.sizeWithSum : HISTOGRAM_HEAD.size) + 1 + varintSize(value.buckets.counts.length * 8);
    }
    const number = point as NumberPoint;
    writeNumberPoint(writer, number.startTime, number.endTime, emitter.plan.slots[j]!.integer, number.value, this.#attributes.get(point.attributes, NumberDataPoint.attributes.number));
    return start;
  }
}

/** A pairing without an exporter: the frame of the producer paired with it, whose encode()
 * gives the request the exporter would send (the bench's agent cycle, tests). */
export class FrameOnly implements FramePairing {
  frame: OtlpFusedFrame | undefined;

  pairProducer(scope: ScopeMetrics): OtlpFusedFrame {
    return (this.frame = new OtlpFusedFrame(scope, new OtlpProtobufEncoder()));
  }
}
