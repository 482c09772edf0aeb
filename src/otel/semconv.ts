/**
 * Names this project puts on the wire, kept in one place. `process.pid` is the OpenTelemetry
 * semantic convention; the `kvm.*` names are this project's own.
 */

/** The process that owns the VM (semantic conventions: process.pid). */
export const ATTR_PROCESS_PID = 'process.pid';
/** The vCPU's index within its VM, as the kernel numbers it (the N of "vcpu-N"). */
export const ATTR_KVM_VCPU_ID = 'kvm.vcpu.id';
/** The guest's name, where the VMM gives one (QEMU's -name). */
export const ATTR_KVM_VM_NAME = 'kvm.vm.name';

/** Metric names are this prefix plus the kernel's stat name: verbatim in exact units, without a
 * unit suffix that agrees with the stat's unit in base units (mapping.ts, metricNames). */
export const METRIC_PREFIX = { vm: 'kvm.vm.', vcpu: 'kvm.vcpu.' } as const;

/** The instrumentation scope of everything the producer and the instruments emit. */
export const SCOPE_NAME = 'kvm-stats-otel';

/**
 * The agent's self-telemetry: its own scope and names, apart from the kernel's `kvm.*` stats,
 * so dashboards can tell "the VM did X" from "the agent did X".
 */
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
