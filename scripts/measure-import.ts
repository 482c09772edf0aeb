/**
 * What importing the package costs beside sdk-metrics' own (numbers for docs/performance.md):
 * each case in a fresh Node.js process (scripts/import-probe.mjs), the cases taking turns run by
 * run so that a busy machine weighs on each alike; the median wall time of the import, and the
 * files it loads (counted in a run of its own, since the loader hook that sees them costs time).
 *
 *   npm run build && node --import tsx scripts/measure-import.ts [--runs 21] [--compare DIR]
 *
 * --compare DIR adds the import of another built checkout's dist/index.js (e.g. an older commit).
 */
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = join(import.meta.dirname, '..');
const PROBE = join(ROOT, 'scripts', 'import-probe.mjs');
const { values } = parseArgs({ options: { runs: { type: 'string', default: '21' }, compare: { type: 'string' } } });
const runs = Number(values.runs);

interface Case {
  readonly name: string;
  readonly specifier: string;
  /** Make a KvmOtlpMetricExporter of this protocol after the import. */
  readonly exporter?: string;
}

const cases: Case[] = [
  { name: '@opentelemetry/sdk-metrics', specifier: '@opentelemetry/sdk-metrics' },
  { name: 'kvm-stats-otel', specifier: 'kvm-stats-otel' },
  { name: 'kvm-stats-otel, then new KvmOtlpMetricExporter (http/protobuf)', specifier: 'kvm-stats-otel', exporter: 'http/protobuf' },
  { name: 'kvm-stats-otel, then new KvmOtlpMetricExporter (grpc)', specifier: 'kvm-stats-otel', exporter: 'grpc' },
  ...(values.compare ? [{ name: `${values.compare}/dist/index.js`, specifier: join(values.compare, 'dist', 'index.js') }] : []),
];

interface Probe {
  ms: number;
  files?: string[];
  exporterMs?: number;
  exporterFiles?: string[];
}

function probe(c: Case, files: boolean): Probe {
  const args = [PROBE, c.specifier, ...(files ? ['--files'] : []), ...(c.exporter ? ['--exporter', c.exporter] : [])];
  return JSON.parse(execFileSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' })) as Probe;
}

/** The package a file belongs to ("own" for the package's own dist/). */
function packageOf(file: string): string {
  const match = /.*node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file);
  return match ? match[1]! : 'own';
}

function byPackage(files: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const file of files) counts.set(packageOf(file), (counts.get(packageOf(file)) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([name, count]) => `${name} ${count}`).join(', ');
}

function median(list: number[]): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function percentile(list: number[], p: number): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))]!;
}

console.log(`# load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}; Node.js ${process.version}; ${runs} runs per case, taking turns`);
const times = cases.map(() => [] as number[]);
const exporterTimes = cases.map(() => [] as number[]);
for (let run = 0; run < runs; run++) {
  cases.forEach((c, i) => {
    const result = probe(c, false);
    times[i]!.push(result.ms + (result.exporterMs ?? 0));
    if (result.exporterMs !== undefined) exporterTimes[i]!.push(result.exporterMs);
  });
}
console.log('| import | files loaded | ms, median (10th–90th percentile) | files by package |');
console.log('| --- | ---: | ---: | --- |');
cases.forEach((c, i) => {
  const files = probe(c, true);
  const all = [...(files.files ?? []), ...(files.exporterFiles ?? [])];
  const ms = times[i]!;
  const extra = c.exporter ? ` (the exporter alone: ${(files.exporterFiles ?? []).length} files, ${median(exporterTimes[i]!).toFixed(0)} ms: ${byPackage(files.exporterFiles ?? [])})` : '';
  console.log(`| ${c.name} | ${all.length} | ${median(ms).toFixed(0)} (${percentile(ms, 0.1).toFixed(0)}–${percentile(ms, 0.9).toFixed(0)}) | ${byPackage(files.files ?? [])}${extra} |`);
});
console.log(`# load average at end ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
