/**
 * KvmStatsProducer: an sdk-metrics MetricProducer over any set of stats sources. Attach it to a
 * reader with the reader's `metricProducers` option.
 *
 * The collection path is built for thousands of fds polled several times a second. What never
 * changes is worked out once (plan.ts): the mapping per descriptor table, a plan per table
 * (which stats the selection exports, where each value sits in the data block, how it is
 * checked and scaled, which metric it feeds), and per source its tables (its stats fd, a vCPU
 * thread's schedstat), attributes and start time; with VM aggregation, which VM each vCPU
 * belongs to, worked out again only when the set of sources changes. A collection is then, per
 * table of each source, one pread into one of a few shared buffers (a batch of tables read,
 * then their values taken: plan.ts, READ_BATCH) and, per selected stat, a few loads
 * from the block's 32-bit words (no parsing, no BigInt) compared with the previous collection's
 * values as series-rules.ts says, and one data point, written as points.ts writes every point
 * (or one addition to its VM's sums). Every point of a collection has the collection's time as
 * endTime, as the SDK's own points do.
 *
 * Data points. The SDK gives a producer's result no lifetime: InMemoryMetricExporter keeps every
 * result it exported, and a result may still be in use when the next collect() starts. So by
 * default every collect() returns new data point objects, and shares only what is immutable
 * (attributes, start times, bounds, descriptors). With `reuseDataPoints` each series' data point,
 * histogram counts included, is built once and updated in place, and a collection allocates
 * next to nothing; a result is then valid only until the next collect() starts. That holds for
 * readers that serialize while exporting: PeriodicExportingMetricReader (it skips a run while an
 * export is in flight) with the OTLP exporters, which serialize when export() is called, and
 * PrometheusExporter, which serializes each scrape as it collects it.
 */
import { type HrTime, diag } from '@opentelemetry/api';
import { type Resource, emptyResource } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  type CollectionResult,
  type DataPoint,
  DataPointType,
  type Histogram,
  type MetricCollectOptions,
  type MetricData,
  type MetricProducer,
  type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import { sameTables, type StatsSource } from '../sources/source.js';
import { INEXACT_HIGH_WORD as INEXACT, TWO_POW_32 as POW_32, u64 } from '../stats/u64.js';
import { type VcpuAggregation, VCPU_AGGREGATIONS, type VmGroup, VmGroups } from './aggregation.js';
import type { UnitMode } from './mapping.js';
import { type Emitter, type MetricSlot, Planner, READ_BATCH, type SeriesPlan, type SourceState, type TableState } from './plan.js';
import { type Points, addPoint, histogramCounts, millisToHrTime, newPoints, scale, setHrTime, writeHistogram, writeNumber } from './points.js';
import { StatSelection } from './selection.js';
import { type FrameLayout, type FramePairing, POINT_BODY, type WirePoints, pointIndex } from './series-frame.js';
import { SCOPE_NAME } from './semconv.js';
import { counted, pointStart } from './series-rules.js';
import { type SourceSet, currentSources } from './source-set.js';
import { SCOPE_VERSION } from './version.js';

export type { SourceSet } from './source-set.js';

