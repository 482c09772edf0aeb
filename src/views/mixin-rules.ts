/**
 * The mixin's recording rules: what the dashboards and alerts read, computed once per
 * evaluation. Per vCPU, then per VM and per host: exit rates, halt exits, run delay as a share
 * of time (the guest's steal), halt-polling time and the share of it that failed (time burnt
 * polling before the vCPU slept anyway: the kernel counts the two apart since the commit that
 * added halt_poll_success_ns and halt_poll_fail_ns), and halt-wait p50/p99 from the kernel's
 * histogram buckets. Every result is in seconds or per second whatever the unit mode. Named
 * level:metric:operations, as Prometheus' conventions for recording rules say.
 */
import { type MixinCatalog, inSeconds, levels, sumBy } from './mixin.js';

export type RecordingRule = {
  readonly record: string;
  readonly expr: string;
};

/** The names of the recorded series the alerts and dashboards use; undefined where the kernel
 * lacks what one needs. */
export interface RecordedNames {
  readonly vcpuExits: string;
  readonly vcpuHaltExits?: string | undefined;
  readonly vcpuRunDelay: string;
  readonly vcpuCpuTime: string;
  readonly vcpuHaltPoll: string;
  readonly vcpuHaltPollFailed: string;
  readonly vcpuHaltPollFailedRatio: string;
  readonly vmExits: string;
  readonly vmHaltExits?: string | undefined;
  readonly vmRunDelay: string;
  readonly vmHaltPoll: string;
  readonly vmHaltPollFailed: string;
  readonly vmHaltPollFailedRatio: string;
  readonly vmHaltWaitP50: string;
  readonly vmHaltWaitP99: string;
  readonly hostExits: string;
  readonly hostRunDelay: string;
  readonly hostHaltPollFailed: string;
}

export interface RecordingRules {
  readonly groups: readonly { readonly name: string; readonly rules: readonly RecordingRule[] }[];
  readonly names: RecordedNames;
  readonly leftOut: readonly string[];
}

export function recordingRules(catalog: MixinCatalog): RecordingRules {
  const { config } = catalog.input;
  const window = config.rateInterval;
  const rate = `rate${window}`;
  const at = levels(config);
  const names: RecordedNames = {
    vcpuExits: `kvm_vcpu:exits:${rate}`,
    vcpuHaltExits: catalog.has('vcpu:halt_exits') ? `kvm_vcpu:halt_exits:${rate}` : undefined,
    vcpuRunDelay: `kvm_vcpu:run_delay:ratio_${rate}`,
    vcpuCpuTime: `kvm_vcpu:cpu_time:ratio_${rate}`,
    vcpuHaltPoll: `kvm_vcpu:halt_poll_seconds:${rate}`,
    vcpuHaltPollFailed: `kvm_vcpu:halt_poll_failed_seconds:${rate}`,
    vcpuHaltPollFailedRatio: `kvm_vcpu:halt_poll_failed:ratio_${rate}`,
    vmExits: `kvm_vm:exits:${rate}`,
    vmHaltExits: catalog.has('vcpu:halt_exits') ? `kvm_vm:halt_exits:${rate}` : undefined,
    vmRunDelay: `kvm_vm:run_delay:ratio_${rate}`,
    vmHaltPoll: `kvm_vm:halt_poll_seconds:${rate}`,
    vmHaltPollFailed: `kvm_vm:halt_poll_failed_seconds:${rate}`,
    vmHaltPollFailedRatio: `kvm_vm:halt_poll_failed:ratio_${rate}`,
    vmHaltWaitP50: `kvm_vm:halt_wait_seconds:p50_${rate}`,
    vmHaltWaitP99: `kvm_vm:halt_wait_seconds:p99_${rate}`,
    hostExits: `kvm_host:exits:${rate}`,
    hostRunDelay: `kvm_host:run_delay:ratio_${rate}`,
    hostHaltPollFailed: `kvm_host:halt_poll_failed_seconds:${rate}`,
  };
  const { exits, runDelay, cpuTime, pollSuccess, pollFail, haltWait } = catalog.core();
  /** rate() of a metric's series, in seconds per second where it is a time. */
  const rateOf = (metric: typeof exits) => inSeconds(`rate(${catalog.select(metric)}[${window}])`, metric);
  const vcpu: RecordingRule[] = [
    { record: names.vcpuExits, expr: sumBy(at.vcpu, rateOf(exits)) },
    ...(names.vcpuHaltExits ? [{ record: names.vcpuHaltExits, expr: sumBy(at.vcpu, rateOf(catalog.get('vcpu:halt_exits'))) }] : []),
    { record: names.vcpuRunDelay, expr: sumBy(at.vcpu, rateOf(runDelay)) },
    { record: names.vcpuCpuTime, expr: sumBy(at.vcpu, rateOf(cpuTime)) },
    { record: names.vcpuHaltPoll, expr: sumBy(at.vcpu, `${rateOf(pollSuccess)} + ${rateOf(pollFail)}`) },
    { record: names.vcpuHaltPollFailed, expr: sumBy(at.vcpu, rateOf(pollFail)) },
    // NaN where the vCPU did not poll at all: no share to speak of, and no alert.
    { record: names.vcpuHaltPollFailedRatio, expr: `${names.vcpuHaltPollFailed} / ${names.vcpuHaltPoll}` },
  ];
  const quantile = (q: number) =>
    inSeconds(`histogram_quantile(${q}, ${sumBy([...at.vm, 'le'], `rate(${catalog.buckets(haltWait)}[${window}])`)})`, haltWait);
  const vm: RecordingRule[] = [
    { record: names.vmExits, expr: sumBy(at.vm, names.vcpuExits) },
    ...(names.vmHaltExits && names.vcpuHaltExits ? [{ record: names.vmHaltExits, expr: sumBy(at.vm, names.vcpuHaltExits) }] : []),
    // The mean over the VM's vCPUs: one starved vCPU shows in the vCPU rule and the alert.
    { record: names.vmRunDelay, expr: sumBy(at.vm, names.vcpuRunDelay, 'avg') },
    { record: names.vmHaltPoll, expr: sumBy(at.vm, names.vcpuHaltPoll) },
    { record: names.vmHaltPollFailed, expr: sumBy(at.vm, names.vcpuHaltPollFailed) },
    { record: names.vmHaltPollFailedRatio, expr: `${names.vmHaltPollFailed} / ${names.vmHaltPoll}` },
    { record: names.vmHaltWaitP50, expr: quantile(0.5) },
    { record: names.vmHaltWaitP99, expr: quantile(0.99) },
  ];
  const host: RecordingRule[] = [
    { record: names.hostExits, expr: sumBy(at.host, names.vmExits) },
    { record: names.hostRunDelay, expr: sumBy(at.host, names.vcpuRunDelay, 'avg') },
    { record: names.hostHaltPollFailed, expr: sumBy(at.host, names.vcpuHaltPollFailed) },
  ];
  return {
    // One group: Prometheus evaluates a group's rules in order, so each level reads the one
    // before it from the same evaluation.
    groups: [{ name: 'kvm-stats.rules', rules: [...vcpu, ...vm, ...host] }],
    names,
    leftOut: names.vcpuHaltExits ? [] : ['halt exits (the kernel has no halt_exits stat): their rules and panels'],
  };
}
