/**
 * examples/prometheus: Debian's prometheus (installed here when missing, as root) scrapes the
 * agent's --prometheus endpoint with this example's configuration, and a KVM series is read
 * back through Prometheus' HTTP query API. Everything on loopback; every wait is bounded.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KVM_STATS_TYPE_LOG_HIST } from '../../src/abi/kvm.js';
import { buildImage, writeImage } from '../../test/helpers/image.js';
import { describeKvm } from '../../test/helpers/kvm.js';
import { type AgentProcess, freePort, startAgentProcess } from '../local-collector/collector.js';

const CONFIG = join(import.meta.dirname, 'prometheus.yml');

function onPath(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Debian's prometheus package, installed when missing (CI runs as root on a fresh machine). */
function ensurePrometheus(): void {
  if (onPath('prometheus')) return;
  if (process.getuid?.() !== 0) throw new Error('prometheus is not installed: apt-get install prometheus (as root), as .ci/run does');
  execFileSync('apt-get', ['update'], { stdio: 'inherit', timeout: 300_000 });
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'prometheus'], {
    stdio: 'inherit',
    timeout: 600_000,
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

interface QueryResult {
  status: string;
  data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

/** Asks `query` until it returns a series, for at most `timeoutMs`. */
async function querySeries(base: string, query: string, timeoutMs: number): Promise<QueryResult['data']['result']> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(query)}`);
      const body = (await response.json()) as QueryResult;
      if (body.status === 'success' && body.data.result.length > 0) return body.data.result;
      last = JSON.stringify(body);
    } catch (error) {
      last = (error as Error).message; // not listening yet
    }
    await sleep(250);
  }
  throw new Error(`Prometheus returned no series for ${query} within ${timeoutMs} ms; last answer: ${last}`);
}

/** A histogram without a sum in the kernel's terms: no companion stat. */
const IMAGE = writeImage(buildImage({ id: 'kvm-7/vcpu-0', descs: [{ name: 'lonely_hist', type: KVM_STATS_TYPE_LOG_HIST, size: 4, values: [2, 1, 0, 0] }] }), 'prometheus');

describeKvm('examples/prometheus (real KVM, Debian prometheus)', () => {
  let prometheus: ChildProcess | undefined;
  let agent: AgentProcess | undefined;
  let base = '';
  let logs = '';
  let dir = '';

  beforeAll(async () => {
    ensurePrometheus();
    execFileSync('promtool', ['check', 'config', CONFIG], { stdio: 'pipe' });
    const [agentPort, prometheusPort] = [await freePort(), await freePort()];
    agent = startAgentProcess(['--demo', '2', '--file', IMAGE, '--prometheus', `127.0.0.1:${agentPort}`, '--interval', '1000']);
    await agent.waitForLog(/"msg":"reading \d+ stats fds/, 30_000);
    // The example's configuration, pointed at this agent and scraping every second.
    dir = mkdtempSync(join(tmpdir(), 'kvm-prometheus-'));
    const config = readFileSync(CONFIG, 'utf8').replace("'localhost:9464'", `'127.0.0.1:${agentPort}'`).replace('scrape_interval: 15s', 'scrape_interval: 1s');
    writeFileSync(join(dir, 'prometheus.yml'), config);
    prometheus = spawn(
      'prometheus',
      [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${prometheusPort}`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    prometheus.stderr!.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    base = `http://127.0.0.1:${prometheusPort}`;
  });

  afterAll(async () => {
    prometheus?.kill('SIGTERM');
    if (prometheus && prometheus.exitCode === null) await new Promise((resolve) => prometheus!.once('exit', resolve));
    expect(await agent?.stop('SIGTERM')).toBe(0);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('scrapes the agent and answers a query for a KVM series', async () => {
    const exits = await querySeries(base, 'kvm_vcpu_exits_total{job="kvm-stats-otel"}', 60_000).catch((error: Error) => {
      throw new Error(`${error.message}\nprometheus log:\n${logs.slice(-2000)}`);
    });
    expect(exits.map((s) => s.metric.kvm_vcpu_id).sort()).toEqual(['0', '1']);
    for (const series of exits) {
      expect(series.metric).toMatchObject({ kvm_vm_name: 'demo', process_pid: String(agent!.child.pid), otel_scope_name: 'kvm-stats-otel' });
      expect(Number(series.value[1])).toBeGreaterThan(0);
    }
    const up = await querySeries(base, 'up{job="kvm-stats-otel"}', 10_000);
    expect(up[0]!.value[1]).toBe('1');
  });

  it('stores a histogram whose kernel stat has no sum as buckets and a count, with no _sum series', async () => {
    const buckets = await querySeries(base, 'kvm_vcpu_lonely_hist_bucket', 30_000);
    expect(Object.fromEntries(buckets.map((s) => [s.metric.le, s.value[1]]))).toEqual({ '0': '2', '1': '3', '3': '3', '+Inf': '3' });
    expect((await querySeries(base, 'kvm_vcpu_lonely_hist_count', 10_000))[0]!.value[1]).toBe('3');
    // Scraped many times by now: a missing _sum is missing, not late.
    const sums = (await (await fetch(`${base}/api/v1/query?query=kvm_vcpu_lonely_hist_sum`)).json()) as QueryResult;
    expect(sums.data.result).toEqual([]);
    // With a companion stat the sum is there.
    expect((await querySeries(base, 'kvm_vcpu_halt_wait_hist_sum', 10_000)).length).toBe(2);
  });
});
