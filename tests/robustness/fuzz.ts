/**
 * GGUF fuzzer: mutates valid micro models (byte flips, truncations, huge counts and lengths,
 * corrupt tensor infos, swapped/duplicated/dropped entries, alignment changes, wrong-typed and
 * absurd metadata values) and checks the one property that matters: every case either loads or
 * fails with a DeltaqError. Anything else — another exception type, a crash, a hang — is a
 * failure, reported with the seed and case number that reproduce it.
 *
 * Every case is parsed, checked against the spec and tokenized in memory; every `loadEvery`-th is
 * also written to disk and goes through both header readers and `loadModel` (file mapping, weight
 * registration) and, when it loads, evaluates tokens and renders the chat template. Cases run in
 * worker subprocesses so a crash of native code is caught, attributed and skipped.
 *
 * Workers load a ReleaseSafe build of the kernels (`safeLibrary`), so a bounds or alignment error
 * inside a kernel aborts its case instead of passing silently; `--fast` uses the normal build.
 *
 *   deno task fuzz [--seed 1] [--count 100000] [--start 0] [--jobs 2] [--load-every 8] [--fast]
 *   deno task fuzz --seed 1 --case 1234 [--write case.gguf]     replay one case, in process
 */
import { parseArgs } from "node:util";
import { loadModel } from "../../mod.ts";
import { DeltaqError } from "../../src/errors.ts";
import { Metadata, parseGguf, readGgufHeader } from "../../src/gguf/read.ts";
import { GgufValueType } from "../../src/gguf/types.ts";
import { readConfig } from "../../src/model/config.ts";
import { ensurePlatformLibrary, hostPlatform } from "../../src/native/build.ts";
import { cpuLevels } from "../../src/native/ffi.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { mix32 } from "../../src/util/hash.ts";
import { basePaths } from "./bases.ts";
import {
  Bytes,
  encodeGguf,
  type GgufMap,
  type GgufParts,
  partsOf,
  patchU32,
  patchU64,
  scanGguf,
  setKv,
  value,
} from "./gguf_edit.ts";

// ---------------------------------------------------------------------------------------------
// Randomness: one independent stream per (seed, case), so any case replays alone.

export class Rng {
  #s: number;
  constructor(seed: number, stream: number) {
    this.#s = mix32(mix32(seed >>> 0) ^ mix32(stream + 0x9e3779b9)) || 1;
  }
  /** mulberry32 */
  u32(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  below(n: number): number {
    return Math.floor((this.u32() / 2 ** 32) * n);
  }
  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
}

/** Values that sit on the boundaries a reader has to get right. */
function interestingU64(rng: Rng, original: bigint, fileSize: number): bigint {
  const n = BigInt(fileSize);
  const choices: (() => bigint)[] = [
    () =>
      BigInt(
        rng.pick([0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 33, 63, 64, 255, 256, 1023, 1024, 4096, 65535, 65536]),
      ),
    () => rng.pick([(1n << 31n) - 1n, 1n << 31n, (1n << 32n) - 1n, 1n << 32n, (1n << 32n) + 1n]),
    () =>
      rng.pick([
        (1n << 53n) - 1n,
        1n << 53n,
        (1n << 53n) + 1n,
        (1n << 63n) - 1n,
        1n << 63n,
        (1n << 64n) - 1n,
      ]),
    () => rng.pick([n - 1n, n, n + 1n, n / 2n]),
    () => original + rng.pick([-1n, 1n, -8n, 8n, 32n, original, 1n << 32n]),
    () => BigInt(rng.u32()),
    () => rng.u64(),
  ];
  return BigInt.asUintN(64, rng.pick(choices)());
}

function interestingU32(rng: Rng, original: number): number {
  return rng.pick([
    () => rng.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 28, 29, 30, 31, 39, 40]),
    () => rng.pick([0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe]),
    () => (original + rng.pick([-1, 1, 8, 0x10000])) >>> 0,
    () => rng.u32(),
  ])();
}

// ---------------------------------------------------------------------------------------------
// Mutators. Each returns new bytes and a short description (for the failure report).

interface Mutation {
  bytes: Uint8Array;
  what: string;
}

type Mutator = (base: GgufMap, rng: Rng) => Mutation;

