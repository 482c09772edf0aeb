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
