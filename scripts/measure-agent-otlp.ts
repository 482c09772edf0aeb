/**
 * The agent's sustained cost through its real OTLP output (numbers for the README, not test
 * assertions): the built agent reads a fleet and exports OTLP http/protobuf every --interval ms
 * to a sink on 127.0.0.1 that reads each body, drops it and answers 200. The fleet (--fleet):
 * kvm, a process here holding VMs' stats fds (idle, or --busy: every vCPU runs its guest to a
 * halt once a second), read with --pid; or images (the default without /dev/kvm), the bench's
 * image fleet (bench/images.ts: the shipped recording's VM cloned, each VM its own pid, name and
 * ids) saved as raw images with their identities, one `--file` each, as `read --save` writes
 * them (their values do not move). Reported, as a Markdown table: the agent's CPU time (utime +
 * stime from /proc/PID/stat, every thread: the machine is shared, so wall time would measure the
 * neighbours) as a share of one core over --seconds, the exports and bytes the sink got, its RSS
 * after the warm-up and at its peak (VmHWM), and the RSS per fd beyond an agent reading one VM.
 *
 * --breakdown DIR: where that memory is. Both agents (one VM, and the fleet) get a preload here
 * (node --import, the product unchanged) that samples process.memoryUsage() every 10 ms (peaks,
 * and when), and over the measured span counts the V8 heap allocated (GC profiler) and samples
 * where (V8's sampling heap profiler, garbage included); at the end it reports the parts (V8
 * heap by space, external, array buffers; smaps_rollup and smaps by mapping) before and after a
 * full GC, and a heap snapshot of the fleet's agent after the GC (in DIR), summed by
 * constructor: per fd beyond the one-VM agent.
 *
 * --node-flags=FLAGS: node flags for both agents (V8's heap sizing, say; with "=", as the value
 * starts with "--"); --bin FILE: another build's dist/cli/main.js (a copy of dist made before a
 * change, beside a node_modules), for before/after runs.
 *
 *   npm run build && node --import tsx scripts/measure-agent-otlp.ts [--fleet auto|kvm|images] [--vms 2000] [--vcpus 4] [--seconds 60] [--interval 1000] [--busy] [--cpu-prof DIR] [--breakdown DIR] [--node-flags=FLAGS] [--bin FILE]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, ROOT, startAgentProcess, watchAgentProcess } from '../examples/local-collector/collector.js';
import { ImageFleet } from '../src/bench/images.js';
import { pread } from '../src/native/libc.js';
import { identityJson, identityPath } from '../src/sources/recording.js';

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '2000' },
    vcpus: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '60' },
    interval: { type: 'string', default: '1000' },
    busy: { type: 'boolean', default: false },
    fleet: { type: 'string', default: 'auto' },
    'cpu-prof': { type: 'string' },
    breakdown: { type: 'string' },
    'node-flags': { type: 'string' },
    bin: { type: 'string' },
  },
});
const fleetKind = values.fleet === 'auto' ? (existsSync('/dev/kvm') ? 'kvm' : 'images') : values.fleet;
if (fleetKind !== 'kvm' && fleetKind !== 'images') throw new Error(`--fleet: ${values.fleet} is not auto, kvm or images`);
if (fleetKind === 'images' && values.busy) throw new Error('--busy: only with --fleet kvm (saved images have no guests)');
const vms = Number(values.vms);
const vcpus = Number(values.vcpus);
const seconds = Number(values.seconds);
const interval = Number(values.interval);
const busy = values.busy!;
/** --bin: another build of the command line (a copy of dist from before a change), for before/after runs. */
const bin = values.bin ?? BIN;

