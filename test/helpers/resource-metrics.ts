/** ResourceMetrics written by hand for the exporters' tests: one monotonic sum (a counter). */
import { type Attributes, type HrTime, ValueType } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType, type DataPoint, type ResourceMetrics } from '@opentelemetry/sdk-metrics';

/** A counter `name` with `points`, in scope `scope`, of a resource with `resource` attributes. */
export function counterMetrics(
  name: string,
  points: readonly DataPoint<number>[],
  options: { unit?: string; description?: string; scope?: string; resource?: Attributes } = {},
): ResourceMetrics {
  return {
    resource: resourceFromAttributes(options.resource ?? {}),
    scopeMetrics: [
      {
        scope: { name: options.scope ?? 's' },
        metrics: [
          {
            descriptor: { name, description: options.description ?? '', unit: options.unit ?? '', valueType: ValueType.INT },
            aggregationTemporality: AggregationTemporality.CUMULATIVE,
            dataPointType: DataPointType.SUM,
            isMonotonic: true,
            dataPoints: points as DataPoint<number>[],
          },
        ],
      },
    ],
  };
}

/** A data point whose value a test may move. */
export type MovingPoint = { -readonly [K in keyof DataPoint<number>]: DataPoint<number>[K] };

/** A data point at `time` (start and end; 0 by default). */
export function pointAt(attributes: Attributes, value: number, time: HrTime = [0, 0]): MovingPoint {
  return { startTime: time, endTime: time, attributes, value };
}
