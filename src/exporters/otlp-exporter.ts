/**
 * KvmOtlpMetricExporter: an OTLP metric exporter for any sdk-metrics setup, over http/protobuf,
 * http/json or gRPC, with the fast encoders in place of otlp-transformer's serializers and
 * everything else the official exporters' own: the same export delegates of
 * @opentelemetry/otlp-exporter-base and @opentelemetry/otlp-grpc-exporter-base (retries,
 * timeouts, headers or metadata, compression, concurrency limit, the OTEL_EXPORTER_OTLP_*
 * variables, the default endpoints) and the same temporality and aggregation selectors
 * (OTLPMetricExporterBase). Its requests carry the same bytes as the official exporter's.
 */
import type { ResourceMetrics, PushMetricExporter } from '@opentelemetry/sdk-metrics';
import { OTLPMetricExporterBase, type OTLPMetricExporterOptions } from '@opentelemetry/exporter-metrics-otlp-http';
import type { OTLPExporterNodeConfigBase } from '@opentelemetry/otlp-exporter-base';
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from '@opentelemetry/otlp-exporter-base/node-http';
import { type OTLPGRPCExporterConfigNode, convertLegacyOtlpGrpcOptions, createOtlpGrpcExportDelegate } from '@opentelemetry/otlp-grpc-exporter-base';
import {
  type IExportMetricsServiceResponse,
  type ISerializer,
  JsonMetricsSerializer,
  MetricsExporterMetricsHelper,
  ProtobufMetricsSerializer,
} from '@opentelemetry/otlp-transformer';
import type { MeterProvider } from '@opentelemetry/api';
import { OtlpJsonEncoder } from './otlp-json.js';
import { OtlpProtobufEncoder } from './otlp-protobuf.js';

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

export class KvmOtlpMetricExporter extends OTLPMetricExporterBase implements PushMetricExporter {
  readonly protocol: OtlpProtocol;
  readonly #serializer: EncoderSerializer;

  constructor(options: KvmOtlpMetricExporterOptions = {}) {
    const protocol = otlpProtocol(options);
    const json = protocol === 'http/json';
    const serializer = new EncoderSerializer(
      json ? new OtlpJsonEncoder() : new OtlpProtobufEncoder(),
      json ? JsonMetricsSerializer : ProtobufMetricsSerializer,
    );
    const delegate =
      protocol === 'grpc'
        ? createOtlpGrpcExportDelegate(
            convertLegacyOtlpGrpcOptions(options, 'METRICS'),
            serializer,
            'otlp_grpc_metric_exporter',
            MetricsExporterMetricsHelper,
            options.selfObsMeterProvider,
            GRPC_SERVICE,
            GRPC_PATH,
          )
        : createOtlpHttpExportDelegate(
            convertLegacyHttpOptions(options, 'METRICS', 'v1/metrics', { 'Content-Type': json ? 'application/json' : 'application/x-protobuf' }),
            serializer,
            'otlp_http_metric_exporter',
            MetricsExporterMetricsHelper,
            options.selfObsMeterProvider,
          );
    super(delegate, options);
    this.protocol = protocol;
    this.#serializer = serializer;
  }

  /** Exports as the official exporter does; the encoded bytes stay untouched until the export
   * is done (retries included), and the next export writes over them in place after that. */
  override export(metrics: ResourceMetrics, resultCallback: Parameters<PushMetricExporter['export']>[1]): void {
    const serializer = this.#serializer;
    serializer.last = undefined;
    let sent: Uint8Array | undefined;
    super.export(metrics, (result) => {
      if (sent !== undefined) serializer.encoder.release(sent);
      resultCallback(result);
    });
    sent = serializer.last;
  }
}
