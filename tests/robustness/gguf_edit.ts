/**
 * Byte-level surgery on GGUF files, for the broken-file tests and the fuzzer: `scanGguf` maps a
 * valid file's header field by field (where each count, length, type and offset is stored), and
 * `encodeGguf` writes a header from raw parts without any of the writer's validation, so a test
 * can build exactly the inconsistency it wants (duplicate keys, overlapping tensors, a count that
 * lies) on top of a real model's bytes.
 */
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_SCALAR_SIZE, GgufValueType } from "../../src/gguf/types.ts";

/** A metadata entry: key, value type, and the value's encoded bytes (everything after the type). */
export interface RawKv {
  key: string;
  type: number;
  value: Uint8Array;
}

export interface RawTensor {
  name: string;
  /** ne0 first. bigint so a test can store any u64. */
  dims: bigint[];
  type: number;
  /** Offset from the start of the data section. */
  offset: bigint;
}

/** Where a KV pair's fields are stored in the file. */
export interface KvField extends RawKv {
  /** Offset of the key's u64 length. */
  at: number;
  typeAt: number;
  valueAt: number;
  /** For arrays: offset of the element type and of the u64 element count. */
  arrayTypeAt?: number;
  arrayCountAt?: number;
  arrayType?: number;
  /** For string values and arrays of strings: offsets of each string's u64 length. */
  stringLengthsAt: number[];
  end: number;
}

export interface TensorField extends RawTensor {
  at: number;
  nDimsAt: number;
  neAt: number[];
  typeAt: number;
  offsetAt: number;
  end: number;
}

export interface GgufMap {
  bytes: Uint8Array;
  version: number;
  kvs: KvField[];
  tensors: TensorField[];
  /** End of the tensor infos (before padding). */
  headerEnd: number;
  alignment: number;
  dataOffset: number;
}


const utf8 = new TextDecoder();
const encoder = new TextEncoder();

/**
 * Maps a well-formed GGUF. It trusts the file's structure (use it on valid bases) but never reads
 * or loops past the end: a corrupt file throws a plain Error.
 */
export function scanGguf(bytes: Uint8Array): GgufMap {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const u32 = () => {
    const v = view.getUint32(at, true);
    at += 4;
    return v;
  };
  const u64 = () => {
    const v = view.getBigUint64(at, true);
    at += 8;
    return v;
  };
  const str = () => {
    const n = Number(u64());
    const s = utf8.decode(bytes.subarray(at, at + n));
    at += n;
    return s;
  };
  if (u32() !== GGUF_MAGIC) throw new Error("scanGguf: not a GGUF file");
  const version = u32();
  const nTensors = Number(u64());
  const nKv = Number(u64());
  const kvs: KvField[] = [];
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  for (let i = 0; i < nKv; i++) {
    if (at >= bytes.length) throw new Error("scanGguf: past the end of the file");
    const start = at;
    const key = str();
    const typeAt = at;
    const type = u32();
    const valueAt = at;
    const field: KvField = {
      key,
      type,
      value: new Uint8Array(),
      at: start,
      typeAt,
      valueAt,
      stringLengthsAt: [],
      end: 0,
    };
    const skip = (t: number) => {
      if (t === GgufValueType.STRING) {
        field.stringLengthsAt.push(at);
        str();
      } else if (GGUF_SCALAR_SIZE[t as GgufValueType] !== undefined) at += GGUF_SCALAR_SIZE[t as GgufValueType]!;
      else throw new Error(`scanGguf: unknown value type ${t}`);
      if (at > bytes.length) throw new Error("scanGguf: past the end of the file");
    };
    if (type === GgufValueType.ARRAY) {
      field.arrayTypeAt = at;
      field.arrayType = u32();
      field.arrayCountAt = at;
      const n = Number(u64());
      if (field.arrayType === GgufValueType.ARRAY) throw new Error("scanGguf: nested arrays are not mapped");
      for (let j = 0; j < n; j++) skip(field.arrayType);
    } else skip(type);
    field.end = at;
    field.value = bytes.slice(valueAt, at);
    if (key === "general.alignment") alignment = view.getUint32(valueAt, true);
    kvs.push(field);
  }
  const tensors: TensorField[] = [];
  for (let i = 0; i < nTensors; i++) {
    if (at >= bytes.length) throw new Error("scanGguf: past the end of the file");
    const start = at;
    const name = str();
    const nDimsAt = at;
    const nDims = u32();
    const neAt: number[] = [];
    const dims: bigint[] = [];
    if (nDims > 8) throw new Error(`scanGguf: ${nDims} dimensions`);
    for (let d = 0; d < nDims; d++) {
      neAt.push(at);
      dims.push(u64());
    }
    const typeAt = at;
    const type = u32();
    const offsetAt = at;
    const offset = u64();
    tensors.push({ name, dims, type, offset, at: start, nDimsAt, neAt, typeAt, offsetAt, end: at });
  }
  const headerEnd = at;
  const dataOffset = Math.ceil(headerEnd / alignment) * alignment;
  return { bytes, version, kvs, tensors, headerEnd, alignment, dataOffset };
}

