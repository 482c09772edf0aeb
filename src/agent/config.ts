/**
 * The agent's configuration, the way OpenTelemetry users expect it: the standard environment
 * variables, each with a command-line flag that overrides it. One table (SETTINGS) drives the
 * flags, their --help text, the README's table and the checks, so they cannot drift apart.
 * A bad value, from a flag or a variable, is a UsageError naming it (exit code 2).
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { type VcpuAggregation, VCPU_AGGREGATIONS } from '../otel/aggregation.js';
import type { UnitMode } from '../otel/mapping.js';
import { StatSelection } from '../otel/selection.js';
import { UsageError } from '../cli/errors.js';
import { collect } from '../cli/options.js';
import type { SourceOptions } from './sources.js';

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
  /** How often providers look for new fds (--scan, --listen, --pid); default the export interval. */
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

export const DEFAULT_SERVICE_NAME = 'kvm-stats-otel';
const DEFAULT_OTLP_BASE = 'http://localhost:4318/';
const DEFAULT_OTLP_GRPC = 'http://localhost:4317';
const METRICS_PATH = 'v1/metrics';

// ---- value parsers: each throws an Error whose message says what is expected ----

function milliseconds(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || value < 1 || value > 2 ** 31 - 1) {
    throw new Error(`expected a whole number of milliseconds from 1 to ${2 ** 31 - 1}`);
  }
  return value;
}

function httpUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    throw new Error('expected an absolute URL such as http://collector:4318');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`expected an http:// or https:// URL, not ${url.protocol}`);
  return url.href;
}

function protocol(text: string): OtlpProtocol {
  const value = text.trim();
  if (value === 'http/protobuf' || value === 'http/json' || value === 'grpc') return value;
  throw new Error('expected http/protobuf, http/json or grpc');
}

function temporality(text: string): TemporalityPreference {
  const value = text.trim().toLowerCase();
  if (value === 'cumulative' || value === 'delta' || value === 'lowmemory') return value;
  throw new Error('expected cumulative, delta or lowmemory');
}

function nonEmpty(text: string): string {
  if (text.trim() === '') throw new Error('expected a non-empty name');
  return text.trim();
}

/**
 * A list of key=value pairs separated by commas, values percent-encoded: the format of
 * OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES (W3C Baggage without properties).
 */
export function keyValueList(text: string): Record<string, string> {
  const pairs: Record<string, string> = {};
  for (const item of text.split(',')) {
    if (item.trim() === '') continue;
    const equals = item.indexOf('=');
    const key = equals < 0 ? '' : item.slice(0, equals).trim();
    if (key === '') throw new Error(`expected key=value pairs separated by commas, got ${JSON.stringify(item.trim())}`);
    try {
      pairs[key] = decodeURIComponent(item.slice(equals + 1).trim());
    } catch {
      throw new Error(`the value of ${key} is not valid percent-encoding`);
    }
  }
  return pairs;
}

function prometheusAddress(text: string): { host: string | undefined; port: number } {
  const match = /^(?:\[?([^\]]*?)\]?:)?(\d+)$/.exec(text.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match || port < 1 || port > 65535) throw new Error('expected PORT or HOST:PORT, with a port from 1 to 65535');
  return { host: match[1] || undefined, port };
}

// ---- the settings that have environment variables ----

interface Setting<T> {
  /** The commander attribute: --export-timeout is exportTimeout. */
  readonly key: string;
  readonly flags: string;
  readonly description: string;
  /** Most specific first: a signal-specific variable wins over the general one. */
  readonly env: readonly string[];
  readonly parse: (text: string) => T;
  /** For --help and the README; the value itself is decided in resolveConfig. */
  readonly defaultText?: string;
}

function setting<T>(value: Setting<T>): Setting<T> {
  return value;
}

