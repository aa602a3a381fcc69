/**
 * GGUF writer: metadata of every value type and tensor tables round-trip through the reader,
 * alignment is honoured, bad inputs fail with DeltaqErrors and leave no file, and F16/BF16
 * encoding matches scalar references written from the IEEE definitions.
 */
import assert from "node:assert/strict";
import { DeltaqError } from "../../src/errors.ts";
import { readGgufHeader } from "../../src/gguf/read.ts";
import { GgufValueType } from "../../src/gguf/types.ts";
import {
  array,
  bool,
  encodeBF16,
  encodeF16,
  f32,
  f64,
  floatTensor,
  GGML_BF16,
  GGML_F16,
  GGML_F32,
  i16,
  i32,
  i64,
  i8,
  type MetadataInput,
  str,
  type TensorToWrite,
  u16,
  u32,
  u64,
  u8,
  writeGguf,
} from "../../src/gguf/write.ts";
import { pathExists } from "../../src/util/fs.ts";

const dir = Deno.makeTempDirSync({ prefix: "deltaq-write-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** A tensor whose bytes are given, yielded in small uneven chunks. */
function bytesTensor(name: string, shape: number[], type: number, bytes: Uint8Array): TensorToWrite {
  return {
    name,
    shape,
    type,
    *data() {
      for (let at = 0; at < bytes.length; at += 7) yield bytes.subarray(at, Math.min(at + 7, bytes.length));
    },
  };
}

const T = GgufValueType;

Deno.test("every metadata value type round-trips with its stored type", async () => {
  const big = (1n << 63n) + 5n;
  const entries: [string, MetadataInput, GgufValueType, GgufValueType?][] = [
    ["t.u8", u8(250), T.UINT8],
    ["t.i8", i8(-100), T.INT8],
    ["t.u16", u16(65000), T.UINT16],
    ["t.i16", i16(-30000), T.INT16],
    ["t.u32", u32(4_000_000_000), T.UINT32],
    ["t.i32", i32(-2_000_000_000), T.INT32],
    ["t.f32", f32(1e7), T.FLOAT32],
    ["t.f64", f64(Math.PI), T.FLOAT64],
    ["t.u64", u64(big), T.UINT64],
    ["t.i64", i64(-(1n << 62n)), T.INT64],
    ["t.bool", bool(true), T.BOOL],
    ["t.str", str("héllo ✓"), T.STRING],
    // defaults for plain values
    ["d.whole", 7, T.UINT32],
    ["d.negative", -7, T.INT32],
    ["d.fraction", 0.5, T.FLOAT32],
    ["d.bool", false, T.BOOL],
    ["d.string", "x", T.STRING],
    ["d.bigint", 5n, T.UINT64],
    // arrays
    ["a.ints", [11, 11, 10, 0], T.ARRAY, T.INT32],
    ["a.floats", [0.5, 1], T.ARRAY, T.FLOAT32],
    ["a.strings", ["a b", "", "ĠĠ"], T.ARRAY, T.STRING],
    ["a.bools", array(T.BOOL, [true, false, true]), T.ARRAY, T.BOOL],
    ["a.u32", array(T.UINT32, [1, 2, 3]), T.ARRAY, T.UINT32],
    ["a.typed.f32", new Float32Array([1.5, -2]), T.ARRAY, T.FLOAT32],
    ["a.typed.i32", new Int32Array([1, -2]), T.ARRAY, T.INT32],
    ["a.typed.u8", new Uint8Array([1, 255]), T.ARRAY, T.UINT8],
    ["a.typed.f64", new Float64Array([1e300]), T.ARRAY, T.FLOAT64],
    ["a.empty", array(T.INT32, []), T.ARRAY, T.INT32],
    ["a.nested", [[1, 2], ["x"]], T.ARRAY, T.ARRAY],
  ];
  const path = `${dir}/meta.gguf`;
  await writeGguf(path, { metadata: entries.map(([k, v]) => [k, v] as const), tensors: [] });
  const g = readGgufHeader(path);
  assert.equal(g.version, 3);
  assert.deepEqual([...g.metadata.keys()], entries.map((e) => e[0]), "keys keep their order");
  for (const [key, , type, arrayType] of entries) {
    const t = g.metadataTypes.get(key)!;
    assert.equal(t.type, type, `${key} type`);
    if (arrayType !== undefined) assert.equal(t.arrayType, arrayType, `${key} element type`);
  }
  const v = (k: string) => g.metadata.get(k);
  assert.equal(v("t.u8"), 250);
  assert.equal(v("t.i8"), -100);
  assert.equal(v("t.u16"), 65000);
  assert.equal(v("t.i16"), -30000);
  assert.equal(v("t.u32"), 4_000_000_000);
  assert.equal(v("t.i32"), -2_000_000_000);
  assert.equal(v("t.f32"), 1e7);
  assert.equal(v("t.f64"), Math.PI);
  assert.equal(v("t.u64"), big);
  assert.equal(v("t.i64"), -(1n << 62n)); // beyond 2^53: the reader returns a bigint
  assert.equal(v("t.bool"), true);
  assert.equal(v("t.str"), "héllo ✓");
  assert.equal(v("d.fraction"), 0.5);
  assert.deepEqual(Array.from(v("a.ints") as ArrayLike<number>), [11, 11, 10, 0]);
  assert.deepEqual(Array.from(v("a.floats") as ArrayLike<number>), [0.5, 1]);
  assert.deepEqual(v("a.strings"), ["a b", "", "ĠĠ"]);
  assert.deepEqual(Array.from(v("a.bools") as ArrayLike<unknown>).map(Boolean), [true, false, true]);
  assert.deepEqual(Array.from(v("a.typed.f32") as ArrayLike<number>), [1.5, -2]);
  assert.deepEqual(Array.from(v("a.typed.u8") as ArrayLike<number>), [1, 255]);
  assert.deepEqual(Array.from(v("a.typed.f64") as ArrayLike<number>), [1e300]);
  assert.equal((v("a.empty") as ArrayLike<number>).length, 0);
  const nested = v("a.nested") as ArrayLike<unknown>[];
  assert.deepEqual(Array.from(nested[0] as ArrayLike<number>), [1, 2]);
  assert.deepEqual(nested[1], ["x"]);
});

Deno.test("tensor table: shapes, types, aligned offsets and data round-trip (alignment 32 and 64)", async () => {
  for (const alignment of [undefined, 64]) {
    const a = new Uint8Array(3 * 5 * 4).map((_, i) => i * 7 + 1); // F32 {3,5}: 60 bytes, not a multiple of 32
    const b = new Uint8Array(34 * 2).map((_, i) => 255 - i); // Q8_0 {64}: two 34-byte blocks
    const c = new Uint8Array(2 * 3 * 2 * 2).map((_, i) => i); // F16 {2,3,2}
    const path = `${dir}/tensors-${alignment ?? "default"}.gguf`;
    const metadata: [string, MetadataInput][] = [["general.architecture", "test"]];
    if (alignment) metadata.push(["general.alignment", u32(alignment)]);
    const size = await writeGguf(path, {
      metadata,
      tensors: [
        bytesTensor("a", [3, 5], GGML_F32, a),
        bytesTensor("blk.0.b", [64], 8, b),
        bytesTensor("c", [2, 3, 2], GGML_F16, c),
      ],
    });
    const g = readGgufHeader(path);
    const align = alignment ?? 32;
    assert.equal(g.alignment, align);
    assert.equal(g.fileSize, size);
    assert.equal(Deno.statSync(path).size, size);
    assert.equal(g.dataOffset % align, 0);
    assert.deepEqual(g.tensors.map((t) => [t.name, t.shape, t.type]), [
      ["a", [3, 5], GGML_F32],
      ["blk.0.b", [64], 8],
      ["c", [2, 3, 2], GGML_F16],
    ]);
    const file = Deno.readFileSync(path);
    for (const [t, want] of [[g.tensors[0], a], [g.tensors[1], b], [g.tensors[2], c]] as const) {
      assert.equal(t.offset % align, 0, `${t.name} offset aligned`);
      assert.equal(t.fileOffset, g.dataOffset + t.offset);
      assert.equal(t.byteLength, want.length);
      assert.deepEqual(file.subarray(t.fileOffset, t.fileOffset + t.byteLength), want, `${t.name} data`);
    }
    assert.equal(size % align, 0, "the last tensor is padded too");
    assert.ok(!pathExists(`${path}.partial`));
  }
});

Deno.test("floatTensor writes F32, F16 and BF16 rows in order, whatever the chunk size", async () => {
  const shape = [5, 7];
  const fill = (values: Float32Array, firstRow: number) => {
    for (let i = 0; i < values.length; i++) values[i] = (firstRow * 5 + i) * 0.37 - 3;
  };
  const expected = new Float32Array(35);
  fill(expected, 0);
  const path = `${dir}/float.gguf`;
  await writeGguf(path, {
    metadata: [],
    tensors: [
      floatTensor("f32", shape, GGML_F32, fill, 10), // two rows per chunk
      floatTensor("f16", shape, GGML_F16, fill, 1), // one row per chunk
      floatTensor("bf16", shape, GGML_BF16, fill),
    ],
  });
  const g = readGgufHeader(path);
  const file = Deno.readFileSync(path);
  const bytes = (i: number) =>
    file.slice(g.tensors[i].fileOffset, g.tensors[i].fileOffset + g.tensors[i].byteLength);
  assert.deepEqual(new Float32Array(bytes(0).buffer), expected);
  const h = new Uint16Array(35), bf = new Uint16Array(35);
  encodeF16(expected, h);
  encodeBF16(expected, bf);
  assert.deepEqual(new Uint16Array(bytes(1).buffer), h);
  assert.deepEqual(new Uint16Array(bytes(2).buffer), bf);
});

Deno.test("bad inputs fail with DeltaqError naming the problem and leave no file", async () => {
  const ok = (name = "t") => bytesTensor(name, [4], GGML_F32, new Uint8Array(16));
  const cases: [string, Parameters<typeof writeGguf>[1], RegExp][] = [
    ["duplicate key", { metadata: [["k", 1], ["k", 2]], tensors: [] }, /duplicate metadata key k/],
    ["alignment", { metadata: [["general.alignment", u32(48)]], tensors: [] }, /power of two/],
    ["alignment type", { metadata: [["general.alignment", i32(32)]], tensors: [] }, /power of two/],
    ["value range", { metadata: [["k", u8(256)]], tensors: [] }, /metadata k: 256 is not a valid UINT8/],
    ["empty array", { metadata: [["k", []]], tensors: [] }, /metadata k: an empty array needs/],
    ["duplicate tensor", { metadata: [], tensors: [ok(), ok()] }, /duplicate tensor t/],
    ["long name", { metadata: [], tensors: [ok("x".repeat(64))] }, /must have 1\.\.63 bytes/],
    [
      "bad shape",
      { metadata: [], tensors: [bytesTensor("t", [4, 0], GGML_F32, new Uint8Array())] },
      /bad shape/,
    ],
    [
      "blocks",
      { metadata: [], tensors: [bytesTensor("t", [100], 12, new Uint8Array())] },
      /not a multiple of Q4_K's 256-value blocks/,
    ],
    [
      "short data",
      { metadata: [], tensors: [bytesTensor("t", [4], GGML_F32, new Uint8Array(12))] },
      /produced 12 bytes, expected 16/,
    ],
    [
      "long data",
      { metadata: [], tensors: [bytesTensor("t", [4], GGML_F32, new Uint8Array(20))] },
      /produced more than bytes, expected 16/,
    ],
  ];
  for (const [what, gguf, message] of cases) {
    const path = `${dir}/bad-${what.replaceAll(" ", "-")}.gguf`;
    await assert.rejects(writeGguf(path, gguf), (e: Error) => {
      assert.ok(e instanceof DeltaqError, `${what}: ${e}`);
      assert.match(e.message, message, what);
      assert.ok(e.message.includes(path), `${what}: message names the file`);
      return true;
    });
    assert.ok(!pathExists(path) && !pathExists(`${path}.partial`), `${what}: nothing left behind`);
  }
});

Deno.test("a producer that throws midway leaves neither the file nor the partial file", async () => {
  const path = `${dir}/throws.gguf`;
  Deno.writeTextFileSync(path, "previous contents");
  const failing: TensorToWrite = {
    name: "t",
    shape: [1024],
    type: GGML_F32,
    *data() {
      yield new Uint8Array(2048);
      throw new Error("generator failed");
    },
  };
  await assert.rejects(writeGguf(path, { metadata: [], tensors: [failing] }), /generator failed/);
  assert.ok(!pathExists(`${path}.partial`));
  assert.equal(
    Deno.readTextFileSync(path),
    "previous contents",
    "an existing file is only replaced on success",
  );
});

// ---------------------------------------------------------------------------------------------
// F16 / BF16 encoding against scalar references written from the format definitions.

/** Exact value of IEEE binary16 bits. */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 31, frac = h & 1023;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  if (exp === 0) return sign * frac * 2 ** -24;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

/** Nearest half to x (ties to even mantissa), by search over the exactly representable values. */
function halfRef(x: number, finite: Float64Array): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00; // 65504 + half an ulp (32) rounds to Inf
  let lo = 0, hi = 0x7bff; // largest finite half
  while (lo < hi) { // first half ≥ a
    const mid = (lo + hi) >> 1;
    if (finite[mid] < a) lo = mid + 1;
    else hi = mid;
  }
  if (finite[lo] === a || lo === 0) return sign | lo;
  const below = lo - 1;
  const dBelow = a - finite[below], dAbove = finite[lo] - a;
  if (dBelow < dAbove) return sign | below;
  if (dAbove < dBelow) return sign | lo;
  return sign | (below % 2 === 0 ? below : lo);
}

Deno.test("encodeF16 rounds to nearest-even with subnormals, overflow and NaN (vs a scalar reference)", () => {
  const finite = new Float64Array(0x7c00);
  for (let h = 0; h < 0x7c00; h++) finite[h] = halfValue(h);
  const xs: number[] = [
    0,
    -0,
    Infinity,
    -Infinity,
    NaN,
    65504,
    65519.99,
    65520,
    1e-8,
    2 ** -25,
    2 ** -24 * 1.5,
    3e-5,
  ];
  for (let h = 0; h < 0x7c00; h++) {
    const v = finite[h];
    xs.push(v, -v);
    if (h + 1 < 0x7c00) {
      const mid = (v + finite[h + 1]) / 2; // exact tie (representable in f32)
      xs.push(mid, -mid, Math.fround(mid * (1 + 2 ** -20)), Math.fround(mid * (1 - 2 ** -20)));
    }
  }
  let s = 0x2545f491;
  for (let i = 0; i < 200_000; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    xs.push(new Float32Array(new Uint32Array([s >>> 0]).buffer)[0]); // any f32 bit pattern
  }
  const src = Float32Array.from(xs);
  const got = new Uint16Array(src.length);
  encodeF16(src, got);
  for (let i = 0; i < src.length; i++) {
    const want = halfRef(src[i], finite);
    if (Number.isNaN(src[i])) {
      assert.ok((got[i] & 0x7c00) === 0x7c00 && (got[i] & 0x3ff) !== 0, `NaN stays NaN`);
    } else if (got[i] !== want) {
      assert.fail(`encodeF16(${src[i]}) = 0x${got[i].toString(16)}, expected 0x${want.toString(16)}`);
    }
  }
});

Deno.test("encodeBF16 rounds to nearest-even and keeps NaN a NaN", () => {
  const bits = new Uint32Array([
    0x3f800000, // 1 → 0x3f80
    0x3f808000, // tie, even below → 0x3f80
    0x3f818000, // tie, odd below → 0x3f82
    0x3f808001, // above the tie → 0x3f81
    0xbf80ffff, // → 0xbf81
    0x7f7fffff, // max f32 rounds to Inf
    0x7f800000, // Inf
    0x7f800001, // signalling NaN must not become Inf
    0xffc00000, // -NaN
    0x00000001, // tiny subnormal → 0
  ]);
  const out = new Uint16Array(bits.length);
  encodeBF16(new Float32Array(bits.buffer), out);
  assert.deepEqual(Array.from(out, (h) => h.toString(16)), [
    "3f80",
    "3f80",
    "3f82",
    "3f81",
    "bf81",
    "7f80",
    "7f80",
    "7fc0",
    "ffc0",
    "0",
  ]);
});
