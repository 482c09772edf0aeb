/**
 * `kvm-stats-otel top`: an operator's live view of a host's VMs, kvm_stat-like. One line per VM
 * (name, pid, vCPUs, exits/s, halt exits/s, run delay, and the interval's p50/p99 of its
 * halt-wait and halt-poll histograms), sortable; a VM opened to its counters, each with the
 * VM's total and rate and every vCPU's total, share and rate, and the stat's meaning. It follows
 * VMs as they come and go (the sources are refreshed at every interval). On a terminal it
 * redraws in place and takes keys; otherwise it prints plain, stamped lines. What it shows is
 * worked out in views/rollup.ts; this file only lays it out and reads keys.
 */
import { Command, Option } from 'commander';
import type { OpenSources, SourceOptions } from '../setup/open-sources.js';
import { statMeaning } from '../otel/meanings.js';
import { KvmStatsProducer } from '../otel/producer.js';
import { type BucketRange, type DetailRow, type Percentiles, SORT_KEYS, type SortKey, type VmRow, VmRollup, detailRows, sortVms } from '../views/rollup.js';
import { addSourceOptions, integerOption, secondsOption } from './flags.js';
import { withSources } from './with-sources.js';
import { terminalText } from '../views/terminal.js';

interface TopOptions extends SourceOptions {
  interval: number;
  rows?: number;
  iterations?: number;
  sort: SortKey;
  vm?: string;
}

