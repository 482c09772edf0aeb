/**
 * KvmStatsProducer: an sdk-metrics MetricProducer over any set of stats sources. Attach it to a
 * reader with the reader's `metricProducers` option.
 *
 * The collection path is built for thousands of fds polled several times a second. What never
 * changes is worked out once: the mapping per descriptor table, a plan per table (where each
 * value sits in the data block, how it is checked and scaled, which metric it feeds), and per
 * source its attributes and start time. A collection is then one pread per source into one
 * shared buffer and, per stat, a few loads from the block's 32-bit words (no parsing, no
 * BigInt) compared with the previous collection's values, and one data point. Every point of a
 * collection has the collection's time as endTime, as the SDK's own points do.
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
import { type Attributes, type HrTime, ValueType, diag } from '@opentelemetry/api';
import { type Resource, emptyResource } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  type CollectionResult,
  type DataPoint,
  DataPointType,
  type Histogram,
  type MetricCollectOptions,
  type MetricData,
  type MetricDescriptor,
  type MetricProducer,
  type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import type { StatsSource } from '../sources/source.js';
import type { DescriptorTable } from '../stats/descriptors.js';
import { type MetricKind, type MetricMapping, type TableMapping, type UnitMode, mapTable } from './mapping.js';
import { ATTR_KVM_VCPU_ID, ATTR_KVM_VM_NAME, ATTR_PROCESS_PID, SCOPE_NAME } from './semconv.js';
import { SCOPE_VERSION } from './version.js';

/** The sources to read: a fixed list, or a function asked at every collection. */
export type SourceSet = Iterable<StatsSource> | (() => Iterable<StatsSource>);

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
}

const TWO_POW_32 = 0x1_0000_0000;
/** A high word at or above this makes the u64 larger than 2^53: no longer exact as a double. */
const INEXACT_HIGH_WORD = 0x20_0000;
const log = diag.createComponentLogger({ namespace: SCOPE_NAME });

type Point = DataPoint<number | Histogram>;

/** Where one metric's data points gather during a collection: one per name, kind and unit. */
interface MetricSlot {
  readonly descriptor: MetricDescriptor;
  readonly kind: MetricKind;
  /** This collection's points, `count` of them (reused arrays may hold more until trimmed). */
  points: Point[];
  count: number;
  /** The MetricData handed out again at every collection (reuseDataPoints). */
  data: MetricData | undefined;
}

/**
 * How one stat of a descriptor table becomes a data point, worked out once per table. This is
 * where a selection of stats (only some metrics) or an aggregation (vCPU series summed per VM)
 * would change what a collection does, without touching the decoding.
 */
interface SeriesPlan {
  readonly mapping: MetricMapping;
  readonly slot: MetricSlot;
  /** Index of the value's low 32-bit word in the data block (offset / 4). */
  readonly word: number;
  /** Index of the series' first value in SourceState.previous: a histogram keeps its buckets
   * there, then its sum. */
  readonly first: number;
  readonly histogram: boolean;
  /** Buckets of a histogram; 1 otherwise. */
  readonly size: number;
  /** Word of the histogram's sum companion; -1 without one. */
  readonly sumWord: number;
  /** A value that goes down was reset (cumulative and peak stats); instant values just change. */
  readonly resets: boolean;
  /** Exported as the difference to the previous collection (sums and histograms under DELTA). */
  readonly delta: boolean;
  /** Values need value * multiplier / divisor. */
  readonly scaled: boolean;
  readonly multiplier: number;
  readonly divisor: number;
}

/** A counter's or gauge's data point, updated in place (reuseDataPoints). Number and histogram
 * points are classes of their own, so that each kind keeps one hidden class in V8. */
class NumberPoint {
  constructor(
    public startTime: HrTime,
    public endTime: HrTime,
    public attributes: Attributes,
    public value: number,
  ) {}
}

/** A histogram's data point, updated in place (reuseDataPoints). */
class HistogramPoint {
  constructor(
    public startTime: HrTime,
    public endTime: HrTime,
    public attributes: Attributes,
    public value: Histogram,
  ) {}
}

/**
 * Where every fd of one data-block size is read: one buffer that stays in the CPU's cache,
 * rather than each file's own. Decoding copies what it needs into SourceState.previous.
 */
interface Scratch {
  readonly words: Uint32Array;
  readonly bytes: Uint8Array;
}

/** The plan of one descriptor table: its series, and how many previous values they keep. */
interface TablePlan {
  readonly series: readonly SeriesPlan[];
  readonly values: number;
}

