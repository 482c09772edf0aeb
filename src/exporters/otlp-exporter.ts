/**
 * KvmOtlpMetricExporter: an OTLP metric exporter for any sdk-metrics setup, over http/protobuf,
 * http/json or gRPC, with the fast encoders in place of otlp-transformer's serializers and
 * everything else the official exporters' own: the same export delegates of
 * @opentelemetry/otlp-exporter-base and @opentelemetry/otlp-grpc-exporter-base (retries,
 * timeouts, headers or metadata, compression, concurrency limit, the OTEL_EXPORTER_OTLP_*
 * variables, the default endpoints) and the same temporality and aggregation selectors
 * (OTLPMetricExporterBase). Its requests carry the same bytes as the official exporter's.
 *
 * Those packages (transports, gRPC, otlp-transformer) are loaded when an exporter is made, not
 * when the package is imported: an application that only wants the producer pays for
 * sdk-metrics and nothing more (docs/performance.md, "What an import costs"). They are CommonJS,
 * so a synchronous require keeps the constructor synchronous and its errors where they were.
 */
import { createRequire } from 'node:module';
import type { ResourceMetrics, PushMetricExporter, InstrumentType, AggregationTemporality, AggregationOption, ScopeMetrics } from '@opentelemetry/sdk-metrics';
import type * as MetricsOtlpHttp from '@opentelemetry/exporter-metrics-otlp-http';
import type { OTLPMetricExporterBase, OTLPMetricExporterOptions } from '@opentelemetry/exporter-metrics-otlp-http';
import type { IOtlpExportDelegate, OTLPExporterNodeConfigBase } from '@opentelemetry/otlp-exporter-base';
import type * as OtlpHttp from '@opentelemetry/otlp-exporter-base/node-http';
import type * as OtlpGrpc from '@opentelemetry/otlp-grpc-exporter-base';
import type { OTLPGRPCExporterConfigNode } from '@opentelemetry/otlp-grpc-exporter-base';
import type * as OtlpTransformer from '@opentelemetry/otlp-transformer';
import type { IExportMetricsServiceResponse, ISerializer } from '@opentelemetry/otlp-transformer';
import type { MeterProvider } from '@opentelemetry/api';
import { OtlpJsonEncoder } from './otlp-json.js';
import { OtlpProtobufEncoder } from './otlp-protobuf.js';
import { OtlpFusedFrame } from './otlp-fused.js';
import type { FrameLayout, FramePairing } from '../otel/series-frame.js';

export const OTLP_PROTOCOLS = ['http/protobuf', 'http/json', 'grpc'] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

export interface KvmOtlpMetricExporterOptions extends OTLPMetricExporterOptions, Omit<OTLPExporterNodeConfigBase, 'compression'>, Omit<OTLPGRPCExporterConfigNode, 'compression'> {
  /** Default: OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf. */
  readonly protocol?: OtlpProtocol;
  readonly compression?: OTLPExporterNodeConfigBase['compression'];
  /** Self-observability metrics of the export delegate, as the official exporters take it. */
  readonly selfObsMeterProvider?: MeterProvider;
}

/** The encoders hold their last output until the export that sends it is done. */
interface Encoder {
  encode(request: ResourceMetrics): Uint8Array;
  release(bytes: Uint8Array): void;
}

/** OTLP protobuf: the paired producers' frames (otlp-fused.ts) for the requests that hold
 * their scope, the encoder for any other. */
class ProtobufEncoder implements Encoder {
  readonly plain = new OtlpProtobufEncoder();
  readonly frames: OtlpFusedFrame[] = [];

  encode(request: ResourceMetrics): Uint8Array {
    const last = request.scopeMetrics[request.scopeMetrics.length - 1];
    for (const frame of this.frames) if (frame.scope === last) return frame.encode(request);
    return this.plain.encode(request);
  }

  release(bytes: Uint8Array): void {
    this.plain.release(bytes);
    for (const frame of this.frames) frame.release(bytes);
  }
}

/** The encoder as an otlp-transformer serializer; remembers what it last returned. */
class EncoderSerializer implements ISerializer<ResourceMetrics, IExportMetricsServiceResponse> {
  last: Uint8Array | undefined;

  constructor(
    readonly encoder: Encoder,
    private readonly responses: ISerializer<ResourceMetrics, IExportMetricsServiceResponse>,
  ) {}

  serializeRequest(request: ResourceMetrics): Uint8Array {
    this.last = this.encoder.encode(request);
    return this.last;
  }

  deserializeResponse(data: Uint8Array): IExportMetricsServiceResponse {
    return this.responses.deserializeResponse(data);
  }
}

/** The protocol the options or the environment ask for; a RangeError for any other. */
export function otlpProtocol(options: { protocol?: string } = {}, env: Readonly<Record<string, string | undefined>> = process.env): OtlpProtocol {
  const asked = options.protocol ?? (env.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL?.trim() || env.OTEL_EXPORTER_OTLP_PROTOCOL?.trim() || 'http/protobuf');
  if (!(OTLP_PROTOCOLS as readonly string[]).includes(asked)) throw new RangeError(`OTLP protocol must be ${OTLP_PROTOCOLS.join(', ')}, not ${JSON.stringify(asked)}`);
  return asked as OtlpProtocol;
}