export interface KvmStatsProducerOptions {
  readonly sources: SourceSet;
  /** Cumulative (default) or delta. The SDK does not convert a producer's output, so this
   * producer does; use one producer per reader when temporalities differ. */
  readonly temporality?: AggregationTemporality;
  /** `exact` (default) keeps integers with the exponent in the unit; `base` converts to s, By. */
  readonly units?: UnitMode;
  /** Returned as the resource of collect(); a reader replaces it with its own. */
  readonly resource?: Resource;
  /**
   * Build each series' data point once and update it in place at every collect(), so that
   * polling thousands of fds allocates next to nothing. A result is then valid only until the
   * next collect() starts: use it with readers that serialize while exporting
   * (PeriodicExportingMetricReader with an OTLP exporter, PrometheusExporter), not with
   * InMemoryMetricExporter or anything else that keeps results. Default false.
   */
  readonly reuseDataPoints?: boolean;
  /** Stats to export, as TARGET:STAT patterns with * and ? (`vcpu:halt_*`): per target, only
   * those matched, when a target has any. Default: every stat. A RangeError for a bad pattern. */
  readonly include?: readonly string[];
  /** Stats not to export, as TARGET:STAT patterns (`vcpu:*_hist`), applied after `include`. */
  readonly exclude?: readonly string[];
  /** `none` (default): a series per vCPU. `vm`: one per VM, the vCPUs' values summed (see
   * aggregation.ts: gauges also as their maximum, booleans as the count of vCPUs set). */
  readonly vcpuAggregation?: VcpuAggregation;
  /**
   * The fused path: a KvmOtlpMetricExporter (over http/protobuf or gRPC) that exports this
   * producer's collections. The producer then writes its series straight into the exporter's
   * request bytes rather than into data points, and its collect() result carries its scope
   * with no metrics, which only that exporter reads: give the producer to one reader, last in
   * its metricProducers, whose exporter is this one. A series has a data point only until the
   * frame is laid out with it (reused in place till then, as with reuseDataPoints). Over
   * http/json the producer builds data points as usual.
   */
  readonly pairedExporter?: FramePairing;
}

const log = diag.createComponentLogger({ namespace: SCOPE_NAME });
// The decoding constants (stats/u64.ts) bound to this module's own consts: V8 folds a module's
// own const into the hot loops, while an imported binding is loaded through a cell at every use.
const TWO_POW_32 = POW_32;
const INEXACT_HIGH_WORD = INEXACT;
const BODY = POINT_BODY;

const NO_GROUPS: readonly VmGroup[] = [];

/** Whether a series' values (a histogram's buckets and sum) are the same in `words` as in
 * `previous` (the previous read's, where the series keeps them: resets, histograms). */
function sameAsPrevious(words: Uint32Array, previous: Float64Array, series: SeriesPlan): boolean {
  let i = series.word;
  let k = series.first;
  if (!series.histogram) return u64(words, i) === previous[k];
  for (const end = k + series.size; k < end; k++, i += 2) if (u64(words, i) !== previous[k]) return false;
  return series.sumWord < 0 || u64(words, series.sumWord) === previous[k];
}

export class KvmStatsProducer implements MetricProducer {
  readonly #sources: SourceSet;
  readonly #temporality: AggregationTemporality;
  readonly #resource: Resource;
  readonly #reuse: boolean;
  /** The VMs of the vCPU sources; undefined without VM aggregation. */
  readonly #vms: VmGroups | undefined;
  readonly #planner: Planner;
  /** The planner's metrics, in the order they were first planned. */
  readonly #slots: Map<string, MetricSlot>;
  /** The sources of the last collection and their states (the state of each table read), in
   * order: found again without a WeakMap lookup while the set of sources stays the same. */
  readonly #order: StatsSource[] = [];
  readonly #orderStates: SourceState[] = [];
  /** The state of every table read, source by source (each source's reads, flattened): what a
   * collection walks, rebuilt only when the set of sources or their tables change. */
  #reads: TableState[] = [];
  /** The tables read in the current batch, in order: the k-th read into its buffers[k]. */
  readonly #batch: (TableState | undefined)[] = new Array(READ_BATCH).fill(undefined);
  /** What emitted points in the last collection, in order (sources, then VMs): which reused
   * points each metric lists. */
  readonly #layout: Emitter[] = [];
  /** The layout differs from the previous collection's: the reused points are listed again. */
  #layoutChanged = false;
  /** Collections so far, and the time of the current and the previous one. Every point of a
   * collection has its time as endTime, as the SDK's own points do. Reused points all hold
   * #now and #previous, which are rolled in place. */
  #collection = 0;
  #nowMs = 0;
  #now: HrTime = [0, 0];
  #previous: HrTime = [0, 0];
  readonly #scope: ScopeMetrics = { scope: { name: SCOPE_NAME, version: SCOPE_VERSION }, metrics: [] };
  /** The paired exporter's frame (pairedExporter); undefined on the plain path. */
  readonly #fused: FrameLayout | undefined;
  /** Values above 2^53 seen so far (exported rounded). */
  inexactValues = 0;

