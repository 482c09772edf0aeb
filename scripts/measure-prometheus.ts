/**
 * Measures the agent's Prometheus endpoint on many stats fds (numbers for the README, not test
 * assertions): a process here holds a fleet of idle VMs' stats fds, the built agent reads them
 * with --pid and serves --prometheus; scrapes plain and gzipped, one after another and several
 * at once, report their time and size, and the agent's peak RSS (VmHWM) over them.
 *
 *   npm run build && node --import tsx scripts/measure-prometheus.ts [--vms 500] [--vcpus 4] [--scrapes 10] [--units exact|base]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, freePort, startAgentProcess } from '../examples/local-collector/collector.js';

const { values } = parseArgs({
  options: { vms: { type: 'string', default: '500' }, vcpus: { type: 'string', default: '4' }, scrapes: { type: 'string', default: '10' }, units: { type: 'string', default: 'exact' } },
});
const vms = Number(values.vms);
const vcpus = Number(values.vcpus);
const scrapes = Number(values.scrapes);

function status(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

/** One scrape: wall time and bytes on the wire. */
function scrape(port: number, gzip: boolean): Promise<{ ms: number; bytes: number }> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/metrics', headers: gzip ? { 'accept-encoding': 'gzip' } : {} }, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => (bytes += chunk.length));
      res.on('end', () => resolve({ ms: performance.now() - start, bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function median(list: number[]): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

// The holder: a fleet of VMs whose stats fds stay open until it is killed.
const holderCode = `import { VmFleet } from ${JSON.stringify(join(ROOT, 'src/bench/fleet.ts'))};
const fleet = VmFleet.create({ vms: ${vms}, vcpus: ${vcpus}, namePrefix: 'rss' });
console.log('ready ' + fleet.sources.length);
setInterval(() => undefined, 1 << 30);`;
const holder: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', holderCode], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise<void>((resolve, reject) => {
  holder.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && resolve());
  holder.once('exit', (code) => reject(new Error(`the fleet holder exited with ${code}`)));
});
const port = await freePort();
const agent = startAgentProcess(['--pid', String(holder.pid), '--prometheus', `127.0.0.1:${port}`, '--interval', '60000', '--units', values.units!, '--log-level', 'warn']);
try {
  await agent.waitForLog(/"msg":"reading \d+ stats fds|"level":"(warn|error)"/, 120_000).catch(() => undefined);
  // The agent logs "reading" at info; at warn level, wait for the endpoint instead.
  for (let tries = 0; ; tries++) {
    try {
      await scrape(port, true);
      break;
    } catch (error) {
      if (tries > 600) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  const pid = agent.child.pid!;
  const idleRss = status(pid, 'VmRSS');
  for (const gzip of [false, true]) {
    const runs: { ms: number; bytes: number }[] = [];
    for (let i = 0; i < scrapes; i++) runs.push(await scrape(port, gzip));
    console.log(`${gzip ? 'gzip ' : 'plain'} scrapes of ${vms * (1 + vcpus)} stats fds: median ${median(runs.map((r) => r.ms)).toFixed(0)} ms, ${runs[0]!.bytes.toLocaleString('en-US')} bytes`);
  }
  const together = await Promise.all(Array.from({ length: 4 }, (_, i) => scrape(port, i % 2 === 1)));
  console.log(`4 scrapes at once (2 gzip): all done in ${Math.max(...together.map((r) => r.ms)).toFixed(0)} ms`);
  console.log(`agent RSS: ${idleRss.toFixed(0)} MiB before the scrapes, ${status(pid, 'VmRSS').toFixed(0)} MiB after, peak ${status(pid, 'VmHWM').toFixed(0)} MiB`);
} finally {
  await agent.stop('SIGTERM');
  holder.kill('SIGTERM');
}
