/**
 * The agent's configuration, the way OpenTelemetry users expect it: the standard environment
 * variables, each overridden by a value given directly (the CLI's flags). One table (SETTINGS)
 * and one set of defaults (AGENT_DEFAULTS) drive the resolution here and the flags, their --help
 * text and the README's table in cli/flags.ts, so they cannot drift apart. A bad value, given or
 * from a variable, is a ConfigError saying what is wrong.
 */
import type { VcpuAggregation } from '../otel/aggregation.js';
import type { UnitMode } from '../otel/mapping.js';
import type { SourceOptions } from '../setup/open-sources.js';

export type OtlpProtocol = 'http/protobuf' | 'http/json' | 'grpc';
export type TemporalityPreference = 'cumulative' | 'delta' | 'lowmemory';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface OtlpConfig {
  /** The full URL metrics are posted to (…/v1/metrics); for grpc, the collector's address. */
  readonly url: string;
  readonly protocol: OtlpProtocol;
  readonly headers: Readonly<Record<string, string>>;
  readonly timeoutMillis: number;
}

export interface AgentConfig {
  readonly sources: SourceOptions;
  /** Undefined when OTLP is not an output. */
  readonly otlp: OtlpConfig | undefined;
  readonly prometheus: { readonly host: string | undefined; readonly port: number } | undefined;
  readonly console: boolean;
  readonly temporality: TemporalityPreference;
  readonly exportIntervalMillis: number;
  readonly exportTimeoutMillis: number;
  /** How often providers look for new fds (scan, hand-over, processes); default the export interval. */
  readonly rescanIntervalMillis: number;
  readonly units: UnitMode;
  /** Stat patterns (TARGET:STAT), see StatSelection; empty: every stat. */
  readonly include: readonly string[];
  readonly exclude: readonly string[];
  readonly vcpuAggregation: VcpuAggregation;
  readonly serviceName: string;
  readonly resourceAttributes: Readonly<Record<string, string>>;
  readonly logLevel: LogLevel;
}

/** Every default of the agent's settings: what resolveConfig falls back to, and what --help says. */
export const AGENT_DEFAULTS = {
  /** OTLP/HTTP base URL; /v1/metrics is appended. */
  endpoint: 'http://localhost:4318',
  /** The collector's OTLP/gRPC address, with --protocol grpc. */
  grpcEndpoint: 'http://localhost:4317',
  protocol: 'http/protobuf',
  timeoutMillis: 10_000,
  temporality: 'cumulative',
  exportIntervalMillis: 60_000,
  /** At most the export interval. */
  exportTimeoutMillis: 30_000,
  serviceName: 'kvm-stats-otel',
  units: 'exact',
  vcpuAggregation: 'none',
  logLevel: 'info',
  /** vCPUs of the demo VM when no number is given. */
  demoVcpus: 2,
} as const satisfies {
  endpoint: string;
  grpcEndpoint: string;
  protocol: OtlpProtocol;
  timeoutMillis: number;
  temporality: TemporalityPreference;
  exportIntervalMillis: number;
  exportTimeoutMillis: number;
  serviceName: string;
  units: UnitMode;
  vcpuAggregation: VcpuAggregation;
  logLevel: LogLevel;
  demoVcpus: number;
};

const METRICS_PATH = 'v1/metrics';

/**
 * A problem one setting can fix. `setting` says which, a key of AgentFlags, so a front end can
 * add how that setting is given (the CLI: its flag).
 */
export class SettingError extends Error {
  constructor(
    message: string,
    readonly setting?: keyof AgentFlags,
  ) {
    super(message);
    this.name = 'SettingError';
  }
}

/** A setting whose value cannot work, found before anything is opened: the caller's mistake. */
export class ConfigError extends SettingError {
  constructor(message: string, setting?: keyof AgentFlags) {
    super(message, setting);
    this.name = 'ConfigError';
  }
}

// ---- value parsers: each throws an Error whose message says what is expected ----

export function milliseconds(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || value < 1 || value > 2 ** 31 - 1) {
    throw new Error(`expected a whole number of milliseconds from 1 to ${2 ** 31 - 1}`);
  }
  return value;
}

export function httpUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    throw new Error('expected an absolute URL such as http://collector:4318');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`expected an http:// or https:// URL, not ${url.protocol}`);
  return url.href;
}

