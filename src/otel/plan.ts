/**
 * Planning: everything about a source that is worked out once, so that a collection only reads
 * and decodes. Per descriptor table a plan (which stats the selection exports, where each value
 * sits in the data block, how it is checked and scaled, which metric it feeds), the metrics
 * (slots) those plans feed, the buffer each data-block size is read into, and per source the
 * tables it is read from (sources/source.ts: its stats fd, a vCPU thread's schedstat), each with
 * its attributes, start time and state between collections. Every table is planned alike.
 */
import { type Attributes, type HrTime, ValueType } from '@opentelemetry/api';
import type { MetricDescriptor, MetricData } from '@opentelemetry/sdk-metrics';
import { type SourceTable, type StatsSource, sameTables, sourceTables } from '../sources/source.js';
import type { DescriptorTable } from '../stats/descriptors.js';
import type { Member, VmGroup, VmGroups } from './aggregation.js';
import { type MetricKind, type MetricMapping, type TableMapping, type UnitMode, vmAggregateMappings } from './mapping.js';
import { type Points, type Point, millisToHrTime, newPoints } from './points.js';
import type { StatSelection } from './selection.js';
import type { WirePoints } from './series-frame.js';
import type { SeriesStarts } from './series-rules.js';
import { TableMappings, metricKey, sourceAttributes, tableIsRead } from './source-set.js';

/** Where one metric's data points gather during a collection: one per name, kind and unit. */
export interface MetricSlot {
  readonly descriptor: MetricDescriptor;
  readonly kind: MetricKind;
  /** Its values are integers (ValueType.INT). */
  readonly integer: boolean;
  /** This collection's points, `count` of them (reused arrays may hold more until trimmed). */
  points: Point[];
  count: number;
  /** The MetricData handed out again at every collection (reuseDataPoints). */
  data: MetricData | undefined;
}

/**
 * How one selected stat of a descriptor table is decoded and where its points go, worked out
 * once per table. Stats that the selection excludes have none.
 */
export interface SeriesPlan {
  readonly mapping: MetricMapping;
  /** Its metric; under VM aggregation the summed one. */
  readonly slot: MetricSlot;
  /** Under VM aggregation, a gauge's second metric: the largest vCPU's value. */
  readonly maxSlot: MetricSlot | undefined;
  /** Index of the value's low 32-bit word in the data block (offset / 4). */
  readonly word: number;
  /** Index of the series' first value in the previous values: a histogram keeps its buckets
   * there, then its sum. */
  readonly first: number;
  readonly histogram: boolean;
  /** Buckets of a histogram; 1 otherwise. */
  readonly size: number;
  /** A histogram's buckets in each buffer its table is read into (ReadBuffers; the fused path
   * copies them as they are). */
  readonly bytes: readonly Uint8Array[] | undefined;
  /** Word of the histogram's sum companion; -1 without one. */
  readonly sumWord: number;
  /** A value that goes down was reset (cumulative and peak stats); instant values just change. */
  readonly resets: boolean;
  /** Exported as the difference to the previous collection (sums and histograms under DELTA). */
  readonly delta: boolean;
  /** Under VM aggregation, a boolean counts as 1 when set (any value but 0). */
  readonly boolean: boolean;
  /** Values need value * multiplier / divisor. */
  readonly scaled: boolean;
  /** An integer counter or gauge exported as read (not a delta, not scaled): in a frame, its
   * value's 8 bytes are the kernel's (below 2^53), and its start changes only on a reset. */
  readonly asRead: boolean;
  /** Not a delta, and its previous values kept (resets, histograms): a read of the same values
   * as the previous one gives the same point but for its time. */
  readonly compared: boolean;
  readonly multiplier: number;
  readonly divisor: number;
}

/** The plan of one descriptor table. */
export interface TablePlan {
  /** Tells plans apart in grouping keys. */
  readonly id: number;
  readonly series: readonly SeriesPlan[];
  /** How many previous values the series keep. */
  readonly values: number;
  /** The metric of each data point an emitter of this plan has, in order: per series its slot,
   * then its maxSlot where it has one. */
  readonly slots: readonly MetricSlot[];
}