/** CPU seconds (user + system, all threads) of a process so far, and its RSS peak in MiB. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
  return ticks / 100; // USER_HZ is 100 on Linux
}
function statusMiB(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

// The sink: reads and drops every body, answers 200 with an empty ExportMetricsServiceResponse.
let exports = 0;
let bytes = 0;
const sink = createServer((req, res) => {
  req.on('data', (chunk: Buffer) => (bytes += chunk.length));
  req.on('end', () => {
    exports++;
    res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
  });
});
sink.listen(0, '127.0.0.1');
await once(sink, 'listening');
const { port } = sink.address() as { port: number };

/** `vms` VMs of the image fleet saved as raw images with their identities; the --file args. */
function savedImages(dir: string, count: number): string[] {
  const fleet = ImageFleet.create({ vms: count, vcpus, namePrefix: 'otlp' });
  try {
    return fleet.sources.flatMap(({ file }, i) => {
      const source = fleet.sources[i]!;
      const image = new Uint8Array(file.header.dataOffset + file.table.dataSize);
      pread(file.fd, image, image.length, 0);
      const path = join(dir, `${file.id.replace('/', '.')}.kvmstats`);
      writeFileSync(path, image);
      writeFileSync(identityPath(path), identityJson(source, Date.now()));
      return ['--file', path];
    });
  } finally {
    fleet.close();
  }
}

/** A fleet for the agent: the agent's source args, and how to let it go. */
async function startFleet(count: number): Promise<{ args: string[]; stop: () => void }> {
  if (fleetKind === 'images') {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-stats-otel-agent-otlp-'));
    return { args: savedImages(dir, count), stop: () => rmSync(dir, { recursive: true, force: true }) };
  }
  // The holder: a fleet whose stats fds stay open until it is killed; busy, its guests take a
  // turn every second.
  const holderCode = `import { VmFleet } from ${JSON.stringify(join(ROOT, 'src/bench/fleet.ts'))};
const fleet = ${busy ? 'await VmFleet.createBusy' : 'VmFleet.create'}({ vms: ${count}, vcpus: ${vcpus}, namePrefix: 'otlp' });
console.log('ready ' + fleet.sources.length);
${busy ? 'for (;;) { const t = Date.now(); await fleet.step(); await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - t)))); }' : 'setInterval(() => undefined, 1 << 30);'}`;
  const holder: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', holderCode], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    holder.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && resolve());
    holder.once('exit', (code) => reject(new Error(`the fleet holder exited with ${code}`)));
  });
  return { args: ['--pid', String(holder.pid)], stop: () => holder.kill('SIGTERM') };
}

/** The breakdown preload (--breakdown): samples the agent's memoryUsage() parts every 10 ms for
 * their peaks; on SIGUSR2 writes its parts now and after a full GC, and a heap snapshot if asked. */
const BREAKDOWN_PRELOAD = `import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import v8 from 'node:v8';
// What allocates: V8's sampling heap profiler over the measured span, garbage included.
const session = new Session();
session.connect();
const post = (method, params) => new Promise((resolve, reject) => session.post(method, params, (error, result) => (error ? reject(error) : resolve(result))));
const KEYS = ['rss', 'heapTotal', 'heapUsed', 'external', 'arrayBuffers'];
const peak = Object.fromEntries(KEYS.map((k) => [k, 0]));
const peakAt = Object.fromEntries(KEYS.map((k) => [k, 0]));
setInterval(() => {
  const m = process.memoryUsage();
  for (const k of KEYS) if (m[k] > peak[k]) (peak[k] = m[k]), (peakAt[k] = performance.now());
}, 10).unref();
function parts() {
  const smaps = {};
  for (const line of readFileSync('/proc/self/smaps_rollup', 'utf8').split('\\n')) {
    const m = /^(\\w+):\\s+(\\d+) kB/.exec(line);
    if (m) smaps[m[1]] = Number(m[2]) * 1024;
  }
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }]));
  const h = v8.getHeapStatistics();
  return { memory: process.memoryUsage(), spaces, smaps, malloced: h.malloced_memory, peakMalloced: h.peak_malloced_memory };
}
// The first SIGUSR2 marks the measured span's start: from then on the GC profiler counts what
// each collection freed, so the heap allocated over the span is known; the second reports.
let marked;
process.on('SIGUSR2', () => {
  if (marked === undefined) {
    const profiler = new v8.GCProfiler();
    profiler.start();
    marked = { profiler, used: v8.getHeapStatistics().used_heap_size };
    void post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    return;
  }
  void post('HeapProfiler.stopSampling').then(({ profile }) => writeFileSync(process.env.KVM_STATS_BREAKDOWN_OUT + '.heapprofile', JSON.stringify(profile)));
  const { statistics } = marked.profiler.stop();
  let freed = 0;
  for (const gc of statistics) freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize;
  const allocated = v8.getHeapStatistics().used_heap_size - marked.used + freed;
  const gcs = statistics.length;
  const before = parts();
  globalThis.gc();
  const after = parts();
  const file = process.env.KVM_STATS_BREAKDOWN_SNAPSHOT;
  if (file) v8.writeHeapSnapshot(file);
  writeFileSync(process.env.KVM_STATS_BREAKDOWN_OUT, JSON.stringify({ before, after, peak, peakAt, now: performance.now(), allocated, gcs }));
});
`;

