/**
 * Unprivileged hand-over on real KVM: HandoverProvider receiving stats fds from `handoff` (a
 * real VMM's fds, copied with pidfd_getfd), from raw senders that break the rules, and an
 * unprivileged receiver (nobody) exporting what a root `handoff` gave it.
 */
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it } from 'vitest';
import { Kvm, type VcpuFd, type VmFd } from '../../src/native/kvm-fds.js';
import { O_RDWR } from '../../src/abi/linux.js';
import { closeFd, memfdCreate, openPath } from '../../src/native/libc.js';
import { fdLinks } from '../../src/sources/proc.js';
import { MessageBuffer, connectSeqpacket, listenSeqpacket } from '../../src/native/socket.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { HANDOVER_LIMITS, HandoverPathError, HandoverProvider, parseHandoverHeader } from '../../src/sources/handover-receiver.js';
import type { Problem } from '../../src/sources/problem.js';
import { errorText } from '../../src/cli/hints.js';
import { buildImage, writeImage } from '../helpers/image.js';
import { answerTo } from '../helpers/handover.js';
import { describeKvm } from '../helpers/kvm.js';
import { AS_NOBODY, JsonLineChild, ROOT, compiledFixture, packageCopy, startTinyVmm, startVmm, tinyVmmTools, unprivilegedCopy, runBin } from '../helpers/processes.js';

const BIN = join(ROOT, 'dist', 'cli', 'main.js');
const OTEL = ['api', 'core', 'resources', 'sdk-metrics', 'semantic-conventions'].map((name) => `@opentelemetry/${name}`);

const run = (...args: string[]) => runBin(args);

/** The same, without blocking this process's event loop: the receiver under test answers from it. */
function runAsync(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

/** test/fixtures/handover-sender.c, compiled once. */
const hostileSender = (): string => compiledFixture('handover-sender.c', ['-lpthread']);

type Answers = { answers: ({ accepted: number; refused: number; reason?: string; retry?: boolean } | null)[] };

function socketPath(): string {
  return join(mkdtempSync(join(tmpdir(), 'kvm-handover-')), 'agent.sock');
}

const openFds = (): number => readdirSync('/proc/self/fd').length;

function points(rm: ResourceMetrics, name: string) {
  const metric = rm.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
  return (metric?.dataPoints ?? []) as { attributes: Record<string, unknown>; value: number }[];
}

const providers: HandoverProvider[] = [];
afterEach(async () => {
  for (const provider of providers.splice(0)) await provider.close();
});

function newProvider(path = socketPath(), options: { fdsPerSender?: number; fdsPerOwner?: number; idleTimeoutMs?: number; mode?: number } = {}): { provider: HandoverProvider; reports: Problem[]; path: string } {
  const reports: Problem[] = [];
  const provider = new HandoverProvider(path, { ...options, report: (problem) => reports.push(problem) });
  providers.push(provider);
  return { provider, reports, path };
}

/** One connection, one message, closed: as the preload helper sends. */
function send(path: string, header: string | Buffer, fds: number[], maxFds: number = HANDOVER_LIMITS.fdsPerMessage): void {
  const socket = connectSeqpacket(path)!;
  const buffer = new MessageBuffer(8192, maxFds);
  try {
    expect(buffer.send(socket, typeof header === 'string' ? Buffer.from(header) : header, fds)).toBe(true);
  } finally {
    buffer.free();
    closeFd(socket);
  }
}

describe('the hand-over header', () => {
  it('accepts what senders send and names the field that is wrong', () => {
    const parse = (value: unknown) => () => parseHandoverHeader(Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)));
    expect(parse({ pid: 7, vcpus: [null, 0, 1], vmName: 'a', attributes: { 'site.name': 'x', n: 1, b: true }, future: 1 })()).toMatchObject({ pid: 7 });
    expect(parse('{"vcpus":')).toThrow('the header is not JSON');
    expect(parse([1])).toThrow('the header is not a JSON object');
    expect(parse({ vcpus: [-1] })).toThrow('header field vcpus is not a list of vCPU ids and nulls');
    expect(parse({ vmName: '' })).toThrow('header field vmName is not a string of 1 to 256 printable characters');
    // What a terminal would act on, in a name that ends up in logs and on consoles.
    expect(parse({ vmName: 'web\x1b]0;owned\x07' })).toThrow('header field vmName is not a string of 1 to 256 printable characters');
    expect(parse({ sender: 'x\x1b[2J' })).toThrow('header field sender is not a short string of printable characters');
    expect(parse({ attributes: { k: 'a\nb' } })).toThrow('attribute k is not a string (up to 256 printable characters), number or boolean');
    expect(parse({ pid: 0 })).toThrow('header field pid is not a process id');
    expect(parse({ attributes: { 'kvm.vcpu.id': 3 } })).toThrow('attribute kvm.vcpu.id is set by the receiver, not the sender');
    expect(parse({ attributes: { 'bad key': 'x' } })).toThrow('attribute name "bad key" is not a dotted name');
    expect(parse({ attributes: { k: { nested: 1 } } })).toThrow('attribute k is not a string (up to 256 printable characters), number or boolean');
    expect(parse({ attributes: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i])) })).toThrow('header has 17 attributes, more than 16');
  });
});

