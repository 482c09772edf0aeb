/**
 * `kvm-stats-otel top`: a live view like the kernel's kvm_stat. Per VM and vCPU, the counters
 * that moved fastest over the last interval, as rates per second. On a terminal it redraws in
 * place and quits on q or Ctrl-C; otherwise it prints plain lines, one per stat per interval.
 * The rates come from a delta-temporality KvmStatsProducer: value / (end - start) of each point.
 */
import { Command } from 'commander';
import type { HrTime } from '@opentelemetry/api';
import { AggregationTemporality, type DataPoint, DataPointType, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { OpenSources, SourceOptions } from '../agent/sources.js';
import { KvmStatsProducer } from '../otel/producer.js';
import { ATTR_KVM_VCPU_ID, ATTR_KVM_VM_NAME, ATTR_PROCESS_PID, METRIC_PREFIX } from '../otel/semconv.js';
import { addSourceOptions, integerOption, secondsOption } from './flags.js';
import { withSources } from './sources.js';

interface TopOptions extends SourceOptions {
  interval: number;
  rows?: number;
  iterations?: number;
}

export interface Rate {
  /** The kernel's stat name. */
  stat: string;
  /** Per second, in the metric's unit. */
  perSecond: number;
  unit: string;
}

export interface RateGroup {
  /** "VM demo (pid 1234)", "vCPU 0 of demo (pid 1234)". */
  title: string;
  /** Sorts VMs together, the VM before its vCPUs. */
  order: string;
  rates: Rate[];
}

function hrSeconds(time: HrTime): number {
  return time[0] + time[1] / 1e9;
}

/** Counters only, grouped per VM and vCPU, fastest first, counters that did not move left out. */
export function rateGroups(metrics: ResourceMetrics): RateGroup[] {
  const groups = new Map<string, RateGroup>();
  for (const scope of metrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.dataPointType !== DataPointType.SUM) continue;
      const name = metric.descriptor.name;
      const stat = name.startsWith(METRIC_PREFIX.vcpu) ? name.slice(METRIC_PREFIX.vcpu.length) : name.slice(METRIC_PREFIX.vm.length);
      for (const point of metric.dataPoints as DataPoint<number>[]) {
        const elapsed = hrSeconds(point.endTime) - hrSeconds(point.startTime);
        if (elapsed <= 0 || point.value === 0) continue;
        const { [ATTR_PROCESS_PID]: pid, [ATTR_KVM_VM_NAME]: vmName, [ATTR_KVM_VCPU_ID]: vcpu } = point.attributes;
        const vm = `${vmName ?? 'VM'}${pid !== undefined ? ` (pid ${pid})` : ''}`;
        const key = `${pid}/${vmName}/${vcpu}`;
        let group = groups.get(key);
        if (!group) {
          const title = vcpu === undefined ? `VM ${vm}` : `vCPU ${vcpu} of ${vm}`;
          groups.set(key, (group = { title, order: `${pid}/${vmName}/${vcpu === undefined ? '' : String(vcpu).padStart(6, '0')}`, rates: [] }));
        }
        group.rates.push({ stat, perSecond: point.value / elapsed, unit: metric.descriptor.unit });
      }
    }
  }
  const sorted = [...groups.values()].sort((a, b) => a.order.localeCompare(b.order));
  for (const group of sorted) group.rates.sort((a, b) => b.perSecond - a.perSecond);
  return sorted;
}

function rateText(rate: Rate): string {
  const unit = rate.unit === '1' || rate.unit === '' ? '/s' : `${rate.unit}/s`;
  return `${rate.perSecond.toFixed(1)} ${unit}`;
}

/** The plain form: one line per stat, stamped, for logs and pipes. */
export function plainLines(groups: readonly RateGroup[], rows: number, now = new Date()): string[] {
  const stamp = now.toISOString();
  return groups.flatMap((group) => group.rates.slice(0, rows).map((rate) => `${stamp}  ${group.title}  ${rate.stat}  ${rateText(rate)}`));
}

/** The terminal form: a header, then each VM and vCPU with its fastest stats, to fit `height`. */
export function screenLines(groups: readonly RateGroup[], intervalSeconds: number, width: number, height: number, now = new Date()): string[] {
  const header = [`kvm-stats-otel top: rates over the last ${intervalSeconds} s at ${now.toLocaleTimeString()}; q quits`, ''];
  if (groups.length === 0) return [...header, 'no counter moved in the last interval'];
  const perGroup = Math.max(1, Math.floor((height - header.length) / groups.length) - 1);
  const lines = [...header];
  for (const group of groups) {
    lines.push(group.title);
    for (const rate of group.rates.slice(0, perGroup)) lines.push(`  ${rate.stat.padEnd(32)} ${rateText(rate).padStart(20)}`);
  }
  return lines.slice(0, height).map((line) => line.slice(0, width));
}

const ESC = '\x1b[';

async function top(options: TopOptions, { providers, sources }: OpenSources): Promise<void> {
  const terminal = process.stdout.isTTY === true;
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const onSignal = (): void => stop();
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  const keys = (data: Buffer): void => {
    // q, Q, or Ctrl-C (a byte, not a signal, in raw mode)
    if (data.includes(0x71) || data.includes(0x51) || data.includes(0x03)) stop();
  };
  if (terminal && process.stdin.isTTY) {
    process.stdin.setRawMode(true);
    process.stdin.on('data', keys).resume();
  }
  if (terminal) process.stdout.write(`${ESC}?1049h${ESC}?25l`);
  try {
    const producer = new KvmStatsProducer({ sources, temporality: AggregationTemporality.DELTA });
    await producer.collect(); // the baseline: rates need two readings
    for (let refresh = 0; options.iterations === undefined || refresh < options.iterations; refresh++) {
      const tick = new Promise((resolve) => setTimeout(resolve, options.interval * 1000));
      if ((await Promise.race([tick, stopped.then(() => 'stop')])) === 'stop') break;
      for (const provider of providers) await provider.refresh();
      const { resourceMetrics, errors } = await producer.collect();
      for (const error of errors) process.stderr.write(`kvm-stats-otel: ${(error as Error).message}\n`);
      const groups = rateGroups(resourceMetrics);
      if (terminal) {
        const lines = screenLines(groups, options.interval, process.stdout.columns ?? 80, process.stdout.rows ?? 24);
        process.stdout.write(`${ESC}H${lines.map((line) => `${line}${ESC}K`).join('\n')}${ESC}J`);
      } else {
        const lines = plainLines(groups, options.rows ?? 10);
        process.stdout.write(lines.length > 0 ? `${lines.join('\n')}\n` : `${new Date().toISOString()}  no counter moved\n`);
      }
    }
  } finally {
    if (terminal) process.stdout.write(`${ESC}?25h${ESC}?1049l`);
    if (terminal && process.stdin.isTTY) {
      process.stdin.off('data', keys).pause();
      process.stdin.setRawMode(false);
    }
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
}

export function topCommand(): Command {
  const command = new Command('top').description('a live view of the fastest-moving KVM counters per VM and vCPU, as rates per second (like kvm_stat)');
  addSourceOptions(command)
    .option('--interval <s>', 'seconds between refreshes', secondsOption, 2)
    .option('--rows <n>', 'stats per VM or vCPU when not on a terminal (on a terminal: as many as fit)', integerOption(1, 1000))
    .option('--iterations <n>', 'stop after this many refreshes', integerOption(1, 1_000_000));
  return command.action(async (options: TopOptions) => {
    await withSources(options, (open) => top(options, open));
  });
}