/** "12.3k", "1.23M": a rate in little room. */
function amount(value: number | undefined): string {
  if (value === undefined) return '-';
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(2)}G`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (abs >= 1e4) return `${(value / 1e3).toFixed(1)}k`;
  return value.toFixed(1);
}

/** A duration in ns, in its unit: "512ns", "1.02us", "16.4ms". */
export function duration(ns: number): string {
  if (ns < 1e3) return `${ns}ns`;
  if (ns < 1e6) return `${(ns / 1e3).toPrecision(3)}us`;
  if (ns < 1e9) return `${(ns / 1e6).toPrecision(3)}ms`;
  return `${(ns / 1e9).toPrecision(3)}s`;
}

/** A percentile's bucket as its upper bound ("<=1.02us"), or above the last bound (">1.07s"). */
export function bucketText(range: BucketRange | undefined): string {
  if (range === undefined) return '-';
  return range.upper === Infinity ? `>${duration(range.lower - 1)}` : `<=${duration(range.upper)}`;
}

function percent(fraction: number | undefined): string {
  return fraction === undefined ? '-' : `${(fraction * 100).toFixed(1)}%`;
}

function vmTitle(vm: VmRow): string {
  return `${vm.name ?? 'VM'}${vm.pid !== undefined ? ` (pid ${vm.pid})` : ''}`;
}

function pair(p: Percentiles): [string, string] {
  return [bucketText(p.p50), bucketText(p.p99)];
}

const LIST_COLUMNS = ['VM', 'PID', 'vCPUs', 'exits/s', 'halts/s', 'delay', 'halt p50', 'halt p99', 'poll p50', 'poll p99'];
const LIST_WIDTHS = [20, 8, 6, 10, 10, 7, 10, 10, 10, 10];

function listCells(vm: VmRow): string[] {
  return [
    vm.name ?? '-',
    vm.pid === undefined ? '-' : String(vm.pid),
    String(vm.vcpus),
    amount(vm.exitsPerSecond),
    amount(vm.haltExitsPerSecond),
    percent(vm.runDelay),
    ...pair(vm.haltWait),
    ...pair(vm.haltPoll),
  ];
}

function columns(cells: readonly string[]): string {
  return cells.map((cell, i) => (i === 0 ? cell.slice(0, LIST_WIDTHS[0]).padEnd(LIST_WIDTHS[0]!) : cell.padStart(LIST_WIDTHS[i]!))).join(' ');
}

/** The list on a terminal: a header, then one line per VM, the selected one marked. */
export function listScreen(vms: readonly VmRow[], view: { sort: SortKey; selected: number; intervalSeconds: number }, width: number, height: number, now = new Date()): string[] {
  const header = [
    `kvm-stats-otel top: ${vms.length} VM(s), rates over the last ${view.intervalSeconds} s at ${now.toLocaleTimeString()}; sort ${view.sort} (e x, h halts, d delay, n name)`,
    'up/down select, Enter opens a VM, q quits; delay: time runnable vCPUs waited for a host CPU; p50/p99: the halt-wait and halt-poll histograms\' buckets',
    `  ${columns(LIST_COLUMNS)}`,
  ];
  if (vms.length === 0) return fit([...header, '  no VM'], width, height);
  const lines = vms.map((vm, i) => `${i === view.selected ? '>' : ' '} ${columns(listCells(vm))}`);
  return fit([...header, ...lines], width, height);
}

function fit(lines: string[], width: number, height: number): string[] {
  return lines.slice(0, height).map((line) => line.slice(0, width));
}

function rate(row: { perSecond: number | undefined; unit: string }): string {
  if (row.perSecond === undefined) return '-';
  return `${amount(row.perSecond)}${row.unit === '1' || row.unit === '' ? '' : ` ${row.unit}`}/s`;
}

function total(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

/** One VM's counters: per stat the VM's total, rate and meaning, then each vCPU's total, share and rate. */
export function detailLines(rows: readonly DetailRow[], limit: number): string[] {
  const lines = [`  ${'stat'.padEnd(28)} ${'vCPU'.padStart(5)} ${'total'.padStart(16)} ${'share'.padStart(7)} ${'rate'.padStart(14)}  meaning`];
  for (const row of rows.slice(0, limit)) {
    const name = row.target === 'vm' ? `vm:${row.stat}` : row.stat;
    lines.push(`  ${name.padEnd(28)} ${(row.target === 'vm' ? 'VM' : 'all').padStart(5)} ${total(row.vm.total).padStart(16)} ${'100.0%'.padStart(7)} ${rate(row.vm).padStart(14)}  ${statMeaning(row.target, row.stat) ?? ''}`);
    for (const { vcpu, row: each, share } of row.vcpus) {
      lines.push(`  ${''.padEnd(28)} ${String(vcpu).padStart(5)} ${total(each.total).padStart(16)} ${percent(share).padStart(7)} ${rate(each).padStart(14)}`);
    }
  }
  return lines;
}

/** A VM opened on a terminal: its line of the list, then its counters, to fit `height`. */
export function detailScreen(vm: VmRow, intervalSeconds: number, width: number, height: number, now = new Date()): string[] {
  const header = [
    `kvm-stats-otel top: VM ${vmTitle(vm)}, ${vm.vcpus} vCPU(s), rates over the last ${intervalSeconds} s at ${now.toLocaleTimeString()}; Esc goes back, q quits`,
    `  ${columns(LIST_COLUMNS)}`,
    `  ${columns(listCells(vm))}`,
    '',
  ];
  const rows = detailRows(vm);
  // As many stats as fit: a stat takes a line for the VM and one per vCPU.
  const perStat = 1 + vm.vcpus;
  const limit = Math.max(1, Math.floor((height - header.length - 1) / perStat));
  return fit([...header, ...detailLines(rows, limit)], width, height);
}

/** The plain form: one stamped line per VM per interval, for logs and pipes. */
export function plainVmLines(vms: readonly VmRow[], now = new Date()): string[] {
  const stamp = now.toISOString();
  return vms.map((vm) => {
    const [h50, h99] = pair(vm.haltWait);
    const [p50, p99] = pair(vm.haltPoll);
    return `${stamp}  VM ${vmTitle(vm)}  vcpus ${vm.vcpus}  exits/s ${amount(vm.exitsPerSecond)}  halts/s ${amount(vm.haltExitsPerSecond)}  delay ${percent(vm.runDelay)}  halt p50 ${h50} p99 ${h99}  poll p50 ${p50} p99 ${p99}`;
  });
}

/** The plain form of an opened VM (--vm): one stamped line per stat and vCPU. */
export function plainDetailLines(vm: VmRow, rows: number, now = new Date()): string[] {
  const stamp = now.toISOString();
  return detailRows(vm)
    .slice(0, rows)
    .flatMap((row) => [
      `${stamp}  VM ${vmTitle(vm)}  ${row.target === 'vm' ? `vm:${row.stat}` : row.stat}  ${row.target === 'vm' ? 'VM' : 'all'}  total ${total(row.vm.total)}  share 100.0%  rate ${rate(row.vm)}`,
      ...row.vcpus.map(({ vcpu, row: each, share }) => `${stamp}  VM ${vmTitle(vm)}  ${row.stat}  vCPU ${vcpu}  total ${total(each.total)}  share ${percent(share)}  rate ${rate(each)}`),
    ]);
}

/** Whether `vm` is the one --vm names: its name, or its pid. */
function named(vm: VmRow, wanted: string): boolean {
  return vm.name === wanted || String(vm.pid) === wanted;
}

const ESC = '\x1b[';

/** What the terminal view shows: sort, selection, and the VM opened (by key, so it survives a re-sort). */
interface ViewState {
  sort: SortKey;
  selected: number;
  opened: string | undefined;
}

/** Applies a key to the view; 'quit' to stop. Exported for tests of the key map. */
export function applyKey(view: ViewState, vms: readonly VmRow[], key: string): 'quit' | 'redraw' | 'none' {
  if (key === 'q' || key === 'Q' || key === '\x03') return 'quit';
  const sorts: Record<string, SortKey> = { e: 'exits', x: 'exits', h: 'halts', d: 'delay', n: 'name' };
  if (sorts[key] !== undefined) {
    view.sort = sorts[key]!;
    return 'redraw';
  }
  if (view.opened !== undefined) {
    if (key === '\x1b' || key === '\x7f' || key === 'b') {
      view.opened = undefined;
      return 'redraw';
    }
    return 'none';
  }
  if (key === `${ESC}A` || key === 'k') view.selected = Math.max(0, view.selected - 1);
  else if (key === `${ESC}B` || key === 'j') view.selected = Math.min(Math.max(0, vms.length - 1), view.selected + 1);
  else if (key === '\r' || key === '\n') view.opened = vms[view.selected]?.key;
  else return 'none';
  return 'redraw';
}

async function top(options: TopOptions, { providers, sources }: OpenSources): Promise<void> {
  const terminal = process.stdout.isTTY === true;
  const view: ViewState = { sort: options.sort, selected: 0, opened: undefined };
  let rows: VmRow[] = [];
  let sorted: VmRow[] = [];
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const onSignal = (): void => stop();
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  let drawn = false;
  const draw = (): void => {
    sorted = sortVms(rows, view.sort);
    if (options.vm !== undefined && view.opened === undefined && !drawn) view.opened = sorted.find((vm) => named(vm, options.vm!))?.key;
    view.selected = Math.min(view.selected, Math.max(0, sorted.length - 1));
    const width = process.stdout.columns ?? 80;
    const height = process.stdout.rows ?? 24;
    const opened = view.opened !== undefined ? sorted.find((vm) => vm.key === view.opened) : undefined;
    // An opened VM that went away: back to the list.
    if (view.opened !== undefined && opened === undefined && drawn) view.opened = undefined;
    const lines = opened ? detailScreen(opened, options.interval, width, height) : listScreen(sorted, { ...view, intervalSeconds: options.interval }, width, height);
    process.stdout.write(`${ESC}H${lines.map((line) => `${terminalText(line)}${ESC}K`).join('\n')}${ESC}J`);
    drawn = true;
  };
  const keys = (data: Buffer): void => {
    const action = applyKey(view, sorted, data.toString('latin1'));
    if (action === 'quit') stop();
    else if (action === 'redraw') draw();
  };
  if (terminal && process.stdin.isTTY) {
    process.stdin.setRawMode(true);
    process.stdin.on('data', keys).resume();
  }
  if (terminal) process.stdout.write(`${ESC}?1049h${ESC}?25l`);
  try {
    const producer = new KvmStatsProducer({ sources });
    const rollup = new VmRollup();
    rollup.update((await producer.collect()).resourceMetrics); // the baseline: rates need two readings
    for (let refresh = 0; options.iterations === undefined || refresh < options.iterations; refresh++) {
      const tick = new Promise((resolve) => setTimeout(resolve, options.interval * 1000));
      if ((await Promise.race([tick, stopped.then(() => 'stop')])) === 'stop') break;
      // New VMs and vCPUs, and VMs gone, at every interval.
      for (const provider of providers) await provider.refresh();
      const { resourceMetrics, errors } = await producer.collect();
      for (const error of errors) process.stderr.write(`kvm-stats-otel: ${terminalText((error as Error).message)}\n`);
      rows = rollup.update(resourceMetrics);
      if (terminal) {
        draw();
      } else {
        const now = new Date();
        sorted = sortVms(rows, view.sort);
        const lines =
          options.vm !== undefined
            ? sorted.filter((vm) => named(vm, options.vm!)).flatMap((vm) => plainDetailLines(vm, options.rows ?? 10, now))
            : plainVmLines(sorted, now);
        process.stdout.write(lines.length > 0 ? `${lines.map(terminalText).join('\n')}\n` : `${now.toISOString()}  no VM${options.vm !== undefined ? ` named ${terminalText(options.vm)}` : ''}\n`);
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
  const command = new Command('top').description(
    'a live view of the host\'s VMs, like kvm_stat: per VM exits/s, halt exits/s, run delay and the p50/p99 of halt wait and halt poll; a VM opened to its vCPUs\' counters',
  );
  addSourceOptions(command)
    .option('--interval <s>', 'seconds between refreshes', secondsOption, 2)
    .addOption(new Option('--sort <key>', 'order of the VMs: exits, halts or delay (highest first), or name; keys e, h, d, n on a terminal').choices(SORT_KEYS).default('exits'))
    .option('--vm <name|pid>', 'open this VM: its counters per vCPU (total, share, rate) instead of the list of VMs')
    .option('--rows <n>', 'stats of an opened VM when not on a terminal (on a terminal: as many as fit)', integerOption(1, 1000))
    .option('--iterations <n>', 'stop after this many refreshes', integerOption(1, 1_000_000));
  return command.action(async (options: TopOptions) => {
    await withSources(options, (open) => top(options, open));
  });
}
