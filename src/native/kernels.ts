/**
 * A thin typed wrapper over libdeltaq (symbols in ./ffi.ts): memory regions, weights, contexts and
 * command lists. The command encodings mirror `Op` in kernels/root.zig operand for operand.
 *
 * A `Ref` names f32 (or i32/f16) elements of a buffer region: `{ region, offset }`, offset counted
 * in elements of the operand's type. All bounds are checked on the native side before any kernel
 * runs; failures come back as DeltaqError with the native message.
 */
import { DeltaqError } from "../errors.ts";
import { lastError, type Native, openNative } from "./ffi.ts";

export interface Ref {
  region: number;
  offset: number;
}

/** Row `first` (and those after it) of a [rows][width] buffer at `ref`. */
export function rowsOf(ref: Ref, first: number, width: number): Ref {
  return { region: ref.region, offset: ref.offset + first * width };
}

/** GGML type ids the kernels compute with. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  IQ4_NL: 20,
  IQ4_XS: 23,
  BF16: 30,
  MXFP4: 39,
} as const;

/**
 * KV cache element types (`--cache-type-k/-v`) and their GGML ids, as `kv_store` and `attention`
 * take them: F16, or llama.cpp's Q8_0 and Q4_0 blocks of 32 values (kernels/attention.zig).
 */
export const CACHE_TYPES = {
  f16: { id: 1, blockValues: 1, blockBytes: 2 },
  q8_0: { id: 8, blockValues: 32, blockBytes: 34 },
  q4_0: { id: 2, blockValues: 32, blockBytes: 18 },
} as const;
export type CacheType = keyof typeof CACHE_TYPES;

/** Bytes of `n` values of a cache type (n a whole number of its blocks). */
export function cacheRowBytes(type: CacheType, n: number): number {
  const t = CACHE_TYPES[type];
  if (n % t.blockValues !== 0) throw new DeltaqError(`a ${type} KV cache needs rows of whole ${t.blockValues}-value blocks, not ${n} values`);
  return (n / t.blockValues) * t.blockBytes;
}

const NO_WEIGHT = 0xffffffff;

function check(n: Native, rc: number, what: string): number {
  if (rc < 0) throw new DeltaqError(`${what}: ${lastError(n)}`);
  return rc;
}

/** Native parameters are u32: anything else would make Deno throw a TypeError (or wrap, in a command list). */
function isU32(x: number): boolean {
  return (x >>> 0) === x;
}

/** A region of native memory owned by libdeltaq: a read-only file mapping or a zeroed buffer. */
export class Region {
  #freed = false;
  /** Made once: each new external ArrayBuffer over tens of MiB adds GC pressure (per token). */
  #view: Uint8Array | undefined;
  #byteLength: number;
  constructor(readonly native: Native, readonly id: number, byteLength: number) {
    this.#byteLength = byteLength;
  }

  get byteLength(): number {
    return this.#byteLength;
  }

  /**
   * Sets the length of a growable buffer (`reserve`): memory is committed up to it (in 2 MiB
   * granules; new bytes are zero) and released past it. Views taken before are invalid.
   */
  resize(bytes: number): void {
    this.#assertLive();
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new DeltaqError(`cannot resize memory to ${bytes} bytes`);
    check(this.native, this.native.dq_region_resize(this.id, bytes >>> 0, Math.floor(bytes / 2 ** 32)), `resizing memory to ${bytes} bytes`);
    this.#byteLength = bytes;
    this.#view = undefined;
  }

  /** Bytes of memory the region holds: committed granules of a growable buffer, else its length. */
  get committedBytes(): number {
    return this.#freed ? 0 : this.native.dq_region_committed(this.id);
  }

