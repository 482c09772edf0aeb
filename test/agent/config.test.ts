/** The agent's configuration: standard variables, flags over variables, and one-line errors. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type AgentFlags, ConfigError, SETTINGS, keyValueList, resolveConfig } from '../../src/agent/config.js';
import { settingsTable } from '../../src/cli/flags.js';
import { ROOT } from '../helpers/processes.js';

const FLAGS: AgentFlags = { demo: 2, units: 'exact', logLevel: 'info' };

function usageError(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('no ConfigError');
}

describe('resolveConfig', () => {
  it('defaults: OTLP http/protobuf to localhost:4318 every 60 s, cumulative, service.name kvm-stats-otel', () => {
    expect(resolveConfig(FLAGS, {})).toEqual({
      sources: { demo: 2, pid: undefined, file: undefined, scan: undefined, listen: undefined },
      otlp: { url: 'http://localhost:4318/v1/metrics', protocol: 'http/protobuf', headers: {}, timeoutMillis: 10_000 },
      prometheus: undefined,
      console: false,
      temporality: 'cumulative',
      exportIntervalMillis: 60_000,
      rescanIntervalMillis: 60_000,
      exportTimeoutMillis: 30_000,
      units: 'exact',
      include: [],
      exclude: [],
      vcpuAggregation: 'none',
      serviceName: 'kvm-stats-otel',
      resourceAttributes: {},
      logLevel: 'info',
    });
  });

  it('reads the standard variables, the signal-specific ones first', () => {
    const config = resolveConfig(FLAGS, {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/base',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_HEADERS: 'a=general,b=general',
      OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'b=specific,c=x%20y',
      OTEL_EXPORTER_OTLP_TIMEOUT: '4000',
      OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'Delta',
      OTEL_METRIC_EXPORT_INTERVAL: '5000',
      OTEL_METRIC_EXPORT_TIMEOUT: '',
      OTEL_SERVICE_NAME: 'hypervisors',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=prod,service.name=ignored',
    });
    expect(config.otlp).toEqual({
      url: 'http://collector:4318/base/v1/metrics',
      protocol: 'http/json',
      headers: { a: 'general', b: 'specific', c: 'x y' },
      timeoutMillis: 4000,
    });
    expect(config.temporality).toBe('delta');
    // An empty variable counts as unset; the default timeout is clamped to the interval.
    expect([config.exportIntervalMillis, config.exportTimeoutMillis]).toEqual([5000, 5000]);
    expect(config.serviceName).toBe('hypervisors');
    expect(config.resourceAttributes).toEqual({ 'deployment.environment': 'prod', 'service.name': 'ignored' });
    // The metrics endpoint variable is used as is.
    expect(resolveConfig(FLAGS, { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'https://c:4318/custom' }).otlp!.url).toBe('https://c:4318/custom');
    // service.name from OTEL_RESOURCE_ATTRIBUTES when OTEL_SERVICE_NAME is not set.
    expect(resolveConfig(FLAGS, { OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attributes' }).serviceName).toBe('from-attributes');
  });

  it('lets every flag override its variable', () => {
    const env = {
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://from-env:4318/v1/metrics',
      OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'a=env,b=env',
      OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: '4000',
      OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'delta',
      OTEL_METRIC_EXPORT_INTERVAL: '5000',
      OTEL_METRIC_EXPORT_TIMEOUT: '5000',
      OTEL_SERVICE_NAME: 'env',
      OTEL_RESOURCE_ATTRIBUTES: 'a=env,b=env',
    };
    const config = resolveConfig(
      {
        ...FLAGS,
        endpoint: 'http://from-flag:4318',
        protocol: 'http/protobuf',
        header: [{ a: 'flag' }],
        timeout: 1000,
        temporality: 'cumulative',
        interval: 2000,
        exportTimeout: 1500,
        serviceName: 'flag',
        resourceAttributes: { b: 'flag' },
      },
      env,
    );
    expect(config.otlp).toEqual({ url: 'http://from-flag:4318/v1/metrics', protocol: 'http/protobuf', headers: { a: 'flag', b: 'env' }, timeoutMillis: 1000 });
    expect([config.temporality, config.exportIntervalMillis, config.exportTimeoutMillis, config.serviceName]).toEqual(['cumulative', 2000, 1500, 'flag']);
    expect(config.resourceAttributes).toEqual({ a: 'env', b: 'flag' });
  });

  it('makes OTLP an output when asked, when an endpoint is set, or when nothing else is', () => {
    const prometheus = { host: undefined, port: 9464 };
    expect(resolveConfig({ ...FLAGS, prometheus }, {}).otlp).toBeUndefined();
    expect(resolveConfig({ ...FLAGS, console: true }, {}).otlp).toBeUndefined();
    expect(resolveConfig({ ...FLAGS, console: true, otlp: true }, {}).otlp?.url).toBe('http://localhost:4318/v1/metrics');
    expect(resolveConfig({ ...FLAGS, prometheus }, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }).otlp?.url).toBe('http://c:4318/v1/metrics');
  });

  it('takes grpc from the flag or either variable, with the endpoint as the collector\'s address', () => {
    expect(resolveConfig(FLAGS, { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }).otlp).toMatchObject({ protocol: 'grpc', url: 'http://localhost:4317' });
    expect(resolveConfig(FLAGS, { OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }).otlp?.protocol).toBe('grpc');
    expect(resolveConfig({ ...FLAGS, protocol: 'grpc' }, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' }).otlp?.url).toBe('http://c:4317/');
    expect(resolveConfig({ ...FLAGS, protocol: 'grpc', endpoint: 'http://d:4317' }, {}).otlp?.url).toBe('http://d:4317');
    expect(resolveConfig({ ...FLAGS, protocol: 'http/json' }, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }).otlp?.url).toBe('http://c:4318/v1/metrics');
  });

  it('rejects a bad variable with a UsageError naming it and saying what is expected', () => {
    expect(usageError(() => resolveConfig(FLAGS, { OTEL_METRIC_EXPORT_INTERVAL: 'often' }))).toBe(
      'OTEL_METRIC_EXPORT_INTERVAL="often" is not valid: expected a whole number of milliseconds from 1 to 2147483647',
    );
    expect(usageError(() => resolveConfig(FLAGS, { OTEL_EXPORTER_OTLP_PROTOCOL: 'udp' }))).toBe('OTEL_EXPORTER_OTLP_PROTOCOL="udp" is not valid: expected http/protobuf, http/json or grpc');
    expect(usageError(() => resolveConfig(FLAGS, { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }))).toMatch(/^OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318" is not valid: expected an http/);
    expect(usageError(() => resolveConfig(FLAGS, { OTEL_RESOURCE_ATTRIBUTES: 'a=1,oops' }))).toBe(
      'OTEL_RESOURCE_ATTRIBUTES="a=1,oops" is not valid: expected key=value pairs separated by commas, got "oops"',
    );
    expect(usageError(() => resolveConfig(FLAGS, { OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'sometimes' }))).toMatch(/expected cumulative, delta or lowmemory$/);
    // Checked even when a flag overrides it: a broken variable is a mistake worth hearing about.
    expect(usageError(() => resolveConfig({ ...FLAGS, interval: 1000 }, { OTEL_METRIC_EXPORT_INTERVAL: '-1' }))).toMatch(/^OTEL_METRIC_EXPORT_INTERVAL="-1"/);
    expect(usageError(() => resolveConfig(FLAGS, { OTEL_METRIC_EXPORT_INTERVAL: '1000', OTEL_METRIC_EXPORT_TIMEOUT: '2000' }))).toBe(
      'the export timeout (2000 ms) must not be longer than the export interval (1000 ms)',
    );
  });
});

describe('keyValueList', () => {
  it('parses percent-encoded pairs and skips empty items', () => {
    expect(keyValueList(' a = 1 ,, b=x%2Cy%3Dz ,c=')).toEqual({ a: '1', b: 'x,y=z', c: '' });
    expect(() => keyValueList('=1')).toThrow('expected key=value pairs separated by commas, got "=1"');
    expect(() => keyValueList('a=%E0%A4%A')).toThrow('the value of a is not valid percent-encoding');
  });
});

describe('docs/agent.md', () => {
  it('lists every setting as the code defines it', () => {
    const doc = readFileSync(join(ROOT, 'docs', 'agent.md'), 'utf8');
    expect(doc).toContain(settingsTable());
    for (const setting of Object.values(SETTINGS)) for (const name of setting.env) expect(doc).toContain(name);
  });
});
