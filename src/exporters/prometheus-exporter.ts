/**
 * PrometheusTextExporter: a MetricReader that serves a Prometheus scrape endpoint, a drop-in for
 * @opentelemetry/exporter-prometheus's PrometheusExporter (same options, same environment
 * variables, same text: see prometheus-text.ts) that costs a fraction of it per scrape:
 *
 * - the body streams out in chunks with backpressure, through gzip when the scraper asks for it
 *   (Prometheus always does), so a scrape holds a few chunks, never the whole text;
 * - one scrape at a time: a producer that reuses its data points (KvmStatsProducer with
 *   reuseDataPoints) keeps them valid only until its next collection, and a body being
 *   streamed still reads them. A scraper that stops reading is cut off after SCRAPE_IDLE_MS
 *   without progress, so it cannot hold the others back for long;
 * - the resource's asynchronous attributes (host.id from /etc/machine-id, for one) are waited
 *   for before target_info is written, so a scrape neither reads an unsettled resource nor
 *   goes without them.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zlib, createGzip } from 'node:zlib';
import { diag } from '@opentelemetry/api';
import { AggregationTemporality, AggregationType, type MetricProducer, MetricReader } from '@opentelemetry/sdk-metrics';
import { DEFAULT_CHUNK_BYTES, type PrometheusTextOptions, PrometheusTextSerializer } from './prometheus-text.js';

export interface PrometheusTextExporterOptions extends PrometheusTextOptions {
  /** Default: OTEL_EXPORTER_PROMETHEUS_HOST, else every interface. */
  readonly host?: string;
  /** Default: OTEL_EXPORTER_PROMETHEUS_PORT, else 9464. */
  readonly port?: number;
  /** Default /metrics. */
  readonly endpoint?: string;
  /** Do not listen until startServer() is called. Default false. */
  readonly preventServerStart?: boolean;
  /** Producers whose metrics are served beside the SDK's (the SDK's resource is used). */
  readonly metricProducers?: MetricProducer[];
  /** zlib level of gzip bodies: the fastest by default, as the text compresses well anyway. */
  readonly gzipLevel?: number;
}

/** The classic text format's content type. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
/** A scrape whose body makes no progress for this long is cut off. */
export const SCRAPE_IDLE_MS = 30_000;
const DEFAULT_PORT = 9464;

