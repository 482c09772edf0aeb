/**
 * The Prometheus text exposition of a ResourceMetrics, character for character what
 * @opentelemetry/exporter-prometheus's PrometheusSerializer writes for the same data (names,
 * labels and their order, HELP/UNIT/TYPE lines, target_info, escaping, number formatting,
 * histogram buckets), but written as bytes, in chunks, at a fraction of the cost; label names
 * are valid where that one's are not (prometheus-labels.ts):
 *
 * - A series' labels are rendered once, per attributes object (the producer shares one per
 *   source across all its metrics and keeps it for the source's life; the SDK keeps one per
 *   series), and kept as UTF-8 bytes while that object lives, side by side with the others
 *   (LabelBlocks). A scrape copies them; a histogram's bucket lines copy the first one's opening.
 * - Only values are formatted per scrape, integers straight into the output bytes.
 * - Data points are read in the order they lie in memory where that differs from the text's: the
 *   text is metric by metric, but a producer makes each source's points together, so a metric's
 *   sweep over every source would miss the caches at each point. Counters' and gauges' values
 *   are gathered first, source by source across the metrics, into a column per metric (kept for
 *   the next scrape: 8 bytes a series); histograms are read a few points ahead of their lines.
 * - The text comes out as a sequence of chunks of about `chunkBytes`, so a consumer with
 *   backpressure (an HTTP response, a gzip stream) holds a few chunks, never the whole body. A
 *   consumer that gives each chunk back once read (release(), as the endpoint's gzip does) has
 *   the next chunks written into the same memory: a scrape then writes its text (264 MB at
 *   10,000 stats fds) into a few chunks instead of allocating it anew, whose page faults and
 *   collection of external memory cost more than writing it.
 *
 * Attributes objects must not change once their data points are serialized (the SDK and the
 * producer never change them): the rendered labels are those of the first time seen.
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

/** Bytes per chunk unless asked otherwise: large enough that per-chunk costs vanish, zlib's
 * included (gzip of one collection at 10,000 fds, level 3, CPU ms in writes of 64 KiB: 791,
 * 256 KiB: 511, 1 MiB: 459, 4 MiB: 431; scripts/measure-gzip-level.ts). At most SPARE_CHUNKS
 * of them are kept: 4 MiB. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;
/** Released chunks kept for the next ones to write into: as many as a consumer with
 * backpressure holds at once (the endpoint's gzip: the one zlib reads and the next). */
const SPARE_CHUNKS = 4;
/** Label bytes per block (LabelBlocks): about 50 sources' labels. A block lives while any of its
 * labels does, so a few sources that stay keep at most this much each. */
const LABEL_BLOCK_BYTES = 8 * 1024;
/** Histogram points read at once before they are written (#readAhead). */
const READ_AHEAD = 32;
/** The longest number a value or timestamp is written as ("-1.2345678901234567e-308"). */
const MAX_NUMBER_BYTES = 32;
/** Room for a line beyond its name and labels: '} ', a value, ' ' and a timestamp, '\n'. */
const LINE_EXTRA = 2 * MAX_NUMBER_BYTES + 4;
const NO_REGISTERED_METRICS = '# no registered metrics';
const SCOPE_NAME_LABEL = 'otel.scope.name';
const SCOPE_VERSION_LABEL = 'otel.scope.version';
const SCOPE_SCHEMA_URL_LABEL = 'otel.scope.schema_url';

const NEWLINE = 0x0a;
const SPACE = 0x20;
const CLOSE = 0x7d;
const COMMA = 0x2c;
const MINUS = 0x2d;
const ZERO = 0x30;

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

/** A metric's constant parts, as bytes, kept from one scrape to the next while it is there; one
 * per metric of a scrape, even where two have one name. */
