/**
 * A local OTLP receiver to run the agent against: @elastic/mockotlpserver (a real third-party
 * OTLP/HTTP server) on a loopback port, keeping every metrics request it receives in one
 * normalized form, whether it came as JSON or protobuf.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { MockOtlpServer, normalizeMetrics } from '@elastic/mockotlpserver';

export const ROOT = join(import.meta.dirname, '..', '..');
/** The built command line: `npm run build` first. */
export const BIN = join(ROOT, 'dist', 'cli', 'main.js');

// ---- the normalized OTLP metrics request (see mockotlpserver's normalizeMetrics) ----

export type Attributes = Record<string, string | number | boolean>;
export interface NumberPoint {
  attributes: Attributes;
  startTimeUnixNano: string;
  timeUnixNano: string;
  asInt?: string | number;
  asDouble?: number;
}
export interface HistogramPoint {
  attributes: Attributes;
  startTimeUnixNano: string;
  timeUnixNano: string;
  count: string | number;
  sum?: number;
  bucketCounts: (string | number)[];
  explicitBounds: number[];
}
export interface Metric {
  name: string;
  unit?: string;
  description?: string;
  sum?: { dataPoints: NumberPoint[]; aggregationTemporality: number | string; isMonotonic?: boolean };
  gauge?: { dataPoints: NumberPoint[] };
  histogram?: { dataPoints: HistogramPoint[]; aggregationTemporality: number | string };
}
export interface MetricsRequest {
  resourceMetrics: { resource: { attributes: Attributes }; scopeMetrics: { scope: { name: string; version?: string }; metrics: Metric[] }[] }[];
}

/** A number point's value as a number, whichever way the encoding carried it. */
export function pointValue(point: NumberPoint): number {
  return point.asDouble ?? Number(point.asInt ?? 0);
}

/** Every metric of a request, with the resource it came with. */
export function metricsOf(request: MetricsRequest): { resource: Attributes; scope: string; metric: Metric }[] {
  // An export of no stats fds (every VM gone) has a resource and no scopes: decoded, no field.
  return (request.resourceMetrics ?? []).flatMap((rm) =>
    (rm.scopeMetrics ?? []).flatMap((sm) => (sm.metrics ?? []).map((metric) => ({ resource: rm.resource.attributes, scope: sm.scope.name, metric }))),
  );
}

/** A port that was free a moment ago, on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

let open = false;

/** 64-bit integers as decimal strings, as mockotlpserver normalizes HTTP requests: gRPC ones
 * keep theirs as {low, high, unsigned} objects (counts, buckets, integer values). */
function longsAsStrings(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(longsAsStrings);
  if (typeof value !== 'object' || value === null) return value;
  const object = value as Record<string, unknown>;
  if (typeof object.low === 'number' && typeof object.high === 'number' && typeof object.unsigned === 'boolean' && Object.keys(object).length === 3) {
    const unsigned = BigInt.asUintN(64, (BigInt(object.high >>> 0) << 32n) | BigInt(object.low >>> 0));
    return (object.unsigned ? unsigned : BigInt.asIntN(64, unsigned)).toString();
  }
  return Object.fromEntries(Object.entries(object).map(([key, item]) => [key, longsAsStrings(item)]));
}

export class LocalCollector {
  readonly requests: MetricsRequest[] = [];
  /** The HTTP headers of each metrics request, in order (content-type says JSON or protobuf). */
  readonly headers: Record<string, string>[] = [];
  #server: MockOtlpServer;
  #closed = false;
  #waiters: (() => void)[] = [];

  private constructor(server: MockOtlpServer) {
    this.#server = server;
  }

  /** Starts the receiver on 127.0.0.1 (port 0: any free port), OTLP/gRPC too on a free port when
   * `grpc`. mockotlpserver reports what it receives through process-wide diagnostics channels,
   * so one collector runs at a time. */
  static async start(port = 0, { grpc = false }: { grpc?: boolean } = {}): Promise<LocalCollector> {
    if (open) throw new Error('a LocalCollector is already running in this process: close it first');
    let collector: LocalCollector | undefined;
    const server = new MockOtlpServer({
      services: grpc ? ['http', 'grpc'] : ['http'],
      httpHostname: '127.0.0.1',
      httpPort: port,
      grpcHostname: '127.0.0.1',
      grpcPort: 0,
      logLevel: 'warn',
      onMetrics: (raw: unknown) => collector?.receive(longsAsStrings(normalizeMetrics(raw)) as MetricsRequest),
      onRequest: (request: { path: string; headers: Record<string, string> }) => {
        if (request.path === '/v1/metrics' && collector?.closed === false) collector.headers.push(request.headers);
      },
    });
    await server.start();
    open = true;
    collector = new LocalCollector(server);
    return collector;
  }

