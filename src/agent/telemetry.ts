/**
 * The agent's self-telemetry, under its own names (see telemetry-names.ts): how long each collection
 * takes, how many stats fds were read, how many reads and exports failed, how many stats are
 * skipped. Each output's producer is wrapped so its collections are measured and their errors
 * logged once per collection, not once per fd. The error counters exist from an output's first
 * collection on, at 0, so that an alert on their rate sees a series before anything fails.
 */
import type { Counter, Histogram, Meter } from '@opentelemetry/api';
import type { CollectionResult, MetricCollectOptions, MetricProducer } from '@opentelemetry/sdk-metrics';
import {
  ATTR_AGENT_OUTPUT,
  METRIC_COLLECTION_DURATION,
  METRIC_EXPORT_FAILURES,
  METRIC_READ_ERRORS,
  METRIC_SOURCES_READ,
  METRIC_STATS_SKIPPED,
  selfMetric,
} from './telemetry-names.js';
import type { StatsSource } from '../sources/source.js';
import type { Logger } from './log.js';

/** From 100 us (a few fds) to 2.5 s (many thousands on a busy host). */
const DURATION_BOUNDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** An instrument's unit and description, as SELF_TELEMETRY defines them. */
function options(name: Parameters<typeof selfMetric>[0]): { unit: string; description: string } {
  const { unit, description } = selfMetric(name);
  return { unit, description };
}

interface Instruments {
  readonly duration: Histogram;
  readonly sourcesRead: Counter;
  readonly readErrors: Counter;
  readonly exportFailures: Counter;
}

/** Outputs that push, and so can fail to export. */
const PUSH_OUTPUTS = new Set(['otlp', 'console']);

/** The set the producers read, as their last collection got it (sourcesOf's `last`): the
 * figures here never ask the providers again. */
export interface LastSources {
  readonly last: readonly StatsSource[];
}

export class SelfTelemetry {
  readonly #sources: LastSources;
  #instruments: Instruments | undefined;
  /** Outputs whose error counters were started at 0. */
  readonly #started = new Set<string>();

  constructor(sources: LastSources) {
    this.#sources = sources;
  }

  /** Creates the instruments on `meter`. Separate from the constructor because the readers,
   * whose producers this measures, must exist before the MeterProvider that makes the meter. */
  attach(meter: Meter): void {
    this.#instruments = {
      duration: meter.createHistogram(METRIC_COLLECTION_DURATION, { ...options(METRIC_COLLECTION_DURATION), advice: { explicitBucketBoundaries: DURATION_BOUNDS } }),
      sourcesRead: meter.createCounter(METRIC_SOURCES_READ, options(METRIC_SOURCES_READ)),
      readErrors: meter.createCounter(METRIC_READ_ERRORS, options(METRIC_READ_ERRORS)),
      exportFailures: meter.createCounter(METRIC_EXPORT_FAILURES, options(METRIC_EXPORT_FAILURES)),
    };
    meter
      .createObservableGauge(METRIC_STATS_SKIPPED, options(METRIC_STATS_SKIPPED))
      .addCallback((result) => result.observe(this.#sources.last.reduce((sum, source) => sum + source.file.table.skipped.length, 0)));
  }

  /** Counts a failed export of `output`. */
  exportFailed(output: string): void {
    this.#instruments?.exportFailures.add(1, { [ATTR_AGENT_OUTPUT]: output });
  }

  /** `producer`, measured, with its collection errors logged in one line per collection. */
  instrument(producer: MetricProducer, output: string, log: Logger): MetricProducer {
    const attributes = { [ATTR_AGENT_OUTPUT]: output };
    return {
      collect: async (options?: MetricCollectOptions): Promise<CollectionResult> => {
        const start = performance.now();
        const result = await producer.collect(options);
        // The set this collection read: the producer asked for it first thing.
        const total = this.#sources.last.length;
        const instruments = this.#instruments;
        if (instruments && !this.#started.has(output)) {
          this.#started.add(output);
          instruments.readErrors.add(0, attributes);
          if (PUSH_OUTPUTS.has(output)) instruments.exportFailures.add(0, attributes);
        }
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