  constructor(options: KvmStatsProducerOptions) {
    this.#sources = options.sources;
    this.#temporality = options.temporality === AggregationTemporality.DELTA ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE;
    this.#resource = options.resource ?? emptyResource();
    this.#fused = options.pairedExporter?.pairProducer(this.#scope) as FrameLayout | undefined;
    // Emitters not yet laid out in the frame write into reused points, which the layout reads;
    // they are dropped once it has.
    this.#reuse = (options.reuseDataPoints ?? false) || this.#fused !== undefined;
    const selection = new StatSelection(options);
    const aggregation = options.vcpuAggregation ?? 'none';
    if (!VCPU_AGGREGATIONS.includes(aggregation)) throw new RangeError(`vcpuAggregation must be ${VCPU_AGGREGATIONS.join(' or ')}, not ${JSON.stringify(aggregation)}`);
    const delta = this.#temporality === AggregationTemporality.DELTA;
    // Reused points all end at #now, which #tick rolls in place.
    const pointsEnd = this.#reuse ? this.#now : undefined;
    this.#vms = aggregation === 'vm' ? new VmGroups({ delta, pointsEnd }) : undefined;
    this.#planner = new Planner({ selection, units: options.units ?? 'exact', delta, vms: this.#vms, pointsEnd });
    this.#slots = this.#planner.slots;
  }

  get temporality(): AggregationTemporality {
    return this.#temporality;
  }