describe('the hand-over socket', () => {
  it('listens with mode 0660, replaces a stale socket, and refuses a path in use or that is not a socket', async () => {
    const path = socketPath();
    closeFd(listenSeqpacket(path, 0o600)); // a receiver that died: its socket file stays
    const { provider } = newProvider(path);
    await provider.refresh();
    expect(statSync(path).mode & 0o777).toBe(0o660);
    const inUse = await newProvider(path).provider.refresh().catch((error: Error) => error);
    expect(inUse).toBeInstanceOf(HandoverPathError);
    expect(inUse).toMatchObject({ path, code: 'EADDRINUSE', message: `another receiver listens on ${path}: stop it or pick another path` });
    expect(errorText(inUse as Error)).toBe(`another receiver listens on ${path}: stop it or pick another path for --listen`);
    await provider.close();
    expect(existsSync(path)).toBe(false);

    const file = socketPath();
    writeFileSync(file, 'not a socket');
    const notSocket = await newProvider(file).provider.refresh().catch((error: Error) => error);
    expect(notSocket).toMatchObject({ path: file, code: 'EEXIST', message: `${file} exists and is not a socket: remove it or pick another path` });
    expect(errorText(notSocket as Error)).toBe(`${file} exists and is not a socket: remove it or pick another path for --listen`);
    const long = `/tmp/${'x'.repeat(120)}`;
    await expect(newProvider(long).provider.refresh()).rejects.toThrow(/is 125 bytes: a Unix socket path must be 1 to 107 bytes; pick a shorter one$/);
  });
});