const u64At = (bytes: Uint8Array, at: number) =>
  new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(at, true);

/** Every stored string length: keys, string values, elements of string arrays, tensor names. */
function stringLengthFields(map: GgufMap): number[] {
  const out: number[] = [];
  for (const kv of map.kvs) out.push(kv.at, ...kv.stringLengthsAt);
  for (const t of map.tensors) out.push(t.at);
  return out;
}

const flipBytes: Mutator = (base, rng) => {
  const bytes = base.bytes.slice();
  const n = 1 + rng.below(4);
  const where: number[] = [];
  for (let i = 0; i < n; i++) {
    const limit = rng.chance(0.85) ? base.headerEnd : bytes.length;
    const at = rng.below(limit);
    bytes[at] = rng.chance(0.5) ? bytes[at] ^ (1 << rng.below(8)) : rng.below(256);
    where.push(at);
  }
  return { bytes, what: `flip bytes at ${where.join(", ")}` };
};

const truncate: Mutator = (base, rng) => {
  const end = rng.chance(0.6)
    ? rng.below(base.headerEnd + 1)
    : base.headerEnd + rng.below(base.bytes.length - base.headerEnd);
  return { bytes: base.bytes.slice(0, end), what: `truncate to ${end} bytes` };
};

const headerCounts: Mutator = (base, rng) => {
  const [at, name] = rng.pick([[8, "tensor count"], [16, "metadata count"]] as const);
  const v = interestingU64(rng, u64At(base.bytes, at), base.bytes.length);
  return { bytes: patchU64(base.bytes, at, v), what: `${name} = ${v}` };
};

const stringLength: Mutator = (base, rng) => {
  const at = rng.pick(stringLengthFields(base));
  const v = interestingU64(rng, u64At(base.bytes, at), base.bytes.length);
  return { bytes: patchU64(base.bytes, at, v), what: `string length at ${at} = ${v}` };
};

const arrayHeader: Mutator = (base, rng) => {
  const arrays = base.kvs.filter((kv) => kv.arrayCountAt !== undefined);
  const kv = rng.pick(arrays);
  if (rng.chance(0.7)) {
    const v = interestingU64(rng, u64At(base.bytes, kv.arrayCountAt!), base.bytes.length);
    return { bytes: patchU64(base.bytes, kv.arrayCountAt!, v), what: `${kv.key} count = ${v}` };
  }
  const t = interestingU32(rng, kv.arrayType!);
  return { bytes: patchU32(base.bytes, kv.arrayTypeAt!, t), what: `${kv.key} element type = ${t}` };
};

const valueType: Mutator = (base, rng) => {
  const kv = rng.pick(base.kvs);
  const t = interestingU32(rng, kv.type);
  return { bytes: patchU32(base.bytes, kv.typeAt, t), what: `${kv.key} value type = ${t}` };
};

const tensorInfo: Mutator = (base, rng) => {
  const t = rng.pick(base.tensors);
  const field = rng.below(4);
  if (field === 0) {
    const v = interestingU32(rng, t.dims.length);
    return { bytes: patchU32(base.bytes, t.nDimsAt, v), what: `${t.name} n_dims = ${v}` };
  }
  if (field === 1) {
    const d = rng.below(t.neAt.length);
    const v = interestingU64(rng, t.dims[d], base.bytes.length);
    return { bytes: patchU64(base.bytes, t.neAt[d], v), what: `${t.name} ne[${d}] = ${v}` };
  }
  if (field === 2) {
    // Mostly real type ids: the size changes, the tensor may still fit, and must then be checked.
    const v = rng.chance(0.7)
      ? rng.pick([0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 23, 24, 28, 30])
      : interestingU32(rng, t.type);
    return { bytes: patchU32(base.bytes, t.typeAt, v), what: `${t.name} type = ${v}` };
  }
  const other = rng.pick(base.tensors);
  const v = rng.chance(0.4)
    ? other.offset + BigInt(rng.pick([0, 32, -32, 64]))
    : interestingU64(rng, t.offset, base.bytes.length);
  return {
    bytes: patchU64(base.bytes, t.offsetAt, BigInt.asUintN(64, v)),
    what: `${t.name} offset = ${BigInt.asUintN(64, v)}`,
  };
};

