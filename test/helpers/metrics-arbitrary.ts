/**
 * fast-check arbitraries of sdk-metrics ResourceMetrics: every point kind, both temporalities,
 * int and double value types, attributes of every value type (arrays, nested maps, bytes,
 * empty ones), empty scopes, several scopes, optional histogram fields, and points that carry
 * exemplars the way some producers add them (the OTLP serializers of otlp-transformer write
 * none).
 */
import { type Attributes, type HrTime, ValueType } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType, type MetricData, type ResourceMetrics, type ScopeMetrics } from '@opentelemetry/sdk-metrics';
import fc from 'fast-check';

const text = fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' }), fc.constantFrom('', 'kvm.vcpu.exits', 'process.pid'));

const number = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.maxSafeInteger(),
  fc.constantFrom(0, -0, 2 ** 53, 2 ** 63, -(2 ** 63), 2 ** 64, -1, NaN, Infinity, -Infinity, 1.5, 2 ** 31, -(2 ** 31) - 1),
);

const primitive = fc.oneof(text, fc.boolean(), number);

const anyValue: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    primitive,
    fc.uint8Array({ maxLength: 8 }),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(text, tie('value'), { maxKeys: 3 }),
    fc.constantFrom(null, undefined),
  ),
})).value;

export const attributes: fc.Arbitrary<Attributes> = fc.oneof(
  fc.constant({}),
  fc.dictionary(text, anyValue, { maxKeys: 5 }) as fc.Arbitrary<Attributes>,
  fc.record({ 'process.pid': fc.nat(), 'kvm.vm.name': text, 'kvm.vcpu.id': fc.nat(64) }),
);

export const hrTime: fc.Arbitrary<HrTime> = fc.tuple(fc.nat(2 ** 32 - 1), fc.nat(999_999_999));

const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });

/** Exemplars as a producer may attach them (otlp-transformer ignores them). */
const exemplars = optional(
  fc.array(fc.record({ filteredAttributes: attributes, value: fc.double(), timestamp: hrTime, spanId: fc.constant('0102030405060708'), traceId: fc.constant('0102030405060708090a0b0c0d0e0f10') }), {
    maxLength: 2,
  }),
);

function point<T>(value: fc.Arbitrary<T>) {
  return fc.record({ startTime: hrTime, endTime: hrTime, attributes, value, exemplars }).map(({ exemplars: e, ...rest }) => (e === undefined ? rest : { ...rest, exemplars: e }));
}

const counts = fc.array(fc.oneof(fc.nat(), fc.maxSafeInteger().map(Math.abs)), { maxLength: 6 });

const histogram = fc
  .record({
    boundaries: fc.array(fc.double({ noNaN: true }), { maxLength: 5 }),
    counts,
    count: fc.oneof(fc.nat(), fc.maxSafeInteger().map(Math.abs)),
    sum: optional(fc.double()),
    min: optional(fc.double()),
    max: optional(fc.double()),
  })
  .map(({ boundaries, counts: c, ...rest }) => {
    const value: Record<string, unknown> = { buckets: { boundaries, counts: c }, count: rest.count };
    // Optional fields absent, not undefined, as the SDK leaves them.
    for (const key of ['sum', 'min', 'max'] as const) if (rest[key] !== undefined) value[key] = rest[key];
    return value;
  });

const exponential = fc
  .record({
    count: fc.nat(),
    sum: optional(fc.double()),
    scale: fc.integer({ min: -10, max: 20 }),
    zeroCount: fc.nat(),
    positive: fc.record({ offset: fc.integer({ min: -100, max: 100 }), bucketCounts: fc.array(fc.nat(), { maxLength: 5 }) }),
    negative: fc.record({ offset: fc.integer({ min: -100, max: 100 }), bucketCounts: fc.array(fc.nat(), { maxLength: 5 }) }),
    min: optional(fc.double()),
    max: optional(fc.double()),
  })
  .map((value) => Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)));

const descriptor = fc.record({ name: text, description: text, unit: text, valueType: fc.constantFrom(ValueType.INT, ValueType.DOUBLE) });
const temporality = fc.constantFrom(AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA);

/** Values that fit the descriptor: integers for INT (the SDK's int instruments), any number for DOUBLE. */
function numberPoints(valueType: ValueType) {
  const value = valueType === ValueType.INT ? fc.oneof(fc.integer(), fc.maxSafeInteger(), fc.constantFrom(0, -1, 2 ** 53)) : number;
  return fc.array(point(value), { maxLength: 4 });
}

export const metricData: fc.Arbitrary<MetricData> = descriptor.chain((d) =>
  fc.oneof(
    fc.record({ descriptor: fc.constant(d), aggregationTemporality: temporality, dataPointType: fc.constant(DataPointType.SUM), isMonotonic: fc.boolean(), dataPoints: numberPoints(d.valueType) }),
    fc.record({ descriptor: fc.constant(d), aggregationTemporality: temporality, dataPointType: fc.constant(DataPointType.GAUGE), dataPoints: numberPoints(d.valueType) }),
    fc.record({ descriptor: fc.constant(d), aggregationTemporality: temporality, dataPointType: fc.constant(DataPointType.HISTOGRAM), dataPoints: fc.array(point(histogram), { maxLength: 3 }) }),
    fc.record({
      descriptor: fc.constant(d),
      aggregationTemporality: temporality,
      dataPointType: fc.constant(DataPointType.EXPONENTIAL_HISTOGRAM),
      dataPoints: fc.array(point(exponential), { maxLength: 3 }),
    }),
  ),
) as fc.Arbitrary<MetricData>;

const scope = fc
  .record({ name: text, version: optional(text), schemaUrl: optional(text), attributes: optional(attributes), droppedAttributesCount: optional(fc.nat(5)) })
  .map((s) => Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined)) as unknown as ScopeMetrics['scope']);

export const scopeMetrics: fc.Arbitrary<ScopeMetrics> = fc.record({ scope, metrics: fc.array(metricData, { maxLength: 4 }) });

const resource: fc.Arbitrary<Resource> = fc.oneof(
  attributes.map((a) => resourceFromAttributes(a as Record<string, string>)),
  fc.record({ attributes, schemaUrl: optional(text) }).map((r) => r as unknown as Resource),
);

export const resourceMetrics: fc.Arbitrary<ResourceMetrics> = fc.record({ resource, scopeMetrics: fc.array(scopeMetrics, { maxLength: 3 }) });
