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
 * fixed width as text: from the first number whose text is longer or shorter than the last
 * one's, the patch writes the text forward into a second buffer, copying the constant bytes
 * between slots whole, so that a patch copies the text once at most, however many widths change
 * (a busy host's counters passing powers of ten).
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
  for (const candidate of candidates) if (!candidate.layout.text.finish()) candidate.ok = false;
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

export class SlotText {
  bytes: Uint8Array;
  length = 0;
  /** Each slot's start and width. */
  #starts = new Int32Array(64);
  #widths = new Int32Array(64);
  /** Each slot's number, where its text is a function of it (NaN otherwise: never the same). */
  #values = new Float64Array(64);
  #slots = 0;
  /** Patching: the next slot. */
  patching = false;
  #next = 0;
  /** Patching forward (a width changed): the text is being written into #spare, which holds it up
   * to #to; bytes from #from on are still to be copied there. */
  #forward = false;
  #spare: Uint8Array = new Uint8Array(0);
  #from = 0;
  #to = 0;
  /** Where the slot being written is: `bytes` or, patching forward, the spare. */
  #target: Uint8Array;

  constructor(size = 4096) {
    this.bytes = new Uint8Array(size);
    this.#target = this.bytes;
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
    this.#forward = false;
  }

  /** Ends a patch: the rest of a text written forward is copied, and it becomes the text.
   * Returns whether the patch visited every slot (else the caller's sequence was not the built
   * one's, and the text is to be written anew). */
  finish(): boolean {
    if (this.#forward) {
      const rest = this.length - this.#from;
      this.#ensureSpare(this.#to + rest);
      this.#spare.set(this.bytes.subarray(this.#from, this.length), this.#to);
      const bytes = this.bytes;
      this.bytes = this.#spare;
      this.#spare = bytes;
      this.length = this.#to + rest;
      this.#forward = false;
    }
    this.patching = false;
    return this.#next === this.#slots;
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
    // Written forward, it is copied with the bytes around it.
    if (this.#forward) this.#starts[k] = this.#starts[k]! - this.#from + this.#to;
    return true;
  }

  /** A safe integer in decimal, in a slot (not written again while it is the same). */
  integer(value: number): void {
    if (this.same(value)) return;
    const negative = value < 0 ? 1 : 0;
    const magnitude = negative ? -value : value;
    const width = negative + digitCount(magnitude);
    const pos = this.#slot(width, value);
    const bytes = this.#target;
    if (negative) bytes[pos] = 0x2d;
    writeDigits(bytes, pos + width, magnitude);
  }

  /** Bytes (a time's digits), in a slot. */
  copy(data: Uint8Array): void {
    const length = data.length;
    const pos = this.#slot(length, NaN);
    const bytes = this.#target;
    for (let i = 0; i < length; i++) bytes[pos + i] = data[i]!;
  }

  /** ASCII text (a number as String or JSON.stringify writes it), in a slot; `value`, the number
   * it is the text of, if any (see same()). */
  ascii(text: string, value = NaN): void {
    const length = text.length;
    const pos = this.#slot(length, value);
    const bytes = this.#target;
    for (let i = 0; i < length; i++) bytes[pos + i] = text.charCodeAt(i);
  }

  /** Where the next slot's `width` bytes go (in #target): appended while building; while
   * patching, the slot's place, in `bytes` while its width and every one before it stayed (a
   * number of the same width written forward is written in `bytes` too, and copied with the bytes
   * around it), else in the spare, the text before it copied there first. */
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
      this.#target = this.bytes;
      return pos;
    }
    const k = this.#next++;
    const at = this.#starts[k]!;
    const old = this.#widths[k]!;
    this.#values[k] = value;
    if (old === width) {
      if (this.#forward) this.#starts[k] = at - this.#from + this.#to;
      this.#target = this.bytes;
      return at;
    }
    if (!this.#forward) {
      this.#forward = true;
      this.#from = 0;
      this.#to = 0;
    }
    const gap = at - this.#from;
    this.#ensureSpare(this.#to + gap + width);
    const spare = this.#spare;
    spare.set(this.bytes.subarray(this.#from, at), this.#to);
    const pos = this.#to + gap;
    this.#starts[k] = pos;
    this.#widths[k] = width;
    this.#to = pos + width;
    this.#from = at + old;
    this.#target = spare;
    return pos;
  }

  #ensureSpare(needed: number): void {
    if (needed <= this.#spare.length) return;
    let size = Math.max(this.#spare.length * 2, this.bytes.length, 4096);
    while (size < needed) size *= 2;
    const spare = new Uint8Array(size);
    spare.set(this.#spare.subarray(0, this.#to));
    this.#spare = spare;
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
