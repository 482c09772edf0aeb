/**
 * `kvm-stats-otel bench` in its short mode, so that it never rots: real VMs made in-process, the
 * built command line, QEMU guests where QEMU is installed; and on stats images in memfds
 * (--images), which runs everywhere. Nothing here asserts a timing. (The fleet it makes:
 * test/bench/fleet.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { qemuAvailable } from '../../src/bench/qemu.js';
import { describeKvm } from '../helpers/kvm.js';
import { runBin } from '../helpers/processes.js';

const run = (...args: string[]) => runBin(['bench', ...args], { timeoutMs: 300_000 });

const KEYS = [
  'agentCycleMs',
  'agentCycleOverCFloor',
  'agentCycleOverFloor',
  'aggregatedCollectMs',
  'aggregatedPoints',
  'aggregatedSerializeProtoMs',
  'allocatedBytesPerCycle',
  'busy',
  'cFloorMs',
  'changedBlocks',
  'collectMs',
  'collectOverCFloor',
  'collectOverFloor',
  'collectPerVmMs',
  'fastJsonOverCFloor',
  'fastJsonOverFloor',
  'fastProtoOverCFloor',
  'fastProtoOverFloor',
  'fds',
  'floorCompareMs',
  'floorMs',
  'images',
  'jsonBytesPerExport',
  'points',
  'prometheusBytes',
  'prometheusGzipBytes',
  'prometheusGzipMs',
  'prometheusGzipOverCFloor',
  'prometheusGzipOverFloor',
  'prometheusTextMs',
  'prometheusTextOverCFloor',
  'prometheusTextOverFloor',
  'protoBytesPerExport',
  'qmpPerVmMs',
  'retainedBytesPerFd',
  'roundFloorsMs',
  'schedCollectMs',
  'schedPerVcpuUs',
  'serializeFastJsonMs',
  'serializeFastProtoMs',
  'serializeJsonMs',
  'serializeOverCFloor',
  'serializeOverFloor',
  'serializeProtoMs',
];

describeKvm('kvm-stats-otel bench, short mode (real KVM)', () => {
  it('prints one JSON line per size with exactly the figures the issue lists', () => {
    const result = run('--sizes', '5,10', '--iterations', '3', '--qemu-guests', '1', '--json');
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, number | null>);
    expect(lines.map((line) => line.fds)).toEqual([5, 10]);
    for (const line of lines) {
      expect(Object.keys(line).sort()).toEqual(KEYS);
      for (const key of ['floorMs', 'collectMs', 'serializeJsonMs', 'serializeProtoMs', 'serializeFastJsonMs', 'serializeFastProtoMs', 'collectPerVmMs', 'allocatedBytesPerCycle', 'aggregatedCollectMs', 'aggregatedSerializeProtoMs', 'protoBytesPerExport', 'jsonBytesPerExport', 'prometheusTextMs', 'prometheusGzipMs']) {
        expect(line[key], key).toBeGreaterThan(0);
      }
      // Each stage over the floor timed in its own round.
      const floors = line.roundFloorsMs as unknown as Record<string, [number, number | null]>;
      expect(line.collectOverFloor).toBeCloseTo(line.collectMs! / floors.collectMs![0], 9);
      expect(line.serializeOverFloor).toBeCloseTo(line.serializeProtoMs! / floors.serializeProtoMs![0], 9);
      expect(line.fastProtoOverFloor).toBeCloseTo(line.serializeFastProtoMs! / floors.serializeFastProtoMs![0], 9);
      expect(line.fastJsonOverFloor).toBeCloseTo(line.serializeFastJsonMs! / floors.serializeFastJsonMs![0], 9);
      // The same series in both encodings: JSON spells out what protobuf packs.
      expect(line.jsonBytesPerExport).toBeGreaterThan(line.protoBytesPerExport!);
      expect(line.prometheusTextOverFloor).toBeCloseTo(line.prometheusTextMs! / floors.prometheusTextMs![0], 9);
      // Text compresses: fewer gzip bytes than text bytes, and neither empty.
      expect(line.prometheusGzipBytes).toBeGreaterThan(0);
      expect(line.prometheusGzipBytes).toBeLessThan(line.prometheusBytes!);
      expect(line.collectPerVmMs).toBeCloseTo(line.collectMs! / (line.fds! / 5), 9);
      expect(Number.isFinite(line.retainedBytesPerFd)).toBe(true);
      // A schedstat file per vCPU: collect() reads each too; one file's read on its own.
      expect(line.schedCollectMs).toBeGreaterThan(0);
      expect(line.schedPerVcpuUs).toBeGreaterThan(0);
      if (qemuAvailable()) expect(line.qmpPerVmMs).toBeGreaterThan(0);
      else expect(line.qmpPerVmMs).toBeNull();
    }
    // Data points per collection: a VM's and 4 vCPUs' per VM, or a VM's and one summed vCPU's.
    const [five, ten] = lines;
    expect([ten!.points, ten!.aggregatedPoints]).toEqual([2 * five!.points!, 2 * five!.aggregatedPoints!]);
    const perVcpu = (five!.points! - five!.aggregatedPoints!) / 3;
    expect(Number.isInteger(perVcpu) && perVcpu > 0).toBe(true);
    expect(five!.aggregatedPoints! - perVcpu).toBeGreaterThan(0); // the VM's own
  });

  it('prints a Markdown table, says why QMP was not measured, and reuses or renews data points on request', () => {
    const result = run('--sizes', '5', '--iterations', '2', '--qemu-guests', '0', '--data-points', 'new');
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^\d+ CPUs \(.*\), Linux .*, Node\.js v\d+.*; VMs of 4 vCPUs; idle VMs; a new data point per collection; median/);
    expect(lines[2]).toMatch(/^\| stats fds \(VMs\) \| pread floor ms \| collect\(\) ms \|/);
    expect(lines[4]).toMatch(/^\| 5 \(1\) \| [\d.]+ \([\d.]+–[\d.]+\) \|.* \| n\/a \| n\/a \|/);
    expect(result.stderr).toBe('kvm-stats-otel: QMP query-stats not measured: no QEMU guests asked for\n');
  });

  it('measures a sustained load: collections at a fixed rate and the CPU they took', () => {
    const result = run('--sustained', '--fds', '10', '--hz', '20', '--seconds', '1', '--json');
    expect(result.code, result.stderr).toBe(0);
    const sustained = JSON.parse(result.stdout) as { fds: number; hz: number; collections: number; missed: number; cpuPercentOfOneCore: number; collectMs: { median: number } };
    expect(sustained).toMatchObject({ fds: 10, hz: 20 });
    expect(sustained.collections + sustained.missed).toBeGreaterThan(0);
    expect(sustained.collections + sustained.missed).toBeLessThanOrEqual(20);
    expect(sustained.cpuPercentOfOneCore).toBeGreaterThan(0);
    expect(sustained.collectMs.median).toBeGreaterThan(0);
  });

  it('--busy: every vCPU block changed between timed collections, against none of an idle fleet', () => {
    const [busy, idle] = [['--busy'], []].map((extra) => {
      const result = run('--sizes', '10', '--iterations', '2', '--qemu-guests', '0', '--json', ...extra);
      expect(result.code, result.stderr).toBe(0);
      return JSON.parse(result.stdout) as { busy: boolean; changedBlocks: number; floorCompareMs: number };
    });
    // 2 VMs x 4 vCPUs: at least the 8 vCPU blocks of 10 (a VM's own stats may not move).
    expect(busy!.busy).toBe(true);
    expect(busy!.changedBlocks).toBeGreaterThanOrEqual(0.8);
    expect(idle!).toMatchObject({ busy: false, changedBlocks: 0 });
    expect(busy!.floorCompareMs).toBeGreaterThan(0);
  });

  it('rejects sizes a fleet cannot have, in one line with exit code 2', () => {
    const odd = run('--sizes', '7');
    expect(odd.code).toBe(2);
    expect(odd.stderr).toBe('kvm-stats-otel: --sizes: 7 is not a multiple of 5 (each VM has a stats fd, and so has each of its 4 vCPUs)\n');
    const words = run('--sizes', 'many');
    expect(words.code).toBe(2);
    expect(words.stderr).toMatch(/^kvm-stats-otel: option '--sizes <list>' argument 'many' is invalid\. expected stats fd counts/);
    // Found by the run that starts again with --expose-gc: its exit code and one line, as is.
    const tooMany = run('--sizes', '25000');
    expect(tooMany.code).toBe(2);
    expect(tooMany.stderr).toMatch(/^kvm-stats-otel: option '--sizes <list>' argument '25000' is invalid/);
    const beyondLimit = run('--sizes', '19995', '--qemu-guests', '0', '--json');
    expect(beyondLimit.code).toBe(2);
    expect(beyondLimit.stderr).toMatch(/^kvm-stats-otel: VM fleet: 3999 VMs x 4 vCPUs need 20001 fds but the open-file limit is \d+ with \d+ open: raise it \(ulimit -n\) or make fewer\n$/);
    const busySustained = run('--sustained', '--busy', '--fds', '10');
    expect(busySustained.code).toBe(2);
    expect(busySustained.stderr).toMatch(/^kvm-stats-otel: --busy: not with --sustained /);
    const sustained = run('--sustained', '--fds', '13', '--vcpus', '2');
    expect(sustained.code).toBe(2);
    expect(sustained.stderr).toMatch(/^kvm-stats-otel: --fds: 13 is not a multiple of 3 /);
  });
});

describe('kvm-stats-otel bench --images (stats images in memfds; no KVM needed)', () => {
  it('measures every stage beside both floors, on blocks that change between collections', () => {
    const result = run('--images', '--sizes', '5,10', '--iterations', '3', '--json');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('kvm-stats-otel: QMP query-stats not measured: the fleet is stats images (--images), not VMs\n');
    const lines = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, number | boolean | null>);
    expect(lines.map((line) => line.fds)).toEqual([5, 10]);
    for (const line of lines) {
      expect(Object.keys(line).sort()).toEqual(KEYS);
      expect(line).toMatchObject({ images: true, busy: false, qmpPerVmMs: null });
      // Every block moved to its next snapshot before each timed collection.
      expect(line.changedBlocks).toBe(1);
      for (const key of ['floorMs', 'cFloorMs', 'collectMs', 'agentCycleMs', 'serializeFastProtoMs', 'serializeProtoMs', 'prometheusGzipMs']) expect(line[key], key).toBeGreaterThan(0);
      const n = (key: string) => line[key] as number;
      // Each stage over the floors timed in its own round, both of them measured there.
      const floors = line.roundFloorsMs as unknown as Record<string, [number, number | null]>;
      const stages = { agentCycle: 'agentCycleMs', collect: 'collectMs', fastProto: 'serializeFastProtoMs', fastJson: 'serializeFastJsonMs', serialize: 'serializeProtoMs', prometheusText: 'prometheusTextMs', prometheusGzip: 'prometheusGzipMs' };
      for (const [stage, ms] of Object.entries(stages)) {
        const [koffi, c] = floors[ms]!;
        expect(koffi, ms).toBeGreaterThan(0);
        expect(c, ms).toBeGreaterThan(0);
        expect(n(`${stage}OverFloor`), stage).toBeCloseTo(n(ms) / koffi, 9);
        expect(n(`${stage}OverCFloor`), stage).toBeCloseTo(n(ms) / c!, 9);
      }
    }
    // The recording's shape: per VM a VM fd and 4 vCPU fds, twice the VMs twice the points.
    const [five, ten] = lines;
    expect(ten!.points).toBe(2 * (five!.points as number));
    expect(ten!.protoBytesPerExport).toBeGreaterThan(five!.protoBytesPerExport as number);
  });

  it('prints the stages table: each stage over the koffi and the C floor, a column per size', () => {
    const result = run('--images', '--sizes', '5', '--iterations', '2');
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/; VMs of 4 vCPUs; stats images in memfds, not KVM fds /);
    const stages = lines.slice(lines.findIndex((line) => line.startsWith('| stage |')));
    expect(stages[0]).toBe('| stage | 5 fds: ms (/ koffi floor / C floor) |');
    expect(stages.slice(2).map((line) => line.split(' | ')[0])).toEqual([
      '| pread floor, koffi (a call per fd)',
      '| pread floor, C (one call for all)',
      '| collect()',
      '| agent cycle: read + OTLP protobuf',
      '| collect + OTLP protobuf',
      '| collect + OTLP JSON',
      '| collect + Prometheus text',
      '| collect + Prometheus text + gzip',
      '| collect + official OTLP protobuf serializer',
      '| collect + official OTLP JSON serializer',
    ]);
    expect(stages[2]).toMatch(/^\| pread floor, koffi \(a call per fd\) \| [\d.]+ \(1\.00 \/ [\d.]+\) \|$/);
    expect(stages[3]).toMatch(/^\| pread floor, C \(one call for all\) \| [\d.]+ \([\d.]+ \/ 1\.00\) \|$/);
  });

  it('rejects --images with --busy or --sustained, in one line with exit code 2', () => {
    const busy = run('--images', '--busy', '--sizes', '5');
    expect(busy.code).toBe(2);
    expect(busy.stderr).toMatch(/^kvm-stats-otel: --images: not with --busy /);
    const sustained = run('--images', '--sustained', '--fds', '5');
    expect(sustained.code).toBe(2);
    expect(sustained.stderr).toMatch(/^kvm-stats-otel: --images: not with --sustained; use scripts\/measure-agent-otlp\.ts/);
  });
});
