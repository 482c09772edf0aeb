/**
 * KvmOtlpMetricExporter against a real OTLP receiver (@elastic/mockotlpserver, HTTP and gRPC,
 * on free ports of 127.0.0.1): per protocol, what the receiver decodes from our export equals
 * what it decodes from the official exporter's export of the same collections (a real producer
 * and SDK instruments), and holds the producer's series.
 */
import { OTLPMetricExporter as OfficialGrpc } from '@opentelemetry/exporter-metrics-otlp-grpc';
import { OTLPMetricExporter as OfficialJson } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPMetricExporter as OfficialProto } from '@opentelemetry/exporter-metrics-otlp-proto';
import type { PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { MockOtlpServer } from '@elastic/mockotlpserver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvmOtlpMetricExporter, otlpProtocol } from '../../src/exporters/otlp-exporter.js';
import { describeKvm } from '../helpers/kvm.js';
import { collectMixed, mixedSetup } from '../helpers/mixed-collection.js';

const EXPORT_SUCCESS = 0;

function exportOnce(exporter: PushMetricExporter, metrics: ResourceMetrics): Promise<void> {
  return new Promise((resolve, reject) => {
    exporter.export(metrics, (result) => (result.code === EXPORT_SUCCESS ? resolve() : reject(result.error ?? new Error(`export failed with code ${result.code}`))));
  });
}

describe('otlpProtocol', () => {
  it('takes the option, else the metrics variable, else the general one, else http/protobuf', () => {
    expect(otlpProtocol({ protocol: 'grpc' }, { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })).toBe('grpc');
    expect(otlpProtocol({}, { OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })).toBe('grpc');
    expect(otlpProtocol({}, { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })).toBe('http/json');
    expect(otlpProtocol({}, {})).toBe('http/protobuf');
    expect(() => otlpProtocol({}, { OTEL_EXPORTER_OTLP_PROTOCOL: 'udp' })).toThrow(/http\/protobuf, http\/json, grpc, not "udp"/);
  });
});

describeKvm('KvmOtlpMetricExporter against a real OTLP receiver', () => {
  let server: MockOtlpServer;
  const received: unknown[] = [];

  beforeAll(async () => {
    server = new MockOtlpServer({
      logLevel: 'warn',
      services: ['http', 'grpc'],
      httpHostname: '127.0.0.1',
      httpPort: 0,
      grpcHostname: '127.0.0.1',
      grpcPort: 0,
      onMetrics: (request: unknown) => received.push(request),
    });
    await server.start();
  });

  afterAll(async () => {
    await server?.close();
  });

  /** The next request the receiver decodes (it decodes after answering). */
  async function nextReceived(): Promise<unknown> {
    for (let i = 0; i < 500 && received.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(received.length).toBe(1);
    return received.shift();
  }

  const cases = [
    { protocol: 'http/protobuf' as const, official: (url: string) => new OfficialProto({ url }) },
    { protocol: 'http/json' as const, official: (url: string) => new OfficialJson({ url }) },
    { protocol: 'grpc' as const, official: (url: string) => new OfficialGrpc({ url }) },
  ];
  for (const { protocol, official } of cases) {
    it(`sends over ${protocol} what the official exporter sends`, async () => {
      const url = protocol === 'grpc' ? server.grpcUrl!.href : new URL('v1/metrics', server.httpUrl!).href;
      const ours = new KvmOtlpMetricExporter({ protocol, url });
      const theirs = official(url);
      const setup = await mixedSetup(true);
      try {
        expect(ours.protocol).toBe(protocol);
        for (let collection = 0; collection < 4; collection++) {
          const metrics = await collectMixed(setup, collection);
          await exportOnce(ours, metrics);
          const ourRequest = await nextReceived();
          await exportOnce(theirs, metrics);
          const theirRequest = await nextReceived();
          expect(ourRequest).toEqual(theirRequest);
          const names = JSON.stringify(ourRequest);
          expect(names).toContain('kvm.vcpu.exits');
          expect(names).toContain('app.requests');
        }
      } finally {
        await setup.close();
        await ours.shutdown();
        await theirs.shutdown();
      }
    });
  }
});
