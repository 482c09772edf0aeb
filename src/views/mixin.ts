/**
 * The monitoring mixin (`kvm-stats-otel mixin`): recording rules, alerts, Grafana dashboards and
 * a runbook for KVM stats, in the shape node_exporter's mixin has, generated from the same
 * descriptor tables, mapping and meanings as `schema`, so that every metric name and every
 * description is right for the kernel, the unit mode and the way into Prometheus it was made
 * for. This file holds what the parts share (the metrics they query, by kernel stat, and how a
 * query selects and scales them) and puts the files together; each part has its own file.
 */
import type { DescriptorTable, StatsTarget } from '../stats/descriptors.js';
import { SCHEDSTAT_TABLE } from '../sources/schedstat.js';
import { type MetricKind, type UnitMode, mapTable } from '../otel/mapping.js';
import { statMeaning } from '../otel/meanings.js';
import { type MixinConfig, mixinConfigJson } from './mixin-config.js';
import { type NamingWay, type PrometheusFamily, namedMapping, prometheusFamily } from './mixin-names.js';
import { alertingRules } from './mixin-alerts.js';
import { dashboards } from './mixin-dashboards.js';
import { recordingRules } from './mixin-rules.js';
import { runbookMarkdown } from './mixin-runbook.js';
import { toYaml } from './mixin-yaml.js';

/** One of the agent's own metrics, as its self-telemetry defines it. */
export interface SelfMetric {
  readonly name: string;
  readonly kind: MetricKind;
  readonly unit: string;
  readonly description: string;
}

export interface MixinInput {
  /** The descriptor tables of the kernel it is made for: a vCPU's, and a VM's where one was read. */
  readonly vcpuTable: DescriptorTable;
  readonly vmTable?: DescriptorTable | undefined;
  readonly units: UnitMode;
  readonly naming: NamingWay;
  readonly config: MixinConfig;
  /** The agent's own metrics (agent/telemetry-names.ts). */
  readonly selfTelemetry: readonly SelfMetric[];
  /** What it was made from and by, for the files' headers: "recording recordings/x.gz", the command. */
  readonly from: string;
  readonly command: string;
}

/** A metric the mixin queries: its Prometheus names and what it means. */
export interface MixinMetric {
  /** "vcpu:exits", "vcpu:sched.run_delay", "agent:kvm_stats_otel.read.errors". */
  readonly key: string;
  readonly otel: string;
  readonly family: PrometheusFamily;
  readonly unit: string;
  /** Values (and a histogram's bounds) times this are seconds; 1 where the unit is no time. */
  readonly toSeconds: number;
  /** One line an operator reads: the stat's meaning, or the agent metric's description. */
  readonly meaning: string;
}

const SECONDS: Readonly<Record<string, number>> = { s: 1, ms: 1e-3, us: 1e-6, ns: 1e-9 };

/** Every metric the mixin may query, by key, and the ones it did. */
export class MixinCatalog {
  readonly #metrics = new Map<string, MixinMetric>();
  readonly #used = new Map<string, MixinMetric>();

  constructor(readonly input: MixinInput) {
    const { units, naming } = input;
    const tables: [StatsTarget, DescriptorTable | undefined][] = [['vm', input.vmTable], ['vcpu', input.vcpuTable], ['vcpu', SCHEDSTAT_TABLE]];
    for (const [target, table] of tables) {
      if (!table) continue;
      for (const mapping of mapTable(table, target, units).metrics) {
        this.#add(`${target}:${mapping.stat.name}`, mapping.name, prometheusFamily(namedMapping(mapping), naming, units), mapping.unit, statMeaning(target, mapping.stat.name) ?? mapping.description);
      }
    }
    for (const metric of input.selfTelemetry) {
      const family = prometheusFamily({ ...metric, hasSum: metric.kind === 'histogram' }, naming, units);
      this.#add(`agent:${metric.name}`, metric.name, family, metric.unit, metric.description);
    }
  }