const GRPC_SERVICE = 'MetricsExportService';
const GRPC_PATH = '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export';

// Node's require, for the CommonJS packages above: loaded by the first exporter, cached after.
const require = createRequire(import.meta.url);

/**
 * Also the fused path's exporter: a KvmStatsProducer made with `pairedExporter: exporter` writes
 * its series straight into this exporter's request bytes (over http/protobuf and gRPC), and the
 * request still carries the same bytes as the official exporter's for what the plain producer
 * would have returned, the SDK's own metrics of the same reader included.
 */
export class KvmOtlpMetricExporter implements PushMetricExporter, FramePairing {
  readonly protocol: OtlpProtocol;
  readonly #serializer: EncoderSerializer;
  /** The official base class, with the delegate of the official exporters, does the rest. */
  readonly #base: OTLPMetricExporterBase;

  constructor(options: KvmOtlpMetricExporterOptions = {}) {
    const protocol = otlpProtocol(options);
    const json = protocol === 'http/json';
    const { OTLPMetricExporterBase } = require('@opentelemetry/exporter-metrics-otlp-http') as typeof MetricsOtlpHttp;
    const { JsonMetricsSerializer, MetricsExporterMetricsHelper, ProtobufMetricsSerializer } = require('@opentelemetry/otlp-transformer') as typeof OtlpTransformer;
    const serializer = new EncoderSerializer(
      json ? new OtlpJsonEncoder() : new ProtobufEncoder(),
      json ? JsonMetricsSerializer : ProtobufMetricsSerializer,
    );
    let delegate: IOtlpExportDelegate<ResourceMetrics>;
    if (protocol === 'grpc') {
      const { convertLegacyOtlpGrpcOptions, createOtlpGrpcExportDelegate } = require('@opentelemetry/otlp-grpc-exporter-base') as typeof OtlpGrpc;
      delegate = createOtlpGrpcExportDelegate(
        convertLegacyOtlpGrpcOptions(options, 'METRICS'),
        serializer,
        'otlp_grpc_metric_exporter',
        MetricsExporterMetricsHelper,
        options.selfObsMeterProvider,
        GRPC_SERVICE,
        GRPC_PATH,
      );
    } else {
      const { convertLegacyHttpOptions, createOtlpHttpExportDelegate } = require('@opentelemetry/otlp-exporter-base/node-http') as typeof OtlpHttp;
      delegate = createOtlpHttpExportDelegate(
        convertLegacyHttpOptions(options, 'METRICS', 'v1/metrics', { 'Content-Type': json ? 'application/json' : 'application/x-protobuf' }),
        serializer,
        'otlp_http_metric_exporter',
        MetricsExporterMetricsHelper,
        options.selfObsMeterProvider,
      );
    }
    this.#base = new OTLPMetricExporterBase(delegate, options);
    this.protocol = protocol;
    this.#serializer = serializer;
  }

  /** Exports as the official exporter does; the encoded bytes stay untouched until the export
   * is done (retries included), and the next export writes over them in place after that. */
  export(metrics: ResourceMetrics, resultCallback: Parameters<PushMetricExporter['export']>[1]): void {
    const serializer = this.#serializer;
    serializer.last = undefined;
    let sent: Uint8Array | undefined;
    this.#base.export(metrics, (result) => {
      if (sent !== undefined) serializer.encoder.release(sent);
      resultCallback(result);
    });
    sent = serializer.last;
  }

  /** For KvmStatsProducer's `pairedExporter` option: its frame, or undefined over http/json
   * (numbers there are text: the producer builds data points as usual). */
  pairProducer(scope: ScopeMetrics): FrameLayout | undefined {
    const encoder = this.#serializer.encoder;
    if (!(encoder instanceof ProtobufEncoder)) return undefined;
    const frame = new OtlpFusedFrame(scope, encoder.plain);
    encoder.frames.push(frame);
    return frame;
  }

  /** Points its frames' layouts have written from the paired producers' data points so far
   * (OtlpFusedFrame.stats.newPoints): the transient objects a layout leaves behind. */
  get newPoints(): number {
    const encoder = this.#serializer.encoder;
    let points = 0;
    if (encoder instanceof ProtobufEncoder) for (const frame of encoder.frames) points += frame.stats.newPoints;
    return points;
  }

  forceFlush(): Promise<void> {
    return this.#base.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.#base.shutdown();
  }

  /** OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE or the temporalityPreference option, as the official exporters read them. */
  selectAggregationTemporality(instrumentType: InstrumentType): AggregationTemporality {
    return this.#base.selectAggregationTemporality(instrumentType);
  }

  selectAggregation(instrumentType: InstrumentType): AggregationOption {
    return this.#base.selectAggregation(instrumentType);
  }
}
