/**
 * KvmStatsProducer: an sdk-metrics MetricProducer over any set of stats sources. Each collect
 * does one pread per source and turns the block into data points by the table's mapping,
 * which is worked out once per descriptor table. Attach it to a reader with the reader's
 * `metricProducers` option.
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
}

const TWO_POW_32 = 0x1_0000_0000;
const INEXACT_HIGH_WORD = 0x20_0000;
const log = diag.createComponentLogger({ namespace: SCOPE_NAME });

/** Where one metric's data points gather during a collection. */
interface MetricSlot {
  readonly descriptor: MetricDescriptor;
  readonly kind: MetricKind;
  points: DataPoint<number | Histogram>[];
}

/** What the producer keeps per source between collections. */
interface SourceState {
  readonly mapping: TableMapping;
  readonly slots: readonly MetricSlot[];
  readonly attributes: Attributes;
  readonly startTime: HrTime;
  /** Start times of metrics that were reset since the source was first read. */
  resetStarts: (HrTime | undefined)[] | undefined;
  /** The words of the previous collection, for resets and deltas. */
  previous: Uint32Array | undefined;
  previousTime: HrTime | undefined;
  reportedInexact: boolean;
}

export function millisToHrTime(ms: number): HrTime {
  const seconds = Math.floor(ms / 1000);
  return [seconds, Math.round((ms - seconds * 1000) * 1e6)];
}

function nowHrTime(): HrTime {
  return millisToHrTime(performance.timeOrigin + performance.now());
}

