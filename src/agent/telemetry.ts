/**
 * The agent's self-telemetry, under its own names (see telemetry-names.ts): how long each collection
 * takes, how many stats fds were read, how many reads failed, how many stats are skipped.
 * Each output's producer is wrapped so its collections are measured and their errors logged
 * once per collection, not once per fd.
 */
import type { Counter, Histogram, Meter } from '@opentelemetry/api';
import type { CollectionResult, MetricCollectOptions, MetricProducer } from '@opentelemetry/sdk-metrics';
import {
  ATTR_AGENT_OUTPUT,
  METRIC_COLLECTION_DURATION,
  METRIC_READ_ERRORS,
  METRIC_SOURCES_READ,
  METRIC_STATS_SKIPPED,
} from './telemetry-names.js';
import type { StatsSource } from '../sources/source.js';
import type { Logger } from './log.js';

/** From 100 us (a few fds) to 2.5 s (many thousands on a busy host). */
const DURATION_BOUNDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

interface Instruments {
  readonly duration: Histogram;
  readonly sourcesRead: Counter;
  readonly readErrors: Counter;
}

export class SelfTelemetry {
  readonly #sources: () => readonly StatsSource[];
  #instruments: Instruments | undefined;

  constructor(sources: () => readonly StatsSource[]) {
    this.#sources = sources;
  }

  /** Creates the instruments on `meter`. Separate from the constructor because the readers,
   * whose producers this measures, must exist before the MeterProvider that makes the meter. */
  attach(meter: Meter): void {
    this.#instruments = {
      duration: meter.createHistogram(METRIC_COLLECTION_DURATION, {
        unit: 's',
        description: 'Time one output\'s producer took to read every stats fd and build its data points.',
        advice: { explicitBucketBoundaries: DURATION_BOUNDS },
      }),
      sourcesRead: meter.createCounter(METRIC_SOURCES_READ, {
        unit: '{source}',
        description: 'Stats fds read successfully, one per source per collection.',
      }),
      readErrors: meter.createCounter(METRIC_READ_ERRORS, {
        unit: '{error}',
        description: 'Reads of a stats fd that failed, and collections that ran out of time.',
      }),
    };
    meter
      .createObservableGauge(METRIC_STATS_SKIPPED, {
        unit: '{stat}',
        description: 'Stats in the open sources\' descriptor tables that are not exported (a type or unit this version does not know).',
      })
      .addCallback((result) => result.observe(this.#sources().reduce((sum, source) => sum + source.file.table.skipped.length, 0)));
  }

  /** `producer`, measured, with its collection errors logged in one line per collection. */
  instrument(producer: MetricProducer, output: string, log: Logger): MetricProducer {
    const attributes = { [ATTR_AGENT_OUTPUT]: output };
    return {
      collect: async (options?: MetricCollectOptions): Promise<CollectionResult> => {
        const total = this.#sources().length;
        const start = performance.now();
        const result = await producer.collect(options);
        const instruments = this.#instruments;
        instruments?.duration.record((performance.now() - start) / 1000, attributes);
        const failed = result.errors.length;
        instruments?.sourcesRead.add(Math.max(0, total - failed), attributes);
        if (failed > 0) {
          instruments?.readErrors.add(failed, attributes);
          log.warn(
            { output, failed, sources: total },
            `${failed} of ${total} stats fds could not be read: ${(result.errors[0] as Error).message ?? String(result.errors[0])}`,
          );
        }
        return result;
      },
    };
  }
}
