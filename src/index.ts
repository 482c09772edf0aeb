/**
 * kvm-stats-otel: KVM binary statistics (KVM_GET_STATS_FD) as OpenTelemetry metrics.
 *
 * Two ways into an SDK, one read path:
 * - KvmStatsProducer, an sdk-metrics MetricProducer (every stat, histograms included);
 * - observeKvmStats, observable instruments on any Meter (counters and gauges).
 * Sources of stats fds: a VM made here (DemoVm), another process's (openProcessStats), a saved
 * image (openImageSource), or any fd you hold (StatsFile.open + statsSource); providers keep a
 * changing set open (ScanProvider: every VMM on the host; HandoverProvider: fds handed over on
 * a Unix socket), and sourcesOf(providers) feeds them to the producer.
 */
export { KvmStatsProducer, type KvmStatsProducerOptions, type SourceSet } from './otel/producer.js';
export { KvmStatsInstruments, observeKvmStats, type KvmStatsInstrumentsOptions } from './otel/instruments.js';
export { histogramBounds, mapStat, mapTable, type MetricKind, type MetricMapping, type TableMapping, type UnitMode } from './otel/mapping.js';
export { ATTR_KVM_VCPU_ID, ATTR_KVM_VM_NAME, ATTR_PROCESS_PID, METRIC_PREFIX, SCOPE_NAME } from './otel/semconv.js';
export {
  PROMETHEUS_CONTENT_TYPE,
  PrometheusTextExporter,
  type PrometheusTextExporterOptions,
} from './exporters/prometheus-exporter.js';
export { PrometheusTextSerializer, type PrometheusTextOptions } from './exporters/prometheus-text.js';
export { DemoVm, type DemoVmOptions } from './sources/demo.js';
export { openImageSource } from './sources/image.js';
export { openProcessStats, type ProcessStats } from './sources/pid.js';
export { closeSources, statsSource, type StatsOwner, type StatsSource } from './sources/source.js';
export {
  DemoProvider,
  ImageProvider,
  ProcessProvider,
  sourcesOf,
  type ProblemReporter,
  type SourceProvider,
} from './sources/provider.js';
export { ScanProvider, type ScanProviderOptions } from './sources/scan.js';
export { HandoverProvider, type HandoverProviderOptions } from './sources/handover.js';
export { StatsFile, StatsReadError, type StatsFileOptions } from './stats/stats-file.js';
export {
  LIMITS,
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
export { Kvm, VcpuFd, VmFd } from './native/kvm.js';
export { NativeError } from './native/errors.js';
