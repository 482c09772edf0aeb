/**
 * A lean import: importing the built package, in a fresh process, loads sdk-metrics' own files,
 * koffi and the package's own modules, and no OTLP transformer, transport or gRPC code; making a
 * KvmOtlpMetricExporter loads what its protocol needs, and only that. The files are those
 * scripts/import-probe.mjs sees (ES modules through a loader hook, CommonJS in require.cache).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/processes.js';

interface Probe {
  files: string[];
  exporterFiles?: string[];
}

function probe(specifier: string, exporter?: string): Probe {
  const args = [join(ROOT, 'scripts', 'import-probe.mjs'), specifier, '--files', ...(exporter ? ['--exporter', exporter] : [])];
  return JSON.parse(execFileSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' })) as Probe;
}

/** The packages files belong to; the package's own (dist/, package.json) is "kvm-stats-otel". */
function packages(files: readonly string[]): Set<string> {
  return new Set(files.map((file) => /.*node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file)?.[1] ?? (file.startsWith(`${ROOT}/`) ? 'kvm-stats-otel' : file)));
}

const OTLP_CODE = ['@opentelemetry/otlp-transformer', '@opentelemetry/otlp-exporter-base', '@opentelemetry/otlp-grpc-exporter-base', '@opentelemetry/exporter-metrics-otlp-http', '@grpc/grpc-js', 'protobufjs'];

describe('what an import of the package loads', () => {
  it('sdk-metrics\' own files, koffi and the package\'s modules, and nothing of OTLP', () => {
    const ours = packages(probe('kvm-stats-otel').files);
    const sdk = packages(probe('@opentelemetry/sdk-metrics').files);
    expect(ours).toContain('kvm-stats-otel');
    expect(sdk).toContain('@opentelemetry/sdk-metrics');
    // koffi's loader and its native build for this platform (@koromix/koffi-<os>-<arch>).
    const beyondSdk = [...ours].filter((name) => !sdk.has(name) && name !== 'kvm-stats-otel');
    expect(beyondSdk.filter((name) => name !== 'koffi' && !name.startsWith('@koromix/koffi-'))).toEqual([]);
    expect(beyondSdk).toContain('koffi');
    expect(OTLP_CODE.filter((name) => ours.has(name))).toEqual([]);
  });

  it('an OTLP/HTTP exporter loads the HTTP transport and the transformer, not gRPC', () => {
    const { files, exporterFiles } = probe('kvm-stats-otel', 'http/protobuf');
    expect(OTLP_CODE.filter((name) => packages(files).has(name))).toEqual([]);
    const loaded = packages(exporterFiles!);
    expect(loaded).toContain('@opentelemetry/otlp-transformer');
    expect(exporterFiles!.some((file) => file.includes('/otlp-exporter-base/build/src/transport/http-exporter-transport.js'))).toBe(true);
    expect(loaded).not.toContain('@opentelemetry/otlp-grpc-exporter-base');
    expect(loaded).not.toContain('@grpc/grpc-js');
  });

  it('an OTLP/gRPC exporter loads the gRPC exporter base', () => {
    const { exporterFiles } = probe('kvm-stats-otel', 'grpc');
    const loaded = packages(exporterFiles!);
    expect(loaded).toContain('@opentelemetry/otlp-grpc-exporter-base');
    expect(loaded).toContain('@opentelemetry/otlp-transformer');
  });
});
