/**
 * The agent's sustained cost through its real OTLP output (numbers for the README, not test
 * assertions): a process here holds a fleet of VMs' stats fds (idle, or --busy: every vCPU runs
 * its guest to a halt once a second), the built agent reads them with --pid and exports OTLP
 * http/protobuf every --interval ms to a sink on 127.0.0.1 that reads each body, drops it and
 * answers 200. Reported: the agent's CPU time (utime + stime from /proc/PID/stat, every thread:
 * the machine is shared, so wall time would measure the neighbours) as a share of one core over
 * --seconds, and the exports and bytes the sink got.
 *
 *   npm run build && node --import tsx scripts/measure-agent-otlp.ts [--vms 2000] [--vcpus 4] [--seconds 60] [--interval 1000] [--busy]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, startAgentProcess } from '../examples/local-collector/collector.js';

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '2000' },
    vcpus: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '60' },
    interval: { type: 'string', default: '1000' },
    busy: { type: 'boolean', default: false },
  },
});
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
function peakRssMiB(pid: number): number {
  return Number(/^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
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

// The holder: a fleet whose stats fds stay open until it is killed; busy, its guests take a turn
// every second.
const holderCode = `import { VmFleet } from ${JSON.stringify(join(ROOT, 'src/bench/fleet.ts'))};
const fleet = ${busy ? 'await VmFleet.createBusy' : 'VmFleet.create'}({ vms: ${vms}, vcpus: ${vcpus}, namePrefix: 'otlp' });
console.log('ready ' + fleet.sources.length);
${busy ? 'for (;;) { const t = Date.now(); await fleet.step(); await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - t)))); }' : 'setInterval(() => undefined, 1 << 30);'}`;
const holder: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', holderCode], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise<void>((resolve, reject) => {
  holder.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && resolve());
  holder.once('exit', (code) => reject(new Error(`the fleet holder exited with ${code}`)));
});
const agent = startAgentProcess(['--pid', String(holder.pid), '--endpoint', `http://127.0.0.1:${port}`, '--interval', String(interval), '--log-level', 'warn']);
try {
  const pid = agent.child.pid!;
  // Warm-up: the copies of the fds, the first exports, the JIT.
  for (let waited = 0; exports < 5; waited++) {
    if (waited > 600) throw new Error(`the agent made ${exports} exports in 2 minutes: ${agent.stderr()}`);
    await sleep(200);
  }
  const cpuBefore = cpuSeconds(pid);
  const exportsBefore = exports;
  const bytesBefore = bytes;
  const began = performance.now();
  await sleep(seconds * 1000);
  const wall = (performance.now() - began) / 1000;
  const cpu = cpuSeconds(pid) - cpuBefore;
  const n = exports - exportsBefore;
  console.log(
    `agent, ${vms * (1 + vcpus)} stats fds (${busy ? 'busy' : 'idle'} fleet), OTLP http/protobuf every ${interval} ms to a discarding sink on 127.0.0.1, over ${wall.toFixed(0)} s: ` +
      `${((cpu / wall) * 100).toFixed(1)}% of one core (CPU time, utime + stime), ${n} exports, ${(((bytes - bytesBefore) / Math.max(n, 1)) / 1e6).toFixed(2)} MB a body, ` +
      `${((cpu * 1000) / Math.max(n, 1)).toFixed(0)} ms of CPU an export, peak RSS ${peakRssMiB(pid).toFixed(0)} MiB`,
  );
} finally {
  await agent.stop('SIGTERM');
  holder.kill('SIGTERM');
  sink.close();
}