/** What the producer keeps per source between collections. */
interface SourceState {
  readonly plan: readonly SeriesPlan[];
  readonly scratch: Scratch;
  readonly attributes: Attributes;
  readonly startTime: HrTime;
  /** Start times of series that were reset since the source was first read. */
  resetStarts: (HrTime | undefined)[] | undefined;
  /** The values of the previous collection, decoded, for resets and deltas; zeros before the
   * first (so the first delta covers everything since the start). */
  readonly previous: Float64Array;
  /** The collection that last read the source (0: none yet), and its time in ms. */
  lastCollection: number;
  lastCollectionMs: number;
  /** One data point per series, updated in place (reuseDataPoints only). */
  readonly points: (NumberPoint | HistogramPoint)[] | undefined;
  reportedInexact: boolean;
}

export function millisToHrTime(ms: number): HrTime {
  return setHrTime([0, 0], ms);
}

function setHrTime(time: HrTime, ms: number): HrTime {
  const seconds = Math.floor(ms / 1000);
  time[0] = seconds;
  time[1] = Math.round((ms - seconds * 1000) * 1e6);
  return time;
}

/** Attributes of a source's data points, built once; the source's extra attributes first, so
 * the standard ones win. */
export function sourceAttributes(source: StatsSource): Attributes {
  const attributes: Attributes = { ...source.attributes };
  if (source.pid !== undefined) attributes[ATTR_PROCESS_PID] = source.pid;
  if (source.vmName !== undefined) attributes[ATTR_KVM_VM_NAME] = source.vmName;
  if (source.file.vcpuId !== undefined) attributes[ATTR_KVM_VCPU_ID] = source.file.vcpuId;
  return attributes;
}

const reportedTables = new WeakSet<DescriptorTable>();

/** Says once per descriptor table which stats it skips and why. */
export function reportSkipped(table: DescriptorTable): void {
  if (reportedTables.has(table) || table.skipped.length === 0) return;
  reportedTables.add(table);
  for (const { name, reason } of table.skipped) log.warn(`skipping KVM stat ${name}: ${reason}`);
}

/** The u64 at `word` as a double: exact up to 2^53. */
function u64(words: Uint32Array, word: number): number {
  return words[word]! + words[word + 1]! * TWO_POW_32;
}

export class KvmStatsProducer implements MetricProducer {
  readonly #sources: SourceSet;
  readonly #temporality: AggregationTemporality;
  readonly #units: UnitMode;
  readonly #resource: Resource;
  readonly #reuse: boolean;
  readonly #states = new WeakMap<StatsSource, SourceState>();
  readonly #slots = new Map<string, MetricSlot>();
  readonly #plans = new Map<TableMapping, TablePlan>();
  readonly #scratch = new Map<number, Scratch>();
  /** The sources of the last collection and their states, in order: found again without a
   * WeakMap lookup while the set of sources stays the same. */
  readonly #order: StatsSource[] = [];
  readonly #orderStates: SourceState[] = [];
  /** The sources read by the last collection, in order: which reused points each metric lists. */
  readonly #layout: SourceState[] = [];
  /** Collections so far, and the time of the current and the previous one. Every point of a
   * collection has its time as endTime, as the SDK's own points do. Reused points all hold
   * #now and #previous, which are rolled in place. */
  #collection = 0;
  #nowMs = 0;
  #now: HrTime = [0, 0];
  #previous: HrTime = [0, 0];
  readonly #scope: ScopeMetrics = { scope: { name: SCOPE_NAME, version: SCOPE_VERSION }, metrics: [] };
  /** Values above 2^53 seen so far (exported rounded). */
  inexactValues = 0;

  constructor(options: KvmStatsProducerOptions) {
    this.#sources = options.sources;
    this.#temporality = options.temporality === AggregationTemporality.DELTA ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE;
    this.#units = options.units ?? 'exact';
    this.#resource = options.resource ?? emptyResource();
    this.#reuse = options.reuseDataPoints ?? false;
  }

  get temporality(): AggregationTemporality {
    return this.#temporality;
  }

