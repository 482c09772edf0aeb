/**
 * The deployment files' privileges: the agent, run as an unprivileged user with exactly the
 * capabilities deploy/kvm-stats-otel.service gives it, reads a VMM of another user (root here);
 * without any one of them it cannot. The DaemonSet asks for the same set.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeKvm } from '../helpers/kvm.js';
import { AS_NOBODY, type ChildVmm, ROOT, packageCopy, startVmm } from '../helpers/processes.js';

const UNIT = readFileSync(join(ROOT, 'deploy', 'kvm-stats-otel.service'), 'utf8');
const DAEMONSET = readFileSync(join(ROOT, 'deploy', 'daemonset.yaml'), 'utf8');

/** "CAP_SYS_PTRACE CAP_DAC_READ_SEARCH" from a unit's line, as setpriv names: sys_ptrace, dac_read_search. */
function unitCapabilities(key: string): string[] {
  const line = new RegExp(`^${key}=(.*)$`, 'm').exec(UNIT)![1]!;
  return line.trim().split(/\s+/).map((cap) => cap.replace(/^CAP_/, '').toLowerCase()).sort();
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The agent from a world-readable copy of the package, as nobody with `caps` only, until its first console export. */
function agentAsNobody(dir: string, caps: string[], sourceArgs: string[]): Promise<Run> {
  const set = ['-all', ...caps.map((cap) => `+${cap}`)].join(',');
  const [setpriv, ...asNobody] = AS_NOBODY;
  const child = spawn(
    setpriv!,
    [...asNobody, `--inh-caps=${set}`, `--ambient-caps=${set}`, `--bounding-set=${set}`, process.execPath, join(dir, 'dist', 'cli', 'main.js'), 'agent', ...sourceArgs, '--console', '--interval', '600000', '--log-level', 'warn'],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const run: Run = { code: null, stdout: '', stderr: '' };
  let stopping = false;
  child.stdout.on('data', (chunk: Buffer) => {
    run.stdout += chunk.toString();
    // One SIGTERM: a second one would make the agent exit at once, by the signal.
    if (!stopping && /^kvm\.vcpu\.exits/m.test(run.stdout)) {
      stopping = true;
      child.kill('SIGTERM');
    }
  });
  child.stderr.on('data', (chunk: Buffer) => (run.stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ ...run, code });
    }),
  );
}

describeKvm('deployment privileges (real KVM, setpriv)', () => {
  let dir = '';
  let vmm: ChildVmm | undefined;

  beforeAll(async () => {
    dir = packageCopy();
    vmm = await startVmm(['--vcpus', '1', '-name', 'deploy']);
  });

  afterAll(async () => {
    await vmm?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the unit and the DaemonSet grant the same capabilities, and nothing else', () => {
    const caps = unitCapabilities('AmbientCapabilities');
    expect(unitCapabilities('CapabilityBoundingSet')).toEqual(caps);
    const added = /add: \[([^\]]*)\]/.exec(DAEMONSET)![1]!.split(',').map((cap) => cap.trim().toLowerCase()).sort();
    expect(added).toEqual(caps);
    expect(DAEMONSET).toMatch(/drop: \[ALL\]/);
  });

  it('as nobody with exactly the unit\'s capabilities, the agent reads a root VMM\'s stats and exits 0', async () => {
    const run = await agentAsNobody(dir, unitCapabilities('AmbientCapabilities'), ['--pid', String(vmm!.pid)]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^kvm\\.vcpu\\.exits\\{process\\.pid=${vmm!.pid},kvm\\.vm\\.name=deploy,kvm\\.vcpu\\.id=0\\} sum 1 \\d+$`, 'm'));
  });

  it('with the same capabilities, the deployments\' --scan finds the root VMM', async () => {
    expect(DAEMONSET).toMatch(/args: \['agent', '--scan'\]/);
    expect(readFileSync(join(ROOT, 'deploy', 'kvm-stats-otel.env'), 'utf8')).toMatch(/^SOURCES=--scan$/m);
    const run = await agentAsNobody(dir, unitCapabilities('AmbientCapabilities'), ['--scan']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^kvm\\.vcpu\\.exits\\{process\\.pid=${vmm!.pid},kvm\\.vm\\.name=deploy,kvm\\.vcpu\\.id=0\\} sum 1 \\d+$`, 'm'));
  });

  it('without any one of them, it cannot, and exits 1 saying so', async () => {
    const caps = unitCapabilities('AmbientCapabilities');
    for (const missing of caps) {
      const run = await agentAsNobody(dir, caps.filter((cap) => cap !== missing), ['--pid', String(vmm!.pid)]);
      expect(run.code, `without ${missing}`).toBe(1);
      expect(run.stdout, `without ${missing}`).not.toMatch(/^kvm\./m);
      expect(run.stderr, `without ${missing}`).toMatch(/^kvm-stats-otel: .*(EACCES|EPERM|no stats fd could be read)/m);
    }
  });
});
