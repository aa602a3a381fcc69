/**
 * Broken and hostile model files, one per row: each is a valid micro model with exactly one thing
 * wrong, and must fail with a DeltaqError whose message starts with the file's path and names the
 * problem. Container problems must be caught the same way by both readers (the header read from
 * disk, for `info`, and the zero-copy parse of the mapping, for `loadModel`); model problems
 * (metadata and tensors vs the spec) by `loadModel`.
 */
import assert from "node:assert/strict";
import { loadModel } from "../../mod.ts";
import { DeltaqError } from "../../src/errors.ts";
import { readGgufHeader } from "../../src/gguf/read.ts";
import { GgufValueType } from "../../src/gguf/types.ts";
import { basePaths } from "./bases.ts";
import {
  Bytes,
  editTensor,
  encodeGguf,
  type GgufMap,
  type GgufParts,
  type KvField,
  partsOf,
  patchU32,
  patchU64,
  removeKv,
  scanGguf,
  setKv,
  type TensorField,
  value,
} from "./gguf_edit.ts";

const dir = Deno.makeTempDirSync({ prefix: "deltaq-broken-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

const paths = await basePaths();
const base = scanGguf(Deno.readFileSync(paths.micro));
const baseB = scanGguf(Deno.readFileSync(paths["micro-b"]));
const baseMoe = scanGguf(Deno.readFileSync(paths["micro-moe"]));

function kv(map: GgufMap, key: string): KvField {
  const f = map.kvs.find((k) => k.key === key);
  if (!f) throw new Error(`base has no key ${key}`);
  return f;
}
function tensor(map: GgufMap, name: string): TensorField {
  const t = map.tensors.find((x) => x.name === name);
  if (!t) throw new Error(`base has no tensor ${name}`);
  return t;
}
const parts = (map = base): GgufParts => partsOf(map);
const bytes = base.bytes;
const size = bytes.length;

/** The micro model's token list as raw strings (for edits of single tokens). */
function tokenStrings(map: GgufMap): Uint8Array[] {
  const f = kv(map, "tokenizer.ggml.tokens");
  const view = new DataView(map.bytes.buffer, map.bytes.byteOffset);
  return f.stringLengthsAt.map((at) => {
    const n = Number(view.getBigUint64(at, true));
    return map.bytes.slice(at + 8, at + 8 + n);
  });
}
function stringArray(strings: Uint8Array[]): [number, Uint8Array] {
  const body = new Bytes();
  for (const s of strings) body.string(s);
  return value.array(GgufValueType.STRING, strings.length, body.bytes());
}

/** Adds a dummy key that makes the header's length ≡ `remainder` (mod `modulus`). */
function withHeaderRemainder(p: GgufParts, modulus: number, remainder: number): GgufParts {
  for (let pad = 0; pad < modulus; pad++) {
    const q = setKv(p, "test.pad", value.string("x".repeat(pad)));
    const headerLength = encodeGguf({ ...q, data: new Uint8Array(), alignment: 1 }).length;
    if (headerLength % modulus === remainder) return q;
  }
  throw new Error("unreachable");
}

interface Case {
  name: string;
  /** The file's bytes (or a path to use as is). */
  file: () => Uint8Array;
  /** What the message must contain after `<path>: `. */
  expect: string | RegExp;
  /** "header": both header readers must fail; "model": only loading (config and weights) must. */
  level: "header" | "model";
}

const header = (name: string, file: () => Uint8Array, expect: string | RegExp): Case => ({
  name,
  file,
  expect,
  level: "header",
});
const model = (name: string, file: () => Uint8Array, expect: string | RegExp): Case => ({
  name,
  file,
  expect,
  level: "model",
});

const tokenEmbd = tensor(base, "token_embd.weight");
const outputNorm = tensor(base, "output_norm.weight");
const lastTensor = base.tensors.reduce((a, b) => (a.offset > b.offset ? a : b));

const cases: Case[] = [
  // --- container: header fields
  header("empty file", () => new Uint8Array(), "the file is empty"),
  header("shorter than a header", () => bytes.slice(0, 10), "too small to be a GGUF file (10 bytes)"),
  header("bad magic", () => patchU32(bytes, 0, 0x46554748), "not a GGUF file (bad magic)"),
  header("version 1", () => patchU32(bytes, 4, 1), "unsupported GGUF version 1"),
  header("version 4", () => patchU32(bytes, 4, 4), "unsupported GGUF version 4"),
  header(
    "tensor count larger than the file",
    () => patchU64(bytes, 8, 1n << 40n),
    "tensor count 1099511627776 is more than the file can hold",
  ),
  header(
    "tensor count 2^64-1",
    () => patchU64(bytes, 8, (1n << 64n) - 1n),
    "tensor count is 18446744073709551615, which is impossibly large",
  ),
  header(
    "metadata count larger than the file",
    () => patchU64(bytes, 16, 1n << 33n),
    "metadata count 8589934592 is more than the file can hold",
  ),
  header(
    "metadata count 2^63",
    () => patchU64(bytes, 16, 1n << 63n),
    "metadata count is 9223372036854775808, which is impossibly large",
  ),
  // --- container: metadata
  header(
    "key length past the end of the file",
    () => patchU64(bytes.slice(0, 1000), base.kvs[0].at, 5000),
    "metadata key #0 needs 5000 bytes at offset 32, past the end of the file (1000 bytes); the file is truncated or corrupt",
  ),
  header(
    "key length over the name limit",
    () => patchU64(bytes, base.kvs[0].at, 1n << 40n),
    "metadata key #0 is 1099511627776 bytes long (limit 65536)",
  ),
  header(
    "string value longer than the file",
    () => patchU64(bytes, kv(base, "general.name").valueAt, size),
    /metadata general\.name needs \d+ bytes at offset \d+, past the end of the file \(\d+ bytes\); the file is truncated or corrupt/,
  ),
  header(
    "string value over the string limit",
    () => patchU64(bytes, kv(base, "general.name").valueAt, 1n << 30n),
    "metadata general.name is 1073741824 bytes long (limit 67108864)",
  ),
  header(
    "array count over the limit",
    () => patchU64(bytes, kv(base, "tokenizer.ggml.tokens").arrayCountAt!, 1n << 40n),
    "metadata tokenizer.ggml.tokens claims 1099511627776 elements (limit 16777216)",
  ),
  header(
    "string array count larger than the file",
    () => patchU64(bytes, kv(base, "tokenizer.ggml.tokens").arrayCountAt!, 1 << 23),
    "metadata tokenizer.ggml.tokens claims 8388608 elements, more than the file can hold",
  ),
  header(
    "numeric array count larger than the file",
    () => patchU64(bytes, kv(base, "tokenizer.ggml.token_type").arrayCountAt!, 1 << 23),
    /metadata tokenizer\.ggml\.token_type needs 33554432 bytes at offset \d+, past the end of the file/,
  ),
  header(
    "unknown value type",
    () => patchU32(bytes, kv(base, "general.name").typeAt, 13),
    "metadata key general.name has unknown value type 13",
  ),
  header(
    "unknown array element type",
    () => patchU32(bytes, kv(base, "tokenizer.ggml.tokens").arrayTypeAt!, 99),
    "metadata tokenizer.ggml.tokens has unknown element type 99",
  ),
  header("arrays nested too deep", () => {
    let body = value.array(GgufValueType.UINT8, 0)[1];
    for (let i = 0; i < 5; i++) body = value.array(GgufValueType.ARRAY, 1, body)[1];
    return encodeGguf(setKv(parts(), "test.nested", [GgufValueType.ARRAY, body]));
  }, "metadata test.nested[0][0][0][0] nests arrays deeper than 4"),
  header(
    "bool that is neither 0 nor 1",
    () => encodeGguf(setKv(parts(), "test.flag", value.bool(2))),
    "metadata test.flag is a bool with byte value 2",
  ),
  header("duplicate metadata key", () => {
    const p = parts();
    return encodeGguf({ ...p, kvs: [...p.kvs, p.kvs.find((k) => k.key === "general.name")!] });
  }, "metadata key general.name appears twice"),
  header("key that is not UTF-8", () => {
    const p = parts();
    const out = encodeGguf(p);
    out[base.kvs[1].at + 8] = 0xff; // first byte of key #1
    return out;
  }, /metadata key #1 is not valid UTF-8 \(at offset \d+\)/),
  header(
    "string value that is not UTF-8",
    () => encodeGguf(setKv(parts(), "general.name", value.string(new Uint8Array([0x61, 0xc3, 0x28])))),
    /metadata general\.name is not valid UTF-8/,
  ),
  header(
    "key with a terminal escape sequence",
    () => encodeGguf(setKv(parts(), "general.\u001b[2Jtitle", value.string("x"))),
    String.raw`metadata key #${base.kvs.length} contains control characters: "general.\u001b[2Jtitle"`,
  ),
  header(
    "tensor name with a newline",
    () => encodeGguf(editTensor(parts(), outputNorm.name, (t) => ({ ...t, name: "output_norm\nweight" }))),
    String.raw`name of tensor #${
      base.tensors.indexOf(outputNorm)
    } contains control characters: "output_norm\nweight"`,
  ),
  header("token that is not UTF-8", () => {
    const tokens = tokenStrings(base);
    tokens[5] = new Uint8Array([0xed, 0xa0, 0x80]); // a UTF-16 surrogate encoded as UTF-8
    return encodeGguf(setKv(parts(), "tokenizer.ggml.tokens", stringArray(tokens)));
  }, /metadata tokenizer\.ggml\.tokens\[5\] is not valid UTF-8/),
  // --- container: alignment
  header(
    "alignment not a power of two",
    () => encodeGguf({ ...setKv(parts(), "general.alignment", value.u32(48)), alignment: 48 }),
    "general.alignment must be a power of two up to 1048576, got 48",
  ),
  header(
    "alignment zero",
    () => encodeGguf(setKv(parts(), "general.alignment", value.u32(0))),
    "general.alignment must be a power of two up to 1048576, got 0",
  ),
  header(
    "alignment stored as a float",
    () => encodeGguf(setKv(parts(), "general.alignment", value.f32(32))),
    "general.alignment must be stored as UINT32, not FLOAT32",
  ),
  header("alignment larger than tensor offsets allow", () => {
    const p = editTensor(
      setKv(parts(), "general.alignment", value.u32(64)),
      outputNorm.name,
      (t) => ({ ...t, offset: 96n }),
    );
    return encodeGguf({ ...p, alignment: 64 });
  }, "tensor output_norm.weight offset 96 is not a multiple of the alignment 64"),
  // --- container: tensor infos
  header("duplicate tensor", () => {
    const p = parts();
    return encodeGguf({ ...p, tensors: [...p.tensors, p.tensors.find((t) => t.name === outputNorm.name)!] });
  }, "tensor output_norm.weight appears twice"),
  header(
    "tensor with 0 dimensions",
    () => patchU32(bytes, outputNorm.nDimsAt, 0),
    "tensor output_norm.weight has 0 dimensions (1..4 allowed)",
  ),
  header(
    "tensor with 5 dimensions",
    () => encodeGguf(editTensor(parts(), outputNorm.name, (t) => ({ ...t, dims: [32n, 1n, 1n, 1n, 1n] }))),
    "tensor output_norm.weight has 5 dimensions (1..4 allowed)",
  ),
  header(
    "tensor with 2^32-1 dimensions",
    () => patchU32(bytes, outputNorm.nDimsAt, 0xffffffff),
    "tensor output_norm.weight has 4294967295 dimensions (1..4 allowed)",
  ),
  header(
    "empty dimension",
    () => patchU64(bytes, tokenEmbd.neAt[1], 0),
    "tensor token_embd.weight has an empty dimension 1",
  ),
  header(
    "dimension beyond 2^53",
    () => patchU64(bytes, tokenEmbd.neAt[1], 1n << 60n),
    "dimension 1 of tensor token_embd.weight is 1152921504606846976, which is impossibly large",
  ),
  header(
    "shape whose byte size overflows",
    () =>
      encodeGguf(
        editTensor(parts(), tokenEmbd.name, (t) => ({ ...t, dims: [1n << 26n, 1n << 26n, 1n << 26n] })),
      ),
    "tensor token_embd.weight is impossibly large (shape 67108864×67108864×67108864)",
  ),
  header(
    "unknown type id",
    () => patchU32(bytes, outputNorm.typeAt, 4),
    "tensor output_norm.weight has unknown type id 4 (Q4_2, which llama.cpp has removed from GGUF)",
  ),
  header(
    "type id 2^32-1",
    () => patchU32(bytes, outputNorm.typeAt, 0xffffffff),
    "tensor output_norm.weight has unknown type id 4294967295",
  ),
  header(
    "row not a whole number of blocks",
    () => patchU32(bytes, outputNorm.typeAt, 12),
    "tensor output_norm.weight: row of 32 values is not a whole number of Q4_K blocks (256)",
  ),
  header(
    "misaligned tensor offset",
    () => patchU64(bytes, outputNorm.offsetAt, outputNorm.offset + 1n),
    `tensor output_norm.weight offset ${outputNorm.offset + 1n} is not a multiple of the alignment 32`,
  ),
  header(
    "tensor past the end of the file",
    () => bytes.slice(0, size - 64),
    new RegExp(
      `tensor ${
        lastTensor.name.replaceAll(".", "\\.")
      } extends past end of file \\(offset \\d+, size \\d+, file ${size - 64}\\)`,
    ),
  ),
  header(
    "tensor offset far past the end",
    () => patchU64(bytes, tokenEmbd.offsetAt, 1n << 50n),
    /tensor token_embd\.weight extends past end of file \(offset 1125899906\d+, size 38400, file \d+\)/,
  ),
  header(
    "overlapping tensors",
    () => patchU64(bytes, outputNorm.offsetAt, tokenEmbd.offset + 32n),
    /tensors (token_embd\.weight and output_norm\.weight|output_norm\.weight and token_embd\.weight) overlap/,
  ),
  header(
    "truncated inside the tensor table",
    () => bytes.slice(0, tokenEmbd.offsetAt + 4),
    /offset of tensor token_embd\.weight needs 8 bytes at offset \d+, past the end of the file/,
  ),
  header(
    "truncated inside a numeric array",
    () => bytes.slice(0, kv(base, "tokenizer.ggml.token_type").valueAt + 112),
    /metadata tokenizer\.ggml\.token_type needs 1200 bytes at offset \d+, past the end of the file/,
  ),
  header(
    "truncated inside a string array",
    () => bytes.slice(0, kv(base, "tokenizer.ggml.merges").valueAt + 40),
    "metadata tokenizer.ggml.merges claims 39 elements, more than the file can hold",
  ),
  header("data section past the end", () => {
    const p = withHeaderRemainder(parts(), 32, 1); // the header then ends 31 bytes before the data
    const headerLength = encodeGguf({ ...p, data: new Uint8Array(), alignment: 1 }).length;
    return encodeGguf(p).slice(0, headerLength);
  }, /tensor data would start at \d+, past the end of the file \(\d+ bytes\)/),
  // --- model: metadata vs the spec
  model(
    "another architecture",
    () => encodeGguf(setKv(parts(), "general.architecture", value.string("llama"))),
    `unsupported architecture "llama" (deltaq runs Qwen3.5 models, architecture "qwen35" or "qwen35moe")`,
  ),
  model(
    "no architecture",
    () => encodeGguf(removeKv(parts(), "general.architecture")),
    "required metadata key general.architecture is missing",
  ),
  model(
    "architecture that is not a string",
    () => encodeGguf(setKv(parts(), "general.architecture", value.u32(7))),
    "metadata general.architecture should be a string",
  ),
  model(
    "missing hyper-parameter",
    () => encodeGguf(removeKv(parts(), "qwen35.embedding_length")),
    "required metadata key qwen35.embedding_length is missing",
  ),
  model(
    "count stored as a float",
    () => encodeGguf(setKv(parts(), "qwen35.block_count", value.f32(2))),
    "metadata qwen35.block_count is stored as FLOAT32, expected an integer",
  ),
  model(
    "count stored as a string",
    () => encodeGguf(setKv(parts(), "qwen35.block_count", value.string("2"))),
    "metadata qwen35.block_count is stored as STRING, expected an integer",
  ),
  model(
    "count beyond 2^53",
    () => encodeGguf(setKv(parts(), "qwen35.block_count", value.u64(1n << 60n))),
    "metadata qwen35.block_count should be a non-negative integer, got 1152921504606846976",
  ),
  model(
    "negative count",
    () => encodeGguf(setKv(parts(), "qwen35.block_count", value.i32(-2))),
    "metadata qwen35.block_count should be a non-negative integer, got -2",
  ),
  model(
    "a million layers",
    () => encodeGguf(setKv(parts(), "qwen35.block_count", value.u32(1_000_000))),
    "block_count 1000000 is outside 1..512",
  ),
  model(
    "no layers",
    () => encodeGguf(setKv(parts(), "qwen35.block_count", value.u32(0))),
    "block_count 0 is outside 1..512",
  ),
  model(
    "MTP layers leave nothing to run",
    () => encodeGguf(setKv(parts(), "qwen35.nextn_predict_layers", value.u32(2))),
    "nextn_predict_layers (2) leaves no layers to run",
  ),
  model(
    "NaN epsilon",
    () => encodeGguf(setKv(parts(), "qwen35.attention.layer_norm_rms_epsilon", value.f32(NaN))),
    "metadata qwen35.attention.layer_norm_rms_epsilon should be a finite number, got NaN",
  ),
  model(
    "infinite RoPE base",
    () => encodeGguf(setKv(parts(), "qwen35.rope.freq_base", value.f64(Infinity))),
    "metadata qwen35.rope.freq_base should be a finite number, got Infinity",
  ),
  model(
    "negative RoPE base",
    () => encodeGguf(setKv(parts(), "qwen35.rope.freq_base", value.f32(-1))),
    "rope.freq_base -1 must be positive",
  ),
  model(
    "float stored as a string",
    () => encodeGguf(setKv(parts(), "qwen35.rope.freq_base", value.string("1e7"))),
    "metadata qwen35.rope.freq_base is stored as STRING, expected a number",
  ),
  model(
    "epsilon out of range",
    () => encodeGguf(setKv(parts(), "qwen35.attention.layer_norm_rms_epsilon", value.f32(2))),
    "layer_norm_rms_epsilon 2 is out of range",
  ),
  model(
    "absurd embedding width",
    () => encodeGguf(setKv(parts(), "qwen35.embedding_length", value.u64(1n << 40n))),
    "embedding_length 1099511627776 is larger than deltaq supports (1048576)",
  ),
  model(
    "no KV heads",
    () => encodeGguf(setKv(parts(), "qwen35.attention.head_count_kv", value.u32(0))),
    "2 attention heads cannot share 0 KV heads",
  ),
  model(
    "heads that do not share KV heads evenly",
    () => encodeGguf(setKv(parts(), "qwen35.attention.head_count_kv", value.u32(3))),
    "2 attention heads cannot share 3 KV heads",
  ),
  model(
    "key and value head dims differ",
    () => encodeGguf(setKv(parts(), "qwen35.attention.key_length", value.u32(12))),
    "attention key_length 12 ≠ value_length 16 (not supported)",
  ),
  model("head dim not a multiple of 8", () => {
    const p = setKv(parts(), "qwen35.attention.key_length", value.u32(12));
    return encodeGguf(setKv(p, "qwen35.attention.value_length", value.u32(12)));
  }, "attention head dim 12 must be a multiple of 8 up to 512"),
  model(
    "RoPE dims beyond the head",
    () => encodeGguf(setKv(parts(), "qwen35.rope.dimension_count", value.u32(32))),
    "rope.dimension_count 32 must be even and at most the head dim 16",
  ),
  model(
    "conv kernel too wide",
    () => encodeGguf(setKv(parts(), "qwen35.ssm.conv_kernel", value.u32(32))),
    "ssm.conv_kernel 32 must be between 2 and 16",
  ),
  model(
    "DeltaNet head dim not a multiple of 8",
    () => encodeGguf(setKv(parts(), "qwen35.ssm.state_size", value.u32(12))),
    "ssm.state_size 12 must be a multiple of 8 up to 256",
  ),
  model(
    "DeltaNet V heads that do not tile K heads",
    () => encodeGguf(setKv(parts(), "qwen35.ssm.group_count", value.u32(3))),
    "2 DeltaNet V heads cannot tile 3 K heads",
  ),
  model(
    "inner size inconsistent",
    () => encodeGguf(setKv(parts(), "qwen35.ssm.inner_size", value.u32(17))),
    "ssm.inner_size 17 ≠ time_step_rank × state_size (2 × 8)",
  ),
  model(
    "zero attention interval",
    () => encodeGguf(setKv(parts(), "qwen35.full_attention_interval", value.u32(0))),
    "full_attention_interval must be positive",
  ),
  model(
    "recurrent_layers shorter than the layers",
    () =>
      encodeGguf(
        setKv(
          parts(baseB),
          "qwen35.attention.recurrent_layers",
          value.array(GgufValueType.BOOL, 1, new Uint8Array([1])),
        ),
      ),
    "attention.recurrent_layers has 1 entries for 3 layers",
  ),
  model(
    "recurrent_layers of strings",
    () =>
      encodeGguf(
        setKv(parts(baseB), "qwen35.attention.recurrent_layers", stringArray([new Uint8Array([0x31])])),
      ),
    "metadata qwen35.attention.recurrent_layers should be an array of numbers",
  ),
  model(
    "token list shorter than the embedding",
    () => encodeGguf(setKv(parts(), "tokenizer.ggml.tokens", stringArray(tokenStrings(base).slice(0, 299)))),
    "tokenizer.ggml.tokens has 299 entries but token_embd.weight has 300 rows",
  ),
  // --- model: tensors vs the metadata
  model("missing tensor", () => {
    const p = parts();
    return encodeGguf({ ...p, tensors: p.tensors.filter((t) => t.name !== "blk.1.attn_q.weight") });
  }, "required tensor blk.1.attn_q.weight is missing"),
  model("missing token embedding", () => {
    const p = parts();
    return encodeGguf({ ...p, tensors: p.tensors.filter((t) => t.name !== tokenEmbd.name) });
  }, "required tensor token_embd.weight is missing"),
  model(
    "tensor with the wrong shape",
    () => encodeGguf(editTensor(parts(), "blk.0.ffn_up.weight", (t) => ({ ...t, dims: [16n, 64n] }))),
    "tensor blk.0.ffn_up.weight has shape [16, 64], expected [32, 32]",
  ),
  model(
    "tensor with an extra dimension",
    () => encodeGguf(editTensor(parts(), "blk.0.ffn_up.weight", (t) => ({ ...t, dims: [32n, 16n, 2n] }))),
    "tensor blk.0.ffn_up.weight has shape [32, 16, 2], expected [32, 32]",
  ),
  model(
    "norm that is not F32",
    () => patchU32(bytes, outputNorm.typeAt, 1),
    "tensor output_norm.weight is F16, expected F32",
  ),
  model(
    "conv weights that are not F32",
    () => patchU32(bytes, tensor(base, "blk.0.ssm_conv1d.weight").typeAt, 1),
    "tensor blk.0.ssm_conv1d.weight is F16, expected F32",
  ),
  model(
    "matrix of a type deltaq cannot compute",
    () => patchU32(bytes, tensor(base, "blk.0.ffn_up.weight").typeAt, 9),
    "tensor blk.0.ffn_up.weight has type Q8_1, which deltaq cannot compute with",
  ),
  // --- model: mixture of experts (qwen35moe)
  model("missing expert tensor", () => {
    const p = parts(baseMoe);
    return encodeGguf({ ...p, tensors: p.tensors.filter((t) => t.name !== "blk.1.ffn_down_exps.weight") });
  }, "required tensor blk.1.ffn_down_exps.weight is missing"),
  model(
    "expert tensor with too few experts",
    () => encodeGguf(editTensor(parts(baseMoe), "blk.0.ffn_up_exps.weight", (t) => ({ ...t, dims: [32n, 48n, 2n] }))),
    "tensor blk.0.ffn_up_exps.weight has shape [32, 48, 2], expected [32, 32, 3]",
  ),
  model(
    "expert tensor stored 2-D",
    () => encodeGguf(editTensor(parts(baseMoe), "blk.0.ffn_gate_exps.weight", (t) => ({ ...t, dims: [32n, 96n] }))),
    "tensor blk.0.ffn_gate_exps.weight has shape [32, 96], expected [32, 32, 3]",
  ),
  model(
    "router with the wrong expert count",
    () => encodeGguf(editTensor(parts(baseMoe), "blk.1.ffn_gate_inp.weight", (t) => ({ ...t, dims: [32n, 2n] }))),
    "tensor blk.1.ffn_gate_inp.weight has shape [32, 2], expected [32, 3]",
  ),
  model("missing shared expert", () => {
    const p = parts(baseMoe);
    return encodeGguf({ ...p, tensors: p.tensors.filter((t) => t.name !== "blk.0.ffn_up_shexp.weight") });
  }, "required tensor blk.0.ffn_up_shexp.weight is missing"),
  model(
    "more experts used than exist",
    () => encodeGguf(setKv(parts(baseMoe), "qwen35moe.expert_used_count", value.u32(4))),
    "expert_used_count 4 is outside 1..expert_count (3)",
  ),
  model(
    "no expert count",
    () => encodeGguf(removeKv(parts(baseMoe), "qwen35moe.expert_count")),
    "required metadata key qwen35moe.expert_count is missing",
  ),
  model(
    "more experts than llama.cpp allows",
    () => encodeGguf(setKv(parts(baseMoe), "qwen35moe.expert_count", value.u32(2048))),
    "expert_count 2048 is outside 1..1024",
  ),
  model(
    "per-layer used counts shorter than the layers",
    () =>
      encodeGguf(
        setKv(parts(baseMoe), "qwen35moe.expert_used_count", value.array(GgufValueType.UINT32, 1, new Bytes().u32(2).bytes())),
      ),
    "qwen35moe.expert_used_count has 1 entries for 2 layers",
  ),
  model(
    "no expert width and no FFN width to derive it from",
    () => encodeGguf(removeKv(parts(baseMoe), "qwen35moe.expert_feed_forward_length")),
    "expert_feed_forward_length is missing or zero",
  ),
  model(
    "grouped expert selection",
    () => encodeGguf(setKv(parts(baseMoe), "qwen35moe.expert_group_count", value.u32(3))),
    "grouped expert selection (expert_group_count > 1) is not supported",
  ),
  model("per-expert output scales", () => {
    const p = parts(baseMoe);
    const at = Math.ceil(p.data.length / 32) * 32; // 3 F32 values after the last tensor
    const data = new Uint8Array(at + 32);
    data.set(p.data);
    const scale = { name: "blk.0.ffn_down_exps.scale", dims: [3n], type: 0, offset: BigInt(at) };
    return encodeGguf({ ...p, data, tensors: [...p.tensors, scale] });
  }, "tensor blk.0.ffn_down_exps.scale: per-expert output scales are not supported"),
  model("tensor data the kernels cannot address (alignment 1)", () => {
    const p = withHeaderRemainder(setKv(parts(), "general.alignment", value.u32(1)), 4, 1);
    return encodeGguf({ ...p, alignment: 1 });
  }, /tensor token_embd\.weight: tensor offset \d+ is not 4-byte aligned/),
];

for (const c of cases) {
  Deno.test(`broken file: ${c.name}`, async () => {
    const path = `${dir}/${c.name.replaceAll(/[^a-z0-9]+/gi, "-")}.gguf`;
    Deno.writeFileSync(path, c.file());
    const expectMessage = (e: unknown, via: string) => {
      assert.ok(
        e instanceof DeltaqError,
        `${via}: expected a DeltaqError, got ${e instanceof Error ? e.stack : e}`,
      );
      assert.ok(
        e.message.startsWith(`${path}: `),
        `${via}: message should start with the path: ${e.message}`,
      );
      const rest = e.message.slice(path.length + 2);
      if (typeof c.expect === "string") {
        assert.ok(
          rest.includes(c.expect),
          `${via}: ${JSON.stringify(rest)} lacks ${JSON.stringify(c.expect)}`,
        );
      } else assert.match(rest, c.expect, `${via}: ${rest}`);
      assert.ok(!e.message.includes("\n"), `${via}: one line`);
    };
    let header: unknown;
    try {
      readGgufHeader(path);
    } catch (e) {
      header = e;
    }
    if (c.level === "header") expectMessage(header, "readGgufHeader");
    else assert.equal(header, undefined, `the container is valid: ${header}`);
    let load: unknown;
    try {
      (await loadModel(path, { threads: 1, contextLength: 16 })).dispose();
    } catch (e) {
      load = e;
    }
    expectMessage(load, "loadModel");
    if (c.level === "header") {
      assert.equal((load as Error).message, (header as Error).message, "both readers agree");
    }
  });
}

Deno.test("broken file: the base models themselves load", async () => {
  for (const path of Object.values(paths)) {
    (await loadModel(path, { threads: 1, contextLength: 16 })).dispose();
  }
});

// --- paths that are not model files
const pathCases: { name: string; path: () => string; expect: string }[] = [
  { name: "missing file", path: () => `${dir}/does-not-exist.gguf`, expect: "no such file" },
  { name: "directory", path: () => dir, expect: "is a directory, not a GGUF file" },
  { name: "character device", path: () => "/dev/null", expect: "not a regular file" },
  {
    name: "FIFO (opening it would block forever)",
    path: () => {
      const p = `${dir}/fifo`;
      new Deno.Command("mkfifo", { args: [p] }).outputSync();
      return p;
    },
    expect: "not a regular file",
  },
  {
    name: "a path through a file",
    path: () => `${paths.micro}/model.gguf`,
    expect: "a parent of this path is not a directory",
  },
];

for (const c of pathCases) {
  Deno.test(`broken path: ${c.name}`, async () => {
    const path = c.path();
    for (
      const [via, run] of [["readGgufHeader", () => readGgufHeader(path)], [
        "loadModel",
        () => loadModel(path, { threads: 1 }),
      ]] as const
    ) {
      await assert.rejects(async () => await run(), (e: unknown) => {
        assert.ok(e instanceof DeltaqError, `${via}: ${e}`);
        assert.equal(e.message, `${path}: ${c.expect}`, via);
        return true;
      });
    }
  });
}

Deno.test("broken file: a header larger than the first read (20 MB) parses, and its truncation fails the same way in both readers", async () => {
  const description = "d".repeat(20 << 20);
  const big = encodeGguf(setKv(parts(), "general.description", value.string(description)));
  const path = `${dir}/large-header.gguf`;
  Deno.writeFileSync(path, big);
  const gguf = readGgufHeader(path);
  assert.equal(gguf.metadata.get("general.description"), description);
  const model = await loadModel(path, { threads: 1, contextLength: 16 });
  assert.deepEqual(model.weights.gguf.tensors, gguf.tensors);
  model.dispose();

  const cut = `${dir}/large-header-cut.gguf`;
  Deno.writeFileSync(cut, big.subarray(0, 18 << 20));
  const messages: string[] = [];
  for (const run of [() => readGgufHeader(cut), () => loadModel(cut, { threads: 1 })]) {
    await assert.rejects(async () => await run(), (e: unknown) => {
      assert.ok(e instanceof DeltaqError, String(e));
      messages.push(e.message);
      return true;
    });
  }
  assert.match(
    messages[0],
    /large-header-cut\.gguf: metadata general\.description needs 20971520 bytes at offset \d+, past the end of the file \(18874368 bytes\)/,
  );
  assert.equal(messages[1], messages[0]);
});