interface Parts {
  readonly memory: Record<string, number>;
  readonly spaces: Record<string, { size: number; used: number }>;
  readonly smaps: Record<string, number>;
  readonly malloced: number;
  readonly peakMalloced: number;
}
interface Breakdown {
  readonly before: Parts;
  readonly after: Parts;
  readonly peak: Record<string, number>;
  /** When each peak was, ms from the agent's start, and when the breakdown was taken. */
  readonly peakAt: Record<string, number>;
  readonly now: number;
  /** V8 heap allocated over the measured span, and the garbage collections in it. */
  readonly allocated: number;
  readonly gcs: number;
  /** /proc/PID/smaps summed by kind of mapping: RSS of the brk heap, anonymous, file-backed. */
  readonly mappings: Record<string, number>;
}

/** RSS of the agent's mappings by kind, from /proc/PID/smaps: malloc's brk heap, other anonymous
 * mappings (V8's pages, malloc's mmap'ed arenas and large blocks), files (code), stacks. */
function mappingsRss(pid: number): Record<string, number> {
  const sums: Record<string, number> = {};
  let kind = 'anonymous';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1]!;
      kind = name === '' ? 'anonymous' : name === '[heap]' ? 'brk heap' : name.startsWith('[') ? name : name.includes('memfd:') ? 'memfd' : 'files';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) sums[kind] = (sums[kind] ?? 0) + Number(rss[1]) * 1024;
  }
  return sums;
}

/** A heap snapshot's objects summed by kind and constructor: [name, count, self bytes], largest first. */
function snapshotSummary(file: string): [string, number, number][] {
  const snapshot = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snapshot.snapshot.meta.node_fields;
  const types = snapshot.snapshot.meta.node_types[0];
  const width = fields.length;
  const [typeAt, nameAt, sizeAt] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [number, number, number];
  const sums = new Map<string, [number, number]>();
  const { nodes, strings } = snapshot;
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + typeAt]!]!;
    let name = strings[nodes[i + nameAt]!]!;
    // Strings and code by kind only: their names are their contents.
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string' || type === 'code' || type === 'number') name = '';
    else if (name.length > 60) name = `${name.slice(0, 57)}...`;
    const key = `${type}${name ? ` ${name}` : ''}`;
    const sum = sums.get(key) ?? [0, 0];
    sum[0]++;
    sum[1] += nodes[i + sizeAt]!;
    sums.set(key, sum);
  }
  return [...sums].map(([key, [count, size]]) => [key, count, size] as [string, number, number]).sort((a, b) => b[2] - a[2]);
}

