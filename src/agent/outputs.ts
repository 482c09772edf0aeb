/**
 * The agent's outputs, each a reader with its own KvmStatsProducer (delta state is per
 * producer, and Prometheus needs cumulative): OTLP pushed on an interval, a Prometheus scrape
 * endpoint, and the console. The OTLP output's producer is paired with its exporter (the fused
 * path: over protobuf it writes its series straight into the request, exporters/otlp-fused.ts).
 *
 * Histograms without a sum (no companion stat in the kernel) stay without one: the OTLP JSON and
 * protobuf serializers leave the optional field out and the Prometheus exporter writes no
 * `_sum` series, which is what both formats mean by "unknown". Sending 0 would be a wrong sum.
 */
import {
  AggregationTemporalityPreference,
  CumulativeTemporalitySelector,
  DeltaTemporalitySelector,
  LowMemoryTemporalitySelector,
} from '@opentelemetry/exporter-metrics-otlp-http';
import { createEmptyMetadata } from '@opentelemetry/otlp-grpc-exporter-base';
import {
  AggregationTemporality,
  type InstrumentType,
  type MetricProducer,
  type MetricReader,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { KvmOtlpMetricExporter } from '../exporters/otlp-exporter.js';
import { PrometheusTextExporter } from '../exporters/prometheus-exporter.js';
import { prometheusUnitSuffixes } from '../otel/mapping.js';
import { type AgentConfig, type OtlpConfig, SettingError, type TemporalityPreference, redactCredentials, redactedUrl } from './config.js';
import { EXPORT_SUCCESS, type ExportResult, LineMetricExporter } from './line-metric-exporter.js';
import { HeapSettler } from './heap.js';
import type { Logger } from './log.js';
import type { FramePairing } from '../otel/series-frame.js';

export type OutputName = 'otlp' | 'prometheus' | 'console';

export interface Output {
  readonly name: OutputName;
  /** For logs: "OTLP http/protobuf to http://…", "Prometheus on :9464/metrics". */
  readonly description: string;
  readonly reader: MetricReader;
  /** Starts serving, where the output serves (Prometheus); throws a one-line error. */
  start(): Promise<void>;
  /** Says the agent is stopping: what follows is its last export, not one more of many. */
  stopping(): void;
}

/** Temporality of the KVM producer: the kernel's counters are cumulative, like observable
 * counters, so lowmemory keeps them cumulative (the producer then keeps no previous values). */
export function producerTemporality(preference: TemporalityPreference): AggregationTemporality {
  return preference === 'delta' ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE;
}

const PREFERENCES = {
  cumulative: AggregationTemporalityPreference.CUMULATIVE,
  delta: AggregationTemporalityPreference.DELTA,
  lowmemory: AggregationTemporalityPreference.LOWMEMORY,
} as const;

const SELECTORS = {
  cumulative: CumulativeTemporalitySelector,
  delta: DeltaTemporalitySelector,
  lowmemory: LowMemoryTemporalitySelector,
} as const;

/**
 * Logs a failed export once, with what to do, and the first success after failures. The data
 * of a failed export is dropped, not queued, so memory stays bounded however long the collector
 * is away (cumulative values come back whole with the next export; delta ones are lost).
 */
export class ReportingExporter implements PushMetricExporter {
  #failures = 0;
  /** The agent is stopping: a failure is not retried at the next interval. */
  last = false;

  constructor(
    private readonly inner: PushMetricExporter,
    private readonly target: string,
    private readonly log: Logger,
    /** Told of every failed export (the agent's self-telemetry counts them). */
    private readonly onFailure: () => void = () => undefined,
    /** Told when any export is done, after the above. */
    private readonly onDone: () => void = () => undefined,
  ) {}

  export(metrics: ResourceMetrics, done: (result: ExportResult) => void): void {
    this.inner.export(metrics, (result) => {
      if (result.code !== EXPORT_SUCCESS) {
        this.#failures++;
        this.onFailure();
        // An error may quote the URL: no credentials in the log.
        const reason = redactCredentials(result.error?.message ?? 'unknown error');
        const next = this.last ? 'this was the last export, as the agent stops' : 'retrying at the next interval';
        this.log.warn({ failures: this.#failures }, `export to ${this.target} failed: ${reason}; ${next}: check that the collector runs and the endpoint is right`);
      } else if (this.#failures > 0) {
        this.log.info({ failures: this.#failures }, `export to ${this.target} works again after ${this.#failures} failed exports`);
        this.#failures = 0;
      }
      done(result);
      this.onDone();
    });
  }

  selectAggregationTemporality(instrumentType: InstrumentType): AggregationTemporality {
    return this.inner.selectAggregationTemporality!(instrumentType);
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
}

/** The fast OTLP exporter (the official exporters' transports, retries and variables; the same
 * bytes on the wire). Over gRPC the headers go as metadata. */
function otlpExporter(otlp: OtlpConfig, preference: TemporalityPreference): KvmOtlpMetricExporter {
  const options = { protocol: otlp.protocol, url: otlp.url, timeoutMillis: otlp.timeoutMillis, temporalityPreference: PREFERENCES[preference] };
  if (otlp.protocol !== 'grpc') return new KvmOtlpMetricExporter({ ...options, headers: { ...otlp.headers } });
  const metadata = createEmptyMetadata();
  for (const [key, value] of Object.entries(otlp.headers)) metadata.set(key, value);
  return new KvmOtlpMetricExporter({ ...options, metadata });
}

function pushOutput(name: OutputName, description: string, exporter: PushMetricExporter, producer: MetricProducer, config: AgentConfig): Output {
  const reader = new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis: config.exportIntervalMillis,
    exportTimeoutMillis: config.exportTimeoutMillis,
    metricProducers: [producer],
  });
  const stopping = (): void => {
    if (exporter instanceof ReportingExporter) exporter.last = true;
  };
  return { name, description, reader, start: async () => undefined, stopping };
}

/** Why serving Prometheus on `where` failed, and what to do, by the listen error's code. */
function listenProblem(where: string, host: string | undefined, error: NodeJS.ErrnoException): string {
  const code = error.code ?? error.message;
  const what: Record<string, string> = {
    EADDRINUSE: 'choose another port',
    EACCES: 'ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a port from 1024 up',
    ENOTFOUND: `no host named ${host} is known here: give a name or address of this host, or none to listen on every interface`,
    EAI_AGAIN: `the name ${host} could not be looked up now: give an address of this host, or none to listen on every interface`,
    EADDRNOTAVAIL: `${host} is not an address of this host: give one of its addresses, or none to listen on every interface`,
  };
  return `serving Prometheus on ${where} failed with ${code}: ${what[code] ?? 'check the host and the port'}`;
}

/** The outputs `config` asks for; `producerFor` makes each its own producer, paired with the
 * output's exporter where one is given (OTLP). */
export function createOutputs(
  config: AgentConfig,
  producerFor: (output: OutputName, pairedExporter?: FramePairing) => MetricProducer,
  log: Logger,
  exportFailed: (output: OutputName) => void = () => undefined,
): Output[] {
  const outputs: Output[] = [];
  if (config.otlp) {
    const description = `OTLP ${config.otlp.protocol} to ${redactedUrl(config.otlp.url)}`;
    const otlp = otlpExporter(config.otlp, config.temporality);
    // A layout's garbage given back after its export (agent/heap.ts).
    const settler = new HeapSettler(() => otlp.newPoints);
    const exporter = new ReportingExporter(otlp, redactedUrl(config.otlp.url), log.child({ output: 'otlp' }), () => exportFailed('otlp'), () => settler.afterExport());
    outputs.push(pushOutput('otlp', description, exporter, producerFor('otlp', otlp), config));
  }
  if (config.prometheus) {
    const { host, port } = config.prometheus;
    // Names with unit suffixes or without, as the producer's unit mode decides (the names schema
    // shows). The exporter waits for the resource's host.id before a scrape reads it.
    const unitSuffixes = prometheusUnitSuffixes(config.units);
    const exporter = new PrometheusTextExporter({ host, port, preventServerStart: true, metricProducers: [producerFor('prometheus')], unitSuffixes });
    const where = `${host ?? ''}:${port}`;
    outputs.push({
      name: 'prometheus',
      description: `Prometheus scrape endpoint on ${where}/metrics`,
      reader: exporter,
      start: () =>
        exporter.startServer().catch((error: NodeJS.ErrnoException) => {
          throw new SettingError(listenProblem(where, host, error), 'prometheus');
        }),
      stopping: () => undefined,
    });
  }
  if (config.console) {
    const exporter = new LineMetricExporter(SELECTORS[config.temporality]);
    outputs.push(pushOutput('console', 'console (stdout)', exporter, producerFor('console'), config));
  }
  return outputs;
}
