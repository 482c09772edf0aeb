/**
 * C struct layouts as the ABI modules (./kvm.ts, ./linux.ts) spell them, and the lookup of a
 * field's offset.
 */

/** A field of a C struct: byte offset and size, in declaration order. */
export interface FieldLayout {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
}

/** A C struct as this project reads or writes it. `complete` means every field is listed. */
export interface StructLayout {
  readonly cName: string;
  readonly size: number;
  readonly complete: boolean;
  readonly fields: readonly FieldLayout[];
}

export function layout(cName: string, size: number, complete: boolean, fields: [string, number, number][]): StructLayout {
  return { cName, size, complete, fields: fields.map(([name, offset, fieldSize]) => ({ name, offset, size: fieldSize })) };
}

/** Field offset by name; throws if this module does not define it (a programming error). */
export function fieldOffset(struct: StructLayout, name: string): number {
  const field = struct.fields.find((f) => f.name === name);
  if (!field) throw new Error(`internal: ${struct.cName} has no field ${name} in src/abi/`);
  return field.offset;
}
