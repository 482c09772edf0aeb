/**
 * The collection path without KVM: KvmStatsProducer.collect() over saved images laid out as this
 * kernel's VM and vCPU stats fds (docs/metrics.md's descriptor tables: 16 VM stats, 47 vCPU stats
 * with three log2 histograms of 32 buckets), in CPU time per pass (process.cpuUsage, so that a
 * loaded machine's waits do not count), beside the pread floor of the same files. For changes to
 * the decoding on machines without /dev/kvm; `--dist DIR` measures another build (a copy of an
 * older dist/ beside a node_modules), so two builds can be compared in turns on the same host.
 *
 *   npm run build && node --import tsx scripts/measure-decode.ts [--vms 500] [--passes 200] [--dist dist] [--step NAME]
 *
 * Steps: floor, cumulative, delta, vm (summed per VM), new (new data points); default all.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AggregationTemporality } from '@opentelemetry/sdk-metrics';
import {
  KVM_STATS_BASE_POW10,
  KVM_STATS_BASE_POW2,
  KVM_STATS_TYPE_CUMULATIVE,
  KVM_STATS_TYPE_INSTANT,
  KVM_STATS_TYPE_LINEAR_HIST,
  KVM_STATS_TYPE_LOG_HIST,
  KVM_STATS_TYPE_PEAK,
  KVM_STATS_UNIT_BOOLEAN,
  KVM_STATS_UNIT_BYTES,
  KVM_STATS_UNIT_CYCLES,
  KVM_STATS_UNIT_NONE,
  KVM_STATS_UNIT_SECONDS,
} from '../src/abi/kvm.js';
import { type DescSpec, buildImage, writeImage } from '../test/helpers/image.js';

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '500' },
    passes: { type: 'string', default: '200' },
    dist: { type: 'string', default: 'dist' },
    // One step per process keeps the others' code shapes out of its figures.
    step: { type: 'string' },
  },
});
const vms = Number(values.vms);
const passes = Number(values.passes);
const dist = resolve(values.dist);
// The build measured, through its public entry (the same names in every build since 0.1.0).
const api = (await import(`${dist}/index.js`)) as typeof import('../src/index.js');

const TYPES: Record<string, number> = {
  cumulative: KVM_STATS_TYPE_CUMULATIVE,
  instant: KVM_STATS_TYPE_INSTANT,
  peak: KVM_STATS_TYPE_PEAK,
  'linear-histogram': KVM_STATS_TYPE_LINEAR_HIST,
  'log2-histogram': KVM_STATS_TYPE_LOG_HIST,
};
const UNITS: Record<string, number> = {
  none: KVM_STATS_UNIT_NONE,
  bytes: KVM_STATS_UNIT_BYTES,
  seconds: KVM_STATS_UNIT_SECONDS,
  cycles: KVM_STATS_UNIT_CYCLES,
  boolean: KVM_STATS_UNIT_BOOLEAN,
};

/** The descriptor table of one target from docs/metrics.md (`| stat | type | unit | base | exp | size | bucket size | ...`). */
function tableOf(markdown: string, heading: string): DescSpec[] {
  const section = markdown.slice(markdown.indexOf(heading));
  const rows = section.slice(section.indexOf('| stat | type |')).split('\n').slice(2);
  const descs: DescSpec[] = [];
  for (const row of rows) {
    if (!row.startsWith('| ')) break;
    const [name, type, unit, base, exponent, size, bucketSize] = row.split('|').slice(1).map((cell) => cell.trim());
    const count = Number(size);
    // Idle values: counters and buckets of a few thousand, as a guest that ran a while leaves them.
    const values = Array.from({ length: count }, (_, i) => (type!.endsWith('histogram') ? (i < 12 ? 1000 + i : 0) : 123_456 + i));
    descs.push({
      name: name!,
      type: TYPES[type!]!,
      unit: UNITS[unit!]!,
      base: base === '2' ? KVM_STATS_BASE_POW2 : KVM_STATS_BASE_POW10,
      exponent: Number(exponent),
      size: count,
      bucketSize: bucketSize === '' ? 0 : Number(bucketSize),
      values,
    });
  }
  if (descs.length === 0) throw new Error(`docs/metrics.md has no descriptor table under ${heading}`);
  return descs;
}

const markdown = readFileSync(new URL('../docs/metrics.md', import.meta.url), 'utf8');
const vmImage = buildImage({ id: 'kvm-1000', descs: tableOf(markdown, '## VM stats') });
const vcpuDescs = tableOf(markdown, '## vCPU stats');
const sources: import('../src/index.js').StatsSource[] = [];
for (let vm = 0; vm < vms; vm++) {
  const owner = { pid: 10_000 + vm, vmName: `vm-${vm}`, startTimeMs: 1_700_000_000_000 };
  sources.push(api.statsSource(api.StatsFile.openImage(writeImage(vmImage, 'vm')), owner, 'image'));
  for (let vcpu = 0; vcpu < 4; vcpu++) {
    const image = buildImage({ id: `kvm-${20_000 + vm}/vcpu-${vcpu}`, descs: vcpuDescs });
    sources.push(api.statsSource(api.StatsFile.openImage(writeImage(image, 'vcpu')), owner, 'image'));
  }
}
const files = sources.map((s) => s.file);
const scratch = new Uint8Array(Math.max(...files.map((f) => f.table.dataSize)));

async function cpuPerPass(step: () => unknown): Promise<number> {
  for (let i = 0; i < 30; i++) await step();
  const before = process.cpuUsage();
  for (let i = 0; i < passes; i++) await step();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000 / passes;
}

function collector(options: Partial<import('../src/index.js').KvmStatsProducerOptions>): () => Promise<void> {
  const producer = new api.KvmStatsProducer({ sources, reuseDataPoints: true, ...options });
  return async () => {
    const { errors } = await producer.collect();
    if (errors.length > 0) throw new Error(String(errors[0]));
  };
}

const STEPS: Record<string, [string, () => () => unknown]> = {
  floor: ['pread floor', () => () => files.forEach((file) => file.readInto(scratch))],
  cumulative: ['collect(), cumulative', () => collector({})],
  delta: ['collect(), delta', () => collector({ temporality: AggregationTemporality.DELTA })],
  vm: ['collect(), summed per VM', () => collector({ vcpuAggregation: 'vm' })],
  new: ['collect(), new data points', () => collector({ reuseDataPoints: false })],
};
if (values.step !== undefined && !STEPS[values.step]) throw new Error(`--step: one of ${Object.keys(STEPS).join(', ')}`);
const steps = Object.entries(STEPS)
  .filter(([key]) => values.step === undefined || key === values.step)
  .map(([, [name, make]]) => [name, make()] as const);
const results = new Map<string, number[]>();
try {
  for (let round = 0; round < 3; round++) {
    for (const [name, step] of steps) results.set(name, [...(results.get(name) ?? []), await cpuPerPass(step)]);
  }
  for (const [name, list] of results) {
    console.log(`${files.length} fds, ${name}: ${Math.min(...list).toFixed(2)} ms of CPU a pass (best of 3 rounds of ${passes}; all: ${list.map((v) => v.toFixed(2)).join(', ')})`);
  }
} finally {
  api.closeSources(sources);
}
