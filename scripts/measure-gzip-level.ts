/**
 * Which gzip settings PrometheusTextExporter compresses a scrape with, from measurement: the CPU
 * time and the bytes on the wire of each zlib level 1 to 9, and of the cheaper settings zlib
 * offers besides (level 1 with more memory, the RLE and Huffman-only strategies), on a realistic
 * scrape body: the text of one collection of a fleet of saved images with a real kernel's layout
 * (image-fleet.ts; image fds, not KVM fds). The body is compressed as the exporter does it,
 * streamed through createGzip in the serializer's chunks (DEFAULT_CHUNK_BYTES), and at the
 * exporter's level in writes of other sizes too (zlib's cost per write); CPU time
 * (process.cpuUsage, zlib's thread included), medians. Prints a markdown table. Brotli is left
 * out: Prometheus does not accept it.
 *
 *   node --import tsx scripts/measure-gzip-level.ts [--sizes 2500,10000] [--vcpus 4] [--passes 5]
 */
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type ZlibOptions, constants as zlib } from 'node:zlib';
import { PROMETHEUS_GZIP_LEVEL } from '../src/exporters/prometheus-exporter.js';
import { DEFAULT_CHUNK_BYTES, PrometheusTextSerializer } from '../src/exporters/prometheus-text.js';
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

/** A setting's name, zlib options and the bytes of each write into the gzip stream. */
const SETTINGS: [string, ZlibOptions, number][] = [
  ...Array.from({ length: 9 }, (_, i): [string, ZlibOptions, number] => [`level ${i + 1}`, { level: i + 1 }, DEFAULT_CHUNK_BYTES]),
  ['level 1, memLevel 9', { level: 1, memLevel: 9 }, DEFAULT_CHUNK_BYTES],
  ['level 2, memLevel 9', { level: 2, memLevel: 9 }, DEFAULT_CHUNK_BYTES],
  ['level 3, memLevel 9', { level: 3, memLevel: 9 }, DEFAULT_CHUNK_BYTES],
  ['level 1, Z_RLE', { level: 1, strategy: zlib.Z_RLE }, DEFAULT_CHUNK_BYTES],
  ['level 1, Z_HUFFMAN_ONLY', { level: 1, strategy: zlib.Z_HUFFMAN_ONLY }, DEFAULT_CHUNK_BYTES],
  ...[64, 256, 4096].map((kib): [string, ZlibOptions, number] => [`level ${PROMETHEUS_GZIP_LEVEL}, ${kib} KiB writes`, { level: PROMETHEUS_GZIP_LEVEL }, kib * 1024]),
];


const layout = kernelLayout();
const rows: string[] = [];
for (const fds of sizes) {
  const fleet = imageFleet(fds / (1 + vcpus), vcpus, layout);
  let sources: StatsSource[] = [];
  let body: Buffer;
  try {
    sources = fleetSources(fleet);
    const { resourceMetrics } = await new KvmStatsProducer({ sources, reuseDataPoints: true }).collect();
    body = Buffer.concat([...new PrometheusTextSerializer().chunks(resourceMetrics)]);
  } finally {
    closeSources(sources);
    rmSync(fleet.dir, { recursive: true, force: true });
  }
  const textBytes = body.length;
  const writes = SETTINGS.map(([, , bytes]) => Array.from({ length: Math.ceil(textBytes / bytes) }, (_, i) => body.subarray(i * bytes, (i + 1) * bytes)));
  // Pass by pass, every setting in turn, so that a machine's load falls on all alike.
  for (let s = 0; s < SETTINGS.length; s++) await gzippedBytes(writes[s]!, SETTINGS[s]![1]);
  const cpu = SETTINGS.map(() => [] as number[]);
  const bytes = SETTINGS.map(() => 0);
  for (let pass = 0; pass < passes; pass++) {
    for (let s = 0; s < SETTINGS.length; s++) {
      cpu[s]!.push(await cpuOf(async () => (bytes[s] = await gzippedBytes(writes[s]!, SETTINGS[s]![1]))));
    }
  }
  const n = (count: number): string => count.toLocaleString('en-US');
  SETTINGS.forEach(([name], s) => {
    const ms = median(cpu[s]!);
    rows.push(`| ${n(fds)} | ${name} | ${n(Math.round(ms))} | ${n(bytes[s]!)} | ${(textBytes / bytes[s]!).toFixed(1)} | ${(textBytes / 1e6 / (ms / 1000)).toFixed(0)} |`);
  });
  console.error(rows.slice(-SETTINGS.length).join('\n'));
}
console.log(`Prometheus text of one collection, image fds laid out as ${layout.kernel}'s, ${vcpus} vCPUs per VM; CPU ms of one gzip of the body (writes of ${DEFAULT_CHUNK_BYTES / 1024} KiB unless said), median of ${passes}\n`);
console.log('| fds | gzip settings | CPU ms | bytes on the wire | text / gzip | MB of text per CPU second |');
console.log('| ---: | --- | ---: | ---: | ---: | ---: |');
for (const row of rows) console.log(row);
