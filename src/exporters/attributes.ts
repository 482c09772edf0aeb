/**
 * Attributes as OTLP protobuf KeyValues, encoded once per attributes object: the SDK and the
 * producer never change an attributes object once it is in a data point (the SDK keys its
 * series by them), and they hand the same object out at every collection.
 */
import type { Attributes } from '@opentelemetry/api';
import { Writer } from './wire.js';

const MIN_INT64 = -(2 ** 63);
const MAX_INT64 = 2 ** 63;

/** An AnyValue's fields, as otlp-transformer writes them: an integral number within int64 is
 * int_value, any other number double_value; a type OTLP has no field for writes nothing. */
function writeAnyValue(writer: Writer, value: unknown): void {
  const type = typeof value;
  if (type === 'string') {
    writer.byte(0x0a);
    writer.string(value as string);
  } else if (type === 'boolean') {
    writer.byte(0x10);
    writer.byte(value ? 1 : 0);
  } else if (type === 'number') {
    const number = value as number;
    if (Number.isInteger(number) && number >= MIN_INT64 && number < MAX_INT64) {
      writer.byte(0x18);
      writer.varint(number);
    } else {
      writer.byte(0x21);
      writer.double(number);
    }
  } else if (value instanceof Uint8Array) {
    writer.byte(0x3a);
    writer.lengthDelimited(value);
  } else if (Array.isArray(value)) {
    const array = new Writer();
    for (const item of value) {
      array.byte(0x0a);
      array.lengthDelimited(anyValue(item));
    }
    writer.byte(0x2a);
    writer.lengthDelimited(array.finish());
  } else if (type === 'object' && value !== null) {
    const list = new Writer();
    const object = value as Record<string, unknown>;
    for (const key in object) {
      if (!Object.prototype.hasOwnProperty.call(object, key)) continue;
      list.byte(0x0a);
      list.lengthDelimited(keyValue(key, object[key]));
    }
    writer.byte(0x32);
    writer.lengthDelimited(list.finish());
  }
}

function anyValue(value: unknown): Uint8Array {
  const writer = new Writer();
  writeAnyValue(writer, value);
  return writer.finish();
}

/** A KeyValue message's fields. */
function keyValue(key: string, value: unknown): Uint8Array {
  const writer = new Writer();
  writer.byte(0x0a);
  writer.string(key);
  writer.byte(0x12);
  writer.lengthDelimited(anyValue(value));
  return writer.finish();
}

/** The repeated KeyValue field `field` (tag included) for every own enumerable key. */
export function encodeAttributes(attributes: Attributes | undefined, field: number): Uint8Array {
  const writer = new Writer();
  if (attributes) {
    for (const key in attributes) {
      if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue;
      writer.tag(field, 2);
      writer.lengthDelimited(keyValue(key, attributes[key]));
    }
  }
  return writer.finish();
}

const EMPTY = new Uint8Array(0);

/** Encoded attributes, per field number (7 in number points, 9 in histograms, 1 in
 * exponential histograms), cached per attributes object. */
export class AttributeCache {
  readonly #byField = new Map<number, WeakMap<Attributes, Uint8Array>>();

  get(attributes: Attributes | undefined, field: number): Uint8Array {
    if (attributes === undefined || attributes === null) return EMPTY;
    let cache = this.#byField.get(field);
    if (!cache) this.#byField.set(field, (cache = new WeakMap()));
    let bytes = cache.get(attributes);
    if (bytes === undefined) {
      bytes = encodeAttributes(attributes, field);
      cache.set(attributes, bytes);
    }
    return bytes;
  }
}
