/**
 * Which gzip settings PrometheusTextExporter compresses a scrape with, from measurement: the CPU
 * time and the bytes on the wire of each zlib level 1 to 9, and of the cheaper settings zlib
 * offers besides (level 1 with more memory, the RLE and Huffman-only strategies), on a realistic
 * scrape body: the text of one collection of a fleet of saved images with a real kernel's layout
 * (image-fleet.ts; image fds, not KVM fds). The body is compressed as the exporter does it,
 * streamed through createGzip in its chunks; CPU time (process.cpuUsage, zlib's thread included),
 * medians. Prints a markdown table. Brotli is left out: Prometheus does not accept it.
 *
 *   node --import tsx scripts/measure-gzip-level.ts [--sizes 2500,10000] [--vcpus 4] [--passes 5]
 */
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type ZlibOptions, constants as zlib } from 'node:zlib';
import { PrometheusTextSerializer } from '../src/exporters/prometheus-text.js';
import { KvmStatsProducer } from '../src/otel/producer.js';
import { type StatsSource, closeSources } from '../src/sources/source.js';
import { fleetSources, gzippedBytes, imageFleet, kernelLayout } from './image-fleet.js';
import { cpuOf, median } from './metrics-tables.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '2500,10000' },
    vcpus: { type: 'string', default: '4' },
    passes: { type: 'string', default: '5' },
  },
});
const vcpus = Number(values.vcpus);
const passes = Number(values.passes);
const sizes = values.sizes!.split(',').map(Number);

const SETTINGS: [string, ZlibOptions][] = [
  ...Array.from({ length: 9 }, (_, i): [string, ZlibOptions] => [`level ${i + 1}`, { level: i + 1 }]),
  ['level 1, memLevel 9', { level: 1, memLevel: 9 }],
  ['level 2, memLevel 9', { level: 2, memLevel: 9 }],
  ['level 3, memLevel 9', { level: 3, memLevel: 9 }],
  ['level 1, Z_RLE', { level: 1, strategy: zlib.Z_RLE }],
  ['level 1, Z_HUFFMAN_ONLY', { level: 1, strategy: zlib.Z_HUFFMAN_ONLY }],
];


const layout = kernelLayout();
const rows: string[] = [];
for (const fds of sizes) {
  const fleet = imageFleet(fds / (1 + vcpus), vcpus, layout);
  let sources: StatsSource[] = [];
  let body: Buffer[];
  try {
    sources = fleetSources(fleet);
    const { resourceMetrics } = await new KvmStatsProducer({ sources, reuseDataPoints: true }).collect();
    // Copies: the body outlives the serializer's next scrape.
    body = [...new PrometheusTextSerializer().chunks(resourceMetrics)].map((chunk) => Buffer.from(chunk));
  } finally {
    closeSources(sources);
    rmSync(fleet.dir, { recursive: true, force: true });
  }
  const textBytes = body.reduce((sum, chunk) => sum + chunk.length, 0);
  // Pass by pass, every setting in turn, so that a machine's load falls on all alike.
  for (const [, options] of SETTINGS) await gzippedBytes(body, options);
  const cpu = SETTINGS.map(() => [] as number[]);
  const bytes = SETTINGS.map(() => 0);
  for (let pass = 0; pass < passes; pass++) {
    for (let s = 0; s < SETTINGS.length; s++) {
      cpu[s]!.push(await cpuOf(async () => (bytes[s] = await gzippedBytes(body, SETTINGS[s]![1]))));
    }
  }
  const n = (count: number): string => count.toLocaleString('en-US');
  SETTINGS.forEach(([name], s) => {
    const ms = median(cpu[s]!);
    rows.push(`| ${n(fds)} | ${name} | ${n(Math.round(ms))} | ${n(bytes[s]!)} | ${(textBytes / bytes[s]!).toFixed(1)} | ${(textBytes / 1e6 / (ms / 1000)).toFixed(0)} |`);
  });
  console.error(rows.slice(-SETTINGS.length).join('\n'));
}
console.log(`Prometheus text of one collection, image fds laid out as ${layout.kernel}'s, ${vcpus} vCPUs per VM; CPU ms of one gzip of the body, median of ${passes}\n`);
console.log('| fds | gzip settings | CPU ms | bytes on the wire | text / gzip | MB of text per CPU second |');
console.log('| ---: | --- | ---: | ---: | ---: | ---: |');
for (const row of rows) console.log(row);