/** A sampling heap profile (garbage included) summed by function: [function at file:line, bytes], largest first. */
function allocationSummary(file: string): [string, number][] {
  interface Node {
    callFrame: { functionName: string; url: string; lineNumber: number };
    selfSize: number;
    children: Node[];
  }
  const { head } = JSON.parse(readFileSync(file, 'utf8')) as { head: Node };
  const sums = new Map<string, number>();
  const walk = (node: Node): void => {
    const { functionName, url, lineNumber } = node.callFrame;
    const key = `${functionName || '(anonymous)'} ${url.replace(/^.*\/(node_modules|dist)\//, '$1/')}:${lineNumber + 1}`;
    if (node.selfSize > 0) sums.set(key, (sums.get(key) ?? 0) + node.selfSize);
    node.children.forEach(walk);
  };
  walk(head);
  return [...sums].sort((a, b) => b[1] - a[1]);
}

interface Run {
  readonly exports: number;
  readonly cpuSeconds: number;
  readonly wallSeconds: number;
  readonly bytes: number;
  readonly rssMiB: number;
  readonly peakRssMiB: number;
  readonly breakdown?: Breakdown;
}

/** The breakdown of a run, if asked for: where the preload is, and where this agent writes. */
interface BreakdownFiles {
  readonly preload: string;
  readonly out: string;
  readonly snapshot?: string;
}

/** The agent on a fleet of `count` VMs: warm-up (5 exports), then `measureSeconds` measured. */
async function runAgent(count: number, measureSeconds: number, nodeFlags: readonly string[] = [], breakdown?: BreakdownFiles): Promise<Run> {
  const fleet = await startFleet(count);
  const args = [...fleet.args, '--endpoint', `http://127.0.0.1:${port}`, '--interval', String(interval), '--log-level', 'warn'];
  const flags = [...nodeFlags, ...(breakdown ? ['--expose-gc', '--import', breakdown.preload] : [])];
  const env = {
    ...process.env,
    ...(breakdown ? { KVM_STATS_BREAKDOWN_OUT: breakdown.out, ...(breakdown.snapshot ? { KVM_STATS_BREAKDOWN_SNAPSHOT: breakdown.snapshot } : {}) } : {}),
  };
  const agent =
    flags.length === 0 && bin === BIN
      ? startAgentProcess(args)
      : watchAgentProcess(spawn(process.execPath, [...flags, bin, 'agent', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }));
  try {
    const pid = agent.child.pid!;
    // Warm-up: opening the fds, the first exports, the JIT.
    const exportsAtStart = exports;
    for (let waited = 0; exports - exportsAtStart < 5; waited++) {
      if (waited > 900) throw new Error(`the agent made ${exports - exportsAtStart} exports in 3 minutes: ${agent.stderr()}`);
      await sleep(200);
    }
    const rssMiB = statusMiB(pid, 'VmRSS');
    if (breakdown) process.kill(pid, 'SIGUSR2');
    const cpuBefore = cpuSeconds(pid);
    const exportsBefore = exports;
    const bytesBefore = bytes;
    const began = performance.now();
    await sleep(measureSeconds * 1000);
    const run = {
      exports: exports - exportsBefore,
      cpuSeconds: cpuSeconds(pid) - cpuBefore,
      wallSeconds: (performance.now() - began) / 1000,
      bytes: bytes - bytesBefore,
      rssMiB,
      peakRssMiB: statusMiB(pid, 'VmHWM'),
    };
    if (!breakdown) return run;
    const mappings = mappingsRss(pid);
    process.kill(pid, 'SIGUSR2');
    for (let waited = 0; !existsSync(breakdown.out) || !existsSync(`${breakdown.out}.heapprofile`); waited++) {
      if (waited > 1500) throw new Error(`the agent wrote no breakdown in 5 minutes: ${agent.stderr()}`);
      await sleep(200);
    }
    await sleep(200);
    return { ...run, breakdown: { ...(JSON.parse(readFileSync(breakdown.out, 'utf8')) as Omit<Breakdown, 'mappings'>), mappings } };
  } finally {
    await agent.stop('SIGTERM');
    fleet.stop();
  }
}

