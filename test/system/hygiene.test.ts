/**
 * fd hygiene over a thousand VM lifetimes: each cycle makes a VM with vCPUs here (own), starts a
 * tiny VMM with the preload helper (so the scan finds its stats fds and they are handed over
 * too), collects through every way in, then lets both go. A copied fd must not outlive its VMM
 * by more than one collection, and at the end the fd count is where it started.
 */
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { VmFleet } from '../../src/bench/fleet.js';
import { HandoverProvider } from '../../src/sources/handover-receiver.js';
import type { Problem } from '../../src/sources/problem.js';
import { sourcesOf } from '../../src/sources/provider.js';
import { fdLinks, isStatsLink } from '../../src/sources/proc.js';
import { ScanProvider } from '../../src/sources/scan.js';
import type { StatsSource } from '../../src/sources/source.js';
import { describeKvm } from '../helpers/kvm.js';
import { startTinyVmm, tinyVmmTools } from '../helpers/processes.js';

const CYCLES = Number(process.env.KVM_STATS_HYGIENE_CYCLES ?? 1000);
const VCPUS = 2;

function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** KVM stats fds this process holds, by /proc/self/fd link. */
function statsFdCount(): number {
  return fdLinks('self').filter((link) => isStatsLink(link.target)).length;
}

describeKvm(`fd hygiene over ${CYCLES} VM lifetimes (real KVM, scan and hand-over)`, () => {
  let socket = '';
  beforeAll(() => {
    tinyVmmTools();
    socket = join(mkdtempSync(join(tmpdir(), 'kvm-hygiene-')), 'agent.sock');
  });

  let scan: ScanProvider | undefined;
  let handover: HandoverProvider | undefined;
  afterAll(async () => {
    await scan?.close();
    await handover?.close();
  });

  it('leaves the fd count where it started, and no copy outlives its VMM by more than one collection', async () => {
    const baseline = openFdCount();
    const reports: Problem[] = [];
    scan = new ScanProvider({ report: (problem) => reports.push(problem) });
    handover = new HandoverProvider(socket, { report: (problem) => reports.push(problem) });
    await handover.refresh();
    let own: VmFleet | undefined;
    const providers = [scan, handover];
    const shared = sourcesOf(providers);
    const producer = new KvmStatsProducer({ sources: () => [...(own?.sources ?? []), ...shared()] });
    const vmmPids: number[] = [];
    const originOf = (source: StatsSource): string => (source.origin.startsWith('hand-over') ? 'handover' : source.origin.startsWith('pidfd_getfd') ? 'scan' : 'own');

    for (let cycle = 0; cycle < CYCLES; cycle++) {
      own = VmFleet.create({ vms: 1, vcpus: VCPUS, namePrefix: `own-${cycle}` });
      const vmm = await startTinyVmm(VCPUS, socket);
      vmmPids.push(vmm.pid);
      await scan.refresh();
      await handover.refresh();
      // Every way in sees this cycle's VMs: the scan and the hand-over the same VMM (the
      // first one kept), the own VM beside it.
      // (Other tests' VMs running at the same time are on the host too: count this cycle's.)
      const ways = new Map<string, number>();
      const mine = [...own.sources, ...scan.sources(), ...handover.sources()].filter((s) => s.pid === process.pid || s.pid === vmm.pid);
      for (const source of mine) ways.set(originOf(source), (ways.get(originOf(source)) ?? 0) + 1);
      expect(Object.fromEntries(ways), `cycle ${cycle}`).toEqual({ own: 1 + VCPUS, scan: 1 + VCPUS, handover: 1 + VCPUS });
      const { resourceMetrics, errors } = await producer.collect();
      expect(errors).toEqual([]);
      const exits = resourceMetrics.scopeMetrics[0]!.metrics.find((m) => m.descriptor.name === 'kvm.vcpu.exits')!;
      const points = exits.dataPoints.filter((p) => p.attributes['process.pid'] === process.pid || p.attributes['process.pid'] === vmm.pid);
      expect(new Set(points.map((p) => p.attributes['process.pid'])), `cycle ${cycle}`).toEqual(new Set([process.pid, vmm.pid]));
      expect(points).toHaveLength(2 * VCPUS);

      own.close();
      own = undefined;
      await vmm.stop();
      // One collection after the VMM exited: every copy of its fds is closed, and every stats fd
      // still open here belongs to a source still held (other tests' VMMs, seen by the scan).
      await producer.collect();
      const held = [...scan.sources(), ...handover.sources()];
      expect(held.filter((source) => source.pid === vmm.pid), `cycle ${cycle}`).toEqual([]);
      expect(statsFdCount(), `cycle ${cycle}`).toBe(held.length);
    }
    await scan.close();
    await handover.close();
    expect(openFdCount()).toBe(baseline);
    // About this test's VMMs, only their exits were reported (other tests' VMMs may run meanwhile).
    const about = reports.filter((problem) => problem.pid !== undefined && vmmPids.includes(problem.pid));
    // Nothing but exits, and (the tiny VMM creates its vCPUs from one thread) no scheduler time.
    expect(about.filter((problem) => problem.kind !== 'exited' && problem.kind !== 'no-schedstat')).toEqual([]);
    expect(about.filter((problem) => problem.kind === 'exited')).toHaveLength(2 * CYCLES);
  }, 240_000);
});
