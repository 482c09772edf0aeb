/**
 * Attributes as OTLP protobuf KeyValues, encoded once per attributes object: the SDK and the
 * producer never change an attributes object once it is in a data point (the SDK keys its
 * series by them), and they hand the same object out at every collection.
 */
import type { Attributes } from '@opentelemetry/api';
import { AnyValue, ArrayValue, KeyValue, KeyValueList, WireType } from './otlp-schema.js';
import { Writer } from './wire.js';

const MIN_INT64 = -(2 ** 63);
const MAX_INT64 = 2 ** 63;

/** An AnyValue's fields, as otlp-transformer writes them: an integral number within int64 is
 * int_value, any other number double_value; a type OTLP has no field for writes nothing. */
function writeAnyValue(writer: Writer, value: unknown): void {
  const type = typeof value;
  if (type === 'string') {
    writer.byte(AnyValue.stringValue.tag);
    writer.string(value as string);
  } else if (type === 'boolean') {
    writer.byte(AnyValue.boolValue.tag);
    writer.byte(value ? 1 : 0);
  } else if (type === 'number') {
    const number = value as number;
    if (Number.isInteger(number) && number >= MIN_INT64 && number < MAX_INT64) {
      writer.byte(AnyValue.intValue.tag);
      writer.varint(number);
    } else {
      writer.byte(AnyValue.doubleValue.tag);
      writer.double(number);
    }
  } else if (value instanceof Uint8Array) {
    writer.byte(AnyValue.bytesValue.tag);
    writer.lengthDelimited(value);
  } else if (Array.isArray(value)) {
    const array = new Writer();
    for (const item of value) {
      array.byte(ArrayValue.values.tag);
      array.lengthDelimited(anyValue(item));
    }
    writer.byte(AnyValue.arrayValue.tag);
    writer.lengthDelimited(array.finish());
  } else if (type === 'object' && value !== null) {
    const list = new Writer();
    const object = value as Record<string, unknown>;
    for (const key in object) {
      if (!Object.prototype.hasOwnProperty.call(object, key)) continue;
      list.byte(KeyValueList.values.tag);
      list.lengthDelimited(keyValue(key, object[key]));
    }
    writer.byte(AnyValue.kvlistValue.tag);
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
  writer.byte(KeyValue.key.tag);
  writer.string(key);
  writer.byte(KeyValue.value.tag);
  writer.lengthDelimited(anyValue(value));
  return writer.finish();
}

/** The repeated KeyValue field `field` (tag included) for every own enumerable key. */
export function encodeAttributes(attributes: Attributes | undefined, field: number): Uint8Array {
  const writer = new Writer();
  if (attributes) {
    for (const key in attributes) {
      if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue;
      writer.tag(field, WireType.LEN);
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
