/**
 * The text outputs' cost per collection on a fleet of saved images with a real kernel's layout
 * (image-fleet.ts; image fds, not KVM fds): the koffi pread floor of the same fds, collect(),
 * collect + OTLP JSON (OtlpJsonEncoder), collect + Prometheus text (PrometheusTextSerializer's
 * chunks, each given back once counted) and the same through gzip as PrometheusTextExporter
 * compresses a scrape (gzipText; a build without it, as the exporter did then). CPU time per
 * pass (process.cpuUsage: zlib's thread included, a loaded machine's waits not), medians, each
 * stage beside the floor of the same passes. Numbers for a report, not test assertions.
 *
 * `--changing` rewrites every image before each pass (outside the timing) as a busy host's
 * values move between two collections (image-fleet.ts, valuesFor's step): every counter and
 * bucket that moves has moved. Without it the values stay, as an idle host's mostly do.
 *
 * `--base DIR` measures a second copy of src/ too (say, the previous commit's:
 * `git archive HEAD~1 src | tar -x -C .base`), its encoders over the same collections, pass by
 * pass in turn with this one's, so that a machine's load falls on both alike.
 *
 *   node --import tsx scripts/measure-text-outputs.ts [--sizes 2500,10000] [--vcpus 4] [--passes 15] [--changing] [--base DIR]
 */
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { pread } from '../src/native/libc.js';
import { KvmStatsProducer } from '../src/otel/producer.js';
import { type StatsSource, closeSources } from '../src/sources/source.js';
import { fleetSources, gzippedBytes, imageFleet, kernelLayout } from './image-fleet.js';
import { cpuOf, median } from './metrics-tables.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '2500,10000' },
    vcpus: { type: 'string', default: '4' },
    passes: { type: 'string', default: '15' },
    base: { type: 'string' },
    changing: { type: 'boolean', default: false },
  },
});
const vcpus = Number(values.vcpus);
const passes = Number(values.passes);
const sizes = values.sizes!.split(',').map(Number);
for (const size of sizes) if (!Number.isInteger(size / (1 + vcpus))) throw new Error(`--sizes: ${size} fds is not a whole number of VMs of ${vcpus} vCPUs`);

/** The encoders of one copy of src/. */
interface Encoders {
  readonly name: string;
  readonly json: { encode(metrics: ResourceMetrics): Uint8Array; release(bytes: Uint8Array): void };
  readonly prometheus: { chunks(metrics: ResourceMetrics): Iterable<Buffer>; release?(chunk: Buffer): void };
  /** Collect + text + gzip: the bytes on the wire. */
  gzip(metrics: ResourceMetrics): Promise<number>;
}

async function encoders(dir: string, name: string): Promise<Encoders> {
  const json = await import(resolve(dir, 'exporters/otlp-json.ts'));
  const text = await import(resolve(dir, 'exporters/prometheus-text.ts'));
  const exporter = await import(resolve(dir, 'exporters/prometheus-exporter.ts'));
  // Before the level was decided from measurement, the exporter used level 1 (Z_BEST_SPEED).
  const level: number = exporter.PROMETHEUS_GZIP_LEVEL ?? 1;
  const prometheus = new text.PrometheusTextSerializer();
  const gzip = async (metrics: ResourceMetrics): Promise<number> => {
    if (!exporter.gzipText) return gzippedBytes(prometheus.chunks(metrics), { level });
    let bytes = 0;
    await exporter.gzipText(prometheus, metrics, level, (piece: Buffer) => (bytes += piece.length));
    return bytes;
  };
  return { name, json: new json.OtlpJsonEncoder(), prometheus, gzip };
}


const builds = [await encoders(resolve('src'), 'this')];
if (values.base) builds.push(await encoders(resolve(values.base), `base (${values.base})`));
const layout = kernelLayout();
console.log(`image fds laid out as ${layout.kernel}'s; ${vcpus} vCPUs per VM; values ${values.changing ? 'moving before every pass' : 'staying'}; CPU ms per pass, medians of ${passes} passes\n`);
console.log('| fds | build | floor | collect | collect + JSON | collect + Prometheus text | collect + text + gzip | JSON / floor | text / floor | gzip / floor | JSON bytes | text bytes | gzip bytes |');
console.log('| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const fds of sizes) {
  const vms = fds / (1 + vcpus);
  const fleet = imageFleet(vms, vcpus, layout);
  let sources: StatsSource[] = [];
  try {
    sources = fleetSources(fleet);
    const scratch = new Uint8Array(Math.max(...sources.map((s) => s.file.table.dataSize)));
    const floor = (): void => {
      for (const { file } of sources) pread(file.fd, scratch, file.table.dataSize, file.header.dataOffset);
    };
    const producer = new KvmStatsProducer({ sources, reuseDataPoints: true });
    const collect = async (): Promise<ResourceMetrics> => {
      const { resourceMetrics, errors } = await producer.collect();
      if (errors.length > 0) throw new Error(`collecting the image fleet failed: ${String(errors[0])}`);
      return resourceMetrics;
    };
    const bytes = builds.map(() => ({ json: 0, text: 0, gzip: 0 }));
    const stepsOf = (build: Encoders, b: number): (() => unknown)[] => [
      async () => {
        const out = build.json.encode(await collect());
        bytes[b]!.json = out.length;
        build.json.release(out);
      },
      async () => {
        let n = 0;
        for (const chunk of build.prometheus.chunks(await collect())) {
          n += chunk.length;
          build.prometheus.release?.(chunk);
        }
        bytes[b]!.text = n;
      },
      async () => {
        bytes[b]!.gzip = await build.gzip(await collect());
      },
    ];
    const common = [floor, collect];
    const steps = builds.map(stepsOf);
    const times = { common: common.map(() => [] as number[]), builds: steps.map((list) => list.map(() => [] as number[])) };
    for (let pass = 0; pass < 3; pass++) for (const step of [...common, ...steps.flat()]) await step();
    let step = 0;
    const move = (): void => {
      if (values.changing) fleet.step(++step);
    };
    for (let pass = 0; pass < passes; pass++) {
      for (let s = 0; s < common.length; s++) {
        move();
        times.common[s]!.push(await cpuOf(common[s]!));
      }
      for (let b = 0; b < steps.length; b++) {
        for (let s = 0; s < steps[b]!.length; s++) {
          move();
          times.builds[b]![s]!.push(await cpuOf(steps[b]![s]!));
        }
      }
    }
    const [floorMs, collectMs] = times.common.map(median) as [number, number];
    builds.forEach((build, b) => {
      const [json, text, gzip] = times.builds[b]!.map(median) as [number, number, number];
      const ratio = (ms: number): string => `${(ms / floorMs).toFixed(1)}x`;
      const n = (count: number): string => count.toLocaleString('en-US');
      console.log(`| ${n(fds)} | ${build.name} | ${floorMs.toFixed(1)} | ${collectMs.toFixed(1)} | ${json.toFixed(1)} | ${text.toFixed(1)} | ${gzip.toFixed(1)} | ${ratio(json)} | ${ratio(text)} | ${ratio(gzip)} | ${n(bytes[b]!.json)} | ${n(bytes[b]!.text)} | ${n(bytes[b]!.gzip)} |`);
    });
  } finally {
    closeSources(sources);
    rmSync(fleet.dir, { recursive: true, force: true });
  }
}