export const SETTINGS = {
  endpoint: setting({
    key: 'endpoint',
    flags: '--endpoint <url>',
    description: 'OTLP/HTTP base URL, /v1/metrics is appended; with grpc, the collector\'s address',
    env: ['OTEL_EXPORTER_OTLP_ENDPOINT'],
    parse: httpUrl,
    defaultText: 'http://localhost:4318',
  }),
  metricsEndpoint: setting({
    key: 'metricsEndpoint',
    flags: '--metrics-endpoint <url>',
    description: 'OTLP/HTTP URL for metrics, used as is',
    env: ['OTEL_EXPORTER_OTLP_METRICS_ENDPOINT'],
    parse: httpUrl,
  }),
  protocol: setting({
    key: 'protocol',
    flags: '--protocol <protocol>',
    description: 'http/protobuf, http/json or grpc',
    env: ['OTEL_EXPORTER_OTLP_METRICS_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL'],
    parse: protocol,
    defaultText: 'http/protobuf',
  }),
  header: setting({
    key: 'header',
    flags: '--header <key=value>',
    description: 'a header on every OTLP request (repeatable; the variables take a comma-separated list)',
    env: ['OTEL_EXPORTER_OTLP_METRICS_HEADERS', 'OTEL_EXPORTER_OTLP_HEADERS'],
    parse: keyValueList,
  }),
  timeout: setting({
    key: 'timeout',
    flags: '--timeout <ms>',
    description: 'time limit of one OTLP request',
    env: ['OTEL_EXPORTER_OTLP_METRICS_TIMEOUT', 'OTEL_EXPORTER_OTLP_TIMEOUT'],
    parse: milliseconds,
    defaultText: '10000',
  }),
  temporality: setting({
    key: 'temporality',
    flags: '--temporality <preference>',
    description: 'cumulative, delta or lowmemory (KVM stats stay cumulative under lowmemory, like observable counters)',
    env: ['OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE'],
    parse: temporality,
    defaultText: 'cumulative',
  }),
  interval: setting({
    key: 'interval',
    flags: '--interval <ms>',
    description: 'time between two exports',
    env: ['OTEL_METRIC_EXPORT_INTERVAL'],
    parse: milliseconds,
    defaultText: '60000',
  }),
  exportTimeout: setting({
    key: 'exportTimeout',
    flags: '--export-timeout <ms>',
    description: 'time limit of one collection and export, and of the last one at exit',
    env: ['OTEL_METRIC_EXPORT_TIMEOUT'],
    parse: milliseconds,
    defaultText: '30000, at most the interval',
  }),
  serviceName: setting({
    key: 'serviceName',
    flags: '--service-name <name>',
    description: 'the resource\'s service.name',
    env: ['OTEL_SERVICE_NAME'],
    parse: nonEmpty,
    defaultText: DEFAULT_SERVICE_NAME,
  }),
  resourceAttributes: setting({
    key: 'resourceAttributes',
    flags: '--resource-attributes <key=value,...>',
    description: 'more resource attributes, percent-encoded values',
    env: ['OTEL_RESOURCE_ATTRIBUTES'],
    parse: keyValueList,
  }),
} as const;

/** Turns a value parser into a commander one, so a bad flag is commander's usage error. */
function flagParser<T>(parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
  };
}

/** --units, as `read` has it. */
export function unitsOption(): Option {
  return new Option('--units <mode>', 'exact keeps integers (ns, KiBy); base converts to s and By').choices(['exact', 'base']).default('exact');
}

/** A comma-separated list of TARGET:STAT patterns; repeatable, the lists add up. */
function patternsOption(kind: 'include' | 'exclude') {
  return (text: string, previous: string[] | undefined): string[] => {
    const patterns = text.split(',').map((item) => item.trim()).filter(Boolean);
    try {
      // Checked now, so that a bad pattern is a usage error before anything opens.
      new StatSelection({ [kind]: patterns });
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
    return [...(previous ?? []), ...patterns];
  };
}

/** --include, --exclude and --vcpu-aggregation: what the agent exports, and what schema and
 * list count. */
export function addSelectionOptions(command: Command): Command {
  return command
    .option('--include <patterns>', 'export only these stats of their target, TARGET:STAT with * and ?, comma-separated, repeatable (e.g. vcpu:exits,vcpu:halt_*); default every stat', patternsOption('include'))
    .option('--exclude <patterns>', 'do not export these stats, TARGET:STAT with * and ?, after --include (e.g. vcpu:*_hist)', patternsOption('exclude'))
    .addOption(
      new Option('--vcpu-aggregation <mode>', 'none: a series per vCPU; vm: one per VM, vCPU values summed (gauges also as .max, booleans as the count of vCPUs set)')
        .choices(VCPU_AGGREGATIONS)
        .default('none'),
    );
}

/** Adds the output and configuration flags to the agent command. */
export function addConfigOptions(command: Command): Command {
  for (const s of Object.values(SETTINGS) as Setting<unknown>[]) {
    const defaultText = s.defaultText ? `; default ${s.defaultText}` : '';
    const option = new Option(s.flags, `${s.description} (env ${s.env.join(', ')}${defaultText})`);
    // --header repeats: each flag adds its pairs.
    command.addOption(s.key === 'header' ? option.argParser(collect(flagParser(keyValueList))) : option.argParser(flagParser(s.parse)));
  }
  addSelectionOptions(command);
  return command
    .option('--otlp', 'push OTLP even when --prometheus or --console is given without an endpoint')
    .option('--prometheus <[host:]port>', 'serve a Prometheus scrape endpoint at /metrics, beside or instead of OTLP', flagParser(prometheusAddress))
    .option('--console', 'print every data point that would be exported, one line each, on stdout')
    .option('--rescan-interval <ms>', 'how often to look for new VMs and vCPUs (--scan, --pid, --listen); default the export interval', flagParser(milliseconds))
    .addOption(unitsOption())
    .addOption(new Option('--log-level <level>', 'the least severe level logged, as JSON lines on stderr').choices(LOG_LEVELS).default('info'));
}

/** What commander parsed for the agent command. */
export interface AgentFlags extends SourceOptions {
  endpoint?: string;
  metricsEndpoint?: string;
  protocol?: OtlpProtocol;
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
  units: UnitMode;
  include?: string[];
  exclude?: string[];
  vcpuAggregation?: VcpuAggregation;
  logLevel: LogLevel;
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
      throw new UsageError(`${name}=${JSON.stringify(text)} is not valid: ${(error as Error).message}`);
    }
  }
  return undefined;
}