/** Whatever owns data points for a plan: a source, or a VM's summed vCPUs. */
export interface Emitter {
  readonly plan: TablePlan;
  /** Of every data point it emits. */
  readonly attributes: Attributes;
  /** One data point per entry of plan.slots, updated in place (reuseDataPoints only). Paired
   * with an exporter, only while it has no `wire`: the frame's layout reads them once, and the
   * producer then drops them (rebuilt if it is left out of a layout and emits again). */
  points: Points | undefined;
  /** Paired with an exporter (series-frame.ts): where its points are in the frame, once laid
   * out; its points are written there and not into `points`. */
  wire: WirePoints | undefined;
}

/** A buffer a table is read into, as words and as bytes. */
export interface Scratch {
  readonly words: Uint32Array;
  readonly bytes: Uint8Array;
}

/**
 * How many tables a collection reads before it takes their values: the reads of a batch run
 * back to back, then the JavaScript work on their values. Interleaved one by one, the work
 * after every system call ran slower: by about 1.5 us per fd on the measuring host, whose
 * kernel entries flush the TLB (PTI without PCID); docs/performance.md.
 */
export const READ_BATCH = 32;

/**
 * Where every fd of one data-block size is read: READ_BATCH buffers, the k-th read of a batch
 * into the k-th, the same for every batch so that they stay in the CPU's cache, rather than
 * each file's own. Decoding copies what it needs into SourceState.previous.
 */
export type ReadBuffers = readonly Scratch[];

/** What the producer keeps per table of a source between collections. */
export interface TableState extends Emitter, Member, SeriesStarts {
  /** Where its values are read from, and its place among its source's tables (0: the stats fd). */
  readonly file: SourceTable;
  readonly index: number;
  readonly buffers: ReadBuffers;
  readonly startTime: HrTime;
  /** Start times of series that were reset since the table was first read. */
  resetStarts: (HrTime | undefined)[] | undefined;
  /** The values of the previous collection, decoded, for resets and deltas; zeros before the
   * first (so the first delta covers everything since the start). */
  readonly previous: Float64Array;
  /** Paired with an exporter: no value of the previous read was above 2^53 (each such read is
   * counted), so a series of the same value as in `previous` has its point in the frame
   * already, all but its time. */
  lastExact: boolean;
  /** The collection that last read the source (0: none yet), and its time in ms. */
  lastCollection: number;
  lastCollectionMs: number;
  reportedInexact: boolean;
}

/** What the producer keeps per source: the tables it was planned with (sourceTables), and the
 * state of each that is read, in that order. */
export interface SourceState {
  readonly tables: readonly SourceTable[];
  readonly reads: readonly TableState[];
}

export interface PlannerOptions {
  readonly selection: StatSelection;
  readonly units: UnitMode;
  /** Sums and histograms exported as deltas. */
  readonly delta: boolean;
  /** The VMs vCPU sources are summed into; undefined without VM aggregation. */
  readonly vms: VmGroups | undefined;
  /** The end time of reused data points (the producer rolls it in place); undefined without
   * reuseDataPoints. */
  readonly pointsEnd: HrTime | undefined;
}

/** One producer's plans, slots, read buffers and source states. */
export class Planner {
  /** The metrics, in the order they were first planned: the order of a collection's result. */
  readonly slots = new Map<string, MetricSlot>();
  readonly #options: PlannerOptions;
  readonly #mappings: TableMappings;
  readonly #states = new WeakMap<StatsSource, SourceState>();
  readonly #plans = new Map<TableMapping, TablePlan>();
  readonly #buffers = new Map<number, ReadBuffers>();
  /** Tells this producer's plans apart (TablePlan.id). */
  #planIds = 0;

  constructor(options: PlannerOptions) {
    this.#options = options;
    this.#mappings = new TableMappings(options.units);
  }

