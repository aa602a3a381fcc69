/**
 * GGUF reader. Parses the header (metadata and tensor table) from bytes the caller provides — for
 * models, a zero-copy view of the native file mapping; for small files, bytes read from disk —
 * and validates everything before anyone touches a tensor: every count and length is bounded by
 * the bytes that remain (no allocation is driven by an unchecked number), value and tensor types
 * are known, tensors lie inside the file, are aligned and do not overlap.
 *
 * Errors are DeltaqError messages that start with the file name, e.g.
 * `model.gguf: tensor blk.3.ssm_out.weight extends past end of file (offset …, size …, file …)`.
 */
import { DeltaqError } from "../errors.ts";
import {
  GGML_TYPES,
  REMOVED_GGML_TYPES,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_SCALAR_SIZE,
  type GgufFile,
  type GgufTensorInfo,
  type GgufValue,
  GgufValueType,
  tensorBytes,
} from "./types.ts";

/** Limits that keep a hostile header from making us do unbounded work. */
const MAX_DIMS = 4;
const MAX_NAME_BYTES = 64 * 1024;
const MAX_ARRAY_DEPTH = 4;
/**
 * A string value or array this long is corruption, not data (real vocabularies have < 1M
 * entries, chat templates a few KB); the caps keep a bad count from building a JS value the size
 * of the file (V8 cannot hold a string over ~512 MB and would die out of memory first).
 */
const MAX_STRING_BYTES = 64 << 20;
const MAX_ARRAY_LENGTH = 1 << 24;

/** Thrown internally when the parse needs bytes beyond what it was given. */
class NeedMoreBytes extends Error {}

/** Strict: a string that is not UTF-8 is reported, never silently turned into U+FFFD. */
const utf8 = new TextDecoder("utf-8", { fatal: true });


class Cursor {
  at = 0;
  readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    readonly fileSize: number,
    readonly file: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(what: string): never {
    throw new DeltaqError(`${this.file}: ${what}`);
  }

  /** Ensures n more bytes exist in the file (else: corrupt) and in the buffer (else: read more). */
  need(n: number, what: string): void {
    if (n < 0 || this.at + n > this.fileSize) {
      this.fail(`${what} needs ${n} bytes at offset ${this.at}, past the end of the file (${this.fileSize} bytes); the file is truncated or corrupt`);
    }
    if (this.at + n > this.bytes.length) throw new NeedMoreBytes();
  }

  u8(what: string): number {
    this.need(1, what);
    return this.view.getUint8(this.at++);
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.at, true);
    this.at += 4;
    return v;
  }
  /** A u64 as a number; values beyond 2^53 are reported as corrupt (no real count is that big). */
  count(what: string): number {
    this.need(8, what);
    const lo = this.view.getUint32(this.at, true);
    const hi = this.view.getUint32(this.at + 4, true);
    this.at += 8;
    if (hi >= 0x200000) this.fail(`${what} is ${(BigInt(hi) << 32n) | BigInt(lo)}, which is impossibly large`);
    return hi * 2 ** 32 + lo;
  }
  string(what: string, maxBytes = MAX_STRING_BYTES): string {
    const len = this.count(`length of ${what}`);
    if (len > maxBytes) this.fail(`${what} is ${len} bytes long (limit ${maxBytes})`);
    this.need(len, what);
    let s: string;
    try {
      s = utf8.decode(this.bytes.subarray(this.at, this.at + len));
    } catch {
      return this.fail(`${what} is not valid UTF-8 (at offset ${this.at})`);
    }
    this.at += len;
    return s;
  }
  /**
   * A key or tensor name. Control characters are refused: names end up in `info` output and error
   * messages, where an escape sequence from a hostile file would reach the user's terminal.
   */
  name(what: string): string {
    const s = this.string(what, MAX_NAME_BYTES);
    if (CONTROL_CHARACTER.test(s)) this.fail(`${what} contains control characters: ${JSON.stringify(s)}`);
    return s;
  }
}

// deno-lint-ignore no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