export interface GgufParts {
  magic?: number;
  version?: number;
  kvs: RawKv[];
  tensors: RawTensor[];
  /** Bytes after the header, placed at the next multiple of `alignment`. */
  data: Uint8Array;
  /** Pads the header to this (default: the file's general.alignment, else 32). */
  alignment?: number;
  /** Counts written in the header when they should lie about the entries that follow. */
  nTensors?: bigint;
  nKv?: bigint;
}

/** The parts of a mapped file, ready to edit and re-encode. */
export function partsOf(map: GgufMap): GgufParts {
  return {
    version: map.version,
    kvs: map.kvs.map(({ key, type, value }) => ({ key, type, value })),
    tensors: map.tensors.map(({ name, dims, type, offset }) => ({ name, dims: dims.slice(), type, offset })),
    data: map.bytes.subarray(map.dataOffset),
    alignment: map.alignment,
  };
}

/** Writes a GGUF from raw parts (no validation: that is the point). */
export function encodeGguf(p: GgufParts): Uint8Array {
  const w = new Bytes();
  w.u32(p.magic ?? GGUF_MAGIC);
  w.u32(p.version ?? 3);
  w.u64(p.nTensors ?? BigInt(p.tensors.length));
  w.u64(p.nKv ?? BigInt(p.kvs.length));
  for (const kv of p.kvs) {
    w.string(kv.key);
    w.u32(kv.type);
    w.raw(kv.value);
  }
  for (const t of p.tensors) {
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(t.offset);
  }
  const alignment = p.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const header = w.bytes();
  const dataOffset = Math.ceil(header.length / alignment) * alignment;
  const out = new Uint8Array(dataOffset + p.data.length);
  out.set(header);
  out.set(p.data, dataOffset);
  return out;
}

/** Little-endian encoder for headers and raw metadata values. */
export class Bytes {
  #buf = new Uint8Array(1024);
  #view = new DataView(this.#buf.buffer);
  #at = 0;

