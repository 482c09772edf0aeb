/**
 * Recordings on every machine (sources/recording.ts, replay.ts, image.ts): the format read back
 * and refused where it is malformed (hostile input: named file and field, nothing left open),
 * the replay's read path (each fd a memfd: one pread per collection, a pwrite only when the
 * snapshot changes, counted by strace), the recorded identity (distinct series, distinct VMs in
 * top), the identity beside raw images (read --save), and the shipped stand-in as its script
 * makes it. On a KVM host, `record` records a real demo VM afresh and the file reads back.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { SHIPPED_RECORDING } from '../../src/setup/demo-fallback.js';
import type { SourceReport } from '../../src/views/stat-reports.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { SCOPE_VERSION } from '../../src/otel/version.js';
import { DemoVm } from '../../src/sources/demo.js';
import { ImageProvider, sourcesOf } from '../../src/sources/provider.js';
import { type Recording, encodeRecording, readRecording, recordSources, recordingJson, writeRecording } from '../../src/sources/recording.js';
import { RecordingReplay } from '../../src/sources/replay.js';
import { MADE_BY, standinRecording } from '../../scripts/make-standin-recording.js';
import { describeKvm } from '../helpers/kvm.js';
import { ROOT, fixtureCommand } from '../helpers/processes.js';

const BIN = join(ROOT, 'dist', 'cli', 'main.js');

function run(...args: string[]) {
  const result = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr, pid: result.pid };
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

const dir = mkdtempSync(join(tmpdir(), 'kvm-recording-'));
/** The stand-in as its script makes it: the fixture of these tests, whatever recordings/ holds. */
const STANDIN = join(dir, 'standin.kvmrec.json.gz');
writeRecording(STANDIN, standinRecording());

/** The stand-in as JSON, changed by `edit`, written as a gzip'd file. */
function edited(name: string, edit: (json: Record<string, any>) => void): string {
  const json = JSON.parse(recordingJson(readRecording(STANDIN)));
  edit(json);
  const path = join(dir, name);
  writeFileSync(path, gzipSync(JSON.stringify(json)));
  return path;
}

/** Another VM: the stand-in under another owner. */
function otherVm(name: string): string {
  return edited(name, (json) => Object.assign(json.vms[0], { pid: 5151, vmName: 'other-vm', vmUuid: '0f0e0d0c-0b0a-4908-8706-050403020100' }));
}

describe('the shipped recording', () => {
  const recording = readRecording(SHIPPED_RECORDING);

  it(recording.synthetic ? 'is the synthetic stand-in, exactly as scripts/make-standin-recording.ts makes it' : 'is a recording of a real VM by kvm-stats-otel record', () => {
    if (recording.synthetic) {
      expect(recording.madeBy).toBe(MADE_BY);
      expect(recordingJson(recording)).toBe(recordingJson(standinRecording()));
      // The tables it stands in with are those docs/metrics.md lists for that kernel.
      const docs = readFileSync(join(ROOT, 'docs', 'metrics.md'), 'utf8');
      for (const [target, fd] of [['VM', recording.vms[0]!.fds[0]!], ['vCPU', recording.vms[0]!.fds[1]!]] as const) {
        const count = Number(new RegExp(`^## ${target} stats \\([^)]*\\): (\\d+)`, 'm').exec(docs)![1]);
        expect(Buffer.from(fd.image).readUInt32LE(8), `${target} num_desc`).toBe(count);
      }
    } else {
      expect(recording.madeBy).toMatch(/^kvm-stats-otel record /);
    }
  });

  it('reads back what was written, and its file is a few KB', () => {
    expect(recordingJson(readRecording(SHIPPED_RECORDING))).toBe(recordingJson(recording));
    const copy = join(dir, 'copy.kvmrec.json.gz');
    writeFileSync(copy, encodeRecording(recording));
    expect(recordingJson(readRecording(copy))).toBe(recordingJson(recording));
    // Plain JSON is read as well as gzip'd.
    const plain = join(dir, 'plain.kvmrec.json');
    writeFileSync(plain, recordingJson(recording));
    expect(recordingJson(readRecording(plain))).toBe(recordingJson(recording));
    expect(readFileSync(SHIPPED_RECORDING).length).toBeLessThan(32 * 1024);
  });
});