function reencode(base: GgufMap, edit: (p: GgufParts) => GgufParts): Uint8Array {
  return encodeGguf(edit(partsOf(base)));
}

const structure: Mutator = (base, rng) => {
  const kind = rng.below(7);
  const i = rng.below(base.tensors.length), j = rng.below(base.tensors.length);
  const k = rng.below(base.kvs.length), l = rng.below(base.kvs.length);
  switch (kind) {
    case 0:
      return {
        bytes: reencode(base, (p) => {
          const tensors = p.tensors.slice();
          [tensors[i], tensors[j]] = [tensors[j], tensors[i]];
          return { ...p, tensors };
        }),
        what: `swap tensor infos ${i} and ${j}`,
      };
    case 1:
      return {
        bytes: reencode(base, (p) => ({ ...p, tensors: [...p.tensors, p.tensors[i]] })),
        what: `duplicate tensor info ${i}`,
      };
    case 2:
      return {
        bytes: reencode(base, (p) => ({ ...p, tensors: p.tensors.filter((_, x) => x !== i) })),
        what: `drop tensor info ${i}`,
      };
    case 3:
      return {
        bytes: reencode(base, (p) => {
          const tensors = p.tensors.slice();
          [tensors[i], tensors[j]] = [{ ...tensors[i], name: tensors[j].name }, {
            ...tensors[j],
            name: tensors[i].name,
          }];
          return { ...p, tensors };
        }),
        what: `swap the names of tensors ${i} and ${j}`,
      };
    case 4:
      return {
        bytes: reencode(base, (p) => ({ ...p, kvs: [...p.kvs, p.kvs[k]] })),
        what: `duplicate key ${base.kvs[k].key}`,
      };
    case 5:
      return {
        bytes: reencode(base, (p) => ({ ...p, kvs: p.kvs.filter((_, x) => x !== k) })),
        what: `drop key ${base.kvs[k].key}`,
      };
    default:
      return {
        bytes: reencode(base, (p) => {
          const kvs = p.kvs.slice();
          [kvs[k], kvs[l]] = [kvs[l], kvs[k]];
          const nKv = rng.chance(0.3) ? BigInt(kvs.length + rng.pick([-1, 1])) : undefined;
          const nTensors = rng.chance(0.3) ? BigInt(p.tensors.length + rng.pick([-1, 1])) : undefined;
          return { ...p, kvs, nKv, nTensors };
        }),
        what: `swap keys ${k} and ${l}, counts off by one maybe`,
      };
  }
};

const alignment: Mutator = (base, rng) => {
  const a = rng.pick([1, 2, 4, 8, 16, 32, 64, 128, 256, 4096, 3, 0, 48, 2 ** 31, 2 ** 21]);
  const type = rng.pick(["u32", "u32", "u32", "u64", "i32", "f32"] as const);
  const v = type === "f32"
    ? value.f32(a)
    : type === "u64"
    ? value.u64(a)
    : type === "i32"
    ? value.i32(a | 0)
    : value.u32(a);
  const relayout = rng.chance(0.5) && a > 0 && (a & (a - 1)) === 0 && a <= 4096;
  return {
    bytes: reencode(base, (p) => {
      const q = setKv(p, "general.alignment", v);
      if (!relayout) return q;
      // Re-place the data so every tensor offset is a multiple of the new alignment.
      const data: number[] = [];
      let at = 0;
      const tensors = q.tensors.map((t) => {
        const start = Number(t.offset);
        const end = base.tensors.filter((x) => Number(x.offset) > start).reduce(
          (m, x) => Math.min(m, Number(x.offset)),
          p.data.length,
        );
        at = Math.ceil(at / a) * a;
        const placed = { ...t, offset: BigInt(at) };
        data.push(at, start, end);
        at += end - start;
        return placed;
      });
      const out = new Uint8Array(at);
      for (let x = 0; x < data.length; x += 3) out.set(p.data.subarray(data[x + 1], data[x + 2]), data[x]);
      return { ...q, tensors, data: out, alignment: a };
    }),
    what: `general.alignment = ${a} (${type})${relayout ? ", data re-laid out" : ""}`,
  };
};

