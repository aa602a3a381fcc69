/**
 * GGUF v3 writer (container layout: ../shared/spec §6).
 *
 * Metadata is encoded in memory (even a 250k-token vocabulary is a few MB); tensor data is
 * streamed: each tensor supplies a producer that yields its bytes chunk by chunk, so a multi-GB
 * model never sits in memory. The file is written to `<path>.partial` and renamed at the end, so a
 * failure leaves no half-written file behind.
 */
import { DeltaqError } from "../errors.ts";
import {
  GGML_TYPES,
  ggmlTypeName,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  type GgufValue,
  GgufValueType,
  tensorBytes,
} from "./types.ts";

export const GGUF_WRITE_VERSION = 3;
/** ggml's GGML_MAX_NAME is 64 bytes including the terminating NUL. */
const MAX_TENSOR_NAME_BYTES = 63;
/** ggml's GGML_MAX_DIMS. */
const MAX_DIMS = 4;

/**
 * A metadata value whose stored type the caller chooses. llama.cpp checks scalar key types
 * exactly (`qwen35.block_count` must be UINT32, `rope.freq_base` FLOAT32, ...), so say what you
 * mean: `u32(32)`, `f32(1e7)`, `array(GgufValueType.INT32, [11, 11, 10, 0])`.
 */
export class TypedValue {
  constructor(
    readonly type: GgufValueType,
    readonly value: GgufValue,
    /** Element type when `type` is ARRAY (inferred from the values when omitted). */
    readonly arrayType?: GgufValueType,
  ) {}
}

export const u8 = (v: number) => new TypedValue(GgufValueType.UINT8, v);
export const i8 = (v: number) => new TypedValue(GgufValueType.INT8, v);
export const u16 = (v: number) => new TypedValue(GgufValueType.UINT16, v);
export const i16 = (v: number) => new TypedValue(GgufValueType.INT16, v);
export const u32 = (v: number) => new TypedValue(GgufValueType.UINT32, v);
export const i32 = (v: number) => new TypedValue(GgufValueType.INT32, v);
export const f32 = (v: number) => new TypedValue(GgufValueType.FLOAT32, v);
export const f64 = (v: number) => new TypedValue(GgufValueType.FLOAT64, v);
export const u64 = (v: number | bigint) => new TypedValue(GgufValueType.UINT64, v);
export const i64 = (v: number | bigint) => new TypedValue(GgufValueType.INT64, v);
export const bool = (v: boolean) => new TypedValue(GgufValueType.BOOL, v);
export const str = (v: string) => new TypedValue(GgufValueType.STRING, v);
export const array = (elementType: GgufValueType, values: GgufValue[] | ArrayLike<number>) =>
  new TypedValue(GgufValueType.ARRAY, values as GgufValue, elementType);

/**
 * A metadata value. Plain values get a default type: string → STRING, boolean → BOOL,
 * bigint → UINT64 (INT64 if negative), whole number → UINT32 (INT32 if negative), other number →
 * FLOAT32; typed arrays keep their element type (Float32Array → FLOAT32, Int32Array → INT32,
 * Float64Array → FLOAT64, BigInt64Array → INT64, ...); plain arrays of whole numbers → INT32 (what
 * llama.cpp expects of `tokenizer.ggml.token_type`), of other numbers → FLOAT32, of strings →
 * STRING, of arrays → nested ARRAY. A FLOAT32 key that holds a whole number (`1e7`) must be
 * written as `f32(1e7)`.
 */
export type MetadataInput = GgufValue | Float64Array | BigInt64Array | BigUint64Array | TypedValue;

export interface TensorToWrite {
  name: string;
  /** ne0 first (contiguous). */
  shape: readonly number[];
  /** GGML type id (see GGML_TYPES). */
  type: number;
  /**
   * The tensor's bytes in order, in chunks of any size. Each chunk is consumed before the next
   * is requested, so a producer may refill one buffer.
   */
  data(): Iterable<Uint8Array> | AsyncIterable<Uint8Array>;
}

export interface GgufToWrite {
  /** Keys in file order. `general.alignment` (UINT32, a power of two) sets the data alignment. */
  metadata: Iterable<readonly [string, MetadataInput]>;
  tensors: readonly TensorToWrite[];
}

