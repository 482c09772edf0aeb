/**
 * The mixin's Grafana dashboards, in Grafana's classic dashboard JSON model (GRAFANA, below):
 * a host overview (VMs, vCPUs, exits/s, steal, halt-polling waste, the top VMs, the agent itself)
 * and a VM view (each vCPU, exit reasons, halt polling, the halt-wait distribution as a heatmap
 * over time). Each panel's description is the meaning of the stats it shows. The data source is
 * a variable (`${datasource}`, any Prometheus): no data source uid is written in.
 */
import { type MixinCatalog, type MixinMetric, inSeconds, levels, sumBy } from './mixin.js';
import type { RecordingRules } from './mixin-rules.js';

/** The Grafana the JSON is written for, and its schema version (Grafana migrates older ones
 * forward on import, so any newer Grafana reads it too). */
export const GRAFANA = { version: '11.0.0', schemaVersion: 39 } as const;

type Json = string | number | boolean | null | readonly Json[] | { readonly [key: string]: Json };

export interface Dashboard {
  readonly file: string;
  readonly json: { readonly [key: string]: Json };
  readonly leftOut: readonly string[];
}

const DATASOURCE = { type: 'prometheus', uid: '${datasource}' } as const;

interface Target {
  readonly expr: string;
  readonly legend?: string;
  /** Instant, for stats and tables; format heatmap for a heatmap's buckets. */
  readonly instant?: boolean;
  readonly format?: 'time_series' | 'table' | 'heatmap';
}

interface PanelSpec {
  readonly type: 'timeseries' | 'stat' | 'heatmap' | 'table';
  readonly title: string;
  readonly description: string;
  readonly unit: string;
  readonly targets: readonly Target[];
  readonly w: number;
  readonly h: number;
  readonly stack?: boolean;
}

/** A panel's description: what it shows, then each metric's meaning. */
function described(what: string, metrics: readonly MixinMetric[]): string {
  const meanings = metrics.map((m) => `${m.otel} (${m.family.name}): ${m.meaning}`);
  return [what, ...meanings].join('\n\n');
}

function panelJson(spec: PanelSpec, id: number, x: number, y: number): { [key: string]: Json } {
  const targets = spec.targets.map((target, i) => ({
    datasource: DATASOURCE,
    expr: target.expr,
    legendFormat: target.legend ?? '__auto',
    refId: String.fromCharCode(65 + i),
    range: !target.instant,
    instant: target.instant === true,
    ...(target.format ? { format: target.format } : {}),
  }));
  const base = {
    id,
    type: spec.type,
    title: spec.title,
    description: spec.description,
    datasource: DATASOURCE,
    gridPos: { h: spec.h, w: spec.w, x, y },
    targets,
  };
  switch (spec.type) {
    case 'stat':
      return {
        ...base,
        fieldConfig: { defaults: { unit: spec.unit, color: { mode: 'thresholds' }, thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }] } }, overrides: [] },
        options: { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'value', graphMode: 'area', justifyMode: 'auto', orientation: 'auto', textMode: 'auto' },
      };
    case 'heatmap':
      return {
        ...base,
        fieldConfig: { defaults: { custom: { hideFrom: { legend: false, tooltip: false, viz: false }, scaleDistribution: { type: 'linear' } } }, overrides: [] },
        options: {
          calculate: false,
          cellGap: 1,
          color: { mode: 'scheme', scheme: 'Oranges', fill: 'dark-orange', scale: 'exponential', exponent: 0.5, steps: 64, reverse: false },
          exemplars: { color: 'rgba(255,0,255,0.7)' },
          legend: { show: true },
          rowsFrame: { layout: 'auto' },
          tooltip: { mode: 'single', showColorScale: false, yHistogram: true },
          yAxis: { axisPlacement: 'left', reverse: false, unit: spec.unit },
        },
      };
    case 'table':
      return {
        ...base,
        fieldConfig: { defaults: { unit: spec.unit, custom: { align: 'auto', cellOptions: { type: 'auto' } } }, overrides: [] },
        options: { showHeader: true, cellHeight: 'sm', footer: { show: false, reducer: ['sum'], fields: '' } },
        transformations: [{ id: 'merge', options: {} }],
      };
    default:
      return {
        ...base,
        fieldConfig: {
          defaults: {
            unit: spec.unit,
            custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: spec.stack ? 60 : 10, showPoints: 'never', spanNulls: false, stacking: { mode: spec.stack ? 'normal' : 'none', group: 'A' } },
          },
          overrides: [],
        },
        options: { legend: { displayMode: 'table', placement: 'right', showLegend: true, calcs: ['mean', 'max'] }, tooltip: { mode: 'multi', sort: 'desc' } },
      };
  }
}