/** Every variable of a list setting, general first, so the specific ones win key by key. */
function allFromEnv(s: Setting<Record<string, string>>, env: Environment): Record<string, string> {
  return Object.assign({}, ...[...s.env].reverse().map((name) => fromEnv({ ...s, env: [name] }, env) ?? {}));
}

/**
 * Flags over variables over defaults. OTLP is an output when asked for (--otlp), when an
 * endpoint is configured, or when no other output is.
 */
export function resolveConfig(flags: AgentFlags, env: Environment = process.env): AgentConfig {
  const pick = <T>(flag: T | undefined, s: Setting<T>): T | undefined => flag ?? fromEnv(s, env);
  // Validate every variable, used or not: a typo should not wait for the day it matters.
  for (const s of Object.values(SETTINGS) as Setting<unknown>[]) fromEnv(s, env);

  // A flag beats any variable: --endpoint wins over OTEL_EXPORTER_OTLP_METRICS_ENDPOINT.
  const envBase = fromEnv(SETTINGS.endpoint, env);
  const protocol = pick(flags.protocol, SETTINGS.protocol) ?? 'http/protobuf';
  // gRPC has no path to append: the endpoint is the collector's address.
  const withPath = protocol === 'grpc' ? (base: string) => base : withMetricsPath;
  const url =
    flags.metricsEndpoint ??
    (flags.endpoint !== undefined ? withPath(flags.endpoint) : undefined) ??
    fromEnv(SETTINGS.metricsEndpoint, env) ??
    (envBase !== undefined ? withPath(envBase) : undefined);
  const wantOtlp = flags.otlp === true || url !== undefined || (!flags.prometheus && !flags.console);

  const interval = pick(flags.interval, SETTINGS.interval) ?? 60_000;
  const explicitTimeout = pick(flags.exportTimeout, SETTINGS.exportTimeout);
  if (explicitTimeout !== undefined && explicitTimeout > interval) {
    throw new UsageError(`the export timeout (${explicitTimeout} ms) must not be longer than the export interval (${interval} ms)`);
  }
  const exportTimeout = explicitTimeout ?? Math.min(30_000, interval);
  const resourceAttributes = { ...fromEnv(SETTINGS.resourceAttributes, env), ...flags.resourceAttributes };

  return {
    sources: { demo: flags.demo, pid: flags.pid, file: flags.file, scan: flags.scan, listen: flags.listen },
    rescanIntervalMillis: flags.rescanInterval ?? interval,
    otlp: wantOtlp
      ? {
          url: url ?? (protocol === 'grpc' ? DEFAULT_OTLP_GRPC : withMetricsPath(DEFAULT_OTLP_BASE)),
          protocol,
          headers: { ...allFromEnv(SETTINGS.header, env), ...Object.assign({}, ...(flags.header ?? [])) },
          timeoutMillis: Math.min(pick(flags.timeout, SETTINGS.timeout) ?? 10_000, exportTimeout),
        }
      : undefined,
    prometheus: flags.prometheus,
    console: flags.console === true,
    temporality: pick(flags.temporality, SETTINGS.temporality) ?? 'cumulative',
    exportIntervalMillis: interval,
    exportTimeoutMillis: exportTimeout,
    units: flags.units,
    include: flags.include ?? [],
    exclude: flags.exclude ?? [],
    vcpuAggregation: flags.vcpuAggregation ?? 'none',
    serviceName: pick(flags.serviceName, SETTINGS.serviceName) ?? resourceAttributes['service.name'] ?? DEFAULT_SERVICE_NAME,
    resourceAttributes,
    logLevel: flags.logLevel,
  };
}

function withMetricsPath(base: string): string {
  return base.endsWith('/') ? base + METRICS_PATH : `${base}/${METRICS_PATH}`;
}

/** The settings as a Markdown table (flag, variables, default, meaning), for the README. */
export function settingsTable(): string {
  const rows = (Object.values(SETTINGS) as Setting<unknown>[]).map(
    (s) => `| \`${s.flags}\` | ${s.env.map((name) => `\`${name}\``).join(', ')} | ${s.defaultText ?? ''} | ${s.description} |`,
  );
  return ['| flag | environment variables | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}