describe('the hand-over socket\'s directory', () => {
  it('is refused when others can write to it and it is not sticky, or when it belongs to another user', async () => {
    const open = mkdtempSync(join(tmpdir(), 'kvm-handover-open-'));
    chmodSync(open, 0o777);
    const refused = await newProvider(join(open, 'agent.sock')).provider.refresh().catch((error: Error) => error);
    expect(refused).toBeInstanceOf(HandoverPathError);
    expect(refused).toMatchObject({ code: 'EPERM', message: `${open} can be written by other users (mode 0777) and is not sticky, so they could swap agent.sock for a link: use a directory only its owner can write, or make it sticky (chmod +t)` });
    expect(errorText(refused as Error)).toMatch(/^[^\n]+ for --listen$/);
    expect(existsSync(join(open, 'agent.sock'))).toBe(false);

    const theirs = mkdtempSync(join(tmpdir(), 'kvm-handover-theirs-'));
    chownSync(theirs, 65534, 65534);
    await expect(newProvider(join(theirs, 'agent.sock')).provider.refresh()).rejects.toThrow(`${theirs} belongs to uid 65534, who could swap agent.sock for a link: put the socket in a directory of uid 0 or root`);

    const sticky = mkdtempSync(join(tmpdir(), 'kvm-handover-sticky-'));
    chmodSync(sticky, 0o1777);
    const { provider, path } = newProvider(join(sticky, 'agent.sock'));
    await provider.refresh();
    expect(statSync(path).mode & 0o777).toBe(0o660);
  });

  it('is checked all the way from /, through symbolic links, and says what is wrong with a path that is missing, loops or is not a directory', async () => {
    const refusal = (path: string) => newProvider(path).provider.refresh().then(() => undefined, (error: Error) => error);
    // A directory of another user anywhere above: they could swap what is below it.
    const above = mkdtempSync(join(tmpdir(), 'kvm-handover-above-'));
    chownSync(above, 65534, 65534);
    chmodSync(above, 0o755);
    execFileSync('mkdir', ['-m', '0755', join(above, 'run')]);
    expect(await refusal(join(above, 'run', 'agent.sock'))).toMatchObject({
      code: 'EPERM',
      message: `${above} belongs to uid 65534, who could swap run for a link: put the socket in a directory of uid 0 or root, on a path of such directories`,
    });
    // A link on the way to a directory of another user: checked where it leads.
    const linked = mkdtempSync(join(tmpdir(), 'kvm-handover-link-'));
    symlinkSync(above, join(linked, 'to-theirs'));
    expect(await refusal(join(linked, 'to-theirs', 'run', 'agent.sock'))).toMatchObject({ code: 'EPERM', message: expect.stringMatching(new RegExp(`^${above} belongs to uid 65534`)) });
    // A link to a safe directory is fine.
    const safe = mkdtempSync(join(tmpdir(), 'kvm-handover-safe-'));
    symlinkSync(safe, join(linked, 'to-safe'));
    const { provider } = newProvider(join(linked, 'to-safe', 'agent.sock'));
    await provider.refresh();
    expect(statSync(join(safe, 'agent.sock')).isSocket()).toBe(true);
    // A loop, a missing directory, a file where a directory should be.
    symlinkSync('loop', join(linked, 'loop'));
    const loop = await refusal(join(linked, 'loop', 'agent.sock'));
    expect(loop).toMatchObject({ code: 'ELOOP', message: `${join(linked, 'loop', 'agent.sock')} has more than 40 symbolic links on its way (a loop?): use a path without them` });
    expect(errorText(loop as Error)).toMatch(/ for --listen$/);
    expect(await refusal(join(linked, 'missing', 'agent.sock'))).toMatchObject({
      code: 'ENOENT',
      message: `${join(linked, 'missing')} does not exist: create the directory for agent.sock first (owned by this user or root, writable by no one else)`,
    });
    writeFileSync(join(linked, 'file'), '');
    expect(await refusal(join(linked, 'file', 'agent.sock'))).toMatchObject({ code: 'ENOTDIR', message: `${join(linked, 'file')} is not a directory: ${join(linked, 'file', 'agent.sock')} cannot be created under it` });
  });

  it('at close removes only the socket it bound: not a file swapped in at its path', async () => {
    const base = mkdtempSync(join(tmpdir(), 'kvm-handover-swapped-'));
    const run = join(base, 'run');
    execFileSync('mkdir', ['-m', '0755', run]);
    const { provider, path } = newProvider(join(run, 'agent.sock'));
    await provider.refresh();
    // Its directory swapped for another holding a file of that name (root's, mode 0600).
    renameSync(run, join(base, 'old'));
    execFileSync('mkdir', ['-m', '0755', run]);
    writeFileSync(path, 'root\'s own', { mode: 0o600 });
    await provider.close();
    expect(readFileSync(path, 'utf8')).toBe('root\'s own');
    // Where nothing was swapped, its own socket goes.
    const again = newProvider(join(base, 'old', 'second.sock'));
    await again.provider.refresh();
    await again.provider.close();
    expect(existsSync(again.path)).toBe(false);
  });

  it('says what an unprivileged receiver can do about another user\'s socket at its path', () => {
    const sticky = mkdtempSync(join(tmpdir(), 'kvm-handover-squat-'));
    chmodSync(sticky, 0o1777);
    const installed = packageCopy();
    const [setpriv, ...asNobody] = AS_NOBODY;
    const listen = (path: string) =>
      spawnSync(setpriv!, [...asNobody, process.execPath, join(installed, 'dist', 'cli', 'main.js'), 'agent', '--listen', path, '--console', '--interval', '60000'], { cwd: '/', encoding: 'utf8', timeout: 30_000 });
    // Root's stale socket that nobody may connect to (mode 0600).
    const closed = join(sticky, 'closed.sock');
    closeFd(listenSeqpacket(closed, 0o600));
    expect(listen(closed)).toMatchObject({
      status: 1,
      stderr: `kvm-stats-otel: ${closed} is a socket of uid 0 that this user cannot connect to (another user's receiver, or a stale socket of theirs): pick another path, or ask its owner or root to remove it for --listen\n`,
    });
    // Root's stale socket that nobody may connect to but not remove (a sticky directory).
    const stale = join(sticky, 'stale.sock');
    closeFd(listenSeqpacket(stale, 0o666));
    expect(listen(stale)).toMatchObject({
      status: 1,
      stderr: `kvm-stats-otel: ${stale} is a stale socket of uid 0 that this user cannot remove (EPERM): ask its owner or root to remove it, or pick another path for --listen\n`,
    });
  });

  it('never sets the mode of what a link swapped in after bind names (bind held back 1 s by strace)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-handover-swap-'));
    const path = join(dir, 'agent.sock');
    const target = join(dir, 'target');
    writeFileSync(target, 'secret');
    chmodSync(target, 0o600);
    const agent = spawn('strace', ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=bind', '-e', 'inject=bind:delay_exit=1000000', process.execPath, BIN, 'agent', '--listen', path, '--console', '--interval', '60000'], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    agent.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => agent.once('exit', resolve));
    try {
      // The socket file appears at bind; the swap happens while bind has not returned yet.
      for (let i = 0; i < 400 && !existsSync(path); i++) await sleep(25);
      expect(statSync(path).isSocket()).toBe(true);
      unlinkSync(path);
      symlinkSync(target, path);
      const code = await Promise.race([exited, sleep(15_000).then(() => 'running')]);
      expect(statSync(target).mode & 0o777).toBe(0o600);
      expect(code).toBe(1);
      expect(stderr).toContain(`${path} was replaced by another file right after it was bound`);
    } finally {
      agent.kill('SIGKILL');
    }
  });
});