/** A value of any type, with the edge cases (NaN, infinities, extremes, empty arrays) favoured. */
function weirdValue(rng: Rng): [number, Uint8Array] {
  switch (rng.below(10)) {
    case 0:
      return value.u32(rng.pick([0, 1, 2, 3, 7, 8, 16, 255, 256, 511, 512, 513, 0x7fffffff, 0xffffffff]));
    case 1:
      return value.i32(rng.pick([-1, -2, -2147483648]));
    case 2:
      return value.f32(rng.pick([NaN, Infinity, -Infinity, 0, -0, 1e-45, 1e38, -1, 0.5, 4]));
    case 3:
      return value.f64(rng.pick([NaN, Infinity, 1e308, 5e-324, 4]));
    case 4:
      return value.u64(rng.pick([0n, 1n << 53n, (1n << 64n) - 1n, 4n]));
    case 5:
      return value.bool(rng.pick([0, 1]));
    case 6:
      return value.string(rng.pick(["", "qwen35", "llama", "gpt2", "\u0000", "x".repeat(1000)]));
    case 7:
      return value.array(
        rng.pick([GgufValueType.INT32, GgufValueType.STRING, GgufValueType.BOOL, GgufValueType.FLOAT32]),
        0,
      );
    case 8: {
      const n = rng.pick([1, 2, 3, 300, 301]);
      const body = new Bytes();
      for (let i = 0; i < n; i++) body.i32(rng.pick([0, 1, 3, 4, 5, 6, -1, 0x7fffffff]));
      return value.array(GgufValueType.INT32, n, body.bytes());
    }
    default: {
      const n = rng.pick([1, 2, 300]);
      const body = new Bytes();
      for (let i = 0; i < n; i++) body.string(rng.pick(["a", "a b", " ", "", "<|im_end|>", "Ġ", "x y z"]));
      return value.array(GgufValueType.STRING, n, body.bytes());
    }
  }
}

const metadataValue: Mutator = (base, rng) => {
  const known = base.kvs.map((kv) => kv.key);
  const extra = [
    "qwen35.attention.scale",
    "qwen35.nextn_predict_layers",
    "qwen35.attention.recurrent_layers",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.unknown_token_id",
  ];
  const key = rng.chance(0.85) ? rng.pick(known) : rng.pick(extra);
  const v = weirdValue(rng);
  return {
    bytes: reencode(base, (p) => setKv(p, key, v)),
    what: `${key} = type ${v[0]} ${JSON.stringify(Array.from(v[1].subarray(0, 16)))}`,
  };
};

/** Edits inside the tokenizer's arrays: single tokens, merges, types and special ids. */
const tokenizerEdit: Mutator = (base, rng) => {
  const kv = (key: string) => base.kvs.find((k) => k.key === key);
  const tokens = kv("tokenizer.ggml.tokens");
  const choice = rng.below(4);
  if (choice === 0 && tokens) {
    // one token's bytes: invalid UTF-8, another token's text (a duplicate), empty, or a special text
    const i = rng.below(tokens.stringLengthsAt.length);
    const replacement = rng.pick([
      new Uint8Array([0xff]),
      new Uint8Array([0xc3]),
      new Uint8Array(),
      new TextEncoder().encode(rng.pick(["a", "<|im_start|>", "Ġthe", "\u{10ffff}"])),
    ]);
    return {
      bytes: reencode(base, (p) => {
        const strings = tokens.stringLengthsAt.map((at) =>
          base.bytes.slice(at + 8, at + 8 + Number(u64At(base.bytes, at)))
        );
        strings[i] = replacement;
        const body = new Bytes();
        for (const s of strings) body.string(s);
        return setKv(
          p,
          "tokenizer.ggml.tokens",
          value.array(GgufValueType.STRING, strings.length, body.bytes()),
        );
      }),
      what: `token ${i} = ${JSON.stringify(Array.from(replacement))}`,
    };
  }
  if (choice === 1) {
    const key = rng.pick([
      "tokenizer.ggml.eos_token_id",
      "tokenizer.ggml.bos_token_id",
      "tokenizer.ggml.padding_token_id",
    ]);
    const id = rng.pick([0, 299, 300, 301, 0x7fffffff, 0xffffffff]);
    return { bytes: reencode(base, (p) => setKv(p, key, value.u32(id))), what: `${key} = ${id}` };
  }
  if (choice === 2) {
    const types = kv("tokenizer.ggml.token_type");
    if (types) {
      const i = rng.below(Number(u64At(base.bytes, types.arrayCountAt!)));
      const t = rng.pick([0, 2, 6, 7, -1, 0x7fffffff, 3, 4]);
      const bytes = base.bytes.slice();
      new DataView(bytes.buffer).setInt32(types.arrayCountAt! + 8 + 4 * i, t, true);
      return { bytes, what: `token_type[${i}] = ${t}` };
    }
  }
  const merges = kv("tokenizer.ggml.merges");
  if (!merges || merges.stringLengthsAt.length === 0) return flipBytes(base, rng);
  const at = rng.pick(merges.stringLengthsAt);
  const bytes = base.bytes.slice();
  const len = Number(u64At(bytes, at));
  if (len > 0) bytes[at + 8 + rng.below(len)] = rng.pick([0x20, 0x00, 0xff, 0x41]);
  return { bytes, what: `merge at ${at} edited` };
};

