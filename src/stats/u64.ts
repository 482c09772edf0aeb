/**
 * u64 values as the kernel lays them out in a data block: host-endian, read as two 32-bit words,
 * low word first, and turned into a double with no BigInt. A double holds every integer below
 * 2^53 exactly; a value above it is exported rounded (and said so).
 *
 * Hot loops that decode thousands of fds (otel/producer.ts, otel/aggregation.ts) bind these
 * constants to consts of their own module: V8 folds a module's own const into the loop, while an
 * imported binding is loaded through its cell at every use (measured: 5 to 10% of the decoding).
 */

/** 2^32: the weight of a u64's high word. */
export const TWO_POW_32 = 0x1_0000_0000;

/** A high word at or above this makes the u64 at least 2^53: no longer exact as a double. */
export const INEXACT_HIGH_WORD = 0x20_0000;

/** The u64 at `word` of a data block's 32-bit words, as a double: exact up to 2^53. Small enough
 * for V8 to inline into a caller's loop. */
export function u64(words: Uint32Array, word: number): number {
  return words[word]! + words[word + 1]! * TWO_POW_32;
}

/** Whether the u64 at `word` is exact as a double (below 2^53). */
export function isExactU64(words: Uint32Array, word: number): boolean {
  return words[word + 1]! < INEXACT_HIGH_WORD;
}