  /** Zero-copy view of the region's bytes (do not keep it after `free`). */
  bytes(): Uint8Array {
    this.#assertLive();
    if (this.#view) return this.#view;
    if (this.#byteLength === 0) return new Uint8Array(0);
    const ptr = this.native.dq_region_ptr(this.id);
    if (ptr === null) throw new DeltaqError(`memory region ${this.id} is gone`);
    return this.#view = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, this.byteLength));
  }

  f32(offset = 0, length?: number): Float32Array {
    const b = this.bytes();
    return new Float32Array(b.buffer, b.byteOffset + offset * 4, length ?? (this.byteLength >> 2) - offset);
  }

  i32(offset = 0, length?: number): Int32Array {
    const b = this.bytes();
    return new Int32Array(b.buffer, b.byteOffset + offset * 4, length ?? (this.byteLength >> 2) - offset);
  }

  ref(offset = 0): Ref {
    return { region: this.id, offset };
  }

  get freed(): boolean {
    return this.#freed;
  }

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#view = undefined;
    this.native.dq_region_free(this.id);
  }

  #assertLive() {
    if (this.#freed) throw new DeltaqError("this memory was already freed (model or session disposed)");
  }
}

/**
 * The physical performance cores this process may use: the default thread count. Hyper-threads
 * and efficiency cores slow a memory-bound decode, whose workers wait for the slowest one.
 */
export function performanceCores(): number {
  return openNative().dq_performance_cores();
}

export function mapFile(path: string): Region {
  const n = openNative();
  const id = check(n, n.dq_map_file(new TextEncoder().encode(path + "\0")), path);
  return new Region(n, id, n.dq_region_len(id));
}

/**
 * A zeroed buffer. `resident` faults its pages in now (on huge pages), for memory every token
 * reads in full; otherwise pages arrive on first use (KV caches sized for the whole context).
 */
export function allocate(bytes: number, opts: { resident?: boolean } = {}): Region {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new DeltaqError(`cannot allocate ${bytes} bytes`);
  const n = openNative();
  const id = check(n, n.dq_alloc(bytes >>> 0, Math.floor(bytes / 2 ** 32), opts.resident ? 1 : 0), `allocating ${bytes} bytes`);
  return new Region(n, id, bytes);
}

/**
 * A growable zeroed buffer of length 0 with address space for `capacity` bytes: `resize` commits
 * memory as it grows, so it costs only what it holds (KV caches of long contexts).
 */
export function reserve(capacity: number): Region {
  if (!Number.isSafeInteger(capacity) || capacity < 0) throw new DeltaqError(`cannot reserve ${capacity} bytes`);
  const n = openNative();
  const id = check(n, n.dq_reserve(capacity >>> 0, Math.floor(capacity / 2 ** 32)), `reserving ${capacity} bytes`);
  return new Region(n, id, 0);
}

/** Granule in which growable buffers commit memory (kernels/os.zig `commit_granule`). */
export const COMMIT_GRANULE = 2 << 20;

/** Registers a tensor of `region` for the kernels; returns its weight id. */
export function registerWeight(
  region: Region,
  byteOffset: number,
  type: number,
  ne0: number,
  ne1: number,
  name = "tensor",
): number {
  if (!Number.isSafeInteger(byteOffset) || byteOffset < 0 || !isU32(type) || !isU32(ne0) || !isU32(ne1)) {
    throw new DeltaqError(`${name}: offset ${byteOffset}, type ${type} or shape ${ne0} × ${ne1} is out of range`);
  }
  const n = region.native;
  return check(n, n.dq_weight(region.id, byteOffset >>> 0, Math.floor(byteOffset / 2 ** 32), type, ne0, ne1), name);
}

/**
 * Bytes `Context.repack` needs for a weight (its size as repacked: IQ3_S's codes are larger), or 0
 * when it cannot be repacked (Q4_K, Q3_K, Q2_K and IQ4_XS matrices in whole groups of 8 or 16
 * rows, Q4_0 and Q8_0 matrices with rows of a multiple of 256 values, and IQ3_S matrices can).
 */
export function repackBytes(weight: number): number {
  return openNative().dq_repack_bytes(weight);
}

/**
 * Rows a weight's repacked layout keeps together (8 or 16 for the interleaved K-quant layouts, 1
 * for the others), or 0 when it cannot be repacked: a slice of it (one expert's rows) must start
 * and end on these groups.
 */
export function repackGroupRows(weight: number): number {
  return openNative().dq_repack_group_rows(weight);
}

/** A worker pool plus scratch memory; commands run on it. */
export class Context {
  readonly native: Native;
  readonly id: number;
  #freed = false;
  constructor(readonly threads: number) {
    this.native = openNative();
    this.id = check(this.native, this.native.dq_context(threads), `starting ${threads} threads`);
  }

  exec(list: CommandList): void {
    const words = this.#words(list);
    if (words.length === 0) return;
    const rc = this.native.dq_exec(this.id, words, words.length);
    if (rc < 0) throw new DeltaqError(`kernel error: ${lastError(this.native)}`);
  }

