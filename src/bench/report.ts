/** The benchmark's table: Markdown, so that it goes into the README as printed. */
import { type SizeResult, type Stage, benchLine } from './run.js';
import type { Summary } from './samples.js';
import type { SustainedResult } from './sustained.js';

/** "1.23 (1.10–1.40)": median and the 10th to 90th percentiles. */
export function spread(summary: Summary, digits = 3): string {
  return `${summary.median.toFixed(digits)} (${summary.p10.toFixed(digits)}–${summary.p90.toFixed(digits)})`;
}

function bytes(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

const COLUMNS = [
  'stats fds (VMs)',
  'pread floor ms',
  'collect() ms',
  'collect + JSON ms',
  'collect + protobuf ms',
  'collect + protobuf, ours ms',
  'collect + JSON, ours ms',
  'collect / floor',
  'protobuf / floor',
  'protobuf, ours / floor',
  'JSON, ours / floor',
  'protobuf B/export',
  'JSON B/export',
  'collect per VM µs',
  'QMP per VM ms',
  'QMP / collect per VM',
  'retained B/fd (+ data B/fd)',
  'RSS B/fd',
  'allocated B/collect',
  'points / collect',
  'VM-summed: points',
  'VM-summed: collect() ms',
  'VM-summed: collect + protobuf ms',
  'collect + Prometheus text ms (/ floor)',
  'collect + Prometheus gzip ms (/ floor)',
  'Prometheus bytes (gzip)',
  'with vCPU schedstat: collect() ms',
  'schedstat µs per vCPU',
  'blocks changed / collect',
  'floor + compare ms',
  'C pread floor ms',
  'agent cycle: read + OTLP protobuf ms (/ floor)',
];

export function tableHeader(): string {
  return `| ${COLUMNS.join(' | ')} |\n|${COLUMNS.map(() => ' ---: ').join('|')}|\n`;
}

export function tableRow(result: SizeResult): string {
  const line = benchLine(result);
  const cells = [
    `${result.fds.toLocaleString('en-US')} (${result.vms.toLocaleString('en-US')})`,
    spread(result.floor),
    spread(result.collect),
    spread(result.collectJson, 1),
    spread(result.collectProto, 1),
    spread(result.collectFastProto, 1),
    spread(result.collectFastJson, 1),
    line.collectOverFloor.toFixed(2),
    line.serializeOverFloor.toFixed(1),
    line.fastProtoOverFloor.toFixed(1),
    line.fastJsonOverFloor.toFixed(1),
    bytes(line.protoBytesPerExport),
    bytes(line.jsonBytesPerExport),
    (line.collectPerVmMs * 1000).toFixed(1),
    line.qmpPerVmMs === null ? 'n/a' : spread((result.qmp as { perVm: Summary }).perVm, 2),
    line.qmpPerVmMs === null ? 'n/a' : `${Math.round(line.qmpPerVmMs / line.collectPerVmMs)}x`,
    `${bytes(line.retainedBytesPerFd)} (+ ${bytes(result.dataBytesPerFd)})`,
    bytes(result.rssBytesPerFd),
    bytes(line.allocatedBytesPerCycle),
    bytes(line.points),
    bytes(line.aggregatedPoints),
    spread(result.aggregated.collect),
    spread(result.aggregated.collectProto, 1),
    `${spread(result.collectPrometheus, 1)} (${line.prometheusTextOverFloor.toFixed(1)})`,
    `${spread(result.collectPrometheusGzip, 1)} (${line.prometheusGzipOverFloor.toFixed(1)})`,
    `${bytes(line.prometheusBytes)} (${bytes(line.prometheusGzipBytes)})`,
    result.sched ? spread(result.sched.collect) : 'n/a',
    line.schedPerVcpuUs === null ? 'n/a' : line.schedPerVcpuUs.toFixed(2),
    `${(line.changedBlocks * 100).toFixed(0)}%${line.busy ? ' (busy)' : ''}`,
    spread(result.floorCompare),
    'skipped' in result.cFloor ? 'n/a' : spread(result.cFloor),
    `${spread(result.agentCycle, 1)} (${line.agentCycleOverFloor.toFixed(2)})`,
  ];
  return `| ${cells.join(' | ')} |\n`;
}

/** "12.3 (1.9 / 6.1)": a stage's median ms, and its ratios to the koffi and the C floor (a
 * stage's: those of its own round; a floor's: those of the first round). */
function stageCell(summary: Summary | Stage, result: SizeResult): string {
  const ratio = (floor: number) => (summary.median / floor).toFixed(summary.median / floor < 10 ? 2 : 1);
  const floorMs = 'floorMs' in summary ? summary.floorMs : result.floor.median;
  const cFloorMs = 'floorMs' in summary ? summary.cFloorMs : 'skipped' in result.cFloor ? null : result.cFloor.median;
  return `${summary.median.toFixed(summary.median < 10 ? 2 : 1)} (${ratio(floorMs)} / ${cFloorMs === null ? 'n/a' : ratio(cFloorMs)})`;
}

/**
 * Every per-collection stage beside both floors, a column per size: the table docs/performance.md
 * and the README take. Each cell: median ms (over the koffi pread floor / over the C pread floor).
 */
export function stagesTable(results: readonly SizeResult[]): string {
  const stages: [string, (result: SizeResult) => string][] = [
    ['pread floor, koffi (a call per fd)', (r) => stageCell(r.floor, r)],
    ['pread floor, C (one call for all)', (r) => ('skipped' in r.cFloor ? 'n/a' : stageCell(r.cFloor, r))],
    ['collect()', (r) => stageCell(r.collect, r)],
    ['agent cycle: read + OTLP protobuf', (r) => stageCell(r.agentCycle, r)],
    ['collect + OTLP protobuf', (r) => stageCell(r.collectFastProto, r)],
    ['collect + OTLP JSON', (r) => stageCell(r.collectFastJson, r)],
    ['collect + Prometheus text', (r) => stageCell(r.collectPrometheus, r)],
    ['collect + Prometheus text + gzip', (r) => stageCell(r.collectPrometheusGzip, r)],
    ['collect + official OTLP protobuf serializer', (r) => stageCell(r.collectProto, r)],
    ['collect + official OTLP JSON serializer', (r) => stageCell(r.collectJson, r)],
  ];
  const sizes = results.map((r) => `${r.fds.toLocaleString('en-US')} fds: ms (/ koffi floor / C floor)`);
  const rows = stages.map(([name, cell]) => `| ${name} | ${results.map(cell).join(' | ')} |\n`);
  return `| stage | ${sizes.join(' | ')} |\n| --- |${results.map(() => ' ---: |').join('')}\n${rows.join('')}`;
}

export function sustainedText(result: SustainedResult): string {
  return (
    `${result.fds.toLocaleString('en-US')} stats fds collected at ${result.hz} Hz for ${result.seconds.toFixed(1)} s: ` +
    `${result.cpuPercentOfOneCore.toFixed(1)}% of one core (CPU time of the process, not wall time); ${result.collections} collections, ${result.missed} missed; ` +
    `collect() ${spread(result.collectMs)} ms\n`
  );
}