const MUTATORS: [Mutator, number][] = [
  [flipBytes, 22],
  [truncate, 8],
  [headerCounts, 6],
  [stringLength, 9],
  [arrayHeader, 7],
  [valueType, 5],
  [tensorInfo, 16],
  [structure, 10],
  [alignment, 5],
  [metadataValue, 7],
  [tokenizerEdit, 5],
];
const TOTAL_WEIGHT = MUTATORS.reduce((n, [, w]) => n + w, 0);

function pickMutator(rng: Rng): Mutator {
  let r = rng.below(TOTAL_WEIGHT);
  for (const [m, w] of MUTATORS) {
    if (r < w) return m;
    r -= w;
  }
  return flipBytes;
}

/** The bytes of case `index`: one to three mutations of one base. */
export function makeCase(bases: GgufMap[], seed: number, index: number): Mutation & { base: number } {
  const rng = new Rng(seed, index);
  const baseIndex = rng.below(bases.length);
  let map = bases[baseIndex];
  const steps = rng.chance(0.8) ? 1 : 2 + rng.below(2);
  const what: string[] = [];
  let bytes = map.bytes;
  for (let s = 0; s < steps; s++) {
    let m: Mutation;
    try {
      m = pickMutator(rng)(map, rng);
    } catch (e) {
      // A later step works on a map of already-mutated bytes, which may be too broken to edit
      // (then the case is what the earlier steps made); on a valid base a throw is a fuzzer bug.
      if (s === 0) throw e;
      break;
    }
    bytes = m.bytes;
    what.push(m.what);
    if (s + 1 < steps) {
      // Further steps need a map of the new bytes; when they no longer scan, stop here.
      try {
        map = scanGguf(bytes);
      } catch {
        break;
      }
    }
  }
  return { bytes, what: what.join("; "), base: baseIndex };
}

// ---------------------------------------------------------------------------------------------
// Running cases

export interface CaseOutcome {
  /** "ok": parsed (and loaded, for load cases); "rejected": a DeltaqError; "failed": anything else. */
  result: "ok" | "rejected" | "failed";
  loaded?: boolean;
  error?: string;
}

const PROMPT = "Hello, world! 123 <|im_start|>";

/** Header, spec and tokenizer checks in memory: what `info` and the loader do before any weight. */
function checkInMemory(bytes: Uint8Array, name: string): void {
  const gguf = parseGguf(bytes, name);
  const md = new Metadata(gguf, name);
  readConfig(md, gguf.tensors, name);
  const tok = Tokenizer.fromMetadata(md);
  const ids = tok.tokenize(PROMPT, { special: true });
  tok.detokenize(ids);
}