interface MetricText {
  /** The last scrape that wrote it. */
  scrape: number;
  /** The attributes of the points of the last scrape, and their heads, by index: a series whose
   * attributes object is where it was (the producer's always are) finds its labels with one
   * comparison. */
  readonly pointAttributes: Attributes[];
  readonly pointHeads: Uint8Array[];
  /** A counter's or gauge's values of this scrape, by index (#gatherNumbers), kept for the next
   * scrape to write into: 8 bytes a series. */
  values: Float64Array;
  /** A value of this scrape is not a number: it is written as `${value}`, from its point. */
  otherValues: boolean;
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

/** A metric of a scrape that has a name, with its constant text; a counter's or gauge's values
 * gathered (#gatherNumbers). */
interface NamedMetric {
  readonly metric: MetricData;
  readonly name: string;
  readonly text: MetricText;
  /** A counter or gauge: its values are gathered (#gatherNumbers). */
  readonly numbers: boolean;
}

/** The `le` label of each bucket of one boundaries array, with the line's closing: `le="0.5"} `. */
interface BucketLabels {
  readonly alone: Uint8Array[];
  /** Bytes of the longest, and one for the comma before it. */
  readonly longest: number;
}

/** One sample without its timestamp and newline: `name{labels} value`, or `name value`. */
function writeSample(chunk: Chunk, open: Uint8Array, bare: Uint8Array, head: Uint8Array, value: number): void {
  if (head.length > 0) {
    chunk.put(open);
    chunk.put(head);
    chunk.byte(CLOSE);
    chunk.byte(SPACE);
  } else {
    chunk.put(bare);
  }
  chunk.number(value);
}

/** The memory chunks are written into: released chunks' first, else new. */
class ChunkMemory {
  /** The memory of chunks being written or held by the consumer: only these are taken back,
   * once each. */
  readonly #lent = new WeakSet<ArrayBufferLike>();
  readonly #spare: ArrayBufferLike[] = [];

  take(size: number): Buffer {
    const spare = this.#spare;
    let bytes: Buffer | undefined;
    for (let i = spare.length - 1; i >= 0 && bytes === undefined; i--) {
      if (spare[i]!.byteLength >= size) bytes = Buffer.from(spare.splice(i, 1)[0]!);
    }
    // Unpooled, so that a chunk's memory is its own to take back.
    bytes ??= Buffer.allocUnsafeSlow(size);
    this.#lent.add(bytes.buffer);
    return bytes;
  }

  give(memory: ArrayBufferLike): void {
    if (this.#lent.delete(memory) && this.#spare.length < SPARE_CHUNKS) this.#spare.push(memory);
  }
}

/** Label bytes kept from one scrape to the next, side by side in blocks in the order they are
 * made (a metric's series in turn, the producer's in source order), instead of each in memory of
 * its own: a scrape reads a source's labels once per metric, a sweep over every source, and at
 * 10,000 sources that sweep misses the caches unless it reads memory in order. */
class LabelBlocks {
  #block = Buffer.allocUnsafeSlow(0);
  #used = 0;

  /** `text` as UTF-8, a view of the current block (a new one when it does not fit). */
  add(text: string): Uint8Array {
    const length = Buffer.byteLength(text);
    if (this.#used + length > this.#block.length) {
      this.#block = Buffer.allocUnsafeSlow(Math.max(LABEL_BLOCK_BYTES, length));
      this.#used = 0;
    }
    const start = this.#used;
    this.#used += this.#block.write(text, start, 'utf8');
    return new Uint8Array(this.#block.buffer, this.#block.byteOffset + start, length);
  }
}

/** Where the text is written: the current chunk and its fill. */
class Chunk {
  bytes: Buffer;
  length = 0;

  constructor(
    readonly size: number,
    readonly memory: ChunkMemory,
  ) {
    this.bytes = memory.take(size);
  }

  /** Room for `needed` more bytes; returns the full chunk to hand out, if it had to be replaced. */
  reserve(needed: number): Buffer | undefined {
    if (this.length + needed <= this.bytes.length) return undefined;
    const full = this.length > 0 ? this.bytes.subarray(0, this.length) : undefined;
    // An empty chunk too small for the line goes back.
    if (full === undefined) this.memory.give(this.bytes.buffer);
    this.bytes = this.memory.take(Math.max(this.size, needed));
    this.length = 0;
    return full;
  }

  put(source: Uint8Array): void {
    this.bytes.set(source, this.length);
    this.length += source.length;
  }

  /** `length` bytes of this chunk from `at` written again. */
  again(at: number, length: number): void {
    this.bytes.copyWithin(this.length, at, at + length);
    this.length += length;
  }

  byte(value: number): void {
    this.bytes[this.length++] = value;
  }

  ascii(text: string): void {
    this.length += this.bytes.write(text, this.length, 'latin1');
  }

  /** ' ' and a data point's end time in ms. */
  timestamp(time: HrTime): void {
    this.byte(SPACE);
    this.ascii(String(milliseconds(time)));
  }

