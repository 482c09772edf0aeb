/**
 * A real QEMU (qemu-system-x86_64 -enable-kvm, no disk, QMP on a Unix socket): without the
 * preload helper the scan says what to do; with it, the scan and the hand-over both read its VM
 * and vCPU stats, a hot-plugged vCPU appears at the next refresh, and after QMP `quit` every
 * copy is closed at the next collection.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { beforeAll, expect, it } from 'vitest';
import { PRELOAD_SOCKET_ENV, buildPreloadHelper } from '../../src/setup/preload.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { VmRollup, type VmRow } from '../../src/views/rollup.js';
import { HandoverProvider } from '../../src/sources/handover-receiver.js';
import type { Problem } from '../../src/sources/problem.js';
import { QemuGuest, type QemuGuestOptions, qemuAvailable } from '../../src/bench/qemu.js';
import { openProcessStats } from '../../src/sources/process-stats.js';
import { ScanProvider } from '../../src/sources/scan.js';
import type { ListedProcess } from '../../src/cli/list.js';
import type { StatsSource } from '../../src/sources/source.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { describeKvm } from '../helpers/kvm.js';
import { ROOT } from '../helpers/processes.js';

const cleanup = cleanupAfterEach();

function points(rm: ResourceMetrics, name: string) {
  const metric = rm.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
  return (metric?.dataPoints ?? []) as { attributes: Record<string, unknown>; value: number }[];
}

const shape = (sources: readonly StatsSource[], pid: number) => sources.filter((s) => s.pid === pid).map((s) => s.file.vcpuId ?? 'vm');

async function start(options: QemuGuestOptions): Promise<QemuGuest> {
  const guest = await QemuGuest.start(options);
  cleanup.push(() => guest.stop());
  return guest;
}

describeKvm('QEMU with and without the preload helper', () => {
  let helper: string;
  beforeAll(() => {
    // CI installs Debian's qemu-system-x86 (.ci/run); on a KVM host its absence is a failure, not a skip.
    expect(qemuAvailable(), 'qemu-system-x86_64 is not on PATH: apt-get install qemu-system-x86').toBe(true);
    helper = buildPreloadHelper(mkdtempSync(join(tmpdir(), 'kvm-qemu-helper-')));
  });

  it('without the helper, QEMU 7.2 holds no stats fds, and the scan says what to do', async () => {
    const guest = await start({ vcpus: 1, name: 'plain' });
    const reports: Problem[] = [];
    const scan = new ScanProvider({ report: (problem) => reports.push(problem) });
    cleanup.push(() => scan.close());
    await scan.refresh();
    expect(shape(scan.sources(), guest.pid)).toEqual([]);
    const found = scan.scanned().find((p) => p.pid === guest.pid);
    expect(found).toMatchObject({ executable: 'qemu-system-x86_64', vmName: 'plain', vmFds: 1, statsFds: [] });
    expect(found!.problems).toEqual([
      {
        kind: 'no-stats-fds',
        pid: guest.pid,
        vmName: 'plain',
        message: `process ${guest.pid} (VM plain) holds 1 KVM VM(s) but no stats fds: QEMU before 8.1 keeps none open; start the VMM with the preload helper, or read its stats over QMP query-stats`,
      },
    ]);
    expect(reports.filter((r) => r.pid === guest.pid)).toEqual(found!.problems);
  });

  it('with the helper, the scan and the hand-over read its VM and vCPUs, hot-plugged ones too, and close them after QMP quit', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'kvm-qemu-')), 'agent.sock');
    const reports: Problem[] = [];
    const handover = new HandoverProvider(path, { report: (problem) => reports.push(problem) });
    cleanup.push(() => handover.close());
    await handover.refresh();
    const guest = await start({ vcpus: 2, maxVcpus: 3, name: 'preloaded', env: { LD_PRELOAD: helper, [PRELOAD_SOCKET_ENV]: path } });
    const scan = new ScanProvider({ report: (problem) => reports.push(problem) });
    cleanup.push(() => scan.close());

    await scan.refresh();
    await handover.refresh();
    expect(shape(scan.sources(), guest.pid)).toEqual(['vm', 0, 1]);
    expect(shape(handover.sources(), guest.pid).sort()).toEqual([0, 1, 'vm']);
    expect(scan.scanned().find((p) => p.pid === guest.pid)).toMatchObject({ executable: 'qemu-system-x86_64', vmName: 'preloaded', vmFds: 1, problems: [] });
    for (const source of [...scan.sources().filter((s) => s.pid === guest.pid), ...handover.sources()]) expect(source.vmName).toBe('preloaded');

    const { resourceMetrics } = await new KvmStatsProducer({ sources: () => scan.sources().filter((s) => s.pid === guest.pid) }).collect();
    const exits = points(resourceMetrics, 'kvm.vcpu.exits');
    // debug-threads=on (as libvirt has it): each vCPU thread is "CPU N/KVM", N its index.
    expect(exits.map((p) => p.attributes)).toEqual([0, 1].map((vcpu) => ({ 'process.pid': guest.pid, 'kvm.vm.name': 'preloaded', 'kvm.vcpu.id': vcpu, 'kvm.vcpu.index': vcpu })));
    expect(exits[0]!.value).toBeGreaterThan(0); // the firmware ran on vCPU 0

    // Hot-plug a third vCPU: QEMU makes it (KVM_CREATE_VCPU) before device_add returns.
    const slots = await guest.qmp.execute<{ type: string; props: Record<string, number>; 'qom-path'?: string }[]>('query-hotpluggable-cpus');
    const free = slots.find((slot) => slot['qom-path'] === undefined)!;
    await guest.qmp.execute('device_add', { driver: free.type, id: 'hotplugged', ...free.props });
    const before = scan.sources().filter((s) => s.pid === guest.pid);
    await scan.refresh();
    await handover.refresh();
    expect(shape(scan.sources(), guest.pid)).toEqual(['vm', 0, 1, 2]);
    expect(shape(handover.sources(), guest.pid).sort()).toEqual([0, 1, 2, 'vm']);
    expect(scan.sources().filter((s) => s.pid === guest.pid).slice(0, 3)).toEqual(before);

    const copies = [...scan.sources().filter((s) => s.pid === guest.pid), ...handover.sources()];
    await guest.stop(); // QMP quit
    expect(shape(scan.sources(), guest.pid)).toEqual([]);
    expect(handover.sources()).toEqual([]);
    expect(copies.every((s) => s.file.closed)).toBe(true);
    // Every vCPU had its thread's scheduler time, and those files are closed with it.
    expect(copies.filter((s) => s.file.target === 'vcpu').every((s) => s.schedstat !== undefined && s.schedstat.closed)).toBe(true);
    // Other VMMs on this host may be reported too (a test VMM's vCPUs share a thread).
    expect(reports.filter((r) => r.pid === guest.pid)).toEqual([
      { kind: 'exited', pid: guest.pid, vmName: 'preloaded', message: `process ${guest.pid} (qemu-system-x86_64) exited: closed its 4 stats fds` },
      { kind: 'exited', pid: guest.pid, vmName: 'preloaded', message: `process ${guest.pid} exited: closed its 4 handed-over stats fds` },
    ]);
  });

  it('kvm.vcpu.index is QEMU\'s vCPU number where the kernel\'s id differs (a topology with gaps), kvm.vm.uuid its -uuid: scan, --pid, hand-over, list', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'kvm-qemu-')), 'agent.sock');
    const handover = new HandoverProvider(path);
    cleanup.push(() => handover.close());
    await handover.refresh();
    const uuid = '5f0c3a4e-1b2d-4c6e-8f90-a1b2c3d4e5f6';
    const guest = await start({
      vcpus: 1, topology: { sockets: 2, cores: 3, threads: 1 }, name: 'topology', uuid,
      env: { LD_PRELOAD: helper, [PRELOAD_SOCKET_ENV]: path },
    });
    // libvirt's second vCPU of <topology sockets='2' cores='3' threads='1'/>: socket 1, core 0.
    await guest.qmp.execute('device_add', { driver: 'qemu64-x86_64-cpu', id: 'cpu3', 'socket-id': 1, 'core-id': 0, 'thread-id': 0 });
    // What QEMU calls each vCPU, by the thread that runs it (and created it in KVM).
    const cpus = await guest.qmp.execute<{ 'cpu-index': number; 'thread-id': number }[]>('query-cpus-fast');
    const indexOfThread = new Map(cpus.map((cpu) => [cpu['thread-id'], cpu['cpu-index']]));
    const scan = new ScanProvider();
    cleanup.push(() => scan.close());
    await scan.refresh();
    await handover.refresh();
    const scanned = scan.sources().filter((s) => s.pid === guest.pid);
    const expected = scanned.filter((s) => s.file.target === 'vcpu').map((s) => [s.file.vcpuId, indexOfThread.get(s.file.threadId)]);
    expect(expected).toHaveLength(2);
    // The kernel's id of the hot-plugged vCPU is its APIC ID (4 here), QEMU's number 3.
    expect(expected.some(([id, index]) => id !== index)).toBe(true);
    const pid = openProcessStats(guest.pid);
    cleanup.push(async () => pid.sources.forEach((s) => s.file.close()));
    for (const [how, sources] of [['scan', scanned], ['--pid', pid.sources], ['hand-over', handover.sources()]] as const) {
      const vcpus = [...sources].filter((s) => s.file.target === 'vcpu').sort((a, b) => a.file.vcpuId! - b.file.vcpuId!);
      expect(vcpus.map((s) => [s.file.vcpuId, s.vcpuIndex]), how).toEqual(expected);
      expect(new Set(sources.map((s) => s.vmUuid)), how).toEqual(new Set([uuid]));
    }

    const producer = new KvmStatsProducer({ sources: scanned });
    const exits = points((await producer.collect()).resourceMetrics, 'kvm.vcpu.exits');
    expect(exits.map((p) => p.attributes)).toEqual(
      expected.map(([id, index]) => ({ 'process.pid': guest.pid, 'kvm.vm.name': 'topology', 'kvm.vm.uuid': uuid, 'kvm.vcpu.id': id, 'kvm.vcpu.index': index })),
    );
    expect(points((await producer.collect()).resourceMetrics, 'kvm.vm.remote_tlb_flush').map((p) => p.attributes)).toEqual([
      { 'process.pid': guest.pid, 'kvm.vm.name': 'topology', 'kvm.vm.uuid': uuid },
    ]);
    // One series per VM drops both vCPU numbers.
    const perVm = points((await new KvmStatsProducer({ sources: scanned, vcpuAggregation: 'vm' }).collect()).resourceMetrics, 'kvm.vcpu.exits');
    expect(perVm.map((p) => p.attributes)).toEqual([{ 'process.pid': guest.pid, 'kvm.vm.name': 'topology', 'kvm.vm.uuid': uuid }]);

    const list = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli', 'main.js'), 'list', '--json'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(list.status, list.stderr).toBe(0);
    const listed = (JSON.parse(list.stdout) as { processes: ListedProcess[] }).processes.find((p) => p.pid === guest.pid)!;
    expect(listed).toMatchObject({ vmName: 'topology', vmUuid: uuid });
    expect(listed.statsFds.filter((fd) => fd.target === 'vcpu').map((fd) => [fd.vcpu, fd.vcpuIndex])).toEqual(expected);
    const text = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli', 'main.js'), 'list'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 }).stdout;
    expect(text).toContain(`pid ${guest.pid}  qemu-system-x86_64  vm topology  uuid ${uuid}  1 VM fd(s)`);
    for (const [id, index] of expected) expect(text).toMatch(new RegExp(`vCPU ${id} index ${index} `));
  });

  it('exports each vCPU thread\'s scheduler time beside its KVM stats, between two reads of /proc, summed per VM too', async () => {
    const guest = await start({ vcpus: 2, name: 'sched', env: { LD_PRELOAD: helper } });
    const reports: Problem[] = [];
    const scan = new ScanProvider({ report: (problem) => reports.push(problem) });
    cleanup.push(() => scan.close());
    await scan.refresh();
    const sources = () => scan.sources().filter((s) => s.pid === guest.pid);
    const vcpus = sources().filter((s) => s.file.target === 'vcpu');
    expect(vcpus.map((s) => s.file.vcpuId)).toEqual([0, 1]);
    // QEMU creates each vCPU on its own thread, which is a thread of QEMU and not its main one.
    const tids = vcpus.map((s) => s.file.threadId);
    expect(new Set(tids).size).toBe(2);
    expect(tids).not.toContain(guest.pid);
    expect(vcpus.map((s) => s.schedstat?.tid)).toEqual(tids);
    const read = (tid: number) => readFileSync(`/proc/${guest.pid}/task/${tid}/schedstat`, 'latin1').trim().split(' ').map(Number);
    const producer = new KvmStatsProducer({ sources });
    const summed = new KvmStatsProducer({ sources, vcpuAggregation: 'vm' });
    let moved = false;
    let first: number | undefined;
    const rollup = new VmRollup();
    let rows: VmRow[] = [];
    for (let round = 0; round < 4; round++) {
      await sleep(250);
      const before = tids.map(read);
      const { resourceMetrics: rm, errors } = await producer.collect();
      rows = rollup.update(rm);
      const { resourceMetrics: vm } = await summed.collect();
      const after = tids.map(read);
      expect(errors).toEqual([]);
      ['kvm.vcpu.sched.cpu_time', 'kvm.vcpu.sched.run_delay', 'kvm.vcpu.sched.timeslices'].forEach((name, i) => {
        const exported = points(rm, name);
        expect(exported.map((p) => p.attributes)).toEqual(points(rm, 'kvm.vcpu.exits').map((p) => p.attributes));
        exported.forEach((point, v) => {
          expect(point.value, `${name} vCPU ${v}`).toBeGreaterThanOrEqual(before[v]![i]!);
          expect(point.value, `${name} vCPU ${v}`).toBeLessThanOrEqual(after[v]![i]!);
        });
        const [total] = points(vm, name);
        expect(total!.attributes).toEqual({ 'process.pid': guest.pid, 'kvm.vm.name': 'sched' });
        expect(total!.value).toBeGreaterThanOrEqual(before[0]![i]! + before[1]![i]!);
        expect(total!.value).toBeLessThanOrEqual(after[0]![i]! + after[1]![i]!);
      });
      const timeslices = points(rm, 'kvm.vcpu.sched.timeslices')[0]!.value;
      if (first !== undefined && timeslices > first) moved = true;
      first ??= timeslices;
    }
    // The firmware's vCPU 0 runs (it wakes for the timer while it waits to retry the boot).
    expect(moved).toBe(true);
    // What top shows of it: its run delay, and the halts of the last interval in their buckets.
    // The firmware boots for a few seconds, then halts in its wait for the boot retry, woken by
    // its timer (about 18 Hz): wait for an interval with halts.
    const deadline = Date.now() + 20_000;
    const halted = () => (rows.find((r) => r.pid === guest.pid)?.haltWait.samples ?? 0) > 0;
    while (!halted() && Date.now() < deadline) {
      await sleep(500);
      rows = rollup.update((await producer.collect()).resourceMetrics);
    }
    const row = rows.find((r) => r.pid === guest.pid)!;
    expect(row).toMatchObject({ name: 'sched', vcpus: 2 });
    expect(row.runDelay).toBeGreaterThanOrEqual(0);
    expect(row.haltWait.samples).toBeGreaterThan(0);
    expect(row.haltWait.p50!.upper).toBeGreaterThanOrEqual(row.haltWait.p50!.lower);
    expect(row.haltWait.p99!.lower).toBeGreaterThanOrEqual(row.haltWait.p50!.lower);
    expect(reports.filter((r) => r.pid === guest.pid)).toEqual([]);
  });
});
