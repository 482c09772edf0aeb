/**
 * A first run where this user cannot make VMs, on any host: the built package run as nobody
 * (setpriv), for whom /dev/kvm is missing (a machine without KVM) or not permitted (a KVM host,
 * /dev/kvm 0660 or 0600). `npm start`'s agent, the agent with Prometheus, and `top --demo` then
 * say why in one line and replay the shipped recording in a loop, showing moving values at
 * once; commands that need a real VM (schema, record) fail with the cause and the flag that
 * helps. Where nobody may open /dev/kvm (mode 0666), the same commands run a real demo VM.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { type AgentProcess, freePort, watchAgentProcess } from '../../examples/local-collector/collector.js';
import { SHIPPED_RECORDING, shippedRecordingText } from '../../src/setup/demo-fallback.js';
import { diagnoseKvm, hostFacts, kvmAvailability } from '../../src/sources/kvm-check.js';
import { AS_NOBODY, ROOT, packageCopy } from '../helpers/processes.js';

const NOBODY = 65534;

/** Why nobody cannot make a VM here, in the agent's words; undefined where nobody can. */
function nobodysCause(): string | undefined {
  if (!existsSync('/dev/kvm')) {
    const kvm = kvmAvailability();
    if (kvm.available) throw new Error('internal: /dev/kvm is missing but opens');
    return kvm.message;
  }
  if ((statSync('/dev/kvm').mode & 0o006) === 0o006) return undefined;
  return diagnoseKvm({ ...hostFacts('/dev/kvm', 'EACCES'), uid: NOBODY }).message;
}

const cause = nobodysCause();
/** The one line: why, and what is replayed instead. */
const notice = cause !== undefined ? `no KVM here: ${cause}. Replaying ${shippedRecordingText(SHIPPED_RECORDING)} in a loop instead of a demo VM` : undefined;

let copy: string;
beforeAll(() => {
  // The package as installed, world-readable, with its recordings.
  copy = packageCopy();
  cpSync(join(ROOT, 'recordings'), join(copy, 'recordings'), { recursive: true });
});

function asNobody(args: readonly string[]) {
  const [setpriv, ...rest] = AS_NOBODY;
  return { command: setpriv!, args: [...rest, process.execPath, join(copy, 'dist', 'cli', 'main.js'), ...args] };
}

function agentAsNobody(args: readonly string[]): AgentProcess {
  const { command, args: all } = asNobody(['agent', ...args]);
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('OTEL_')));
  return watchAgentProcess(spawn(command, all, { cwd: copy, env, stdio: ['ignore', 'pipe', 'pipe'] }));
}

function runAsNobody(...args: string[]) {
  const { command, args: all } = asNobody(args);
  const result = spawnSync(command, all, { cwd: copy, encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** vCPU 0's exits in a console line or a Prometheus series, whatever the VM is called. */
const CONSOLE_EXITS = /^kvm\.vcpu\.exits\{[^}]*kvm\.vcpu\.id=0[,}].* sum 1 (\d+)$/gm;
const PROMETHEUS_EXITS = /^kvm_vcpu_exits_total\{[^}]*kvm_vcpu_id="0"[^}]*\} (\d+)$/m;

describe(`without KVM for this user (${notice === undefined ? 'nobody may open /dev/kvm here: a real demo VM' : cause})`, () => {
  it('npm start: one line says why, the first export comes at once, and values move', async () => {
    const script = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
    const [, , , ...args] = script.split(' && ').at(-1)!.split(' ');
    expect(args).toEqual(['--demo', '2', '--console', '--interval', '5000', '--log-level', 'warn']);
    const agent = agentAsNobody(args);
    try {
      await agent.waitForOutput(/^# kvm-stats-otel agent: reading/, 30_000);
      const banner = Date.now();
      await agent.waitForOutput(/^# \S+ export: \d+ data points$/, 30_000);
      // The first export does not wait for the 5 s interval.
      expect(Date.now() - banner).toBeLessThan(5000);
      const lines = agent.stdout().split('\n');
      if (notice !== undefined) {
        expect(lines[0]).toBe(`# ${notice}.`);
        expect(lines[1]).toBe('# kvm-stats-otel agent: reading the KVM stats of recording recordings/demo.kvmrec.json.gz, replayed in a loop;');
      } else {
        expect(lines[0]).toBe('# kvm-stats-otel agent: reading the KVM stats of a demo VM made here (2 vCPUs);');
      }
      // The next export, one interval later, shows vCPU 0's exits moved.
      const exports = () => [...agent.stdout().matchAll(CONSOLE_EXITS)].map((m) => Number(m[1]));
      for (let i = 0; i < 150 && exports().length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 100));
      const [first, second] = exports();
      expect(second).toBeGreaterThan(first!);
      expect(await agent.stop('SIGINT')).toBe(0);
      expect(agent.stderr()).toBe('');
    } finally {
      await agent.stop('SIGKILL');
    }
  });

  it('--prometheus: the reason logged once as a warning, and the scrape moves', async () => {
    const port = await freePort();
    const agent = agentAsNobody(['--demo', '2', '--prometheus', `127.0.0.1:${port}`, '--interval', '1000', '--log-level', 'warn']);
    try {
      const scrape = async (): Promise<number> => {
        for (let i = 0; i < 300; i++) {
          const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => '');
          const match = PROMETHEUS_EXITS.exec(text);
          if (match) return Number(match[1]);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        throw new Error(`no kvm_vcpu_exits_total on :${port}; stderr:\n${agent.stderr()}`);
      };
      const first = await scrape();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect(await scrape()).toBeGreaterThan(first);
      const warnings = agent.stderr().split('\n').filter(Boolean).map((line) => JSON.parse(line) as { level: string; msg: string });
      expect(warnings).toEqual(notice !== undefined ? [expect.objectContaining({ level: 'warn', msg: notice })] : []);
      expect(await agent.stop('SIGTERM')).toBe(0);
    } finally {
      await agent.stop('SIGKILL');
    }
  });

  it('top --demo: the line on stderr, then the recorded VM with its exits per second', () => {
    const result = runAsNobody('top', '--demo', '--interval', '1.1', '--iterations', '2');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe(notice !== undefined ? `kvm-stats-otel: ${notice}\n` : '');
    const lines = result.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toMatch(/ vcpus 2 {2}exits\/s \d+(\.\d+)?k? /);
  });

  it('schema --demo and record --demo need a real VM: the cause, and the flag that replays one', () => {
    for (const command of [['schema', '--demo'], ['record', '--demo', '--snapshots', '1', '--wait', '0', '--out', '/tmp/kvm-stats-no-kvm-record.gz']]) {
      const result = runAsNobody(...command);
      if (cause === undefined) {
        expect(result.code, result.stderr).toBe(0);
        continue;
      }
      expect(result.code, command.join(' ')).toBe(1);
      expect(result.stderr).toBe(`kvm-stats-otel: ${cause}. Without KVM, npm start and --file recordings/demo.kvmrec.json.gz replay a recording instead\n`);
    }
  });
});
