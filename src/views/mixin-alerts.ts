/**
 * The mixin's alerts, each with its runbook entry (mixin-runbook.ts) and its thresholds in the
 * config: a vCPU waiting for a host CPU (run delay, the guest's steal) above 10% for 15 minutes;
 * halt polling that burns CPU and mostly fails; an exit storm (a vCPU's exits far above its own
 * recent baseline); a VM whose vCPUs stopped exiting while it is still there (paused or wedged);
 * and the agent itself failing to read or export, or gone, from its own telemetry.
 */
import { type MixinCatalog, type MixinMetric, sumBy } from './mixin.js';
import type { RecordingRules } from './mixin-rules.js';

export type AlertingRule = {
  readonly alert: string;
  readonly expr: string;
  readonly for: string;
  readonly labels: { readonly severity: 'warning' | 'critical' | 'info' };
  readonly annotations: { readonly summary: string; readonly description: string; readonly runbook_url: string };
};

/** What the runbook says of an alert: what it means, what to check, what to do. */
export interface AlertRunbook {
  readonly means: string;
  readonly check: readonly string[];
  readonly act: readonly string[];
  /** The metrics it reads, for the runbook to show their meanings. */
  readonly metrics: readonly string[];
}

export interface AlertingRules {
  readonly groups: readonly { readonly name: string; readonly rules: readonly AlertingRule[] }[];
  readonly runbooks: ReadonlyMap<string, AlertRunbook>;
  readonly leftOut: readonly string[];
}

/** The runbook's anchor of an alert: its name in lower case, as Markdown headings get. */
export function runbookAnchor(alert: string): string {
  return alert.toLowerCase();
}

const percent = (ratio: number) => `${+(ratio * 100).toFixed(2)}%`;