  /**
   * `exec` on another thread: the promise settles when the commands have run, and the JS thread
   * is free meanwhile. Until then the list, and the memory its commands touch, must not change;
   * nothing else may run on this context.
   */
  async execAsync(list: CommandList): Promise<void> {
    const words = this.#words(list);
    if (words.length === 0) return;
    this.#inFlight = true;
    try {
      const rc = await this.native.dq_exec_nonblocking(this.id, words, words.length);
      if (rc < 0) throw new DeltaqError(`kernel error: ${lastError(this.native)}`);
    } finally {
      this.#inFlight = false;
    }
  }

  /** Set while `execAsync` runs: freeing the context then would pull the pool from under it. */
  #inFlight = false;

  #words(list: CommandList): Uint32Array {
    if (this.#freed) throw new DeltaqError("this model was disposed");
    if (this.#inFlight) throw new DeltaqError("this context is running commands on another thread");
    // The native side reads `length` words: never let it run past the buffer.
    if (!Number.isInteger(list.length) || list.length < 0 || list.length > list.words.length) {
      throw new DeltaqError(`command list length ${list.length} does not fit its ${list.words.length}-word buffer`);
    }
    return list.words.subarray(0, list.length);
  }

  /**
   * Copies a weight into `region` at `byteOffset` (64-byte aligned, `repackBytes` long) in its
   * type's repacked layout (row-interleaved groups, super-blocks, or IQ3_S's 4-bit value codes), on
   * this context's threads; returns the copy's weight id.
   * An original in a file mapping is given up: its whole pages are unmapped and its id freed.
   */
  repack(weight: number, region: Region, byteOffset: number, name = "tensor"): number {
    const rc = this.native.dq_repack(this.id, weight, region.id, byteOffset >>> 0, Math.floor(byteOffset / 2 ** 32));
    return check(this.native, rc, `${name}: repacking`);
  }

  /** Turns per-command timing on (clearing earlier counts) or off. */
  profile(enable: boolean): void {
    check(this.native, this.native.dq_profile(this.id, enable ? 1 : 0), "profiling");
  }

  /** Time spent per (label, opcode, weight type) since profiling was enabled; empty when off. */
  readProfile(): ProfileEntry[] {
    const cells = PROFILE_LABELS.length * PROFILE_OPS * PROFILE_KINDS;
    const raw = new Float64Array(2 * cells);
    if (this.native.dq_profile_read(this.id, raw, raw.length) === 0) return [];
    const out: ProfileEntry[] = [];
    for (let c = 0; c < cells; c++) {
      const calls = raw[cells + c];
      if (calls === 0) continue;
      const kind = c % PROFILE_KINDS, op = Math.floor(c / PROFILE_KINDS) % PROFILE_OPS;
      const label = Math.floor(c / (PROFILE_KINDS * PROFILE_OPS));
      out.push({ label: PROFILE_LABELS[label], op: OP_NAMES[op] ?? `op${op}`, weightType: kind, ms: raw[c] / 1e6, calls });
    }
    return out;
  }

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.native.dq_context_free(this.id);
  }
}

/** Profile labels, in the order of their ids (kernels/root.zig `Profile.labels` ≥ this length). */
export const PROFILE_LABELS = ["other", "attention", "deltanet", "ffn", "lm_head", "unused5", "unused6", "unused7"] as const;
export type ProfileLabel = (typeof PROFILE_LABELS)[number];
const PROFILE_OPS = 32;
const PROFILE_KINDS = 32;
const OP_NAMES: Record<number, string> = {
  1: "embed",
  2: "matmul",
  3: "norm",
  4: "add",
  5: "swiglu",
  6: "sigmoid_gate",
  7: "rope",
  8: "kv_store",
  9: "attention",
  10: "conv1d",
  11: "deltanet",
  12: "gated_norm",
  13: "label",
  14: "matvec",
  20: "moe_route",
  21: "matmul_experts",
  22: "moe_combine",
};

export interface ProfileEntry {
  label: ProfileLabel;
  op: string;
  /** GGML type of the weight for matmul/matmul_experts/embed, else 0. */
  weightType: number;
  ms: number;
  calls: number;
}

const f32bits = new Float32Array(1);
const u32bits = new Uint32Array(f32bits.buffer);
function bits(x: number): number {
  f32bits[0] = x;
  return u32bits[0];
}

/**
 * A list of kernel commands, encoded as u32 words for one `dq_exec` call. Methods append and
 * return `this`; `clear()` reuses the storage.
 */
export class CommandList {
  words = new Uint32Array(4096);
  length = 0;

  /** Indices of the words holding a sequence position (kv_store, attention), for `setPosition`. */
  readonly positionWords: number[] = [];

