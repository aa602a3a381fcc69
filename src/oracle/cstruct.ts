/**
 * C structs passed by value through Deno FFI. Deno computes the C layout itself from the
 * `{ struct: [...] }` field-type list; to read or patch a field we need the same offsets, so each
 * struct is declared once as named fields and both the Deno type and the offsets come from it
 * (x86-64 System V rules: every scalar is aligned to its size, the struct to its widest field).
 */

/** Field types used by llama.h's parameter structs. C `bool` is one byte: declare it as "bool". */
export type CFieldType = "bool" | "i8" | "u8" | "i32" | "u32" | "f32" | "i64" | "u64" | "usize" | "pointer";

const SIZE: Record<CFieldType, number> = {
  bool: 1,
  i8: 1,
  u8: 1,
  i32: 4,
  u32: 4,
  f32: 4,
  i64: 8,
  u64: 8,
  usize: 8,
  pointer: 8,
};

/** A struct layout: the Deno FFI type, the byte size, and accessors for each named field. */
export class CStruct<Name extends string> {
  /** For `Deno.dlopen` parameter/result declarations. */
  readonly ffiType: { struct: Deno.NativeType[] };
  readonly size: number;
  readonly offsets: Record<Name, number>;
  readonly types: Record<Name, CFieldType>;

  constructor(readonly name: string, fields: readonly (readonly [Name, CFieldType])[]) {
    let offset = 0;
    let align = 1;
    const offsets = {} as Record<Name, number>;
    const types = {} as Record<Name, CFieldType>;
    for (const [field, type] of fields) {
      const size = SIZE[type];
      offset = Math.ceil(offset / size) * size;
      offsets[field] = offset;
      types[field] = type;
      offset += size;
      align = Math.max(align, size);
    }
    this.size = Math.ceil(offset / align) * align;
    this.offsets = offsets;
    this.types = types;
    // Deno has no distinct one-byte bool in structs we rely on; u8 has the same layout.
    this.ffiType = { struct: fields.map(([, t]) => (t === "bool" ? "u8" : t) as Deno.NativeType) };
  }

  /** Reads a field of a struct held in `bytes` (pointers come back as bigint addresses). */
  get(bytes: Uint8Array, field: Name): number | bigint | boolean {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const at = this.offsets[field];
    switch (this.types[field]) {
      case "bool":
        return view.getUint8(at) !== 0;
      case "i8":
        return view.getInt8(at);
      case "u8":
        return view.getUint8(at);
      case "i32":
        return view.getInt32(at, true);
      case "u32":
        return view.getUint32(at, true);
      case "f32":
        return view.getFloat32(at, true);
      case "i64":
        return view.getBigInt64(at, true);
      case "u64":
      case "usize":
      case "pointer":
        return view.getBigUint64(at, true);
    }
  }

  /** Writes a field of a struct held in `bytes`. Pointers take a bigint address (0n for NULL). */
  set(bytes: Uint8Array, field: Name, value: number | bigint | boolean): void {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const at = this.offsets[field];
    switch (this.types[field]) {
      case "bool":
        view.setUint8(at, value ? 1 : 0);
        return;
      case "i8":
        view.setInt8(at, Number(value));
        return;
      case "u8":
        view.setUint8(at, Number(value));
        return;
      case "i32":
        view.setInt32(at, Number(value), true);
        return;
      case "u32":
        view.setUint32(at, Number(value), true);
        return;
      case "f32":
        view.setFloat32(at, Number(value), true);
        return;
      case "i64":
        view.setBigInt64(at, BigInt(value), true);
        return;
      case "u64":
      case "usize":
      case "pointer":
        view.setBigUint64(at, BigInt(value), true);
        return;
    }
  }

  /** Zeroed storage for one struct. */
  alloc(): Uint8Array {
    return new Uint8Array(this.size);
  }
}