  /** A value as `${value}` writes it, '+Inf' and '-Inf' for the infinities. */
  number(value: number): void {
    if (Number.isSafeInteger(value)) {
      let n = value;
      if (n < 0) {
        this.byte(MINUS);
        n = -n;
      }
      this.digits(n);
    } else if (value === Infinity) {
      this.ascii('+Inf');
    } else if (value === -Infinity) {
      this.ascii('-Inf');
    } else {
      this.ascii(`${value}`);
    }
  }

  /** A non-negative safe integer in decimal. */
  digits(n: number): void {
    let width = 1;
    for (let power = 10; power <= n; power *= 10) width++;
    const bytes = this.bytes;
    let at = this.length + width;
    this.length = at;
    if (n < 0x8000_0000) {
      let small = n | 0;
      do {
        const quotient = (small / 10) | 0;
        bytes[--at] = ZERO + (small - quotient * 10);
        small = quotient;
      } while (small > 0);
      return;
    }
    do {
      const quotient = Math.floor(n / 10);
      bytes[--at] = ZERO + (n - quotient * 10);
      n = quotient;
    } while (n > 0);
  }
}

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
  readonly #memory = new ChunkMemory();
  readonly #labels = new LabelBlocks();
  /** Histograms being written, read ahead (#readAhead), and their buckets in all: kept only so
   * that the loads of their counts arrays are not dropped as unused. */
  readonly #aheadHistograms: Histogram[] = [];
  #aheadBuckets = 0;
  #scrapes = 0;

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
    const chunks = [...this.chunks(metrics)];
    const text = Buffer.concat(chunks).toString('utf8');
    for (const chunk of chunks) this.release(chunk);
    return text;
  }