  clear(): this {
    this.length = 0;
    this.positionWords.length = 0;
    this.#eachTokenAlone = false;
    return this;
  }

  /**
   * Rewrites the position operand of every kv_store and attention command, so a list encoded for
   * one position can run at another (decode re-runs the same list token after token).
   */
  setPosition(pos: number): this {
    for (const i of this.positionWords) this.words[i] = pos;
    return this;
  }

  #op(op: number, ...operands: (number | Ref)[]): this {
    let n = 2;
    for (const o of operands) n += typeof o === "number" ? 1 : 2;
    if (this.length + n > this.words.length) {
      const grown = new Uint32Array(Math.max(this.words.length * 2, this.length + n));
      grown.set(this.words.subarray(0, this.length));
      this.words = grown;
    }
    const w = this.words;
    let at = this.length;
    w[at++] = op;
    w[at++] = n;
    // A Uint32Array silently wraps 2^32 + x to x (and NaN to 0): an offset past 4 Gi elements
    // would address the wrong memory, in bounds. Refuse instead (`length` is only advanced below,
    // so a refused command leaves the list as it was).
    const put = (x: number) => {
      if (!isU32(x)) throw new DeltaqError(`kernel command ${op}: operand ${x} is not a 32-bit unsigned integer`);
      w[at++] = x;
    };
    for (const o of operands) {
      if (typeof o === "number") put(o);
      else {
        put(o.region);
        put(o.offset);
      }
    }
    this.length = at;
    return this;
  }

  /** out[t] = row tokens[t] of `weight` (tokens: i32 elements). */
  embed(weight: number, tokens: Ref, nTokens: number, out: Ref, outStride: number): this {
    return this.#op(1, weight, tokens, nTokens, out, outStride);
  }

  /** y[t][r] = Σ_c W[r][c]·x[t][c] for t < nTokens. */
  matmul(weight: number, x: Ref, xStride: number, y: Ref, yStride: number, nTokens: number): this {
    return this.#op(this.#eachTokenAlone ? 14 : 2, weight, x, xStride, y, yStride, nTokens);
  }

  #eachTokenAlone = false;

  /**
   * From now on (until `clear` or the next call), `matmul` multiplies every token exactly as a
   * lone token would be (kernel op `matvec`): the one-token kernels, bit for bit, in one pass over
   * the weights. For a decode step of several sequences, whose logits must then equal each
   * sequence's logits decoded alone; GEMM tiles (several tokens of one prompt) round differently.
   */
  eachTokenAlone(on: boolean): this {
    this.#eachTokenAlone = on;
    return this;
  }