function readScalar(c: Cursor, type: GgufValueType, what: string): GgufValue {
  const size = GGUF_SCALAR_SIZE[type];
  if (size === undefined) return c.fail(`${what} has unknown value type ${type}`);
  c.need(size, what);
  const v = c.view;
  const at = c.at;
  c.at += size;
  switch (type) {
    case GgufValueType.UINT8:
      return v.getUint8(at);
    case GgufValueType.INT8:
      return v.getInt8(at);
    case GgufValueType.UINT16:
      return v.getUint16(at, true);
    case GgufValueType.INT16:
      return v.getInt16(at, true);
    case GgufValueType.UINT32:
      return v.getUint32(at, true);
    case GgufValueType.INT32:
      return v.getInt32(at, true);
    case GgufValueType.FLOAT32:
      return v.getFloat32(at, true);
    case GgufValueType.BOOL: {
      const b = v.getUint8(at);
      if (b > 1) c.fail(`${what} is a bool with byte value ${b}`);
      return b === 1;
    }
    case GgufValueType.UINT64: {
      const x = v.getBigUint64(at, true);
      return x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
    }
    case GgufValueType.INT64: {
      const x = v.getBigInt64(at, true);
      return x <= BigInt(Number.MAX_SAFE_INTEGER) && x >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(x) : x;
    }
    case GgufValueType.FLOAT64:
      return v.getFloat64(at, true);
  }
  return c.fail(`${what} has unknown value type ${type}`);
}

/** Numeric arrays become typed arrays (copied out of the file so they outlive the mapping). */
function readNumericArray(c: Cursor, type: GgufValueType, n: number, what: string): GgufValue {
  const size = GGUF_SCALAR_SIZE[type]!;
  c.need(n * size, what);
  const src = c.bytes.slice(c.at, c.at + n * size); // aligned copy
  c.at += n * size;
  switch (type) {
    case GgufValueType.UINT8:
      return src;
    case GgufValueType.INT8:
      return new Int8Array(src.buffer);
    case GgufValueType.UINT16:
      return new Uint16Array(src.buffer);
    case GgufValueType.INT16:
      return new Int16Array(src.buffer);
    case GgufValueType.UINT32:
      return new Uint32Array(src.buffer);
    case GgufValueType.INT32:
      return new Int32Array(src.buffer);
    case GgufValueType.FLOAT32:
      return new Float32Array(src.buffer);
  }
  // bool and 64-bit elements: plain arrays of checked scalars
  c.at -= n * size;
  const out: GgufValue[] = [];
  for (let i = 0; i < n; i++) out.push(readScalar(c, type, `${what}[${i}]`));
  return out;
}

function readValue(c: Cursor, type: GgufValueType, what: string, depth = 0): GgufValue {
  if (type === GgufValueType.STRING) return c.string(what);
  if (type !== GgufValueType.ARRAY) return readScalar(c, type, what);
  if (depth >= MAX_ARRAY_DEPTH) c.fail(`${what} nests arrays deeper than ${MAX_ARRAY_DEPTH}`);
  const elemType = c.u32(`element type of ${what}`);
  const n = c.count(`length of ${what}`);
  if (n > MAX_ARRAY_LENGTH) c.fail(`${what} claims ${n} elements (limit ${MAX_ARRAY_LENGTH})`);
  const size = GGUF_SCALAR_SIZE[elemType as GgufValueType];
  if (size !== undefined) return readNumericArray(c, elemType, n, what);
  if (elemType !== GgufValueType.STRING && elemType !== GgufValueType.ARRAY) {
    c.fail(`${what} has unknown element type ${elemType}`);
  }
  // Each string or array element takes at least 8 bytes: bound n by what is left before looping.
  if (n * 8 > c.fileSize - c.at) c.fail(`${what} claims ${n} elements, more than the file can hold`);
  const out: GgufValue[] = new Array(n);
  // One description for every element: building one per element costs more than parsing a
  // 250k-token vocabulary.
  const elementWhat = `an element of ${what}`;
  let i = 0;
  try {
    for (; i < n; i++) out[i] = readValue(c, elemType, elementWhat, depth + 1);
  } catch (e) {
    // Name the failing element after all (e.g. which token is not UTF-8): only costs on failure.
    if (e instanceof DeltaqError) e.message = e.message.replace(elementWhat, `${what}[${i}]`);
    throw e;
  }
  return out;
}

