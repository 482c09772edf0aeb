/**
 * Text with number slots, for the text outputs (OTLP JSON, Prometheus): the bytes of one metric
 * as rendered once, with where each number is, so that the next export of the same series
 * rewrites only the numbers, in place, and leaves every byte between them (names, labels,
 * attributes, keys) where it is.
 *
 * One code path writes a metric both ways: while building, raw() appends constant bytes and the
 * number writers append a number and note its slot; while patching, raw() does nothing and the
 * number writers rewrite the next slot. So the slots are visited in the order they were made,
 * and a caller patches a metric only when what decides its constant bytes and the sequence of
 * its slots (attributes objects, shapes, bounds) is what it was built from.
 *
 * A slot keeps the number it holds: a number that is what it was (most of an idle host's
 * counters and histogram buckets between two collections) is not written again. Numbers have no
 * fixed width as text: a number whose text is longer or shorter than the last one's moves the
 * rest of the metric's bytes (copyWithin), rare between two collections (a counter passing a
 * power of ten). Where moves would copy more than a few times the text's own length (numbers
 * of every width, changing), the patch gives up, and the caller writes the metric anew: a patch
 * never costs much more than a rendering.
 */

/** Writes a non-negative safe integer's decimal digits at `pos`; returns the end. */
export function digits(bytes: Uint8Array, pos: number, value: number): number {
  const end = pos + digitCount(value);
  writeDigits(bytes, end, value);
  return end;
}

function digitCount(value: number): number {
  let length = 1;
  for (let power = 10; power <= value; power *= 10) length++;
  return length;
}

/** The digits of a non-negative safe integer, ending just before `end`. */
function writeDigits(bytes: Uint8Array, end: number, value: number): void {
  let at = end;
  if (value < 0x8000_0000) {
    let small = value | 0;
    do {
      const quotient = (small / 10) | 0;
      bytes[--at] = 0x30 + (small - quotient * 10);
      small = quotient;
    } while (small > 0);
    return;
  }
  let v = value;
  do {
    const quotient = Math.floor(v / 10);
    bytes[--at] = 0x30 + (v - quotient * 10);
    v = quotient;
  } while (v > 0);
}

/** A metric's text to patch, and whether its points still fit it. */
export interface PatchCandidate {
  readonly layout: { readonly text: SlotText; readonly points: number };
  ok: boolean;
}

/**
 * Patches every candidate's text, point i of every metric before point i + 1 of any (a
 * producer's point i of one metric and of the next belong to the same source and sit together in
 * memory; see otlp-protobuf.ts). `patchPoint` checks that point i still fits the text (else
 * returns false: the candidate gets ok = false, to be written anew) and rewrites its numbers.
 */
export function patchPointwise<C extends PatchCandidate>(candidates: readonly C[], patchPoint: (candidate: C, i: number) => boolean): void {
  let longest = 0;
  for (const candidate of candidates) {
    longest = Math.max(longest, candidate.layout.points);
    candidate.layout.text.patch();
  }
  for (let i = 0; i < longest; i++) {
    for (let c = 0; c < candidates.length; c++) {
      const candidate = candidates[c]!;
      if (i < candidate.layout.points && candidate.ok && !patchPoint(candidate, i)) candidate.ok = false;
    }
  }
  for (const candidate of candidates) if (candidate.ok && !candidate.layout.text.complete) candidate.ok = false;
}

/**
 * Whether a histogram point's bounds are those its text was made with (`stored[i]`): the same
 * array, or an equal one, which is then kept in its place (so the next check is one comparison).
 */
export function boundsHold(stored: (readonly number[])[], i: number, boundaries: readonly number[]): boolean {
  const old = stored[i]!;
  if (boundaries === old) return true;
  if (boundaries.length !== old.length) return false;
  for (let b = 0; b < old.length; b++) if (!Object.is(boundaries[b], old[b])) return false;
  stored[i] = boundaries;
  return true;
}

/** How many times its own length a patch may move a text's bytes before it gives up: moving is a
 * memmove, several times cheaper per byte than writing the text anew. */
const MOVE_BUDGET = 4;
/** Moves of a small text cost nothing worth a rendering, whatever their number. */
const MOVE_FLOOR = 1 << 16;

export class SlotText {
  bytes: Uint8Array;
  length = 0;
  /** Each slot's start and width. */
  #starts = new Int32Array(64);
  #widths = new Int32Array(64);
  /** Each slot's number, where its text is a function of it (NaN otherwise: never the same). */
  #values = new Float64Array(64);
  #slots = 0;
  /** Patching: the next slot, and how far the bytes from it on have moved so far. */
  patching = false;
  #next = 0;
  #shift = 0;
  /** Bytes moved by this patch, and whether it gave up (see the file's comment). */
  #moved = 0;
  #spoiled = false;