describeKvm('HandoverProvider on real KVM', () => {
  it('takes the stats fds `handoff` copies from a VMM, with its name and attributes, once, and lets go when the VMM exits', async () => {
    const vmm = await startVmm(['--vcpus', '2', '-name', 'guest=handed']);
    try {
      const { provider, reports, path } = newProvider();
      await provider.refresh();
      const handoff = await runAsync('handoff', '--pid', String(vmm.pid), '--to', path, '--attribute', 'deployment.environment=lab');
      expect(handoff, handoff.stderr).toMatchObject({ code: 0, stderr: '' });
      expect(handoff.stdout).toBe(`handed over 3 stats fds of process ${vmm.pid} (vm handed: VM, vCPU 0, vCPU 1) to ${path}\n`);

      const sources = provider.sources();
      expect(sources.map((s) => [s.file.target, s.file.vcpuId, s.pid, s.vmName])).toEqual([
        ['vm', undefined, vmm.pid, 'handed'],
        ['vcpu', 0, vmm.pid, 'handed'],
        ['vcpu', 1, vmm.pid, 'handed'],
      ]);
      expect(sources[0]!.origin).toMatch(/^hand-over from pid \d+ uid 0 \(kvm-stats-otel handoff\)$/);
      const { resourceMetrics } = await new KvmStatsProducer({ sources: () => provider.sources() }).collect();
      expect(points(resourceMetrics, 'kvm.vcpu.exits').map((p) => p.attributes)).toEqual([
        { 'deployment.environment': 'lab', 'process.pid': vmm.pid, 'kvm.vm.name': 'handed', 'kvm.vcpu.id': 0 },
        { 'deployment.environment': 'lab', 'process.pid': vmm.pid, 'kvm.vm.name': 'handed', 'kvm.vcpu.id': 1 },
      ]);

      // The same fds again (a second handoff, or the helper and a handoff): still one series each.
      const fds = openFds();
      expect((await runAsync('handoff', '--pid', String(vmm.pid), '--to', path)).code).toBe(0);
      expect(provider.sources()).toEqual(sources);
      expect(openFds()).toBe(fds);

      await vmm.stop();
      expect(provider.sources()).toEqual([]); // one call: the exit is seen through the VMM's pidfd
      expect(sources.every((s) => s.file.closed)).toBe(true);
      expect(reports).toEqual([
        // The test VMM creates both vCPUs from one thread: no scheduler time, said once.
        expect.objectContaining({ kind: 'no-schedstat', pid: vmm.pid, message: expect.stringMatching(/^process \d+ \(VM handed\): no per-vCPU scheduler time \(kvm\.vcpu\.sched\.\*\): its 2 vCPUs were created by one thread \(\d+\), not each by its own$/) }),
        { kind: 'exited', pid: vmm.pid, vmName: 'handed', message: `process ${vmm.pid} exited: closed its 3 handed-over stats fds` },
      ]);
    } finally {
      await vmm.stop();
    }
  });

  it('closes anything that is not a valid stats fd as claimed, within limits, and says so once with the sender\'s credentials', async () => {
    const { provider, reports, path } = newProvider(socketPath(), { fdsPerSender: 3 });
    await provider.refresh();
    const kvm = Kvm.open();
    const vm: VmFd = kvm.createVm();
    kvm.close();
    const vcpus: VcpuFd[] = [0, 1, 2, 3].map((id) => vm.createVcpu(id));
    const vmStats = vm.statsFd();
    const vcpuStats = vcpus.map((vcpu) => vcpu.statsFd());
    // A regular file with a valid stats image: the header validates, the link does not.
    const image = writeImage(buildImage({ descs: [{ name: 'exits', values: [1] }] }));
    const fakeStats = openPath(image);
    const before = openFds();
    try {
      const who = `from pid ${process.pid} uid 0 gid 0 refused`;
      send(path, '{}', [fakeStats]);
      send(path, '{}', [fakeStats]); // the same problem again: not said again
      send(path, '{"vcpus":', [vmStats]);
      send(path, '{"vcpus":[3]}', [vmStats]);
      send(path, '{"vcpus":[null,null]}', [vmStats]);
      send(path, JSON.stringify({ attributes: { 'process.pid': 1 } }), [vmStats]);
      send(path, '{}', Array.from({ length: HANDOVER_LIMITS.fdsPerMessage + 1 }, () => fakeStats), HANDOVER_LIMITS.fdsPerMessage + 1);
      send(path, Buffer.alloc(HANDOVER_LIMITS.headerBytes + 1, 0x20), [vmStats]);
      send(path, '{}', []);
      send(path, '{"vcpus":[0,1,2,3]}', vcpuStats);
      expect(provider.sources().map((s) => s.file.vcpuId)).toEqual([0, 1, 2]);
      const on = `hand-over on ${path} ${who}`;
      // The vCPUs taken were all created by this process's main thread: no scheduler time, said once.
      expect(reports.filter((problem) => problem.kind === 'no-schedstat')).toEqual([
        expect.objectContaining({ kind: 'no-schedstat', pid: process.pid, message: expect.stringContaining(`its 3 vCPUs were created by one thread (${process.pid}), not each by its own`) }),
      ]);
      const refused = reports.filter((problem) => problem.kind !== 'no-schedstat');
      expect(refused.map(({ kind, pid }) => ({ kind, pid }))).toEqual(Array.from(refused, () => ({ kind: 'refused', pid: process.pid })));
      expect(refused.map((problem) => problem.message)).toEqual([
        `${on}: an fd that is ${image}, not a KVM stats fd; fd closed`,
        `${on}: the header is not JSON; closed 1 fd(s)`,
        `${on}: an fd claimed as vCPU 3 that is kvm-${process.pid}; fd closed`,
        `${on}: header lists 2 vCPU ids for 1 fds; closed 1 fd(s)`,
        // "attribute process.pid is set by the receiver" is a header error too: said once with the first.
        `${on}: more than 64 fds in one message; closed 65 fd(s)`,
        `${on}: a header longer than 4096 bytes; closed 1 fd(s)`,
        `${on}: a message without fds; closed 0 fd(s)`,
        `${on}: process ${process.pid} has handed over 3 stats fds that are held here, the limit per sender until it exits; fd closed`,
      ]);
      // Every refused fd is closed: only the three taken are open here, the pidfd that watches
      // their VMM (this process), and the one that watches their sender (this process again).
      expect(await provider.settled()).toBe(true);
      expect(openFds() - before).toBe(5);
      await provider.close();
      expect(openFds() - before).toBe(-1); // its listening socket too
    } finally {
      for (const fd of [fakeStats, vmStats, ...vcpuStats]) closeFd(fd);
      for (const vcpu of vcpus) vcpu.close();
      vm.close();
    }
  });

  it('refuses every kind of fd that is not a stats fd, hundreds at once, and senders that leave early, leaking nothing', async () => {
    const { provider, reports, path } = newProvider(socketPath());
    await provider.refresh();
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    const file = openPath(writeImage(buildImage({ descs: [{ name: 'exits' }] })));
    // An anonymous pipe (Node keeps one for its signal handling), reopened through /proc.
    const pipeLink = fdLinks('self').find((link) => link.target.startsWith('pipe:'))!;
    const pipe = openPath(`/proc/self/fd/${pipeLink.fd}`, O_RDWR);
    const before = openFds();
    try {
      const on = `hand-over on ${path} from pid ${process.pid} uid 0 gid 0 refused`;
      send(path, '{}', [pipe]);
      send(path, '{}', [kvm.fd]);
      send(path, '{"vcpus":[null]}', [vm.fd]);
      send(path, '{"vcpus":[0]}', [vcpu.fd]);
      send(path, '{}', [file]);
      // 250 fds in one message (the kernel allows 253): none is taken, none stays open.
      send(path, '{}', Array.from({ length: 250 }, () => pipe), 250);
      send(path, '{"vcpus":[0', [vcpu.fd]); // a header cut short
      // Senders that connect and leave without a word, or send and leave before it is read.
      closeFd(connectSeqpacket(path)!);
      send(path, '{}', [kvm.fd]);
      expect(provider.sources()).toEqual([]);
      // Said once per sender and kind of problem: the pipe stands for every fd that is not a stats fd.
      expect(reports.every((problem) => problem.kind === 'refused' && problem.pid === process.pid)).toBe(true);
      expect(reports.map((problem) => problem.message)).toEqual([
        `${on}: an fd that is ${pipeLink.target}, not a KVM stats fd; fd closed`,
        `${on}: more than 64 fds in one message; closed 250 fd(s)`,
        `${on}: the header is not JSON; closed 1 fd(s)`,
      ]);
      // The same refusal again is not said again: once per sender and reason.
      send(path, '{}', [kvm.fd]);
      provider.sources();
      expect(reports).toHaveLength(3);
      expect(await provider.settled()).toBe(true);
      expect(openFds()).toBe(before);
    } finally {
      for (const fd of [pipe, file]) closeFd(fd);
      vcpu.close();
      vm.close();
      kvm.close();
    }
  });

  it('handoff says what went wrong, in one line', async () => {
    const { provider, path } = newProvider();
    await provider.refresh();
    const none = run('handoff', '--pid', String(process.pid), '--to', path);
    expect(none).toMatchObject({ code: 1, stderr: `kvm-stats-otel: process ${process.pid} holds no KVM stats fds: is it a VMM running a KVM guest?\n` });
    const reserved = run('handoff', '--pid', String(process.pid), '--to', path, '--attribute', 'process.pid=1');
    expect(reserved).toMatchObject({ code: 2, stderr: 'kvm-stats-otel: attribute process.pid is set by the receiver, not the sender\n' });
    const vmm = await startVmm(['--vcpus', '1']);
    try {
      const nowhere = run('handoff', '--pid', String(vmm.pid), '--to', '/nonexistent/agent.sock');
      expect(nowhere).toMatchObject({
        code: 1,
        stderr: 'kvm-stats-otel: connect /nonexistent/agent.sock failed with ENOENT: nothing listens there: check the path or start the receiver (agent --listen PATH)\n',
      });
    } finally {
      await vmm.stop();
    }
  });

  it('an unprivileged receiver (nobody) exports the stats fds a root handoff gives it, and closes them when the VMM exits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-handover-nobody-'));
    chownSync(dir, 65534, 65534);
    const path = join(dir, 'agent.sock');
    const fixture = unprivilegedCopy('handover-receiver.mjs', OTEL);
    const [setpriv, ...asNobody] = AS_NOBODY;
    type Answer = {
      sources: { pid: number; vcpu: number | null; vmName: string | null; origin: string }[];
      exits: { attributes: Record<string, unknown>; value: number }[];
      errors: number;
      statsFdsHeld: number;
      reports: Problem[];
    };
    const { child: receiver, first } = await JsonLineChild.start<Answer & { uid: number }>([setpriv!, ...asNobody, process.execPath, fixture, path], 'handover receiver', { cwd: '/' });
    const vmm = await startVmm(['--vcpus', '2', '-name', 'guest=unprivileged']);
    try {
      expect(first).toMatchObject({ listening: true, uid: 65534 });
      expect(statSync(path)).toMatchObject({ uid: 65534 });
      expect(statSync(path).mode & 0o777).toBe(0o660);
      expect(run('handoff', '--pid', String(vmm.pid), '--to', path, '--attribute', 'host.role=kvm').code).toBe(0);

      const held = await receiver.request();
      expect(held.sources.map((s) => [s.vcpu, s.pid, s.vmName])).toEqual([[null, vmm.pid, 'unprivileged'], [0, vmm.pid, 'unprivileged'], [1, vmm.pid, 'unprivileged']]);
      expect(held.errors).toBe(0);
      expect(held.statsFdsHeld).toBe(3);
      expect(held.exits.map((p) => p.attributes)).toEqual([0, 1].map((vcpu) => ({ 'host.role': 'kvm', 'process.pid': vmm.pid, 'kvm.vm.name': 'unprivileged', 'kvm.vcpu.id': vcpu })));
      // The demo guest runs: its exits counted by the kernel arrive through the handed-over fds.
      for (const point of held.exits) expect(point.value).toBeGreaterThan(0);

      await vmm.stop();
      const after = await receiver.request();
      expect(after).toMatchObject({ sources: [], exits: [], statsFdsHeld: 0, reports: [{ kind: 'exited', pid: vmm.pid, message: `process ${vmm.pid} exited: closed its 3 handed-over stats fds` }] });
    } finally {
      await vmm.stop();
      await receiver.stop();
    }
    expect(existsSync(path)).toBe(false);
  });

  it('the agent, run as nobody with --listen, exports the stats fds a root handoff gives it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-agent-nobody-'));
    chownSync(dir, 65534, 65534);
    const path = join(dir, 'agent.sock');
    const installed = packageCopy();
    const [setpriv, ...asNobody] = AS_NOBODY;
    const agent = spawn(
      setpriv!,
      [...asNobody, process.execPath, join(installed, 'dist', 'cli', 'main.js'), 'agent', '--listen', path, '--console', '--interval', '300', '--log-level', 'warn'],
      { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    agent.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    agent.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => agent.once('exit', resolve));
    const vmm = await startVmm(['--vcpus', '2', '-name', 'guest=handed']);
    const until = async (done: () => boolean, what: string): Promise<void> => {
      for (let i = 0; i < 300 && !done(); i++) await sleep(50);
      if (!done()) throw new Error(`${what} did not happen within 15 s; agent stderr: ${stderr}`);
    };
    try {
      await until(() => existsSync(path), 'the agent listening');
      expect(statSync(path)).toMatchObject({ uid: 65534 });
      expect(run('handoff', '--pid', String(vmm.pid), '--to', path).code).toBe(0);
      const line = new RegExp(`^kvm\\.vcpu\\.exits\\{process\\.pid=${vmm.pid},kvm\\.vm\\.name=handed,kvm\\.vcpu\\.id=1\\} sum 1 [1-9]\\d*$`, 'm');
      await until(() => line.test(stdout), 'an export of the handed-over vCPU');
      expect(stdout).toMatch(new RegExp(`^kvm\\.vm\\.pages_4k\\{process\\.pid=${vmm.pid},kvm\\.vm\\.name=handed\\} gauge`, 'm'));
    } finally {
      await vmm.stop();
      agent.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    // Nothing went wrong; at most it noticed the VMM leave before its last collection.
    const logged = stderr.split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect(logged.filter((msg) => msg !== `process ${vmm.pid} exited: closed its 3 handed-over stats fds`)).toEqual([]);
  });
});

