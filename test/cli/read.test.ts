/**
 * `kvm-stats-otel read` as users run it (the built bin): its JSON and table output for saved
 * images, base units, and on real KVM the demo VM and another process's fds, saved and read
 * back. (Exit codes and errors of every command: test/cli/main.test.ts.)
 */
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KVM_STATS_TYPE_LOG_HIST, KVM_STATS_UNIT_SECONDS } from '../../src/abi/kvm.js';
import type { SourceReport } from '../../src/views/stat-reports.js';
import { buildImage, writeImage } from '../helpers/image.js';
import { describeKvm } from '../helpers/kvm.js';
import { startVmm, runBin } from '../helpers/processes.js';

const run = (...args: string[]) => runBin(args);

function json(...args: string[]): { sources: SourceReport[] } {
  const result = run(...args, '--json');
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as { sources: SourceReport[] };
}

const TYPES = ['cumulative', 'instant', 'peak', 'linear-histogram', 'log2-histogram'];
const UNITS = ['none', 'bytes', 'seconds', 'cycles', 'boolean'];

describe('read --file', () => {
  const image = writeImage(
    buildImage({
      id: 'kvm-555/vcpu-2',
      descs: [
        { name: 'exits', values: [42] },
        { name: 'halt_wait_ns', unit: KVM_STATS_UNIT_SECONDS, exponent: -9, values: [1000] },
        { name: 'halt_wait_hist', type: KVM_STATS_TYPE_LOG_HIST, unit: KVM_STATS_UNIT_SECONDS, exponent: -9, size: 4, values: [0, 1, 2, 2n ** 60n] },
      ],
    }),
  );

  it('prints one JSON document with each stat, its value and its metric', () => {
    const { sources } = json('read', '--file', image);
    expect(sources).toHaveLength(1);
    const [source] = sources;
    expect(source).toMatchObject({ id: 'kvm-555/vcpu-2', target: 'vcpu', pid: null, vcpu: 2, origin: image });
    expect(source!.stats[0]).toEqual({
      name: 'exits', type: 'cumulative', unit: 'none', base: 10, exponent: 0, size: 1, bucketSize: 0, value: 42,
      otel: { name: 'kvm.vcpu.exits', kind: 'sum', unit: '1' },
    });
    expect(source!.stats[2]).toEqual({
      name: 'halt_wait_hist', type: 'log2-histogram', unit: 'seconds', base: 10, exponent: -9, size: 4, bucketSize: 0,
      // Above 2^53 a value is printed exactly, as a string.
      value: [0, 1, 2, '1152921504606846976'],
      otel: { name: 'kvm.vcpu.halt_wait_hist', kind: 'histogram', unit: 'ns', bounds: [0, 1, 3] },
    });
  });

  it('converts to base units with --units base, the unit suffix gone from the name', () => {
    const stat = json('read', '--file', image, '--units', 'base').sources[0]!.stats[1]!;
    expect(stat.otel).toEqual({ name: 'kvm.vcpu.halt_wait', kind: 'sum', unit: 's' });
  });

  it('prints a table without --json', () => {
    const result = run('read', '--file', image);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^vCPU 2 {2}\(kvm-555\/vcpu-2, .*\)$/m);
    expect(result.stdout).toMatch(/^ {2}kvm\.vcpu\.exits +sum +1 +42$/m);
    expect(result.stdout).toMatch(/^ {2}kvm\.vcpu\.halt_wait_hist +histogram +ns +count 1152921504606846979 {2}buckets 1:1 2:2 3:1152921504606846976$/m);
  });
});

describeKvm('read on real KVM', () => {
  it('read --demo --json: a VM and its vCPUs, every stat described and mapped, counters moving', () => {
    const { sources } = json('read', '--demo', '--vcpus', '2', '--wait', '200');
    expect(sources.map((s) => [s.target, s.vcpu])).toEqual([['vm', null], ['vcpu', 0], ['vcpu', 1]]);
    for (const source of sources) {
      expect(source.pid).toBeGreaterThan(0);
      expect(source.vmName).toBe('demo');
      for (const stat of source.stats) {
        expect(TYPES).toContain(stat.type);
        expect(UNITS).toContain(stat.unit);
        expect([10, 2]).toContain(stat.base);
        expect(stat.otel.name).toBe(`kvm.${source.target}.${stat.name}`);
        if (stat.type.endsWith('histogram')) {
          expect(stat.value).toHaveLength(stat.size);
          expect(stat.otel.bounds).toHaveLength(stat.size - 1);
        } else {
          expect(typeof stat.value).toBe('number');
        }
      }
    }
    const vcpu = sources[1]!;
    const value = (name: string) => vcpu.stats.find((s) => s.name === name)!.value as number;
    expect(value('exits')).toBeGreaterThan(0);
    expect(value('halt_exits')).toBeGreaterThan(0);
    expect(value('insn_emulation')).toBeGreaterThan(0);
    const hist = vcpu.stats.find((s) => s.name === 'halt_wait_hist')!;
    expect(hist.otel).toMatchObject({ kind: 'histogram', unit: 'ns' });
    expect(hist.otel.bounds!.slice(0, 4)).toEqual([0, 1, 3, 7]);
  });

  it('read --pid --save writes images, and their owner beside each, that read --file reads back', async () => {
    const vmm = await startVmm(['--vcpus', '2', '-name', 'saved']);
    const dir = mkdtempSync(join(tmpdir(), 'kvm-save-'));
    try {
      const live = json('read', '--pid', String(vmm.pid), '--save', dir);
      expect(live.sources.map((s) => [s.target, s.vcpu, s.pid, s.vmName])).toEqual([
        ['vm', null, vmm.pid, 'saved'],
        ['vcpu', 0, vmm.pid, 'saved'],
        ['vcpu', 1, vmm.pid, 'saved'],
      ]);
      const names = [`kvm-${vmm.pid}-saved.vcpu-0.kvmstats`, `kvm-${vmm.pid}-saved.vcpu-1.kvmstats`, `kvm-${vmm.pid}-saved.vm.kvmstats`];
      expect(readdirSync(dir).sort()).toEqual(names.flatMap((name) => [name, `${name}.json`]).sort());
      const saved = json('read', ...names.flatMap((f) => ['--file', join(dir, f)]));
      // The identity saved beside each image: the same owner as live, not an anonymous image.
      expect(saved.sources.map((s) => [s.target, s.vcpu, s.pid, s.vmName]).sort()).toEqual(live.sources.map((s) => [s.target, s.vcpu, s.pid, s.vmName]).sort());
      const strip = (r: SourceReport) => ({ id: r.id, target: r.target, vcpu: r.vcpu, stats: r.stats.map(({ value: _, ...s }) => s) });
      const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);
      expect(saved.sources.map(strip).sort(byId)).toEqual(live.sources.map(strip).sort(byId));
    } finally {
      await vmm.stop();
    }
  });

  it('read --pid of a process without stats fds exits 1 and says why', () => {
    const result = run('read', '--pid', String(process.pid));
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`kvm-stats-otel: process ${process.pid} holds no KVM stats fds: is it a VMM running a KVM guest?\nkvm-stats-otel: no stats fd could be read\n`);
  });
});