  /** The OTLP base URL, for --endpoint or OTEL_EXPORTER_OTLP_ENDPOINT. */
  get endpoint(): string {
    return this.#server.httpUrl!.origin;
  }

  /** The OTLP/gRPC address, for --endpoint with --protocol grpc (started with `grpc`). */
  get grpcEndpoint(): string {
    return this.#server.grpcUrl!.origin;
  }

  get closed(): boolean {
    return this.#closed;
  }

  private receive(request: MetricsRequest): void {
    if (this.#closed) return;
    this.requests.push(request);
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Waits until `count` requests have arrived, at most `timeoutMs`. */
  async waitForRequests(count: number, timeoutMs: number): Promise<MetricsRequest[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.requests.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the collector received ${this.requests.length} of ${count} metrics requests within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.requests.slice(0, count);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    open = false;
    await this.#server.close();
  }
}

// ---- the agent, as users run it ----

export interface AgentProcess {
  readonly child: ChildProcess;
  /** stderr so far: the agent's JSON log lines. */
  readonly stderr: () => string;
  readonly stdout: () => string;
  /** Resolves with the first stderr (log) line that matches, waiting at most `timeoutMs`. */
  waitForLog(pattern: RegExp, timeoutMs: number): Promise<string>;
  /** The same for stdout (--console). */
  waitForOutput(pattern: RegExp, timeoutMs: number): Promise<string>;
  /** Waits for the agent to exit on its own; SIGKILL after `timeoutMs`. */
  exited(timeoutMs?: number): Promise<number | null>;
  /** Sends `signal` and waits for the exit code; SIGKILL after `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

/** Starts `kvm-stats-otel agent ARGS` from dist/ with this process's environment, less its
 * OTEL_* variables (the agent would read them), plus `env`. */
export function startAgentProcess(args: readonly string[], env: Record<string, string> = {}): AgentProcess {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('OTEL_')));
  return watchAgentProcess(spawn(process.execPath, [BIN, 'agent', ...args], { cwd: ROOT, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** An agent started some other way (as another user, say), its stdout and stderr piped. */
export function watchAgentProcess(child: ChildProcess): AgentProcess {
  const text = { stdout: '', stderr: '' };
  const listeners: (() => void)[] = [];
  for (const stream of ['stdout', 'stderr'] as const) {
    child[stream]!.on('data', (chunk: Buffer) => {
      text[stream] += chunk.toString();
      for (const listener of [...listeners]) listener();
    });
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const waitFor = (stream: 'stdout' | 'stderr', pattern: RegExp, timeoutMs: number): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): boolean => {
        const line = text[stream].split('\n').find((l) => pattern.test(l));
        if (line === undefined) return false;
        cleanup();
        resolve(line);
        return true;
      };
      const fail = (why: string): void => {
        cleanup();
        reject(new Error(`${why}: no ${stream} line matched ${pattern}; stderr:\n${text.stderr}`));
      };
      const timer = setTimeout(() => fail(`waited ${timeoutMs} ms`), timeoutMs);
      const onExit = (): void => void (check() || fail(`the agent exited (code ${child.exitCode})`));
      const listener = (): void => void check();
      const cleanup = (): void => {
        clearTimeout(timer);
        listeners.splice(listeners.indexOf(listener), 1);
        child.off('exit', onExit);
      };
      listeners.push(listener);
      child.once('exit', onExit);
      check();
    });
  return {
    child,
    stderr: () => text.stderr,
    stdout: () => text.stdout,
    waitForLog: (pattern, timeoutMs) => waitFor('stderr', pattern, timeoutMs),
    waitForOutput: (pattern, timeoutMs) => waitFor('stdout', pattern, timeoutMs),
    async exited(timeoutMs = 30_000) {
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    stop(signal = 'SIGTERM', timeoutMs = 30_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return this.exited(timeoutMs);
    },
  };
}
