/**
 * The fused path (a producer paired with its exporter's frame, src/exporters/otlp-fused.ts)
 * beside what it replaces and the floor, per collection, on saved images laid out as this
 * kernel's VM and vCPU stats fds (docs/metrics.md's descriptor tables: 16 VM stats, 47 vCPU
 * stats with three log2 histograms of 32 buckets), VMs of 4 vCPUs, one file (fd) per image:
 * - the koffi pread floor: one readInto of every fd;
 * - collect() + OtlpProtobufEncoder: the plain producer (reused points) and the SDK's metrics
 *   through one reader, then the request encoded (the agent's cycle before the fused path);
 * - the fused cycle: src/bench/agent-cycle.ts's protobufCycle, what the agent does now.
 * CPU time per pass (process.cpuUsage), the steps taking turns pass by pass (every other pass
 * in the reverse order), medians. Figures are
 * on image fds, not KVM fds. Images hold the same values at every read (idle vCPUs) unless
 * `--busy`: then before each pass (untimed) every stat and histogram bucket of the images
 * moves on, as on vCPUs that run all the time, so that no series is the same as it was.
 * `--base DIR` times a second copy of src/ too (say, the previous commit's: `git archive HEAD~1
 * src | tar -x -C .base`), its fused cycle over the same fds, taking turns with the others.
 * `--fused-only` leaves the plain producer's step out: it runs this tree's producer and
 * points.ts on the plain path too, whose feedback then makes this tree's fused cycle slower
 * than the base's (a copy only the fused cycle runs) by 5 to 15% on the same code.
 *
 *   node --import tsx scripts/measure-fused.ts [--fds 2500,10000] [--passes 60] [--busy] [--base DIR] [--fused-only]
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { protobufCycle } from '../src/bench/agent-cycle.js';
import { OtlpProtobufEncoder } from '../src/exporters/otlp-protobuf.js';
import { KvmStatsProducer } from '../src/otel/producer.js';
import { type StatsSource, closeSources, statsSource } from '../src/sources/source.js';
import { StatsFile } from '../src/stats/stats-file.js';
import { buildImage, writeImage } from '../test/helpers/image.js';
import { cpuOf, median, tableOf } from './metrics-tables.js';

const { values } = parseArgs({
  options: {
    fds: { type: 'string', default: '2500,10000' },
    passes: { type: 'string', default: '60' },
    busy: { type: 'boolean', default: false },
    base: { type: 'string' },
    'fused-only': { type: 'boolean', default: false },
  },
});
const passes = Number(values.passes);
const baseCycle: typeof protobufCycle | undefined = values.base ? (await import(resolve(values.base, 'bench/agent-cycle.ts'))).protobufCycle : undefined;
const VCPUS = 4;

const vmImage = writeImage(buildImage({ id: 'kvm-1000', descs: tableOf('## VM stats') }), 'vm');
const vcpuDescs = tableOf('## vCPU stats');
const vcpuImages = Array.from({ length: VCPUS }, (_, vcpu) => writeImage(buildImage({ id: `kvm-2000/vcpu-${vcpu}`, descs: vcpuDescs }), 'vcpu'));

/** --busy: every value of every image moved on, in place (the fds read the new bytes). */
function moveOn(tick: number): void {
  const images: [string, Buffer][] = [[vmImage, buildImage({ id: 'kvm-1000', descs: tableOf('## VM stats', tick) })]];
  vcpuImages.forEach((path, vcpu) => images.push([path, buildImage({ id: `kvm-2000/vcpu-${vcpu}`, descs: tableOf('## vCPU stats', tick) })]));
  for (const [path, image] of images) {
    const fd = openSync(path, 'r+');
    writeSync(fd, image, 0, image.length, 0);
    closeSync(fd);
  }
}
let tick = 0;

function fleet(fds: number): StatsSource[] {
  const sources: StatsSource[] = [];
  for (let vm = 0; vm < fds / (1 + VCPUS); vm++) {
    const owner = { pid: 10_000 + vm, vmName: `vm-${vm}`, startTimeMs: 1_700_000_000_000 };
    sources.push(statsSource(StatsFile.openImage(vmImage), owner, 'image'));
    for (const path of vcpuImages) sources.push(statsSource(StatsFile.openImage(path), owner, 'image'));
  }
  return sources;
}

class Reader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** The agent's cycle before the fused path: collect() with reused points, then the encoder. */
function plainCycle(sources: StatsSource[]): { run(): Promise<number>; shutdown(): Promise<void> } {
  const producer = new KvmStatsProducer({ sources, reuseDataPoints: true });
  const reader = new Reader({ metricProducers: [producer] });
  const provider = new MeterProvider({ readers: [reader] });
  const cycles = provider.getMeter('kvm-stats-otel-bench').createCounter('bench.cycles');
  const encoder = new OtlpProtobufEncoder();
  return {
    async run() {
      cycles.add(1);
      const { resourceMetrics } = await reader.collect();
      const bytes = encoder.encode(resourceMetrics);
      encoder.release(bytes);
      return bytes.length;
    },
    shutdown: () => provider.shutdown(),
  };
}

for (const fds of values.fds!.split(',').map(Number)) {
  const sources = fleet(fds);
  try {
    const scratch = new Uint8Array(Math.max(...sources.map((s) => s.file.table.dataSize)));
    const plain = values['fused-only'] ? undefined : plainCycle(sources);
    const fused = protobufCycle({ sources });
    const base = baseCycle?.({ sources });
    const steps: [string, () => unknown][] = [['koffi pread floor', () => sources.forEach((source) => source.file.readInto(scratch))]];
    if (plain) steps.push(['collect() + OtlpProtobufEncoder', () => plain.run()]);
    steps.push(['fused cycle (agent-cycle.ts)', () => fused.run()]);
    if (base) steps.push([`fused cycle, base`, () => base.run()]);
    const sizes = [(await plain?.run()) ?? 0, await fused.run()];
    if (base && (await base.run()) !== sizes[1]) throw new Error('the base\'s fused request differs in size from this one\'s');
    const times = steps.map(() => [] as number[]);
    for (let pass = 0; pass < 10; pass++) for (const [, step] of steps) await step();
    for (let pass = 0; pass < passes; pass++) {
      // Every other pass in the reverse order, so that no step always follows the same one
      // (the one before leaves the caches its own way).
      for (let i = 0; i < steps.length; i++) {
        const s = pass % 2 === 0 ? i : steps.length - 1 - i;
        if (values.busy) moveOn(++tick);
        times[s]!.push(await cpuOf(steps[s]![1]));
      }
    }
    const floor = median(times[0]!);
    if (base) console.log(`  (base: ${values.base})`);
    console.log(`${fds} image fds${values.busy ? ', busy' : ''} (${passes} passes, CPU ms per collection, medians; requests ${sizes[0]} and ${sizes[1]} bytes)`);
    steps.forEach(([name], s) => console.log(`  ${name.padEnd(34)} ${median(times[s]!).toFixed(1).padStart(7)} ms  ${(median(times[s]!) / floor).toFixed(2)}x floor`));
    await plain?.shutdown();
    await fused.shutdown();
    await base?.shutdown();
  } finally {
    closeSources(sources);
  }
}
