/** `kvm-stats-otel bench`: the collection path against the pread floor and QMP query-stats. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Command, Option } from 'commander';
import { exposedGc } from '../bench/memory.js';
import { stagesTable, sustainedText, tableHeader, tableRow } from '../bench/report.js';
import { type SizeResult, benchLine, machineDescription, runBenchmark } from '../bench/run.js';
import { runSustained } from '../bench/sustained.js';
import { UsageError } from './usage-error.js';
import { integerOption, sizesOption } from './flags.js';

interface BenchOptions {
  sizes: number[];
  vcpus: number;
  iterations?: number;
  dataPoints: 'reused' | 'new';
  qemuGuests: number;
  json?: boolean;
  busy?: boolean;
  images?: boolean;
  sustained?: boolean;
  fds: number;
  hz: number;
  seconds: number;
}

/** Set in the copy of the process that bench starts with --expose-gc. */
const REEXEC_ENV = 'KVM_STATS_OTEL_BENCH_GC';

export function benchCommand(): Command {
  return new Command('bench')
    .description('benchmark collection from VMs made here (or stats images: --images): pread floor, collect(), OTLP serialization, QMP query-stats, memory')
    .option('--sizes <list>', 'numbers of stats fds, each a multiple of 1 + vCPUs per VM', sizesOption, [50, 500, 2500, 10_000])
    .option('--vcpus <n>', 'vCPUs per VM', integerOption(1, 64), 4)
    .option('--iterations <n>', 'runs of every figure (default: as many as fit about 3 s, at least 21)', integerOption(1, 100_000))
    .addOption(new Option('--data-points <mode>', 'reused: KvmStatsProducer reuseDataPoints; new: a new data point per collection').choices(['reused', 'new']).default('reused'))
    .option('--qemu-guests <n>', 'QEMU guests to time QMP query-stats on (0 skips it)', integerOption(0, 16), 2)
    .option('--json', 'print one JSON line per size')
    .option('--busy', 'busy VMs: every vCPU runs a guest to its next halt before each timed collection (untimed), on a few threads taking turns')
    .option('--images', 'read stats images in memfds (the shipped recording\'s VM, cloned; values move between collections) instead of VMs: for hosts without /dev/kvm')
    .option('--sustained', 'instead: collect --fds stats fds at --hz for --seconds and report the CPU used')
    .option('--fds <n>', 'stats fds of --sustained', integerOption(1, 20_000), 10_000)
    .option('--hz <n>', 'collections per second of --sustained', integerOption(1, 1000), 10)
    .option('--seconds <n>', 'duration of --sustained', integerOption(1, 3600), 60)
    .action(async (options: BenchOptions) => {
      await bench(options);
    });
}

function checkShape(fds: number, vcpus: number, option: string): void {
  if (fds % (1 + vcpus) !== 0) {
    throw new UsageError(`${option}: ${fds} is not a multiple of ${1 + vcpus} (each VM has a stats fd, and so has each of its ${vcpus} vCPUs)`);
  }
}

async function bench(options: BenchOptions): Promise<void> {
  const reuseDataPoints = options.dataPoints === 'reused';
  const mode = reuseDataPoints ? 'data points reused in place (reuseDataPoints)' : 'a new data point per collection';
  if (options.images && options.busy) throw new UsageError('--images: not with --busy (images have no guests to run; their values move at every collection anyway)');
  if (options.images && options.sustained) throw new UsageError('--images: not with --sustained; use scripts/measure-agent-otlp.ts --fleet images');
  if (options.sustained) {
    checkShape(options.fds, options.vcpus, '--fds');
    // Guests running in this process would be counted as its CPU: a busy sustained load is
    // scripts/measure-agent-otlp.ts --busy, whose guests run in another process.
    if (options.busy) throw new UsageError('--busy: not with --sustained (its guests would count as the CPU measured); use scripts/measure-agent-otlp.ts --busy');
    const result = await runSustained({ fds: options.fds, vcpus: options.vcpus, hz: options.hz, seconds: options.seconds, reuseDataPoints });
    if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else process.stdout.write(`${machineDescription()}; VMs of ${options.vcpus} vCPUs; ${mode}; idle VMs\n${sustainedText(result)}`);
    return;
  }
  for (const fds of options.sizes) checkShape(fds, options.vcpus, '--sizes');
  // Retained memory needs a full garbage collection on demand: run again with --expose-gc.
  if (!exposedGc()) return reexecWithGc();
  if (!options.json) {
    const fleet = options.images
      ? 'stats images in memfds, not KVM fds (values moved before each timed collection)'
      : options.busy
        ? 'busy VMs (every vCPU ran its guest to a halt before each timed collection)'
        : 'idle VMs';
    process.stdout.write(`${machineDescription()}; VMs of ${options.vcpus} vCPUs; ${fleet}; ${mode}; median (10th–90th percentile)\n\n${tableHeader()}`);
  }
  const results: SizeResult[] = [];
  await runBenchmark(
    { sizes: options.sizes, vcpus: options.vcpus, iterations: options.iterations, reuseDataPoints, qemuGuests: options.qemuGuests, busy: options.busy === true, images: options.images === true },
    (result) => {
      results.push(result);
      if (options.json) process.stdout.write(`${JSON.stringify(benchLine(result))}\n`);
      else process.stdout.write(tableRow(result));
    },
    (skipped) => process.stderr.write(`kvm-stats-otel: QMP query-stats not measured: ${skipped}\n`),
  );
  if (!options.json) {
    const cFloor = results.find((result) => 'skipped' in result.cFloor)?.cFloor as { skipped: string } | undefined;
    if (cFloor) process.stderr.write(`kvm-stats-otel: C pread floor not measured: ${cFloor.skipped}\n`);
    process.stdout.write(`\nEvery stage per collection, median ms (over the koffi pread floor / over the C pread floor):\n\n${stagesTable(results)}`);
  }
}

async function reexecWithGc(): Promise<void> {
  if (process.env[REEXEC_ENV]) throw new Error('bench needs node --expose-gc, and starting node with it did not work');
  const child = spawn(process.execPath, ['--expose-gc', ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, [REEXEC_ENV]: '1' },
  });
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  if (signal !== null) throw new Error(`bench (run again with --expose-gc) was killed by ${signal}`);
  // The run has said everything, errors included: end with its exit code (2 for usage errors).
  if (code !== 0) process.exit(code ?? 1);
}