const children: { stop(): Promise<void> }[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) await child.stop();
});

/** test/fixtures/handover-sender.c in one of its modes; stopped after the test. */
async function sender(args: string[]): Promise<{ child: JsonLineChild<Answers & { open?: number }>; first: Answers & { open?: number } }> {
  const started = await JsonLineChild.start<Answers & { open?: number }>([hostileSender(), ...args], `handover-sender ${args[0]}`);
  children.push(started.child);
  return started;
}

describe('the hand-over socket under attack, without KVM (test/fixtures/handover-sender.c)', () => {
  it('turns lingering off on a refused TCP socket that would linger 100,000 s: its close returns at once, off the event loop', async () => {
    const { provider, reports, path } = newProvider();
    await provider.refresh();
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const { first } = await sender(['linger', path, '100000']);
    expect(first.answers).toEqual([{ accepted: 0, refused: 1, reason: expect.stringMatching(/^an fd that is socket:\[\d+\], not a KVM stats fd$/) }]);
    // Closed, although its unsent data has nowhere to go (its peer never reads) and it asked to
    // wait 100,000 s for it: the kernel sends what it can after the close.
    expect(await provider.settled(2_000)).toBe(true);
    delay.disable();
    expect(delay.max / 1e6).toBeLessThan(500);
    expect(reports.map((problem) => problem.kind)).toEqual(['refused']);
  });

  it('says a header error once per sender, however the sender varies the names in it', async () => {
    const { provider, reports, path } = newProvider();
    await provider.refresh();
    const memfd = memfdCreate('x');
    try {
      for (let i = 0; i < 20; i++) send(path, JSON.stringify({ attributes: { [`bad name ${i}`]: 1 } }), [memfd]);
      provider.sources();
    } finally {
      closeFd(memfd);
    }
    expect(reports.map((problem) => problem.message)).toEqual([
      `hand-over on ${path} from pid ${process.pid} uid 0 gid 0 refused: attribute name "bad name 0" is not a dotted name; closed 1 fd(s)`,
    ]);
  });

  it('a flood of lingering sockets and 19,200 fds: the fds it holds stay bounded, a real sender still gets in, and close() returns at once', async () => {
    const { provider, reports, path } = newProvider();
    await provider.refresh();
    const before = openFds();
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, openFds() - before)), 20);
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    try {
      // 4 TCP sockets lingering 100,000 s, then 300 messages of 64 fds (pipes), sent as fast as
      // the receiver takes them: the sender's first line comes once all are taken.
      const { first } = await sender(['linger-flood', path, '4', '100000', '300']);
      expect(first).toMatchObject({ sent: 300 });
      expect(await provider.settled(5_000)).toBe(true);
    } finally {
      clearInterval(sampler);
      delay.disable();
    }
    expect(most).toBeLessThan(1_000);
    expect(delay.max / 1e6).toBeLessThan(500);
    // The flood's connection, the pidfd that watches its sender, and the sender's stdin, stdout and stderr.
    expect(openFds()).toBe(before + 5);
    // A real sender gets in at once: its message is read and answered (a memfd: refused, as any
    // fd that is not a stats fd; on KVM a stats fd is taken, see below).
    const memfd = memfdCreate('real');
    try {
      expect(await answerTo(path, [memfd])).toEqual({ accepted: 0, refused: 1, reason: expect.stringMatching(/^an fd that is \/memfd:real \(deleted\), not a KVM stats fd$/) });
    } finally {
      closeFd(memfd);
    }
    expect(reports.filter((problem) => problem.kind !== 'refused')).toEqual([]);
    const start = performance.now();
    await provider.close();
    expect(performance.now() - start).toBeLessThan(1_500);
  }, 60_000);
});

