/**
 * `kvm-stats-otel mixin` as users run it, on kernels other than the shipped recording's (saved
 * images, no KVM needed): what a kernel lacks is left out and said, what the mixin cannot do
 * without is an error that names the stat, and the flags' mistakes are usage errors.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KVM_STATS_TYPE_LOG_HIST, KVM_STATS_UNIT_SECONDS } from '../../src/abi/kvm.js';
import { buildImage, writeImage } from '../helpers/image.js';
import { runBin } from '../helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'kvm-mixin-cli-'));

/** A vCPU image of an arm64-like kernel: the generic stats, exits, and its own exit kinds, but
 * no halt_exits and no blocking. */
function vcpuImage(without: readonly string[] = []): string {
  const ns = { unit: KVM_STATS_UNIT_SECONDS, exponent: -9 };
  const descs = [
    { name: 'halt_poll_success_ns', ...ns, values: [10] },
    { name: 'halt_poll_fail_ns', ...ns, values: [20] },
    { name: 'halt_wait_ns', ...ns, values: [30] },
    { name: 'halt_wait_hist', type: KVM_STATS_TYPE_LOG_HIST, ...ns, size: 32 },
    { name: 'exits', values: [100] },
    { name: 'wfi_exit_stat', values: [40] },
    { name: 'mmio_exit_user', values: [5] },
  ].filter((d) => !without.includes(d.name));
  return writeImage(buildImage({ id: 'kvm-77/vcpu-0', descs }), 'mixin-vcpu');
}

describe('kvm-stats-otel mixin', () => {
  it('leaves out what the kernel lacks and says so; the exit reasons are the kernel\'s own', () => {
    const out = join(dir, 'arm');
    const result = runBin(['mixin', '--file', vcpuImage(), '--out', out]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/: 16 recording rules, 7 alerts, 2 dashboards, from image .*\n/);
    expect(result.stderr).toContain('kvm-stats-otel: left out: halt exits (the kernel has no halt_exits stat): their rules and panels\n');
    expect(result.stderr).toContain('kvm-stats-otel: left out: the panel of vCPUs blocked in a halt (the kernel has no blocking stat)\n');
    const vm = JSON.parse(readFileSync(join(out, 'dashboards', 'kvm-stats-vm.json'), 'utf8')) as { panels: { title: string; targets: { legendFormat: string }[] }[] };
    expect(vm.panels.find((p) => p.title === 'Exit reasons')!.targets.map((t) => t.legendFormat)).toEqual(['wfi_exit_stat', 'mmio_exit_user']);
    expect(vm.panels.map((p) => p.title)).not.toContain('Halt exits/s per vCPU');
  });

  it('a stat every part needs is missing: exit 1, naming it', () => {
    const result = runBin(['mixin', '--file', vcpuImage(['halt_wait_hist']), '--out', join(dir, 'none')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('kvm-stats-otel: the mixin needs vcpu:halt_wait_hist, which the tables it is made from lack\n');
  });

  it('usage errors: no --out, an unknown way in', () => {
    expect(runBin(['mixin', '--file', vcpuImage()])).toMatchObject({ code: 2, stderr: expect.stringContaining("required option '--out <dir>' not specified") });
    expect(runBin(['mixin', '--file', vcpuImage(), '--out', dir, '--names', 'remote'])).toMatchObject({ code: 2, stderr: expect.stringContaining("'remote' is invalid") });
  });
});
