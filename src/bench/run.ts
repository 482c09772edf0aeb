/**
 * The benchmark of the collection path, per number of stats fds, all in one process and one run
 * so that the ratios compare like with like: the pread floors (koffi, a call per fd; C, one call
 * for all), KvmStatsProducer.collect(), the agent's cycle (read + OTLP protobuf), collect plus
 * OTLP serialization, memory per fd and allocation per collection; the same with vCPU
 * series summed per VM (vcpuAggregation 'vm'), and the data points each makes; collect() with a
 * schedstat file per vCPU (kvm.vcpu.sched.*); and, once per run, QMP query-stats per VM on real
 * QEMU guests. The fleet is VMs made here (/dev/kvm), or with `images` stats images in memfds
 * (images.ts) whose values move between collections, where there is no KVM.
 */
import { cpus, loadavg, release } from 'node:os';
import { JsonMetricsSerializer, ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { VcpuAggregation } from '../otel/aggregation.js';
import { OtlpJsonEncoder } from '../exporters/otlp-json.js';
import { OtlpProtobufEncoder } from '../exporters/otlp-protobuf.js';
import { PROMETHEUS_GZIP_LEVEL, gzipText } from '../exporters/prometheus-exporter.js';
import { PrometheusTextSerializer } from '../exporters/prometheus-text.js';
import { NativeError } from '../native/errors.js';
import { pread } from '../native/libc.js';
import { SCHEDSTAT_TABLE, SchedstatFile } from '../sources/schedstat.js';
import type { StatsSource } from '../sources/source.js';
import { KvmStatsProducer } from '../otel/producer.js';
import { protobufCycle } from './agent-cycle.js';
import { type CFloor, cPreadFloor } from './c-floor.js';
import { VmFleet } from './fleet.js';
import { ImageFleet } from './images.js';
import { allocatedPerRun, retainedMemory } from './memory.js';
import { type QmpResult, measureQmp } from './query-stats-cost.js';
import { type Iterations, type Summary, sample, summarize } from './samples.js';

export interface BenchOptions {
  /** Stats fds per size: each a multiple of 1 + vcpus (a VM's fd and its vCPUs'). */
  readonly sizes: readonly number[];
  readonly vcpus: number;
  /** Exactly this many iterations per figure; default: as many as fit a time budget. */
  readonly iterations?: number | undefined;
  readonly reuseDataPoints: boolean;
  /** QEMU guests to time query-stats on; 0 skips it. */
  readonly qemuGuests: number;
  /** Busy fleets: every vCPU runs its guest (a port write and a halt) before each timed
   * collection, outside its timing, so that every vCPU's data block has changed. */
  readonly busy?: boolean | undefined;
  /** Stats images in memfds (ImageFleet) instead of VMs: for hosts without /dev/kvm. */
  readonly images?: boolean | undefined;
}

/** What the bench reads: a VM fleet or an image fleet. */
type Fleet = VmFleet | ImageFleet;

/** A stage's times, and the medians of both floors timed in the same round, iteration by
 * iteration beside it: its ratios are to these, so that a machine's load in that round falls
 * on both alike (a ratio to another round's floor moved with the load). */
export interface Stage extends Summary {
  readonly floorMs: number;
  /** null where the C floor was not measured. */
  readonly cFloorMs: number | null;
}

export interface SizeResult {
  readonly fds: number;
  readonly vms: number;
  readonly busy: boolean;
  /** Measured on stats images in memfds, not KVM fds. */
  readonly images: boolean;
  /** Share of the data blocks that changed between two collections, as timed. */
  readonly changedBlocks: number;
  readonly floor: Summary;
  /** The same preads from a C loop, one FFI call for all; the reason where not measured. */
  readonly cFloor: Summary | { readonly skipped: string };
  /** The agent's cycle: a collection of the producer beside SDK instruments, and its OTLP
   * protobuf body (agent-cycle.ts). */
  readonly agentCycle: Stage;
  /** The floor, and each block compared with a kept copy of the previous read (copied where it
   * changed): what skipping the decode of unchanged blocks would add to every collection. */
  readonly floorCompare: Summary;
  readonly collect: Stage;
  /** collect() and then the OTLP JSON / protobuf serialization of its result. */
  readonly collectJson: Stage;
  readonly collectProto: Stage;
  /** The same with this package's encoders (the same bytes; the exporters' and the agent's). */
  readonly collectFastJson: Stage;
  readonly collectFastProto: Stage;
  /** Bytes of one export's request body. */
  readonly protoBytes: number;
  readonly jsonBytes: number;
  /** collect() and the Prometheus text of its result (PrometheusTextExporter's), plain and
   * through gzip as a scrape that asks for it gets it; and the bytes of each. */
  readonly collectPrometheus: Stage;
  readonly collectPrometheusGzip: Stage;
  readonly prometheusBytes: number;
  readonly prometheusGzipBytes: number;
  /** Data points of one collection. */
  readonly points: number;
  /** The same with vCPU series summed per VM. */
  readonly aggregated: { readonly points: number; readonly collect: Summary; readonly collectProto: Summary };
  /** collect() with a schedstat file per vCPU, and the reads of those files alone (each a pread
   * and its decoding); null where the open-file limit leaves no room for them. */
  readonly sched: { readonly files: number; readonly collect: Summary; readonly reads: Summary } | null;
  readonly qmp: QmpResult;
  /** Heap and buffers kept per fd after warm-up, without the data buffers (see dataBytesPerFd). */
  readonly retainedBytesPerFd: number;
  /** The data buffers per fd: the file's data block, and the producer's previous values. */
  readonly dataBytesPerFd: number;
  readonly rssBytesPerFd: number;
  readonly allocatedBytesPerCycle: number;
}

/** One JSON line per size: exactly these keys, null where not measured. */
export interface BenchLine {
  fds: number;
  floorMs: number;
  collectMs: number;
  serializeJsonMs: number;
  serializeProtoMs: number;
  collectOverFloor: number;
  serializeOverFloor: number;
  serializeFastJsonMs: number;
  serializeFastProtoMs: number;
  fastProtoOverFloor: number;
  fastJsonOverFloor: number;
  protoBytesPerExport: number;
  jsonBytesPerExport: number;
  qmpPerVmMs: number | null;
  collectPerVmMs: number;
  retainedBytesPerFd: number;
  allocatedBytesPerCycle: number;
  points: number;
  aggregatedPoints: number;
  aggregatedCollectMs: number;
  aggregatedSerializeProtoMs: number;
  prometheusTextMs: number;
  prometheusGzipMs: number;
  prometheusTextOverFloor: number;
  prometheusGzipOverFloor: number;
  prometheusBytes: number;
  prometheusGzipBytes: number;
  /** collect() with a schedstat file per vCPU, and one file's read (pread and decoding). */
  schedCollectMs: number | null;
  schedPerVcpuUs: number | null;
  busy: boolean;
  changedBlocks: number;
  floorCompareMs: number;
  images: boolean;
  cFloorMs: number | null;
  agentCycleMs: number;
  agentCycleOverFloor: number;
  /** Each stage over the C floor; null without one. */
  collectOverCFloor: number | null;
  agentCycleOverCFloor: number | null;
  serializeOverCFloor: number | null;
  fastProtoOverCFloor: number | null;
  fastJsonOverCFloor: number | null;
  prometheusTextOverCFloor: number | null;
  prometheusGzipOverCFloor: number | null;
  /** The floors each stage's ratios are to, [koffi, C] (C null where not measured): those timed
   * in the stage's own round, keyed by the stage's figure (collectMs, agentCycleMs, ...). */
  roundFloorsMs: Record<string, [number, number | null]>;
}

export function benchLine(result: SizeResult): BenchLine {
  const overFloor = (stage: Stage): number => stage.median / stage.floorMs;
  const cFloor = 'skipped' in result.cFloor ? null : result.cFloor.median;
  const overCFloor = (stage: Stage): number | null => (stage.cFloorMs === null ? null : stage.median / stage.cFloorMs);
  return {
    fds: result.fds,
    floorMs: result.floor.median,
    collectMs: result.collect.median,
    serializeJsonMs: result.collectJson.median,
    serializeProtoMs: result.collectProto.median,
    collectOverFloor: overFloor(result.collect),
    serializeOverFloor: overFloor(result.collectProto),
    serializeFastJsonMs: result.collectFastJson.median,
    serializeFastProtoMs: result.collectFastProto.median,
    fastProtoOverFloor: overFloor(result.collectFastProto),
    fastJsonOverFloor: overFloor(result.collectFastJson),
    protoBytesPerExport: result.protoBytes,
    jsonBytesPerExport: result.jsonBytes,
    qmpPerVmMs: 'perVm' in result.qmp ? result.qmp.perVm.median : null,
    collectPerVmMs: result.collect.median / result.vms,
    retainedBytesPerFd: result.retainedBytesPerFd,
    allocatedBytesPerCycle: result.allocatedBytesPerCycle,
    points: result.points,
    aggregatedPoints: result.aggregated.points,
    aggregatedCollectMs: result.aggregated.collect.median,
    aggregatedSerializeProtoMs: result.aggregated.collectProto.median,
    prometheusTextMs: result.collectPrometheus.median,
    prometheusGzipMs: result.collectPrometheusGzip.median,
    prometheusTextOverFloor: overFloor(result.collectPrometheus),
    prometheusGzipOverFloor: overFloor(result.collectPrometheusGzip),
    prometheusBytes: result.prometheusBytes,
    prometheusGzipBytes: result.prometheusGzipBytes,
    schedCollectMs: result.sched ? result.sched.collect.median : null,
    schedPerVcpuUs: result.sched ? (result.sched.reads.median * 1000) / result.sched.files : null,
    busy: result.busy,
    changedBlocks: result.changedBlocks,
    floorCompareMs: result.floorCompare.median,
    images: result.images,
    cFloorMs: cFloor,
    agentCycleMs: result.agentCycle.median,
    agentCycleOverFloor: overFloor(result.agentCycle),
    collectOverCFloor: overCFloor(result.collect),
    agentCycleOverCFloor: overCFloor(result.agentCycle),
    serializeOverCFloor: overCFloor(result.collectProto),
    fastProtoOverCFloor: overCFloor(result.collectFastProto),
    fastJsonOverCFloor: overCFloor(result.collectFastJson),
    prometheusTextOverCFloor: overCFloor(result.collectPrometheus),
    prometheusGzipOverCFloor: overCFloor(result.collectPrometheusGzip),
    roundFloorsMs: Object.fromEntries(
      (
        [
          ['collectMs', result.collect],
          ['agentCycleMs', result.agentCycle],
          ['serializeJsonMs', result.collectJson],
          ['serializeProtoMs', result.collectProto],
          ['serializeFastJsonMs', result.collectFastJson],
          ['serializeFastProtoMs', result.collectFastProto],
          ['prometheusTextMs', result.collectPrometheus],
          ['prometheusGzipMs', result.collectPrometheusGzip],
        ] as const
      ).map(([key, stage]) => [key, [stage.floorMs, stage.cFloorMs]]),
    ),
  };
}

/** The machine, for the report: figures mean little without it. */
export function machineDescription(): string {
  const cpu = cpus();
  return `${cpu.length} CPUs (${cpu[0]?.model ?? 'unknown'}), Linux ${release()}, Node.js ${process.version}, load average ${loadavg()[0]!.toFixed(2)}`;
}

const WARM_UP_COLLECTIONS = 20;
const ALLOCATION_COLLECTIONS = 10;

function iterationsFor(options: BenchOptions, minimum: number, budgetMs: number): Iterations {
  return { fixed: options.iterations, minimum, maximum: 1001, budgetMs };
}

/** A producer over a fleet, with the steps the benchmark times. */
class Subject {
  readonly producer: KvmStatsProducer;
  readonly #fleet: Fleet;
  readonly #buffer: Uint8Array;

  constructor(fleet: Fleet, reuseDataPoints: boolean, vcpuAggregation: VcpuAggregation = 'none') {
    this.#fleet = fleet;
    this.producer = new KvmStatsProducer({ sources: fleet.sources, reuseDataPoints, vcpuAggregation });
    this.#buffer = new Uint8Array(Math.max(...fleet.sources.map((s) => s.file.table.dataSize)));
    this.#scratch = Buffer.alloc(this.#buffer.length);
  }

  readonly #scratch: Buffer;

  /** The floor: the same preads into one buffer, nothing decoded. */
  floor = (): void => {
    const buffer = this.#buffer;
    for (const { file } of this.#fleet.sources) pread(file.fd, buffer, file.table.dataSize, file.header.dataOffset);
  };

  /** Each block as last read by floorCompare. */
  readonly #kept: Buffer[] = [];

  /** The floor with a compare per block against the previous read, and a copy where it changed. */
  floorCompare = (): void => {
    const sources = this.#fleet.sources;
    const kept = this.#kept;
    const scratch = this.#scratch;
    for (let i = 0; i < sources.length; i++) {
      const { file } = sources[i]!;
      const size = file.table.dataSize;
      const block = (kept[i] ??= Buffer.alloc(size));
      pread(file.fd, scratch, size, file.header.dataOffset);
      if (scratch.compare(block, 0, size, 0, size) !== 0) scratch.copy(block, 0, 0, size);
    }
  };

  /** Share of the blocks that differ between two reads with `between` in between. */
  async changedBlocks(between: () => unknown): Promise<number> {
    const read = (): Buffer[] =>
      this.#fleet.sources.map(({ file }) => {
        const block = Buffer.alloc(file.table.dataSize);
        pread(file.fd, block, file.table.dataSize, file.header.dataOffset);
        return block;
      });
    const before = read();
    await between();
    const after = read();
    return after.filter((block, i) => !block.equals(before[i]!)).length / after.length;
  }

  collect = async () => {
    const result = await this.producer.collect();
    if (result.errors.length > 0) throw new Error(`collecting the fleet failed: ${String(result.errors[0])}`);
    return result.resourceMetrics;
  };

  /** Collections whose results are dropped: an awaited value stays referenced by the frame that
   * awaited it, so the caller's frame must not hold the last one while memory is measured. */
  async collectTimes(times: number): Promise<void> {
    for (let i = 0; i < times; i++) await this.collect();
  }

  collectJson = async (): Promise<Uint8Array | undefined> => JsonMetricsSerializer.serializeRequest(await this.collect());
  collectProto = async (): Promise<Uint8Array | undefined> => ProtobufMetricsSerializer.serializeRequest(await this.collect());

  readonly #json = new OtlpJsonEncoder();
  readonly #protobuf = new OtlpProtobufEncoder();

  /** collect() and an encoding, its bytes released at once, as the exporter does once sent.
   * Returns the body's size. */
  collectFastJson = async (): Promise<number> => {
    const bytes = this.#json.encode(await this.collect());
    this.#json.release(bytes);
    return bytes.length;
  };

  collectFastProto = async (): Promise<number> => {
    const bytes = this.#protobuf.encode(await this.collect());
    this.#protobuf.release(bytes);
    return bytes.length;
  };

  readonly #prometheus = new PrometheusTextSerializer();

  /** A scrape's body, chunk by chunk, as the exporter streams it; returns its bytes. */
  collectPrometheus = async (): Promise<number> => {
    let bytes = 0;
    for (const chunk of this.#prometheus.chunks(await this.collect())) {
      bytes += chunk.length;
      this.#prometheus.release(chunk);
    }
    return bytes;
  };

  /** The same through gzip as the exporter makes a scrape's body; returns the compressed bytes. */
  collectPrometheusGzip = async (): Promise<number> => {
    let bytes = 0;
    await gzipText(this.#prometheus, await this.collect(), PROMETHEUS_GZIP_LEVEL, (piece) => (bytes += piece.length));
    return bytes;
  };

  /** Data points of one collection. */
  async points(): Promise<number> {
    return pointsOf(await this.collect());
  }

  /** Bytes of the data buffers: each file's data block and the producer's previous values. */
  get dataBytes(): number {
    return this.#fleet.sources.reduce((sum, { file }) => sum + 2 * file.table.dataSize, 0);
  }
}

function pointsOf(metrics: ResourceMetrics): number {
  return metrics.scopeMetrics.reduce((sum, scope) => sum + scope.metrics.reduce((n, metric) => n + metric.dataPoints.length, 0), 0);
}

/** JIT-compiles the collection and serialization paths on a single VM, so that their code and
 * caches are not counted as memory of the first size. */
async function warmUp(vcpus: number, reuseDataPoints: boolean, images: boolean): Promise<void> {
  const fleet = images ? ImageFleet.create({ vms: 1, vcpus, namePrefix: 'bench-warm-up' }) : VmFleet.create({ vms: 1, vcpus, namePrefix: 'bench-warm-up' });
  const cycle = protobufCycle({ sources: fleet.sources });
  try {
    const subject = new Subject(fleet, reuseDataPoints);
    const aggregated = new Subject(fleet, reuseDataPoints, 'vm');
    const cFloor = cPreadFloor(fleet.sources);
    for (let i = 0; i < WARM_UP_COLLECTIONS; i++) {
      if (fleet instanceof ImageFleet) fleet.step();
      subject.floor();
      if ('run' in cFloor) cFloor.run();
      await cycle.run();
      await subject.collectJson();
      await subject.collectProto();
      await subject.collectFastJson();
      await subject.collectFastProto();
      await aggregated.collectProto();
      await subject.collectPrometheusGzip();
    }
  } finally {
    await cycle.shutdown();
    fleet.close();
  }
}

/** The fleet of a size, as the options ask. */
async function makeFleet(vms: number, options: BenchOptions): Promise<Fleet> {
  if (options.images) return ImageFleet.create({ vms, vcpus: options.vcpus, namePrefix: 'bench' });
  return options.busy ? VmFleet.createBusy({ vms, vcpus: options.vcpus, namePrefix: 'bench' }) : VmFleet.create({ vms, vcpus: options.vcpus, namePrefix: 'bench' });
}

async function measureSize(fds: number, options: BenchOptions, qmp: QmpResult): Promise<SizeResult> {
  const vms = fds / (1 + options.vcpus);
  const before = retainedMemory();
  const busy = options.busy === true;
  const images = options.images === true;
  const fleet = await makeFleet(vms, options);
  try {
    const subject = new Subject(fleet, options.reuseDataPoints);
    const cFloor: CFloor = cPreadFloor(fleet.sources);
    const cFloorRun = 'run' in cFloor ? cFloor.run : () => undefined;
    // A busy fleet's guests take a turn, and an image fleet's blocks move to their next
    // snapshot, before every timed step that decodes (the floors decode nothing), so that the
    // blocks differ from the ones the step read before.
    const floors: readonly (() => unknown)[] = [subject.floor, cFloorRun];
    const untimed = busy || images ? (step: () => unknown) => (floors.includes(step) ? undefined : fleet.step()) : undefined;
    await subject.collectTimes(WARM_UP_COLLECTIONS);
    const after = retainedMemory();
    const allocatedBytesPerCycle = await allocatedPerRun(options.iterations ?? ALLOCATION_COLLECTIONS, subject.collect);
    const changedBlocks = await subject.changedBlocks(() => (busy || images ? fleet.step() : undefined));
    // Every stage in a round with both floors, its ratios to that round's floors.
    const round = async (iterations: Iterations, steps: readonly (() => unknown)[]): Promise<Stage[]> => {
      const [floorTimes, cFloorTimes, ...times] = await sample(iterations, [subject.floor, cFloorRun, ...steps], untimed);
      const floorMs = summarize(floorTimes!).median;
      const cFloorMs = 'run' in cFloor ? summarize(cFloorTimes!).median : null;
      return times.map((stageTimes) => ({ ...summarize(stageTimes), floorMs, cFloorMs }));
    };
    const [floor, cFloorTimes, floorCompare] = await sample(iterationsFor(options, 21, 3000), [subject.floor, cFloorRun, subject.floorCompare], untimed);
    const [collect] = await round(iterationsFor(options, 21, 3000), [subject.collect]);
    // The official serializers each in a round of its own, as an independent run times them: in
    // one round, the garbage of one (hundreds of MB for JSON) was collected on the other's time
    // (docs/performance.md, issue 20).
    const [collectJson] = await round(iterationsFor(options, 11, 3000), [subject.collectJson]);
    const [collectProto] = await round(iterationsFor(options, 11, 3000), [subject.collectProto]);
    // Ours in a round of their own, the same fds.
    const [collectFastJson, collectFastProto] = await round(iterationsFor(options, 21, 3000), [subject.collectFastJson, subject.collectFastProto]);
    const protoBytes = await subject.collectFastProto();
    const jsonBytes = await subject.collectFastJson();
    const [collectPrometheus, collectPrometheusGzip] = await round(iterationsFor(options, 11, 3000), [subject.collectPrometheus, subject.collectPrometheusGzip]);
    // Made after the memory was measured, so that its state is not counted, and timed on its
    // own, so that neither producer runs with the other's state in the CPU's cache.
    const aggregated = new Subject(fleet, options.reuseDataPoints, 'vm');
    await aggregated.collectTimes(WARM_UP_COLLECTIONS);
    const [, aggregatedCollect] = await sample(iterationsFor(options, 21, 3000), [subject.floor, aggregated.collect], untimed);
    const [aggregatedProto] = await sample(iterationsFor(options, 11, 3000), [aggregated.collectProto], untimed);
    // The agent's cycle, made after the memory was measured.
    const cycle = protobufCycle({ sources: fleet.sources });
    let agentCycle: Stage | undefined;
    try {
      for (let i = 0; i < WARM_UP_COLLECTIONS; i++) await cycle.run();
      [agentCycle] = await round(iterationsFor(options, 21, 3000), [cycle.run]);
    } finally {
      await cycle.shutdown();
    }
    const sched = await measureSched(fleet, subject, options);
    const dataBytes = subject.dataBytes;
    return {
      fds,
      vms,
      busy,
      images,
      changedBlocks,
      floorCompare: summarize(floorCompare!),
      floor: summarize(floor!),
      cFloor: 'run' in cFloor ? summarize(cFloorTimes!) : cFloor,
      agentCycle: agentCycle!,
      collect: collect!,
      collectJson: collectJson!,
      collectProto: collectProto!,
      collectFastJson: collectFastJson!,
      collectFastProto: collectFastProto!,
      protoBytes,
      jsonBytes,
      collectPrometheus: collectPrometheus!,
      collectPrometheusGzip: collectPrometheusGzip!,
      prometheusBytes: await subject.collectPrometheus(),
      prometheusGzipBytes: await subject.collectPrometheusGzip(),
      points: await subject.points(),
      aggregated: { points: await aggregated.points(), collect: summarize(aggregatedCollect!), collectProto: summarize(aggregatedProto!) },
      sched,
      qmp,
      retainedBytesPerFd: (after.heapAndBuffers - before.heapAndBuffers - dataBytes) / fds,
      dataBytesPerFd: dataBytes / fds,
      rssBytesPerFd: (after.rss - before.rss) / fds,
      allocatedBytesPerCycle,
    };
  } finally {
    await fleet.close();
  }
}

/**
 * collect() with a schedstat file per vCPU source, as a QEMU with a thread per vCPU has. The
 * fleet's vCPUs are all made by this thread, so each gets a file of its own on this thread's
 * schedstat: the cost is that of the open file's pread and decoding, whichever thread it names.
 * Null when the open-file limit has no room for them. The files go again afterwards.
 */
async function measureSched(fleet: Fleet, subject: Subject, options: BenchOptions): Promise<SizeResult['sched']> {
  const vcpus = fleet.sources.filter((source) => source.file.target === 'vcpu');
  try {
    for (const source of vcpus) source.schedstat = SchedstatFile.open(process.pid, process.pid);
  } catch (error) {
    if (!(error instanceof NativeError && (error.code === 'EMFILE' || error.code === 'ENFILE'))) throw error;
    return null;
  } finally {
    // Without room for all, none: a partial set would measure something else.
    if (vcpus.some((source) => source.schedstat === undefined)) for (const source of vcpus) detach(source);
  }
  const buffer = new Uint8Array(SCHEDSTAT_TABLE.dataSize);
  const reads = (): void => {
    for (const source of vcpus) source.schedstat!.readInto(buffer);
  };
  try {
    await subject.collectTimes(WARM_UP_COLLECTIONS);
    const [, collect, read] = await sample(iterationsFor(options, 21, 3000), [subject.floor, subject.collect, reads]);
    return { files: vcpus.length, collect: summarize(collect!), reads: summarize(read!) };
  } finally {
    for (const source of vcpus) detach(source);
  }
}

function detach(source: StatsSource): void {
  source.schedstat?.close();
  source.schedstat = undefined;
}

/** Runs every size in turn; `report` gets each result as soon as it is measured, `skippedQmp`
 * why QMP was not measured. */
export async function runBenchmark(options: BenchOptions, report: (result: SizeResult) => void, skippedQmp: (reason: string) => void): Promise<void> {
  // A size that cannot be made fails now, not after minutes of the others.
  for (const fds of options.sizes) VmFleet.checkShape(fds / (1 + options.vcpus), options.vcpus, options.busy === true);
  const qmp: QmpResult = options.images
    ? { skipped: 'the fleet is stats images (--images), not VMs' }
    : await measureQmp({ guests: options.qemuGuests, vcpus: options.vcpus, iterations: iterationsFor(options, 21, 3000) });
  if ('skipped' in qmp) skippedQmp(qmp.skipped);
  await warmUp(options.vcpus, options.reuseDataPoints, options.images === true);
  for (const fds of options.sizes) report(await measureSize(fds, options, qmp));
}