  #add(key: string, otel: string, family: PrometheusFamily, unit: string, meaning: string): void {
    this.#metrics.set(key, { key, otel, family, unit, toSeconds: SECONDS[unit] ?? 1, meaning });
  }

  /** Whether the kernel has the stat (`vcpu:halt_exits`). */
  has(key: string): boolean {
    return this.#metrics.has(key);
  }

  /** The metric of `key`, counted as used; throws for one the kernel lacks (ask has() first). */
  get(key: string): MixinMetric {
    const metric = this.#metrics.get(key);
    if (!metric) throw new Error(`the mixin needs ${key}, which the tables it is made from lack`);
    this.#used.set(key, metric);
    return metric;
  }

  /** The kernel's vCPU stats whose names say they count one kind of exit (`io_exits`,
   * `wfi_exit_stat`, `mmio_exit_user`), in the table's order. */
  exitReasons(): MixinMetric[] {
    return this.input.vcpuTable.stats
      .filter((stat) => stat.type === 'cumulative' && stat.name !== 'exits' && /(^|_)exits?(_|$)/.test(stat.name))
      .map((stat) => this.get(`vcpu:${stat.name}`));
  }

  /** The stats every part reads (each counted as used): exits, the vCPU thread's run delay and
   * CPU time, halt-polling time that succeeded and failed, and the halt-wait histogram. */
  core(): { exits: MixinMetric; runDelay: MixinMetric; cpuTime: MixinMetric; pollSuccess: MixinMetric; pollFail: MixinMetric; haltWait: MixinMetric } {
    return {
      exits: this.get('vcpu:exits'),
      runDelay: this.get('vcpu:sched.run_delay'),
      cpuTime: this.get('vcpu:sched.cpu_time'),
      pollSuccess: this.get('vcpu:halt_poll_success_ns'),
      pollFail: this.get('vcpu:halt_poll_fail_ns'),
      haltWait: this.get('vcpu:halt_wait_hist'),
    };
  }

  /** The agent's own metric `name` (kvm_stats_otel.read.errors), counted as used. */
  agent(name: string): MixinMetric {
    return this.get(`agent:${name}`);
  }

  /** Every metric queried so far. */
  get used(): readonly MixinMetric[] {
    return [...this.#used.values()];
  }

  /** `series` (default the family's name) with the selector and `matchers`, as PromQL. */
  select(metric: MixinMetric, matchers: readonly string[] = [], series: string = metric.family.name, selector = this.input.config.kvmSelector): string {
    const all = [selector, ...matchers].filter((m) => m !== '');
    return `${series}${all.length ? `{${all.join(', ')}}` : ''}`;
  }

  /** A histogram's bucket series, selected. */
  buckets(metric: MixinMetric, matchers: readonly string[] = []): string {
    return this.select(metric, matchers, `${metric.family.name}_bucket`);
  }
}

/** `expr` (values in the metric's unit) in seconds: divided by 1e9 for ns, as written exactly. */
export function inSeconds(expr: string, metric: MixinMetric): string {
  if (metric.toSeconds === 1) return expr;
  return `${expr} / ${Math.round(1 / metric.toSeconds)}`;
}

/** "sum by (a, b) (expr)". */
export function sumBy(labels: readonly string[], expr: string, op = 'sum'): string {
  return `${op} by (${labels.join(', ')}) (${expr})`;
}

/** The label sets of a host, a VM and a vCPU. */
export function levels(config: MixinConfig): { host: string[]; vm: string[]; vcpu: string[] } {
  const host = [...config.hostLabels];
  const vm = [...host, ...config.vmLabels];
  return { host, vm, vcpu: [...vm, config.vcpuLabel] };
}

/** The files of the mixin, by path under its folder, and the metrics they query. */
export interface Mixin {
  readonly files: ReadonlyMap<string, string>;
  readonly metrics: readonly MixinMetric[];
  /** Recording rules (by name) and alerts, for tests and the runbook. */
  readonly recorded: readonly string[];
  readonly alerts: readonly string[];
  /** What the kernel lacks that some rule, alert or panel needs: left out, said in the README. */
  readonly leftOut: readonly string[];
}

export function buildMixin(input: MixinInput): Mixin {
  const catalog = new MixinCatalog(input);
  const rules = recordingRules(catalog);
  const alerts = alertingRules(catalog, rules);
  const boards = dashboards(catalog, rules);
  const header = [
    `Generated by \`${input.command}\` from ${input.from}:`,
    `${input.units} units, names as ${input.naming === 'agent' ? 'the agent\'s Prometheus endpoint serves them' : 'OTLP through an OpenTelemetry Collector into Prometheus gives them'}.`,
    'Do not edit: change mixin/config.json and generate again (docs/mixin.md).',
  ];
  const files = new Map<string, string>([
    ['config.json', mixinConfigJson(input.config)],
    ['rules.yaml', toYaml({ groups: rules.groups }, header.map((line) => line.replace(/`/g, '')))],
    ['alerts.yaml', toYaml({ groups: alerts.groups }, header.map((line) => line.replace(/`/g, '')))],
    ...boards.map((board): [string, string] => [`dashboards/${board.file}`, `${JSON.stringify(board.json, null, 2)}\n`]),
    ['runbook.md', runbookMarkdown(catalog, alerts, header)],
  ]);
  return {
    files,
    metrics: catalog.used,
    recorded: rules.groups.flatMap((group) => group.rules.map((rule) => rule.record)),
    alerts: alerts.groups.flatMap((group) => group.rules.map((rule) => rule.alert)),
    leftOut: [...rules.leftOut, ...alerts.leftOut, ...boards.flatMap((board) => board.leftOut)],
  };
}