describe('a receiver out of fds', () => {
  it('says so, and that the sender may send again, rather than that the message had too many fds', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'kvm-handover-emfile-')), 'agent.sock');
    const fixture = unprivilegedCopy('handover-receiver.mjs', OTEL);
    // Three fds to spare: one for the connection, one for the pidfd that watches its sender, and
    // at most one of the message's ten.
    const { child } = await JsonLineChild.start([process.execPath, fixture, path], 'handover receiver', { env: { ...process.env, HANDOVER_FILL_FDS: '3' } });
    children.push(child);
    const memfd = memfdCreate('ten');
    try {
      expect(await answerTo(path, Array.from({ length: 10 }, () => memfd))).toMatchObject({
        accepted: 0,
        retry: true,
        reason: 'this receiver is out of file descriptors (EMFILE) and could not take every fd of the message; send it again later',
      });
    } finally {
      closeFd(memfd);
    }
  });
});

describe('closes that never return', () => {
  it('(Unix sockets holding sockets that linger 100,000 s) hold only their sender\'s threads: that user waits, fds stay bounded, another user still gets in, and close() returns at once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-handover-nested-'));
    chmodSync(dir, 0o755);
    const { provider, reports, path } = newProvider(join(dir, 'agent.sock'), { mode: 0o666 });
    await provider.refresh();
    const before = openFds();
    // As nobody: a user of its own, whose refused fds are counted apart from root's.
    const [setpriv, ...asNobody] = AS_NOBODY;
    const { child, first } = await JsonLineChild.start<{ sent: number }>([setpriv!, ...asNobody, hostileSender(), 'nested', path, '300', '100000'], 'handover-sender nested');
    children.push(child);
    expect(first.sent).toBeGreaterThan(HANDOVER_LIMITS.waitingClosesPerUser);
    await sleep(500); // the receiver takes what it will meanwhile
    // SO_LINGER on the Unix socket cannot shorten the close of what its queue holds: each such
    // close waits on a thread; once waitingClosesPerUser of them have waited closeWaitMs, that
    // user's connection is not read: the rest of what it sent waits in the kernel, and the fds
    // held here are those closes (less the ones in a thread's close(2) already).
    const closing = provider.closing;
    expect(closing).toBeGreaterThanOrEqual(HANDOVER_LIMITS.waitingClosesPerUser);
    expect(closing).toBeLessThan(first.sent);
    expect(openFds() - before).toBeLessThanOrEqual(closing + 2);
    await sleep(500);
    expect(provider.closing).toBe(closing);
    expect(reports.map((problem) => [problem.kind, problem.pid])).toEqual([['refused', child.pid]]);
    // Root, another user, gets in at once.
    const memfd = memfdCreate('real');
    try {
      expect(await answerTo(path, [memfd])).toMatchObject({ accepted: 0, refused: 1 });
    } finally {
      closeFd(memfd);
    }
    // close() waits a second at most for closes that do not return, and they do not keep this
    // process from ending (they are native threads, which Node does not join).
    const start = performance.now();
    await provider.close();
    expect(performance.now() - start).toBeLessThan(1_500);
  }, 30_000);
});

