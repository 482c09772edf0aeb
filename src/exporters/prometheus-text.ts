/**
 * The Prometheus text exposition of a ResourceMetrics, character for character what
 * @opentelemetry/exporter-prometheus's PrometheusSerializer writes for the same data (names,
 * labels and their order, HELP/UNIT/TYPE lines, target_info, escaping, number formatting,
 * histogram buckets), but written as bytes, in chunks, at a fraction of the cost; label names
 * are valid where that one's are not (prometheus-labels.ts):
 *
 * - Each metric's text is kept from one scrape to the next with where its numbers are
 *   (slot-text.ts): a metric whose series are those of the last scrape (the same attributes
 *   objects in the same places, histograms of the same shape and bounds, the same name, header
 *   and scope labels) has only its values (and timestamps) formatted, in place; its names and
 *   labels are not written again. A metric whose series changed is written anew, its series'
 *   labels rendered once per attributes object (the producer shares one per source across all
 *   its metrics and keeps it for the source's life; the SDK keeps one per series).
 * - The text comes out as a sequence of chunks of at most `chunkBytes`: views of the kept texts,
 *   valid until the next chunks() (the exporter gzips one scrape's before it collects again).
 * - The price is memory: the whole text is kept between scrapes (about 26 KB per stats fd of a
 *   real kernel's layout, 66 MB at 2,500 fds, measured on image fds), and a second buffer of a
 *   metric's size once a value of it changed width.
 *
 * Attributes objects and bounds arrays must not change once their data points are serialized
 * (the SDK and the producer never change them): the rendered labels are those of the first time
 * seen.
 *
 * `unitSuffixes` adds OpenTelemetry's Prometheus-compatibility unit suffixes to names (see
 * prometheus-units.ts) and writes the Prometheus unit in the UNIT line; off, the text is today's.
 */
