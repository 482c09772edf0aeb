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
 *   npm run build && node --import tsx scripts/measure-agent-otlp.ts [--fleet auto|kvm|images] [--vms 2000] [--vcpus 4] [--seconds 60] [--interval 1000] [--busy] [--cpu-prof DIR]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
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

interface Run {
  readonly exports: number;
  readonly cpuSeconds: number;
  readonly wallSeconds: number;
  readonly bytes: number;
  readonly rssMiB: number;
  readonly peakRssMiB: number;
}

/** The agent on a fleet of `count` VMs: warm-up (5 exports), then `measureSeconds` measured. */
async function runAgent(count: number, measureSeconds: number, nodeFlags: readonly string[] = []): Promise<Run> {
  const fleet = await startFleet(count);
  const args = [...fleet.args, '--endpoint', `http://127.0.0.1:${port}`, '--interval', String(interval), '--log-level', 'warn'];
  const agent =
    nodeFlags.length === 0
      ? startAgentProcess(args)
      : watchAgentProcess(spawn(process.execPath, [...nodeFlags, BIN, 'agent', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
  try {
    const pid = agent.child.pid!;
    // Warm-up: opening the fds, the first exports, the JIT.
    const exportsAtStart = exports;
    for (let waited = 0; exports - exportsAtStart < 5; waited++) {
      if (waited > 900) throw new Error(`the agent made ${exports - exportsAtStart} exports in 3 minutes: ${agent.stderr()}`);
      await sleep(200);
    }
    const rssMiB = statusMiB(pid, 'VmRSS');
    const cpuBefore = cpuSeconds(pid);
    const exportsBefore = exports;
    const bytesBefore = bytes;
    const began = performance.now();
    await sleep(measureSeconds * 1000);
    return {
      exports: exports - exportsBefore,
      cpuSeconds: cpuSeconds(pid) - cpuBefore,
      wallSeconds: (performance.now() - began) / 1000,
      bytes: bytes - bytesBefore,
      rssMiB,
      peakRssMiB: statusMiB(pid, 'VmHWM'),
    };
  } finally {
    await agent.stop('SIGTERM');
    fleet.stop();
  }
}

try {
  const fds = vms * (1 + vcpus);
  const small = await runAgent(1, 1);
  // --cpu-prof DIR: the measured agent writes a V8 CPU profile there when it exits.
  const profile = values['cpu-prof'] !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${values['cpu-prof']}`] : [];
  const run = await runAgent(vms, seconds, profile);
  const n = Math.max(run.exports, 1);
  const fleetText = fleetKind === 'images' ? 'stats images (memfd clones saved as files, read with --file; not KVM fds)' : `${busy ? 'busy' : 'idle'} VMs (KVM fds, read with --pid)`;
  console.log(
    `The agent exporting OTLP http/protobuf every ${interval} ms to a discarding sink on 127.0.0.1, ${fds.toLocaleString('en-US')} stats fds of ${fleetText}, over ${run.wallSeconds.toFixed(0)} s\n\n` +
      '| stats fds | exports | CPU, share of one core | CPU per export | body | RSS after warm-up | peak RSS | RSS per fd beyond one VM |\n' +
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n' +
      `| ${fds.toLocaleString('en-US')} | ${run.exports} | ${((run.cpuSeconds / run.wallSeconds) * 100).toFixed(1)}% | ${((run.cpuSeconds * 1000) / n).toFixed(0)} ms | ` +
      `${(run.bytes / n / 1e6).toFixed(2)} MB | ${run.rssMiB.toFixed(0)} MiB | ${run.peakRssMiB.toFixed(0)} MiB | ${(((run.rssMiB - small.rssMiB) * 1024 * 1024) / (fds - (1 + vcpus))).toFixed(0)} B |`,
  );
} finally {
  sink.close();
}
