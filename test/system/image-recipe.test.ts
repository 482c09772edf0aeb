/**
 * deploy/Containerfile, proved outside a container (no registry is reachable for a base image):
 * its steps are read from the file and performed in a folder that stands for the image's root
 * (the packed tarball copied where COPY puts it, the RUN line run with the base image's global
 * npm prefix /usr/local and HOME /root mapped into that folder), and the result is run as the
 * DaemonSet runs the container: its ENTRYPOINT with the DaemonSet's args and env, as uid 0 with a
 * capability bounding set of exactly the two it adds, no new privileges, the installed files and
 * the root filesystem read-only (a mount namespace of its own). It must start, scan, export to
 * an OTLP receiver on loopback and stop on SIGTERM with exit code 0; where /dev/kvm exists it
 * must export a real VM's stats. Needs root (setpriv, unshare, mount), the npm registry, git.
 */
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCollector, metricsOf, watchAgentProcess } from '../../examples/local-collector/collector.js';
import { type Container, capabilityMask, containerfile, daemonset, only } from '../helpers/deploy.js';
import { HAS_KVM } from '../helpers/kvm.js';
import { type Packed, packFromCleanClone } from '../helpers/pack.js';
import { type ChildVmm, startVmm } from '../helpers/processes.js';

const INSTALL_TIMEOUT = 300_000;
const NODE_NAME = 'kvm-stats-otel-recipe-node';
const isRoot = process.getuid?.() === 0;

/** The Kubernetes expansion of $(NAME) in an env value, from the variables defined before it. */
function expand(value: string, env: Record<string, string>): string {
  return value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole);
}

/** The container's environment as the kubelet gives it (fieldRef spec.nodeName: NODE_NAME). */
function containerEnv(container: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of container.env ?? []) {
    if (variable.value !== undefined) env[variable.name] = expand(variable.value, env);
    else if (variable.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName') env[variable.name] = NODE_NAME;
    else throw new Error(`the DaemonSet's ${variable.name} comes from ${JSON.stringify(variable.valueFrom)}: teach the recipe test how the kubelet fills it`);
  }
  return env;
}

/** A field of /proc/PID/status. */
function statusField(pid: number, field: string): string {
  return new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!.trim();
}

/** The mount options of the mount at `point` as process `pid` sees it (the last one there wins). */
function mountOptions(pid: number, point: string): string[] {
  const lines = readFileSync(`/proc/${pid}/mountinfo`, 'utf8').trim().split('\n').map((line) => line.split(' '));
  const mounts = lines.filter((fields) => fields[4] === point);
  if (mounts.length === 0) throw new Error(`nothing is mounted at ${point} for process ${pid}`);
  return mounts.at(-1)![5]!.split(',');
}