/** Both readers, loading, and (when it loads) evaluation, tokenization and the chat template. */
async function checkLoad(path: string, threads: number): Promise<boolean> {
  let headerError: unknown;
  try {
    readGgufHeader(path);
  } catch (e) {
    headerError = e;
  }
  let model;
  try {
    model = await loadModel(path, { threads, contextLength: 8 });
  } catch (e) {
    // The header readers must agree: a file `info` rejects is one loadModel rejects the same way.
    if (headerError instanceof DeltaqError && e instanceof DeltaqError && e.message !== headerError.message) {
      throw new Error(
        `readers disagree: readGgufHeader said "${headerError.message}", loadModel said "${e.message}"`,
      );
    }
    throw e;
  }
  try {
    if (headerError !== undefined) {
      throw new Error(`readGgufHeader rejected a file loadModel accepts: ${headerError}`);
    }
    const V = model.info.nVocab;
    const session = model.createSession();
    session.eval([0, V - 1, V >> 1]);
    session.eval([1]);
    const ids = model.tokenize(PROMPT, { special: true });
    model.detokenize(ids);
    model.renderChat([{ role: "user", content: "hi" }]);
    return true;
  } finally {
    model.dispose();
  }
}

export async function runCase(
  bases: GgufMap[],
  seed: number,
  index: number,
  opts: { load: boolean; dir: string },
): Promise<CaseOutcome & { what: string }> {
  const c = makeCase(bases, seed, index);
  const name = `case-${seed}-${index}.gguf`;
  const classify = (e: unknown): CaseOutcome =>
    e instanceof DeltaqError
      ? { result: "rejected", error: e.message }
      : { result: "failed", error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
  try {
    checkInMemory(c.bytes, name);
  } catch (e) {
    const outcome = classify(e);
    if (outcome.result === "failed" || !opts.load) return { ...outcome, what: c.what };
  }
  if (!opts.load) return { result: "ok", what: c.what };
  const path = `${opts.dir}/${name}`;
  Deno.writeFileSync(path, c.bytes);
  try {
    const loaded = await checkLoad(path, 1 + (index & 1));
    return { result: "ok", loaded, what: c.what };
  } catch (e) {
    return { ...classify(e), what: c.what };
  } finally {
    Deno.removeSync(path);
  }
}

/** The base models, scanned. */
export async function loadBases(): Promise<GgufMap[]> {
  const paths = await basePaths();
  return Object.values(paths).map((p) => scanGguf(Deno.readFileSync(p)));
}

// ---------------------------------------------------------------------------------------------
// Worker: runs a range of cases, announcing each before it starts (so a crash names its case).

const encoder = new TextEncoder();
function say(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let at = 0;
  while (at < bytes.length) at += Deno.stdout.writeSync(bytes.subarray(at));
}

/**
 * Protocol, one line each: `case <i>` before case i starts, then `ok <i> <load> <loaded>`,
 * `rejected <i> <load>` or `fail <json>`; `done` at the end.
 */
async function worker(
  seed: number,
  start: number,
  count: number,
  loadEvery: number,
  dir: string,
  selfTest: { crashAt?: number; hangAt?: number },
): Promise<void> {
  const bases = await loadBases();
  for (let i = start; i < start + count; i++) {
    say(`case ${i}`);
    // Self-tests of the orchestrator: a case that dies like native code would, or never returns.
    if (i === selfTest.crashAt) new Deno.UnsafePointerView(Deno.UnsafePointer.create(8n)!).getUint8(); // reads address 8
    if (i === selfTest.hangAt) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    const load = loadEvery > 0 && i % loadEvery === 0;
    const out = await runCase(bases, seed, i, { load, dir });
    if (out.result === "failed") {
      say(`fail ${JSON.stringify({ case: i, load, what: out.what, error: out.error })}`);
    } else say(`${out.result} ${i} ${load ? 1 : 0} ${out.loaded ? 1 : 0}`);
  }
  say("done");
}

// ---------------------------------------------------------------------------------------------
// Orchestrator: splits the cases over worker processes, restarts a worker after a crash, and
// collects failures with what reproduces them.

export interface FuzzFailure {
  case: number;
  kind: "exception" | "crash" | "hang";
  what?: string;
  error: string;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  loads: number;
  loaded: number;
  ok: number;
  rejected: number;
  failures: FuzzFailure[];
  seconds: number;
}

export interface FuzzOptions {
  seed: number;
  start?: number;
  count: number;
  jobs?: number;
  loadEvery?: number;
  /** A worker that announces no new case for this long is killed and its case reported as a hang. */
  hangSeconds?: number;
  /** Self-test: make the worker crash (SIGSEGV) or hang at this case. */
  crashAt?: number;
  hangAt?: number;
  /** The kernel library the workers load (DELTAQ_LIB), e.g. `safeLibrary()`; default: the usual one. */
  library?: string;
}

const SELF = decodeURIComponent(new URL(import.meta.url).pathname);

/**
 * A Debug build of the kernel library (bounds, overflow, alignment and `unreachable` checked, as in
 * ReleaseSafe, and ~4× quicker to compile), for the workers: an out-of-bounds access that
 * ReleaseFast would let pass silently aborts the worker instead, and is reported as a crash of
 * its case. Built into .cache/safe-lib when the kernel sources change.
 */
export function safeLibrary(): string {
  // One CPU level (the one this machine uses) is enough here, and a third of the compile time.
  return ensurePlatformLibrary(hostPlatform(), {
    quiet: true,
    prefix: ".cache/safe-lib",
    optimize: "debug",
    level: cpuLevels().selected,
  });
}

export async function fuzz(o: FuzzOptions): Promise<FuzzReport> {
  const t0 = performance.now();
  const start = o.start ?? 0, jobs = Math.max(1, o.jobs ?? 2), loadEvery = o.loadEvery ?? 8;
  await loadBases(); // build the base models once, before the workers race to
  const dir = Deno.makeTempDirSync({ prefix: "deltaq-fuzz-" });
  const report: FuzzReport = {
    seed: o.seed,
    cases: 0,
    loads: 0,
    loaded: 0,
    ok: 0,
    rejected: 0,
    failures: [],
    seconds: 0,
  };
  try {
    const per = Math.ceil(o.count / jobs);
    const ranges = Array.from({ length: jobs }, (_, j) => [start + j * per, Math.min(per, o.count - j * per)])
      .filter(([, n]) => n > 0);
    const selfTest = [
      ...(o.crashAt !== undefined ? [`--crash-at=${o.crashAt}`] : []),
      ...(o.hangAt !== undefined ? [`--hang-at=${o.hangAt}`] : []),
    ];
    await Promise.all(
      ranges.map(([from, n]) =>
        runRange(o.seed, from, n, loadEvery, dir, o.hangSeconds ?? 60, report, selfTest, o.library)
      ),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  report.failures.sort((a, b) => a.case - b.case);
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}

async function runRange(
  seed: number,
  from: number,
  count: number,
  loadEvery: number,
  dir: string,
  hangSeconds: number,
  report: FuzzReport,
  extraArgs: string[],
  library: string | undefined,
) {
  const end = from + count;
  let next = from;
  let restarts = 0;
  while (next < end) {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        SELF,
        "--worker",
        `--seed=${seed}`,
        `--start=${next}`,
        `--count=${end - next}`,
        `--load-every=${loadEvery}`,
        `--dir=${dir}`,
        ...extraArgs,
      ],
      env: library ? { DELTAQ_LIB: library } : {},
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let current = -1;
    let finished = false;
    let lastProgress = Date.now();
    let hung = false;
    const watchdog = setInterval(() => {
      if (Date.now() - lastProgress > hangSeconds * 1000) {
        hung = true;
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }
    }, 1000);
    const stderr = new Response(child.stderr).text();
    let pending = "";
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      pending += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        const [word, index, load, loaded] = line.split(" ");
        if (word === "case") {
          current = Number(index);
          lastProgress = Date.now();
        } else if (word === "ok" || word === "rejected") {
          report.cases++;
          report[word]++;
          report.loads += Number(load);
          report.loaded += Number(loaded);
        } else if (word === "fail") {
          const f = JSON.parse(line.slice(5));
          report.cases++;
          report.loads += f.load ? 1 : 0;
          report.failures.push({ case: f.case, kind: "exception", what: f.what, error: f.error });
        } else if (word === "done") finished = true;
      }
    }
    const status = await child.status;
    clearInterval(watchdog);
    const err = (await stderr).trim();
    if (finished && status.success) return;
    // The worker died (or hung) in case `current`: report it, count the cases it finished, go on.
    const crashed = current >= 0 ? current : next;
    report.failures.push({
      case: crashed,
      kind: hung ? "hang" : "crash",
      what: makeCase(await loadBases(), seed, crashed).what,
      error: hung
        ? `no progress for ${hangSeconds} s`
        : `worker exited with ${status.signal ? `signal ${status.signal}` : `code ${status.code}`}: ${
          err.slice(-2000)
        }`,
    });
    report.cases++;
    next = crashed + 1;
    if (++restarts > 20) {
      report.failures.push({
        case: next,
        kind: "crash",
        error: "too many worker crashes; stopped this range",
      });
      return;
    }
  }
}