describeKvm('the hand-over socket under attack (real senders, test/fixtures/handover-sender.c)', () => {

  it('owns a VM by what the kernel says, never by the claimed pid or name, and lets go when that owner exits', async () => {
    const { provider, path } = newProvider();
    await provider.refresh();
    // The VM's creating thread has exited, so the kernel names no live owner: the sender owns it.
    const { child, first } = await sender(['thread-vm', path, '{"pid":1,"vcpus":[null]}', '{"pid":1,"vmName":"other","vcpus":[null]}', '{"vmName":"third"}']);
    const sources = provider.sources();
    expect(sources.map((source) => [source.pid, source.vmName, source.file.target])).toEqual([[child.pid, undefined, 'vm']]);
    // The same open file again, under other names: accepted as held, read once.
    expect(first.answers).toEqual([1, 2, 3].map(() => ({ accepted: 1, refused: 0 })));
    await child.stop();
    expect(provider.sources()).toEqual([]);
    expect(sources[0]!.file.closed).toBe(true);
  });

  it('charges fds to the live process that sent them: a sender that filled its quota and exited frees it; a refused handoff exits 1 and says why', async () => {
    const { provider, path } = newProvider(socketPath(), { fdsPerSender: 3 });
    await provider.refresh();
    // tiny VMMs (C, with the preload helper so they hold stats fds): 3, 3 and 4 fds.
    const [a, b, c] = await Promise.all([startTinyVmm(2), startTinyVmm(2), startTinyVmm(3)]);
    try {
      const first = await runAsync('handoff', '--pid', String(a.pid), '--to', path);
      expect(first, first.stderr).toMatchObject({ code: 0, stderr: '' });
      // The first handoff (3 fds, its whole quota) has exited: the next one has a quota of its own.
      const second = await runAsync('handoff', '--pid', String(b.pid), '--to', path);
      expect(second, second.stderr).toMatchObject({ code: 0, stderr: '' });
      expect(provider.sources().map((source) => source.pid)).toEqual([a.pid, a.pid, a.pid, b.pid, b.pid, b.pid]);
      // 4 fds from one sender with a quota of 3: the fourth is refused, and handoff says so.
      const third = await runAsync('handoff', '--pid', String(c.pid), '--to', path);
      expect(third.code).toBe(1);
      expect(third.stderr).toMatch(new RegExp(`^kvm-stats-otel: the receiver on ${path} refused 1 of 4 stats fds: process \\d+ has handed over 3 stats fds that are held here, the limit per sender until it exits\n$`));
      expect(provider.sources().filter((source) => source.pid === c.pid)).toHaveLength(3);
    } finally {
      await Promise.all([a.stop(), b.stop(), c.stop()]);
    }
  }, 120_000);

  it('64 idle connections do not lock a real handoff out, and idle connections time out', async () => {
    const { provider, path } = newProvider(socketPath(), { idleTimeoutMs: 3000 });
    await provider.refresh();
    const vmm = await startVmm(['--vcpus', '1']);
    try {
      const { child: idle, first } = await sender(['idle', path, String(HANDOVER_LIMITS.connections)]);
      expect(first.open).toBe(HANDOVER_LIMITS.connections);
      await sleep(200);
      expect((await idle.request()).open).toBe(HANDOVER_LIMITS.connections); // all accepted: the receiver is full
      const handoff = await runAsync('handoff', '--pid', String(vmm.pid), '--to', path);
      expect(handoff, handoff.stderr).toMatchObject({ code: 0, stderr: '' });
      expect(provider.sources().map((source) => source.pid)).toEqual([vmm.pid, vmm.pid]);
      // The idlest gave way to it; the rest time out 3 s after they connected.
      await sleep(3500);
      expect((await idle.request()).open).toBe(0);
    } finally {
      await vmm.stop();
    }
  });

  it('reads a message of no bytes as a message, not the end: the stats fd sent next on the connection is taken', async () => {
    const { provider, reports, path } = newProvider();
    await provider.refresh();
    const { child, first } = await sender(['empty-then-fd', path]);
    expect(first.answers).toEqual([
      { accepted: 0, refused: 0, reason: 'a message without fds' },
      { accepted: 1, refused: 0 },
    ]);
    expect(provider.sources().map((source) => [source.pid, source.file.target])).toEqual([[child.pid, 'vm']]);
    expect(reports.map((problem) => problem.message)).toEqual([`hand-over on ${path} from pid ${child.pid} uid 0 gid 0 refused: a message without fds; closed 0 fd(s)`]);
  });

  it('the preload helper says on stderr what the receiver refused', async () => {
    const { provider, path } = newProvider(socketPath(), { fdsPerOwner: 2 });
    await provider.refresh();
    const { binary, helper } = tinyVmmTools();
    const vmm = spawn(binary, ['3'], { env: { ...process.env, LD_PRELOAD: helper, KVM_STATS_OTEL_SOCKET: path }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    vmm.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise((resolve) => vmm.once('exit', resolve));
    try {
      await new Promise((resolve) => vmm.stdout.once('data', resolve)); // "ready": every fd was sent and answered
      expect(provider.sources()).toHaveLength(2);
    } finally {
      vmm.stdin.end();
      await exited;
    }
    const limit = `process ${vmm.pid} owns 2 stats fds held here already, the limit per owner`;
    expect(stderr).toBe([1, 2].map((vcpu) => `kvm-stats-preload: ${path} refused the stats fd of vCPU ${vcpu}: ${limit}\n`).join(''));
  });
});
