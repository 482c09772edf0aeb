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
/** Which output's reader collected: "otlp", "prometheus" or "console" (each has its own producer). */
export const ATTR_AGENT_OUTPUT = 'kvm_stats_otel.output';