/** The type recorded for a metadata key (arrays also record their element type). */
function peekArrayType(c: Cursor, type: GgufValueType): GgufValueType | undefined {
  if (type !== GgufValueType.ARRAY) return undefined;
  c.need(4, "array element type");
  return c.view.getUint32(c.at, true);
}

function parse(bytes: Uint8Array, fileSize: number, file: string): GgufFile {
  const c = new Cursor(bytes, fileSize, file);
  if (fileSize < 24) c.fail(`too small to be a GGUF file (${fileSize} bytes)`);
  const magic = c.u32("magic");
  if (magic !== GGUF_MAGIC) c.fail("not a GGUF file (bad magic)");
  const version = c.u32("version");
  if (version !== 2 && version !== 3) c.fail(`unsupported GGUF version ${version} (deltaq reads versions 2 and 3)`);
  const nTensors = c.count("tensor count");
  const nKv = c.count("metadata count");
  // Every KV pair takes ≥ 12 bytes and every tensor info ≥ 28: bound the counts by the file size.
  if (nKv * 12 > fileSize) c.fail(`metadata count ${nKv} is more than the file can hold`);
  if (nTensors * 28 > fileSize) c.fail(`tensor count ${nTensors} is more than the file can hold`);

  const metadata = new Map<string, GgufValue>();
  const metadataTypes = new Map<string, { type: GgufValueType; arrayType?: GgufValueType }>();
  for (let i = 0; i < nKv; i++) {
    const key = c.name(`metadata key #${i}`);
    if (metadata.has(key)) c.fail(`metadata key ${key} appears twice`);
    const type = c.u32(`value type of ${key}`);
    if (type > GgufValueType.FLOAT64) c.fail(`metadata key ${key} has unknown value type ${type}`);
    const arrayType = peekArrayType(c, type);
    metadata.set(key, readValue(c, type, `metadata ${key}`));
    metadataTypes.set(key, arrayType === undefined ? { type } : { type, arrayType });
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (metadata.has("general.alignment")) {
    // Like llama.cpp: a UINT32 power of two (a float 0.5 would otherwise pass the bit test).
    const a = metadata.get("general.alignment");
    const type = metadataTypes.get("general.alignment")!.type;
    if (type !== GgufValueType.UINT32) {
      c.fail(`general.alignment must be stored as UINT32, not ${GgufValueType[type]}`);
    }
    if (typeof a !== "number" || a <= 0 || (a & (a - 1)) !== 0 || a > 1 << 20) {
      c.fail(`general.alignment must be a power of two up to ${1 << 20}, got ${String(a)}`);
    }
    alignment = a as number;
  }

  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = c.name(`name of tensor #${i}`);
    if (names.has(name)) c.fail(`tensor ${name} appears twice`);
    names.add(name);
    const nDims = c.u32(`dimension count of tensor ${name}`);
    if (nDims < 1 || nDims > MAX_DIMS) c.fail(`tensor ${name} has ${nDims} dimensions (1..${MAX_DIMS} allowed)`);
    const shape: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const ne = c.count(`dimension ${d} of tensor ${name}`);
      if (ne === 0) c.fail(`tensor ${name} has an empty dimension ${d}`);
      shape.push(ne);
    }
    const type = c.u32(`type of tensor ${name}`);
    if (!GGML_TYPES[type]) {
      const removed = REMOVED_GGML_TYPES[type];
      c.fail(`tensor ${name} has unknown type id ${type}${removed ? ` (${removed}, which llama.cpp has removed from GGUF)` : ""}`);
    }
    const offset = c.count(`offset of tensor ${name}`);
    const byteLength = tensorBytes(type, shape);
    if (byteLength === undefined) {
      return c.fail(`tensor ${name}: row of ${shape[0]} values is not a whole number of ${GGML_TYPES[type].name} blocks (${GGML_TYPES[type].blockValues})`);
    }
    if (!Number.isSafeInteger(byteLength)) c.fail(`tensor ${name} is impossibly large (shape ${shape.join("×")})`);
    if (offset % alignment !== 0) c.fail(`tensor ${name} offset ${offset} is not a multiple of the alignment ${alignment}`);
    tensors.push({ name, shape, type, offset, fileOffset: 0, byteLength: byteLength as number });
  }

  const dataOffset = Math.ceil(c.at / alignment) * alignment;
  if (nTensors > 0 && dataOffset > fileSize) c.fail(`tensor data would start at ${dataOffset}, past the end of the file (${fileSize} bytes)`);
  for (const t of tensors) {
    t.fileOffset = dataOffset + t.offset;
    if (t.fileOffset + t.byteLength > fileSize) {
      c.fail(`tensor ${t.name} extends past end of file (offset ${t.fileOffset}, size ${t.byteLength}, file ${fileSize})`);
    }
  }
  const byStart = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1];
    if (prev.offset + prev.byteLength > byStart[i].offset) {
      c.fail(`tensors ${prev.name} and ${byStart[i].name} overlap`);
    }
  }
  return { version, metadata, metadataTypes, tensors, alignment, dataOffset, fileSize };
}