export function protocol(text: string): OtlpProtocol {
  const value = text.trim();
  if (value === 'http/protobuf' || value === 'http/json' || value === 'grpc') return value;
  throw new Error('expected http/protobuf, http/json or grpc');
}

export function temporality(text: string): TemporalityPreference {
  const value = text.trim().toLowerCase();
  if (value === 'cumulative' || value === 'delta' || value === 'lowmemory') return value;
  throw new Error('expected cumulative, delta or lowmemory');
}

export function nonEmpty(text: string): string {
  if (text.trim() === '') throw new Error('expected a non-empty name');
  return text.trim();
}

/**
 * A list of key=value pairs separated by commas, values percent-encoded: the format of
 * OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES (W3C Baggage without properties).
 * `secret`: a malformed item is not quoted (header values carry tokens).
 */
export function keyValueList(text: string, secret = false): Record<string, string> {
  const pairs: Record<string, string> = {};
  for (const item of text.split(',')) {
    if (item.trim() === '') continue;
    const equals = item.indexOf('=');
    const key = equals < 0 ? '' : item.slice(0, equals).trim();
    if (key === '') throw new Error(`expected key=value pairs separated by commas, ${secret ? 'and an item has no key= part' : `got ${JSON.stringify(item.trim())}`}`);
    try {
      pairs[key] = decodeURIComponent(item.slice(equals + 1).trim());
    } catch {
      throw new Error(`the value of ${key} is not valid percent-encoding`);
    }
  }
  return pairs;
}

/** An HTTP field name is a token (RFC 9110); a value may not hold CR, LF, NUL or other
 * controls but tab, nor anything beyond Latin-1 (Node's HTTP client refuses it, and gRPC
 * metadata is ASCII). Checked at start-up: a header the HTTP client refuses would otherwise fail
 * every export. Messages name the header, never its value (it is often a secret). */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// eslint-disable-next-line no-control-regex
const HEADER_VALUE_FORBIDDEN = /[\x00-\x08\x0a-\x1f\x7f]/;
// eslint-disable-next-line no-control-regex
const BEYOND_LATIN1 = /[^\x00-\xff]/;
/** Headers that frame or route the request, or say how its body is encoded: the exporter and the
 * HTTP client set them, and a second value breaks the request. */
const FRAMING_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'upgrade', 'te', 'trailer', 'expect', 'content-type', 'content-encoding']);

export function headerList(text: string): Record<string, string> {
  const headers = keyValueList(text, true);
  for (const [name, value] of Object.entries(headers)) {
    if (!HEADER_NAME.test(name)) throw new Error(`header name ${JSON.stringify(name.slice(0, 64))} is not a valid HTTP field name (letters, digits and !#$%&'*+-.^_\`|~ only)`);
    if (FRAMING_HEADERS.has(name.toLowerCase())) throw new Error(`header ${name} is set by the exporter and its HTTP client (it frames the request or says how its body is encoded): leave it out`);
    if (HEADER_VALUE_FORBIDDEN.test(value)) throw new Error(`the value of header ${name} holds a line break or another control character, which HTTP does not allow`);
    if (BEYOND_LATIN1.test(value)) throw new Error(`the value of header ${name} holds characters beyond Latin-1, which HTTP headers cannot carry: percent-encode them as the service expects`);
  }
  return headers;
}

/** A URL as it may be shown or logged: user and password (often a token) and the value of every
 * query parameter (?api_key=...) become ***. Works on text that is not a valid URL too. */