  #reserve(n: number) {
    if (this.#at + n <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.#at + n));
    next.set(this.#buf.subarray(0, this.#at));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
  u8(v: number): this {
    this.#reserve(1);
    this.#view.setUint8(this.#at, v);
    this.#at += 1;
    return this;
  }
  u32(v: number): this {
    this.#reserve(4);
    this.#view.setUint32(this.#at, v >>> 0, true);
    this.#at += 4;
    return this;
  }
  i32(v: number): this {
    this.#reserve(4);
    this.#view.setInt32(this.#at, v, true);
    this.#at += 4;
    return this;
  }
  f32(v: number): this {
    this.#reserve(4);
    this.#view.setFloat32(this.#at, v, true);
    this.#at += 4;
    return this;
  }
  f64(v: number): this {
    this.#reserve(8);
    this.#view.setFloat64(this.#at, v, true);
    this.#at += 8;
    return this;
  }
  u64(v: bigint | number): this {
    this.#reserve(8);
    this.#view.setBigUint64(this.#at, BigInt.asUintN(64, BigInt(v)), true);
    this.#at += 8;
    return this;
  }
  raw(b: Uint8Array): this {
    this.#reserve(b.length);
    this.#buf.set(b, this.#at);
    this.#at += b.length;
    return this;
  }
  string(s: string | Uint8Array): this {
    const b = typeof s === "string" ? encoder.encode(s) : s;
    return this.u64(b.length).raw(b);
  }
  bytes(): Uint8Array {
    return this.#buf.slice(0, this.#at);
  }
}

/** Raw metadata values (type and encoded value) for building KV entries. */
export const value = {
  u32: (v: number): [number, Uint8Array] => [GgufValueType.UINT32, new Bytes().u32(v).bytes()],
  i32: (v: number): [number, Uint8Array] => [GgufValueType.INT32, new Bytes().i32(v).bytes()],
  u64: (v: bigint | number): [number, Uint8Array] => [GgufValueType.UINT64, new Bytes().u64(v).bytes()],
  f32: (v: number): [number, Uint8Array] => [GgufValueType.FLOAT32, new Bytes().f32(v).bytes()],
  f64: (v: number): [number, Uint8Array] => [GgufValueType.FLOAT64, new Bytes().f64(v).bytes()],
  bool: (
    v: boolean | number,
  ): [number, Uint8Array] => [GgufValueType.BOOL, new Bytes().u8(Number(v)).bytes()],
  string: (
    s: string | Uint8Array,
  ): [number, Uint8Array] => [GgufValueType.STRING, new Bytes().string(s).bytes()],
  /** An array header claiming `count` elements of `elementType`, followed by `body`. */
  array: (
    elementType: number,
    count: bigint | number,
    body: Uint8Array = new Uint8Array(),
  ): [number, Uint8Array] => [
    GgufValueType.ARRAY,
    new Bytes().u32(elementType).u64(count).raw(body).bytes(),
  ],
};

/** Sets a KV entry's value (replacing it in place, or appending it when absent). */
export function setKv(parts: GgufParts, key: string, [type, bytes]: [number, Uint8Array]): GgufParts {
  const kvs = parts.kvs.slice();
  const i = kvs.findIndex((kv) => kv.key === key);
  if (i >= 0) kvs[i] = { key, type, value: bytes };
  else kvs.push({ key, type, value: bytes });
  return { ...parts, kvs };
}

export function removeKv(parts: GgufParts, key: string): GgufParts {
  return { ...parts, kvs: parts.kvs.filter((kv) => kv.key !== key) };
}

/** Replaces one tensor's info (by name). */
export function editTensor(parts: GgufParts, name: string, edit: (t: RawTensor) => RawTensor): GgufParts {
  if (!parts.tensors.some((t) => t.name === name)) throw new Error(`editTensor: no tensor ${name}`);
  return {
    ...parts,
    tensors: parts.tensors.map((t) => (t.name === name ? edit({ ...t, dims: t.dims.slice() }) : t)),
  };
}

/** A copy of `bytes` with a little-endian u64 / u32 written at `at`. */
export function patchU64(bytes: Uint8Array, at: number, v: bigint | number): Uint8Array {
  const out = bytes.slice();
  new DataView(out.buffer).setBigUint64(at, BigInt.asUintN(64, BigInt(v)), true);
  return out;
}

export function patchU32(bytes: Uint8Array, at: number, v: number): Uint8Array {
  const out = bytes.slice();
  new DataView(out.buffer).setUint32(at, v >>> 0, true);
  return out;
}
