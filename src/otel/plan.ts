/**
 * Planning: everything about a source that is worked out once, so that a collection only reads
 * and decodes. Per descriptor table a plan (which stats the selection exports, where each value
 * sits in the data block, how it is checked and scaled, which metric it feeds), the metrics
 * (slots) those plans feed, the buffer each data-block size is read into, and per source its
 * attributes, start time and state between collections. Also what the observable instruments
 * share with the producer: the source set, the source attributes, the selected metrics of a
 * table and the once-per-table report of skipped stats.
 */
import { type Attributes, type HrTime, ValueType, diag } from '@opentelemetry/api';
import type { MetricDescriptor, MetricData } from '@opentelemetry/sdk-metrics';
import { SCHEDSTAT_TABLE, type SchedstatFile } from '../sources/schedstat.js';
import type { StatsSource } from '../sources/source.js';
import type { DescriptorTable } from '../stats/descriptors.js';
import type { StatsFile } from '../stats/stats-file.js';
import type { Member, VmGroup, VmGroups } from './aggregation.js';
import { type MetricKind, type MetricMapping, type TableMapping, type UnitMode, mapTable, vmAggregateMappings } from './mapping.js';
import { type Points, type Point, millisToHrTime, newPoints } from './points.js';
import type { StatSelection } from './selection.js';
import { ATTR_KVM_VCPU_ID, ATTR_KVM_VCPU_INDEX, ATTR_KVM_VM_NAME, ATTR_KVM_VM_UUID, ATTR_PROCESS_PID, SCOPE_NAME } from './semconv.js';

/** The sources to read: a fixed list, or a function asked at every collection. */
export type SourceSet = Iterable<StatsSource> | (() => Iterable<StatsSource>);

/** The sources of a set for this collection. */
export function currentSources(sources: SourceSet): Iterable<StatsSource> {
  return typeof sources === 'function' ? sources() : sources;
}

const log = diag.createComponentLogger({ namespace: SCOPE_NAME });

/** Attributes of a source's data points, built once; the source's extra attributes first, so
 * the standard ones win. */
export function sourceAttributes(source: StatsSource): Attributes {
  const attributes: Attributes = { ...source.attributes };
  if (source.pid !== undefined) attributes[ATTR_PROCESS_PID] = source.pid;
  if (source.vmName !== undefined) attributes[ATTR_KVM_VM_NAME] = source.vmName;
  if (source.vmUuid !== undefined) attributes[ATTR_KVM_VM_UUID] = source.vmUuid;
  if (source.file.vcpuId !== undefined) attributes[ATTR_KVM_VCPU_ID] = source.file.vcpuId;
  if (source.file.vcpuId !== undefined && source.vcpuIndex !== undefined) attributes[ATTR_KVM_VCPU_INDEX] = source.vcpuIndex;
  return attributes;
}

const reportedTables = new WeakSet<DescriptorTable>();

/** Says once per descriptor table which stats it skips and why. */
export function reportSkipped(table: DescriptorTable): void {
  if (reportedTables.has(table) || table.skipped.length === 0) return;
  reportedTables.add(table);
  for (const { name, reason } of table.skipped) log.warn(`skipping KVM stat ${name}: ${reason}`);
}

/** The mapping of a file's table, after saying once what the table skips. */
export function tableMapping(file: StatsFile, units: UnitMode): TableMapping {
  reportSkipped(file.table);
  return mapTable(file.table, file.target, units);
}

/** Where one metric's data points gather during a collection: one per name, kind and unit. */
export interface MetricSlot {
  readonly descriptor: MetricDescriptor;
  readonly kind: MetricKind;
  /** This collection's points, `count` of them (reused arrays may hold more until trimmed). */
  points: Point[];
  count: number;
  /** The MetricData handed out again at every collection (reuseDataPoints). */
  data: MetricData | undefined;
}

/** The key of a metric's slot or instrument: one per name, kind and unit. */
export function metricKey(metric: MetricMapping): string {
  return `${metric.name}|${metric.kind}|${metric.unit}`;
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
  /** One data point per entry of plan.slots, updated in place (reuseDataPoints only). */
  readonly points: Points | undefined;
}

/**
 * Where every fd of one data-block size is read: one buffer that stays in the CPU's cache,
 * rather than each file's own. Decoding copies what it needs into SourceState.previous.
 */
export interface Scratch {
  readonly words: Uint32Array;
  readonly bytes: Uint8Array;
}