export function redactedUrl(url: string): string {
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^/\s@?#]*@/i, '$1***@')
    .replace(/([?&][^=&#\s]*)=[^&#\s]*/g, '$1=***');
}

/** A text that may quote URLs (an error message): each one as redactedUrl shows it. */
export function redactCredentials(text: string): string {
  return text.replace(/[a-z][a-z0-9+.-]*:\/\/[^\s'"<>]+/gi, (url) => redactedUrl(url));
}

export function prometheusAddress(text: string): { host: string | undefined; port: number } {
  const match = /^(?:\[?([^\]]*?)\]?:)?(\d+)$/.exec(text.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match || port < 1 || port > 65535) throw new Error('expected PORT or HOST:PORT, with a port from 1 to 65535');
  return { host: match[1] || undefined, port };
}

// ---- the settings that have environment variables ----

export interface Setting<T> {
  readonly description: string;
  /** Most specific first: a signal-specific variable wins over the general one. */
  readonly env: readonly string[];
  readonly parse: (text: string) => T;
  /** For --help and the README, from AGENT_DEFAULTS; the value itself is decided in resolveConfig. */
  readonly defaultText?: string;
  /** Its values are never repeated in a message (headers carry tokens). */
  readonly secret?: boolean;
  /** How a value is repeated in a message: a URL with its credentials and query masked. */
  readonly show?: (text: string) => string;
}

function setting<T>(value: Setting<T>): Setting<T> {
  return value;
}

/** Keyed as AgentFlags is: the value given directly for SETTINGS.exportTimeout is flags.exportTimeout. */
export const SETTINGS = {
  endpoint: setting({
    description: 'OTLP/HTTP base URL, /v1/metrics is appended; with grpc, the collector\'s address',
    env: ['OTEL_EXPORTER_OTLP_ENDPOINT'],
    parse: httpUrl,
    show: redactedUrl,
    defaultText: AGENT_DEFAULTS.endpoint,
  }),
  metricsEndpoint: setting({
    description: 'OTLP/HTTP URL for metrics, used as is',
    env: ['OTEL_EXPORTER_OTLP_METRICS_ENDPOINT'],
    parse: httpUrl,
    show: redactedUrl,
  }),
  protocol: setting({
    description: 'http/protobuf, http/json or grpc',
    env: ['OTEL_EXPORTER_OTLP_METRICS_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL'],
    parse: protocol,
    defaultText: AGENT_DEFAULTS.protocol,
  }),
  header: setting({
    description: 'a header on every OTLP request (repeatable; the variables take a comma-separated list)',
    env: ['OTEL_EXPORTER_OTLP_METRICS_HEADERS', 'OTEL_EXPORTER_OTLP_HEADERS'],
    parse: headerList,
    secret: true,
  }),
  timeout: setting({
    description: 'time limit of one OTLP request',
    env: ['OTEL_EXPORTER_OTLP_METRICS_TIMEOUT', 'OTEL_EXPORTER_OTLP_TIMEOUT'],
    parse: milliseconds,
    defaultText: String(AGENT_DEFAULTS.timeoutMillis),
  }),
  temporality: setting({
    description: 'cumulative, delta or lowmemory (KVM stats stay cumulative under lowmemory, like observable counters)',
    env: ['OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE'],
    parse: temporality,
    defaultText: AGENT_DEFAULTS.temporality,
  }),
  interval: setting({
    description: 'time between two exports',
    env: ['OTEL_METRIC_EXPORT_INTERVAL'],
    parse: milliseconds,
    defaultText: String(AGENT_DEFAULTS.exportIntervalMillis),
  }),
  exportTimeout: setting({
    description: 'time limit of one collection and export, and of the last one at exit',
    env: ['OTEL_METRIC_EXPORT_TIMEOUT'],
    parse: milliseconds,
    defaultText: `${AGENT_DEFAULTS.exportTimeoutMillis}, at most the interval`,
  }),
  serviceName: setting({
    description: 'the resource\'s service.name',
    env: ['OTEL_SERVICE_NAME'],
    parse: nonEmpty,
    defaultText: AGENT_DEFAULTS.serviceName,
  }),
  resourceAttributes: setting({
    description: 'more resource attributes, percent-encoded values',
    env: ['OTEL_RESOURCE_ATTRIBUTES'],
    parse: keyValueList,
  }),
} as const;

export type SettingName = keyof typeof SETTINGS;

/** The values given directly (the CLI: its flags, parsed); each wins over its variable. */
export interface AgentFlags extends SourceOptions {
  endpoint?: string;
  metricsEndpoint?: string;
  protocol?: OtlpProtocol;
  /** One list of pairs per --header. */
  header?: Record<string, string>[];
  timeout?: number;
  temporality?: TemporalityPreference;
  interval?: number;
  exportTimeout?: number;
  rescanInterval?: number;
  serviceName?: string;
  resourceAttributes?: Record<string, string>;
  otlp?: boolean;
  prometheus?: { host: string | undefined; port: number };
  console?: boolean;
  units?: UnitMode;
  include?: string[];
  exclude?: string[];
  vcpuAggregation?: VcpuAggregation;
  logLevel?: LogLevel;
}

type Environment = Readonly<Record<string, string | undefined>>;

/** The value of the most specific variable that is set; an empty variable counts as unset. */
function fromEnv<T>(s: Setting<T>, env: Environment): T | undefined {
  for (const name of s.env) {
    const text = env[name];
    if (text === undefined || text.trim() === '') continue;
    try {
      return s.parse(text);
    } catch (error) {
      throw new ConfigError(`${name}${s.secret ? '' : `=${JSON.stringify(s.show ? s.show(text) : text)}`} is not valid: ${(error as Error).message}`);
    }
  }
  return undefined;
}

/** Every variable of a list setting, general first, so the specific ones win key by key. */
function allFromEnv(s: Setting<Record<string, string>>, env: Environment): Record<string, string> {
  return Object.assign({}, ...[...s.env].reverse().map((name) => fromEnv({ ...s, env: [name] }, env) ?? {}));
}

/**
 * Values given over variables over defaults. OTLP is an output when asked for (flags.otlp), when an
 * endpoint is configured, or when no other output is.
 */
export function resolveConfig(flags: AgentFlags, env: Environment = process.env): AgentConfig {
  const pick = <T>(flag: T | undefined, s: Setting<T>): T | undefined => flag ?? fromEnv(s, env);
  // Validate every variable, used or not: a typo should not wait for the day it matters.
  for (const s of Object.values(SETTINGS) as Setting<unknown>[]) fromEnv(s, env);

  // A value given beats any variable: flags.endpoint wins over OTEL_EXPORTER_OTLP_METRICS_ENDPOINT.
  const envBase = fromEnv(SETTINGS.endpoint, env);
  const protocol = pick(flags.protocol, SETTINGS.protocol) ?? AGENT_DEFAULTS.protocol;
  // gRPC has no path to append: the endpoint is the collector's address.
  const withPath = protocol === 'grpc' ? (base: string) => base : withMetricsPath;
  const url =
    flags.metricsEndpoint ??
    (flags.endpoint !== undefined ? withPath(flags.endpoint) : undefined) ??
    fromEnv(SETTINGS.metricsEndpoint, env) ??
    (envBase !== undefined ? withPath(envBase) : undefined);
  const wantOtlp = flags.otlp === true || url !== undefined || (!flags.prometheus && !flags.console);

  const interval = pick(flags.interval, SETTINGS.interval) ?? AGENT_DEFAULTS.exportIntervalMillis;
  const explicitTimeout = pick(flags.exportTimeout, SETTINGS.exportTimeout);
  if (explicitTimeout !== undefined && explicitTimeout > interval) {
    throw new ConfigError(`the export timeout (${explicitTimeout} ms) must not be longer than the export interval (${interval} ms)`, 'exportTimeout');
  }
  const exportTimeout = explicitTimeout ?? Math.min(AGENT_DEFAULTS.exportTimeoutMillis, interval);
  const resourceAttributes = { ...fromEnv(SETTINGS.resourceAttributes, env), ...flags.resourceAttributes };

  return {
    sources: { demo: flags.demo, pid: flags.pid, file: flags.file, scan: flags.scan, listen: flags.listen },
    rescanIntervalMillis: flags.rescanInterval ?? interval,
    otlp: wantOtlp
      ? {
          url: url ?? (protocol === 'grpc' ? AGENT_DEFAULTS.grpcEndpoint : withMetricsPath(AGENT_DEFAULTS.endpoint)),
          protocol,
          headers: { ...allFromEnv(SETTINGS.header, env), ...Object.assign({}, ...(flags.header ?? [])) },
          timeoutMillis: Math.min(pick(flags.timeout, SETTINGS.timeout) ?? AGENT_DEFAULTS.timeoutMillis, exportTimeout),
        }
      : undefined,
    prometheus: flags.prometheus,
    console: flags.console === true,
    temporality: pick(flags.temporality, SETTINGS.temporality) ?? AGENT_DEFAULTS.temporality,
    exportIntervalMillis: interval,
    exportTimeoutMillis: exportTimeout,
    units: flags.units ?? AGENT_DEFAULTS.units,
    include: flags.include ?? [],
    exclude: flags.exclude ?? [],
    vcpuAggregation: flags.vcpuAggregation ?? AGENT_DEFAULTS.vcpuAggregation,
    serviceName: pick(flags.serviceName, SETTINGS.serviceName) ?? resourceAttributes['service.name'] ?? AGENT_DEFAULTS.serviceName,
    resourceAttributes,
    logLevel: flags.logLevel ?? AGENT_DEFAULTS.logLevel,
  };
}

function withMetricsPath(base: string): string {
  return base.endsWith('/') ? base + METRICS_PATH : `${base}/${METRICS_PATH}`;
}
