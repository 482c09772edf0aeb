/**
 * PrometheusTextExporter: a MetricReader that serves a Prometheus scrape endpoint, a drop-in for
 * @opentelemetry/exporter-prometheus's PrometheusExporter (same options, same environment
 * variables, same text: see prometheus-text.ts) that costs a fraction of it per scrape, and that
 * no client can stall (the endpoint listens on every interface, without authentication):
 *
 * - Render once, serve to all. A collection is serialized once, gzipped, into a rendering kept in
 *   memory (about 1.2 MB at 2,500 stats fds, where the text is about 40 MB); every scrape is a
 *   copy-free write of that rendering at the scraper's own pace (gunzipped on the way, with
 *   backpressure, for the rare scraper that does not ask for gzip). A scraper never waits on
 *   another one, only on the collection its scrape shares.
 * - When a scrape collects: one collection and rendering at a time. A scrape that arrives while
 *   one is in progress shares it; one that arrives within `minCollectionIntervalMs` of the start
 *   of the last one shares that one (so any number of scrapers cost at most one collection per
 *   interval); any later one starts a new collection. The producer's data points (reused ones are
 *   valid only until its next collection) are read only while rendering, and the next collection
 *   starts only after the rendering is done.
 * - Every response has a deadline (`responseTimeoutMs`, from request to last byte, a timer of its
 *   own: a socket timeout is skipped while writes still move); connections are capped
 *   (`connections`): a new one past the cap closes the connection idle longest (of the peer
 *   address holding most connections), else the response stalled longest; a connection idle
 *   (no request in progress) for `idleTimeoutMs` is closed. So the endpoint holds at most
 *   `connections` fds and one rendering, whoever connects.
 * - The resource's asynchronous attributes (host.id from /etc/machine-id, for one) are waited for
 *   before target_info is written, so a scrape neither reads an unsettled resource nor goes
 *   without them. Collection errors are said once per collection, not once per scrape.
 */
import { once } from 'node:events';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { diag } from '@opentelemetry/api';
import { AggregationTemporality, AggregationType, type MetricProducer, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { type PrometheusTextOptions, PrometheusTextSerializer } from './prometheus-text.js';

/** What the endpoint lets any client hold; see the file's comment. */
export interface PrometheusServingLimits {
  /** Connections held at once. */
  readonly connections: number;
  /** A connection with no request in progress for this long is closed. */
  readonly idleTimeoutMs: number;
  /** The longest one response may take, from its request to its last byte. */
  readonly responseTimeoutMs: number;
  /** A scrape within this long of the start of the last collection is served that collection. */
  readonly minCollectionIntervalMs: number;
}

export const PROMETHEUS_SERVING_LIMITS: PrometheusServingLimits = {
  connections: 128,
  idleTimeoutMs: 10_000,
  responseTimeoutMs: 30_000,
  minCollectionIntervalMs: 1_000,
};

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
  /** zlib level of gzip bodies; default PROMETHEUS_GZIP_LEVEL. */
  readonly gzipLevel?: number;
  /** Default PROMETHEUS_SERVING_LIMITS, each field on its own. */
  readonly limits?: Partial<PrometheusServingLimits>;
}

/**
 * How a scrape's text is gzipped, from measurement (scripts/measure-gzip-level.ts, the text of one
 * collection of 10,000 image fds, 264 MB, two runs): levels 1 to 3 are zlib's fast deflate, and
 * level 3 cost no more CPU than level 1 (0.52 and 0.68 s a scrape, against 0.67 and 0.76 s) for
 * 8% fewer bytes on the wire (10.5 MB against 11.4 MB); levels 4 to 9 cost 1.9 to 7 times level
 * 3's CPU for at most 14% fewer bytes; RLE and Huffman-only cost more and send 15 times the bytes.
 */
export const PROMETHEUS_GZIP_LEVEL = 3;

/** The classic text format's content type. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
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

/** Closes a socket with a reset: what is still queued for a client that did not read it is
 * dropped at once, rather than kept by the kernel (an orphaned socket) until that client reads it. */
function cutOff(socket: Socket): void {
  if (socket.destroyed) return;
  socket.resetAndDestroy();
}

/** One collection, serialized and gzipped: what every scrape of it is served. */
interface Rendering {
  /** When its collection started (performance.now()). */
  readonly started: number;
  /** The gzipped text, in the pieces gzip wrote. */
  readonly gzipped: readonly Buffer[];
  readonly gzippedBytes: number;
  /** Bytes of the text itself. */
  readonly textBytes: number;
}

/** A connection to the endpoint, as the caps see it. */
interface Connection {
  readonly socket: Socket;
  readonly address: string;
  /** A response is being written. */
  responding: boolean;
  /** When it connected or its last response ended; while responding, when its response last moved. */
  lastActive: number;
}