/** The breakdown table: each part in MiB for one VM and the fleet, and per fd beyond one VM. */
function breakdownTable(small: Breakdown, big: Breakdown, fds: number): string {
  const rows: [string, (b: Breakdown) => number][] = [
    ['RSS (smaps_rollup)', (b) => b.before.smaps.Rss!],
    ['  anonymous', (b) => b.before.smaps.Anonymous!],
    ['  file-backed (code)', (b) => b.before.smaps.Rss! - b.before.smaps.Anonymous!],
    ...Object.keys(big.mappings).map((kind): [string, (b: Breakdown) => number] => [`  mappings: ${kind}`, (b) => b.mappings[kind] ?? 0]),
    ['V8 heap committed (heapTotal)', (b) => b.before.memory.heapTotal!],
    ['V8 heap used (heapUsed)', (b) => b.before.memory.heapUsed!],
    ...Object.keys(big.before.spaces).map((space): [string, (b: Breakdown) => number] => [`  ${space}: committed / used`, (b) => b.before.spaces[space]!.size]),
    ['external (off-heap, counted by V8)', (b) => b.before.memory.external!],
    ['  of which ArrayBuffers', (b) => b.before.memory.arrayBuffers!],
    ['V8 malloced (its own tables)', (b) => b.before.malloced],
    ['after a full GC: RSS', (b) => b.after.smaps.Rss!],
    ['after a full GC: heapTotal', (b) => b.after.memory.heapTotal!],
    ['after a full GC: heapUsed', (b) => b.after.memory.heapUsed!],
    ['after a full GC: external', (b) => b.after.memory.external!],
    ['after a full GC: arrayBuffers', (b) => b.after.memory.arrayBuffers!],
    ...['rss', 'heapTotal', 'heapUsed', 'external', 'arrayBuffers'].map((k): [string, (b: Breakdown) => number] => [`peak over the run (10 ms samples): ${k}`, (b) => b.peak[k]!]),
  ];
  const mib = (n: number): string => (n / 1024 / 1024).toFixed(1);
  const when = (b: Breakdown): string => `${(b.peakAt.rss! / 1000).toFixed(1)} s / ${(b.peakAt.external! / 1000).toFixed(1)} s of ${(b.now / 1000).toFixed(1)} s`;
  rows.push(['peak RSS / external, at (from the start)', () => NaN]);
  const lines = rows.map(([name, of]) => {
    if (name.startsWith('peak RSS / external, at')) return `| ${name} | ${when(small)} | ${when(big)} | |`;
    const used = name.endsWith('committed / used') ? (b: Breakdown) => b.before.spaces[name.trim().split(':')[0]!]!.used : undefined;
    const cell = (b: Breakdown): string => (used ? `${mib(of(b))} / ${mib(used(b))}` : mib(of(b)));
    const perFd = used ? `${((of(big) - of(small)) / fds).toFixed(0)} / ${((used(big) - used(small)) / fds).toFixed(0)}` : ((of(big) - of(small)) / fds).toFixed(0);
    return `| ${name} | ${cell(small)} | ${cell(big)} | ${perFd} |`;
  });
  return ['| part | one VM, MiB | fleet, MiB | per fd beyond one VM, B |', '| --- | ---: | ---: | ---: |', ...lines].join('\n');
}

