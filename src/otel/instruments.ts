/**
 * The API-only way in: observable counters and gauges generated from the descriptor table on
 * any Meter, fed by one batch callback per collection (one pread per source), so the SDK's
 * Views and the reader's temporality apply. The OpenTelemetry API has no pre-bucketed
 * histogram, so histograms come only through KvmStatsProducer. Stats are selected as the
 * producer selects them (`include`, `exclude`): an excluded stat gets no instrument. A vCPU
 * with its thread's schedstat file (sources/schedstat.ts) also gets kvm.vcpu.sched.*.
 */
import type { Attributes, BatchObservableCallback, BatchObservableResult, Meter, Observable } from '@opentelemetry/api';
import { ValueType, diag } from '@opentelemetry/api';
import { SCHEDSTAT_TABLE } from '../sources/schedstat.js';
import type { StatsSource } from '../sources/source.js';
import type { DescriptorTable } from '../stats/descriptors.js';
import { type MetricMapping, type TableMapping, type UnitMode, mapTable } from './mapping.js';
import { type SourceSet, currentSources, metricKey, sourceAttributes, tableMapping } from './plan.js';
import { u64 } from './points.js';
import { StatSelection, type StatSelectionOptions } from './selection.js';
import { SCOPE_NAME } from './semconv.js';

export interface KvmStatsInstrumentsOptions extends StatSelectionOptions {
  readonly sources: SourceSet;
  readonly units?: UnitMode;
}

const log = diag.createComponentLogger({ namespace: SCOPE_NAME });

export class KvmStatsInstruments {
  readonly #meter: Meter;
  readonly #sources: SourceSet;
  readonly #units: UnitMode;
  readonly #selection: StatSelection;
  /** The selected metrics of each table mapping. */
  readonly #selected = new WeakMap<TableMapping, readonly MetricMapping[]>();
  /** Instruments by metric name, kind and unit; undefined for histograms (not observable). */
  readonly #instruments = new Map<string, Observable | undefined>();
  readonly #callback: BatchObservableCallback = (result) => this.#observe(result);
  readonly #attributes = new WeakMap<StatsSource, Attributes>();
  /** Where a schedstat file's numbers are read (SCHEDSTAT_TABLE's layout). */
  readonly #schedWords = new Uint32Array(SCHEDSTAT_TABLE.dataSize / 4);
  #registered = new Set<Observable>();
  #closed = false;

  constructor(meter: Meter, options: KvmStatsInstrumentsOptions) {
    this.#meter = meter;
    this.#sources = options.sources;
    this.#units = options.units ?? 'exact';
    this.#selection = new StatSelection(options);
    for (const source of currentSources(this.#sources)) {
      this.#instrumentsFor(source);
      if (source.schedstat !== undefined && source.file.target === 'vcpu') this.#instrumentsOf(mapTable(SCHEDSTAT_TABLE, 'vcpu', this.#units), SCHEDSTAT_TABLE);
    }
    this.#register();
  }

  /** Names of the instruments created so far. */
  get instrumentNames(): string[] {
    return [...this.#instruments.keys()].filter((key) => this.#instruments.get(key)).map((key) => key.split('|')[0]!);
  }

  /** Stops observing; the instruments stay (the API cannot remove them) but report nothing. */
  close(): void {
    this.#closed = true;
    this.#meter.removeBatchObservableCallback(this.#callback, [...this.#registered]);
  }

  #register(): void {
    if (this.#registered.size > 0) this.#meter.removeBatchObservableCallback(this.#callback, [...this.#registered]);
    this.#registered = new Set([...this.#instruments.values()].filter((i): i is Observable => i !== undefined));
    this.#meter.addBatchObservableCallback(this.#callback, [...this.#registered]);
  }

  /** The instruments for a source's metrics; true if any had to be created. */
  #instrumentsFor(source: StatsSource): { metrics: readonly MetricMapping[]; created: boolean } {
    return this.#instrumentsOf(tableMapping(source.file, this.#units), source.file.table);
  }

  /** The instruments for the selected metrics of a table's mapping; true if any had to be created. */
  #instrumentsOf(mapping: TableMapping, table: DescriptorTable): { metrics: readonly MetricMapping[]; created: boolean } {
    let metrics = this.#selected.get(mapping);
    if (!metrics) this.#selected.set(mapping, (metrics = this.#selection.select(mapping, table)));
    let created = false;
    for (const metric of metrics) {
      const key = metricKey(metric);
      if (this.#instruments.has(key)) continue;
      created = true;
      const options = {
        description: metric.description,
        unit: metric.unit,
        valueType: metric.integer ? ValueType.INT : ValueType.DOUBLE,
      };
      this.#instruments.set(
        key,
        metric.kind === 'sum'
          ? this.#meter.createObservableCounter(metric.name, options)
          : metric.kind === 'gauge'
            ? this.#meter.createObservableGauge(metric.name, options)
            : undefined,
      );
    }
    return { metrics, created };
  }

  #observe(result: BatchObservableResult): void {
    if (this.#closed) return;
    let grew = false;
    for (const source of currentSources(this.#sources)) {
      const { metrics, created } = this.#instrumentsFor(source);
      grew ||= created;
      try {
        source.file.read();
      } catch (error) {
        log.warn((error as Error).message);
        continue;
      }
      let attributes = this.#attributes.get(source);
      if (!attributes) this.#attributes.set(source, (attributes = sourceAttributes(source)));
      for (const metric of metrics) {
        const instrument = this.#instruments.get(metricKey(metric));
        // Instruments made during this callback are registered for the next collection.
        if (instrument && this.#registered.has(instrument)) {
          result.observe(instrument, (source.file.value(metric.stat) * metric.multiplier) / metric.divisor, attributes);
        }
      }
      // The vCPU thread's scheduler time, where it has one: one pread of its schedstat file.
      const schedstat = source.schedstat;
      if (schedstat !== undefined && source.file.target === 'vcpu' && schedstat.readInto(this.#schedWords)) {
        const sched = this.#instrumentsOf(mapTable(SCHEDSTAT_TABLE, 'vcpu', this.#units), SCHEDSTAT_TABLE);
        grew ||= sched.created;
        for (const metric of sched.metrics) {
          const instrument = this.#instruments.get(metricKey(metric));
          if (instrument && this.#registered.has(instrument)) result.observe(instrument, (u64(this.#schedWords, metric.stat.offset >>> 2) * metric.multiplier) / metric.divisor, attributes);
        }
      }
    }
    if (grew) queueMicrotask(() => !this.#closed && this.#register());
  }
}

/** Adds observable instruments for every selected stat of `sources` to `meter`; a RangeError
 * for a malformed include or exclude pattern. */
export function observeKvmStats(meter: Meter, options: KvmStatsInstrumentsOptions): KvmStatsInstruments {
  return new KvmStatsInstruments(meter, options);
}