/** Panels laid out left to right, a new row when 24 columns are full. */
function layout(specs: readonly PanelSpec[]): { [key: string]: Json }[] {
  let x = 0;
  let y = 0;
  let rowHeight = 0;
  return specs.map((spec, i) => {
    if (x + spec.w > 24) {
      x = 0;
      y += rowHeight;
      rowHeight = 0;
    }
    const panel = panelJson(spec, i + 1, x, y);
    x += spec.w;
    rowHeight = Math.max(rowHeight, spec.h);
    return panel;
  });
}

/** A query variable over a label's values, in Grafana's label_values() form. */
function labelVariable(name: string, label: string, title: string, metric: string, includeAll: boolean): { [key: string]: Json } {
  const query = `label_values(${metric}, ${label})`;
  return {
    type: 'query',
    name,
    label: title,
    datasource: DATASOURCE,
    query: { query, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 },
    refresh: 2,
    sort: 1,
    multi: includeAll,
    includeAll,
    ...(includeAll ? { allValue: '.*' } : {}),
    options: [],
    regex: '',
    hide: 0,
    skipUrlSync: false,
  };
}

function dashboardJson(catalog: MixinCatalog, uid: string, title: string, description: string, variables: readonly { [key: string]: Json }[], panels: readonly PanelSpec[], links: readonly string[]): { [key: string]: Json } {
  const { grafana } = catalog.input.config;
  return {
    uid: `${grafana.uidPrefix}-${uid}`,
    title,
    description,
    tags: [...grafana.tags],
    editable: true,
    graphTooltip: 1,
    timezone: 'browser',
    refresh: grafana.refresh,
    time: { from: grafana.timeFrom, to: 'now' },
    timepicker: {},
    fiscalYearStartMonth: 0,
    liveNow: false,
    schemaVersion: GRAFANA.schemaVersion,
    version: 1,
    annotations: {
      list: [
        {
          builtIn: 1,
          datasource: { type: 'grafana', uid: '-- Grafana --' },
          enable: true,
          hide: true,
          iconColor: 'rgba(0, 211, 255, 1)',
          name: 'Annotations & Alerts',
          type: 'dashboard',
        },
      ],
    },
    links: links.map((to) => ({ title: to === 'vm' ? 'KVM: VM' : 'KVM: hosts', type: 'link', url: `/d/${grafana.uidPrefix}-${to}`, keepTime: true, includeVars: true, targetBlank: false, asDropdown: false, icon: 'dashboard', tags: [], tooltip: '' })),
    templating: {
      list: [
        { type: 'datasource', name: 'datasource', label: 'Data source', query: 'prometheus', options: [], refresh: 1, regex: '', hide: 0, includeAll: false, multi: false, skipUrlSync: false },
        ...variables,
      ],
    },
    panels: layout(panels),
  };
}

