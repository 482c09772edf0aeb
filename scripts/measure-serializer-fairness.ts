/**
 * Why the bench's official-serializer columns read slower than an independent run of the same
 * shape (issue 20): the official OTLP serializers timed on the bench's image fleet (bench/
 * images.ts) one variable at a time, each in a fresh process so that none inherits another's heap:
 * data points reused or new (reuseDataPoints), alone or interleaved with the other serializer as
 * the bench's round does, values moving or not, and the young generation's size. Each variant
 * prints the median of its timed runs and the garbage collector's pauses inside them (a
 * PerformanceObserver on 'gc' entries), so that a difference can be put on GC or on the code.
 *
 *   npm run build && node --import tsx scripts/measure-serializer-fairness.ts [--fds 2500] [--runs 21]
 *   (some: --variants 'NAME;NAME'; one in this process: --variant NAME, as the script runs each)
 */
import { execFileSync } from 'node:child_process';
import { writeSync } from 'node:fs';
import { GCProfiler } from 'node:v8';
import { parseArgs } from 'node:util';
import { JsonMetricsSerializer, ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { ImageFleet } from '../src/bench/images.js';
import { KvmStatsProducer } from '../src/otel/producer.js';

const { values } = parseArgs({
  options: {
    fds: { type: 'string', default: '2500' },
    runs: { type: 'string', default: '21' },
    variant: { type: 'string' },
    variants: { type: 'string' },
  },
});
const fds = Number(values.fds);
const runs = Number(values.runs);

interface Variant {
  readonly reuse: boolean;
  /** Serializers timed in one round, in turn, as the bench times them. */
  readonly serializers: readonly ('json' | 'protobuf')[];
  readonly step: boolean;
  /** Every data block zeroed (as idle KVM fds hold mostly zeros). */
  readonly zeros?: boolean;
  /** Another fleet of this many fds held besides, unread: a bigger heap, as after a bigger size. */
  readonly ballastFds?: number;
  readonly nodeFlags: readonly string[];
  readonly note: string;
}

const VARIANTS: Record<string, Variant> = {
  'protobuf alone, new points': { reuse: false, serializers: ['protobuf'], step: false, nodeFlags: [], note: 'an independent run' },
  'protobuf alone, reused points': { reuse: true, serializers: ['protobuf'], step: false, nodeFlags: [], note: 'reuseDataPoints, as the bench' },
  'json then protobuf, reused points': { reuse: true, serializers: ['json', 'protobuf'], step: false, nodeFlags: [], note: "the bench's round" },
  'json then protobuf, new points': { reuse: false, serializers: ['json', 'protobuf'], step: false, nodeFlags: [], note: "the bench's round without reuse" },
  'json then protobuf, reused, values moving': { reuse: true, serializers: ['json', 'protobuf'], step: true, nodeFlags: [], note: "the bench's round on --images" },
  'json then protobuf, reused, 64 MiB semi-space': { reuse: true, serializers: ['json', 'protobuf'], step: false, nodeFlags: ['--max-semi-space-size=64'], note: 'a young generation a body fits in' },
  'protobuf alone, reused, values all zero': { reuse: true, serializers: ['protobuf'], step: false, zeros: true, nodeFlags: [], note: 'as idle KVM fds' },
  'protobuf alone, reused, 10,000 more fds held': { reuse: true, serializers: ['protobuf'], step: false, ballastFds: 10_000, nodeFlags: [], note: 'a bigger heap besides' },
  'protobuf alone, reused, --expose-gc': { reuse: true, serializers: ['protobuf'], step: false, nodeFlags: ['--expose-gc'], note: 'the flag the bench runs with' },
};

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function runVariant(name: string): Promise<void> {
  const variant = VARIANTS[name];
  if (!variant) throw new Error(`no variant ${name}: one of ${Object.keys(VARIANTS).join(', ')}`);
  const fleet = ImageFleet.create({ vms: fds / 5, vcpus: 4 });
  if (variant.zeros) for (const { file } of fleet.sources) writeSync(file.fd, new Uint8Array(file.table.dataSize), 0, file.table.dataSize, file.header.dataOffset);
  const ballast = variant.ballastFds ? ImageFleet.create({ vms: variant.ballastFds / 5, vcpus: 4, namePrefix: 'ballast' }) : undefined;
  const ballastProducer = ballast ? new KvmStatsProducer({ sources: ballast.sources, reuseDataPoints: true }) : undefined;
  await ballastProducer?.collect();
  const producer = new KvmStatsProducer({ sources: fleet.sources, reuseDataPoints: variant.reuse });
  const serialize = { json: JsonMetricsSerializer, protobuf: ProtobufMetricsSerializer };
  const times = new Map(variant.serializers.map((s) => [s, [] as number[]]));
  const gcs = new Map(variant.serializers.map((s) => [s, [] as number[]]));
  for (let i = 0; i < runs + 5; i++) {
    for (const s of variant.serializers) {
      if (variant.step) fleet.step();
      // Every collection the V8 GC profiler saw during the timed step, and what each cost.
      const profiler = new GCProfiler();
      profiler.start();
      const start = performance.now();
      const { resourceMetrics } = await producer.collect();
      serialize[s].serializeRequest(resourceMetrics);
      const took = performance.now() - start;
      const { statistics } = profiler.stop();
      if (i >= 5) {
        times.get(s)!.push(took);
        gcs.get(s)!.push(statistics.reduce((sum, gc) => sum + gc.cost, 0) / 1000);
      }
    }
  }
  fleet.close();
  ballast?.close();
  const cells = variant.serializers.map((s) => `${s} ${median(times.get(s)!).toFixed(0)} ms (GC ${median(gcs.get(s)!).toFixed(0)} ms)`);
  process.stdout.write(`| ${name} | ${variant.note} | ${cells.join('; ')} |\n`);
}

if (values.variant !== undefined) {
  await runVariant(values.variant);
} else {
  process.stdout.write(`The official serializers, collect + serialize at ${fds} image fds, median of ${runs} (GC pauses inside the timed runs)\n\n| variant | what | ms |\n| --- | --- | --- |\n`);
  const chosen = values.variants?.split(';') ?? Object.keys(VARIANTS);
  for (const [name, variant] of Object.entries(VARIANTS).filter(([name]) => chosen.includes(name))) {
    const out = execFileSync(process.execPath, [...variant.nodeFlags, '--import', 'tsx', new URL(import.meta.url).pathname, '--fds', String(fds), '--runs', String(runs), '--variant', name], { encoding: 'utf8' });
    process.stdout.write(out);
  }
}
