/**
 * Runs the agent on a demo VM against a local OTLP receiver (@elastic/mockotlpserver) and
 * checks what arrives: names, units, kinds, histogram bounds, counters that increase, and the
 * resource. Once over OTLP/HTTP JSON, once over protobuf.
 *
 *   npm run build && node --import tsx examples/local-collector/run.ts
 */
import { arch, hostname, release } from 'node:os';
import {
  type HistogramPoint,
  LocalCollector,
  type Metric,
  type MetricsRequest,
  type NumberPoint,
  metricsOf,
  pointValue,
  startAgentProcess,
} from './collector.js';

export type Protocol = 'http/json' | 'http/protobuf';

export interface Run {
  readonly protocol: Protocol;
  readonly requests: MetricsRequest[];
  readonly contentTypes: string[];
  readonly agentPid: number;
  readonly exitCode: number | null;
  readonly log: string;
}

/** Starts a receiver and the agent (demo VM, `vcpus` vCPUs), takes `count` exports, stops both. */
export async function runAgainstLocalCollector(protocol: Protocol, count = 3, vcpus = 2): Promise<Run> {
  const collector = await LocalCollector.start();
  const agent = startAgentProcess(['--demo', String(vcpus), '--endpoint', collector.endpoint, '--protocol', protocol, '--interval', '500']);
  try {
    const requests = await collector.waitForRequests(count, 30_000);
    const exitCode = await agent.stop('SIGTERM');
    return {
      protocol,
      requests,
      contentTypes: collector.headers.map((h) => h['content-type'] ?? ''),
      agentPid: agent.child.pid!,
      exitCode,
      log: agent.stderr(),
    };
  } finally {
    await agent.stop('SIGKILL');
    await collector.close();
  }
}

const LOG2_BOUNDS_START = [0, 1, 3, 7, 15];

function find(request: MetricsRequest, name: string): Metric | undefined {
  return metricsOf(request).find((m) => m.metric.name === name)?.metric;
}

function pointOf<T extends NumberPoint | HistogramPoint>(points: T[] | undefined, vcpu: number | undefined): T | undefined {
  return points?.find((p) => p.attributes['kvm.vcpu.id'] === vcpu);
}

