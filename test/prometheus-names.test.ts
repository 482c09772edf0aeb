/**
 * The agent's Prometheus names as a Prometheus user meets them, on a real VM: a base-units scrape
 * passes `promtool check metrics`, an exact-units one is flagged for its abbreviated units (what
 * the README says of the two modes), and every KVM series either scrape has is one `schema` (and
 * so docs/metrics.md) names for that mode, so a dashboard can be written from the docs.
 */
import { spawnSync } from 'node:child_process';
import { afterEach, expect, it } from 'vitest';
import { type AgentProcess, BIN, freePort, startAgentProcess } from '../examples/local-collector/collector.js';
import type { UnitMode } from '../src/otel/mapping.js';
import type { Schema } from '../src/views/stat-reports.js';
import { describeKvm } from './helpers/kvm.js';
import { ROOT } from './helpers/processes.js';

let agent: AgentProcess | undefined;
afterEach(async () => {
  await agent?.stop('SIGKILL');
  agent = undefined;
});

/** One scrape of `agent --demo 1 --units UNITS --prometheus`. */
async function scrape(units: UnitMode): Promise<string> {
  const port = await freePort();
  agent = startAgentProcess(['--demo', '1', '--units', units, '--prometheus', `127.0.0.1:${port}`, '--interval', '60000']);
  await agent.waitForLog(/"msg":"reading 2 stats fds from demo VM/, 30_000);
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(response.status).toBe(200);
  const text = await response.text();
  expect(await agent.stop('SIGTERM')).toBe(0);
  agent = undefined;
  return text;
}

function promtool(text: string) {
  const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, output: result.stdout + result.stderr };
}

/** The KVM stats' series names of a scrape (sample lines only; not target_info or self-telemetry). */
function kvmSeries(text: string): Set<string> {
  return new Set(text.split('\n').flatMap((line) => /^kvm_(?:vm|vcpu)_[^{ ]*/.exec(line)?.[0] ?? []));
}

/** Every Prometheus series `schema` names for this kernel's stats in a unit mode. */
function schemaSeries(units: UnitMode): Set<string> {
  const result = spawnSync(process.execPath, [BIN, 'schema', '--demo', '1', '--format', 'json'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  expect(result.status, result.stderr).toBe(0);
  const schema = JSON.parse(result.stdout) as Schema;
  return new Set(schema.tables.flatMap((t) => t.stats.flatMap((s) => s.names[units].prometheus.series)));
}

describeKvm('Prometheus names of a real VM\'s scrape', () => {
  it('--units base: promtool check metrics passes, and the series are schema\'s base names (kvm_vcpu_halt_wait_seconds_total)', async () => {
    const text = await scrape('base');
    expect(text).toMatch(/^kvm_vcpu_halt_wait_seconds_total\{/m);
    expect(kvmSeries(text)).toEqual(schemaSeries('base'));
    const { status, output } = promtool(text);
    expect(output).toBe('');
    expect(status).toBe(0);
  });

  it('--units exact: the kernel\'s names verbatim, which promtool flags (exit 3)', async () => {
    const text = await scrape('exact');
    expect(kvmSeries(text)).toEqual(schemaSeries('exact'));
    const { status, output } = promtool(text);
    expect(output).toContain('kvm_vcpu_halt_wait_ns_total metric names should not contain abbreviated units');
    expect(status).toBe(3);
  });
});