  async collect(options?: MetricCollectOptions): Promise<CollectionResult> {
    const errors: unknown[] = [];
    const deadline = options?.timeoutMillis !== undefined ? performance.now() + options.timeoutMillis : Infinity;
    this.#tick();
    const reuse = this.#reuse;
    if (!reuse) for (const slot of this.#slots.values()) slot.count = 0;
    const sources = typeof this.#sources === 'function' ? this.#sources() : this.#sources;
    const order = this.#order;
    const orderStates = this.#orderStates;
    const layout = this.#layout;
    let changed = false;
    let outOfTime = false;
    let read = 0;
    let total = 0;
    for (const source of sources) {
      const i = total++;
      // The clock is asked every 16 sources: a deadline is coarse, a clock read is not free.
      if (outOfTime || ((i & 15) === 0 && performance.now() > deadline)) {
        outOfTime = true;
        continue;
      }
      let state = order[i] === source ? orderStates[i]! : undefined;
      if (state === undefined) {
        state = this.#stateOf(source);
        order[i] = source;
        orderStates[i] = state;
      }
      try {
        source.file.readInto(state.scratch.bytes);
      } catch (error) {
        errors.push(error);
        continue;
      }
      this.#emit(state, state.scratch.words);
      if (reuse && layout[read] !== state) {
        layout[read] = state;
        changed = true;
      }
      read++;
    }
    if (order.length > total) {
      order.length = total;
      orderStates.length = total;
    }
    if (reuse && layout.length !== read) {
      layout.length = read;
      changed = true;
    }
    if (changed) this.#arrangeReusedPoints();
    if (outOfTime) {
      errors.push(new Error(`KVM stats collection ran out of time (timeoutMillis ${options?.timeoutMillis}): read ${read} of ${total} sources`));
    }
    return { resourceMetrics: { resource: this.#resource, scopeMetrics: [this.#scopeMetrics()] }, errors };
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

  /** When `state` was last read before this collection: where its deltas start, and a series
   * that was reset. Undefined before its first read. */
  #previousTimeOf(state: SourceState): HrTime | undefined {
    if (state.lastCollection === 0) return undefined;
    if (state.lastCollection === this.#collection - 1) return this.#previous;
    // It missed a collection (a read error, a timeout).
    return millisToHrTime(state.lastCollectionMs);
  }

  #stateOf(source: StatsSource): SourceState {
    let state = this.#states.get(source);
    if (state) return state;
    const { file } = source;
    reportSkipped(file.table);
    const { series: plan, values } = this.#planFor(mapTable(file.table, file.target, this.#units));
    const attributes = sourceAttributes(source);
    const startTime = millisToHrTime(source.startTimeMs);
    state = {
      plan,
      attributes,
      startTime,
      scratch: this.#scratchFor(file.table.dataSize),
      resetStarts: undefined,
      previous: new Float64Array(values),
      lastCollection: 0,
      lastCollectionMs: 0,
      points: this.#reuse ? plan.map((series) => newPoint(series, startTime, this.#now, attributes)) : undefined,
      reportedInexact: false,
    };
    this.#states.set(source, state);
    return state;
  }

  #scratchFor(size: number): Scratch {
    let scratch = this.#scratch.get(size);
    if (!scratch) {
      const words = new Uint32Array(size / 4);
      this.#scratch.set(size, (scratch = { words, bytes: new Uint8Array(words.buffer) }));
    }
    return scratch;
  }

  #planFor(mapping: TableMapping): TablePlan {
    let plan = this.#plans.get(mapping);
    if (plan) return plan;
    const delta = this.#temporality === AggregationTemporality.DELTA;
    let values = 0;
    const series = mapping.metrics.map((metric): SeriesPlan => {
      const histogram = metric.kind === 'histogram';
      const first = values;
      values += histogram ? metric.stat.size + (metric.sumFrom ? 1 : 0) : 1;
      return {
        mapping: metric,
        slot: this.#slotFor(metric),
        word: metric.stat.offset >>> 2,
        first,
        histogram,
        size: metric.stat.size,
        sumWord: metric.sumFrom ? metric.sumFrom.offset >>> 2 : -1,
        resets: metric.stat.type !== 'instant',
        delta: delta && metric.kind !== 'gauge',
        scaled: metric.multiplier !== 1 || metric.divisor !== 1,
        multiplier: metric.multiplier,
        divisor: metric.divisor,
      };
    });
    plan = { series, values };
    this.#plans.set(mapping, plan);
    return plan;
  }

  #slotFor(metric: MetricMapping): MetricSlot {
    const key = `${metric.name}|${metric.kind}|${metric.unit}`;
    let slot = this.#slots.get(key);
    if (!slot) {
      slot = {
        descriptor: {
          name: metric.name,
          description: metric.description,
          unit: metric.unit,
          valueType: metric.integer ? ValueType.INT : ValueType.DOUBLE,
        },
        kind: metric.kind,
        points: [],
        count: 0,
        data: undefined,
      };
      this.#slots.set(key, slot);
    }
    return slot;
  }

  /** Turns one source's freshly read words into data points. */
  #emit(state: SourceState, words: Uint32Array): void {
    const plan = state.plan;
    const previousTime = this.#previousTimeOf(state);
    let inexact = false;
    for (let m = 0; m < plan.length; m++) {
      const series = plan[m]!;
      if (series.histogram ? this.#emitHistogram(state, m, series, words, previousTime) : this.#emitNumber(state, m, series, words, previousTime)) inexact = true;
    }
    if (inexact) this.#reportInexact(state);
    state.lastCollection = this.#collection;
    state.lastCollectionMs = this.#nowMs;
  }