/** Everything wrong with what the receiver got from a run; empty when all is as expected. */
export function checkRun(run: Run): string[] {
  const problems: string[] = [];
  const expect = (ok: boolean, problem: string): void => void (ok || problems.push(problem));
  const first = run.requests[0]!;
  const last = run.requests.at(-1)!;
  const wanted = run.protocol === 'http/json' ? 'application/json' : 'application/x-protobuf';
  expect(run.contentTypes.every((type) => type === wanted), `content types ${run.contentTypes.join(', ')}, not all ${wanted}`);
  expect(run.exitCode === 0, `the agent exited with ${run.exitCode}, not 0, after SIGTERM`);

  for (const request of run.requests) {
    for (const { resource, scope, metric } of metricsOf(request)) {
      const problem = `${metric.name} in scope ${scope}`;
      expect(resource['service.name'] === 'kvm-stats-otel', `${problem}: service.name is ${resource['service.name']}`);
      expect(resource['host.name'] === hostname(), `${problem}: host.name is ${resource['host.name']}, not ${hostname()}`);
      expect(resource['os.version'] === release(), `${problem}: os.version is ${resource['os.version']}, not the kernel release ${release()}`);
      expect(typeof resource['host.arch'] === 'string' && resource['host.arch'] !== '', `${problem}: no host.arch (${arch()})`);
      if (scope === 'kvm-stats-otel') {
        expect(/^kvm\.(vm|vcpu)\.[a-z0-9_]+$/.test(metric.name), `${problem}: not a kvm.vm.* or kvm.vcpu.* name`);
        const points = metric.sum?.dataPoints ?? metric.gauge?.dataPoints ?? metric.histogram?.dataPoints ?? [];
        for (const point of points) {
          expect(point.attributes['process.pid'] === run.agentPid, `${problem}: process.pid ${point.attributes['process.pid']}, not the agent's ${run.agentPid}`);
          expect(point.attributes['kvm.vm.name'] === 'demo', `${problem}: kvm.vm.name ${point.attributes['kvm.vm.name']}`);
        }
      }
    }
  }

  // Kinds and units, as the kernel's descriptors say (see docs/metrics.md).
  const kinds: [string, 'sum' | 'gauge' | 'histogram', string][] = [
    ['kvm.vcpu.exits', 'sum', '1'],
    ['kvm.vcpu.halt_exits', 'sum', '1'],
    ['kvm.vcpu.halt_wait_ns', 'sum', 'ns'],
    ['kvm.vcpu.blocking', 'gauge', '1'],
    ['kvm.vcpu.halt_wait_hist', 'histogram', 'ns'],
    ['kvm.vm.pages_4k', 'gauge', '1'],
    ['kvm.vm.remote_tlb_flush', 'sum', '1'],
    ['kvm_stats_otel.collection.duration', 'histogram', 's'],
    ['kvm_stats_otel.sources.read', 'sum', '{source}'],
    ['kvm_stats_otel.stats.skipped', 'gauge', '{stat}'],
  ];
  for (const [name, kind, unit] of kinds) {
    const metric = find(last, name);
    expect(metric !== undefined, `${name} did not arrive`);
    if (!metric) continue;
    expect(metric[kind] !== undefined, `${name} is not a ${kind}`);
    expect(metric.unit === unit, `${name} has unit ${metric.unit}, not ${unit}`);
    if (kind === 'sum') expect(metric.sum?.isMonotonic === true, `${name} is not monotonic`);
  }

  // Histogram bounds: upper-inclusive integer bounds for the kernel's log2 buckets.
  const histogram = pointOf(find(last, 'kvm.vcpu.halt_wait_hist')?.histogram?.dataPoints, 0);
  if (histogram) {
    expect(JSON.stringify(histogram.explicitBounds.slice(0, 5)) === JSON.stringify(LOG2_BOUNDS_START), `halt_wait_hist bounds start ${histogram.explicitBounds.slice(0, 5)}`);
    expect(histogram.bucketCounts.length === histogram.explicitBounds.length + 1, 'halt_wait_hist has not one bucket more than bounds');
    const total = histogram.bucketCounts.reduce<number>((sum, c) => sum + Number(c), 0);
    expect(total === Number(histogram.count), `halt_wait_hist count ${histogram.count} is not the sum of its buckets (${total})`);
    expect(typeof histogram.sum === 'number', 'halt_wait_hist has no sum, though halt_wait_ns is its companion');
  } else {
    problems.push('no halt_wait_hist point for vCPU 0');
  }

  // Counters increase from one export to the next, from the same start time.
  for (const vcpu of [0, 1]) {
    const before = pointOf(find(first, 'kvm.vcpu.exits')?.sum?.dataPoints, vcpu);
    const after = pointOf(find(last, 'kvm.vcpu.exits')?.sum?.dataPoints, vcpu);
    if (!before || !after) {
      problems.push(`no kvm.vcpu.exits point for vCPU ${vcpu}`);
      continue;
    }
    expect(pointValue(after) > pointValue(before), `kvm.vcpu.exits of vCPU ${vcpu} went from ${pointValue(before)} to ${pointValue(after)}`);
    expect(after.startTimeUnixNano === before.startTimeUnixNano, `kvm.vcpu.exits of vCPU ${vcpu} changed its start time`);
  }
  return problems;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  let failed = false;
  for (const protocol of ['http/json', 'http/protobuf'] as const) {
    const run = await runAgainstLocalCollector(protocol);
    const problems = checkRun(run);
    const metrics = metricsOf(run.requests.at(-1)!).length;
    process.stdout.write(`${protocol}: ${run.requests.length} exports of ${metrics} metrics received; ${problems.length === 0 ? 'all checks pass' : `${problems.length} problems:`}\n`);
    for (const problem of problems) process.stdout.write(`  ${problem}\n`);
    failed ||= problems.length > 0;
  }
  process.exitCode = failed ? 1 : 0;
}