  constructor(size = 4096) {
    this.bytes = new Uint8Array(size);
  }

  /** Starts building anew. */
  build(): void {
    this.patching = false;
    this.length = 0;
    this.#slots = 0;
  }

  /** Starts rewriting the numbers, slot by slot, in the order they were built. */
  patch(): void {
    this.patching = true;
    this.#next = 0;
    this.#shift = 0;
    this.#moved = 0;
    this.#spoiled = false;
  }

  /** Whether a patch visited every slot (else the caller's sequence was not the built one's) and
   * did not give up: else the text is to be written anew. */
  get complete(): boolean {
    return this.#next === this.#slots && !this.#spoiled;
  }

  /** The text. */
  view(): Uint8Array {
    return this.bytes.subarray(0, this.length);
  }

  raw(data: Uint8Array): void {
    if (this.patching) return;
    const length = data.length;
    this.#ensure(length);
    const bytes = this.bytes;
    const pos = this.length;
    if (length < 24) {
      for (let i = 0; i < length; i++) bytes[pos + i] = data[i]!;
    } else {
      bytes.set(data, pos);
    }
    this.length = pos + length;
  }

  byte(value: number): void {
    if (this.patching) return;
    this.#ensure(1);
    this.bytes[this.length++] = value;
  }

  /** Patching: whether the next slot holds `value` already, and if so, skips it. */
  same(value: number): boolean {
    if (!this.patching) return false;
    const k = this.#next;
    if (this.#values[k] !== value) return false;
    this.#next = k + 1;
    this.#starts[k] = this.#starts[k]! + this.#shift;
    return true;
  }

  /** A safe integer in decimal, in a slot (not written again while it is the same). */
  integer(value: number): void {
    if (this.same(value)) return;
    const negative = value < 0 ? 1 : 0;
    const magnitude = negative ? -value : value;
    const width = negative + digitCount(magnitude);
    const pos = this.#slot(width, value);
    const bytes = this.bytes;
    if (negative) bytes[pos] = 0x2d;
    writeDigits(bytes, pos + width, magnitude);
  }

  /** Bytes (a time's digits), in a slot. */
  copy(data: Uint8Array): void {
    const length = data.length;
    const pos = this.#slot(length, NaN);
    const bytes = this.bytes;
    for (let i = 0; i < length; i++) bytes[pos + i] = data[i]!;
  }

  /** ASCII text (a number as String or JSON.stringify writes it), in a slot; `value`, the number
   * it is the text of, if any (see same()). */
  ascii(text: string, value = NaN): void {
    const length = text.length;
    const pos = this.#slot(length, value);
    const bytes = this.bytes;
    for (let i = 0; i < length; i++) bytes[pos + i] = text.charCodeAt(i);
  }

  /** Where the next slot's `width` bytes go: appended while building; while patching, the next
   * slot, the bytes after it moved if its width changed. */
  #slot(width: number, value: number): number {
    if (!this.patching) {
      this.#ensure(width);
      const pos = this.length;
      const k = this.#slots++;
      if (k === this.#starts.length) this.#growSlots();
      this.#starts[k] = pos;
      this.#widths[k] = width;
      this.#values[k] = value;
      this.length = pos + width;
      return pos;
    }
    const k = this.#next++;
    // Given up: the text is written anew after; numbers go to its start meanwhile.
    if (this.#spoiled) {
      if (width > this.bytes.length) this.bytes = new Uint8Array(width);
      return 0;
    }
    const pos = this.#starts[k]! + this.#shift;
    this.#starts[k] = pos;
    this.#values[k] = value;
    const old = this.#widths[k]!;
    if (old !== width) {
      this.#moved += this.length - pos - old;
      if (this.#moved > MOVE_BUDGET * this.length && this.#moved > MOVE_FLOOR) {
        this.#spoiled = true;
        return 0;
      }
      const delta = width - old;
      if (delta > 0) this.#ensure(delta);
      this.bytes.copyWithin(pos + width, pos + old, this.length);
      this.length += delta;
      this.#shift += delta;
      this.#widths[k] = width;
    }
    return pos;
  }

  #growSlots(): void {
    const starts = new Int32Array(this.#starts.length * 2);
    starts.set(this.#starts);
    this.#starts = starts;
    const widths = new Int32Array(this.#widths.length * 2);
    widths.set(this.#widths);
    this.#widths = widths;
    const values = new Float64Array(this.#values.length * 2);
    values.set(this.#values);
    this.#values = values;
  }

  #ensure(more: number): void {
    const needed = this.length + more;
    if (needed <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < needed) size *= 2;
    const bytes = new Uint8Array(size);
    bytes.set(this.bytes.subarray(0, this.length));
    this.bytes = bytes;
  }
}