export interface WriteOptions {
  /** Called after each chunk of tensor data with bytes written so far and the file's size. */
  onProgress?: (written: number, total: number) => void;
}

/** Writes a GGUF file; returns its size in bytes. */
export async function writeGguf(
  path: string,
  gguf: GgufToWrite,
  options: WriteOptions = {},
): Promise<number> {
  const layout = layOut(path, gguf);
  const partial = `${path}.partial`;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(partial, { write: true, create: true, truncate: true }).catch((e) => {
      throw cannotWrite(path, e);
    });
    const out = new BufferedFile(file, path);
    await out.write(layout.header);
    await out.zeros(layout.dataOffset - layout.header.length);
    const progress = options.onProgress;
    for (let i = 0; i < gguf.tensors.length; i++) {
      const t = gguf.tensors[i];
      const expected = layout.byteLengths[i];
      let produced = 0;
      for await (const chunk of t.data()) {
        produced += chunk.length;
        if (produced > expected) break;
        await out.write(chunk);
        progress?.(out.position, layout.fileSize);
      }
      if (produced !== expected) {
        throw new DeltaqError(
          `${path}: tensor ${t.name} produced ${produced > expected ? "more than" : produced} bytes, ` +
            `expected ${expected} (${ggmlTypeName(t.type)} [${t.shape.join(", ")}])`,
        );
      }
      await out.zeros(padding(expected, layout.alignment));
    }
    await out.flush();
    if (out.position !== layout.fileSize) {
      throw new Error(`internal: wrote ${out.position} bytes, planned ${layout.fileSize}`);
    }
    file.close();
    file = undefined;
    await Deno.rename(partial, path).catch((e) => {
      throw cannotWrite(path, e);
    });
    return layout.fileSize;
  } catch (e) {
    file?.close();
    await Deno.remove(partial).catch(() => {});
    throw e;
  }
}

/** File-system failures (missing directory, no permission, disk full) are the user's to fix. */
function cannotWrite(path: string, e: unknown): DeltaqError {
  return new DeltaqError(`cannot write ${path}: ${(e as Error).message}`, { cause: e });
}

/** Encodes the header and computes where everything goes, validating the inputs. */
export function layOut(path: string, gguf: GgufToWrite): {
  header: Uint8Array;
  alignment: number;
  dataOffset: number;
  tensorOffsets: number[];
  byteLengths: number[];
  fileSize: number;
} {
  const fail = (what: string) => new DeltaqError(`${path}: ${what}`);
  const metadata = [...gguf.metadata];
  const seen = new Set<string>();
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  for (const [key, value] of metadata) {
    if (seen.has(key)) throw fail(`duplicate metadata key ${key}`);
    seen.add(key);
    if (key === "general.alignment") {
      const ok = value instanceof TypedValue
        ? value.type === GgufValueType.UINT32
        : typeof value === "number";
      const n = value instanceof TypedValue ? value.value : value;
      if (!ok || typeof n !== "number" || !Number.isInteger(n) || n <= 0 || (n & (n - 1)) !== 0) {
        throw fail(`general.alignment must be a UINT32 power of two, got ${String(n)}`);
      }
      alignment = n;
    }
  }

  const names = new Set<string>();
  const byteLengths: number[] = [];
  const tensorOffsets: number[] = [];
  let offset = 0;
  for (const t of gguf.tensors) {
    const nameBytes = utf8.encode(t.name).length;
    if (nameBytes === 0 || nameBytes > MAX_TENSOR_NAME_BYTES) {
      throw fail(`tensor name "${t.name}" must have 1..${MAX_TENSOR_NAME_BYTES} bytes`);
    }
    if (names.has(t.name)) throw fail(`duplicate tensor ${t.name}`);
    names.add(t.name);
    if (
      t.shape.length < 1 || t.shape.length > MAX_DIMS ||
      !t.shape.every((d) => Number.isSafeInteger(d) && d > 0)
    ) {
      throw fail(`tensor ${t.name} has bad shape [${t.shape.join(", ")}]`);
    }
    if (!GGML_TYPES[t.type]) throw fail(`tensor ${t.name} has unknown GGML type ${t.type}`);
    const bytes = tensorBytes(t.type, t.shape);
    if (bytes === undefined) {
      throw fail(
        `tensor ${t.name}: ne0 = ${t.shape[0]} is not a multiple of ${ggmlTypeName(t.type)}'s ` +
          `${GGML_TYPES[t.type].blockValues}-value blocks`,
      );
    }
    tensorOffsets.push(offset);
    byteLengths.push(bytes);
    offset += bytes + padding(bytes, alignment);
  }

  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_WRITE_VERSION);
  w.u64(gguf.tensors.length);
  w.u64(metadata.length);
  for (const [key, value] of metadata) {
    w.string(key);
    try {
      writeValue(w, value);
    } catch (e) {
      if (e instanceof ValueError) throw fail(`metadata ${key}: ${e.message}`);
      throw e;
    }
  }
  gguf.tensors.forEach((t, i) => {
    w.string(t.name);
    w.u32(t.shape.length);
    for (const d of t.shape) w.u64(d);
    w.u32(t.type);
    w.u64(tensorOffsets[i]);
  });
  const header = w.bytes();
  const dataOffset = header.length + padding(header.length, alignment);
  return { header, alignment, dataOffset, tensorOffsets, byteLengths, fileSize: dataOffset + offset };
}