export function dashboards(catalog: MixinCatalog, rules: RecordingRules): Dashboard[] {
  const { config } = catalog.input;
  const { names } = rules;
  const at = levels(config);
  const { exits, runDelay, cpuTime, pollSuccess, pollFail, haltWait } = catalog.core();
  const haltExits = catalog.has('vcpu:halt_exits') ? catalog.get('vcpu:halt_exits') : undefined;
  const blocking = catalog.has('vcpu:blocking') ? catalog.get('vcpu:blocking') : undefined;
  const [duration, readErrors, exportFailures] = ['collection.duration', 'read.errors', 'export.failures'].map((name) => catalog.agent(`kvm_stats_otel.${name}`)) as [MixinMetric, MixinMetric, MixinMetric];
  const host = 'instance=~"$instance"';
  const vmLabel = '{{kvm_vm_name}} ({{process_pid}})';
  const hostPanels: PanelSpec[] = [
    { type: 'stat', title: 'VMs', unit: 'none', w: 4, h: 4, description: described('VMs whose vCPUs the agents read.', [exits]), targets: [{ expr: `count(${sumBy(at.vm, catalog.select(exits, [host]), 'count')})`, instant: true }] },
    { type: 'stat', title: 'vCPUs', unit: 'none', w: 4, h: 4, description: described('vCPUs the agents read.', [exits]), targets: [{ expr: `count(${catalog.select(exits, [host])})`, instant: true }] },
    { type: 'stat', title: 'VM exits/s', unit: 'short', w: 4, h: 4, description: described(`VM exits per second over every vCPU (recording rule ${names.hostExits}).`, [exits]), targets: [{ expr: `sum(${names.hostExits}{${host}})` }] },
    { type: 'stat', title: 'Run delay (steal), mean', unit: 'percentunit', w: 4, h: 4, description: described(`The share of time the vCPUs waited for a host CPU, averaged over them (recording rule ${names.hostRunDelay}).`, [runDelay]), targets: [{ expr: `avg(${names.vcpuRunDelay}{${host}})` }] },
    { type: 'stat', title: 'Halt polling wasted', unit: 'short', w: 4, h: 4, description: described(`Host CPUs' worth of time spent in halt polls that saw no wake-up (seconds per second, recording rule ${names.hostHaltPollFailed}).`, [pollFail]), targets: [{ expr: `sum(${names.hostHaltPollFailed}{${host}})` }] },
    { type: 'stat', title: 'Agent read errors/s', unit: 'short', w: 4, h: 4, description: described('Failed reads of stats fds per second, every agent.', [readErrors]), targets: [{ expr: `sum(rate(${catalog.select(readErrors, [host], readErrors.family.name, config.agentSelector)}[$__rate_interval]))` }] },
    { type: 'timeseries', title: 'VM exits/s, top 10 VMs', unit: 'short', w: 12, h: 8, description: described(`VM exits per second of each VM, its vCPUs summed (recording rule ${names.vmExits}).`, [exits]), targets: [{ expr: `topk(10, ${names.vmExits}{${host}})`, legend: vmLabel }] },
    { type: 'timeseries', title: 'Run delay (steal), top 10 VMs', unit: 'percentunit', w: 12, h: 8, description: described(`The share of time a VM's vCPUs waited for a host CPU, their mean (recording rule ${names.vmRunDelay}).`, [runDelay]), targets: [{ expr: `topk(10, ${names.vmRunDelay}{${host}})`, legend: vmLabel }] },
    { type: 'timeseries', title: 'Halt polling wasted, top 10 VMs', unit: 'short', w: 12, h: 8, description: described(`Host CPU time per second a VM's vCPUs spent in halt polls that failed (recording rule ${names.vmHaltPollFailed}).`, [pollFail]), targets: [{ expr: `topk(10, ${names.vmHaltPollFailed}{${host}})`, legend: vmLabel }] },
    { type: 'timeseries', title: 'Halt wait p99, top 10 VMs', unit: 's', w: 12, h: 8, description: described(`How long a halted vCPU slept before it was woken, 99th percentile over the VM's vCPUs (recording rule ${names.vmHaltWaitP99}).`, [haltWait]), targets: [{ expr: `topk(10, ${names.vmHaltWaitP99}{${host}})`, legend: vmLabel }] },
    {
      type: 'table',
      title: 'VMs by exits/s',
      unit: 'short',
      w: 24,
      h: 8,
      description: described('Every VM: exits per second, run delay (steal) and wasted halt polling, now.', [exits, runDelay, pollFail]),
      targets: [
        { expr: `${names.vmExits}{${host}}`, instant: true, format: 'table' },
        { expr: `${names.vmRunDelay}{${host}}`, instant: true, format: 'table' },
        { expr: `${names.vmHaltPollFailed}{${host}}`, instant: true, format: 'table' },
      ],
    },
    {
      type: 'timeseries',
      title: 'Agent collection time, p99',
      unit: 's',
      w: 12,
      h: 8,
      description: described('How long each agent takes to read every stats fd and build its data points, per output.', [duration]),
      targets: [{ expr: `histogram_quantile(0.99, ${sumBy([...at.host, 'kvm_stats_otel_output', 'le'], `rate(${catalog.select(duration, [host], `${duration.family.name}_bucket`, config.agentSelector)}[$__rate_interval])`)})`, legend: '{{instance}} {{kvm_stats_otel_output}}' }],
    },
    {
      type: 'timeseries',
      title: 'Agent read errors and failed exports',
      unit: 'short',
      w: 12,
      h: 8,
      description: described('Failed reads and failed exports per second, per agent and output.', [readErrors, exportFailures]),
      targets: [
        { expr: sumBy([...at.host, 'kvm_stats_otel_output'], `rate(${catalog.select(readErrors, [host], readErrors.family.name, config.agentSelector)}[$__rate_interval])`), legend: 'read errors {{instance}} {{kvm_stats_otel_output}}' },
        { expr: sumBy([...at.host, 'kvm_stats_otel_output'], `rate(${catalog.select(exportFailures, [host], exportFailures.family.name, config.agentSelector)}[$__rate_interval])`), legend: 'failed exports {{instance}} {{kvm_stats_otel_output}}' },
      ],
    },
  ];
  const vm = `${host}, kvm_vm_name=~"$vm", process_pid=~"$pid"`;
  const perVcpu = (metric: MixinMetric) => inSeconds(sumBy([config.vcpuLabel], `rate(${catalog.select(metric, [vm])}[$__rate_interval])`), metric);
  const vcpuLegend = `vCPU {{${config.vcpuLabel}}}`;
  const reasons = catalog.exitReasons();
  const haltUnit = haltWait.unit === 's' ? 's' : haltWait.unit;
  const vmPanels: PanelSpec[] = [
    { type: 'timeseries', title: 'VM exits/s per vCPU', unit: 'short', w: 12, h: 8, description: described('VM exits per second of each vCPU.', [exits]), targets: [{ expr: perVcpu(exits), legend: vcpuLegend }] },
    { type: 'timeseries', title: 'Exit reasons', unit: 'short', w: 12, h: 8, stack: true, description: described('VM exits per second by kind, the VM\'s vCPUs summed (the kinds this kernel counts apart).', reasons), targets: reasons.map((reason) => ({ expr: `sum(rate(${catalog.select(reason, [vm])}[$__rate_interval]))`, legend: reason.otel.replace(/^kvm\.vcpu\./, '') })) },
    { type: 'timeseries', title: 'Run delay (steal) per vCPU', unit: 'percentunit', w: 12, h: 8, description: described('The share of time each vCPU\'s thread waited for a host CPU.', [runDelay]), targets: [{ expr: perVcpu(runDelay), legend: vcpuLegend }] },
    { type: 'timeseries', title: 'CPU time per vCPU', unit: 'percentunit', w: 12, h: 8, description: described('The share of time each vCPU\'s thread ran on a host CPU.', [cpuTime]), targets: [{ expr: perVcpu(cpuTime), legend: vcpuLegend }] },
    ...(haltExits ? [{ type: 'timeseries', title: 'Halt exits/s per vCPU', unit: 'short', w: 12, h: 8, description: described('Halts per second of each vCPU.', [haltExits]), targets: [{ expr: perVcpu(haltExits), legend: vcpuLegend }] } as const] : []),
    {
      type: 'timeseries',
      title: 'Halt polling per vCPU: succeeded and failed',
      unit: 'percentunit',
      w: 12,
      h: 8,
      description: described('The share of a host CPU each vCPU spent polling for a wake-up while halted, the polling that paid off and the polling wasted.', [pollSuccess, pollFail]),
      targets: [
        { expr: perVcpu(pollSuccess), legend: `succeeded, ${vcpuLegend}` },
        { expr: perVcpu(pollFail), legend: `failed, ${vcpuLegend}` },
      ],
    },
    {
      type: 'heatmap',
      title: 'Halt wait distribution',
      unit: haltUnit,
      w: 12,
      h: 8,
      description: described('How long halted vCPUs slept before they were woken: the kernel\'s log2 buckets over time, the VM\'s vCPUs summed.', [haltWait]),
      targets: [{ expr: sumBy(['le'], `increase(${catalog.buckets(haltWait, [vm])}[$__rate_interval])`), legend: '{{le}}', format: 'heatmap' }],
    },
    {
      type: 'timeseries',
      title: 'Halt wait p50 and p99',
      unit: 's',
      w: 12,
      h: 8,
      description: described('How long a halted vCPU slept before it was woken: median and 99th percentile over the VM\'s vCPUs, from the kernel\'s buckets.', [haltWait]),
      targets: [0.5, 0.99].map((q) => ({ expr: inSeconds(`histogram_quantile(${q}, ${sumBy(['le'], `rate(${catalog.buckets(haltWait, [vm])}[$__rate_interval])`)})`, haltWait), legend: `p${q * 100}` })),
    },
    ...(blocking ? [{ type: 'timeseries', title: 'vCPUs blocked in a halt', unit: 'none', w: 12, h: 8, description: described('vCPUs blocked in the host waiting for a wake-up, now.', [blocking]), targets: [{ expr: `sum(${catalog.select(blocking, [vm])})`, legend: 'blocked' }] } as const] : []),
  ];
  const instanceVariable = labelVariable('instance', 'instance', 'Host', catalog.select(exits), true);
  const vmFilter = catalog.select(exits, [host]);
  return [
    {
      file: 'kvm-stats-hosts.json',
      json: dashboardJson(catalog, 'hosts', 'KVM: hosts', 'KVM hypervisor hosts: their VMs, exits, steal, halt polling and the agents that read them (kvm-stats-otel).', [instanceVariable], hostPanels, ['vm']),
      leftOut: [],
    },
    {
      file: 'kvm-stats-vm.json',
      json: dashboardJson(
        catalog,
        'vm',
        'KVM: VM',
        'One KVM VM: each vCPU\'s exits, exit reasons, steal, CPU time, halt polling and halt waits (kvm-stats-otel).',
        [instanceVariable, labelVariable('vm', 'kvm_vm_name', 'VM', vmFilter, false), labelVariable('pid', 'process_pid', 'Process', catalog.select(exits, [host, 'kvm_vm_name=~"$vm"']), false)],
        vmPanels,
        ['hosts'],
      ),
      leftOut: blocking ? [] : ['the panel of vCPUs blocked in a halt (the kernel has no blocking stat)'],
    },
  ];
}
