/**
 * libvirt end to end, as a libvirt user runs it: real virtlogd and libvirtd started here (no
 * systemd; libvirtd's sockets in a private folder), small domains started with the preload helper
 * through both routes (<qemu:commandline> and an <emulator> wrapper from `helper wrapper`), and
 * the agent as users run it (the built bin) against a real OTLP receiver. Every value it exports
 * for a suspended domain must equal `virsh domstats`; hot-plug, destroy and start must be
 * followed; an unprivileged agent must get the stats fds of a libvirt domain. The host is left as
 * it was found: domains undefined, daemons stopped, /dev/kvm's mode restored, every file libvirt
 * wrote for the test removed.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type AgentProcess, BIN, LocalCollector, type MetricsRequest, metricsOf, pointValue, startAgentProcess, watchAgentProcess } from '../../examples/local-collector/collector.js';
import { USER_HZ } from '../../src/abi/linux.js';
import { describeKvm } from '../helpers/kvm.js';
import { AS_NOBODY, ROOT, packageCopy } from '../helpers/processes.js';

const run = promisify(execFile);

/** The bin, for one-shot commands (helper, list, handoff). */
async function cli(...args: string[]): Promise<string> {
  // `list --json` on a host where other processes hold thousands of stats fds runs to megabytes.
  const { stdout } = await run(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: 60_000, maxBuffer: 256 * 1024 * 1024 });
  return stdout;
}

