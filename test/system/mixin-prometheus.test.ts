/**
 * The mixin on a real Prometheus (Debian's): it loads mixin/'s rules and alerts and scrapes the
 * agent's endpoint while the agent reads a VM whose guest exits and halts — the demo VM where
 * /dev/kvm exists (with the mixin generated from it), else the shipped recording replayed (with
 * the checked-in mixin/, which is generated from it). Every recording rule and every dashboard
 * query, its variables filled in, returns series and no error; every rule is healthy; every
 * metric name the mixin uses is in the agent's scrape. The vCPU scheduler series (run delay) come
 * from a recording that carries them: the demo VM creates its vCPUs from one thread and has none
 * (docs/mapping.md), so beside it the stand-in recording is replayed, and so it is beside a
 * shipped recording without them. Everything on loopback, dynamic ports, bounded waits.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type AgentProcess, freePort, startAgentProcess } from '../../examples/local-collector/collector.js';
import { standinRecording } from '../../scripts/make-standin-recording.js';
import { SHIPPED_RECORDING } from '../../src/setup/demo-fallback.js';
import { readRecording, writeRecording } from '../../src/sources/recording.js';
import { HAS_KVM } from '../helpers/kvm.js';
import { ROOT } from '../helpers/processes.js';
import { filesUnder } from '../helpers/tree.js';

const BIN = join(ROOT, 'dist', 'cli', 'main.js');

interface Answer {
  status: string;
  error?: string;
  data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

async function query(base: string, expr: string): Promise<Answer> {
  const response = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(expr)}`);
  return (await response.json()) as Answer;
}

/** Asks until `expr` returns a series, for at most `timeoutMs`; the last answer otherwise. */
async function series(base: string, expr: string, timeoutMs: number): Promise<Answer> {
  const deadline = Date.now() + timeoutMs;
  let answer: Answer | undefined;
  for (;;) {
    try {
      answer = await query(base, expr);
      if (answer.status !== 'success' || answer.data.result.length > 0 || Date.now() > deadline) return answer;
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    await sleep(250);
  }
}

const haveKvm = HAS_KVM;

describe(`the mixin on a real Prometheus (Debian's), scraping the agent reading ${haveKvm ? 'a demo VM (real KVM)' : 'the shipped recording (no KVM here)'}`, () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvm-mixin-prometheus-'));
  let prometheus: ChildProcess | undefined;
  let agent: AgentProcess | undefined;
  let base = '';
  let agentUrl = '';
  let logs = '';
  let mixin: Map<string, string>;
  /** The VMs whose vCPUs have scheduler time (run delay) in the scrape. */
  let scheduled: Set<string>;

  beforeAll(async () => {
    // The recordings replayed: the shipped one without KVM; the stand-in where the VMs read
    // have no scheduler time of their own.
    const standin = join(dir, 'standin.kvmrec.json.gz');
    writeRecording(standin, standinRecording());
    const shippedHasSched = readRecording(SHIPPED_RECORDING).vms.some((vm) => vm.fds.some((fd) => fd.schedstat !== undefined));
    const sources = haveKvm ? ['--demo', '2', '--file', standin] : ['--file', SHIPPED_RECORDING, ...(shippedHasSched ? [] : ['--file', standin])];
    // The mixin: checked in, from the shipped recording; on a KVM host made from its demo VM.
    let root = join(ROOT, 'mixin');
    if (haveKvm) {
      root = join(dir, 'mixin');
      execFileSync(process.execPath, [BIN, 'mixin', '--demo', '--out', root], { cwd: ROOT, stdio: 'pipe' });
    }
    mixin = filesUnder(root);
    const [agentPort, prometheusPort, closedPort] = [await freePort(), await freePort(), await freePort()];
    // OTLP to a port where nothing listens, as well: its failed exports are what an alert counts.
    agent = startAgentProcess([
      ...sources,
      '--prometheus', `127.0.0.1:${agentPort}`,
      '--units', 'base',
      '--endpoint', `http://127.0.0.1:${closedPort}`,
      '--otlp',
      '--interval', '1000',
      '--export-timeout', '800',
      '--log-level', 'error',
    ]);
    agentUrl = `http://127.0.0.1:${agentPort}/metrics`;
    writeFileSync(
      join(dir, 'prometheus.yml'),
      [
        'global:',
        '  scrape_interval: 1s',
        '  evaluation_interval: 1s',
        'rule_files:',
        `  - ${join(root, 'rules.yaml')}`,
        `  - ${join(root, 'alerts.yaml')}`,
        'scrape_configs:',
        '  - job_name: kvm-stats-otel',
        '    static_configs:',
        `      - targets: ['127.0.0.1:${agentPort}']`,
        '',
      ].join('\n'),
    );
    execFileSync('promtool', ['check', 'config', join(dir, 'prometheus.yml')], { stdio: 'pipe' });
    prometheus = spawn(
      'prometheus',
      [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${prometheusPort}`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    prometheus.stderr!.on('data', (chunk: Buffer) => (logs = (logs + chunk.toString()).slice(-20_000)));
    base = `http://127.0.0.1:${prometheusPort}`;
    // Scraped, and the last level of rules (per host, from the VMs', from the vCPUs') evaluated.
    const ready = await series(base, 'kvm_host:halt_poll_failed_seconds:rate5m', 90_000).catch((error: Error) => ({ status: error.message, data: { resultType: '', result: [] } }));
    if (ready.data.result.length === 0) throw new Error(`no rule results within 90 s: ${JSON.stringify(ready)}\nprometheus log:\n${logs.slice(-3000)}\nagent log:\n${agent.stderr().slice(-3000)}`);
    const withSched = await query(base, 'count by (kvm_vm_name) (kvm_vcpu_sched_run_delay_seconds_total)');
    scheduled = new Set(withSched.data.result.map((s) => s.metric.kvm_vm_name!));
  }, 180_000);

  afterAll(async () => {
    prometheus?.kill('SIGTERM');
    if (prometheus && prometheus.exitCode === null) await new Promise((resolve) => prometheus!.once('exit', resolve));
    expect(await agent?.stop('SIGTERM')).toBe(0);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a VM with vCPU scheduler time is read (the run-delay rules have something to read)', () => {
    expect(scheduled.size).toBeGreaterThan(0);
  });

  it('every rule is loaded and healthy, none with an error', async () => {
    const answer = (await (await fetch(`${base}/api/v1/rules`)).json()) as { data: { groups: { file: string; rules: { name: string; health: string; lastError?: string; type: string }[] }[] } };
    const rules = answer.data.groups.flatMap((g) => g.rules);
    const recorded = (parse(mixin.get('rules.yaml')!) as { groups: { rules: { record: string }[] }[] }).groups.flatMap((g) => g.rules.map((r) => r.record));
    const alerts = (parse(mixin.get('alerts.yaml')!) as { groups: { rules: { alert: string }[] }[] }).groups.flatMap((g) => g.rules.map((r) => r.alert));
    expect(rules.map((r) => r.name).sort()).toEqual([...recorded, ...alerts].sort());
    for (const rule of rules) expect({ name: rule.name, health: rule.health, lastError: rule.lastError ?? '' }).toEqual({ name: rule.name, health: 'ok', lastError: '' });
  });

  it('every recording rule returns series, and no error', async () => {
    const recorded = (parse(mixin.get('rules.yaml')!) as { groups: { rules: { record: string }[] }[] }).groups.flatMap((g) => g.rules.map((r) => r.record));
    expect(recorded.length).toBe(18);
    for (const name of recorded) {
      const answer = await series(base, name, 20_000);
      expect({ name, status: answer.status, error: answer.error }).toEqual({ name, status: 'success', error: undefined });
      expect(answer.data.result.length, `${name} returned no series`).toBeGreaterThan(0);
    }
  });

  it('every alert expression runs without an error', async () => {
    const alerts = (parse(mixin.get('alerts.yaml')!) as { groups: { rules: { alert: string; expr: string }[] }[] }).groups.flatMap((g) => g.rules);
    for (const alert of alerts) {
      const answer = await query(base, alert.expr);
      expect({ alert: alert.alert, status: answer.status, error: answer.error }).toEqual({ alert: alert.alert, status: 'success', error: undefined });
    }
    // The agent's failed exports reach Prometheus: the export alert's expression has a series.
    const failing = alerts.find((a) => a.alert === 'KvmStatsAgentExportFailing')!;
    expect((await series(base, failing.expr, 20_000)).data.result.length).toBeGreaterThan(0);
  });

  it('every dashboard query, its variables filled in, returns series and no error', async () => {
    const boards = [...mixin.entries()].filter(([path]) => path.startsWith('dashboards/')).map(([path, text]) => [path, JSON.parse(text)] as const);
    expect(boards.length).toBe(2);
    let checked = 0;
    for (const [path, board] of boards) {
      // Each variable's values, from its label_values(METRIC, LABEL) query asked as Grafana asks
      // Prometheus (the label values API with a match[]), after the variables before it.
      const variables = (board.templating.list as { type: string; name: string; query: { query: string } }[]).filter((v) => v.type === 'query');
      const combos: Record<string, string>[] = [{}];
      for (const variable of variables) {
        const [, metric, label] = /^label_values\((.*), (\w+)\)$/.exec(variable.query.query)!;
        const next: Record<string, string>[] = [];
        for (const combo of combos) {
          const match = fill(metric!, combo);
          const answer = (await (await fetch(`${base}/api/v1/label/${label}/values?match[]=${encodeURIComponent(match)}`)).json()) as { status: string; data: string[] };
          expect(answer.status).toBe('success');
          expect(answer.data.length, `${path}: $${variable.name} has no values for ${match}`).toBeGreaterThan(0);
          for (const value of answer.data) next.push({ ...combo, [variable.name]: value });
        }
        combos.splice(0, combos.length, ...next);
      }
      for (const panel of board.panels as { title: string; targets: { expr: string }[] }[]) {
        for (const target of panel.targets) {
          for (const combo of combos) {
            const expr = fill(target.expr, combo);
            const answer = await query(base, expr);
            expect({ panel: panel.title, expr, status: answer.status, error: answer.error }).toEqual({ panel: panel.title, expr, status: 'success', error: undefined });
            // A VM without scheduler time (the demo VM) has no run-delay or CPU-time series.
            const needsSched = /sched_|run_delay|cpu_time/.test(target.expr);
            if (needsSched && combo.vm !== undefined && !scheduled.has(combo.vm)) continue;
            expect(answer.data.result.length, `${path}: "${panel.title}": ${expr} returned no series`).toBeGreaterThan(0);
            checked++;
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(20);
  });

  it('every metric name the mixin uses is in the agent\'s scrape', async () => {
    const text = await (await fetch(agentUrl)).text();
    const families = new Set<string>();
    const labels = new Set<string>();
    for (const line of text.split('\n')) {
      // A histogram's family name (in panel descriptions) is on its TYPE line; its series add _bucket, _sum, _count.
      const type = /^# TYPE (\S+) /.exec(line);
      if (type) families.add(type[1]!);
      if (line.startsWith('#') || line === '') continue;
      const [, name, inside] = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? /.exec(line)!;
      families.add(name!);
      for (const [, label] of (inside ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(label!);
    }
    const used = new Set<string>();
    for (const [path, content] of mixin) {
      if (path === 'runbook.md' || path === 'config.json') continue;
      // Names of series: kvm_ words that are neither a recording rule's (with colons) nor a label.
      for (const [, word] of content.matchAll(/(?<![\w:])(kvm_[a-zA-Z0-9_]+)(?![\w:])/g)) if (!labels.has(word!)) used.add(word!);
    }
    expect(used.size).toBeGreaterThan(8);
    expect([...used].filter((name) => !families.has(name)), 'names the mixin queries that the agent does not serve').toEqual([]);
    // Through a collector, job and instance come from service.name and service.instance.id:
    // the agent sets the latter to the host's name, so hosts stay apart that way too.
    expect(text).toMatch(new RegExp(`^target_info\\{[^}]*service_instance_id="${hostname()}"`, 'm'));
    // The labels the mixin groups by are the agent's (job and instance are the scrape's).
    for (const label of ['process_pid', 'kvm_vm_name', 'kvm_vcpu_id', 'kvm_stats_otel_output']) expect(labels).toContain(label);
  });
});

/** An expression with the dashboard's variables filled in, as Grafana sends it. */
function fill(expr: string, values: Record<string, string>): string {
  return expr.replace(/\$(\w+)/g, (whole, name: string) => {
    if (name === '__rate_interval') return '10s';
    if (name === '__interval') return '1s';
    const value = values[name];
    // A regex matcher: the value with its special characters escaped, as Grafana does.
    return value === undefined ? whole : value.replace(/[\\^$.|?*+()[\]{}]/g, '\\\\$&');
  });
}