export class PrometheusTextExporter extends MetricReader {
  readonly #host: string | undefined;
  readonly #port: number;
  readonly #endpoint: string;
  readonly #baseUrl: string;
  readonly #server: Server;
  readonly #serializer: PrometheusTextSerializer;
  readonly #gzipLevel: number;
  readonly #limits: PrometheusServingLimits;
  readonly #connections = new Map<Socket, Connection>();
  #sweeper: NodeJS.Timeout | undefined;
  /** When the sweeper last ran. */
  #swept = 0;
  #started: Promise<void> | undefined;
  /** The rendering in progress, or the last one made. */
  #rendering: { readonly started: number; readonly done: Promise<Rendering> } | undefined;
  #renderingBusy = false;

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
    this.#gzipLevel = options.gzipLevel ?? PROMETHEUS_GZIP_LEVEL;
    this.#limits = { ...PROMETHEUS_SERVING_LIMITS, ...options.limits };
    // Unref'ed, as the official exporter's: serving alone does not keep a process alive.
    this.#server = createServer(this.#handle).unref();
    // Node's own request and header timers are checked only every few seconds: ours are the bound.
    this.#server.headersTimeout = Math.max(1, this.#limits.idleTimeoutMs);
    this.#server.requestTimeout = Math.max(this.#server.headersTimeout, this.#limits.responseTimeoutMs);
    this.#server.keepAliveTimeout = Math.min(this.#server.keepAliveTimeout, this.#limits.idleTimeoutMs);
    this.#server.on('connection', (socket: Socket) => this.#admit(socket));
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
        this.#swept = performance.now();
        this.#sweeper = setInterval(() => this.#sweep(), this.#sweepMs).unref();
        resolve();
      });
    });
    return this.#started;
  }

  /** Stops listening and closes every connection, responses in progress included. */
  stopServer(): Promise<void> {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    return new Promise((resolve) => {
      this.#server.close((error) => {
        if (error && (error as NodeJS.ErrnoException).code !== 'ERR_SERVER_NOT_RUNNING') diag.error(`stopping the Prometheus endpoint failed: ${error.message}`);
        resolve();
      });
      for (const socket of this.#connections.keys()) cutOff(socket);
      this.#connections.clear();
    });
  }

  /** The address listened on (port 0 resolved), once started. */
  address(): { host: string; port: number } | undefined {
    const address = this.#server.address();
    return address && typeof address === 'object' ? { host: address.address, port: address.port } : undefined;
  }

  /** Connections held now, and how many of them have a response in progress. */
  get serving(): { readonly connections: number; readonly responses: number } {
    let responses = 0;
    for (const connection of this.#connections.values()) if (connection.responding) responses++;
    return { connections: this.#connections.size, responses };
  }

  protected override async onForceFlush(): Promise<void> {}

  protected override onShutdown(): Promise<void> {
    return this.stopServer();
  }

  /** Serves one scrape on a server of the caller's own, whatever the path (with the deadline per response). */
  getMetricsRequestHandler(request: IncomingMessage, response: ServerResponse): void {
    void this.#serve(request, response);
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
    void this.#serve(request, response);
  };

  // ---- connections ----

  /** Takes a new connection, making room under the cap first. */
  #admit(socket: Socket): void {
    if (this.#connections.size >= this.#limits.connections) {
      const victim = this.#victim();
      if (victim) this.#drop(victim);
    }
    const connection: Connection = { socket, address: socket.remoteAddress ?? '', responding: false, lastActive: performance.now() };
    this.#connections.set(socket, connection);
    socket.once('close', () => this.#connections.delete(socket));
  }

  /** Closes a connection now (its fd is closed at once; its 'close' event comes later). */
  #drop(connection: Connection): void {
    this.#connections.delete(connection.socket);
    cutOff(connection.socket);
  }

  /**
   * The connection to close for a new one: the one idle longest among those of the peer address
   * that holds most connections (a flood of idle connections from one place gives way before a
   * scraper from another), else, when every connection has a response in progress, the response
   * that moved least recently (a scraper that reads gives way last).
   */
  #victim(): Connection | undefined {
    const perAddress = new Map<string, number>();
    for (const c of this.#connections.values()) if (!c.responding) perAddress.set(c.address, (perAddress.get(c.address) ?? 0) + 1);
    let victim: Connection | undefined;
    for (const c of this.#connections.values()) {
      if (c.responding) continue;
      if (!victim) victim = c;
      else {
        const more = perAddress.get(c.address)! - perAddress.get(victim.address)!;
        if (more > 0 || (more === 0 && c.lastActive < victim.lastActive)) victim = c;
      }
    }
    if (victim) return victim;
    for (const c of this.#connections.values()) if (!victim || c.lastActive < victim.lastActive) victim = c;
    return victim;
  }

  /** How often idle connections are looked for. */
  get #sweepMs(): number {
    return Math.max(10, Math.min(this.#limits.idleTimeoutMs, 1000) / 4);
  }

  /** Closes connections idle for longer than the idle timeout (responses have deadlines of their own). */
  #sweep(): void {
    const now = performance.now();
    // The time the event loop was held past this sweep's turn (a collection of thousands of fds
    // runs in one piece): a request that came meanwhile is not read yet, so its connection looks
    // idle that much longer. That time is not counted against a connection; idle time before it
    // is, so no connection stays past the idle timeout and the longest hold, however often the
    // loop is held.
    const held = Math.max(0, now - this.#swept - this.#sweepMs);
    this.#swept = now;
    for (const c of this.#connections.values()) {
      if (!c.responding && now - c.lastActive > this.#limits.idleTimeoutMs + held) this.#drop(c);
    }
  }

  // ---- scrapes ----

  async #serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const connection = this.#connections.get(request.socket);
    const deadline = setTimeout(() => {
      diag.debug(`a Prometheus scrape from ${request.socket.remoteAddress} took more than ${this.#limits.responseTimeoutMs} ms and was cut off`);
      cutOff(request.socket);
    }, this.#limits.responseTimeoutMs).unref();
    if (connection) {
      connection.responding = true;
      connection.lastActive = performance.now();
    }
    try {
      let rendering: Rendering;
      try {
        rendering = await this.#current();
      } catch (error) {
        if (!response.destroyed) {
          response.statusCode = 200;
          response.end(`# failed to export metrics: ${error}`);
        }
        return;
      }
      // The scraper gave up while it waited.
      if (response.destroyed || request.destroyed) return;
      const gzip = acceptsGzip(request.headers['accept-encoding']);
      response.statusCode = 200;
      response.setHeader('content-type', PROMETHEUS_CONTENT_TYPE);
      response.setHeader('vary', 'Accept-Encoding');
      if (gzip) response.setHeader('content-encoding', 'gzip');
      response.setHeader('content-length', gzip ? rendering.gzippedBytes : rendering.textBytes);
      const body = gzip ? rendering.gzipped : Readable.from(rendering.gzipped, { objectMode: false }).pipe(createGunzip());
      await this.#write(response, body, connection);
    } catch (error) {
      diag.debug(`a Prometheus scrape ended early: ${(error as Error).message}`);
    } finally {
      clearTimeout(deadline);
      if (connection) {
        connection.responding = false;
        connection.lastActive = performance.now();
      }
    }
  }

  /** Writes `body` at the pace the scraper reads it; every piece that goes out counts as progress. */
  async #write(response: ServerResponse, body: Iterable<Buffer> | AsyncIterable<Buffer>, connection: Connection | undefined): Promise<void> {
    const ended = new Promise<void>((resolve) => response.once('close', resolve));
    for await (const piece of body) {
      if (response.destroyed) return;
      if (!response.write(piece)) {
        await Promise.race([new Promise((resolve) => response.once('drain', resolve)), ended]);
        if (response.destroyed) return;
      }
      if (connection) connection.lastActive = performance.now();
    }
    await new Promise<void>((resolve) => response.end(resolve));
  }

  /** The rendering a scrape arriving now is served: the one in progress, the last one while it is
   * recent enough, else a new one. */
  #current(): Promise<Rendering> {
    const last = this.#rendering;
    if (last && (this.#renderingBusy || performance.now() - last.started < this.#limits.minCollectionIntervalMs)) return last.done;
    const started = performance.now();
    this.#renderingBusy = true;
    const done = this.#render(started).finally(() => (this.#renderingBusy = false));
    this.#rendering = { started, done };
    // A failed collection is not served to later scrapes: they start another.
    done.catch(() => {
      if (this.#rendering?.done === done) this.#rendering = undefined;
    });
    return done;
  }

  /** Collects once and writes the text through gzip into memory. */
  async #render(started: number): Promise<Rendering> {
    const { resourceMetrics, errors } = await this.collect();
    // The official exporter's message, which the agent recognizes: once per collection.
    if (errors.length > 0) diag.error('PrometheusExporter: metrics collection errors', ...errors);
    const { resource } = resourceMetrics;
    if (resource.asyncAttributesPending) await resource.waitForAsyncAttributes?.();
    const gzipped: Buffer[] = [];
    let gzippedBytes = 0;
    const textBytes = await gzipText(this.#serializer, resourceMetrics, this.#gzipLevel, (piece) => {
      gzipped.push(piece);
      gzippedBytes += piece.length;
    });
    return { started, gzipped, gzippedBytes, textBytes };
  }
}

/**
 * The text of `metrics` through gzip at `level`, as a scrape's body is made: `keep` receives the
 * gzip'd pieces; returns the text's bytes. Each text chunk goes back to the serializer once zlib
 * has read it (a write's callback), so a scrape's text is written into the same few chunks.
 */
export async function gzipText(serializer: PrometheusTextSerializer, metrics: ResourceMetrics, level: number, keep: (piece: Buffer) => void): Promise<number> {
  const gzip = createGzip({ level }).on('data', keep);
  const ended = finished(gzip);
  let textBytes = 0;
  try {
    for (const chunk of serializer.chunks(metrics)) {
      textBytes += chunk.length;
      if (!gzip.write(chunk, () => serializer.release(chunk))) await once(gzip, 'drain');
    }
    gzip.end();
  } catch (error) {
    gzip.destroy(error as Error);
  }
  await ended;
  return textBytes;
}