describe('a malformed recording', () => {
  const cases: [string, () => string, RegExp][] = [
    ['another format', () => edited('format.gz', (j) => (j.format = 'something else')), /: format is "something else", not "kvm-stats-otel recording"/],
    ['a newer version', () => edited('version.gz', (j) => (j.version = 2)), /: version is 2: this kvm-stats-otel reads version 1/],
    ['snapshots out of order', () => edited('order.gz', (j) => (j.snapshotsMs[3] = 1000)), /: snapshotsMs\[3\] is not later than the snapshot before/],
    ['a data block missing', () => edited('missing.gz', (j) => j.vms[0].fds[1].data.pop()), /: vms\[0\]\.fds\[1\]\.data has 8 data blocks, but there are 10 snapshots/],
    ['a data block of the wrong size', () => edited('short.gz', (j) => (j.vms[0].fds[2].data[4] = Buffer.alloc(16).toString('base64'))), /vms\[0\]\.fds\[2\]\.data\[4\] is 16 bytes, but its image's data block is 1120/],
    ['a truncated image', () => edited('image.gz', (j) => (j.vms[0].fds[0].image = Buffer.from(j.vms[0].fds[0].image, 'base64').subarray(0, 100).toString('base64'))), /vms\[0\]\.fds\[0\]\.image: invalid KVM stats image: descriptors ends early/],
    ['scheduler time on a VM\'s fd', () => edited('sched-vm.gz', (j) => (j.vms[0].fds[0].schedstat = j.vms[0].fds[1].schedstat)), /: vms\[0\]\.fds\[0\]\.schedstat is on kvm-4242, a VM's fd: only a vCPU has a thread's scheduler time/],
    ['a schedstat snapshot missing', () => edited('sched-missing.gz', (j) => j.vms[0].fds[1].schedstat.pop()), /: vms\[0\]\.fds\[1\]\.schedstat has 9 entries, but there are 10 snapshots/],
    ['a schedstat that is not three numbers', () => edited('sched-text.gz', (j) => (j.vms[0].fds[2].schedstat[3] = '1 2')), /: vms\[0\]\.fds\[2\]\.schedstat\[3\] is not three whole numbers below 2\^64/],
    ['a schedstat number of 2^64', () => edited('sched-big.gz', (j) => (j.vms[0].fds[1].schedstat[0] = '18446744073709551616 0 0')), /: vms\[0\]\.fds\[1\]\.schedstat\[0\] is not three whole numbers below 2\^64/],
    ['an id that is not its image\'s', () => edited('id.gz', (j) => (j.vms[0].fds[1].id = 'kvm-4243/vcpu-7')), /vms\[0\]\.fds\[1\]\.id is kvm-4243\/vcpu-7, but its image's id is kvm-4243\/vcpu-0/],
    ['a VM name with a control character', () => edited('name.gz', (j) => (j.vms[0].vmName = 'evil\u001b[2J')), /: vms\[0\]\.vmName is not a string of 1 to 256 printable characters/],
    ['a UUID that is none', () => edited('uuid.gz', (j) => (j.vms[0].vmUuid = 'not-a-uuid')), /: vms\[0\]\.vmUuid is not a UUID/],
    ['bytes that are not base64', () => edited('base64.gz', (j) => (j.vms[0].fds[0].data[0] = '***')), /: vms\[0\]\.fds\[0\]\.data\[0\] is not base64/],
    ['the other byte order', () => edited('endian.gz', (j) => (j.host.endianness = 'BE')), /: host\.endianness is BE, but this host is LE/],
    ['JSON that is not', () => writeBroken(), /: not JSON/],
    ['a gzip bomb', () => writeBomb(), /: it unpacks to more than 67108864 bytes/],
  ];

  function writeBroken(): string {
    const path = join(dir, 'broken.json');
    writeFileSync(path, '{"format": "kvm-stats-otel recording", ');
    return path;
  }

  function writeBomb(): string {
    const path = join(dir, 'bomb.gz');
    writeFileSync(path, gzipSync(Buffer.alloc((64 << 20) + 1, 0x20)));
    return path;
  }

  it.each(cases)('is refused, naming the file and the field: %s; nothing is left open', async (_, make, message) => {
    const path = make();
    const before = openFds();
    const provider = new ImageProvider(path);
    await expect(provider.refresh()).rejects.toThrow(message);
    await expect(provider.refresh()).rejects.toThrow(`invalid recording ${path}`);
    await provider.close();
    expect(openFds()).toBe(before);
  });
});

describe('replay', () => {
  /** Runs the collect-replay fixture under strace: per fd (in source order), its preads and
   * its pwrites as [bytes, offset]. */
  function traced(recording: string, collections: number): { preads: number[]; pwrites: [number, number][][] } {
    const out = join(dir, 'trace');
    execFileSync('strace', ['-f', '-qq', '--seccomp-bpf', '-e', 'trace=pread64,pwrite64,write', '-o', out, ...fixtureCommand('collect-replay.ts', [recording, String(collections), '25'])], { cwd: ROOT, stdio: 'pipe' });
    const lines = readFileSync(out, 'utf8').split('\n');
    const begin = lines.findIndex((l) => l.includes('"BEGIN '));
    const end = lines.findIndex((l) => l.includes('"END\\n"'));
    expect(begin).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(begin);
    const fds = /"BEGIN ([\d,]+)\\n"/.exec(lines[begin]!)![1]!.split(',').map(Number);
    const calls = lines.slice(begin + 1, end);
    return {
      preads: fds.map((fd) => calls.filter((l) => new RegExp(`pread64\\(${fd},`).test(l)).length),
      pwrites: fds.map((fd) => calls.flatMap((l) => {
        const match = new RegExp(`pwrite64\\(${fd}, .*, (\\d+), (\\d+)\\) = \\d+`).exec(l);
        return match ? [[Number(match[1]), Number(match[2])] as [number, number]] : [];
      })),
    };
  }

  it('reads each memfd with one pread per collection, as a live stats fd (strace)', () => {
    // Snapshots a minute apart, collections 25 ms apart: the data stays; nothing is written.
    const slow = edited('slow.gz', (j) => (j.snapshotsMs = j.snapshotsMs.map((_: number, k: number) => k * 60_000)));
    const { preads, pwrites } = traced(slow, 8);
    // The VM's fd, then each vCPU's fd and its thread's schedstat memfd.
    expect(preads).toEqual([8, 8, 8, 8, 8]);
    expect(pwrites).toEqual([[], [], [], [], []]);
  });

  it('writes each data block (one pwrite at its offset) only when the replay moves to another snapshot (strace)', () => {
    // Snapshots 10 ms apart: the replay moves between collections.
    const fast = edited('fast.gz', (j) => (j.snapshotsMs = j.snapshotsMs.map((_: number, k: number) => k * 10)));
    const { preads, pwrites } = traced(fast, 8);
    expect(preads).toEqual([8, 8, 8, 8, 8]);
    const [vm, vcpu0, sched0, vcpu1, sched1] = pwrites;
    expect(vm!.length).toBeGreaterThan(0);
    // A schedstat memfd: its whole text at offset 0, at each move.
    for (const sched of [sched0!, sched1!]) {
      expect(sched.length).toBe(vm!.length);
      for (const [bytes, offset] of sched) expect([bytes > 20 && bytes < 64, offset]).toEqual([true, 0]);
    }
    // Every fd at each move, the whole data block at data_offset: the VM's 16 values after its
    // 16 descriptors, a vCPU's 140 after its 47.
    expect(vcpu0!.length).toBe(vm!.length);
    expect(vcpu1!.length).toBe(vm!.length);
    expect(new Set(vm!.map(String))).toEqual(new Set([`${16 * 8},${72 + 16 * 64}`]));
    expect(new Set(vcpu0!.map(String))).toEqual(new Set([`${140 * 8},${72 + 47 * 64}`]));
  });

  it('replays each vCPU thread\'s scheduler time from its schedstat memfd, carried forward at every loop', () => {
    const recording = readRecording(STANDIN);
    let now = 0;
    const replay = RecordingReplay.open(recording, { clock: () => now });
    try {
      const vcpu = replay.sources[1]!;
      expect(replay.sources.map((s) => s.schedstat !== undefined)).toEqual([false, true, true]);
      const recorded = recording.vms[0]!.fds[1]!.schedstat!.map((text) => text.split(' ').map(BigInt));
      const steps = recorded.length - 1;
      const seen: bigint[][] = [];
      for (let step = 0; step <= 3 * steps; step++) {
        now = step * 1000;
        replay.sync();
        expect(vcpu.schedstat!.read()).toBe(true);
        seen.push(vcpu.schedstat!.values());
      }
      // As recorded in the first loop; then each loop adds what the whole recording added.
      expect(seen.slice(0, recorded.length)).toEqual(recorded);
      for (let k = 1; k < seen.length; k++) {
        const step = (k - 1) % steps;
        expect(seen[k]!.map((v, i) => v - seen[k - 1]![i]!)).toEqual(recorded[step + 1]!.map((v, i) => v - recorded[step]![i]!));
      }
    } finally {
      replay.close();
    }
    expect(replay.sources[1]!.schedstat!.closed).toBe(true);
  });

  it('gives each source the recorded identity: recordings of two VMs are two sets of series', async () => {
    const providers = [new ImageProvider(STANDIN), new ImageProvider(otherVm('other.gz'))];
    for (const provider of providers) await provider.refresh();
    try {
      expect(providers[0]!.description).toBe(`recording ${STANDIN} (synthetic stand-in made by ${MADE_BY})`);
      const { resourceMetrics } = await new KvmStatsProducer({ sources: sourcesOf(providers) }).collect();
      const exits = resourceMetrics.scopeMetrics[0]!.metrics.find((m) => m.descriptor.name === 'kvm.vcpu.exits')!;
      expect(exits.dataPoints.map((p) => p.attributes)).toEqual(
        [
          [4242, 'synthetic-demo', '5e7d1c2a-0b9f-4c3e-8a61-2f4d9b7e1c05'],
          [5151, 'other-vm', '0f0e0d0c-0b0a-4908-8706-050403020100'],
        ].flatMap(([pid, name, uuid]) =>
          [0, 1].map((vcpu) => ({ 'process.pid': pid, 'kvm.vm.name': name, 'kvm.vm.uuid': uuid, 'kvm.vcpu.id': vcpu, 'kvm.vcpu.index': vcpu })),
        ),
      );
      // The VM started a minute before the first snapshot: its series start that long before now.
      const start = exits.dataPoints[0]!.startTime;
      expect(Date.now() - (start[0] * 1000 + start[1] / 1e6)).toBeGreaterThanOrEqual(60_000);
    } finally {
      for (const provider of providers) await provider.close();
    }
  });

  it('top shows recordings of two VMs as two VMs, their exits moving', () => {
    const result = run('top', '--file', STANDIN, '--file', otherVm('top.gz'), '--interval', '1.1', '--iterations', '1');
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    const vms = lines.map((line) => /VM (\S+) \(pid (\d+)\)  vcpus (\d+)  exits\/s (\S+)/.exec(line)!.slice(1));
    expect(vms.map(([name, pid, vcpus]) => [name, pid, vcpus]).sort()).toEqual([['other-vm', '5151', '2'], ['synthetic-demo', '4242', '2']]);
    for (const [, , , rate] of vms) expect(rate).toMatch(/^\d+(\.\d+)?k$/);
  });
});

describe('read --save: raw images with their identity beside them', () => {
  it('--file gives the saved owner back; an identity file of another image is refused', () => {
    const saved = mkdtempSync(join(tmpdir(), 'kvm-saved-'));
    const live = run('read', '--file', STANDIN, '--save', saved, '--json');
    expect(live.code, live.stderr).toBe(0);
    const images = readdirSync(saved).filter((name) => name.endsWith('.kvmstats')).sort();
    expect(images).toEqual(['kvm-4242-synthetic-demo.vcpu-0.kvmstats', 'kvm-4242-synthetic-demo.vcpu-1.kvmstats', 'kvm-4242-synthetic-demo.vm.kvmstats']);
    expect(readdirSync(saved).filter((name) => name.endsWith('.kvmstats.json'))).toHaveLength(3);
    const back = run('read', ...images.flatMap((name) => ['--file', join(saved, name)]), '--json');
    expect(back.code, back.stderr).toBe(0);
    const owners = (JSON.parse(back.stdout) as { sources: SourceReport[] }).sources.map((s) => [s.id, s.pid, s.vmName]);
    expect(owners).toEqual([
      ['kvm-4243/vcpu-0', 4242, 'synthetic-demo'],
      ['kvm-4244/vcpu-1', 4242, 'synthetic-demo'],
      ['kvm-4242', 4242, 'synthetic-demo'],
    ]);
    copyFileSync(join(saved, `${images[2]}.json`), join(saved, `${images[0]}.json`));
    const wrong = run('read', '--file', join(saved, images[0]!));
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toBe(`kvm-stats-otel: the identity file beside ${join(saved, images[0]!)} is for kvm-4242, but the image is kvm-4243/vcpu-0: save them again together\n`);
  });
});

describe('record', () => {
  it('takes each vCPU thread\'s schedstat at every snapshot beside its data (recordSources on replayed sources)', async () => {
    // The library's recordSources over sources that have scheduler time: the stand-in replayed,
    // its schedstat memfds read as /proc is. (The command refuses --file; the function does not.)
    const provider = new ImageProvider(STANDIN);
    await provider.refresh();
    try {
      const recorded = await recordSources(provider.sources(), { snapshots: 3, intervalMs: 20, madeBy: 'test' });
      const fds = recorded.vms[0]!.fds;
      expect(fds.map((fd) => fd.schedstat?.length)).toEqual([undefined, 3, 3]);
      for (const fd of fds.slice(1)) {
        for (const text of fd.schedstat!) expect(text).toMatch(/^\d+ \d+ \d+$/);
      }
      // What was read is what the replay served: its first snapshot's text.
      expect(fds[1]!.schedstat![0]).toBe(readRecording(STANDIN).vms[0]!.fds[1]!.schedstat![0]);
      // And it reads back.
      const path = join(dir, 'rerecorded.kvmrec.json.gz');
      writeRecording(path, recorded);
      expect(readRecording(path).vms[0]!.fds[2]!.schedstat).toEqual(fds[2]!.schedstat);
    } finally {
      await provider.close();
    }
  });

  it('refuses --file: a saved image or recording is no live fd', () => {
    const result = run('record', '--file', STANDIN, '--out', join(dir, 'x.gz'));
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('kvm-stats-otel: record reads live stats fds (--demo, --pid or --scan); a saved image or recording given with --file is one already\n');
  });

  it('refuses --listen: nothing is handed over yet when it starts', () => {
    const result = run('record', '--listen', join(dir, 'agent.sock'), '--out', join(dir, 'y.gz'));
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('kvm-stats-otel: record reads the stats fds it can open now (--demo, --pid or --scan); fds handed over on a socket arrive later: record the VMM with --pid instead\n');
    expect(existsSync(join(dir, 'y.gz'))).toBe(false);
  });
});

describeKvm('record (real KVM): a demo VM recorded afresh reads back', () => {
  it('identity, tables as the kernel gives them, the snapshots taken, values moving', async () => {
    const out = join(dir, 'fresh.kvmrec.json.gz');
    const result = run('record', '--demo', '2', '--snapshots', '3', '--interval', '300', '--wait', '300', '--out', out);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(new RegExp(`^kvm-stats-otel: recorded 3 stats fd\\(s\\) of 1 VM\\(s\\), 3 snapshot\\(s\\), to ${out} \\(\\d+ bytes\\)\\n$`));
    const recording: Recording = readRecording(out);
    expect(recording).toMatchObject({ madeBy: `kvm-stats-otel record ${SCOPE_VERSION}`, synthetic: false });
    expect(recording.snapshotsMs).toHaveLength(3);
    expect(recording.snapshotsMs[2]! - recording.snapshotsMs[1]!).toBeGreaterThanOrEqual(290);
    expect(recording.vms).toHaveLength(1);
    const [vm] = recording.vms;
    expect(vm).toMatchObject({ pid: result.pid, vmName: 'demo' });
    expect(vm!.fds.map((fd) => fd.id)).toEqual([`kvm-${result.pid}`, `kvm-${result.pid}/vcpu-0`, `kvm-${result.pid}/vcpu-1`]);
    // The demo VM creates every vCPU from one thread: no scheduler time is recorded.
    expect(vm!.fds.map((fd) => fd.schedstat)).toEqual([undefined, undefined, undefined]);
    // The tables are this kernel's: those of a demo VM made here now.
    const demo = await DemoVm.start({ vcpus: 1 });
    const replayed = new ImageProvider(out);
    try {
      await replayed.refresh();
      const names = (sources: readonly { file: { target: string; table: { stats: readonly { name: string; type: string }[] } } }[], target: string) =>
        sources.find((s) => s.file.target === target)!.file.table.stats.map((s) => `${s.name}:${s.type}`);
      for (const target of ['vm', 'vcpu']) expect(names(replayed.sources(), target)).toEqual(names(demo.sources, target));
      // The guest ran while it was recorded: exits grew from the first snapshot to the last.
      const vcpu = replayed.sources().find((s) => s.file.target === 'vcpu')!;
      const exits = vcpu.file.table.stats.find((s) => s.name === 'exits')!;
      const first = Buffer.from(vm!.fds[1]!.image).readBigUInt64LE(vcpu.file.header.dataOffset + exits.offset);
      const last = Buffer.from(vm!.fds[1]!.data.at(-1)!).readBigUInt64LE(exits.offset);
      expect(last).toBeGreaterThan(first);
      expect(vcpu).toMatchObject({ pid: result.pid, vmName: 'demo' });
    } finally {
      await replayed.close();
      await demo.stop();
    }
  });
});