export function alertingRules(catalog: MixinCatalog, rules: RecordingRules): AlertingRules {
  const { config } = catalog.input;
  const t = config.alerts;
  const { names } = rules;
  const vmOf = '{{ $labels.kvm_vm_name }} (pid {{ $labels.process_pid }}) on {{ $labels.instance }}';
  const vcpuOf = `vCPU {{ $labels.kvm_vcpu_id }} of VM ${vmOf}`;
  const runbooks = new Map<string, AlertRunbook>();
  const alerts: AlertingRule[] = [];
  const add = (rule: Omit<AlertingRule, 'annotations'> & { summary: string; description: string }, runbook: AlertRunbook) => {
    const { summary, description, ...rest } = rule;
    alerts.push({ ...rest, annotations: { summary, description, runbook_url: `${config.runbookUrl}#${runbookAnchor(rule.alert)}` } });
    runbooks.set(rule.alert, runbook);
  };
  const { runDelay, pollSuccess, pollFail, exits } = catalog.core();
  const [readErrors, exportFailures, sourcesRead] = ['read.errors', 'export.failures', 'sources.read'].map((name) => catalog.agent(`kvm_stats_otel.${name}`)) as [MixinMetric, MixinMetric, MixinMetric];
  const agent = [...config.hostLabels];

  add(
    {
      alert: 'KvmVcpuRunDelayHigh',
      expr: `${names.vcpuRunDelay} > ${t.runDelayRatio}`,
      for: t.runDelayFor,
      labels: { severity: 'warning' },
      summary: `A vCPU waits for a host CPU more than ${percent(t.runDelayRatio)} of the time.`,
      description: `${vcpuOf} was runnable but waiting for a host CPU {{ $value | humanizePercentage }} of the time over the last ${config.rateInterval} (the guest sees it as steal time).`,
    },
    {
      means: `The vCPU's thread was ready to run the guest but waited on a host run queue for more than ${percent(t.runDelayRatio)} of the time, for ${t.runDelayFor}: the guest lost that time (its steal time) and its work slowed down. The level operators use for steal.`,
      check: [
        'The host overview dashboard: is it one VM or every VM on the host (the host\'s mean run delay)?',
        'The host\'s CPU load and run queue (node_exporter: node_load1, node_pressure_cpu_waiting_seconds_total) against its CPUs.',
        'How many vCPUs the host runs against its CPUs (overcommit), and CPU pinning or cgroup CPU limits (cpu.max) on the VMM.',
        'Noisy neighbours: the VMs on the same host with the highest CPU time (kvm.vcpu.sched.cpu_time).',
      ],
      act: [
        'Move the VM, or its noisiest neighbours, to a host with spare CPUs; or lower the host\'s overcommit.',
        'Pin the vCPU threads of latency-sensitive VMs to dedicated CPUs, or raise the VMM cgroup\'s CPU share.',
      ],
      metrics: [runDelay.key],
    },
  );
  add(
    {
      alert: 'KvmVcpuHaltPollingWasted',
      expr: `${names.vcpuHaltPoll} > ${t.haltPollCpuRatio}\nand\n${names.vcpuHaltPollFailedRatio} > ${t.haltPollFailedRatio}`,
      for: t.haltPollFor,
      labels: { severity: 'warning' },
      summary: 'A vCPU burns host CPU polling in halt, and the polling mostly fails.',
      description: `${vcpuOf} spent {{ $value | humanizePercentage }} of a host CPU polling for wake-ups while halted, and more than ${percent(t.haltPollFailedRatio)} of that polling ended without one (the vCPU slept anyway).`,
    },
    {
      means: `When a guest halts, KVM polls for a wake-up for a while (halt_poll_ns) before it puts the vCPU to sleep. Successful polls save a sleep and a wake-up; failed ones are host CPU time spent for nothing. This vCPU polled more than ${percent(t.haltPollCpuRatio)} of a host CPU, and more than ${percent(t.haltPollFailedRatio)} of that time failed, for ${t.haltPollFor}.`,
      check: [
        'The VM dashboard\'s halt-polling panel (time that succeeded and failed per vCPU) and its halt-wait heatmap: wake-ups that come later than the polling window fail it.',
        'The host\'s halt_poll_ns (/sys/module/kvm/parameters/halt_poll_ns), halt_poll_ns_grow and halt_poll_ns_shrink, and the VM\'s own KVM_CAP_HALT_POLL setting where the VMM sets one.',
        'Whether the host is short of CPU (run delay alerts): polling takes CPU other vCPUs wait for.',
      ],
      act: [
        'Lower halt_poll_ns (host-wide) or the VM\'s halt-polling limit (KVM_CAP_HALT_POLL) so a vCPU gives up sooner; 0 turns polling off for VMs whose wake-ups come late.',
        'Or let the guest poll itself (guest haltpoll cpuidle driver) and turn host polling off for it.',
      ],
      metrics: [pollSuccess.key, pollFail.key],
    },
  );
  add(
    {
      alert: 'KvmVcpuExitStorm',
      expr: `${names.vcpuExits}\n  > ${t.exitStormFactor} * avg_over_time(${names.vcpuExits}[${t.exitStormBaseline}] offset ${t.exitStormBaselineOffset})\nand\n${names.vcpuExits} > ${t.exitStormMinRate}`,
      for: t.exitStormFor,
      labels: { severity: 'warning' },
      summary: 'A vCPU exits to the hypervisor far more often than it did.',
      description: `${vcpuOf} makes {{ $value | humanize }} VM exits per second, more than ${t.exitStormFactor} times its own average over the ${t.exitStormBaseline} before the last ${t.exitStormBaselineOffset}.`,
    },
    {
      means: `Every VM exit stops the guest while KVM (or the VMM) handles it. This vCPU exits more than ${t.exitStormFactor} times as often as its own baseline (its average over ${t.exitStormBaseline}, ${t.exitStormBaselineOffset} ago) and more than ${t.exitStormMinRate} times a second, for ${t.exitStormFor}: the guest changed what it does, or something makes it trap.`,
      check: [
        'The VM dashboard\'s exit reasons: which kind grew (I/O, MMIO, interrupt windows, halts, signals).',
        'MMIO or port I/O exits: a device emulated in the VMM that the guest hammers (a polling driver, a misconfigured device).',
        'Halt exits: a guest that wakes and halts in a tight loop (timer frequency, idle driver).',
        'The guest\'s own view: its interrupt rates and the workload started at that time.',
      ],
      act: [
        'Give the guest paravirtual devices (virtio) instead of emulated ones, or fix the guest driver that traps.',
        'If it is the workload, raise the baseline: it becomes the new normal after the baseline window.',
      ],
      metrics: [exits.key],
    },
  );
  add(
    {
      alert: 'KvmVmNotExiting',
      expr: `${names.vmExits} == 0`,
      for: t.vmNotExitingFor,
      labels: { severity: 'warning' },
      summary: 'A VM\'s vCPUs made no VM exit at all: it is paused or wedged.',
      description: `VM ${vmOf} is still there, but none of its vCPUs exited once in ${config.rateInterval}.`,
    },
    {
      means: `A running guest exits many times a second (timer interrupts at least), even when idle. No exit at all from any vCPU for ${t.vmNotExitingFor}, while the VM's stats fds are still read, means its vCPUs do not run: the VMM paused it (migration, snapshot, virsh suspend, a debugger) or is stuck.`,
      check: [
        'The VMM\'s state of the VM: virsh domstate, QEMU\'s query-status (paused, inmigrate, postmigrate, internal-error).',
        'The VMM process\'s state and its vCPU threads (ps -L, /proc/PID/task/TID/stack): blocked in the kernel, stopped (T), or looping in userspace.',
        'The host\'s kernel log around that time (soft lockups, KVM errors).',
      ],
      act: [
        'Resume a VM paused by mistake (virsh resume); let a migration finish or cancel it.',
        'A wedged VMM: collect its state (a core or a QEMU monitor dump) before restarting the VM.',
      ],
      metrics: [exits.key],
    },
  );
  add(
    {
      alert: 'KvmStatsAgentReadErrors',
      expr: `${sumBy(agent, `rate(${catalog.select(readErrors, [], readErrors.family.name, config.agentSelector)}[${config.rateInterval}])`)} > 0`,
      for: t.agentReadErrorsFor,
      labels: { severity: 'warning' },
      summary: 'The KVM stats agent fails to read stats fds.',
      description: `kvm-stats-otel on {{ $labels.instance }} failed {{ $value | humanize }} reads of a stats fd per second over the last ${config.rateInterval}: the series of those VMs have gaps.`,
    },
    {
      means: `The agent could not read some stats fds (an fd closed under it, a truncated image) or ran out of time collecting, at every collection for ${t.agentReadErrorsFor}. A VM that exits makes a read fail once; failures that go on mean series that stopped.`,
      check: [
        'The agent\'s log (JSON lines on stderr, journalctl -u kvm-stats-otel): its warnings name the failed fds and the first error.',
        'kvm-stats-otel list on the host: what the agent would read now.',
        'Its collection time (the host overview\'s agent panel) against the export timeout.',
      ],
      act: [
        'Restart the agent if fds it holds went bad; it opens every VM\'s fds afresh.',
        'A collection out of time: raise --export-timeout, or read fewer stats (--exclude \'vcpu:*_hist\', --vcpu-aggregation vm).',
      ],
      metrics: [readErrors.key],
    },
  );
  add(
    {
      alert: 'KvmStatsAgentExportFailing',
      expr: `${sumBy(agent, `increase(${catalog.select(exportFailures, [], exportFailures.family.name, config.agentSelector)}[${t.agentExportFailuresWindow}])`)} > 0`,
      for: t.agentExportFailuresFor,
      labels: { severity: 'warning' },
      summary: 'The KVM stats agent fails to export.',
      description: `kvm-stats-otel on {{ $labels.instance }} failed {{ $value | humanize }} exports in the last ${t.agentExportFailuresWindow}; the data of each failed export is dropped.`,
    },
    {
      means: `The agent's OTLP exports failed (the collector unreachable or refusing them) within ${t.agentExportFailuresWindow}. An OTLP agent's count reaches Prometheus with the next export that works, so this fires once exports work again, or at once where the agent is also scraped; an agent that cannot export at all shows as KvmStatsAgentAbsent.`,
      check: [
        'The agent\'s log: every failed export is logged with its reason ("export to ... failed: ...").',
        'The collector: is it up, does it listen at the endpoint the agent uses (OTEL_EXPORTER_OTLP_ENDPOINT, --endpoint), does it refuse the data (its own logs and otelcol_receiver_refused_metric_points)?',
      ],
      act: [
        'Fix the endpoint or the collector; cumulative values come back whole with the next export, only resolution is lost.',
      ],
      metrics: [exportFailures.key],
    },
  );
  const present = sumBy(agent, catalog.select(sourcesRead, [], sourcesRead.family.name, config.agentSelector), 'count');
  add(
    {
      alert: 'KvmStatsAgentAbsent',
      expr: `${sumBy(agent, `max_over_time(${catalog.select(sourcesRead, [], sourcesRead.family.name, config.agentSelector)}[${t.agentAbsentWindow}])`, 'count')}\nunless\n${present}`,
      for: t.agentAbsentFor,
      labels: { severity: 'critical' },
      summary: 'The KVM stats agent stopped reporting.',
      description: `kvm-stats-otel on {{ $labels.instance }} reported within the last ${t.agentAbsentWindow} and no longer does: no KVM stats arrive from that host.`,
    },
    {
      means: `The agent's own telemetry (${sourcesRead.family.name}, written at every collection) was there within ${t.agentAbsentWindow} and is gone: the agent stopped, Prometheus cannot scrape it (up == 0), or its OTLP exports no longer arrive. Every KVM series of that host is gone with it. It fires for up to ${t.agentAbsentWindow} after the agent went.`,
      check: [
        'The agent\'s service: systemctl status kvm-stats-otel, or its DaemonSet pod on that node (kubectl -n kvm-stats-otel get pods -o wide).',
        'Scraped: the target on Prometheus\' targets page (up, the scrape error). Through a collector: the collector\'s logs and the agent\'s export failures.',
        'The agent\'s last log lines: a start-up error says what failed and which flag fixes it (exit code 1 or 2).',
      ],
      act: ['Restart the agent; fix the setting its log names; check the host still runs VMs (with --scan the agent also runs with none).'],
      metrics: [sourcesRead.key],
    },
  );
  return { groups: [{ name: 'kvm-stats.alerts', rules: alerts }], runbooks, leftOut: [] };
}
