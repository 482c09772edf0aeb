/**
 * Measures the agent's behaviour people rely on (numbers for the README, not test assertions):
 * how long after start the first export arrives, how long a SIGTERM takes to exit, and the
 * agent's memory while its collector is unreachable for many intervals.
 *
 *   npm run build && node --import tsx scripts/measure-agent.ts [--minutes M] [--interval MS]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { LocalCollector, freePort, startAgentProcess } from '../examples/local-collector/collector.js';

const { values } = parseArgs({ options: { minutes: { type: 'string', default: '3' }, interval: { type: 'string', default: '100' } } });
const minutes = Number(values.minutes);
const interval = Number(values.interval);

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]);
}

// 1. First export, and exit after SIGTERM, with a 2 s interval.
{
  const collector = await LocalCollector.start();
  const started = performance.now();
  const agent = startAgentProcess(['--demo', '2', '--endpoint', collector.endpoint, '--interval', '2000']);
  await agent.waitForLog(/"msg":"reading/, 30_000);
  const ready = performance.now();
  await collector.waitForRequests(1, 30_000);
  const first = performance.now();
  const stopAt = performance.now();
  const code = await agent.stop('SIGTERM');
  const stopped = performance.now();
  await collector.close();
  console.log(`first export: ${(first - started).toFixed(0)} ms after spawn, ${(first - ready).toFixed(0)} ms after the agent said it was running (interval 2000 ms)`);
  console.log(`SIGTERM to exit (last collection and export included): ${(stopped - stopAt).toFixed(0)} ms, exit code ${code}`);
}

// 2. Memory while the collector is unreachable: connection refused on every export.
{
  const port = await freePort();
  const agent = startAgentProcess(['--demo', '2', '--endpoint', `http://127.0.0.1:${port}`, '--interval', String(interval), '--log-level', 'error']);
  await sleep(5_000);
  const pid = agent.child.pid!;
  const samples: number[] = [];
  const end = Date.now() + minutes * 60_000;
  while (Date.now() < end) {
    samples.push(rssKiB(pid));
    await sleep(10_000);
  }
  const exports = Math.round((minutes * 60_000) / interval);
  console.log(`RSS with the collector unreachable, every 10 s over ${minutes} min (about ${exports} failed exports at ${interval} ms): ${samples.map((kib) => (kib / 1024).toFixed(1)).join(' ')} MiB`);
  console.log(`exit code after SIGTERM: ${await agent.stop('SIGTERM')}`);
}
