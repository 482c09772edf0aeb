/**
 * OtlpJsonEncoder's own cost per collection on the image fleet (image-fleet.ts; image fds, not
 * KVM fds): the koffi pread floor, collect(), and encode() of that collection's ResourceMetrics
 * timed apart from collect(), for this src/ and optionally a second copy (`--base DIR`, say
 * `git archive HEAD~1 src | tar -x -C /tmp/base` and `--base /tmp/base/src`), the two taking
 * turns on the very same ResourceMetrics, with the bytes checked equal. Also the memory the
 * encoder keeps between exports (heap and buffers after full GCs, against a run without it).
 * CPU ms per pass, medians. Numbers for a report, not test assertions.
 *
 * `--changing` moves every image before each pass (outside the timing), as a busy host's values
 * move. `--loop N` only collects once and encodes that N times (for `node --cpu-prof`), with the base's
 * encoder if there is one (a tsc-compiled dist/ keeps the lines a profile names).
 *
 *   node --expose-gc --import tsx scripts/measure-json.ts [--sizes 10000] [--vcpus 4] [--passes 21] [--changing] [--base DIR] [--loop N]
 */
import { existsSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { type StatsSource, closeSources } from '../src/sources/source.js';
import { fleetSources, floorAndCollect, imageFleet, kernelLayout } from './image-fleet.js';
import { cpuOf, median } from './metrics-tables.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10000' },
    vcpus: { type: 'string', default: '4' },
    passes: { type: 'string', default: '21' },
    base: { type: 'string' },
    changing: { type: 'boolean', default: false },
    loop: { type: 'string' },
  },
});
const vcpus = Number(values.vcpus);
const passes = Number(values.passes);
const sizes = values.sizes!.split(',').map(Number);
for (const size of sizes) if (!Number.isInteger(size / (1 + vcpus))) throw new Error(`--sizes: ${size} fds is not a whole number of VMs of ${vcpus} vCPUs`);

interface JsonEncoder {
  encode(metrics: ResourceMetrics): Uint8Array;
  release(bytes: Uint8Array): void;
}
/** The encoder of a copy of src/, or of a compiled one (whose lines a CPU profile names). */
const encoderClass = async (dir: string): Promise<new () => JsonEncoder> => {
  const ts = resolve(dir, 'exporters/otlp-json.ts');
  return (await import(existsSync(ts) ? ts : resolve(dir, 'exporters/otlp-json.js'))).OtlpJsonEncoder;
};
const builds = [{ name: 'this', Encoder: await encoderClass(resolve('src')) }];
if (values.base) builds.push({ name: `base (${values.base})`, Encoder: await encoderClass(resolve(values.base)) });

const gc = (globalThis as { gc?: () => void }).gc;
/** Heap and buffers after full GCs; array buffers are freed by a sweeper that runs apart. */
const retained = async (): Promise<number> => {
  for (let i = 0; i < 4; i++) {
    gc!();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
};

const n = (count: number): string => Math.round(count).toLocaleString('en-US');
const layout = kernelLayout();
if (values.loop === undefined) {
  console.log(`image fds laid out as ${layout.kernel}'s; ${vcpus} vCPUs per VM; values ${values.changing ? 'moving before every pass' : 'staying'}; CPU ms per pass, medians of ${passes}\n`);
  console.log('| fds | build | floor | collect | encode | encode, fastest | encode / the first build\'s (median of pairs of passes) | collect + encode / floor | JSON bytes | kept by the encoder, B/fd | of which its output buffer |');
  console.log('| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
}
for (const fds of sizes) {
  const fleet = imageFleet(fds / (1 + vcpus), vcpus, layout);
  let sources: StatsSource[] = [];
  try {
    sources = fleetSources(fleet);
    const { floor, collect } = floorAndCollect(sources);
    let step = 0;
    const move = (): void => {
      if (values.changing) fleet.step(++step);
    };
    if (values.loop !== undefined) {
      const encoder = new (builds.at(-1)!.Encoder)();
      const metrics = await collect();
      const ms: number[] = [];
      for (let i = 0; i < Number(values.loop); i++) ms.push(await cpuOf(() => encoder.release(encoder.encode(metrics))));
      console.log(`${n(fds)} fds: encode ${median(ms).toFixed(1)} ms (median), ${Math.min(...ms).toFixed(1)} ms (fastest) of ${ms.length}`);
      continue;
    }
    // What each encoder keeps: memory after encodes with it held, against the same without.
    const kept = builds.map(() => ({ all: 0, buffer: 0 }));
    if (gc) {
      await collect();
      // In a function of its own: a suspended async frame keeps its dead locals.
      const encodes = async (b: number): Promise<JsonEncoder> => {
        const encoder = new builds[b]!.Encoder();
        for (let i = 0; i < 3; i++) {
          const out = encoder.encode(await collect());
          kept[b]!.buffer = out.buffer.byteLength;
          encoder.release(out);
        }
        return encoder;
      };
      for (let b = 0; b < builds.length; b++) {
        const without = await retained();
        const held = [await encodes(b)];
        kept[b]!.all = (await retained()) - without;
        held.length = 0;
      }
    }
    const encoders = builds.map((build) => new build.Encoder());
    const times = { floor: [] as number[], collect: [] as number[], encode: builds.map(() => [] as number[]) };
    const bytes = builds.map(() => 0);
    for (let pass = -3; pass < passes; pass++) {
      move();
      const floorMs = await cpuOf(floor);
      let metrics: ResourceMetrics | undefined;
      const collectMs = await cpuOf(async () => {
        metrics = await collect();
      });
      const outputs: Buffer[] = [];
      // The builds take turns going first: the first encode of a collection reads its points
      // from colder caches, and the second pays for the first's garbage.
      const order = encoders.map((_, b) => b);
      if (pass % 2 !== 0) order.reverse();
      for (const b of order) {
        let out: Uint8Array | undefined;
        const ms = await cpuOf(() => {
          out = encoders[b]!.encode(metrics!);
        });
        bytes[b] = out!.length;
        if (encoders.length > 1) outputs.push(Buffer.from(out!));
        encoders[b]!.release(out!);
        if (pass >= 0) times.encode[b]!.push(ms);
      }
      if (outputs.length > 1 && !outputs[0]!.equals(outputs[1]!)) throw new Error(`pass ${pass}: the two builds wrote different JSON`);
      if (pass >= 0) {
        times.floor.push(floorMs);
        times.collect.push(collectMs);
      }
    }
    const floorMs = median(times.floor);
    const collectMs = median(times.collect);
    builds.forEach((build, b) => {
      const encodeMs = median(times.encode[b]!);
      const fastest = Math.min(...times.encode[b]!);
      // Over two passes, in which each build went first once.
      const own = times.encode[b]!;
      const first = times.encode[0]!;
      const relative = median(Array.from({ length: Math.floor(passes / 2) }, (_, k) => (own[2 * k]! + own[2 * k + 1]!) / (first[2 * k]! + first[2 * k + 1]!)));
      console.log(`| ${n(fds)} | ${build.name} | ${floorMs.toFixed(1)} | ${collectMs.toFixed(1)} | ${encodeMs.toFixed(1)} | ${fastest.toFixed(1)} | ${relative.toFixed(2)} | ${((collectMs + encodeMs) / floorMs).toFixed(2)}x | ${n(bytes[b]!)} | ${gc ? `${n(kept[b]!.all / fds)} | ${n(kept[b]!.buffer / fds)}` : 'n/a (--expose-gc) | n/a'} |`);
    });
  } finally {
    closeSources(sources);
    rmSync(fleet.dir, { recursive: true, force: true });
  }
}