try {
  const fds = vms * (1 + vcpus);
  const dir = values.breakdown;
  if (dir !== undefined) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'breakdown-preload.mjs'), BREAKDOWN_PRELOAD);
    for (const name of ['one-vm.json', 'fleet.json', 'fleet.heapsnapshot']) rmSync(join(dir, name), { force: true });
  }
  const files = (name: string, snapshot: boolean): BreakdownFiles | undefined =>
    dir === undefined ? undefined : { preload: join(dir, 'breakdown-preload.mjs'), out: join(dir, `${name}.json`), ...(snapshot ? { snapshot: join(dir, `${name}.heapsnapshot`) } : {}) };
  // --node-flags: for both agents, e.g. V8's heap sizing.
  const nodeFlags = values['node-flags']?.split(' ').filter((flag) => flag !== '') ?? [];
  const small = await runAgent(1, 1, nodeFlags, files('one-vm', false));
  // --cpu-prof DIR: the measured agent writes a V8 CPU profile there when it exits.
  const profile = values['cpu-prof'] !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${values['cpu-prof']}`] : [];
  const run = await runAgent(vms, seconds, [...nodeFlags, ...profile], files('fleet', true));
  const n = Math.max(run.exports, 1);
  const fleetText = fleetKind === 'images' ? 'stats images (memfd clones saved as files, read with --file; not KVM fds)' : `${busy ? 'busy' : 'idle'} VMs (KVM fds, read with --pid)`;
  console.log(
    `The agent${bin !== BIN ? ` of ${bin}` : ''}${nodeFlags.length > 0 ? ` (node ${nodeFlags.join(' ')})` : ''} exporting OTLP http/protobuf every ${interval} ms to a discarding sink on 127.0.0.1, ${fds.toLocaleString('en-US')} stats fds of ${fleetText}, over ${run.wallSeconds.toFixed(0)} s (load average ${loadavg().map((l) => l.toFixed(2)).join(', ')})\n\n` +
      '| stats fds | exports | CPU, share of one core | CPU per export | body | RSS after warm-up | peak RSS | RSS per fd beyond one VM |\n' +
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n' +
      `| ${fds.toLocaleString('en-US')} | ${run.exports} | ${((run.cpuSeconds / run.wallSeconds) * 100).toFixed(1)}% | ${((run.cpuSeconds * 1000) / n).toFixed(0)} ms | ` +
      `${(run.bytes / n / 1e6).toFixed(2)} MB | ${run.rssMiB.toFixed(0)} MiB | ${run.peakRssMiB.toFixed(0)} MiB | ${(((run.rssMiB - small.rssMiB) * 1024 * 1024) / (fds - (1 + vcpus))).toFixed(0)} B |`,
  );
  if (dir !== undefined) {
    const perFd = fds - (1 + vcpus);
    console.log(`\nWhere the memory is, at the end of the run (before a full GC unless said)\n\n${breakdownTable(small.breakdown!, run.breakdown!, perFd)}`);
    const { allocated, gcs } = run.breakdown!;
    console.log(`\nV8 heap allocated over the measured ${run.wallSeconds.toFixed(0)} s: ${(allocated / n / 1024 / 1024).toFixed(1)} MiB per export (${(allocated / n / fds).toFixed(0)} B per fd), ${gcs} garbage collections`);
    const allocations = allocationSummary(join(dir, 'fleet.json.heapprofile'));
    const sampled = allocations.reduce((sum, [, size]) => sum + size, 0);
    console.log(
      `\nWhere it was allocated (V8's sampling heap profiler, garbage included), the largest 15 functions\n\n| function | share of the sampled bytes | per export, KiB |\n| --- | ---: | ---: |\n` +
        allocations
          .slice(0, 15)
          .map(([where, size]) => `| ${where.replace(/\|/g, '\\|')} | ${((size / sampled) * 100).toFixed(1)}% | ${((size / sampled) * (allocated / n) / 1024).toFixed(0)} |`)
          .join('\n'),
    );
    const summary = snapshotSummary(join(dir, 'fleet.heapsnapshot')).slice(0, 40);
    console.log(
      `\nThe fleet's agent's heap after a full GC (${join(dir, 'fleet.heapsnapshot')}), by constructor: the largest 40\n\n| objects | count | per fd | self bytes | per fd, B |\n| --- | ---: | ---: | ---: | ---: |\n` +
        summary.map(([name, count, size]) => `| ${name.replace(/\|/g, '\\|')} | ${count} | ${(count / fds).toFixed(2)} | ${size} | ${(size / fds).toFixed(0)} |`).join('\n'),
    );
  }
} finally {
  sink.close();
}