/** Polls `check` until it returns something other than undefined, at most `timeoutMs`. */
async function until<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs: number, detail: () => string = () => ''): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}${detail() ? `; ${detail()}` : ''}`);
    await sleep(100);
  }
}

// ---- the host's libvirt, started and put back ----

/** Where libvirt keeps state: what the test adds here is removed afterwards. */
const LIBVIRT_STATE = ['/run/libvirt', '/var/lib/libvirt', '/var/cache/libvirt', '/var/log/libvirt', '/etc/libvirt'];

function statePaths(): Set<string> {
  const paths = new Set<string>();
  for (const root of LIBVIRT_STATE) {
    if (!existsSync(root)) continue;
    paths.add(root);
    for (const entry of readdirSync(root, { recursive: true }) as string[]) paths.add(join(root, entry));
  }
  return paths;
}

function processesNamed(name: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === name;
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

function groupId(name: string): number | undefined {
  const line = readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
  return line === undefined ? undefined : Number(line.split(':')[2]);
}

/** A daemon run in the foreground as a child of the test, its output in a file. */
class Daemon {
  readonly #exit: Promise<unknown>;
  private constructor(readonly name: string, readonly child: ChildProcess, readonly log: string) {
    this.#exit = once(child, 'exit');
  }

  static start(name: string, args: string[], log: string): Daemon {
    const out = openSync(log, 'a');
    try {
      // Its own session, as a daemon would be; cwd / so no folder of the test is held.
      return new Daemon(name, spawn(name, args, { cwd: '/', detached: true, stdio: ['ignore', out, out] }), log);
    } finally {
      closeSync(out);
    }
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  output(): string {
    return existsSync(this.log) ? readFileSync(this.log, 'utf8').trim().split('\n').slice(-8).join(' | ') : '';
  }

  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves once it has exited. */
  async stop(timeoutMs = 15_000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    await this.#exit;
    clearTimeout(timer);
  }
}

interface Domain {
  readonly name: string;
  readonly xml: string;
}

describeKvm('libvirt', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'kvm-libvirt-'));
  const uri = `qemu:///system?socket=${tmp}/libvirt-sock`;
  const tag = `${process.pid}`;
  const names = { argv: `kso-argv-${tag}`, wrapped: `kso-wrapped-${tag}` };
  const listenDir = join(tmp, 'listen');
  const listenSocket = join(listenDir, 'agent.sock');
  const daemons: Daemon[] = [];
  const domains: string[] = [];
  const agents: AgentProcess[] = [];
  const copies: string[] = [];
  let statesBefore: Set<string> | undefined;
  let kvmBefore: { mode: number; gid: number } | undefined;
  let collector: LocalCollector | undefined;
  let scanAgent: AgentProcess;
  let preload: string;
  let wrapper: string;

  async function virsh(...args: string[]): Promise<string> {
    try {
      const { stdout } = await run('virsh', ['-q', '-c', uri, ...args], { timeout: 60_000 });
      return stdout;
    } catch (error) {
      const { stderr, message } = error as Error & { stderr?: string };
      throw new Error(`virsh ${args.join(' ')} failed: ${stderr?.trim() || message}; libvirtd says: ${daemons[1]?.output()}`);
    }
  }

  /** The domain's QEMU, from the pid file libvirt keeps. */
  function qemuPid(name: string): number {
    return Number(readFileSync(`/run/libvirt/qemu/${name}.pid`, 'utf8').trim());
  }

  function domainLog(name: string): string {
    return readFileSync(`/var/log/libvirt/qemu/${name}.log`, 'utf8');
  }

  /**
   * No disk, 64 MiB, vCPUs 0 and 3 of 6 online in 2 sockets of 3 cores: on x86 the kernel's
   * vCPU id is the APIC id, so libvirt's (and QEMU's) vCPU 3 is the kernel's vCPU 4.
   */
  function domainXml(name: string, emulator: string, env?: Record<string, string>): Domain {
    const vcpus = [0, 1, 2, 3, 4, 5]
      .map((id) => `    <vcpu id='${id}' enabled='${id === 0 || id === 3 ? 'yes' : 'no'}' hotpluggable='${id === 0 ? 'no' : 'yes'}'${id === 0 ? " order='1'" : id === 3 ? " order='2'" : ''}/>`)
      .join('\n');
    const commandline = env
      ? `  <qemu:commandline>\n${Object.entries(env).map(([k, v]) => `    <qemu:env name='${k}' value='${v}'/>`).join('\n')}\n  </qemu:commandline>\n`
      : '';
    const xml = `<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu placement='static' current='2'>6</vcpu>
  <vcpus>
${vcpus}
  </vcpus>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
    <topology sockets='2' dies='1' cores='3' threads='1'/>
  </cpu>
  <devices>
    <emulator>${emulator}</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
${commandline}</domain>
`;
    return { name, xml };
  }

  async function define(domain: Domain): Promise<void> {
    const file = join(tmp, `${domain.name}.xml`);
    writeFileSync(file, domain.xml);
    await virsh('define', file);
    domains.push(domain.name);
  }

  async function start(domain: Domain): Promise<number> {
    await virsh('start', domain.name);
    return qemuPid(domain.name);
  }

  /** libvirt's vCPU number (QEMU's cpu-index) to the kernel's vCPU id, through each vCPU's thread. */
  async function kernelVcpuIds(name: string, pid: number): Promise<Map<number, number>> {
    const cpus = JSON.parse(await virsh('qemu-monitor-command', name, '{"execute":"query-cpus-fast"}')) as { return: { 'cpu-index': number; 'thread-id': number }[] };
    const listed = JSON.parse(await cli('list', '--json')) as { processes: { pid: number; statsFds: { target: string; id: string }[] }[] };
    const byThread = new Map<number, number>();
    for (const fd of listed.processes.find((p) => p.pid === pid)?.statsFds ?? []) {
      const match = /^kvm-(\d+)\/vcpu-(\d+)$/.exec(fd.id);
      if (match) byThread.set(Number(match[1]), Number(match[2]));
    }
    return new Map(cpus.return.map((cpu) => [cpu['cpu-index'], byThread.get(cpu['thread-id']) ?? -1]));
  }

  interface Point {
    readonly metric: string;
    readonly pid: number;
    readonly vmName: unknown;
    readonly vcpu?: number;
    readonly value?: number;
    readonly timeNs: bigint;
  }

  function pointsOf(request: MetricsRequest, pid: number): Point[] {
    return metricsOf(request).flatMap(({ metric }) => {
      const numbers = metric.sum?.dataPoints ?? metric.gauge?.dataPoints;
      const points = numbers ?? metric.histogram?.dataPoints ?? [];
      return points
        .filter((p) => p.attributes?.['process.pid'] === pid)
        .map((p) => ({
          metric: metric.name,
          pid,
          vmName: p.attributes['kvm.vm.name'],
          vcpu: p.attributes['kvm.vcpu.id'] as number | undefined,
          value: numbers ? pointValue(p as Parameters<typeof pointValue>[0]) : undefined,
          timeNs: BigInt(p.timeUnixNano),
        }));
    });
  }

  const vcpuIdsOf = (points: Point[]): number[] => [...new Set(points.flatMap((p) => (p.vcpu === undefined ? [] : [p.vcpu])))].sort((a, b) => a - b);

  /** The first request from now on (or from request `from`) that `test` accepts. */
  async function request(what: string, test: (request: MetricsRequest) => boolean, timeoutMs = 30_000, from = collector!.requests.length): Promise<MetricsRequest> {
    const deadline = Date.now() + timeoutMs;
    for (let index = from; ; index++) {
      const left = deadline - Date.now();
      const requests = await collector!.waitForRequests(index + 1, Math.max(left, 1)).catch(() => undefined);
      if (requests === undefined) {
        throw new Error(`waited ${timeoutMs} ms for an OTLP request with ${what}; ${index - from} came without; agent stderr: ${scanAgent.stderr().slice(-2000)}`);
      }
      if (test(requests[index]!)) return requests[index]!;
    }
  }

  beforeAll(async () => {
    for (const tool of ['virsh', 'virtlogd', 'libvirtd']) {
      if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing: install libvirt-daemon-system and libvirt-clients (.ci/run does)`);
    }
    for (const name of ['libvirtd', 'virtlogd']) {
      const running = processesNamed(name);
      if (running.length > 0) throw new Error(`${name} already runs here (pid ${running.join(', ')}): this test starts its own libvirt daemons; stop it first`);
    }
    const kvmGroup = groupId('kvm');
    if (kvmGroup === undefined) throw new Error('group kvm is missing: libvirt runs QEMU in it; install libvirt-daemon-system');
    chmodSync(tmp, 0o755); // libvirt's QEMU user reads the helper and runs the wrapper from here
    statesBefore = statePaths();

    // libvirt's QEMU runs as its own user in group kvm; without udev here /dev/kvm may be root's only.
    const kvm = statSync('/dev/kvm');
    if ((kvm.mode & 0o006) !== 0o006 && !(kvm.gid === kvmGroup && (kvm.mode & 0o060) === 0o060)) {
      kvmBefore = { mode: kvm.mode & 0o7777, gid: kvm.gid };
      chownSync('/dev/kvm', kvm.uid, kvmGroup);
      chmodSync('/dev/kvm', (kvm.mode & 0o7777) | 0o060);
    }

    const helperDir = join(tmp, 'helper');
    await cli('helper', 'path', '--dir', helperDir);
    preload = join(helperDir, 'libkvm-stats-preload.so');
    wrapper = (await cli('helper', 'wrapper', join(tmp, 'qemu-kvm-stats'), '--dir', helperDir, '--socket', listenSocket)).trim();

    writeFileSync(join(tmp, 'libvirtd.conf'), `unix_sock_dir = "${tmp}"\nlog_outputs = "3:file:${tmp}/libvirtd.log"\n`);
    daemons.push(Daemon.start('virtlogd', ['--pid-file', join(tmp, 'virtlogd.pid')], join(tmp, 'virtlogd.out')));
    await until('virtlogd to listen on /run/libvirt/virtlogd-sock', () => (existsSync('/run/libvirt/virtlogd-sock') || !daemons[0]!.running ? true : undefined), 20_000);
    if (!daemons[0]!.running) throw new Error(`virtlogd exited (${daemons[0]!.child.exitCode}): ${daemons[0]!.output()}`);
    daemons.push(Daemon.start('libvirtd', ['--config', join(tmp, 'libvirtd.conf'), '--pid-file', join(tmp, 'libvirtd.pid')], join(tmp, 'libvirtd.out')));
    await until(
      'libvirtd to answer on its socket',
      () => (daemons[1]!.running ? run('virsh', ['-q', '-c', uri, 'list', '--all'], { timeout: 10_000 }).then(() => true, () => undefined) : Promise.reject(new Error(`libvirtd exited: ${daemons[1]!.output()}`))),
      30_000,
      () => `libvirtd says: ${daemons[1]!.output()} ${existsSync(join(tmp, 'libvirtd.log')) ? readFileSync(join(tmp, 'libvirtd.log'), 'utf8').slice(-500) : ''}`,
    );

    collector = await LocalCollector.start();
    scanAgent = startAgentProcess(['--scan', '--endpoint', collector.endpoint, '--interval', '1000', '--log-level', 'info']);
    agents.push(scanAgent);
  }, 120_000);

  afterAll(async () => {
    const problems: string[] = [];
    const attempt = async (what: string, step: () => unknown): Promise<void> => {
      try {
        await step();
      } catch (error) {
        problems.push(`${what}: ${(error as Error).message}`);
      }
    };
    for (const agent of agents) await attempt('stopping an agent', () => agent.stop('SIGTERM', 15_000));
    await attempt('closing the collector', () => collector?.close());
    for (const name of domains) {
      // A QEMU libvirt cannot stop (the daemon died) is killed by its pid.
      await attempt(`destroying ${name}`, async () => {
        if (existsSync(`/run/libvirt/qemu/${name}.pid`)) {
          const pid = qemuPid(name);
          await virsh('destroy', name).catch(() => process.kill(pid, 'SIGKILL'));
        }
      });
      await attempt(`undefining ${name}`, () => virsh('undefine', name));
    }
    for (const daemon of daemons.reverse()) await attempt(`stopping ${daemon.name}`, () => daemon.stop());
    if (kvmBefore) {
      const { mode, gid } = kvmBefore;
      await attempt('restoring /dev/kvm', () => {
        chownSync('/dev/kvm', statSync('/dev/kvm').uid, gid);
        chmodSync('/dev/kvm', mode);
      });
    }
    if (statesBefore) {
      const added = [...statePaths()].filter((path) => !statesBefore!.has(path)).sort((a, b) => b.length - a.length);
      await attempt('removing what libvirt wrote', () => added.forEach((path) => rmSync(path, { recursive: true, force: true })));
    }
    for (const path of [tmp, ...copies]) rmSync(path, { recursive: true, force: true });
    expect(problems).toEqual([]);
  }, 120_000);

  it('a domain given the helper through <qemu:commandline> is exported by agent --scan under its name, every value equal to virsh domstats', async () => {
    const domain = domainXml(names.argv, '/usr/bin/qemu-system-x86_64', { LD_PRELOAD: preload });
    await define(domain);
    const pid = await start(domain);
    expect(domainLog(domain.name)).toMatch(/Domain id=\d+ is tainted: custom-argv/);
    const found = await request(`two vCPUs of ${domain.name}`, (r) => vcpuIdsOf(pointsOf(r, pid)).length === 2);
    const ids = await kernelVcpuIds(domain.name, pid);
    expect([...ids.keys()].sort()).toEqual([0, 3]);
    expect(vcpuIdsOf(pointsOf(found, pid))).toEqual([...ids.values()].sort((a, b) => a - b));
    expect(ids.get(3)).not.toBe(3); // the topology this test is about: libvirt's 3 is another id in the kernel

    await virsh('suspend', domain.name);
    const suspendedNs = BigInt(Date.now()) * 1_000_000n;
    const stats = await virsh('domstats', '--vcpu', '--vm', domain.name);
    const held = await request(`${domain.name}'s values collected after it was suspended`, (r) => {
      const points = pointsOf(r, pid);
      return points.length > 0 && points.every((p) => p.timeNs > suspendedNs);
    });

    // domstats: vcpu.N.STAT.sum|cur|max and vm.STAT.sum|cur|max, booleans yes/no, no histograms.
    const expected = new Map<string, number>();
    for (const line of stats.split('\n')) {
      const match = /^\s*(?:vcpu\.(\d+)|vm)\.(\w+)\.(?:sum|cur|max)=(.*)$/.exec(line);
      if (!match) continue;
      const [, index, stat, text] = match;
      const value = text === 'yes' ? 1 : text === 'no' ? 0 : Number(text);
      const key = index === undefined ? `kvm.vm.${stat}` : `kvm.vcpu.${stat} vcpu ${ids.get(Number(index))}`;
      expected.set(key, value);
    }
    const exported = new Map<string, number>();
    const sched = new Map<string, number>();
    for (const point of pointsOf(held, pid)) {
      expect(point.vmName).toBe(domain.name);
      if (point.value === undefined) continue; // a histogram: libvirt shows none
      // The vCPU threads' scheduler time: compared with vcpu.N.time and vcpu.N.delay below.
      if (point.metric.startsWith('kvm.vcpu.sched.')) sched.set(`${point.metric} vcpu ${point.vcpu}`, point.value);
      else exported.set(point.vcpu === undefined ? point.metric : `${point.metric} vcpu ${point.vcpu}`, point.value);
    }
    expect(expected.size).toBeGreaterThan(40);
    expect(Object.fromEntries([...exported].sort())).toEqual(Object.fromEntries([...expected].sort()));

    // Each vCPU's scheduler time against libvirt's vcpu.N.delay (the same schedstat field) and
    // vcpu.N.time (utime + stime, in whole clock ticks: up to two ticks below the scheduler's
    // on-CPU time), read before and after the collection; each domstats call wakes the vCPUs
    // of a suspended QEMU 7.2, so both move a little between the two.
    const after = await virsh('domstats', '--vcpu', domain.name);
    const field = (text: string, index: number, name: string) => Number(new RegExp(`^\\s*vcpu\\.${index}\\.${name}=(\\d+)$`, 'm').exec(text)![1]);
    const tick = 1e9 / USER_HZ;
    for (const [index, vcpu] of ids) {
      const delay = sched.get(`kvm.vcpu.sched.run_delay vcpu ${vcpu}`)!;
      expect(delay, `vCPU ${index} delay`).toBeGreaterThanOrEqual(field(stats, index, 'delay'));
      expect(delay, `vCPU ${index} delay`).toBeLessThanOrEqual(field(after, index, 'delay'));
      const time = sched.get(`kvm.vcpu.sched.cpu_time vcpu ${vcpu}`)!;
      expect(time, `vCPU ${index} time`).toBeGreaterThanOrEqual(field(stats, index, 'time'));
      expect(time, `vCPU ${index} time`).toBeLessThanOrEqual(field(after, index, 'time') + 2 * tick);
      expect(sched.get(`kvm.vcpu.sched.timeslices vcpu ${vcpu}`), `vCPU ${index} timeslices`).toBeGreaterThan(0);
    }
  }, 90_000);

  it('a vCPU hot-plugged with virsh setvcpus --live, a virsh destroy and a virsh start are followed by the scanning agent', async () => {
    const name = names.argv;
    const pid = qemuPid(name);
    await virsh('resume', name);
    await virsh('setvcpus', name, '3', '--live');
    const plugged = await request(`a third vCPU of ${name}`, (r) => vcpuIdsOf(pointsOf(r, pid)).length === 3);
    const ids = await kernelVcpuIds(name, pid);
    expect(ids.size).toBe(3);
    expect(vcpuIdsOf(pointsOf(plugged, pid))).toEqual([...ids.values()].sort((a, b) => a - b));

    await virsh('destroy', name);
    await scanAgent.waitForLog(new RegExp(`process ${pid} \\([^)]*\\) exited: closed its 4 stats fds`), 30_000);
    await request(`no point of ${name}'s old process ${pid}`, (r) => pointsOf(r, pid).length === 0 && metricsOf(r).length > 0);

    await virsh('start', name);
    const restarted = qemuPid(name);
    expect(restarted).not.toBe(pid);
    const again = await request(`${name} found again as process ${restarted}`, (r) => vcpuIdsOf(pointsOf(r, restarted)).length === 2);
    expect(new Set(pointsOf(again, restarted).map((p) => p.vmName))).toEqual(new Set([name]));
  }, 90_000);

  it('an <emulator> wrapper from `helper wrapper` leaves the domain untainted, and its helper and a root handoff give an unprivileged agent a libvirt domain\'s stats fds', async () => {
    // libvirt runs QEMU with its own group: an agent in that group (and no other) can take what
    // the helper inside QEMU sends to its socket (mode 0660).
    const argvPid = qemuPid(names.argv);
    const qemuGid = Number(/^Gid:\s+(\d+)/m.exec(readFileSync(`/proc/${argvPid}/status`, 'utf8'))![1]);
    // Defined first: libvirt probes a new emulator by running it (a VM without vCPUs), and that
    // short-lived QEMU's helper would hand its fds over too.
    const domain = domainXml(names.wrapped, wrapper);
    await define(domain);
    mkdirSync(listenDir, { mode: 0o755 });
    chownSync(listenDir, 65534, qemuGid);
    const [setpriv, ...asNobody] = AS_NOBODY;
    const asAgent = asNobody.map((a) => a.replace('--regid=65534', `--regid=${qemuGid}`));
    // The checkout itself when that user can run it, else a world-readable copy (CI clones under /root).
    const inPlace = spawnSync(setpriv!, [...asAgent, process.execPath, BIN, '--version'], { cwd: '/', timeout: 30_000 }).status === 0;
    const installed = inPlace ? ROOT : packageCopy();
    if (!inPlace) copies.push(installed);
    const args = [...asAgent, process.execPath, join(installed, 'dist', 'cli', 'main.js')];
    const listening = unprivilegedAgent(setpriv!, [...args, 'agent', '--listen', listenSocket, '--console', '--interval', '500', '--log-level', 'warn']);
    agents.push(listening);
    try {
      await until('the unprivileged agent to listen', () => (existsSync(listenSocket) ? true : undefined), 30_000, () => listening.stderr());
      expect(statSync(listenSocket)).toMatchObject({ uid: 65534, gid: qemuGid });

      const pid = await start(domain);
      expect(readFileSync(`/proc/${pid}/comm`, 'utf8').trim()).toBe('qemu-system-x86'); // exec'ed, not a shell
      expect(domainLog(domain.name)).not.toMatch(/tainted/);
      // Through the helper's own hand-over, as the domain started: its vCPUs 0 and 3 (kernel ids 0 and 4).
      // libvirt passes -uuid and debug-threads=on: the domain's UUID and libvirt's own vCPU number come along.
      const line = (vmPid: number, vm: string, vcpu: number, index: number): RegExp =>
        new RegExp(`^kvm\\.vcpu\\.exits\\{process\\.pid=${vmPid},kvm\\.vm\\.name=${vm},kvm\\.vm\\.uuid=[0-9a-f-]{36},kvm\\.vcpu\\.id=${vcpu},kvm\\.vcpu\\.index=${index}\\} sum 1 \\d+$`, 'm');
      const ids = await kernelVcpuIds(domain.name, pid);
      expect(domainLog(domain.name)).not.toMatch(/tainted: custom-argv/); // the monitor command taints it custom-monitor, nothing else
      for (const [index, vcpu] of ids) await listening.waitForOutput(line(pid, domain.name, vcpu, index), 30_000);
      // The scanning agent reads it too (and not the unprivileged agent's copies).
      await request(`${domain.name} in the scan`, (r) => vcpuIdsOf(pointsOf(r, pid)).length === 2 && pointsOf(r, pid).every((p) => p.vmName === domain.name));

      // A root handoff of the <qemu:commandline> domain, to the same agent.
      const handed = await cli('handoff', '--pid', String(argvPid), '--to', listenSocket);
      expect(handed).toMatch(new RegExp(`^handed over 3 stats fds of process ${argvPid} \\(vm ${names.argv}: VM, vCPU 0, vCPU 4\\) to `));
      await listening.waitForOutput(line(argvPid, names.argv, 4, 3), 30_000);
    } finally {
      await listening.stop('SIGTERM', 15_000);
    }
    const logged = listening.stderr().split('\n').filter(Boolean);
    expect(logged).toEqual([]);
  }, 120_000);
});

/** An agent run through setpriv, with the same waiting helpers as startAgentProcess. */
function unprivilegedAgent(setpriv: string, args: string[]): AgentProcess {
  return watchAgentProcess(spawn(setpriv, args, { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] }));
}
