/**
 * The agent's OTLP protobuf cycle as the bench times it: one collection of a reader that holds
 * the KVM producer beside a meter provider's own instruments (as the agent's self-telemetry is
 * collected into the same request), and that request's body as the agent's exporter writes it,
 * without the network: the producer paired with the exporter's frame (the fused path,
 * exporters/otlp-fused.ts), as src/agent/outputs.ts and run-loop.ts pair them, so that the
 * bench's "agent cycle" stage measures what the agent does.
 */
import { AggregationTemporality, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { FrameOnly } from '../exporters/otlp-fused.js';
import type { VcpuAggregation } from '../otel/aggregation.js';
import type { UnitMode } from '../otel/mapping.js';
import { KvmStatsProducer, type SourceSet } from '../otel/producer.js';

export interface ProtobufCycleOptions {
  readonly sources: SourceSet;
  readonly units?: UnitMode;
  readonly temporality?: AggregationTemporality;
  readonly vcpuAggregation?: VcpuAggregation;
}

export interface ProtobufCycle {
  /** One collection and its request body; returns the body's bytes. */
  run(): Promise<number>;
  shutdown(): Promise<void>;
}

/** A reader that only collects when asked. */
class CycleReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

export function protobufCycle(options: ProtobufCycleOptions): ProtobufCycle {
  const temporality = options.temporality ?? AggregationTemporality.CUMULATIVE;
  const pairing = new FrameOnly();
  const producer = new KvmStatsProducer({ sources: options.sources, units: options.units, temporality, vcpuAggregation: options.vcpuAggregation, pairedExporter: pairing });
  const frame = pairing.frame!;
  const reader = new CycleReader({ metricProducers: [producer], aggregationTemporalitySelector: () => temporality });
  const provider = new MeterProvider({ readers: [reader] });
  // One SDK instrument, as the agent's self-telemetry adds its own beside the producer's.
  const cycles = provider.getMeter('kvm-stats-otel-bench').createCounter('bench.cycles');
  return {
    async run() {
      cycles.add(1);
      const { resourceMetrics, errors } = await reader.collect();
      if (errors.length > 0) throw new Error(`collecting the fleet failed: ${String(errors[0])}`);
      const bytes = frame.encode(resourceMetrics);
      frame.release(bytes);
      return bytes.length;
    },
    shutdown: () => provider.shutdown(),
  };
}