/** Whether an Accept-Encoding header admits gzip (a `gzip` or `x-gzip` without q=0). */
export function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  return header.split(',').some((part) => {
    const [coding, ...parameters] = part.split(';').map((text) => text.trim().toLowerCase());
    if (coding !== 'gzip' && coding !== 'x-gzip') return false;
    const q = parameters.find((parameter) => parameter.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}

export class PrometheusTextExporter extends MetricReader {
  readonly #host: string | undefined;
  readonly #port: number;
  readonly #endpoint: string;
  readonly #baseUrl: string;
  readonly #server: Server;
  readonly #serializer: PrometheusTextSerializer;
  readonly #gzipLevel: number;
  #started: Promise<void> | undefined;
  /** The scrape in progress, which the next one waits for. */
  #scrapes: Promise<void> = Promise.resolve();

  constructor(options: PrometheusTextExporterOptions = {}, callback: (error?: Error) => void = () => undefined) {
    super({
      aggregationSelector: () => ({ type: AggregationType.DEFAULT }),
      aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE,
      metricProducers: options.metricProducers,
    });
    this.#host = options.host || process.env.OTEL_EXPORTER_PROMETHEUS_HOST || undefined;
    this.#port = options.port || Number(process.env.OTEL_EXPORTER_PROMETHEUS_PORT) || DEFAULT_PORT;
    this.#endpoint = (options.endpoint || '/metrics').replace(/^([^/])/, '/$1');
    this.#baseUrl = `http://${this.#host}:${this.#port}/`;
    this.#serializer = new PrometheusTextSerializer(options);
    this.#gzipLevel = options.gzipLevel ?? zlib.Z_BEST_SPEED;
    // Unref'ed, as the official exporter's: serving alone does not keep a process alive.
    this.#server = createServer(this.#handle).unref();
    if (options.preventServerStart !== true) {
      this.startServer().then(
        () => callback(),
        (error: Error) => {
          diag.error(`serving Prometheus failed: ${error.message}`);
          callback(error);
        },
      );
    } else {
      queueMicrotask(() => callback());
    }
  }

  /** Listens; resolves once listening, rejects with the listen error (EADDRINUSE). */
  startServer(): Promise<void> {
    this.#started ??= new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ port: this.#port, host: this.#host }, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    return this.#started;
  }

  /** Stops listening; scrapes in progress finish. */
  stopServer(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close((error) => {
        if (error && (error as NodeJS.ErrnoException).code !== 'ERR_SERVER_NOT_RUNNING') diag.error(`stopping the Prometheus endpoint failed: ${error.message}`);
        resolve();
      });
    });
  }

  /** The address listened on (port 0 resolved), once started. */
  address(): { host: string; port: number } | undefined {
    const address = this.#server.address();
    return address && typeof address === 'object' ? { host: address.address, port: address.port } : undefined;
  }

  protected override async onForceFlush(): Promise<void> {}

  protected override onShutdown(): Promise<void> {
    return this.stopServer();
  }

  /** Serves one scrape on a server of the caller's own, whatever the path. */
  getMetricsRequestHandler(request: IncomingMessage, response: ServerResponse): void {
    this.#enqueue(request, response);
  }

  readonly #handle = (request: IncomingMessage, response: ServerResponse): void => {
    let pathname: string | undefined;
    try {
      if (request.url != null) pathname = new URL(request.url, this.#baseUrl).pathname;
    } catch {
      response.statusCode = 400;
      response.end('Bad Request');
      return;
    }
    if (pathname !== this.#endpoint) {
      response.statusCode = 404;
      response.end();
      return;
    }
    this.#enqueue(request, response);
  };

  #enqueue(request: IncomingMessage, response: ServerResponse): void {
    this.#scrapes = this.#scrapes.then(() => this.#scrape(request, response)).catch((error: Error) => diag.debug(`a Prometheus scrape ended early: ${error.message}`));
  }

  async #scrape(request: IncomingMessage, response: ServerResponse): Promise<void> {
    // The scraper gave up while it waited.
    if (response.destroyed || request.destroyed) return;
    response.setHeader('content-type', PROMETHEUS_CONTENT_TYPE);
    let body: Readable;
    try {
      const { resourceMetrics, errors } = await this.collect();
      // The official exporter's message, which the agent recognizes.
      if (errors.length > 0) diag.error('PrometheusExporter: metrics collection errors', ...errors);
      const { resource } = resourceMetrics;
      if (resource.asyncAttributesPending) await resource.waitForAsyncAttributes?.();
      body = Readable.from(this.#serializer.chunks(resourceMetrics), { objectMode: false, highWaterMark: DEFAULT_CHUNK_BYTES });
    } catch (error) {
      response.statusCode = 200;
      response.end(`# failed to export metrics: ${error}`);
      return;
    }
    response.statusCode = 200;
    response.setTimeout(SCRAPE_IDLE_MS, () => response.destroy(new Error(`no progress for ${SCRAPE_IDLE_MS} ms`)));
    const gzip = acceptsGzip(request.headers['accept-encoding']);
    response.setHeader('vary', 'Accept-Encoding');
    if (gzip) response.setHeader('content-encoding', 'gzip');
    const stages: (Readable | Transform | ServerResponse)[] = gzip ? [body, createGzip({ level: this.#gzipLevel }), response] : [body, response];
    await pipeline(stages as [Readable, ...(Transform | ServerResponse)[]]);
  }
}
