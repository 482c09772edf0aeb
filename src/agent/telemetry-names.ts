/**
 * The agent's self-telemetry: its own scope and names, apart from the kernel's `kvm.*` stats
 * (otel/semconv.ts), so dashboards can tell "the VM did X" from "the agent did X".
 */
/** The instrumentation scope of the agent's own metrics. */
export const AGENT_SCOPE_NAME = 'kvm-stats-otel.agent';
/** Histogram, seconds: the time one producer takes to read every source and build its data points. */
export const METRIC_COLLECTION_DURATION = 'kvm_stats_otel.collection.duration';
/** Counter: stats fds read successfully, one per source per collection. */
export const METRIC_SOURCES_READ = 'kvm_stats_otel.sources.read';
/** Gauge: stats the open sources' descriptor tables carry that are not exported (type or unit this code does not know). */
export const METRIC_STATS_SKIPPED = 'kvm_stats_otel.stats.skipped';
/** Counter: reads of a stats fd that failed (an fd closed, an image truncated, a collection out of time). */
export const METRIC_READ_ERRORS = 'kvm_stats_otel.read.errors';
/** Counter: exports that failed (a push output's: the collector unreachable or refusing them). */
export const METRIC_EXPORT_FAILURES = 'kvm_stats_otel.export.failures';
/** Which output's reader collected: "otlp", "prometheus" or "console" (each has its own producer). */
export const ATTR_AGENT_OUTPUT = 'kvm_stats_otel.output';

/** Each of the agent's own metrics: what telemetry.ts creates, and what the mixin's alerts and
 * dashboards query (`kvm-stats-otel mixin`), from this one definition. */
export const SELF_TELEMETRY = [
  { name: METRIC_COLLECTION_DURATION, kind: 'histogram', unit: 's', description: 'Time one output\'s producer took to read every stats fd and build its data points.' },
  { name: METRIC_SOURCES_READ, kind: 'sum', unit: '{source}', description: 'Stats fds read successfully, one per source per collection.' },
  { name: METRIC_READ_ERRORS, kind: 'sum', unit: '{error}', description: 'Reads of a stats fd that failed, and collections that ran out of time.' },
  { name: METRIC_EXPORT_FAILURES, kind: 'sum', unit: '{failure}', description: 'Exports of a push output (OTLP) that failed; the data of each is dropped.' },
  { name: METRIC_STATS_SKIPPED, kind: 'gauge', unit: '{stat}', description: 'Stats in the open sources\' descriptor tables that are not exported (a type or unit this version does not know).' },
] as const;

/** The definition of one of SELF_TELEMETRY's metrics. */
export function selfMetric(name: (typeof SELF_TELEMETRY)[number]['name']): (typeof SELF_TELEMETRY)[number] {
  return SELF_TELEMETRY.find((metric) => metric.name === name)!;
}
