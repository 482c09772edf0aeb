/**
 * The API-only way in: observable counters and gauges generated from the descriptor table on
 * any Meter, fed by one batch callback per collection (one pread per source), so the SDK's
 * Views and the reader's temporality apply. The OpenTelemetry API has no pre-bucketed
 * histogram, so histograms come only through KvmStatsProducer. Stats are selected as the
 * producer selects them (`include`, `exclude`): an excluded stat gets no instrument. Every table
 * of a source is read and observed alike (sources/source.ts): its stats fd, and for a vCPU with
 * its thread's schedstat file, kvm.vcpu.sched.*.
 */
import type { Attributes, BatchObservableCallback, BatchObservableResult, Meter, Observable } from '@opentelemetry/api';
import { ValueType, diag } from '@opentelemetry/api';
import { type SourceTable, type StatsSource, sourceTables } from '../sources/source.js';
import type { DescriptorTable } from '../stats/descriptors.js';
import { u64 } from '../stats/u64.js';
import type { MetricMapping, TableMapping, UnitMode } from './mapping.js';
import { StatSelection, type StatSelectionOptions } from './selection.js';
import { SCOPE_NAME } from './semconv.js';
import { type SourceSet, TableMappings, currentSources, metricKey, sourceAttributes, tableIsRead } from './source-set.js';

export interface KvmStatsInstrumentsOptions extends StatSelectionOptions {
  readonly sources: SourceSet;
  readonly units?: UnitMode;
}

const log = diag.createComponentLogger({ namespace: SCOPE_NAME });

export class KvmStatsInstruments {
  readonly #meter: Meter;
  readonly #sources: SourceSet;
  readonly #mappings: TableMappings;
  readonly #selection: StatSelection;
  /** The selected metrics of each table mapping. */
  readonly #selected = new WeakMap<TableMapping, readonly MetricMapping[]>();
  /** Instruments by metric name, kind and unit; undefined for histograms (not observable). */
  readonly #instruments = new Map<string, Observable | undefined>();
  readonly #callback: BatchObservableCallback = (result) => this.#observe(result);
  readonly #attributes = new WeakMap<StatsSource, Attributes>();
  #registered = new Set<Observable>();
  #closed = false;

  constructor(meter: Meter, options: KvmStatsInstrumentsOptions) {
    this.#meter = meter;
    this.#sources = options.sources;
    this.#mappings = new TableMappings(options.units ?? 'exact');
    this.#selection = new StatSelection(options);
    for (const source of currentSources(this.#sources)) for (const file of sourceTables(source)) this.#instrumentsFor(file);
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

  /** The instruments for the selected metrics of a table of a source; true if any had to be created. */
  #instrumentsFor(file: SourceTable): { metrics: readonly MetricMapping[]; created: boolean } {
    return this.#instrumentsOf(this.#mappings.of(file), file.table);
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
      let attributes = this.#attributes.get(source);
      if (!attributes) this.#attributes.set(source, (attributes = sourceAttributes(source)));
      // Each table of the source: one pread, then its selected stats observed.
      const tables = sourceTables(source);
      for (let t = 0; t < tables.length; t++) {
        const file = tables[t]!;
        const { metrics, created } = this.#instrumentsFor(file);
        grew ||= created;
        if (!tableIsRead(t, metrics.length)) continue;
        try {
          // False: the table has ended (a vCPU thread that exited closed its schedstat).
          if (!file.read()) continue;
        } catch (error) {
          // The source cannot be read in this collection; its other tables wait too.
          log.warn((error as Error).message);
          break;
        }
        for (const metric of metrics) {
          const instrument = this.#instruments.get(metricKey(metric));
          // Instruments made during this callback are registered for the next collection.
          if (instrument && this.#registered.has(instrument)) {
            result.observe(instrument, (u64(file.words, metric.stat.offset >>> 2) * metric.multiplier) / metric.divisor, attributes);
          }
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