  async collect(options?: MetricCollectOptions): Promise<CollectionResult> {
    const errors: unknown[] = [];
    const deadline = options?.timeoutMillis !== undefined ? performance.now() + options.timeoutMillis : Infinity;
    this.#tick();
    const fused = this.#fused;
    if (fused !== undefined) {
      fused.begin();
      fused.frame.setEnd(this.#now);
    }
    const reuse = this.#reuse;
    if (!reuse) for (const slot of this.#slots.values()) slot.count = 0;
    const total = this.#gather();
    const reads = this.#reads;
    const layout = this.#layout;
    const collection = this.#collection;
    this.#layoutChanged = false;
    let sources = 0;
    let read = 0;
    let emitted = 0;
    let failed = false;
    const batch = this.#batch;
    let j = 0;
    let late = false;
    while (j < reads.length && !late) {
      // Each table of each source: one pread into the batch's next buffer (plan.ts, READ_BATCH
      // says why reads come in batches), then the batch's values taken, in the same order.
      let n = 0;
      for (; j < reads.length && n < READ_BATCH; j++) {
        const state = reads[j]!;
        if (state.index === 0) {
          // A source's first table. The clock is asked every 16 sources: a deadline is coarse, a
          // clock read is not free.
          if ((sources & 15) === 0 && performance.now() > deadline) {
            late = true;
            break;
          }
          sources++;
          failed = false;
        } else if (failed) {
          continue;
        }
        try {
          // False: the table has ended (a vCPU thread that exited closed its schedstat); its
          // state goes at the next gather.
          if (!state.file.readInto(state.buffers[n]!.bytes)) continue;
        } catch (error) {
          // The source cannot be read in this collection: said in the result; its other tables wait too.
          errors.push(error);
          failed = true;
          continue;
        }
        // A source counts as read once its first table (its stats fd) is.
        if (state.index === 0) read++;
        batch[n++] = state;
      }
      for (let k = 0; k < n; k++) {
        if (this.#take(batch[k]!, k, collection, emitted)) emitted++;
        batch[k] = undefined;
      }
    }
    // The VMs with a vCPU read in this collection, after every source, in a fixed order.
    for (const group of this.#vms?.live ?? NO_GROUPS) {
      if (group.readIn !== collection) continue;
      if (fused !== undefined && group.wire === undefined) group.points ??= this.#pointsFor(group);
      group.emit(this.#now, this.#nowMs, collection, this.#previousTimeOf(group));
      if (reuse && layout[emitted] !== group) {
        layout[emitted] = group;
        this.#layoutChanged = true;
      }
      emitted++;
    }
    if (reuse && layout.length !== emitted) {
      layout.length = emitted;
      this.#layoutChanged = true;
    }
    if (this.#layoutChanged) {
      if (fused !== undefined) {
        fused.arrange(this.#slots.values(), layout, this.#temporality);
        // Laid out: their points are written in the frame from now on.
        for (let i = 0; i < layout.length; i++) layout[i]!.points = undefined;
      } else {
        this.#arrangeReusedPoints();
      }
    }
    if (late) {
      errors.push(new Error(`KVM stats collection ran out of time (timeoutMillis ${options?.timeoutMillis}): read ${read} of ${total} sources`));
    }
    return { resourceMetrics: { resource: this.#resource, scopeMetrics: [this.#scopeMetrics()] }, errors };
  }

  /** A table's freshly read words (the k-th buffer of its batch): added to its VM's sums, or turned into data points. True when
   * it emitted points (the next entry of the layout). */
  #take(state: TableState, k: number, collection: number, emitted: number): boolean {
    const words = state.buffers[k]!.words;
    const group = state.group;
    if (group !== undefined) {
      if (group.accumulate(state, words, collection)) this.#reportInexact(state);
      state.lastCollection = collection;
      state.lastCollectionMs = this.#nowMs;
      return false;
    }
    let inexact: boolean;
    if (state.wire !== undefined) {
      inexact = this.#emitToFrame(state, state.wire, words, k);
    } else {
      // Paired and not laid out (new, or left out of the last layout): points for the layout to read.
      if (this.#fused !== undefined) state.points ??= this.#pointsFor(state);
      inexact = this.#emit(state, words, k);
    }
    if (inexact) this.#reportInexact(state);
    state.lastCollection = collection;
    state.lastCollectionMs = this.#nowMs;
    // Paired: whether the next collection may compare with this read's values.
    if (this.#fused !== undefined) state.lastExact = !inexact;
    if (this.#reuse && this.#layout[emitted] !== state) {
      this.#layout[emitted] = state;
      this.#layoutChanged = true;
    }
    return true;
  }

  /** Takes this collection's sources in order, finds their states (a WeakMap lookup only where
   * the order differs from the previous collection's) and regroups the VMs when the set changed.
   * Returns how many there are. */
  #gather(): number {
    const sources = currentSources(this.#sources);
    const order = this.#order;
    const orderStates = this.#orderStates;
    let total = 0;
    let changed = false;
    for (const source of sources) {
      const i = total++;
      if (order[i] === source) {
        // Its tables changed since (a vCPU thread's schedstat attached, or closed as the thread exited).
        const state = orderStates[i]!;
        if (!sameTables(source, state.tables)) {
          orderStates[i] = this.#planner.stateOf(source, state);
          changed = true;
        }
        continue;
      }
      order[i] = source;
      orderStates[i] = this.#planner.stateOf(source);
      changed = true;
    }
    if (order.length > total) {
      order.length = total;
      orderStates.length = total;
      changed = true;
    }
    if (changed) {
      this.#reads = orderStates.flatMap((state) => state.reads);
      this.#vms?.regroup(this.#reads);
    }
    return total;
  }

  /** Starts a collection: its number and time. */
  #tick(): void {
    const ms = performance.timeOrigin + performance.now();
    this.#collection++;
    this.#nowMs = ms;
    if (this.#reuse) {
      this.#previous[0] = this.#now[0];
      this.#previous[1] = this.#now[1];
      setHrTime(this.#now, ms);
    } else {
      this.#previous = this.#now;
      this.#now = millisToHrTime(ms);
    }
  }

  /** When a source (or a VM) was last read before this collection: where its deltas start, and
   * a series that was reset. Undefined before its first read. */
  #previousTimeOf(read: { readonly lastCollection: number; readonly lastCollectionMs: number }): HrTime | undefined {
    if (read.lastCollection === 0) return undefined;
    if (read.lastCollection === this.#collection - 1) return this.#previous;
    // It missed a collection (a read error, a timeout).
    return millisToHrTime(read.lastCollectionMs);
  }

  /** Turns one table's freshly read words into data points. True if a value is above 2^53. */
  #emit(state: TableState, words: Uint32Array, k: number): boolean {
    const plan = state.plan.series;
    const previousTime = this.#previousTimeOf(state);
    let inexact = false;
    for (let m = 0; m < plan.length; m++) {
      const series = plan[m]!;
      if (series.histogram ? this.#emitHistogram(state, m, series, words, k, previousTime) : this.#emitNumber(state, m, series, words, previousTime)) inexact = true;
    }
    return inexact;
  }

  /**
   * #emit for a table laid out in the paired exporter's frame. A series exported as read
   * (SeriesPlan.asRead) that was not reset and is below 2^53 takes the short way: its value's
   * words copied into the frame, beside this collection's time; its start is already there
   * (cumulative: it changes only on a reset). Every other series takes #emit's way.
   */
  #emitToFrame(state: TableState, wire: WirePoints, words: Uint32Array, k: number): boolean {
    const plan = state.plan.series;
    const previousTime = this.#previousTimeOf(state);
    const { previous } = state;
    const frame = wire.frame;
    const { offsets, at } = wire;
    // The frame holds the points of the previous read (laid out from them, or written from them
    // since), whose values `previous` keeps; compared only when none was above 2^53, as each
    // read of such a value is counted.
    const compare = state.lastExact;
    let inexact = false;
    for (let m = 0; m < plan.length; m++) {
      const series = plan[m]!;
      const body = offsets[pointIndex(at, m) + BODY]!;
      if (compare && series.compared && sameAsPrevious(words, previous, series)) {
        // The same value, so no reset and the same start: only the time is new.
        frame.timeOnly(body);
        continue;
      }
      if (series.asRead) {
        const w = series.word;
        const low = words[w]!;
        const high = words[w + 1]!;
        if (high < INEXACT_HIGH_WORD) {
          if (!series.resets) {
            frame.numberAsRead(body, low, high);
            continue;
          }
          const value = low + high * TWO_POW_32;
          if (value >= previous[series.first]!) {
            previous[series.first] = value;
            frame.numberAsRead(body, low, high);
            continue;
          }
        }
      }
      if (series.histogram ? this.#emitHistogram(state, m, series, words, k, previousTime) : this.#emitNumber(state, m, series, words, previousTime)) inexact = true;
    }
    return inexact;
  }

  /** A counter or gauge; true if its value is above 2^53. */
  #emitNumber(state: TableState, m: number, series: SeriesPlan, words: Uint32Array, previousTime: HrTime | undefined): boolean {
    const w = series.word;
    const high = words[w + 1]!;
    let value = words[w]! + high * TWO_POW_32;
    let reset = false;
    if (series.resets) {
      const { previous } = state;
      const before = previous[series.first]!;
      previous[series.first] = value;
      reset = value < before;
      if (series.delta) value = counted(value, before, reset);
    }
    const start = pointStart(state, m, series.delta, reset, previousTime);
    writeNumber(state, m, series.slot, start, this.#now, scale(series, value));
    return high >= INEXACT_HIGH_WORD;
  }

  /** A histogram: bucket counts, and the companion's value as the sum where there is one. True
   * if a value is above 2^53. `words` were read into the k-th buffer of the batch. */
  #emitHistogram(state: TableState, m: number, series: SeriesPlan, words: Uint32Array, k: number, previousTime: HrTime | undefined): boolean {
    const { previous } = state;
    const { word, first, size, sumWord, delta } = series;
    const counts = histogramCounts(state, m, size);
    // One pass: decode, keep as previous, look for a bucket that went down (a reset), count.
    let highs = 0;
    let reset = false;
    let count = 0;
    for (let b = 0, i = word, k = first; b < size; b++, i += 2, k++) {
      const high = words[i + 1]!;
      highs |= high;
      const value = words[i]! + high * TWO_POW_32;
      const before = previous[k]!;
      previous[k] = value;
      if (value < before) reset = true;
      const exported = delta ? value - before : value;
      counts[b] = exported;
      count += exported;
    }
    let sum: number | undefined;
    if (sumWord >= 0) {
      sum = u64(words, sumWord);
      const before = previous[first + size]!;
      previous[first + size] = sum;
      if (sum < before) reset = true;
      else if (delta) sum -= before;
    }
    if (reset && delta) {
      // Counted since the reset: the values as read, kept in previous.
      count = 0;
      for (let b = 0, k = first; b < size; b++, k++) count += counts[b] = previous[k]!;
      if (sum !== undefined) sum = previous[first + size]!;
    }
    const start = pointStart(state, m, delta, reset, previousTime);
    // Cumulative buckets below 2^53 go to a frame as the kernel's bytes.
    writeHistogram(state, m, series, start, this.#now, counts, count, sum, delta || highs >>> 0 >= INEXACT_HIGH_WORD ? undefined : series.bytes![k]);
    return highs >>> 0 >= INEXACT_HIGH_WORD;
  }

  /** Lists every reused point in its metric, in emitter order. Needed only when what emitted
   * differs from the previous collection: otherwise the lists already hold these points. */
  #arrangeReusedPoints(): void {
    for (const slot of this.#slots.values()) slot.count = 0;
    for (const emitter of this.#layout) {
      const points = emitter.points!;
      const slots = emitter.plan.slots;
      for (let j = 0; j < slots.length; j++) addPoint(slots[j]!, points[j]!);
    }
  }

  /** An emitter's reused points (Emitter.points), paired: every collection writes each in full. */
  #pointsFor(emitter: Emitter & { readonly startTime: HrTime }): Points {
    return newPoints(emitter.plan, emitter.startTime, this.#now, emitter.attributes);
  }

  #reportInexact(state: TableState): void {
    this.inexactValues++;
    if (state.reportedInexact) return;
    state.reportedInexact = true;
    log.warn(`a KVM stat of ${JSON.stringify(state.attributes)} is above 2^53 and is exported rounded to the nearest double`);
  }

  /** This collection's metrics. New objects, unless data points are reused. */
  #scopeMetrics(): ScopeMetrics {
    // Paired: the metrics are in the exporter's frame.
    if (this.#fused !== undefined) return this.#scope;
    const metrics: MetricData[] = [];
    for (const slot of this.#slots.values()) {
      if (slot.points.length !== slot.count) slot.points.length = slot.count;
      if (slot.count === 0) continue;
      if (this.#reuse) {
        metrics.push((slot.data ??= this.#metricData(slot)));
      } else {
        metrics.push(this.#metricData(slot));
        // The result owns these points now; the producer keeps none of them.
        slot.points = [];
      }
    }
    if (!this.#reuse) return { scope: this.#scope.scope, metrics };
    this.#scope.metrics = metrics;
    return this.#scope;
  }

  #metricData(slot: MetricSlot): MetricData {
    const base = { descriptor: slot.descriptor, aggregationTemporality: this.#temporality };
    if (slot.kind === 'sum') return { ...base, dataPointType: DataPointType.SUM, isMonotonic: true, dataPoints: slot.points as DataPoint<number>[] };
    if (slot.kind === 'gauge') return { ...base, dataPointType: DataPointType.GAUGE, dataPoints: slot.points as DataPoint<number>[] };
    return { ...base, dataPointType: DataPointType.HISTOGRAM, dataPoints: slot.points as DataPoint<Histogram>[] };
  }
}
