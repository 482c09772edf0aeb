/**
 * --console: every data point that would be exported, one line each, on stdout. The SDK's
 * ConsoleMetricExporter dumps whole objects, several screens per collection for one small VM;
 * one line per point can be read and grepped.
 */
import { type Attributes, ValueType } from '@opentelemetry/api';
import {
  type AggregationTemporality,
  type AggregationTemporalitySelector,
  DataPointType,
  type Histogram,
  type InstrumentType,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { terminalText } from '../views/terminal.js';

/** The SDK's ExportResult (from @opentelemetry/core, which this package does not depend on). */
export type ExportResult = Parameters<Parameters<PushMetricExporter['export']>[1]>[0];
/** ExportResultCode.SUCCESS and FAILED. */
export const EXPORT_SUCCESS = 0;
export const EXPORT_FAILED = 1;

/** `{k=v,...}`, keys and values as a terminal may show them (a VMM's -name is its user's to choose). */
function attributesText(attributes: Attributes): string {
  const pairs = Object.entries(attributes).map(([key, value]) => `${terminalText(key)}=${terminalText(String(value))}`);
  return pairs.length > 0 ? `{${pairs.join(',')}}` : '';
}

function histogramText(value: Histogram): string {
  const buckets = value.buckets.counts.flatMap((count, i) => (count > 0 ? [`${i < value.buckets.boundaries.length ? `le ${value.buckets.boundaries[i]}` : 'inf'}:${count}`] : []));
  return `count ${value.count}${value.sum !== undefined ? ` sum ${value.sum}` : ''}${buckets.length ? `  ${buckets.join(' ')}` : ''}`;
}

/** The lines of one export: a header, then `name{attributes} kind unit value`. */
export function exportLines(metrics: ResourceMetrics, now = new Date()): string[] {
  let points = 0;
  const lines: string[] = [];
  for (const scope of metrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      const { unit, valueType } = metric.descriptor;
      const name = terminalText(metric.descriptor.name);
      const kind = metric.dataPointType === DataPointType.SUM ? 'sum' : metric.dataPointType === DataPointType.GAUGE ? 'gauge' : 'histogram';
      for (const point of metric.dataPoints) {
        points++;
        const value = typeof point.value === 'number'
          ? String(valueType === ValueType.INT ? Math.round(point.value) : point.value)
          : metric.dataPointType === DataPointType.HISTOGRAM ? histogramText(point.value as Histogram) : JSON.stringify(point.value);
        lines.push(`${name}${attributesText(point.attributes)} ${kind} ${unit || '1'} ${value}`);
      }
    }
  }
  return [`# ${now.toISOString()} export: ${points} data points`, ...lines];
}

export class LineMetricExporter implements PushMetricExporter {
  readonly #write: (text: string) => void;
  readonly #temporality: AggregationTemporalitySelector;

  constructor(temporality: AggregationTemporalitySelector, write: (text: string) => void = (text) => void process.stdout.write(text)) {
    this.#temporality = temporality;
    this.#write = write;
  }

  export(metrics: ResourceMetrics, done: (result: ExportResult) => void): void {
    try {
      this.#write(`${exportLines(metrics).join('\n')}\n`);
      done({ code: EXPORT_SUCCESS });
    } catch (error) {
      done({ code: EXPORT_FAILED, error: error as Error });
    }
  }

  selectAggregationTemporality(instrumentType: InstrumentType): AggregationTemporality {
    return this.#temporality(instrumentType);
  }

  async forceFlush(): Promise<void> {}

  async shutdown(): Promise<void> {}
}