  /**
   * The text in chunks of about `chunkBytes` (a longer line gets a chunk of its own size), each
   * the consumer's until it gives it back with release(), if it does. Data points are read as
   * the chunks are taken: `metrics` must stay as it is until the last one.
   */
  *chunks(metrics: ResourceMetrics, chunkBytes = DEFAULT_CHUNK_BYTES): Generator<Buffer, void, undefined> {
    const chunk = new Chunk(chunkBytes, this.#memory);
    const scrape = ++this.#scrapes;
    if (!this.#withoutTargetInfo) {
      const labels = renderLabels(metrics.resource.attributes);
      const text = encoder.encode(`# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info${labels ? `{${labels}}` : ''} 1\n`);
      const full = chunk.reserve(text.length);
      if (full) yield full;
      chunk.put(text);
    }
    const constants = this.#constantLabels(metrics.resource.attributes);
    const named = this.#named(metrics, constants, scrape);
    this.#gatherNumbers(named);
    for (const { metric, name, text, numbers } of named) {
      const header = encoder.encode(this.#header(name, metric));
      let full = chunk.reserve(header.length);
      if (full) yield full;
      chunk.put(header);
      const points = metric.dataPoints;
      const histogram = metric.dataPointType === DataPointType.HISTOGRAM;
      if (!histogram && !numbers) {
        diag.error(`Unrecognizable DataPointType: ${metric.dataPointType} for metric "${name}"`);
        continue;
      }
      // Plain loops write what fits in the chunk; the generator only hands chunks out.
      let next = 0;
      while (next < points.length) {
        next = histogram ? this.#histograms(chunk, text, points as DataPoint<Histogram>[], next) : this.#numbers(chunk, text, points as DataPoint<number>[], next);
        if (next === points.length) break;
        full = chunk.reserve(histogram ? this.#histogramRoom(text, points[next] as DataPoint<Histogram>) : this.#numberRoom(text, text.pointHeads[next]!));
        if (full) yield full;
      }
      // Series that went keep no attributes alive.
      if (text.pointAttributes.length > points.length) {
        text.pointAttributes.length = points.length;
        text.pointHeads.length = points.length;
      }
    }
    if (named.length === 0) {
      const full = chunk.reserve(NO_REGISTERED_METRICS.length);
      if (full) yield full;
      chunk.ascii(NO_REGISTERED_METRICS);
    }
    // What metrics no longer exist need not be kept.
    for (const [key, text] of this.#texts) if (text.scrape !== scrape) this.#texts.delete(key);
    // Nor the last histograms read ahead.
    this.#aheadHistograms.length = 0;
    if (chunk.length > 0) yield chunk.bytes.subarray(0, chunk.length);
    else this.#memory.give(chunk.bytes.buffer);
  }

  /** A chunk of chunks() is no longer read: later chunks may be written into its memory. Give
   * each back once at most; any other buffer is ignored. */
  release(chunk: Uint8Array): void {
    this.#memory.give(chunk.buffer);
  }

  /** The metrics that have a name, in order, each with its constant text. */
  #named(metrics: ResourceMetrics, constants: Attributes | undefined, scrape: number): NamedMetric[] {
    const named: NamedMetric[] = [];
    for (const scopeMetrics of metrics.scopeMetrics) {
      for (const metric of scopeMetrics.metrics) {
        const name = this.#name(metric);
        if (name === undefined) continue;
        const text = this.#metricText(name, scopeMetrics.scope, constants, scrape);
        const type = metric.dataPointType;
        named.push({ metric, name, text, numbers: type === DataPointType.SUM || type === DataPointType.GAUGE });
      }
    }
    return named;
  }

  /**
   * Every counter's and gauge's values into a column of its own (and each series' head found),
   * read series by series across the metrics rather than metric by metric: a source's points lie
   * side by side in memory (the producer makes them together), so this reads them in order,
   * where a metric's sweep over every source would miss the caches at each point.
   */
  #gatherNumbers(named: NamedMetric[]): void {
    const numbers: NamedMetric[] = [];
    let longest = 0;
    for (const entry of named) {
      if (!entry.numbers) continue;
      const { text } = entry;
      const length = entry.metric.dataPoints.length;
      // Room for an eighth more series, so that a fleet growing source by source reallocates seldom.
      if (text.values.length < length || text.values.length > 2 * length) text.values = new Float64Array(length + (length >> 3));
      text.otherValues = false;
      numbers.push(entry);
      if (length > longest) longest = length;
    }
    for (let i = 0; i < longest; i++) {
      for (let k = 0; k < numbers.length; k++) {
        const { metric, text } = numbers[k]!;
        const points = metric.dataPoints as DataPoint<number>[];
        if (i >= points.length) continue;
        const point = points[i]!;
        const value = point.value;
        if (typeof value !== 'number') text.otherValues = true;
        text.values[i] = value;
        this.#pointHead(text, i, point.attributes);
      }
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
    // Each metric of a scrape has its own: a second metric of the same name gets another key.
    let key = `${name}\0${additional}`;
    let text = this.#texts.get(key);
    while (text !== undefined && text.scrape === scrape) text = this.#texts.get((key += '\0'));
    if (text !== undefined) {
      text.scrape = scrape;
      return text;
    }
    let heads = this.#heads.get(additional);
    if (!heads) this.#heads.set(additional, (heads = new WeakMap()));
    text = {
      scrape,
      pointAttributes: [],
      pointHeads: [],
      values: new Float64Array(0),
      otherValues: false,
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

  /** The head of points[i] of a metric. */
  #pointHead(text: MetricText, i: number, attributes: Attributes): Uint8Array {
    if (text.pointAttributes[i] === attributes) return text.pointHeads[i]!;
    const head = this.#head(text, attributes);
    text.pointAttributes[i] = attributes;
    text.pointHeads[i] = head;
    return head;
  }

  /** `attributes,additional` of a series, rendered once per attributes object. */
  #head(text: MetricText, attributes: Attributes): Uint8Array {
    let head = text.heads.get(attributes);
    if (head === undefined) {
      let labels = renderLabels(attributes);
      if (text.additional) labels += `${labels.length > 0 ? ',' : ''}${text.additional}`;
      head = this.#labels.add(labels);
      text.heads.set(attributes, head);
    }
    return head;
  }

  #numberRoom(text: MetricText, head: Uint8Array): number {
    return text.open.length + head.length + LINE_EXTRA;
  }

  /** Samples of points[from...] (their values and heads gathered, #gatherNumbers) while they
   * fit in the chunk; returns the first not written. */
  #numbers(chunk: Chunk, text: MetricText, points: readonly DataPoint<number>[], from: number): number {
    const limit = chunk.bytes.length;
    const stamp = this.#appendTimestamp;
    const { values, otherValues: other, pointHeads: heads } = text;
    for (let i = from; i < points.length; i++) {
      const head = heads[i]!;
      if (chunk.length + text.open.length + head.length + LINE_EXTRA > limit) return i;
      writeSample(chunk, text.open, text.bare, head, other ? points[i]!.value : values[i]!);
      if (stamp) chunk.timestamp(points[i]!.endTime);
      chunk.byte(NEWLINE);
    }
    return points.length;
  }

  #histogramRoom(text: MetricText, point: DataPoint<Histogram>): number {
    if (text.ownLe) return this.#ownLeText(text, point).length;
    const head = this.#head(text, point.attributes);
    const labels = this.#bucketLabels(text, point.value.buckets.boundaries, point.value.buckets.counts.length);
    return (2 + point.value.buckets.counts.length) * (text.bucketOpen.length + head.length + labels.longest + LINE_EXTRA);
  }

