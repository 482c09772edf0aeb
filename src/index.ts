/**
 * kvm-stats-otel: KVM binary statistics (KVM_GET_STATS_FD) as OpenTelemetry metrics.
 *
 * The integration surface, and nothing below it: test/api.test.ts lists every name, so that a
 * change here is a deliberate one.
 *
 * Two ways into an SDK, one read path:
 * - KvmStatsProducer, an sdk-metrics MetricProducer (every stat, histograms included);
 * - observeKvmStats, observable instruments on any Meter (counters and gauges).
 * Sources of stats fds: one way in per kind, a provider that keeps its set open (DemoProvider: a
 * VM made here; ProcessProvider: another process's; ImageProvider: a saved image; ScanProvider:
 * every VMM on the host; HandoverProvider: fds handed over on a Unix socket), which
 * sourcesOf(providers) feeds to the producer; or any fd you hold (StatsFile.open + statsSource).
 */

// The two ways in, and the options they take.
export { KvmStatsProducer, type KvmStatsProducerOptions, type SourceSet } from './otel/producer.js';
// The class is what observeKvmStats returns (instrumentNames, close); it is made only there.
export { observeKvmStats, type KvmStatsInstruments, type KvmStatsInstrumentsOptions } from './otel/instruments.js';
export type { UnitMode } from './otel/mapping.js';
export type { VcpuAggregation } from './otel/aggregation.js';
// What KvmStatsProducer's pairedExporter option takes: KvmOtlpMetricExporter (the fused path).
export type { FramePairing } from './otel/series-frame.js';
// Names a View or a query filters on.
export { ATTR_KVM_VCPU_ID, ATTR_KVM_VCPU_INDEX, ATTR_KVM_VM_NAME, ATTR_KVM_VM_UUID, ATTR_PROCESS_PID, METRIC_PREFIX, SCOPE_NAME } from './otel/semconv.js';
// Outputs at the speed of the reads: the official transports with this package's encoders.
export { KvmOtlpMetricExporter, type KvmOtlpMetricExporterOptions, type OtlpProtocol } from './exporters/otlp-exporter.js';
export { PrometheusTextExporter, type PrometheusServingLimits, type PrometheusTextExporterOptions } from './exporters/prometheus-exporter.js';

// Sources: one open stats fd and who owns it.
// What DemoProvider's refresh throws where this host cannot make VMs, with why (no module, no vmx/svm, no permission).
export { KvmUnavailableError, type KvmUnavailableCause } from './sources/kvm-check.js';
export { closeSources, statsSource, type SourceAttributes, type StatsOwner, type StatsSource } from './sources/source.js';
// Each vCPU thread's scheduler time (kvm.vcpu.sched.*), for sources made by hand.
export { SchedstatFile, attachSchedstats } from './sources/schedstat.js';
// Providers, one per kind of source: a set of sources kept in step with the host.
export type { DemoVmOptions } from './sources/demo.js';
export {
  DemoProvider,
  ImageProvider,
  ProcessProvider,
  sourcesOf,
  type Problem,
  type ProblemKind,
  type ProblemReporter,
  type SourceProvider,
} from './sources/provider.js';
export { ScanProvider, type ScanProviderOptions } from './sources/scan.js';
export { HandoverProvider, type HandoverProviderOptions } from './sources/handover-receiver.js';

// Reading any stats fd you hold, and what it describes.
export { StatsFile, StatsReadError, type StatsFileOptions } from './stats/stats-file.js';
export {
  StatsImageError,
  type DescriptorTable,
  type SkippedStat,
  type StatBase,
  type StatDescriptor,
  type StatsHeader,
  type StatsTarget,
  type StatType,
  type StatUnit,
} from './stats/descriptors.js';
// Errors from the kernel carry the errno.
export { NativeError } from './native/errors.js';
