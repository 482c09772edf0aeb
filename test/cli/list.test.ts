/**
 * `kvm-stats-otel list` as users run it (the built bin), on real KVM: each stand-in VMM with its
 * stats fds and how they are read, as JSON and as a table, and the series each VMM and the host
 * export, as a producer with the same flags makes them.
 */
import { spawnSync } from 'node:child_process';
import type { Histogram } from '@opentelemetry/sdk-metrics';
import { expect, it } from 'vitest';
import type { ListedProcess } from '../../src/cli/list.js';
import type { ListedSeries } from '../../src/views/series.js';
import { type KvmStatsProducerOptions, KvmStatsProducer } from '../../src/otel/producer.js';
import { ScanProvider } from '../../src/sources/scan.js';
import { BIN } from '../../examples/local-collector/collector.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';
import { describeKvm } from '../helpers/kvm.js';
import { ROOT, type StandInVmm, startStandInVmm, startVmm } from '../helpers/processes.js';

const cleanup = cleanupAfterEach();

/** A stand-in VMM, stopped after the test. */
async function standInVmm(args: string[] = []): Promise<StandInVmm> {
  const vmm = await startStandInVmm(args);
  cleanup.push(() => vmm.stop());
  return vmm;
}

describeKvm('kvm-stats-otel list', () => {
  function list(...args: string[]) {
    const result = spawnSync(process.execPath, [BIN, 'list', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(result.status, result.stderr).toBe(0);
    return result.stdout;
  }

  it('lists each VMM with its stats fds and how they are read, as JSON and as a table', async () => {
    const vmm = await standInVmm(['--vcpus', '2', '-name', 'guest=listed']);
    const fds = await vmm.send('');
    const noStats = await startVmm(['--no-stats']);
    try {
      const { processes } = JSON.parse(list('--json')) as { processes: ListedProcess[] };
      const origin = (key: string) => `pidfd_getfd from process ${vmm.pid} fd ${fds[key]}`;
      expect(processes.find((p) => p.pid === vmm.pid)).toEqual({
        pid: vmm.pid,
        executable: 'node',
        vmName: 'listed',
        vmUuid: null,
        vmFds: 1,
        statsFds: [
          { fd: fds.vm, target: 'vm', vcpu: null, vcpuIndex: null, id: `kvm-${vmm.pid}`, origin: origin('vm'), skipped: null, sameAs: null, copyOf: null },
          { fd: fds['vcpu-0'], target: 'vcpu', vcpu: 0, vcpuIndex: null, id: `kvm-${vmm.pid}/vcpu-0`, origin: origin('vcpu-0'), skipped: null, sameAs: null, copyOf: null },
          { fd: fds['vcpu-1'], target: 'vcpu', vcpu: 1, vcpuIndex: null, id: `kvm-${vmm.pid}/vcpu-1`, origin: origin('vcpu-1'), skipped: null, sameAs: null, copyOf: null },
        ],
        problems: [],
      });
      expect(processes.find((p) => p.pid === noStats.pid)!.problems).toEqual([expect.stringContaining('but no stats fds: QEMU before 8.1 keeps none open')]);
      // The listing process's own copies are not listed as a VMM.
      const table = list();
      expect(table).toContain(`pid ${vmm.pid}  node  vm listed  1 VM fd(s)\n`);
      expect(table).toMatch(new RegExp(`^ {2}fd ${fds['vcpu-1']} +vCPU 1 +kvm-${vmm.pid}/vcpu-1 +pidfd_getfd from process ${vmm.pid} fd ${fds['vcpu-1']}$`, 'm'));
      expect(table).toMatch(new RegExp(`^pid ${noStats.pid}  node  1 VM fd\\(s\\)\\n {2}! process ${noStats.pid} holds 1 KVM VM\\(s\\) but no stats fds`, 'm'));
    } finally {
      await noStats.stop();
    }
  });

  it('counts the data points and Prometheus series each VMM and the host export, as a producer with the same flags makes them', async () => {
    const vmm = await standInVmm(['--vcpus', '3', '-name', 'guest=counted']);
    const scan = new ScanProvider();
    cleanup.push(() => scan.close());
    await scan.refresh();
    const sources = scan.sources().filter((s) => s.pid === vmm.pid);
    expect(sources).toHaveLength(4);
    const cases: [string[], Partial<KvmStatsProducerOptions>][] = [
      [[], {}],
      [['--exclude', 'vcpu:*_hist,vm:pages_*', '--vcpu-aggregation', 'vm'], { exclude: ['vcpu:*_hist', 'vm:pages_*'], vcpuAggregation: 'vm' }],
    ];
    for (const [args, options] of cases) {
      const { series } = JSON.parse(list('--json', ...args)) as { series: ListedSeries };
      const { resourceMetrics, errors } = await new KvmStatsProducer({ sources, ...options }).collect();
      expect(errors).toEqual([]);
      const metrics = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics);
      const dataPoints = metrics.reduce((n, m) => n + m.dataPoints.length, 0);
      const prometheusSeries = metrics.reduce(
        (n, m) => n + m.dataPoints.reduce((k, p) => k + (typeof p.value === 'number' ? 1 : (p.value as Histogram).buckets.counts.length + 1 + (p.value.sum === undefined ? 0 : 1)), 0),
        0,
      );
      expect(series.processes.find((p) => p.pid === vmm.pid), args.join(' ')).toEqual({
        pid: vmm.pid, dataPoints, prometheusSeries, vmFds: 1, vcpuFds: 3, vcpuGroups: options.vcpuAggregation === 'vm' ? 1 : null,
      });
      expect(series.host.dataPoints).toBeGreaterThanOrEqual(dataPoints);
      const table = list(...args);
      expect(table).toMatch(new RegExp(`^ {2}fd \\d+ +vCPU 2 .*\\n {2}exports ${dataPoints.toLocaleString('en-US')} data points \\(${prometheusSeries.toLocaleString('en-US')} Prometheus series\\) per collection$`, 'm'));
      expect(table).toMatch(/^the host: [\d,]+ data points \([\d,]+ Prometheus series\) per collection from \d+ stats fds /m);
    }
  });
});