/**
 * Parses a GGUF header from `bytes`, which must start at the beginning of the file and hold at
 * least the whole header (a full-file view is simplest). `fileSize` defaults to `bytes.length`.
 */
export function parseGguf(bytes: Uint8Array, file: string, fileSize = bytes.length): GgufFile {
  try {
    return parse(bytes, fileSize, file);
  } catch (e) {
    if (e instanceof NeedMoreBytes) {
      throw new DeltaqError(`${file}: the header is longer than the ${bytes.length} bytes provided`);
    }
    throw e;
  }
}

/** A user-facing error for a path that cannot be used (the OS message repeats the path). */
function pathError(path: string, e: unknown): DeltaqError {
  if (e instanceof Deno.errors.NotFound) return new DeltaqError(`${path}: no such file`);
  if (e instanceof Deno.errors.PermissionDenied) return new DeltaqError(`${path}: permission denied`);
  if (e instanceof Deno.errors.NotADirectory) return new DeltaqError(`${path}: a parent of this path is not a directory`);
  const message = (e as Error).message.replace(/: \w+ '.*'$/s, "");
  return new DeltaqError(`${path}: cannot open (${message})`, { cause: e });
}

/**
 * Checks that `path` names a non-empty regular file before anything opens or maps it (opening a
 * FIFO would block forever; a directory or device is a user mistake worth naming).
 */
export function checkGgufPath(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    throw pathError(path, e);
  }
  if (info.isDirectory) throw new DeltaqError(`${path}: is a directory, not a GGUF file`);
  if (!info.isFile) throw new DeltaqError(`${path}: not a regular file`);
  if (info.size === 0) throw new DeltaqError(`${path}: the file is empty`);
}

/**
 * Reads and parses a GGUF file's header from disk without reading tensor data (the header is read
 * in growing chunks until it parses).
 */
export function readGgufHeader(path: string): GgufFile {
  checkGgufPath(path);
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (e) {
    throw pathError(path, e);
  }
  try {
    const fileSize = file.statSync().size;
    // 16 MiB holds the header of every real model (a 250k-token vocabulary is ~10 MB), so the
    // header is normally parsed once; bigger ones are re-read with a 4× larger buffer.
    let chunk = 16 << 20;
    while (true) {
      const want = Math.min(chunk, fileSize);
      const buf = new Uint8Array(want);
      file.seekSync(0, Deno.SeekMode.Start);
      let got = 0;
      while (got < want) {
        const n = file.readSync(buf.subarray(got));
        if (n === null) break;
        got += n;
      }
      try {
        return parse(buf.subarray(0, got), fileSize, path);
      } catch (e) {
        if (!(e instanceof NeedMoreBytes) || want >= fileSize) throw e;
        chunk *= 4;
      }
    }
  } finally {
    file.close();
  }
}

