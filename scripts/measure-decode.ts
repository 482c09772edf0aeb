/**
 * The collection path without KVM: KvmStatsProducer.collect() over saved images laid out as this
 * kernel's VM and vCPU stats fds (docs/metrics.md's descriptor tables: 16 VM stats, 47 vCPU stats
 * with three log2 histograms of 32 buckets), in CPU time per pass (process.cpuUsage, so that a
 * loaded machine's waits do not count), beside the pread floor of the same files. For changes to
 * the decoding on machines without /dev/kvm.
 *
 * `--dist DIR` (repeatable) measures a build (dist/ by default; a copy of an older dist/ beside a
 * node_modules for another). With several, each step's passes take turns between the builds,
 * pass by pass, each build on files of its own, so that a machine's load falls on all alike.
 *
 *   npm run build && node --import tsx scripts/measure-decode.ts [--vms 500] [--passes 200] [--dist DIR]... [--step NAME]
 *
 * Steps: floor, cumulative, delta, vm (summed per VM), new (new data points); default all.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AggregationTemporality } from '@opentelemetry/sdk-metrics';
import { buildImage, writeImage } from '../test/helpers/image.js';
import { cpuOf, median, tableOf } from './metrics-tables.js';

type Api = typeof import('../src/index.js');

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '500' },
    passes: { type: 'string', default: '200' },
    dist: { type: 'string', multiple: true, default: ['dist'] },
    step: { type: 'string' },
  },
});
const vms = Number(values.vms);
const passes = Number(values.passes);

const vmImage = writeImage(buildImage({ id: 'kvm-1000', descs: tableOf('## VM stats') }), 'vm');
const vcpuDescs = tableOf('## vCPU stats');
const vcpuImages = Array.from({ length: 4 }, (_, vcpu) => writeImage(buildImage({ id: `kvm-2000/vcpu-${vcpu}`, descs: vcpuDescs }), 'vcpu'));

/** One build, with files of its own: 500 VMs of 4 vCPUs by default, as the bench's fleet. */
interface Build {
  readonly name: string;
  readonly api: Api;
  readonly sources: import('../src/index.js').StatsSource[];
}

async function load(dir: string): Promise<Build> {
  // Through its public entry: the same names in every build since 0.1.0.
  const api = (await import(`${resolve(dir)}/index.js`)) as Api;
  const sources: import('../src/index.js').StatsSource[] = [];
  for (let vm = 0; vm < vms; vm++) {
    const owner = { pid: 10_000 + vm, vmName: `vm-${vm}`, startTimeMs: 1_700_000_000_000 };
    sources.push(api.statsSource(api.StatsFile.openImage(vmImage), owner, 'image'));
    for (const path of vcpuImages) sources.push(api.statsSource(api.StatsFile.openImage(path), owner, 'image'));
  }
  return { name: dir, api, sources };
}

const builds: Build[] = [];
for (const dir of values.dist) builds.push(await load(dir));

type Options = Partial<import('../src/index.js').KvmStatsProducerOptions>;
const STEPS: Record<string, [string, ((build: Build) => () => unknown) | Options]> = {
  floor: [
    'pread floor',
    ({ sources }) => {
      const scratch = new Uint8Array(Math.max(...sources.map((s) => s.file.table.dataSize)));
      return () => sources.forEach((source) => source.file.readInto(scratch));
    },
  ],
  cumulative: ['collect(), cumulative', {}],
  delta: ['collect(), delta', { temporality: AggregationTemporality.DELTA }],
  vm: ['collect(), summed per VM', { vcpuAggregation: 'vm' }],
  new: ['collect(), new data points', { reuseDataPoints: false }],
};
if (values.step !== undefined && !STEPS[values.step]) throw new Error(`--step: one of ${Object.keys(STEPS).join(', ')}`);

function stepOf(build: Build, make: ((build: Build) => () => unknown) | Options): () => unknown {
  if (typeof make === 'function') return make(build);
  const producer = new build.api.KvmStatsProducer({ sources: build.sources, reuseDataPoints: true, ...make });
  return async () => {
    const { errors } = await producer.collect();
    if (errors.length > 0) throw new Error(String(errors[0]));
  };
}

try {
  for (const [key, [name, make]] of Object.entries(STEPS)) {
    if (values.step !== undefined && key !== values.step) continue;
    const steps = builds.map((build) => stepOf(build, make));
    const times: number[][] = builds.map(() => []);
    for (let pass = 0; pass < 30; pass++) for (const step of steps) await step();
    for (let pass = 0; pass < passes; pass++) {
      for (let b = 0; b < steps.length; b++) times[b]!.push(await cpuOf(steps[b]!));
    }
    builds.forEach((build, b) => {
      const list = times[b]!;
      const label = builds.length > 1 ? `${build.name}: ` : '';
      console.log(`${label}${build.sources.length} fds, ${name}: median ${median(list).toFixed(2)} ms of CPU a pass, 10th percentile ${[...list].sort((x, y) => x - y)[Math.floor(list.length / 10)]!.toFixed(2)} (${passes} passes)`);
    });
  }
} finally {
  for (const build of builds) build.api.closeSources(build.sources);
}