  /** Histogram points[from...] while they fit in the chunk, each whole; returns the first not written. */
  #histograms(chunk: Chunk, text: MetricText, points: readonly DataPoint<Histogram>[], from: number): number {
    const limit = chunk.bytes.length;
    const stamp = this.#appendTimestamp;
    const histograms = this.#aheadHistograms;
    let aheadFrom = from;
    let aheadTo = from;
    for (let i = from; i < points.length; i++) {
      if (text.ownLe) {
        const whole = this.#ownLeText(text, points[i]!);
        if (chunk.length + whole.length > limit) return i;
        chunk.put(whole);
        continue;
      }
      if (i === aheadTo) {
        aheadFrom = i;
        aheadTo = this.#readAhead(text, points, i);
      }
      const histogram = histograms[i - aheadFrom]!;
      const { boundaries, counts } = histogram.buckets;
      const head = text.pointHeads[i]!;
      const labels = this.#bucketLabels(text, boundaries, counts.length);
      if (chunk.length + (2 + counts.length) * (text.bucketOpen.length + head.length + labels.longest + LINE_EXTRA) > limit) return i;
      const count = histogram.count;
      if (count != null) {
        writeSample(chunk, text.countOpen, text.countBare, head, count);
        if (stamp) chunk.timestamp(points[i]!.endTime);
        chunk.byte(NEWLINE);
      }
      const sum = histogram.sum;
      if (sum != null) {
        writeSample(chunk, text.sumOpen, text.sumBare, head, sum);
        if (stamp) chunk.timestamp(points[i]!.endTime);
        chunk.byte(NEWLINE);
      }
      // Every bucket line opens with `name_bucket{head,`: the first is written from its parts, the
      // others copy it from there (the histogram is in one chunk), one copy a line and none kept.
      const les = labels.alone;
      let cumulative = 0;
      const written = bucketsWritten(boundaries, counts.length);
      const prefixAt = chunk.length;
      const prefixLength = text.bucketOpen.length + head.length + (head.length > 0 ? 1 : 0);
      for (let b = 0; b < written; b++) {
        cumulative += counts[b]!;
        if (b === 0) {
          chunk.put(text.bucketOpen);
          if (head.length > 0) {
            chunk.put(head);
            chunk.byte(COMMA);
          }
        } else {
          chunk.again(prefixAt, prefixLength);
        }
        chunk.put(les[b]!);
        chunk.number(cumulative);
        if (stamp) chunk.timestamp(points[i]!.endTime);
        chunk.byte(NEWLINE);
      }
    }
    return points.length;
  }

  /**
   * The histograms of points[from...] (READ_AHEAD at most) and their heads, found in a loop of
   * their own before they are written: each is a chain of objects (point, histogram, buckets,
   * counts) that a metric's sweep over every source finds out of the caches; here the chains of
   * several points are followed at once, where between two points' lines only one would be.
   * Returns the end.
   */
  #readAhead(text: MetricText, points: readonly DataPoint<Histogram>[], from: number): number {
    const to = Math.min(points.length, from + READ_AHEAD);
    const histograms = this.#aheadHistograms;
    let buckets = 0;
    for (let i = from; i < to; i++) {
      const point = points[i]!;
      this.#pointHead(text, i, point.attributes);
      const histogram = point.value;
      histograms[i - from] = histogram;
      buckets += histogram.buckets.counts.length;
    }
    this.#aheadBuckets = buckets;
    return to;
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
      labels = { alone, longest: Math.max(...alone.map((le) => le.length)) + 1 };
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
