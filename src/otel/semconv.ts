/**
 * Names this project puts on the wire, kept in one place. `process.pid` is the OpenTelemetry
 * semantic convention; the `kvm.*` names are this project's own.
 */

/** The process that owns the VM (semantic conventions: process.pid). */
export const ATTR_PROCESS_PID = 'process.pid';
/** The kernel's vCPU id (the N of "vcpu-N"): on x86 the APIC ID, which follows the CPU
 * topology and may have gaps, so it need not be the VMM's number of the vCPU. */
export const ATTR_KVM_VCPU_ID = 'kvm.vcpu.id';
/** The VMM's own number of the vCPU (QEMU's cpu-index, libvirt's vCPU N), where the VMM says it:
 * what joins with libvirt's vcpu.N.* and QEMU's query-cpus-fast. */
export const ATTR_KVM_VCPU_INDEX = 'kvm.vcpu.index';
/** The guest's name, where the VMM gives one (QEMU's -name). */
export const ATTR_KVM_VM_NAME = 'kvm.vm.name';
/** The VM's UUID, where the VMM was given one (QEMU's -uuid; libvirt's domain UUID): unlike
 * process.pid, the same across a restart. */
export const ATTR_KVM_VM_UUID = 'kvm.vm.uuid';

/** Metric names are this prefix plus the kernel's stat name: verbatim in exact units, without a
 * unit suffix that agrees with the stat's unit in base units (mapping.ts, metricNames). */
export const METRIC_PREFIX = { vm: 'kvm.vm.', vcpu: 'kvm.vcpu.' } as const;

/** The instrumentation scope of everything the producer and the instruments emit. */
export const SCOPE_NAME = 'kvm-stats-otel';
