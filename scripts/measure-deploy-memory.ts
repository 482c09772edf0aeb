/**
 * The memory the deployment files ask for, from measurement: the built agent's peak RSS (VmHWM)
 * at stated fleet sizes for each output (OTLP http/protobuf and http/json to a discarding sink on
 * 127.0.0.1, Prometheus scraped with gzip as Prometheus scrapes, the console into a pipe that is
 * drained), over several exports or scrapes each. With --write it writes the table to
 * docs/deploy-memory.md and the memory request and limit derived from it (the rule is in that
 * page) into deploy/daemonset.yaml and deploy/kvm-stats-otel.service.
 *
 * The fleet: where /dev/kvm exists, idle VMs made by a holder process here (VmFleet) that the
 * agent reads with --pid, as it reads a VMM; elsewhere, saved stats images laid out as the kernel
 * of docs/metrics.md lays out its stats fds (its descriptor tables: the same stats, types, units,
 * sizes and order), one file per fd, read with --file. The page says which it measured on.
 *
 *   npm run build && node --import tsx scripts/measure-deploy-memory.ts [--fleet auto|kvm|images]
 *     [--sizes 250,1000,2500,10000] [--vcpus 4] [--cycles 5] [--outputs otlp-protobuf,otlp-json,prometheus,console]
 *     [--write] [--results FILE] [--render FILE]
 *
 * --results FILE keeps the run's figures as JSON; --render FILE writes the page (and with --write
 * the settings) from such a file instead of measuring.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, ROOT, type AgentProcess, freePort, startAgentProcess } from '../examples/local-collector/collector.js';
import { kernelLayout, imageFleet } from './image-fleet.js';

const OUTPUTS = ['otlp-protobuf', 'otlp-json', 'prometheus', 'console'] as const;
type Output = (typeof OUTPUTS)[number];

const { values } = parseArgs({
  options: {
    fleet: { type: 'string', default: 'auto' },
    sizes: { type: 'string', default: '250,1000,2500,10000' },
    vcpus: { type: 'string', default: '4' },
    cycles: { type: 'string', default: '5' },
    outputs: { type: 'string', default: OUTPUTS.join(',') },
    write: { type: 'boolean', default: false },
    results: { type: 'string' },
    render: { type: 'string' },
  },
});
const vcpus = Number(values.vcpus);
const cycles = Number(values.cycles);
const sizes = values.sizes!.split(',').map(Number);
const outputs = values.outputs!.split(',') as Output[];
for (const output of outputs) if (!OUTPUTS.includes(output)) throw new Error(`--outputs: ${output} is not one of ${OUTPUTS.join(', ')}`);
for (const size of sizes) if (!Number.isInteger(size / (1 + vcpus))) throw new Error(`--sizes: ${size} fds is not a whole number of VMs of ${vcpus} vCPUs (1 + ${vcpus} fds each)`);
const fleet = (values.fleet === 'auto' ? (existsSync('/dev/kvm') ? 'kvm' : 'images') : values.fleet) as 'kvm' | 'images';
if (fleet !== 'kvm' && fleet !== 'images') throw new Error(`--fleet: auto, kvm or images, not ${fleet}`);

/** The fleet size the deployment files are sized for, and the rule that turns peaks into settings. */
const SIZED_FOR_FDS = 2500;
const REQUEST_ROUND_MIB = 16;
const LIMIT_FACTOR = 1.5;
const LIMIT_ROUND_MIB = 32;

// ---- a fleet of real VMs, held by another process ----

async function kvmHolder(vms: number): Promise<ChildProcess> {
  const code = `import { VmFleet } from ${JSON.stringify(join(ROOT, 'src/bench/fleet.ts'))};
const fleet = VmFleet.create({ vms: ${vms}, vcpus: ${vcpus}, namePrefix: 'mem' });
console.log('ready ' + fleet.sources.length);
setInterval(() => undefined, 1 << 30);`;
  const holder = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    holder.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && resolve());
    holder.once('exit', (code) => reject(new Error(`the fleet holder exited with ${code}`)));
  });
  return holder;
}

// ---- the outputs ----

function statusMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

