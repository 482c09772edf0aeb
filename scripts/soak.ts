/**
 * Soak: the agent's collection and export path (KvmStatsProducer on a PeriodicExportingMetricReader
 * with the OTLP/HTTP protobuf exporter) over 500 stats fds at 10 Hz, for 30 minutes by default,
 * while VMs come and go, into an OTLP sink on loopback. Every sample (after a forced GC) records
 * RSS (as it is, and once free C heap pages are handed back), heap, array buffers and open fds;
 * at the end it says whether anything grew after warm-up.
 *
 *   npm run soak -- [--minutes 30] [--vms 100] [--vcpus 4] [--hz 10] [--churn-seconds 5]
 *                   [--churn-vms 5] [--sample-seconds 60] [--json]
 *
 * Exit code 0 when nothing grew, 1 when something did, 2 for a bad flag.
 */
import { readdirSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { trimMallocHeap } from '../src/native/libc.js';
import { KvmStatsProducer } from '../src/otel/producer.js';
import { VmFleet } from '../src/bench/fleet.js';

const USAGE =
  'usage: npm run soak -- [--minutes 30] [--vms 100] [--vcpus 4] [--hz 10] [--churn-seconds 5] [--churn-vms 5] [--sample-seconds 60] [--json]\n';
let parsed: ReturnType<typeof parseSoakArgs>;
function parseSoakArgs() {
  return parseArgs({
    options: {
      minutes: { type: 'string', default: '30' },
      vms: { type: 'string', default: '100' },
      vcpus: { type: 'string', default: '4' },
      hz: { type: 'string', default: '10' },
      'churn-seconds': { type: 'string', default: '5' },
      'churn-vms': { type: 'string', default: '5' },
      'sample-seconds': { type: 'string', default: '60' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
}
try {
  parsed = parseSoakArgs();
} catch (error) {
  process.stderr.write(`soak: ${(error as Error).message}\n${USAGE}`);
  process.exit(2);
}
const flags = parsed.values;
if (flags.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const number = (name: 'minutes' | 'vms' | 'vcpus' | 'hz' | 'churn-seconds' | 'churn-vms' | 'sample-seconds'): number => {
  const value = Number(flags[name]);
  if (!(value > 0)) {
    process.stderr.write(`soak: --${name} must be a positive number, not ${JSON.stringify(flags[name])}\n`);
    process.exit(2);
  }
  return value;
};
const minutes = number('minutes');
const vmCount = number('vms');
const vcpus = number('vcpus');
const intervalMs = Math.round(1000 / number('hz'));
const churnMs = number('churn-seconds') * 1000;
const churnVms = Math.min(number('churn-vms'), vmCount);
const sampleMs = number('sample-seconds') * 1000;

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  process.stderr.write('soak: run with node --expose-gc (npm run soak does) so heap samples are comparable\n');
  process.exit(2);
}

// The OTLP sink: reads every request to the end and answers 200, keeping nothing.
let receivedBytes = 0;
const sink = createServer((request, response) => {
  request.on('data', (chunk: Buffer) => (receivedBytes += chunk.length));
  request.on('end', () => response.writeHead(200, { 'content-type': 'application/x-protobuf' }).end());
});
await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));

// VMs, each a fleet of one so they can come and go one by one.
let serial = 0;
const newVm = (): VmFleet => VmFleet.create({ vms: 1, vcpus, namePrefix: `soak-${serial++}` });
const vms: VmFleet[] = Array.from({ length: vmCount }, newVm);
const fdsPerVm = 1 + vcpus;

let exportsOk = 0;
let exportsFailed = 0;
const exporter = new OTLPMetricExporter({ url: `http://127.0.0.1:${(sink.address() as AddressInfo).port}/v1/metrics`, timeoutMillis: intervalMs });
const counting = {
  export: (...args: Parameters<typeof exporter.export>) =>
    exporter.export(args[0], (result) => {
      if (result.code === 0) exportsOk++;
      else exportsFailed++;
      args[1](result);
    }),
  forceFlush: () => exporter.forceFlush(),
  shutdown: () => exporter.shutdown(),
  selectAggregationTemporality: exporter.selectAggregationTemporality?.bind(exporter),
};
// As the agent runs it: points reused in place (its outputs serialize while exporting).
const producer = new KvmStatsProducer({ sources: () => vms.flatMap((vm) => vm.sources), reuseDataPoints: true });
const reader = new PeriodicExportingMetricReader({ exporter: counting, exportIntervalMillis: intervalMs, exportTimeoutMillis: intervalMs, metricProducers: [producer] });
const provider = new MeterProvider({ readers: [reader] });

const churn = setInterval(() => {
  for (const vm of vms.splice(0, churnVms)) vm.close();
  for (let i = 0; i < churnVms; i++) vms.push(newVm());
}, churnMs);

interface Sample {
  minute: number;
  rssMiB: number;
  /** RSS once the C heap's free pages went back to the kernel: the memory in use. */
  rssTrimmedMiB: number;
  heapUsedMiB: number;
  arrayBuffersMiB: number;
  fds: number;
  statsFds: number;
  exportsOk: number;
  exportsFailed: number;
  vmsMade: number;
  sentMiB: number;
}

const mib = (bytes: number): number => Math.round((bytes / 1048576) * 100) / 100;
const start = Date.now();
function sample(): Sample {
  gc!();
  const memory = process.memoryUsage();
  trimMallocHeap();
  return {
    minute: Math.round(((Date.now() - start) / 60_000) * 10) / 10,
    rssMiB: mib(memory.rss),
    rssTrimmedMiB: mib(process.memoryUsage.rss()),
    heapUsedMiB: mib(memory.heapUsed),
    arrayBuffersMiB: mib(memory.arrayBuffers),
    fds: readdirSync('/proc/self/fd').length,
    statsFds: vms.length * fdsPerVm,
    exportsOk,
    exportsFailed,
    vmsMade: serial,
    sentMiB: mib(receivedBytes),
  };
}

const samples: Sample[] = [];
const print = (s: Sample): void => {
  if (!flags.json) {
    process.stdout.write(
      `${String(s.minute).padStart(6)} min  rss ${s.rssMiB.toFixed(1).padStart(6)} MiB (trimmed ${s.rssTrimmedMiB.toFixed(1).padStart(6)})  heap ${s.heapUsedMiB.toFixed(1).padStart(6)} MiB  buffers ${s.arrayBuffersMiB.toFixed(1).padStart(5)} MiB  fds ${s.fds}  exports ${s.exportsOk} ok ${s.exportsFailed} failed  VMs made ${s.vmsMade}\n`,
    );
  }
};
if (!flags.json) {
  process.stdout.write(`soak: ${vmCount * fdsPerVm} stats fds (${vmCount} VMs x ${vcpus} vCPUs + VM), every ${intervalMs} ms, ${churnVms} VMs replaced every ${churnMs / 1000} s, for ${minutes} min\n`);
}
samples.push(sample());
print(samples[0]!);
const end = start + minutes * 60_000;
while (Date.now() < end) {
  await sleep(Math.min(sampleMs, end - Date.now()));
  samples.push(sample());
  print(samples.at(-1)!);
}

clearInterval(churn);
await provider.shutdown();
for (const vm of vms) vm.close();
sink.close();

// Warm-up is the first fifth of the run (at least one sample). After it, the first and the last
// third of the samples are compared: the heap by its median, RSS (trimmed) by its floor (its
// peaks are transient network and GC buffers), open fds exactly. A leak raises all three.
const warm = samples.slice(Math.max(1, Math.floor(samples.length / 5)));
const third = Math.max(1, Math.floor(warm.length / 3));
const [early, late] = [warm.slice(0, third), warm.slice(-third)];
const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const round = (value: number): number => Math.round(value * 100) / 100;
const growth = {
  heapUsedMiB: round(median(late.map((s) => s.heapUsedMiB)) - median(early.map((s) => s.heapUsedMiB))),
  rssFloorMiB: round(Math.min(...late.map((s) => s.rssTrimmedMiB)) - Math.min(...early.map((s) => s.rssTrimmedMiB))),
  fds: Math.max(...late.map((s) => s.fds)) - Math.max(...early.map((s) => s.fds)),
};
// Allowances: GC and allocator noise, not a trend (a leak of 1 KiB per VM made, or per export,
// would exceed them within minutes).
const grew = growth.heapUsedMiB > 2 || growth.rssFloorMiB > 16 || growth.fds !== 0;
const verdict = { minutes, statsFds: vmCount * fdsPerVm, intervalMs, vmsMade: serial, exportsOk, exportsFailed, growth, grew };
process.stdout.write(flags.json ? `${JSON.stringify({ samples, verdict })}\n` : `after warm-up: ${JSON.stringify(growth)} -> ${grew ? 'GREW' : 'steady'}\n`);
process.exit(grew ? 1 : 0);
