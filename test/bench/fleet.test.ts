/**
 * The benchmark's fleet (src/bench/fleet.ts) on real KVM: N VMs x M vCPUs made here with only
 * their stats fds kept, busy turns that change every vCPU block, the open-file limit. (The bench
 * command: test/bench/bench.test.ts.)
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { expect, it } from 'vitest';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { VmFleet } from '../../src/bench/fleet.js';
import { describeKvm } from '../helpers/kvm.js';

/** What this process's fds point to, e.g. "anon_inode:kvm-vcpu-stats:1". */
function fdTargets(): string[] {
  return readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      return [readlinkSync(`/proc/self/fd/${fd}`)];
    } catch {
      return [];
    }
  });
}

const count = (targets: string[], pattern: RegExp): number => targets.filter((t) => pattern.test(t)).length;

describeKvm('VmFleet: N VMs x M vCPUs made here, only their stats fds kept (real KVM)', () => {
  it('holds one stats fd per VM and vCPU, closes the VM and vCPU fds, and closes everything on close()', async () => {
    const before = fdTargets();
    const fleet = VmFleet.create({ vms: 3, vcpus: 2, namePrefix: 'test-fleet' });
    const during = fdTargets();
    try {
      expect(fleet.sources).toHaveLength(VmFleet.fdCount(3, 2));
      expect(during.length - before.length).toBe(9);
      expect(count(during, /^anon_inode:kvm-vm-stats$/) - count(before, /^anon_inode:kvm-vm-stats$/)).toBe(3);
      expect(count(during, /^anon_inode:kvm-vcpu-stats:/) - count(before, /^anon_inode:kvm-vcpu-stats:/)).toBe(6);
      expect(count(during, /^anon_inode:kvm-(vm|vcpu:\d+)$/)).toBe(count(before, /^anon_inode:kvm-(vm|vcpu:\d+)$/));
      expect(fleet.sources.map((s) => [s.vmName, s.file.target, s.file.vcpuId])).toEqual([
        ['test-fleet-0', 'vm', undefined], ['test-fleet-0', 'vcpu', 0], ['test-fleet-0', 'vcpu', 1],
        ['test-fleet-1', 'vm', undefined], ['test-fleet-1', 'vcpu', 0], ['test-fleet-1', 'vcpu', 1],
        ['test-fleet-2', 'vm', undefined], ['test-fleet-2', 'vcpu', 0], ['test-fleet-2', 'vcpu', 1],
      ]);
      // Each VM's series stay apart: one exits point per vCPU of every VM.
      const { resourceMetrics, errors } = await new KvmStatsProducer({ sources: fleet.sources }).collect();
      expect(errors).toEqual([]);
      const exits = resourceMetrics.scopeMetrics[0]!.metrics.find((m) => m.descriptor.name === 'kvm.vcpu.exits')!;
      expect(new Set(exits.dataPoints.map((p) => JSON.stringify(p.attributes))).size).toBe(6);
    } finally {
      fleet.close();
    }
    expect(fdTargets().length).toBe(before.length);
  });

  it('busy: each step() runs every vCPU from a port write to a halt, so every vCPU block changes; close() stops the threads and closes the vCPU fds', async () => {
    const before = fdTargets();
    const fleet = await VmFleet.createBusy({ vms: 2, vcpus: 3, namePrefix: 'test-busy', guestThreads: 2 });
    try {
      expect(fleet.busy).toBe(true);
      const during = fdTargets();
      // Stats fds, and the vCPU fds that run the guests; no VM fds.
      expect(count(during, /^anon_inode:kvm-vcpu:\d+$/) - count(before, /^anon_inode:kvm-vcpu:\d+$/)).toBe(6);
      expect(count(during, /^anon_inode:kvm-vm$/)).toBe(count(before, /^anon_inode:kvm-vm$/));
      const vcpus = fleet.sources.filter((s) => s.file.target === 'vcpu');
      const stat = (name: string) => vcpus[0]!.file.table.stats.find((d) => d.name === name)!;
      const read = () => vcpus.map(({ file }) => (file.read(), ['exits', 'halt_exits'].map((name) => file.value(stat(name)))));
      for (let turn = 0; turn < 3; turn++) {
        const was = read();
        await fleet.step();
        const now = read();
        for (let v = 0; v < vcpus.length; v++) {
          const [exits, haltExits] = now[v]!.map((value, k) => value - was[v]![k]!);
          // One port write and one halt per turn, each an exit (and maybe others, e.g. interrupts).
          expect(haltExits).toBe(1);
          expect(exits).toBeGreaterThanOrEqual(2);
        }
      }
    } finally {
      await fleet.close();
    }
    expect(fdTargets().length).toBe(before.length);
    const idle = VmFleet.create({ vms: 1, vcpus: 1 });
    await expect(idle.step()).rejects.toThrow(/^VM fleet: step\(\) needs a fleet made with busy: true$/);
    idle.close();
  });

  it('refuses a fleet beyond the open-file limit before opening anything', () => {
    const before = readdirSync('/proc/self/fd').length;
    expect(() => VmFleet.create({ vms: 10_000, vcpus: 4 })).toThrow(
      /^VM fleet: 10000 VMs x 4 vCPUs need 50006 fds but the open-file limit is \d+ with \d+ open: raise it \(ulimit -n\) or make fewer$/,
    );
    expect(() => VmFleet.create({ vms: 0, vcpus: 4 })).toThrow(RangeError);
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });
});