/** Attributes of a source's data points, built once. */
export function sourceAttributes(source: StatsSource): Attributes {
  const attributes: Attributes = {};
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

export class KvmStatsProducer implements MetricProducer {
  readonly #sources: SourceSet;
  readonly #delta: boolean;
  readonly #units: UnitMode;
  readonly #resource: Resource;
  readonly #states = new WeakMap<StatsSource, SourceState>();
  readonly #slots = new Map<string, MetricSlot>();
  /** Values above 2^53 seen so far (exported rounded). */
  inexactValues = 0;

  constructor(options: KvmStatsProducerOptions) {
    this.#sources = options.sources;
    this.#delta = options.temporality === AggregationTemporality.DELTA;
    this.#units = options.units ?? 'exact';
    this.#resource = options.resource ?? emptyResource();
  }

  get temporality(): AggregationTemporality {
    return this.#delta ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE;
  }

  async collect(options?: MetricCollectOptions): Promise<CollectionResult> {
    const errors: unknown[] = [];
    const deadline = options?.timeoutMillis !== undefined ? performance.now() + options.timeoutMillis : Infinity;
    for (const slot of this.#slots.values()) slot.points = [];
    const sources = typeof this.#sources === 'function' ? this.#sources() : this.#sources;
    let read = 0;
    let total = 0;
    for (const source of sources) {
      total++;
      if (performance.now() > deadline) continue;
      const state = this.#stateOf(source);
      try {
        source.file.read();
      } catch (error) {
        errors.push(error);
        continue;
      }
      this.#emit(state, source.file.words, nowHrTime());
      read++;
    }
    if (read + errors.length < total) {
      errors.push(new Error(`KVM stats collection ran out of time (timeoutMillis ${options?.timeoutMillis}): read ${read} of ${total} sources`));
    }
    return {
      resourceMetrics: {
        resource: this.#resource,
        scopeMetrics: [{ scope: { name: SCOPE_NAME, version: SCOPE_VERSION }, metrics: this.#metricData() }],
      },
      errors,
    };
  }

  #stateOf(source: StatsSource): SourceState {
    let state = this.#states.get(source);
    if (state) return state;
    const { file } = source;
    reportSkipped(file.table);
    const mapping = mapTable(file.table, file.target, this.#units);
    state = {
      mapping,
      slots: mapping.metrics.map((metric) => this.#slotFor(metric)),
      attributes: sourceAttributes(source),
      startTime: millisToHrTime(source.startTimeMs),
      resetStarts: undefined,
      previous: undefined,
      previousTime: undefined,
      reportedInexact: false,
    };
    this.#states.set(source, state);
    return state;
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
      };
      this.#slots.set(key, slot);
    }
    return slot;
  }

  /** Turns one source's freshly read words into data points. */
  #emit(state: SourceState, words: Uint32Array, now: HrTime): void {
    const { previous, previousTime, attributes } = state;
    const metrics = state.mapping.metrics;
    const delta = this.#delta;
    let inexact = false;
    for (let m = 0; m < metrics.length; m++) {
      const metric = metrics[m]!;
      const stat = metric.stat;
      const w = stat.offset >>> 2;
      let start = state.resetStarts?.[m] ?? state.startTime;
      let reset = false;
      if (metric.kind !== 'histogram') {
        const high = words[w + 1]!;
        inexact ||= high >= INEXACT_HIGH_WORD;
        let value = words[w]! + high * TWO_POW_32;
        if (previous !== undefined && stat.type !== 'instant') {
          const before = previous[w]! + previous[w + 1]! * TWO_POW_32;
          reset = value < before;
          if (delta && metric.kind === 'sum' && !reset) value -= before;
        }
        if (reset) start = this.#resetStart(state, m, previousTime!);
        if (delta && metric.kind === 'sum' && previousTime !== undefined) start = previousTime;
        state.slots[m]!.points.push({ startTime: start, endTime: now, attributes, value: (value * metric.multiplier) / metric.divisor });
        continue;
      }
      // A histogram: bucket counts, and the companion's value as the sum where there is one.
      const size = stat.size;
      const counts = new Array<number>(size);
      for (let b = 0, i = w; b < size; b++, i += 2) {
        const high = words[i + 1]!;
        inexact ||= high >= INEXACT_HIGH_WORD;
        counts[b] = words[i]! + high * TWO_POW_32;
      }
      const s = metric.sumFrom ? metric.sumFrom.offset >>> 2 : -1;
      let sum = s < 0 ? undefined : words[s]! + words[s + 1]! * TWO_POW_32;
      if (previous !== undefined) {
        for (let b = 0, i = w; b < size && !reset; b++, i += 2) reset = counts[b]! < previous[i]! + previous[i + 1]! * TWO_POW_32;
        if (sum !== undefined && sum < previous[s]! + previous[s + 1]! * TWO_POW_32) reset = true;
        if (reset) {
          start = this.#resetStart(state, m, previousTime!);
        } else if (delta) {
          for (let b = 0, i = w; b < size; b++, i += 2) counts[b]! -= previous[i]! + previous[i + 1]! * TWO_POW_32;
          if (sum !== undefined) sum -= previous[s]! + previous[s + 1]! * TWO_POW_32;
        }
      }
      if (delta && previousTime !== undefined) start = previousTime;
      let count = 0;
      for (let b = 0; b < size; b++) count += counts[b]!;
      const value: Histogram = { buckets: { boundaries: metric.bounds as number[], counts }, count };
      if (sum !== undefined) value.sum = (sum * metric.multiplier) / metric.divisor;
      state.slots[m]!.points.push({ startTime: start, endTime: now, attributes, value });
    }
    if (inexact) this.#reportInexact(state);
    if (state.previous === undefined) state.previous = new Uint32Array(words.length);
    state.previous.set(words);
    state.previousTime = now;
  }

  /** A value went down: the kernel's stat was reset (root can, through debugfs). */
  #resetStart(state: SourceState, metric: number, previousTime: HrTime): HrTime {
    state.resetStarts ??= new Array(state.mapping.metrics.length);
    state.resetStarts[metric] = previousTime;
    return previousTime;
  }

  #reportInexact(state: SourceState): void {
    this.inexactValues++;
    if (state.reportedInexact) return;
    state.reportedInexact = true;
    log.warn(`a KVM stat of ${JSON.stringify(state.attributes)} is above 2^53 and is exported rounded to the nearest double`);
  }

  #metricData(): MetricData[] {
    const temporality = this.temporality;
    const out: MetricData[] = [];
    for (const slot of this.#slots.values()) {
      if (slot.points.length === 0) continue;
      const base = { descriptor: slot.descriptor, aggregationTemporality: temporality };
      if (slot.kind === 'sum') {
        out.push({ ...base, dataPointType: DataPointType.SUM, isMonotonic: true, dataPoints: slot.points as DataPoint<number>[] });
      } else if (slot.kind === 'gauge') {
        out.push({ ...base, dataPointType: DataPointType.GAUGE, dataPoints: slot.points as DataPoint<number>[] });
      } else {
        out.push({ ...base, dataPointType: DataPointType.HISTOGRAM, dataPoints: slot.points as DataPoint<Histogram>[] });
      }
    }
    return out;
  }
}