  /** RMS (or L2) norm of `dim`-value rows on a tokens × heads grid, times `weight` if given. */
  norm(
    x: Ref,
    y: Ref,
    g: {
      nTokens: number;
      xTokStride: number;
      yTokStride: number;
      nHeads: number;
      xHeadStride: number;
      yHeadStride: number;
      dim: number;
    },
    weight: number | null,
    eps: number,
    mode: "rms" | "l2" = "rms",
  ): this {
    return this.#op(
      3,
      x,
      y,
      g.nTokens,
      g.xTokStride,
      g.yTokStride,
      g.nHeads,
      g.xHeadStride,
      g.yHeadStride,
      g.dim,
      weight ?? NO_WEIGHT,
      bits(eps),
      mode === "rms" ? 0 : 1,
    );
  }

  /** a[i] += b[i] */
  add(a: Ref, b: Ref, n: number): this {
    return this.#op(4, a, b, n);
  }

  /** out[i] = silu(gate[i])·up[i] */
  swiglu(gate: Ref, up: Ref, out: Ref, n: number): this {
    return this.#op(5, gate, up, out, n);
  }

  /** x[r][i] *= sigmoid(gate[r][i]) */
  sigmoidGate(x: Ref, gate: Ref, nRows: number, dim: number, xStride: number, gateStride: number): this {
    return this.#op(6, x, gate, nRows, dim, xStride, gateStride);
  }

  /** NeoX rotation of the first nRot dims of each head; table[t] = cos[nRot/2], sin[nRot/2]. */
  rope(x: Ref, nTokens: number, tokStride: number, nHeads: number, headStride: number, nRot: number, table: Ref): this {
    return this.#op(7, x, nTokens, tokStride, nHeads, headStride, nRot, table);
  }

  /**
   * Stores k and v rows (f32, heads of `headDim`) into the caches at positions pos..pos+nTokens,
   * converted to the cache types (quantized ones rotated as llama.cpp does); cache refs count bytes.
   */
  kvStore(
    k: Ref,
    v: Ref,
    nTokens: number,
    kvDim: number,
    kCache: Ref,
    vCache: Ref,
    pos: number,
    types: { k: CacheType; v: CacheType; headDim: number },
  ): this {
    this.#op(8, k, v, nTokens, kvDim, kCache, vCache, pos, CACHE_TYPES[types.k].id, CACHE_TYPES[types.v].id, types.headDim);
    this.positionWords.push(this.length - 4); // pos, then the two cache types and the head dim
    return this;
  }

  /** Causal GQA attention of `nTokens` queries at `pos` over the caches (byte refs). */
  attention(
    q: Ref,
    qTokStride: number,
    qHeadStride: number,
    kCache: Ref,
    vCache: Ref,
    out: Ref,
    s: {
      nTokens: number;
      pos: number;
      nHead: number;
      nHeadKv: number;
      headDim: number;
      scale: number;
      kType?: CacheType;
      vType?: CacheType;
    },
  ): this {
    // header (2) + q (2) + two strides + two caches (4) + out (2) + nTokens, then pos
    this.positionWords.push(this.length + 13);
    return this.#op(
      9,
      q,
      qTokStride,
      qHeadStride,
      kCache,
      vCache,
      out,
      s.nTokens,
      s.pos,
      s.nHead,
      s.nHeadKv,
      s.headDim,
      bits(s.scale),
      CACHE_TYPES[s.kType ?? "f16"].id,
      CACHE_TYPES[s.vType ?? "f16"].id,
    );
  }

  /** out = silu(causal depthwise conv(x)) with carried state; weight is F32 {K, channels}. */
  conv1dSilu(x: Ref, state: Ref, weight: number, out: Ref, nTokens: number, channels: number, xStride: number): this {
    return this.#op(10, x, state, weight, out, nTokens, channels, xStride);
  }

  deltanet(
    qkv: Ref,
    qkvStride: number,
    beta: Ref,
    alpha: Ref,
    gateStride: number,
    ssmA: number,
    dtBias: number,
    state: Ref,
    out: Ref,
    s: { nTokens: number; nKHeads: number; nVHeads: number; headDim: number },
  ): this {
    return this.#op(11, qkv, qkvStride, beta, alpha, gateStride, ssmA, dtBias, state, out, s.nTokens, s.nKHeads, s.nVHeads, s.headDim);
  }

  /** Names the part of the model the following commands belong to (for profiles). */
  label(label: ProfileLabel): this {
    return this.#op(13, PROFILE_LABELS.indexOf(label));
  }

  /**
   * Mixture-of-experts routing: per token, softmax over the `nExpert` router logits, the `k`
   * most probable experts (ids, i32) and their probabilities renormalised to sum 1 (weights).
   */
  moeRoute(logits: Ref, nTokens: number, nExpert: number, k: number, ids: Ref, weights: Ref): this {
    return this.#op(20, logits, nTokens, nExpert, k, ids, weights);
  }

  /**
   * y[t·k+i] = rows [first, first+rows) of expert ids[t][i] (weight rows split into nExpert equal
   * slices) times x[t], or x[t·k+i] with `inputPerSlot`. Reads only the chosen experts' rows;
   * honours `eachTokenAlone` as `matmul` does.
   */
  matmulExperts(
    weight: number,
    x: Ref,
    xStride: number,
    inputPerSlot: boolean,
    ids: Ref,
    s: { nTokens: number; k: number; nExpert: number; first: number; rows: number },
    y: Ref,
    yStride: number,
  ): this {
    const flags = (inputPerSlot ? 1 : 0) | (this.#eachTokenAlone ? 2 : 0);
    return this.#op(21, weight, x, xStride, flags, ids, s.nTokens, s.k, s.nExpert, s.first, s.rows, y, yStride);
  }

  /** out[t] = Σ_i weights[t][i]·y[t·k+i] + sigmoid(gate[t])·shared[t], rows of `dim` values. */
  moeCombine(y: Ref, yStride: number, weights: Ref, nTokens: number, k: number, dim: number, shared: Ref, gate: Ref, out: Ref): this {
    return this.#op(22, y, yStride, weights, nTokens, k, dim, shared, gate, out);
  }

  /** out = rmsnorm(o)·w·silu(z), rows contiguous. */
  gatedNorm(o: Ref, z: Ref, weight: number, out: Ref, nRows: number, dim: number, eps: number): this {
    return this.#op(12, o, z, weight, out, nRows, dim, bits(eps));
  }
}