const INTEGER_TYPES: ReadonlySet<GgufValueType> = new Set([
  GgufValueType.UINT8,
  GgufValueType.INT8,
  GgufValueType.UINT16,
  GgufValueType.INT16,
  GgufValueType.UINT32,
  GgufValueType.INT32,
  GgufValueType.UINT64,
  GgufValueType.INT64,
]);
const NUMBER_TYPES: ReadonlySet<GgufValueType> = new Set([...INTEGER_TYPES, GgufValueType.FLOAT32, GgufValueType.FLOAT64]);

/** Typed metadata accessors that name the file and key in their errors. */
export class Metadata {
  constructor(readonly gguf: GgufFile, readonly file: string) {}

  has(key: string): boolean {
    return this.gguf.metadata.has(key);
  }

  get(key: string): GgufValue | undefined {
    return this.gguf.metadata.get(key);
  }

  #missing(key: string): never {
    throw new DeltaqError(`${this.file}: required metadata key ${key} is missing`);
  }

  string(key: string): string;
  string(key: string, fallback: string): string;
  string(key: string, fallback: string | undefined): string | undefined;
  string(key: string, fallback?: string): string | undefined {
    const v = this.gguf.metadata.get(key);
    if (v === undefined) return arguments.length > 1 ? fallback : this.#missing(key);
    if (typeof v !== "string") throw new DeltaqError(`${this.file}: metadata ${key} should be a string`);
    return v;
  }

  /** Rejects a key stored with a type outside `allowed` (e.g. a count written as a float or string). */
  #checkType(key: string, allowed: ReadonlySet<GgufValueType>, expected: string): void {
    const type = this.gguf.metadataTypes.get(key)?.type;
    if (type !== undefined && !allowed.has(type)) {
      throw new DeltaqError(`${this.file}: metadata ${key} is stored as ${GgufValueType[type]}, expected ${expected}`);
    }
  }

  /** A non-negative integer (any integer storage type). */
  uint(key: string): number;
  uint(key: string, fallback: number): number;
  uint(key: string, fallback: number | undefined): number | undefined;
  uint(key: string, fallback?: number): number | undefined {
    const v = this.gguf.metadata.get(key);
    if (v === undefined) return arguments.length > 1 ? fallback : this.#missing(key);
    this.#checkType(key, INTEGER_TYPES, "an integer");
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      throw new DeltaqError(`${this.file}: metadata ${key} should be a non-negative integer, got ${String(v)}`);
    }
    return v;
  }

  float(key: string): number;
  float(key: string, fallback: number): number;
  float(key: string, fallback: number | undefined): number | undefined;
  float(key: string, fallback?: number): number | undefined {
    const v = this.gguf.metadata.get(key);
    if (v === undefined) return arguments.length > 1 ? fallback : this.#missing(key);
    this.#checkType(key, NUMBER_TYPES, "a number");
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new DeltaqError(`${this.file}: metadata ${key} should be a finite number, got ${String(v)}`);
    }
    return v;
  }

  /** An array (typed arrays converted to plain number arrays only when asked via `numbers`). */
  array(key: string): GgufValue[] | ArrayLike<number> | undefined {
    const v = this.gguf.metadata.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) && !ArrayBuffer.isView(v)) throw new DeltaqError(`${this.file}: metadata ${key} should be an array`);
    return v as GgufValue[] | ArrayLike<number>;
  }

  strings(key: string): string[] | undefined {
    const v = this.array(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) {
      throw new DeltaqError(`${this.file}: metadata ${key} should be an array of strings`);
    }
    return v as string[];
  }

  numbers(key: string): ArrayLike<number> | undefined {
    const v = this.array(key);
    if (v === undefined) return undefined;
    if (Array.isArray(v)) {
      if (v.some((x) => typeof x !== "number" && typeof x !== "boolean")) {
        throw new DeltaqError(`${this.file}: metadata ${key} should be an array of numbers`);
      }
      return v.map(Number);
    }
    return v as ArrayLike<number>;
  }
}