/** What the producer keeps per source between collections. */
export interface SourceState extends Emitter, Member {
  readonly scratch: Scratch;
  readonly startTime: HrTime;
  /** Start times of series that were reset since the source was first read. */
  resetStarts: (HrTime | undefined)[] | undefined;
  /** The values of the previous collection, decoded, for resets and deltas; zeros before the
   * first (so the first delta covers everything since the start). */
  readonly previous: Float64Array;
  /** The collection that last read the source (0: none yet), and its time in ms. */
  lastCollection: number;
  lastCollectionMs: number;
  reportedInexact: boolean;
  /** A vCPU's thread's scheduler time (sources/schedstat.ts), planned as SCHEDSTAT_TABLE: a
   * state of its own, read after the stats fd, with the same attributes; undefined without. */
  sched: SourceState | undefined;
  /** The open schedstat file `sched` reads. */
  schedFile: SchedstatFile | undefined;
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

let planIds = 0;

/** One producer's plans, slots, read buffers and source states. */
export class Planner {
  /** The metrics, in the order they were first planned: the order of a collection's result. */
  readonly slots = new Map<string, MetricSlot>();
  readonly #options: PlannerOptions;
  readonly #states = new WeakMap<StatsSource, SourceState>();
  readonly #plans = new Map<TableMapping, TablePlan>();
  readonly #scratch = new Map<number, Scratch>();

  constructor(options: PlannerOptions) {
    this.#options = options;
  }

  /** A source's state: made at its first collection, and again when its VM ended. */
  stateOf(source: StatsSource): SourceState {
    let state = this.#states.get(source);
    // A vCPU whose VM ended (it left the set of sources with the VM's last vCPU) starts afresh.
    if (state && !state.group?.ended) return state;
    const { file } = source;
    state = this.#newState(source, file.table, tableMapping(file, this.#options.units), sourceAttributes(source));
    this.#states.set(source, state);
    this.syncSched(source, state);
    return state;
  }

  /** Brings a source's scheduler-time state in step with its schedstat file: made when it has
   * one (again after its VM ended), dropped when it closed (its thread exited). True if it changed. */
  syncSched(source: StatsSource, state: SourceState): boolean {
    const file = source.schedstat !== undefined && !source.schedstat.closed && source.file.target === 'vcpu' ? source.schedstat : undefined;
    if (file === state.schedFile && !state.sched?.group?.ended) return false;
    state.schedFile = file;
    const mapping = mapTable(SCHEDSTAT_TABLE, 'vcpu', this.#options.units);
    // With every scheduler stat excluded, the file is not read at all.
    const selected = this.#planFor(SCHEDSTAT_TABLE, mapping, this.#options.vms !== undefined).series.length > 0;
    state.sched = file && selected ? this.#newState(source, SCHEDSTAT_TABLE, mapping, state.attributes) : undefined;
    return true;
  }

  #newState(source: StatsSource, table: DescriptorTable, mapping: TableMapping, attributes: Attributes): SourceState {
    const { vms, pointsEnd } = this.#options;
    const aggregated = vms !== undefined && source.file.target === 'vcpu';
    const plan = this.#planFor(table, mapping, aggregated);
    const startTime = millisToHrTime(source.startTimeMs);
    const group: VmGroup | undefined = aggregated ? vms.groupOf(source, plan, attributes, startTime) : undefined;
    return {
      plan,
      attributes,
      startTime,
      scratch: this.#scratchFor(table.dataSize),
      resetStarts: undefined,
      previous: new Float64Array(plan.values),
      lastCollection: 0,
      lastCollectionMs: 0,
      // A vCPU summed into its VM has no points of its own.
      points: pointsEnd !== undefined && group === undefined ? newPoints(plan, startTime, pointsEnd, attributes) : undefined,
      reportedInexact: false,
      group,
      stamp: 0,
      departed: false,
      sched: undefined,
      schedFile: undefined,
    };
  }

  #scratchFor(size: number): Scratch {
    let scratch = this.#scratch.get(size);
    if (!scratch) {
      const words = new Uint32Array(size / 4);
      this.#scratch.set(size, (scratch = { words, bytes: new Uint8Array(words.buffer) }));
    }
    return scratch;
  }

  /** The plan of a table: a series per selected stat (excluded stats get none, so they cost
   * nothing per collection), fed to the summed metrics of its VM when `aggregated`. */
  #planFor(table: DescriptorTable, mapping: TableMapping, aggregated: boolean): TablePlan {
    let plan = this.#plans.get(mapping);
    if (plan) return plan;
    const delta = this.#options.delta;
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
      return {
        mapping: metric,
        slot: slot!,
        maxSlot,
        word: metric.stat.offset >>> 2,
        first,
        histogram,
        size: metric.stat.size,
        sumWord: metric.sumFrom ? metric.sumFrom.offset >>> 2 : -1,
        // Summed gauges just change: a VM's sum of them has no start to reset.
        resets: metric.stat.type !== 'instant' && !(aggregated && gauge),
        delta: delta && !gauge,
        boolean,
        scaled: !boolean && (metric.multiplier !== 1 || metric.divisor !== 1),
        multiplier: metric.multiplier,
        divisor: metric.divisor,
      };
    });
    plan = { id: ++planIds, series, values, slots };
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
        points: [],
        count: 0,
        data: undefined,
      };
      this.slots.set(key, slot);
    }
    return slot;
  }
}