  /** Where series `m` starts before this collection's checks. */
  #startOf(state: SourceState, m: number): HrTime {
    const resetStarts = state.resetStarts;
    return resetStarts === undefined ? state.startTime : (resetStarts[m] ?? state.startTime);
  }

  /** A counter or gauge; true if its value is above 2^53. */
  #emitNumber(state: SourceState, m: number, series: SeriesPlan, words: Uint32Array, previousTime: HrTime | undefined): boolean {
    const w = series.word;
    const high = words[w + 1]!;
    let value = words[w]! + high * TWO_POW_32;
    let start = this.#startOf(state, m);
    if (series.resets) {
      const { previous } = state;
      const before = previous[series.first]!;
      previous[series.first] = value;
      if (value < before) start = this.#resetStart(state, m, previousTime);
      else if (series.delta) value -= before;
    }
    if (series.delta && previousTime !== undefined) start = previousTime;
    if (series.scaled) value = (value * series.multiplier) / series.divisor;
    if (state.points === undefined) {
      addPoint(series.slot, { startTime: start, endTime: this.#now, attributes: state.attributes, value });
    } else {
      const point = state.points[m] as NumberPoint;
      if (point.startTime !== start) point.startTime = start;
      point.value = value;
    }
    return high >= INEXACT_HIGH_WORD;
  }

  /** A histogram: bucket counts, and the companion's value as the sum where there is one. True
   * if a value is above 2^53. */
  #emitHistogram(state: SourceState, m: number, series: SeriesPlan, words: Uint32Array, previousTime: HrTime | undefined): boolean {
    const { previous } = state;
    const { word, first, size, sumWord, delta } = series;
    const point = state.points?.[m] as HistogramPoint | undefined;
    const counts = point !== undefined ? point.value.buckets.counts : new Array<number>(size);
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
    let start = this.#startOf(state, m);
    if (reset) {
      start = this.#resetStart(state, m, previousTime);
      if (delta) {
        // Everything since the reset: the values as read, kept in previous.
        count = 0;
        for (let b = 0, k = first; b < size; b++, k++) count += counts[b] = previous[k]!;
        if (sum !== undefined) sum = previous[first + size]!;
      }
    }
    if (delta && previousTime !== undefined) start = previousTime;
    if (sum !== undefined && series.scaled) sum = (sum * series.multiplier) / series.divisor;
    if (point === undefined) {
      const value: Histogram = { buckets: { boundaries: series.mapping.bounds as number[], counts }, count };
      if (sum !== undefined) value.sum = sum;
      addPoint(series.slot, { startTime: start, endTime: this.#now, attributes: state.attributes, value });
    } else {
      point.value.count = count;
      if (sum !== undefined) point.value.sum = sum;
      if (point.startTime !== start) point.startTime = start;
    }
    return highs >>> 0 >= INEXACT_HIGH_WORD;
  }

  /** Lists every reused point in its metric, in source order. Needed only when the sources
   * read differ from the previous collection's: otherwise the lists already hold these points. */
  #arrangeReusedPoints(): void {
    for (const slot of this.#slots.values()) slot.count = 0;
    for (const state of this.#layout) {
      const points = state.points!;
      for (let m = 0; m < state.plan.length; m++) addPoint(state.plan[m]!.slot, points[m]!);
    }
  }

  /** A value went down: the kernel's stat was reset (root can, through debugfs). The series
   * starts again from the source's previous read. */
  #resetStart(state: SourceState, m: number, previousTime: HrTime | undefined): HrTime {
    // A copy: reused points roll the collection times in place.
    const start: HrTime = previousTime ? [previousTime[0], previousTime[1]] : state.startTime;
    state.resetStarts ??= new Array(state.plan.length);
    state.resetStarts[m] = start;
    return start;
  }

  #reportInexact(state: SourceState): void {
    this.inexactValues++;
    if (state.reportedInexact) return;
    state.reportedInexact = true;
    log.warn(`a KVM stat of ${JSON.stringify(state.attributes)} is above 2^53 and is exported rounded to the nearest double`);
  }

  /** This collection's metrics. New objects, unless data points are reused. */
  #scopeMetrics(): ScopeMetrics {
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

/** Appends this collection's point for one series to its metric. */
function addPoint(slot: MetricSlot, point: Point): void {
  slot.points[slot.count++] = point;
}

/** The data point a series updates in place (reuseDataPoints). */
function newPoint(series: SeriesPlan, startTime: HrTime, endTime: HrTime, attributes: Attributes): NumberPoint | HistogramPoint {
  if (!series.histogram) return new NumberPoint(startTime, endTime, attributes, 0);
  const value: Histogram = { buckets: { boundaries: series.mapping.bounds as number[], counts: new Array<number>(series.size).fill(0) }, count: 0 };
  if (series.sumWord >= 0) value.sum = 0;
  return new HistogramPoint(startTime, endTime, attributes, value);
}
