/**
 * The deployment files as an operator applies them: `systemd-analyze verify` passes on the unit
 * (with the package installed where its ExecStart says, in a root of its own: systemd is not
 * running here); the DaemonSet's namespace is in the file; AppArmor and seccomp are set as
 * docs/agent.md explains; and both files' memory request and limit are the ones
 * docs/deploy-memory.md derives from its measurements (scripts/measure-deploy-memory.ts).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEPLOY, daemonset, daemonsetFile, mebibytes, unitSettings } from '../helpers/deploy.js';
import { packFromCleanClone } from '../helpers/pack.js';
import { ROOT } from '../helpers/processes.js';

const UNIT = join(DEPLOY, 'kvm-stats-otel.service');
const MEMORY_PAGE = readFileSync(join(ROOT, 'docs', 'deploy-memory.md'), 'utf8');

/** Where the host's systemd keeps its own units (sysinit.target and the rest verify needs). */
const SYSTEM_UNITS = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((dir) => existsSync(join(dir, 'sysinit.target')));

describe.runIf(process.getuid?.() === 0)('systemd-analyze verify on deploy/kvm-stats-otel.service', () => {
  let root = '';

  beforeAll(async () => {
    // A root of its own: systemd's units, the unit where the unit's install comment puts it, and
    // the package installed as `npm install -g` installs it (its bin in /usr/local/bin).
    expect(SYSTEM_UNITS, 'systemd\'s units (the systemd package) are installed').toBeDefined();
    const packed = await packFromCleanClone();
    root = mkdtempSync(join(tmpdir(), 'kvm-stats-unit-root-'));
    cpSync(SYSTEM_UNITS!, join(root, 'usr', 'lib', 'systemd', 'system'), { recursive: true });
    mkdirSync(join(root, 'etc', 'systemd', 'system'), { recursive: true });
    execFileSync('npm', ['install', '--global', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', packed.tarball], {
      env: { ...process.env, npm_config_prefix: join(root, 'usr', 'local'), npm_config_update_notifier: 'false' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }, 300_000);

  afterAll(() => {
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** verify's exit code and everything it printed, for a unit file's text. */
  function verify(text: string): { status: number | null; output: string } {
    writeFileSync(join(root, 'etc', 'systemd', 'system', 'kvm-stats-otel.service'), text);
    const result = spawnSync('systemd-analyze', ['verify', `--root=${root}`, '/etc/systemd/system/kvm-stats-otel.service'], { encoding: 'utf8' });
    return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() };
  }

  it('passes, with nothing to say', () => {
    const exec = unitSettings().get('ExecStart')!.split(/\s+/)[0]!;
    expect(existsSync(join(root, exec)), `${exec} installed by npm install -g`).toBe(true);
    expect(verify(readFileSync(UNIT, 'utf8'))).toEqual({ status: 0, output: '' });
  });

  it('would say so for a setting it does not know or a value it cannot parse', () => {
    const broken = readFileSync(UNIT, 'utf8').replace(/^ProtectSystem=strict$/m, 'ProtectSystem=very\nMemoryMaxx=1G');
    expect(verify(broken).output).toMatch(/Failed to parse protect system value.*very[\s\S]*Unknown key.*MemoryMaxx/);
  });
});

describe('deploy/daemonset.yaml', () => {
  const { object, container } = daemonset();

  it('creates the namespace it runs in, at the Pod Security level its pod needs', () => {
    const namespace = daemonsetFile().find((document) => document.kind === 'Namespace');
    expect(namespace?.metadata.name).toBe(object.metadata.namespace);
    // hostPID, added capabilities and an unconfined AppArmor profile are beyond "baseline".
    expect(object.spec!.template.spec.hostPID).toBe(true);
    expect(namespace?.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('privileged');
  });

  it('runs unconfined by AppArmor (the runtime default refuses ptrace of the VMMs) under the runtime\'s default seccomp profile, with the unit\'s capabilities', () => {
    const security = container.securityContext;
    expect(security.appArmorProfile).toEqual({ type: 'Unconfined' });
    expect(object.spec!.template.metadata.annotations?.[`container.apparmor.security.beta.kubernetes.io/${container.name}`]).toBe('unconfined');
    expect(security.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    const unitCaps = unitSettings().get('AmbientCapabilities')!.split(/\s+/).map((cap) => cap.replace(/^CAP_/, '')).sort();
    expect([...security.capabilities!.add!].sort()).toEqual(unitCaps);
    expect(unitSettings().get('CapabilityBoundingSet')!.split(/\s+/).map((cap) => cap.replace(/^CAP_/, '')).sort()).toEqual(unitCaps);
  });
});

describe('memory in the deployment files', () => {
  const sized = /^Sized for ([\d,]+) stats fds/m.exec(MEMORY_PAGE);
  const request = /\*\*request\*\*[\s\S]*?\*\*(\d+)Mi\*\*/.exec(MEMORY_PAGE);
  const limit = /\*\*limit\*\*[\s\S]*?\*\*(\d+)Mi\*\*/.exec(MEMORY_PAGE);

  /** The measured peaks at the size the files are sized for, by output. */
  function peaks(): Map<string, number> {
    const fds = sized![1]!;
    const rows = MEMORY_PAGE.split('\n').filter((line) => line.startsWith(`| ${fds} (`));
    return new Map(rows.map((row) => row.split('|').map((cell) => cell.trim())).map((cells) => [cells[2]!, Number(cells[3])]));
  }

  it('docs/deploy-memory.md states a fleet size, the peaks measured there, and the settings derived', () => {
    expect(sized).not.toBeNull();
    expect(request).not.toBeNull();
    expect(limit).not.toBeNull();
    expect(peaks().get('otlp-protobuf')).toBeGreaterThan(0);
    expect(peaks().get('prometheus')).toBeGreaterThan(0);
    expect(MEMORY_PAGE).toMatch(/^Generated by `node --import tsx scripts\/measure-deploy-memory\.ts --write`/m);
  });

  it('the DaemonSet and the unit ask for what that page derives, which covers the measured peaks', () => {
    const requestMiB = Number(request![1]);
    const limitMiB = Number(limit![1]);
    const { container } = daemonset();
    expect(mebibytes(container.resources.requests.memory)).toBe(requestMiB);
    expect(mebibytes(container.resources.limits.memory)).toBe(limitMiB);
    expect(unitSettings().get('MemoryLow')).toBe(`${requestMiB}M`);
    expect(unitSettings().get('MemoryMax')).toBe(`${limitMiB}M`);
    const measured = peaks();
    expect(requestMiB).toBeGreaterThanOrEqual(measured.get('otlp-protobuf')!);
    for (const output of ['otlp-protobuf', 'otlp-json', 'prometheus']) expect(limitMiB, output).toBeGreaterThan(measured.get(output)!);
  });
});
