/** The local-collector example, run as users run it: the built agent on a demo VM, a real
 * OTLP receiver on loopback, JSON and protobuf. */
import { expect, it } from 'vitest';
import { describeKvm } from '../../test/helpers/kvm.js';
import { metricsOf } from './collector.js';
import { checkRun, runAgainstLocalCollector } from './run.js';

describeKvm('examples/local-collector (real KVM, real OTLP receiver)', () => {
  for (const protocol of ['http/json', 'http/protobuf'] as const) {
    it(`${protocol}: names, units, kinds, bounds, increasing counters and the resource are as expected`, async () => {
      const run = await runAgainstLocalCollector(protocol);
      expect(checkRun(run)).toEqual([]);
      expect(run.requests).toHaveLength(3);
      // Every stat of a VM and two vCPUs arrived (15 VM and 45 vCPU stats on the development kernel).
      const names = metricsOf(run.requests[2]!).map((m) => m.metric.name);
      expect(names.filter((n) => n.startsWith('kvm.vm.')).length).toBeGreaterThan(5);
      expect(names.filter((n) => n.startsWith('kvm.vcpu.')).length).toBeGreaterThan(20);
    });
  }

  it('checkRun finds what is wrong', async () => {
    const run = await runAgainstLocalCollector('http/json', 2, 1);
    // A run whose counters did not move and whose agent did not exit cleanly.
    const stale = { ...run, requests: [run.requests[0]!, run.requests[0]!], exitCode: 1 };
    const problems = checkRun(stale);
    expect(problems).toContain('the agent exited with 1, not 0, after SIGTERM');
    expect(problems.some((p) => /kvm\.vcpu\.exits of vCPU 0 went from (\d+) to \1$/.test(p))).toBe(true);
  });
});