/** An OTLP/HTTP sink that reads every body, counts it, drops it and answers 200. */
async function otlpSink(): Promise<{ url: string; exports: () => number; bytes: () => number; close: () => void }> {
  let exports = 0;
  let bytes = 0;
  const server = createServer((req, res) => {
    let size = 0;
    req.on('data', (chunk: Buffer) => (size += chunk.length));
    req.on('end', () => {
      exports++;
      bytes = size;
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/x-protobuf' });
      res.end(req.headers['content-type'] === 'application/json' ? '{}' : undefined);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, exports: () => exports, bytes: () => bytes, close: () => server.close() };
}

/** One gzip scrape, as Prometheus sends it; the bytes on the wire. */
function scrape(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/metrics', headers: { 'accept-encoding': 'gzip' } }, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => (bytes += chunk.length));
      res.on('end', () => resolve(bytes));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, agent: AgentProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (agent.child.exitCode !== null) throw new Error(`the agent exited (${agent.child.exitCode}) before ${what}: ${agent.stderr().slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

interface Row {
  fds: number;
  output: Output;
  peakMiB: number;
  rssMiB: number;
  cycles: number;
  bytes: number;
  /** Why the agent did not get through the row, where it did not. */
  failed?: string;
}

async function measure(sourceArgs: string[], fds: number, output: Output): Promise<Row> {
  const timeoutMs = 120_000 + fds * 60;
  const common = ['--log-level', 'warn'];
  if (output === 'prometheus') {
    const port = await freePort();
    const agent = startAgentProcess([...sourceArgs, '--prometheus', `127.0.0.1:${port}`, '--interval', '600000', ...common]);
    try {
      await until('Prometheus endpoint', () => scrape(port).then(() => true, () => false), timeoutMs, agent);
      let bytes = 0;
      for (let i = 0; i < cycles; i++) bytes = await scrape(port);
      const pid = agent.child.pid!;
      return { fds, output, peakMiB: statusMiB(pid, 'VmHWM'), rssMiB: statusMiB(pid, 'VmRSS'), cycles: cycles + 1, bytes };
    } finally {
      await agent.stop('SIGTERM', 60_000);
    }
  }
  if (output === 'console') {
    // Spawned here rather than watched: its lines (tens of MB an export at 10,000 fds) go through
    // a pipe that is read line by line and dropped. Each export starts with a "# TIME export" line.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('OTEL_')));
    const child = spawn(process.execPath, [BIN, 'agent', ...sourceArgs, '--console', '--interval', '2000', ...common], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
    let exports = 0;
    let bytes = 0;
    let current = 0;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (/^# \S+ export: \d+ data points$/.test(line)) {
        if (exports > 0) bytes = current;
        exports++;
        current = 0;
      }
      current += line.length + 1;
    });
    const deadline = Date.now() + timeoutMs * cycles;
    try {
      while (exports <= cycles) {
        if (child.exitCode !== null) throw new Error(`the agent exited (${child.exitCode}) after ${exports} console exports: ${/^Error: .*$/m.exec(stderr)?.[0] ?? stderr.trim().split('\n').pop()}`);
        if (Date.now() > deadline) throw new Error(`no ${cycles} console exports within ${timeoutMs * cycles} ms`);
        await sleep(100);
      }
      const pid = child.pid!;
      return { fds, output, peakMiB: statusMiB(pid, 'VmHWM'), rssMiB: statusMiB(pid, 'VmRSS'), cycles: exports, bytes };
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
    }
  }
  const sink = await otlpSink();
  const protocol = output === 'otlp-json' ? 'http/json' : 'http/protobuf';
  const agent = startAgentProcess([...sourceArgs, '--endpoint', sink.url, '--protocol', protocol, '--interval', '2000', ...common]);
  try {
    await until(`${cycles} OTLP exports`, () => sink.exports() >= cycles, timeoutMs * cycles, agent);
    const pid = agent.child.pid!;
    return { fds, output, peakMiB: statusMiB(pid, 'VmHWM'), rssMiB: statusMiB(pid, 'VmRSS'), cycles: sink.exports(), bytes: sink.bytes() };
  } finally {
    await agent.stop('SIGTERM', 60_000);
    sink.close();
  }
}

// ---- the run ----

/** What one run measured: everything the page says. */
interface Results {
  date: string;
  fleet: 'kvm' | 'images';
  vcpus: number;
  /** The kernel whose layout the images have, and its stats per target (image fleets). */
  layout?: { kernel: string; vmStats: number; vcpuStats: number };
  host: { cpus: number; cpu: string; kernel: string; node: string };
  load: { start: number; end: number };
  rows: Row[];
}

async function run(): Promise<Results> {
  const date = new Date().toISOString().slice(0, 10);
  const loadAtStart = loadavg()[0]!;
  const layout = fleet === 'images' ? kernelLayout() : undefined;
  const rows: Row[] = [];
  for (const fds of sizes) {
    const vms = fds / (1 + vcpus);
    let sourceArgs: string[];
    let cleanup: () => void;
    if (fleet === 'kvm') {
      const holder = await kvmHolder(vms);
      sourceArgs = ['--pid', String(holder.pid)];
      cleanup = () => holder.kill('SIGTERM');
    } else {
      const images = imageFleet(vms, vcpus, layout!);
      sourceArgs = images.paths.flatMap((path) => ['--file', path]);
      cleanup = () => rmSync(images.dir, { recursive: true, force: true });
    }
    try {
      for (const output of outputs) {
        const row = await measure(sourceArgs, fds, output).catch((error: Error): Row => ({ fds, output, peakMiB: NaN, rssMiB: NaN, cycles: 0, bytes: 0, failed: error.message }));
        rows.push(row);
        if (row.failed) {
          console.log(`${fds} fds, ${output}: failed: ${row.failed}`);
          continue;
        }
        console.log(`${fds} fds, ${output}: peak RSS ${row.peakMiB.toFixed(0)} MiB (RSS at the end ${row.rssMiB.toFixed(0)} MiB) over ${row.cycles} ${output === 'prometheus' ? 'scrapes' : 'exports'} of ${row.bytes.toLocaleString('en-US')} bytes; load ${loadavg()[0]!.toFixed(2)}`);
      }
    } finally {
      cleanup();
    }
  }
  return {
    date,
    fleet,
    vcpus,
    ...(layout ? { layout: { kernel: layout.kernel, vmStats: layout.vm.length, vcpuStats: layout.vcpu.length } } : {}),
    host: { cpus: cpus().length, cpu: cpus()[0]?.model.trim() ?? 'unknown CPU', kernel: release(), node: process.version },
    load: { start: loadAtStart, end: loadavg()[0]! },
    rows,
  };
}

const results: Results = values.render ? (JSON.parse(readFileSync(values.render, 'utf8')) as Results) : await run();
if (values.results) writeFileSync(values.results, `${JSON.stringify(results, null, 1)}\n`);
const { rows } = results;

// ---- the settings, and the page ----

const roundUp = (mib: number, step: number): number => Math.ceil(mib / step) * step;
const at = rows.filter((row) => row.fds === SIZED_FOR_FDS);
const protobuf = at.find((row) => row.output === 'otlp-protobuf' && !row.failed);
const served = at.filter((row) => row.output !== 'console');
const settings =
  protobuf && served.length > 0 && served.every((row) => !row.failed)
    ? { requestMiB: roundUp(protobuf.peakMiB, REQUEST_ROUND_MIB), limitMiB: roundUp(Math.max(...served.map((row) => row.peakMiB)) * LIMIT_FACTOR, LIMIT_ROUND_MIB) }
    : undefined;

const perVm = 1 + results.vcpus;
const fleetText =
  results.fleet === 'kvm'
    ? `idle KVM VMs of ${results.vcpus} vCPUs made by a holder process (VmFleet), read by the agent with
\`--pid\` as it reads a VMM.`
    : `saved stats images, one file per stats fd (a VM image and ${results.vcpus} vCPU images per VM, every
id distinct), laid out as the stats fds of ${results.layout!.kernel} are (${results.layout!.vmStats} VM and ${results.layout!.vcpuStats} vCPU
stats: the descriptor tables of docs/metrics.md), with plausible values, read by the agent with
\`--file\`; the host had no /dev/kvm. Images carry no owner, so their series have no \`process.pid\`
or \`kvm.vm.name\`, which a VMM's carry: those attributes' bytes are not in these figures.`;
const table = [
  '| stats fds (VMs) | output | peak RSS (VmHWM) MiB | RSS at the end MiB | exports or scrapes | bytes of the last |',
  '| ---: | --- | ---: | ---: | ---: | ---: |',
  ...rows.map((row) =>
    row.failed
      ? `| ${row.fds.toLocaleString('en-US')} (${(row.fds / perVm).toLocaleString('en-US')}) | ${row.output} | failed: ${row.failed.replace(/\|/g, '\\|')} | | | |`
      : `| ${row.fds.toLocaleString('en-US')} (${(row.fds / perVm).toLocaleString('en-US')}) | ${row.output} | ${row.peakMiB.toFixed(0)} | ${row.rssMiB.toFixed(0)} | ${row.cycles} | ${row.bytes.toLocaleString('en-US')} |`,
  ),
];
const page = `# Memory for the deployment files

Generated by \`node --import tsx scripts/measure-deploy-memory.ts --write\` (${results.date}): do not edit by
hand; run it again on a host like yours. The agent's peak resident memory (VmHWM: the most it
ever held) at each fleet size and output, the built agent (\`dist/cli/main.js agent\`, reused data
points) run once per row:

- **otlp-protobuf**, **otlp-json**: OTLP over HTTP every 2 s to a sink on 127.0.0.1 that reads
  each body and drops it (the bytes are the last body);
- **prometheus**: \`--prometheus\`, scraped one scrape after another with \`Accept-Encoding: gzip\`,
  as Prometheus scrapes (the bytes are the last gzipped scrape);
- **console**: \`--console\` every 2 s into a pipe that is read and dropped (not a deployment's
  output: for comparison).

Fleet: ${fleetText}

Host: ${results.host.cpus} × ${results.host.cpu}, Linux ${results.host.kernel}, Node.js ${results.host.node}; load average
${results.load.start.toFixed(2)} at the start, ${results.load.end.toFixed(2)} at the end (other work shared the machine).

${table.join('\n')}

## The deployment files' settings

${
  settings
    ? `Sized for ${SIZED_FOR_FDS.toLocaleString('en-US')} stats fds (${(SIZED_FOR_FDS / perVm).toLocaleString('en-US')} VMs of ${results.vcpus} vCPUs) on a node:

- **request** (DaemonSet \`resources.requests.memory\`; the unit's \`MemoryLow=\`, memory the
  kernel keeps for it under pressure): the peak with OTLP protobuf, the DaemonSet's output, rounded
  up to ${REQUEST_ROUND_MIB} MiB: **${settings.requestMiB}Mi**;
- **limit** (DaemonSet \`resources.limits.memory\`; the unit's \`MemoryMax=\`): ${LIMIT_FACTOR} times the highest peak of
  the outputs a deployment can switch on (OTLP protobuf or JSON, Prometheus), rounded up to
  ${LIMIT_ROUND_MIB} MiB: **${settings.limitMiB}Mi**. Above it the kernel's OOM killer ends the agent and the
  DaemonSet or \`Restart=on-failure\` starts it again.

For a larger fleet take the row of its size from the table above by the same rule (the memory
grows about linearly with the stats fds), or run this script there.`
    : `Not every output was measured at ${SIZED_FOR_FDS.toLocaleString('en-US')} stats fds, so no settings were derived.`
}
`;

console.log(`\n${table.join('\n')}`);
if (settings) console.log(`\nsettings for ${SIZED_FOR_FDS} fds: request ${settings.requestMiB}Mi, limit ${settings.limitMiB}Mi`);
if (values.write) {
  if (!settings) throw new Error(`--write needs rows at ${SIZED_FOR_FDS} fds for otlp-protobuf, otlp-json and prometheus, each measured: add them to --sizes and --outputs`);
  writeFileSync(join(ROOT, 'docs', 'deploy-memory.md'), page);
  const daemonsetPath = join(ROOT, 'deploy', 'daemonset.yaml');
  const daemonset = readFileSync(daemonsetPath, 'utf8')
    .replace(/(requests:\n(?:\s+cpu: .*\n)?\s+memory: )\S+/, `$1${settings.requestMiB}Mi`)
    .replace(/(limits:\n\s+memory: )\S+/, `$1${settings.limitMiB}Mi`);
  writeFileSync(daemonsetPath, daemonset);
  const unitPath = join(ROOT, 'deploy', 'kvm-stats-otel.service');
  const unit = readFileSync(unitPath, 'utf8')
    .replace(/^MemoryLow=.*$/m, `MemoryLow=${settings.requestMiB}M`)
    .replace(/^MemoryMax=.*$/m, `MemoryMax=${settings.limitMiB}M`);
  writeFileSync(unitPath, unit);
  console.log('wrote docs/deploy-memory.md, deploy/daemonset.yaml and deploy/kvm-stats-otel.service');
}