describe.runIf(isRoot)('deploy/Containerfile, performed outside a container and run as the DaemonSet runs it', () => {
  let packed: Packed;
  let root = '';
  let installed = '';
  let vmm: ChildVmm | undefined;
  const instructions = containerfile();
  const { container } = daemonset();

  beforeAll(async () => {
    packed = await packFromCleanClone();
    root = mkdtempSync(join(tmpdir(), 'kvm-stats-image-root-'));
    if (HAS_KVM) vmm = await startVmm(['--vcpus', '1', '-name', 'recipe']);
  }, INSTALL_TIMEOUT);

  afterAll(async () => {
    await vmm?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('installs the packed tarball with production dependencies only, by its own RUN line', () => {
    // COPY: the tarball `npm pack` makes, to where the RUN line finds it.
    const [source, destination, ...more] = only(instructions, 'COPY').split(/\s+/);
    expect(more).toEqual([]);
    expect(basename(packed.tarball)).toMatch(new RegExp(`^${source!.replace(/[.]/g, '\\.').replace(/\*/g, '[^/]*')}$`));
    mkdirSync(join(root, 'tmp'), { recursive: true });
    mkdirSync(join(root, 'root'), { recursive: true });
    cpSync(packed.tarball, join(root, destination!));
    // RUN: every path it names is under /tmp or /root, which map into the stand-in root.
    const run = only(instructions, 'RUN');
    expect(run).toMatch(/--omit=dev/);
    expect(run.match(/(?<=^|\s)\/\S*/g)!.filter((path) => !/^\/(tmp|root)\//.test(path))).toEqual([]);
    const mapped = run.replace(/(?<=^|\s)\/(tmp|root)\//g, `${root}/$1/`);
    const env = { ...process.env, HOME: join(root, 'root'), npm_config_prefix: join(root, 'usr', 'local'), npm_config_update_notifier: 'false' };
    execFileSync('sh', ['-ec', mapped], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    expect(existsSync(join(root, destination!))).toBe(false);
    installed = join(root, 'usr', 'local', 'lib', 'node_modules', 'kvm-stats-otel');
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string>; peerDependencies: Record<string, string> };
    // Every production dependency and peer is there; a dev dependency only where an installed
    // package needs it (@types/node for protobufjs), never for itself.
    const modules = join(installed, 'node_modules');
    for (const name of [...Object.keys(manifest.dependencies), ...Object.keys(manifest.peerDependencies)]) expect(existsSync(join(modules, name, 'package.json')), name).toBe(true);
    const wanted = new Set<string>();
    const packageDirs = readdirSync(modules).flatMap((name) => (name.startsWith('@') ? readdirSync(join(modules, name)).map((sub) => `${name}/${sub}`) : [name]));
    for (const name of packageDirs) {
      const path = join(modules, name, 'package.json');
      if (!existsSync(path)) continue;
      const dependencies = JSON.parse(readFileSync(path, 'utf8')) as { dependencies?: Record<string, string>; peerDependencies?: Record<string, string> };
      for (const dependency of [...Object.keys(dependencies.dependencies ?? {}), ...Object.keys(dependencies.peerDependencies ?? {})]) wanted.add(dependency);
    }
    const devOnly = Object.keys(manifest.devDependencies).filter((name) => !(name in manifest.peerDependencies));
    expect(devOnly.filter((name) => existsSync(join(modules, name)) && !wanted.has(name))).toEqual([]);
  }, INSTALL_TIMEOUT);

  it('runs its entry point with the DaemonSet\'s args and env as uid 0 with only the two capabilities, on a read-only filesystem, and exports', async () => {
    expect(installed, 'the install above ran').not.toBe('');
    const entrypoint = JSON.parse(only(instructions, 'ENTRYPOINT')) as string[];
    const cmd = JSON.parse(only(instructions, 'CMD')) as string[];
    // The DaemonSet keeps the image's entry point and passes the image's own default arguments.
    expect(container.command).toBeUndefined();
    expect(container.args).toEqual(cmd);
    expect(only(instructions, 'USER')).toBe('0');

    const security = container.securityContext;
    expect(security.runAsUser).toBe(0);
    expect(security.capabilities?.drop).toEqual(['ALL']);
    expect(security.allowPrivilegeEscalation).toBe(false);
    expect(security.readOnlyRootFilesystem).toBe(true);
    const added = security.capabilities!.add!;
    const capabilities = ['-all', ...added.map((cap) => `+${cap.toLowerCase()}`)].join(',');
    const uid = String(security.runAsUser);
    const gid = String(security.runAsGroup ?? 0);

    const collector = await LocalCollector.start();
    try {
      const env: Record<string, string> = { ...containerEnv(container), OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint, PATH: `${join(root, 'usr', 'local', 'bin')}:/usr/local/bin:/usr/bin:/bin` };
      expect(env.OTEL_EXPORTER_OTLP_PROTOCOL).toBe('http/protobuf');
      // A mount namespace of its own: the installed files, then the root filesystem, read-only.
      const readOnly = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && mount -o remount,bind,ro / && shift && exec "$@"';
      const setpriv = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--no-new-privs', `--inh-caps=-all`, `--bounding-set=${capabilities}`];
      const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', readOnly, 'sh', join(root, 'usr'), ...setpriv, ...entrypoint, ...container.args!], { env, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
      const agent = watchAgentProcess(child);
      try {
        await collector.waitForRequests(1, 60_000);
        const pid = child.pid!;
        expect(statusField(pid, 'Name')).toBe('node');
        expect(statusField(pid, 'Uid').split(/\s+/)).toEqual([uid, uid, uid, uid]);
        const mask = capabilityMask(added);
        for (const set of ['CapEff', 'CapPrm', 'CapBnd']) expect(BigInt(`0x${statusField(pid, set)}`), set).toBe(mask);
        expect(BigInt(`0x${statusField(pid, 'CapInh')}`)).toBe(0n);
        expect(BigInt(`0x${statusField(pid, 'CapAmb')}`)).toBe(0n);
        expect(statusField(pid, 'NoNewPrivs')).toBe('1');
        expect(mountOptions(pid, join(root, 'usr'))).toContain('ro');
        expect(mountOptions(pid, '/')).toContain('ro');

        const [first] = collector.requests;
        const resource = first!.resourceMetrics[0]!.resource.attributes;
        expect(resource['k8s.node.name']).toBe(NODE_NAME);
        if (vmm) {
          // A real VM: its vCPU's exits, from the scan, as the node's agent exports them.
          const series = collector.requests.flatMap(metricsOf).filter(({ metric }) => metric.name === 'kvm.vcpu.exits');
          expect(series.flatMap(({ metric }) => metric.sum!.dataPoints).some((point) => point.attributes['process.pid'] === vmm!.pid && point.attributes['kvm.vm.name'] === 'recipe')).toBe(true);
        }
        const requests = collector.requests.length;
        expect(await agent.stop('SIGTERM', 30_000)).toBe(0);
        // The last collection and export on the way out.
        expect(collector.requests.length).toBeGreaterThan(requests);
        expect(agent.stderr()).not.toMatch(/"level":"(error|fatal)"/);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    } finally {
      await collector.close();
    }
  }, 120_000);
});