function padding(n: number, alignment: number): number {
  return (alignment - (n % alignment)) % alignment;
}

// ---------------------------------------------------------------------------------------------
// Float tensors

export const GGML_F32 = 0;
export const GGML_F16 = 1;
export const GGML_BF16 = 30;

/**
 * A tensor of F32, F16 or BF16 values generated row by row: `fill(values, firstRow)` writes rows
 * `firstRow ..` (each `shape[0]` values) into `values`, whose length is a whole number of rows.
 * Only one chunk of about `chunkValues` values is held at a time.
 */
export function floatTensor(
  name: string,
  shape: readonly number[],
  type: number,
  fill: (values: Float32Array, firstRow: number) => void,
  chunkValues = 1 << 20,
): TensorToWrite {
  if (type !== GGML_F32 && type !== GGML_F16 && type !== GGML_BF16) {
    throw new DeltaqError(`floatTensor ${name}: type must be F32, F16 or BF16, not ${ggmlTypeName(type)}`);
  }
  const rowLength = shape[0];
  const rows = shape.slice(1).reduce((a, b) => a * b, 1);
  return {
    name,
    shape,
    type,
    *data() {
      const rowsPerChunk = Math.max(1, Math.min(rows, Math.floor(chunkValues / rowLength)));
      const values = new Float32Array(rowsPerChunk * rowLength);
      const halves = type === GGML_F32 ? undefined : new Uint16Array(values.length);
      for (let row = 0; row < rows; row += rowsPerChunk) {
        const n = Math.min(rowsPerChunk, rows - row) * rowLength;
        const part = values.subarray(0, n);
        fill(part, row);
        if (type === GGML_F32) {
          yield new Uint8Array(part.buffer, 0, n * 4);
        } else {
          const h = halves!.subarray(0, n);
          if (type === GGML_F16) encodeF16(part, h);
          else encodeBF16(part, h);
          yield new Uint8Array(h.buffer, 0, n * 2);
        }
      }
    },
  };
}

/**
 * IEEE binary16 bits of each value, rounded to nearest-even, with subnormals, ±Inf on overflow and
 * NaN kept (V8's Float16Array conversion implements exactly this rounding).
 */
export function encodeF16(src: Float32Array, dst: Uint16Array): void {
  if (dst.length < src.length) throw new RangeError("encodeF16: destination too short");
  new Float16Array(dst.buffer, dst.byteOffset, src.length).set(src);
}