  /**
   * A source's state: made at its first collection, and again when its tables changed (a vCPU
   * thread's schedstat attached, or closed when the thread exited) or its VM ended (it left the
   * set of sources with the VM's last vCPU). The state of a table still there is kept, unless
   * its VM ended: then it starts afresh. `before`: the state the caller holds, if any.
   */
  stateOf(source: StatsSource, before: SourceState | undefined = this.#states.get(source)): SourceState {
    if (before && sameTables(source, before.tables) && !before.reads.some((state) => state.group?.ended)) return before;
    const tables = sourceTables(source);
    const attributes = before?.reads[0]?.attributes ?? sourceAttributes(source);
    const reads: TableState[] = [];
    tables.forEach((file, index) => {
      const kept = before?.reads.find((state) => state.file === file);
      if (kept && !kept.group?.ended) {
        reads.push(kept);
        return;
      }
      const aggregated = this.#options.vms !== undefined && file.target === 'vcpu';
      const plan = this.#planFor(file.table, this.#mappings.of(file), aggregated);
      if (tableIsRead(index, plan.series.length)) reads.push(this.#newState(source, file, index, plan, attributes));
    });
    const state: SourceState = { tables, reads };
    this.#states.set(source, state);
    return state;
  }

  #newState(source: StatsSource, file: SourceTable, index: number, plan: TablePlan, attributes: Attributes): TableState {
    const { vms, pointsEnd } = this.#options;
    const startTime = millisToHrTime(source.startTimeMs);
    const group: VmGroup | undefined = vms !== undefined && file.target === 'vcpu' ? vms.groupOf(source, plan, attributes, startTime) : undefined;
    return {
      file,
      index,
      plan,
      attributes,
      startTime,
      buffers: this.#buffersFor(file.table.dataSize),
      resetStarts: undefined,
      previous: new Float64Array(plan.values),
      lastExact: false,
      lastCollection: 0,
      lastCollectionMs: 0,
      // A vCPU summed into its VM has no points of its own.
      points: pointsEnd !== undefined && group === undefined ? newPoints(plan, startTime, pointsEnd, attributes) : undefined,
      reportedInexact: false,
      wire: undefined,
      group,
      stamp: 0,
      departed: false,
    };
  }

  #buffersFor(size: number): ReadBuffers {
    let buffers = this.#buffers.get(size);
    if (!buffers) {
      buffers = Array.from({ length: READ_BATCH }, () => {
        const words = new Uint32Array(size / 4);
        return { words, bytes: new Uint8Array(words.buffer) };
      });
      this.#buffers.set(size, buffers);
    }
    return buffers;
  }

  /** The plan of a table: a series per selected stat (excluded stats get none, so they cost
   * nothing per collection), fed to the summed metrics of its VM when `aggregated`. */
  #planFor(table: DescriptorTable, mapping: TableMapping, aggregated: boolean): TablePlan {
    let plan = this.#plans.get(mapping);
    if (plan) return plan;
    const delta = this.#options.delta;
    const buffers = this.#buffersFor(table.dataSize);
    let values = 0;
    const slots: MetricSlot[] = [];
    const series = this.#options.selection.select(mapping, table).map((metric): SeriesPlan => {
      const histogram = metric.kind === 'histogram';
      const first = values;
      values += histogram ? metric.stat.size + (metric.sumFrom ? 1 : 0) : 1;
      const outputs = aggregated ? vmAggregateMappings(metric) : [{ mapping: metric }];
      const [slot, maxSlot] = outputs.map((output) => this.#slotFor(output.mapping));
      slots.push(slot!, ...(maxSlot ? [maxSlot] : []));
      const gauge = metric.kind === 'gauge';
      const boolean = aggregated && metric.stat.unit === 'boolean';
      // Summed gauges just change: a VM's sum of them has no start to reset.
      const resets = metric.stat.type !== 'instant' && !(aggregated && gauge);
      return {
        mapping: metric,
        slot: slot!,
        maxSlot,
        word: metric.stat.offset >>> 2,
        first,
        histogram,
        size: metric.stat.size,
        bytes: histogram ? buffers.map(({ bytes }) => bytes.subarray(metric.stat.offset, metric.stat.offset + metric.stat.size * 8)) : undefined,
        sumWord: metric.sumFrom ? metric.sumFrom.offset >>> 2 : -1,
        resets,
        delta: delta && !gauge,
        boolean,
        scaled: !boolean && (metric.multiplier !== 1 || metric.divisor !== 1),
        asRead: !histogram && !(delta && !gauge) && !boolean && metric.multiplier === 1 && metric.divisor === 1 && metric.integer,
        compared: !(delta && !gauge) && (histogram || resets),
        multiplier: metric.multiplier,
        divisor: metric.divisor,
      };
    });
    plan = { id: ++this.#planIds, series, values, slots };
    this.#plans.set(mapping, plan);
    return plan;
  }

  #slotFor(metric: MetricMapping): MetricSlot {
    const key = metricKey(metric);
    let slot = this.slots.get(key);
    if (!slot) {
      slot = {
        descriptor: {
          name: metric.name,
          description: metric.description,
          unit: metric.unit,
          valueType: metric.integer ? ValueType.INT : ValueType.DOUBLE,
        },
        kind: metric.kind,
        integer: metric.integer,
        points: [],
        count: 0,
        data: undefined,
      };
      this.slots.set(key, slot);
    }
    return slot;
  }
}