import { type Attributes, type AttributeValue, type HrTime, diag } from '@opentelemetry/api';
import {
  type DataPoint,
  DataPointType,
  type Histogram,
  type MetricData,
  type ResourceMetrics,
  type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import { prometheusUnit, withUnitSuffix } from '../otel/prometheus-units.js';
import { prometheusLabels } from './prometheus-labels.js';
import { SlotText, boundsHold, patchPointwise } from './slot-text.js';

export interface PrometheusTextOptions {
  /** Prepended to every metric name with an underscore. */
  readonly prefix?: string;
  /** Each sample with its data point's end time in ms. Default false. */
  readonly appendTimestamp?: boolean;
  /** Resource attributes whose names match are added to every series as labels. */
  readonly withResourceConstantLabels?: RegExp;
  /** No otel_scope_* labels. Default false. */
  readonly withoutScopeInfo?: boolean;
  /** No target_info series. Default false. */
  readonly withoutTargetInfo?: boolean;
  /** OpenTelemetry's Prometheus-compatibility unit suffixes (`_seconds`, `_bytes`). Default false. */
  readonly unitSuffixes?: boolean;
}

/** Bytes per chunk unless asked otherwise: large enough that per-chunk costs vanish. */
export const DEFAULT_CHUNK_BYTES = 64 * 1024;
const NO_REGISTERED_METRICS = '# no registered metrics';
const SCOPE_NAME_LABEL = 'otel.scope.name';
const SCOPE_VERSION_LABEL = 'otel.scope.version';
const SCOPE_SCHEMA_URL_LABEL = 'otel.scope.schema_url';

const NEWLINE = 0x0a;
const SPACE = 0x20;
const CLOSE = 0x7d;
const COMMA = 0x2c;

function escapeString(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A label value: strings as they are, anything else as JSON, undefined as empty. */
function escapeLabelValue(value: AttributeValue | undefined = ''): string {
  return escapeString(typeof value === 'string' ? value : JSON.stringify(value)).replace(/"/g, '\\"');
}

/** Characters OpenTelemetry allows in names and Prometheus does not become '_', runs of '_' one. */
function sanitizeName(name: string): string {
  return name.replace(/[^a-z0-9_]/gi, '_').replace(/_{2,}/g, '_');
}

/** `k="v",k2="v2"` (no braces), in the object's own key order, as the official serializer; names
 * as the compatibility specification says (prometheus-labels.ts). */
function renderLabels(labels: Attributes | undefined, into = ''): string {
  if (labels === undefined) return into;
  for (const [name, value] of prometheusLabels(labels)) {
    into += `${into.length > 0 ? ',' : ''}${name}="${escapeLabelValue(value)}"`;
  }
  return into;
}

function typeOf(metric: MetricData): string {
  switch (metric.dataPointType) {
    case DataPointType.SUM:
      return metric.isMonotonic ? 'counter' : 'gauge';
    case DataPointType.GAUGE:
      return 'gauge';
    case DataPointType.HISTOGRAM:
      return 'histogram';
    default:
      return 'untyped';
  }
}

/** As @opentelemetry/core's hrTimeToMilliseconds (not rounded). */
function milliseconds(time: HrTime): number {
  return time[0] * 1e3 + time[1] / 1e6;
}

const encoder = new TextEncoder();

/** A bucket's `le` label value. */
function leOf(bound: number | undefined): string {
  return bound === undefined || bound === Infinity ? '+Inf' : String(bound);
}

/** A value as `${value}` writes it, '+Inf' and '-Inf' for the infinities. */
function valueText(value: number): string {
  return value === Infinity ? '+Inf' : value === -Infinity ? '-Inf' : `${value}`;
}

/** A metric's constant parts, as bytes, kept from one scrape to the next while it is there. */
interface MetricText {
  /** The last scrape that wrote it. */
  scrape: number;
  readonly name: string;
  /** The additional labels hold an `le` (see #ownLeText). */
  readonly ownLe: boolean;
  /** `name{` / `name ` and the same for _count, _sum, _bucket: with and without labels. */
  readonly open: Uint8Array;
  readonly bare: Uint8Array;
  readonly countOpen: Uint8Array;
  readonly countBare: Uint8Array;
  readonly sumOpen: Uint8Array;
  readonly sumBare: Uint8Array;
  readonly bucketOpen: Uint8Array;
  /** Labels added to every series (scope, resource constants), rendered; '' for none. */
  readonly additional: string;
  readonly additionalLabels: Attributes | undefined;
  /** Rendered `attributes,additional` per attributes object, for this `additional`. */
  readonly heads: WeakMap<Attributes, Uint8Array>;
}

/** The `le` label of each bucket of one boundaries array, with the line's closing: `le="0.5"} `. */
interface BucketLabels {
  readonly alone: Uint8Array[];
}

// Histogram shapes: count and sum written or not, and the bucket count.
const HAS_COUNT = 1;
const HAS_SUM = 2;
const SHAPE_BITS = 2;

function histogramShape(value: Histogram): number {
  return (value.count != null ? HAS_COUNT : 0) | (value.sum != null ? HAS_SUM : 0) | (value.buckets.counts.length << SHAPE_BITS);
}

/**
 * One metric's text (header and samples) with its number slots, and what its constant bytes were
 * made from: the name, header and additional labels (its MetricText), and per point the
 * attributes object and, for histograms, the shape and bounds.
 */
interface MetricLayout {
  readonly text: SlotText;
  readonly header: string;
  readonly metricText: MetricText | undefined;
  readonly type: DataPointType;
  /** False where a metric is written anew every time: unknown point types, an `le` of the resource's. */
  readonly patchable: boolean;
  readonly points: number;
  readonly attributes: Attributes[];
  readonly shapes: Int32Array;
  readonly bounds: (readonly number[])[];
}

/** A metric whose header and point count fit its layout: patched if its points fit too. */
interface Candidate {
  readonly layout: MetricLayout;
  readonly metric: MetricData;
  readonly index: number;
  ok: boolean;
}

/** A value as `${value}` writes it, '+Inf' and '-Inf' for the infinities, in a slot. */
function sample(text: SlotText, value: number): void {
  if (Number.isSafeInteger(value)) text.integer(value);
  else if (typeof value !== 'number') text.copy(encoder.encode(`${value}`));
  else if (!text.same(value)) text.ascii(valueText(value), value);
}

/** ' ' and a data point's end time in ms, the time in a slot. */
function timestamp(text: SlotText, time: HrTime): void {
  text.byte(SPACE);
  text.ascii(String(milliseconds(time)));
}

/** The start of a sample line: `name{labels} ` or `name `. */
function lineHead(text: SlotText, open: Uint8Array, bare: Uint8Array, head: Uint8Array): void {
  if (head.length > 0) {
    text.raw(open);
    text.raw(head);
    text.byte(CLOSE);
    text.byte(SPACE);
  } else {
    text.raw(bare);
  }
}

const EMPTY = new Uint8Array(0);

export class PrometheusTextSerializer {
  readonly #prefix: string | undefined;
  readonly #appendTimestamp: boolean;
  readonly #resourceConstantLabels: RegExp | undefined;
  readonly #withoutScopeInfo: boolean;
  readonly #withoutTargetInfo: boolean;
  readonly #unitSuffixes: boolean;
  /** Rendered heads per set of additional labels: usually one (the producer's scope). */
  readonly #heads = new Map<string, WeakMap<Attributes, Uint8Array>>();
  readonly #buckets = new Map<string, WeakMap<readonly number[], BucketLabels>>();
  readonly #texts = new Map<string, MetricText>();
  /** The last scrape's metric texts, in the order written. */
  #layouts: MetricLayout[] = [];
  #scrapes = 0;
  /** Metrics written anew by the last scrape, and patched in place, for tests and the bench. */
  readonly stats = { encoded: 0, patched: 0 };

  constructor(options: PrometheusTextOptions = {}) {
    this.#prefix = options.prefix ? `${options.prefix}_` : undefined;
    this.#appendTimestamp = options.appendTimestamp ?? false;
    this.#resourceConstantLabels = options.withResourceConstantLabels;
    this.#withoutScopeInfo = options.withoutScopeInfo ?? false;
    this.#withoutTargetInfo = options.withoutTargetInfo ?? false;
    this.#unitSuffixes = options.unitSuffixes ?? false;
  }

  /** The whole text as one string: for tests and small outputs. */
  serialize(metrics: ResourceMetrics): string {
    return Buffer.concat([...this.chunks(metrics)]).toString('utf8');
  }

  /**
   * The text in chunks of at most `chunkBytes`, views of the serializer's own texts: valid until
   * the next chunks() (copy what must outlive it). Data points are read when the first chunk is
   * taken.
   */
  *chunks(metrics: ResourceMetrics, chunkBytes = DEFAULT_CHUNK_BYTES): Generator<Buffer, void, undefined> {
    const texts = this.#render(metrics);
    for (const text of texts) {
      for (let at = 0; at < text.length; at += chunkBytes) {
        const end = Math.min(text.length, at + chunkBytes);
        yield Buffer.from(text.buffer, text.byteOffset + at, end - at);
      }
    }
  }

  /** The scrape's texts in order: target_info, every metric's (patched or written anew). */
  #render(metrics: ResourceMetrics): Uint8Array[] {
    const scrape = ++this.#scrapes;
    const out: Uint8Array[] = [];
    if (!this.#withoutTargetInfo) {
      const labels = renderLabels(metrics.resource.attributes);
      out.push(encoder.encode(`# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info${labels ? `{${labels}}` : ''} 1\n`));
    }
    const constants = this.#constantLabels(metrics.resource.attributes);
    const old = this.#layouts;
    const layouts: (MetricLayout | undefined)[] = [];
    const candidates: Candidate[] = [];
    const fresh: [MetricData, string, string, MetricText, number][] = [];
    for (const scopeMetrics of metrics.scopeMetrics) {
      for (const metric of scopeMetrics.metrics) {
        const name = this.#name(metric);
        if (name === undefined) continue;
        const header = this.#header(name, metric);
        const metricText = this.#metricText(name, scopeMetrics.scope, constants, scrape);
        const index = layouts.length;
        const layout = old[index];
        layouts.push(undefined);
        if (
          layout !== undefined &&
          layout.patchable &&
          layout.metricText === metricText &&
          layout.header === header &&
          layout.type === metric.dataPointType &&
          layout.points === metric.dataPoints.length
        ) {
          candidates.push({ layout, metric, index, ok: true });
        } else {
          fresh.push([metric, name, header, metricText, index]);
        }
      }
    }
    patchPointwise(candidates, this.#patchPoint);
    let patched = 0;
    for (const candidate of candidates) {
      if (candidate.ok) {
        layouts[candidate.index] = candidate.layout;
        patched++;
      } else {
        const { metric, layout, index } = candidate;
        fresh.push([metric, layout.metricText!.name, layout.header, layout.metricText!, index]);
      }
    }
    for (const [metric, name, header, metricText, index] of fresh) layouts[index] = this.#write(metric, name, header, metricText, old[index]?.text);
    this.#layouts = layouts as MetricLayout[];
    this.stats.encoded = fresh.length;
    this.stats.patched = patched;
    for (const layout of this.#layouts) out.push(layout.text.view());
    if (layouts.length === 0) out.push(encoder.encode(NO_REGISTERED_METRICS));
    // What metrics no longer exist need not be kept.
    for (const [key, text] of this.#texts) if (text.scrape !== scrape) this.#texts.delete(key);
    return out;
  }

  /** The values of point i of a candidate rewritten, if the point still fits its text. */
  readonly #patchPoint = (candidate: Candidate, i: number): boolean => {
    const { layout } = candidate;
    const point = candidate.metric.dataPoints[i]!;
    if (point.attributes !== layout.attributes[i]) return false;
    if (layout.type === DataPointType.HISTOGRAM) {
      const value = point.value as Histogram;
      if (histogramShape(value) !== layout.shapes[i] || !boundsHold(layout.bounds, i, value.buckets.boundaries)) return false;
      this.#histogram(layout.text, layout.metricText!, point as DataPoint<Histogram>, EMPTY);
    } else {
      this.#number(layout.text, layout.metricText!, point as DataPoint<number>, EMPTY);
    }
    return true;
  };

  /** A metric's text anew (in `reuse`, if given), and its layout. */
  #write(metric: MetricData, name: string, header: string, metricText: MetricText, reuse: SlotText | undefined): MetricLayout {
    const text = reuse ?? new SlotText();
    text.build();
    text.raw(encoder.encode(header));
    const points = metric.dataPoints;
    const n = points.length;
    const histogram = metric.dataPointType === DataPointType.HISTOGRAM;
    const layout: MetricLayout = {
      text,
      header,
      metricText,
      type: metric.dataPointType,
      patchable: !(histogram && metricText.ownLe),
      points: n,
      attributes: new Array<Attributes>(n),
      shapes: new Int32Array(n),
      bounds: new Array<number[]>(n),
    };
    if (!histogram && metric.dataPointType !== DataPointType.SUM && metric.dataPointType !== DataPointType.GAUGE) {
      diag.error(`Unrecognizable DataPointType: ${metric.dataPointType} for metric "${name}"`);
      return { ...layout, patchable: false };
    }
    for (let i = 0; i < n; i++) {
      const point = points[i]!;
      layout.attributes[i] = point.attributes;
      if (histogram && metricText.ownLe) {
        text.raw(this.#ownLeText(metricText, point as DataPoint<Histogram>));
      } else if (histogram) {
        const value = point.value as Histogram;
        layout.shapes[i] = histogramShape(value);
        layout.bounds[i] = value.buckets.boundaries;
        this.#histogram(text, metricText, point as DataPoint<Histogram>, this.#head(metricText, point.attributes));
      } else {
        this.#number(text, metricText, point as DataPoint<number>, this.#head(metricText, point.attributes));
      }
    }
    return layout;
  }

  /** A sample line, written or patched (its labels `head` are written only when written). */
  #number(text: SlotText, metricText: MetricText, point: DataPoint<number>, head: Uint8Array): void {
    lineHead(text, metricText.open, metricText.bare, head);
    sample(text, point.value);
    if (this.#appendTimestamp) timestamp(text, point.endTime);
    text.byte(NEWLINE);
  }

  /** A histogram's lines, written or patched (its labels `head` are written only when written). */
  #histogram(text: SlotText, metricText: MetricText, point: DataPoint<Histogram>, head: Uint8Array): void {
    const stamp = this.#appendTimestamp;
    const histogram = point.value;
    const { boundaries, counts } = histogram.buckets;
    const count = histogram.count;
    if (count != null) {
      lineHead(text, metricText.countOpen, metricText.countBare, head);
      sample(text, count);
      if (stamp) timestamp(text, point.endTime);
      text.byte(NEWLINE);
    }
    const sum = histogram.sum;
    if (sum != null) {
      lineHead(text, metricText.sumOpen, metricText.sumBare, head);
      sample(text, sum);
      if (stamp) timestamp(text, point.endTime);
      text.byte(NEWLINE);
    }
    const patching = text.patching;
    const les = patching ? undefined : this.#bucketLabels(metricText, boundaries, counts.length).alone;
    let cumulative = 0;
    const written = bucketsWritten(boundaries, counts.length);
    for (let b = 0; b < written; b++) {
      cumulative += counts[b]!;
      if (!patching) {
        text.raw(metricText.bucketOpen);
        if (head.length > 0) {
          text.raw(head);
          text.byte(COMMA);
        }
        text.raw(les![b]!);
      }
      sample(text, cumulative);
      if (stamp) timestamp(text, point.endTime);
      text.byte(NEWLINE);
    }
  }

  /** The Prometheus name of a metric, or undefined (and a diag error) when it has none. */
  #name(metric: MetricData): string | undefined {
    let name = sanitizeName(escapeString(metric.descriptor.name));
    if (this.#prefix) name = `${this.#prefix}${name}`;
    if (name === '' || name === '_') {
      diag.error(name === '' ? `Normalization for metric "${metric.descriptor.name}" resulted in empty name` : `Normalization for metric "${metric.descriptor.name}" resulted in an invalid name: "_"`);
      return undefined;
    }
    if (name[0]! >= '0' && name[0]! <= '9') name = `_${name}`;
    const total = metric.dataPointType === DataPointType.SUM && metric.isMonotonic;
    if (this.#unitSuffixes) name = withUnitSuffix(name, prometheusUnit(metric.descriptor.unit), total);
    if (total && !name.endsWith('_total')) name += '_total';
    return name;
  }

  #header(name: string, metric: MetricData): string {
    const { description, unit } = metric.descriptor;
    const shownUnit = this.#unitSuffixes ? prometheusUnit(unit) : unit;
    const unitLine = shownUnit ? `# UNIT ${name} ${escapeString(shownUnit)}\n` : '';
    return `# HELP ${name} ${escapeString(description || 'description missing')}\n${unitLine}# TYPE ${name} ${typeOf(metric)}\n`;
  }

  /** The resource attributes that become labels of every series, if asked for. */
  #constantLabels(resource: Attributes): Attributes | undefined {
    const pattern = this.#resourceConstantLabels;
    if (!pattern) return undefined;
    const labels: Attributes = {};
    for (const [key, value] of Object.entries(resource)) if (key.match(pattern)) labels[key] = value;
    return labels;
  }

  #metricText(name: string, scope: ScopeMetrics['scope'], constants: Attributes | undefined, scrape: number): MetricText {
    let additionalLabels: Attributes | undefined;
    if (this.#withoutScopeInfo) {
      additionalLabels = constants;
    } else {
      const scopeLabels: Attributes = { [SCOPE_NAME_LABEL]: scope.name };
      if (scope.schemaUrl) scopeLabels[SCOPE_SCHEMA_URL_LABEL] = scope.schemaUrl;
      if (scope.version) scopeLabels[SCOPE_VERSION_LABEL] = scope.version;
      additionalLabels = Object.assign(scopeLabels, constants);
    }
    const additional = renderLabels(additionalLabels);
    const key = `${name}\0${additional}`;
    let text = this.#texts.get(key);
    if (text !== undefined) {
      text.scrape = scrape;
      return text;
    }
    let heads = this.#heads.get(additional);
    if (!heads) this.#heads.set(additional, (heads = new WeakMap()));
    text = {
      scrape,
      name,
      ownLe: additionalLabels !== undefined && Object.hasOwn(additionalLabels, 'le'),
      open: encoder.encode(`${name}{`),
      bare: encoder.encode(`${name} `),
      countOpen: encoder.encode(`${name}_count{`),
      countBare: encoder.encode(`${name}_count `),
      sumOpen: encoder.encode(`${name}_sum{`),
      sumBare: encoder.encode(`${name}_sum `),
      bucketOpen: encoder.encode(`${name}_bucket{`),
      additional,
      additionalLabels,
      heads,
    };
    this.#texts.set(key, text);
    return text;
  }

  /** `attributes,additional` of a series, rendered once per attributes object. */
  #head(text: MetricText, attributes: Attributes): Uint8Array {
    let head = text.heads.get(attributes);
    if (head === undefined) {
      let labels = renderLabels(attributes);
      if (text.additional) labels += `${labels.length > 0 ? ',' : ''}${text.additional}`;
      head = encoder.encode(labels);
      text.heads.set(attributes, head);
    }
    return head;
  }

  /** A histogram point where the additional labels (a resource attribute) have an `le` of their
   * own, whose place and value the bucket's takes, as in the official serializer: rare, so
   * rendered as text, point by point. */
  #ownLeText(text: MetricText, point: DataPoint<Histogram>): Uint8Array {
    const histogram = point.value;
    const { boundaries, counts } = histogram.buckets;
    const attributes = renderLabels(point.attributes);
    const stamp = this.#appendTimestamp ? ` ${milliseconds(point.endTime)}` : '';
    const name = text.name;
    const head = this.#head(text, point.attributes);
    const headText = Buffer.from(head).toString('utf8');
    let lines = '';
    for (const key of ['count', 'sum'] as const) {
      const value = histogram[key];
      if (value != null) lines += `${name}_${key}${headText ? `{${headText}}` : ''} ${valueText(value)}${stamp}\n`;
    }
    let cumulative = 0;
    const written = bucketsWritten(boundaries, counts.length);
    for (let b = 0; b < written; b++) {
      cumulative += counts[b]!;
      const bound = boundaries[b];
      lines += `${name}_bucket{${renderLabels(Object.assign({}, text.additionalLabels, { le: leOf(bound) }), attributes)}} ${valueText(cumulative)}${stamp}\n`;
    }
    return encoder.encode(lines);
  }

  /** The label endings of each bucket of `boundaries`, made once per boundaries array. */
  #bucketLabels(text: MetricText, boundaries: readonly number[], buckets: number): BucketLabels {
    let byBounds = this.#buckets.get(text.additional);
    if (!byBounds) this.#buckets.set(text.additional, (byBounds = new WeakMap()));
    let labels = byBounds.get(boundaries);
    if (labels === undefined || labels.alone.length < buckets) {
      const alone: Uint8Array[] = [];
      for (let i = 0; i < Math.max(buckets, boundaries.length + 1); i++) {
        const le = leOf(boundaries[i]);
        alone.push(encoder.encode(`le="${le}"} `));
      }
      labels = { alone };
      byBounds.set(boundaries, labels);
    }
    return labels;
  }
}

/** How many of a histogram's `buckets` get a line: all, except that, as in the official
 * serializer, after an explicit +Inf bound the implicit last bucket gets none. */
function bucketsWritten(boundaries: readonly number[], buckets: number): number {
  let infiniteBoundary = false;
  for (let b = 0; b < buckets; b++) {
    const bound = boundaries[b];
    if (bound === undefined && infiniteBoundary) return b;
    if (bound === Infinity) infiniteBoundary = true;
  }
  return buckets;
}
