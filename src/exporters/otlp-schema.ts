/**
 * The OTLP metrics wire schema, written once: per message (opentelemetry/proto, metrics v1,
 * common v1, resource v1, collector ExportMetricsServiceRequest) its fields by name, each with
 * its field number, wire type and the tag byte those make. The encoders (otlp-protobuf.ts,
 * attributes.ts, otlp-fused.ts) write tags from here and nowhere else.
 *
 * It also says where the fixed-width fields of a NumberDataPoint and of a HistogramDataPoint's
 * head sit in a point's body, as otlp-transformer writes them (start, time, value or count and
 * sum, before the attributes): the one layout the writer, the sizer and the in-place patcher
 * of otlp-protobuf.ts, and the fused frame's slots, all follow.
 */

/** Protobuf wire types (only those OTLP metrics use). */
export const WireType = { VARINT: 0, I64: 1, LEN: 2 } as const;
type WireTypeValue = (typeof WireType)[keyof typeof WireType];

export interface Field {
  readonly number: number;
  readonly wireType: WireTypeValue;
  /** (number << 3) | wireType: one byte for every field here (numbers below 16). */
  readonly tag: number;
}

function field(number: number, wireType: WireTypeValue): Field {
  const tag = (number << 3) | wireType;
  // Every tag is written as one byte.
  if (tag > 0x7f) throw new Error(`OTLP field ${number} needs a tag of two bytes: the schema's one-byte tags do not hold it`);
  return { number, wireType, tag };
}

const { VARINT, I64, LEN } = WireType;

export const ExportMetricsServiceRequest = { resourceMetrics: field(1, LEN) } as const;
export const ResourceMetrics = { resource: field(1, LEN), scopeMetrics: field(2, LEN), schemaUrl: field(3, LEN) } as const;
export const Resource = { attributes: field(1, LEN), droppedAttributesCount: field(2, VARINT) } as const;
export const ScopeMetrics = { scope: field(1, LEN), metrics: field(2, LEN), schemaUrl: field(3, LEN) } as const;
export const InstrumentationScope = { name: field(1, LEN), version: field(2, LEN), attributes: field(3, LEN), droppedAttributesCount: field(4, VARINT) } as const;
export const Metric = {
  name: field(1, LEN),
  description: field(2, LEN),
  unit: field(3, LEN),
  gauge: field(5, LEN),
  sum: field(7, LEN),
  histogram: field(9, LEN),
  exponentialHistogram: field(10, LEN),
} as const;
/** Gauge, Sum, Histogram and ExponentialHistogram share their first fields. */
export const MetricData = { dataPoints: field(1, LEN), aggregationTemporality: field(2, VARINT), isMonotonic: field(3, VARINT) } as const;
export const NumberDataPoint = {
  startTimeUnixNano: field(2, I64),
  timeUnixNano: field(3, I64),
  asDouble: field(4, I64),
  asInt: field(6, I64),
  attributes: field(7, LEN),
} as const;
export const HistogramDataPoint = {
  startTimeUnixNano: field(2, I64),
  timeUnixNano: field(3, I64),
  count: field(4, I64),
  sum: field(5, I64),
  bucketCounts: field(6, LEN),
  explicitBounds: field(7, LEN),
  attributes: field(9, LEN),
  min: field(11, I64),
  max: field(12, I64),
} as const;
export const ExponentialHistogramDataPoint = {
  attributes: field(1, LEN),
  startTimeUnixNano: field(2, I64),
  timeUnixNano: field(3, I64),
  count: field(4, I64),
  sum: field(5, I64),
  scale: field(6, VARINT),
  zeroCount: field(7, I64),
  positive: field(8, LEN),
  negative: field(9, LEN),
  min: field(12, I64),
  max: field(13, I64),
} as const;
export const ExponentialBuckets = { offset: field(1, VARINT), bucketCounts: field(2, LEN) } as const;
export const KeyValue = { key: field(1, LEN), value: field(2, LEN) } as const;
export const AnyValue = {
  stringValue: field(1, LEN),
  boolValue: field(2, VARINT),
  intValue: field(3, VARINT),
  doubleValue: field(4, I64),
  arrayValue: field(5, LEN),
  kvlistValue: field(6, LEN),
  bytesValue: field(7, LEN),
} as const;
export const ArrayValue = { values: field(1, LEN) } as const;
export const KeyValueList = { values: field(1, LEN) } as const;

/** A tag and its 8 bytes. */
export const FIXED_FIELD = 9;

/**
 * Where a NumberDataPoint's fixed fields sit from the start of its body (each at its tag; the
 * value's bytes at +1), and the size before its attributes. The value's tag is asInt or asDouble.
 */
export const NUMBER_POINT = { start: 0, time: FIXED_FIELD, value: 2 * FIXED_FIELD, size: 3 * FIXED_FIELD } as const;

/**
 * A HistogramDataPoint's head, as NUMBER_POINT: start, time, count, then the sum when the
 * point has one (sizeWithSum), then bucket_counts.
 */
export const HISTOGRAM_HEAD = { start: 0, time: FIXED_FIELD, count: 2 * FIXED_FIELD, sum: 3 * FIXED_FIELD, size: 3 * FIXED_FIELD, sizeWithSum: 4 * FIXED_FIELD } as const;

/** OTLP's AggregationTemporality enum. */
export const AGGREGATION_TEMPORALITY_DELTA = 1;
export const AGGREGATION_TEMPORALITY_CUMULATIVE = 2;
