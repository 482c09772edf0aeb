/**
 * Collections that follow one another as a producer's and the SDK's do: the same attributes
 * objects, point objects and bounds arrays again, values rewritten (in place, as with reused data
 * points, or in new point objects), and now and then a change that the text encoders must see
 * (a series that comes or goes, a new attributes object, a new start time, a histogram of another
 * shape or bounds, a metric that goes). For the encoders that keep text between exports.
 */
import { ValueType } from '@opentelemetry/api';
import { type DataPoint, DataPointType, type Histogram, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import fc from 'fast-check';

/** A data point as a producer that reuses them has it: its value rewritten in place. */
type Point = { -readonly [K in keyof DataPoint<unknown>]: DataPoint<unknown>[K] };

export type SeriesChange =
  | { readonly kind: 'values'; readonly seed: number }
  | { readonly kind: 'drop' | 'add' | 'attributes' | 'start' | 'shape' | 'bounds' | 'bounds-copy' | 'metric'; readonly at: number; readonly seed: number };

export const seriesChange: fc.Arbitrary<SeriesChange> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('values' as const), seed: fc.nat() }) },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constantFrom('drop', 'add', 'attributes', 'start', 'shape', 'bounds', 'bounds-copy', 'metric') as fc.Arbitrary<'drop'>, at: fc.nat(), seed: fc.nat() }),
  },
);

/** Values whose text has another width than their neighbours' (9 and 10, 99 and 100). */
const INTEGERS = [0, 9, 10, 99, 100, 7, 123_456_789, -1, -10, 2 ** 53 - 1, 1_000_000];
const DOUBLES = [...INTEGERS, 0.5, -0, 1e21, 1.25e-7, NaN, Infinity, -Infinity, 3.14159];

function pick<T>(list: readonly T[], seed: number): T {
  return list[seed % list.length]!;
}

function newValues(metric: MetricData, point: Point, seed: number): unknown {
  const value = point.value;
  if (typeof value === 'number') return pick(metric.descriptor.valueType === ValueType.INT ? INTEGERS : DOUBLES, seed);
  if (metric.dataPointType !== DataPointType.HISTOGRAM) return value;
  const histogram = value as Histogram;
  const counts = histogram.buckets.counts;
  for (let b = 0; b < counts.length; b++) counts[b] = Math.abs(pick(INTEGERS, seed + b));
  if (histogram.count != null) histogram.count = Math.abs(pick(INTEGERS, seed + 3));
  if (histogram.sum !== undefined) histogram.sum = pick(DOUBLES, seed + 5);
  if (histogram.min !== undefined) histogram.min = pick(DOUBLES, seed + 6);
  if (histogram.max !== undefined) histogram.max = pick(DOUBLES, seed + 7);
  return histogram;
}

/** A deep copy of a histogram value (new arrays, the same bounds array). */
function copyHistogram(value: Histogram): Histogram {
  return { ...value, buckets: { boundaries: value.buckets.boundaries, counts: [...value.buckets.counts] } };
}

/**
 * The next collection after `metrics`: the same scopes and descriptors, every point's values
 * rewritten ('values'), or one change at metric `at` (modulo their number). `inPlace` keeps the
 * point objects and rewrites their values, as a producer that reuses its data points does;
 * else every point is a new object with the old one's attributes and start time objects.
 */
export function nextCollection(metrics: ResourceMetrics, change: SeriesChange, inPlace: boolean): ResourceMetrics {
  const all = metrics.scopeMetrics.flatMap((scope) => scope.metrics);
  const target = change.kind === 'values' || all.length === 0 ? undefined : all[change.at % all.length];
  return {
    resource: metrics.resource,
    scopeMetrics: metrics.scopeMetrics.map((scope) => ({
      scope: scope.scope,
      metrics: scope.metrics.flatMap((metric): MetricData[] => {
        if (metric === target && change.kind === 'metric') return [];
        let points = (metric.dataPoints as Point[]).map((point, i) => {
          const next = inPlace ? point : { ...point, value: typeof point.value === 'object' && metric.dataPointType === DataPointType.HISTOGRAM ? copyHistogram(point.value as Histogram) : point.value };
          if (change.kind === 'values') next.value = newValues(metric, next, change.seed + i);
          return next;
        });
        if (metric === target && change.kind !== 'values') points = changed(metric, points, change);
        return [{ ...metric, dataPoints: points } as MetricData];
      }),
    })),
  };
}

function changed(metric: MetricData, points: Point[], change: Exclude<SeriesChange, { kind: 'values' }>): Point[] {
  const i = points.length === 0 ? 0 : change.seed % points.length;
  const point = points[i];
  switch (change.kind) {
    case 'drop':
      return points.filter((_, j) => j !== i);
    case 'add': {
      // A new series: a new attributes object, before point i.
      const template = point ?? undefined;
      if (template === undefined) return points;
      const added = { ...template, attributes: { ...template.attributes, added: change.seed }, value: metric.dataPointType === DataPointType.HISTOGRAM ? copyHistogram(template.value as Histogram) : template.value };
      return [...points.slice(0, i), added, ...points.slice(i)];
    }
    case 'attributes':
      // Equal attributes in a new object: the text is the same, but not known to be.
      if (point) points[i] = { ...point, attributes: { ...point.attributes } };
      return points;
    case 'start':
      if (point) points[i] = { ...point, startTime: [point.startTime[0] + 1, (point.startTime[1] + 7) % 1e9] };
      return points;
    case 'shape': {
      if (!point) return points;
      if (metric.dataPointType === DataPointType.HISTOGRAM) {
        const value = copyHistogram(point.value as Histogram);
        if (change.seed % 3 === 0) {
          if (value.sum === undefined) value.sum = 1.5;
          else delete value.sum;
        } else if (change.seed % 3 === 1) {
          value.buckets = { boundaries: [...value.buckets.boundaries, 1e9], counts: [...value.buckets.counts, 1] };
        } else if (value.max === undefined) {
          value.max = 2;
        } else {
          delete value.max;
        }
        points[i] = { ...point, value };
      } else if (metric.dataPointType !== DataPointType.EXPONENTIAL_HISTOGRAM) {
        // A number point without its value, or back with one.
        points[i] = { ...point, value: typeof point.value === 'number' ? undefined : 1 };
      }
      return points;
    }
    case 'bounds':
    case 'bounds-copy': {
      if (!point || metric.dataPointType !== DataPointType.HISTOGRAM) return points;
      const value = copyHistogram(point.value as Histogram);
      const bounds = value.buckets.boundaries;
      // A new array: with the same bounds ('bounds-copy') or one moved.
      const next = change.kind === 'bounds-copy' || bounds.length === 0 ? [...bounds] : bounds.map((bound, b) => (b === change.seed % bounds.length ? bound + 1 : bound));
      value.buckets = { boundaries: next, counts: value.buckets.counts };
      points[i] = { ...point, value };
      return points;
    }
    default:
      return points;
  }
}