/** bfloat16 bits of each value (upper half of the f32, rounded to nearest-even; NaN stays NaN), as ggml does. */
export function encodeBF16(src: Float32Array, dst: Uint16Array): void {
  if (dst.length < src.length) throw new RangeError("encodeBF16: destination too short");
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    if ((x & 0x7fffffff) > 0x7f800000) dst[i] = (x >>> 16) | 64; // quiet the NaN, keep its sign
    else dst[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
}

// ---------------------------------------------------------------------------------------------
// Metadata encoding

class ValueError extends Error {}

const utf8 = new TextEncoder();

function isTypedNumberArray(v: unknown): v is ArrayLike<number | bigint> & ArrayBufferView {
  return ArrayBuffer.isView(v) && !(v instanceof DataView);
}

function typedArrayElementType(v: ArrayBufferView): GgufValueType {
  if (v instanceof Float32Array) return GgufValueType.FLOAT32;
  if (v instanceof Float64Array) return GgufValueType.FLOAT64;
  if (v instanceof Int32Array) return GgufValueType.INT32;
  if (v instanceof Uint32Array) return GgufValueType.UINT32;
  if (v instanceof Int16Array) return GgufValueType.INT16;
  if (v instanceof Uint16Array) return GgufValueType.UINT16;
  if (v instanceof Int8Array) return GgufValueType.INT8;
  if (v instanceof Uint8Array) return GgufValueType.UINT8;
  if (v instanceof BigInt64Array) return GgufValueType.INT64;
  if (v instanceof BigUint64Array) return GgufValueType.UINT64;
  throw new ValueError(`unsupported array type ${v.constructor.name}`);
}

function inferType(v: unknown): GgufValueType {
  switch (typeof v) {
    case "string":
      return GgufValueType.STRING;
    case "boolean":
      return GgufValueType.BOOL;
    case "bigint":
      return v < 0n ? GgufValueType.INT64 : GgufValueType.UINT64;
    case "number":
      if (Number.isInteger(v) && v >= 0 && v <= 0xffffffff) return GgufValueType.UINT32;
      if (Number.isInteger(v) && v < 0 && v >= -0x80000000) return GgufValueType.INT32;
      return GgufValueType.FLOAT32;
  }
  if (Array.isArray(v) || isTypedNumberArray(v)) return GgufValueType.ARRAY;
  throw new ValueError(`cannot store a ${v === null ? "null" : typeof v} value`);
}

function inferArrayElementType(values: ArrayLike<unknown>): GgufValueType {
  if (isTypedNumberArray(values)) return typedArrayElementType(values);
  if (values.length === 0) throw new ValueError("an empty array needs an explicit element type");
  const first = values[0];
  if (typeof first === "number") {
    let whole = true;
    for (let i = 0; i < values.length; i++) {
      const x = values[i];
      if (typeof x !== "number") throw new ValueError("array mixes numbers with other values");
      if (!Number.isInteger(x) || x < -0x80000000 || x > 0x7fffffff) whole = false;
    }
    return whole ? GgufValueType.INT32 : GgufValueType.FLOAT32;
  }
  return inferType(first);
}

function writeValue(w: ByteWriter, input: MetadataInput): void {
  const typed = input instanceof TypedValue ? input : undefined;
  const value = typed ? typed.value : input;
  const type = typed ? typed.type : inferType(value);
  w.u32(type);
  if (type === GgufValueType.ARRAY) writeArrayBody(w, value, typed?.arrayType);
  else writeScalar(w, type, value);
}

/** Element type, count and elements; nested arrays repeat this for each element. */
function writeArrayBody(w: ByteWriter, value: unknown, forcedType?: GgufValueType): void {
  if (!Array.isArray(value) && !isTypedNumberArray(value)) throw new ValueError("ARRAY needs an array value");
  const elements = value as ArrayLike<unknown>;
  const elementType = forcedType ?? inferArrayElementType(elements);
  w.u32(elementType);
  w.u64(elements.length);
  for (let i = 0; i < elements.length; i++) {
    if (elementType === GgufValueType.ARRAY) writeArrayBody(w, elements[i]);
    else writeScalar(w, elementType, elements[i]);
  }
}

const INT_RANGES: Partial<Record<GgufValueType, [number, number]>> = {
  [GgufValueType.UINT8]: [0, 0xff],
  [GgufValueType.INT8]: [-0x80, 0x7f],
  [GgufValueType.UINT16]: [0, 0xffff],
  [GgufValueType.INT16]: [-0x8000, 0x7fff],
  [GgufValueType.UINT32]: [0, 0xffffffff],
  [GgufValueType.INT32]: [-0x80000000, 0x7fffffff],
};

function writeScalar(w: ByteWriter, type: GgufValueType, v: unknown): void {
  const range = INT_RANGES[type];
  if (range) {
    if (typeof v !== "number" || !Number.isInteger(v) || v < range[0] || v > range[1]) {
      throw new ValueError(`${String(v)} is not a valid ${GgufValueType[type]}`);
    }
  }
  switch (type) {
    case GgufValueType.UINT8:
      return w.u8(v as number);
    case GgufValueType.INT8:
      return w.u8((v as number) & 0xff);
    case GgufValueType.UINT16:
      return w.u16(v as number);
    case GgufValueType.INT16:
      return w.u16((v as number) & 0xffff);
    case GgufValueType.UINT32:
      return w.u32(v as number);
    case GgufValueType.INT32:
      return w.i32(v as number);
    case GgufValueType.FLOAT32:
      if (typeof v !== "number") throw new ValueError(`${String(v)} is not a number`);
      return w.f32(v);
    case GgufValueType.FLOAT64:
      if (typeof v !== "number") throw new ValueError(`${String(v)} is not a number`);
      return w.f64(v);
    case GgufValueType.BOOL:
      if (typeof v !== "boolean") throw new ValueError(`${String(v)} is not a boolean`);
      return w.u8(v ? 1 : 0);
    case GgufValueType.STRING:
      if (typeof v !== "string") throw new ValueError(`${String(v)} is not a string`);
      return w.string(v);
    case GgufValueType.UINT64:
    case GgufValueType.INT64: {
      const big = typeof v === "bigint"
        ? v
        : typeof v === "number" && Number.isSafeInteger(v)
        ? BigInt(v)
        : undefined;
      const unsigned = type === GgufValueType.UINT64;
      if (
        big === undefined ||
        (unsigned ? big < 0n || big >= 1n << 64n : big < -(1n << 63n) || big >= 1n << 63n)
      ) {
        throw new ValueError(`${String(v)} is not a valid ${GgufValueType[type]}`);
      }
      return unsigned ? w.u64(big) : w.i64(big);
    }
    default:
      throw new ValueError(`unknown value type ${type}`);
  }
}

/** Little-endian encoder into a growing buffer. */
class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  private pos = 0;

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number) {
    this.reserve(1);
    this.buf[this.pos++] = v;
  }
  u16(v: number) {
    this.reserve(2);
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
  }
  u32(v: number) {
    this.reserve(4);
    this.view.setUint32(this.pos, v, true);
    this.pos += 4;
  }
  i32(v: number) {
    this.reserve(4);
    this.view.setInt32(this.pos, v, true);
    this.pos += 4;
  }
  f32(v: number) {
    this.reserve(4);
    this.view.setFloat32(this.pos, v, true);
    this.pos += 4;
  }
  f64(v: number) {
    this.reserve(8);
    this.view.setFloat64(this.pos, v, true);
    this.pos += 8;
  }
  u64(v: number | bigint) {
    this.reserve(8);
    this.view.setBigUint64(this.pos, BigInt(v), true);
    this.pos += 8;
  }
  i64(v: bigint) {
    this.reserve(8);
    this.view.setBigInt64(this.pos, v, true);
    this.pos += 8;
  }
  string(s: string) {
    // UTF-8 needs at most 3 bytes per UTF-16 code unit.
    this.reserve(8 + s.length * 3);
    const { written } = utf8.encodeInto(s, this.buf.subarray(this.pos + 8));
    this.view.setBigUint64(this.pos, BigInt(written), true);
    this.pos += 8 + written;
  }
  bytes(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

/** Coalesces small writes into large ones; large chunks go straight through. */
class BufferedFile {
  private buf = new Uint8Array(1 << 22);
  private used = 0;
  position = 0;
  constructor(private file: Deno.FsFile, private path: string) {}

  async write(chunk: Uint8Array): Promise<void> {
    this.position += chunk.length;
    if (this.used + chunk.length <= this.buf.length) {
      this.buf.set(chunk, this.used);
      this.used += chunk.length;
      return;
    }
    await this.flush();
    if (chunk.length >= this.buf.length) await this.writeAll(chunk);
    else {
      this.buf.set(chunk);
      this.used = chunk.length;
    }
  }
  async zeros(n: number): Promise<void> {
    if (n > 0) await this.write(new Uint8Array(n));
  }
  async flush(): Promise<void> {
    if (this.used === 0) return;
    await this.writeAll(this.buf.subarray(0, this.used));
    this.used = 0;
  }
  private async writeAll(bytes: Uint8Array): Promise<void> {
    try {
      let done = 0;
      while (done < bytes.length) done += await this.file.write(bytes.subarray(done));
    } catch (e) {
      throw cannotWrite(this.path, e);
    }
  }
}