/** How to replay a case. */
export function reproduce(seed: number, c: number): string {
  return `deno task fuzz --seed ${seed} --case ${c}`;
}

export function formatReport(r: FuzzReport): string {
  const lines = [
    `fuzz seed ${r.seed}: ${r.cases} cases (${r.loads} loaded from disk, ${r.loaded} of them usable models), ` +
    `${r.ok} accepted, ${r.rejected} rejected with DeltaqError, ${r.failures.length} failures in ${
      r.seconds.toFixed(1)
    } s ` +
    `(${(r.cases / r.seconds).toFixed(0)} cases/s)`,
  ];
  for (const f of r.failures.slice(0, 20)) {
    lines.push(
      `  case ${f.case} (${f.kind}${f.what ? `: ${f.what}` : ""}): ${
        f.error.split("\n").slice(0, 6).join("\n    ")
      }`,
    );
    lines.push(`    reproduce: ${reproduce(r.seed, f.case)}`);
  }
  if (r.failures.length > 20) lines.push(`  … ${r.failures.length - 20} more`);
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seed: { type: "string", default: String(Date.now() % 1_000_000) },
      count: { type: "string", default: "100000" },
      start: { type: "string", default: "0" },
      jobs: { type: "string", default: String(navigator.hardwareConcurrency ?? 2) },
      "load-every": { type: "string", default: "8" },
      case: { type: "string" },
      write: { type: "string" },
      worker: { type: "boolean", default: false },
      dir: { type: "string" },
      "crash-at": { type: "string" },
      "hang-at": { type: "string" },
      fast: { type: "boolean", default: false },
    },
  });
  const int = (name: string, v: string | undefined) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) {
      console.error(`fuzz: --${name} needs a non-negative integer, got ${v}`);
      Deno.exit(2);
    }
    return n;
  };
  const seed = int("seed", values.seed);
  if (values.worker) {
    const selfTest = {
      crashAt: values["crash-at"] === undefined ? undefined : int("crash-at", values["crash-at"]),
      hangAt: values["hang-at"] === undefined ? undefined : int("hang-at", values["hang-at"]),
    };
    await worker(
      seed,
      int("start", values.start),
      int("count", values.count),
      int("load-every", values["load-every"]),
      values.dir!,
      selfTest,
    );
  } else if (values.case !== undefined) {
    const index = int("case", values.case);
    if (!values.fast && !Deno.env.get("DELTAQ_LIB")) Deno.env.set("DELTAQ_LIB", safeLibrary());
    const bases = await loadBases();
    const c = makeCase(bases, seed, index);
    console.log(`case ${index} of seed ${seed}: base ${c.base}, ${c.what}, ${c.bytes.length} bytes`);
    if (values.write) {
      Deno.writeFileSync(values.write, c.bytes);
      console.log(`written to ${values.write}`);
    }
    const dir = Deno.makeTempDirSync({ prefix: "deltaq-fuzz-" });
    let failed = true;
    try {
      const out = await runCase(bases, seed, index, { load: true, dir });
      console.log(
        `${out.result}${out.loaded ? " (loaded and evaluated)" : ""}${out.error ? `: ${out.error}` : ""}`,
      );
      failed = out.result === "failed";
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    Deno.exit(failed ? 1 : 0);
  } else {
    const report = await fuzz({
      seed,
      start: int("start", values.start),
      count: int("count", values.count),
      jobs: Math.max(1, int("jobs", values.jobs)),
      loadEvery: int("load-every", values["load-every"]),
      library: values.fast ? undefined : safeLibrary(),
    });
    console.log(formatReport(report));
    Deno.exit(report.failures.length === 0 ? 0 : 1);
  }
}
