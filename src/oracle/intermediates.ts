/**
 * Intermediate tensors of one forward pass in llama.cpp (read through the context's eval
 * callback) and in deltaq (the same pass run one kernel command at a time), under llama.cpp's
 * node names (`attn_norm-0`, `linear_attn_qkv_mixed-0`, …), and their comparison node by node.
 * Used by tools/intermediates.ts (parity debugging) and tests/parity/nodes_test.ts.
 *
 * Free-running, each engine feeds its own results forward. On quantized models differences then
 * grow without any operation being wrong: float noise (~1e-7) moves one activation across a
 * rounding boundary of its quantized code (a "flip"), the matmul output changes by ~1e-4, which
 * flips more codes in the next layer, and so on until the two engines' activation quantization
 * noise is uncorrelated (llama.cpp against itself, e.g. prompt vs token by token, does the same).
 *
 * Teacher forcing (`dumpOurs(..., force)`) replaces each of deltaq's results by llama.cpp's node
 * right after recording it, so every kernel command runs on exactly llama.cpp's inputs and the
 * comparison measures each operation's own disagreement, free of that cascade.
 */
import { allocate, CommandList, Context, type Ref, type Region } from "../native/kernels.ts";
import { LlamaReference } from "./llama.ts";
import { Activations, encodeForward, type LayerState, singleSequence } from "../model/qwen35.ts";
import { convDim } from "../model/deltanet.ts";
import { RopeSchedule } from "../model/rope.ts";
import { freeMappings, loadWeights, type ModelWeights } from "../model/weights.ts";
import type { Qwen35Config } from "../model/config.ts";

// ---------------------------------------------------------------------------------------------
// llama.cpp side

/** Offsets in `struct ggml_tensor` (ggml.h of the pinned build, 64-bit). */
const T_TYPE = 0, T_NE = 16, T_NB = 48, T_DATA = 248, T_NAME = 256;
const GGML_F32 = 0, GGML_F16 = 1;

/** The F32/F16 nodes one `llama_decode` computed, by name, in order (same-named nodes all kept). */
export type Dump = Map<string, Float32Array[]>;

function readTensor(t: Deno.PointerObject): { name: string; values: Float32Array } | null {
  const v = new Deno.UnsafePointerView(t);
  const type = v.getInt32(T_TYPE);
  if (type !== GGML_F32 && type !== GGML_F16) return null;
  const ne = [0, 1, 2, 3].map((i) => Number(v.getBigInt64(T_NE + 8 * i)));
  const nb = [0, 1, 2, 3].map((i) => Number(v.getBigUint64(T_NB + 8 * i)));
  const data = v.getPointer(T_DATA);
  const name = v.getCString(T_NAME);
  if (data === null || !name) return null;
  const span = ne.reduce((s, n, i) => s + (n - 1) * nb[i], 0) + nb[0];
  const bytes = new DataView(Deno.UnsafePointerView.getArrayBuffer(data, span));
  const out = new Float32Array(ne[0] * ne[1] * ne[2] * ne[3]);
  let i = 0;
  for (let i3 = 0; i3 < ne[3]; i3++) {
    for (let i2 = 0; i2 < ne[2]; i2++) {
      for (let i1 = 0; i1 < ne[1]; i1++) {
        for (let i0 = 0; i0 < ne[0]; i0++) {
          const at = i0 * nb[0] + i1 * nb[1] + i2 * nb[2] + i3 * nb[3];
          out[i++] = type === GGML_F32 ? bytes.getFloat32(at, true) : bytes.getFloat16(at, true);
        }
      }
    }
  }
  return { name, values: out };
}

/** llama.cpp's nodes for each `eval` call (one call, or one per token when stepwise). */
export function dumpLlama(
  path: string,
  batches: number[][],
  threads = 1,
): { calls: Dump[]; logits: Float32Array } {
  const calls: Dump[] = [];
  let current: Dump = new Map();
  const callback = new Deno.UnsafeCallback(
    { parameters: ["pointer", "bool", "pointer"], result: "bool" } as const,
    (t, ask) => {
      if (ask || t === null) return true; // ask: we want every node; then: keep computing
      const got = readTensor(t);
      if (got) {
        const list = current.get(got.name) ?? [];
        list.push(got.values);
        current.set(got.name, list);
      }
      return true;
    },
  );
  // Without extra buffer types llama.cpp takes the same matmul paths on every x86 CPU (see
  // `extraBufferTypes`), so the reference's rounding does not depend on whether it has AMX.
  const ref = LlamaReference.load(path, {
    threads,
    contextLength: 256,
    evalCallback: callback.pointer,
    extraBufferTypes: false,
  });
  try {
    const V = ref.nVocab;
    const logits = new Float32Array(batches.flat().length * V);
    let at = 0;
    for (const b of batches) {
      current = new Map();
      logits.set(ref.eval(b, { allLogits: true }), at * V);
      at += b.length;
      calls.push(current);
    }
    return { calls, logits };
  } finally {
    ref.dispose();
    callback.close();
  }
}

// ---------------------------------------------------------------------------------------------
// deltaq side: the same forward pass, one command per exec.

/** Where a tensor lives in the activation region: n rows `stride` apart, of `heads` slices. */
interface Layout {
  ref: Ref;
  n: number;
  stride: number;
  width: number;
  heads: number;
  headStride: number;
}

function layout(ref: Ref, n: number, stride: number, width: number, heads = 1, headStride = width): Layout {
  return { ref, n, stride, width, heads, headStride };
}

function readLayout(region: Region, l: Layout): Float32Array {
  const dim = l.width / l.heads, all = region.f32(0), out = new Float32Array(l.n * l.width);
  for (let t = 0; t < l.n; t++) {
    for (let h = 0; h < l.heads; h++) {
      const from = l.ref.offset + t * l.stride + h * l.headStride;
      out.set(all.subarray(from, from + dim), t * l.width + h * dim);
    }
  }
  return out;
}

function writeLayout(region: Region, l: Layout, values: Float32Array): void {
  const dim = l.width / l.heads, all = region.f32(0);
  for (let t = 0; t < l.n; t++) {
    for (let h = 0; h < l.heads; h++) {
      all.set(
        values.subarray(t * l.width + h * dim, t * l.width + (h + 1) * dim),
        l.ref.offset + t * l.stride + h * l.headStride,
      );
    }
  }
}

/** One of deltaq's intermediate results, under llama.cpp's name for the same node. */
export interface Tensor {
  name: string;
  /** Which of several same-named llama.cpp nodes of this size it corresponds to. */
  pick: "first" | "last";
  values: Float32Array;
  /** For matmul outputs: the input tensor's name and the weight's GGML type. */
  input?: string;
  weightType?: number;
}

/** llama.cpp's node for one of ours, if it has one of the same size. */
function counterpart(
  dump: Dump,
  t: { name: string; pick: "first" | "last" },
  size: number,
): Float32Array | undefined {
  const list = dump.get(t.name)?.filter((v) => v.length === size);
  if (!list || list.length === 0) return undefined;
  return t.pick === "first" ? list[0] : list[list.length - 1];
}

const MATMUL_NAMES: Record<string, string> = {
  qkv: "linear_attn_qkv_mixed",
  gate: "z",
  beta: "beta",
  alpha: "alpha",
  ssmOut: "linear_attn_out",
  q: "Qcur_full",
  k: "Kcur",
  v: "Vcur",
  output: "attn_output",
  "ffn.gate": "ffn_gate",
  "ffn.up": "ffn_up",
  "ffn.down": "ffn_out",
  // mixture of experts (llama.cpp's build_moe_ffn and the shared expert's build_ffn)
  "ffn.router": "ffn_moe_logits",
  "ffn.sharedGate": "ffn_gate",
  "ffn.sharedUp": "ffn_up",
  "ffn.sharedDown": "ffn_shexp",
  "ffn.sharedGateInp": "shared_expert_gate", // compared after its sigmoid (TapList.matmul)
};

const NORM_NAMES: Record<string, string> = {
  attnNorm: "attn_norm",
  postAttentionNorm: "attn_post_norm",
  qNorm: "Qcur_normed",
  kNorm: "Kcur_normed",
  outputNorm: "result_norm",
};

interface WeightInfo {
  field: string;
  layer: number; // -1 for the output norm and LM head
  type: number;
  rows: number;
}

function weightInfo(w: ModelWeights): Map<number, WeightInfo> {
  const cfg = w.config;
  const m = new Map<number, WeightInfo>();
  const tensor = (name: string) => w.gguf.tensors.find((t) => t.name === name)!;
  const add = (id: number, field: string, layer: number, name: string) => {
    const t = tensor(name);
    m.set(id, { field, layer, type: t.type, rows: t.shape[1] ?? 1 });
  };
  const files: Record<string, string> = {
    attnNorm: "attn_norm.weight",
    postAttentionNorm: "post_attention_norm.weight",
    qkv: "attn_qkv.weight",
    gate: "attn_gate.weight",
    beta: "ssm_beta.weight",
    alpha: "ssm_alpha.weight",
    conv: "ssm_conv1d.weight",
    dtBias: "ssm_dt.bias",
    ssmA: "ssm_a",
    ssmNorm: "ssm_norm.weight",
    ssmOut: "ssm_out.weight",
    q: "attn_q.weight",
    k: "attn_k.weight",
    v: "attn_v.weight",
    qNorm: "attn_q_norm.weight",
    kNorm: "attn_k_norm.weight",
    output: "attn_output.weight",
    "ffn.gate": "ffn_gate.weight",
    "ffn.up": "ffn_up.weight",
    "ffn.down": "ffn_down.weight",
    "ffn.router": "ffn_gate_inp.weight",
    "ffn.sharedGateInp": "ffn_gate_inp_shexp.weight",
    "ffn.sharedGate": "ffn_gate_shexp.weight",
    "ffn.sharedUp": "ffn_up_shexp.weight",
    "ffn.sharedDown": "ffn_down_shexp.weight",
  };
  w.layers.forEach((l, i) => {
    for (const [field, id] of Object.entries(l)) {
      if (typeof id === "number") add(id, field, i, `blk.${i}.${files[field]}`);
    }
    const f = l.ffn;
    if (f.kind === "dense") {
      for (const k of ["gate", "up", "down"] as const) add(f[k], `ffn.${k}`, i, `blk.${i}.${files[`ffn.${k}`]}`);
    } else {
      const fused = cfg.moe!.fusedGateUp[i];
      for (const k of ["router", "sharedGateInp", "sharedGate", "sharedUp", "sharedDown"] as const) {
        add(f[k], `ffn.${k}`, i, `blk.${i}.${files[`ffn.${k}`]}`);
      }
      add(f.gate, "ffn.gate", i, `blk.${i}.${fused ? "ffn_gate_up_exps.weight" : "ffn_gate_exps.weight"}`);
      if (!fused) add(f.up, "ffn.up", i, `blk.${i}.ffn_up_exps.weight`);
      add(f.down, "ffn.down", i, `blk.${i}.ffn_down_exps.weight`);
    }
  });
  add(w.outputNorm, "outputNorm", -1, "output_norm.weight");
  add(w.output, "lmHead", -1, cfg.tiedEmbeddings ? "token_embd.weight" : "output.weight");
  return m;
}

/**
 * A CommandList that runs every command as soon as it is encoded and records what it wrote.
 * With a reference dump it also overwrites each result with llama.cpp's (teacher forcing).
 */
class TapList extends CommandList {
  readonly tensors: Tensor[] = [];
  #layer = -1;
  #adds = 0;
  #lastMatmul = "";
  /** Element offset in the activation region → name of the tensor last written there. */
  #writer = new Map<number, string>();

  constructor(
    readonly ctx: Context,
    readonly a: Activations,
    readonly cfg: Qwen35Config,
    readonly weights: Map<number, WeightInfo>,
    readonly force: Dump | null,
  ) {
    super();
  }

  #run(): void {
    this.ctx.exec(this);
    this.clear();
  }

  /**
   * Records what a command wrote at `where` (through `view`: the node as llama.cpp names it is a
   * function of our buffer, whose inverse forces llama.cpp's values back into it).
   */
  #record(
    name: string,
    where: Layout,
    pick: "first" | "last" = "last",
    extra: Partial<Tensor> = {},
    view?: { of: (x: number) => number; inverse: (y: number) => number },
  ): void {
    const full = this.#layer >= 0 ? `${name}-${this.#layer}` : name;
    const raw = readLayout(this.a.region, where);
    const values = view ? raw.map(view.of) : raw;
    this.tensors.push({ name: full, pick, values, ...extra });
    this.#writer.set(where.ref.offset, full);
    const theirs = this.force && counterpart(this.force, { name: full, pick }, values.length);
    if (theirs) writeLayout(this.a.region, where, view ? theirs.map(view.inverse) : theirs);
  }

  override embed(weight: number, tokens: Ref, nTokens: number, out: Ref, outStride: number): this {
    super.embed(weight, tokens, nTokens, out, outStride);
    this.#run();
    this.#record("model.input_embed", layout(out, nTokens, outStride, this.cfg.nEmbd));
    return this;
  }

  override matmul(weight: number, x: Ref, xStride: number, y: Ref, yStride: number, nTokens: number): this {
    super.matmul(weight, x, xStride, y, yStride, nTokens);
    this.#run();
    const w = this.weights.get(weight)!;
    const name = w.field === "lmHead" ? "result_output" : MATMUL_NAMES[w.field];
    // llama.cpp names the raw K and V projections and their reshaped/roped successors alike
    const pick = name === "Kcur" || name === "Vcur" ? "first" : "last";
    this.#lastMatmul = name;
    if (w.field === "ffn.sharedGateInp") {
      // One value per token, a sum of E products that can cancel to near 0, where a mark
      // relative to the node's largest value would measure rounding alone: compared after the
      // sigmoid the combine applies (llama.cpp's next node).
      const sigmoid = { of: (x: number) => 1 / (1 + Math.exp(-x)), inverse: (p: number) => Math.log(p / (1 - p)) };
      this.#record("shared_expert_gate_sigmoid", layout(y, nTokens, yStride, 1), "last", {}, sigmoid);
      return this;
    }
    this.#record(name, layout(y, nTokens, yStride, w.rows), pick, {
      input: this.#writer.get(x.offset),
      weightType: w.type,
    });
    return this;
  }

  override matmulExperts(...args: Parameters<CommandList["matmulExperts"]>): this {
    super.matmulExperts(...args);
    this.#run();
    const [weight, x, , , , s, y, yStride] = args;
    const w = this.weights.get(weight)!;
    // a fused gate/up tensor is read twice: its gate rows (first 0), then its up rows
    const name = w.field === "ffn.down" ? "ffn_moe_down" : s.first === 0 && w.field === "ffn.gate" ? "ffn_moe_gate" : "ffn_moe_up";
    this.#lastMatmul = name;
    this.#record(name, layout(y, s.nTokens * s.k, yStride, s.rows), "last", {
      input: this.#writer.get(x.offset),
      weightType: w.type,
    });
    return this;
  }

  override moeRoute(...args: Parameters<CommandList["moeRoute"]>): this {
    super.moeRoute(...args);
    this.#run();
    const [, nTokens, , k, , weights] = args;
    // the chosen ids are I32 in llama.cpp (not dumped); a different choice shows in the next nodes
    this.#record("ffn_moe_weights_norm", layout(weights, 1, nTokens * k, nTokens * k));
    return this;
  }

  override moeCombine(...args: Parameters<CommandList["moeCombine"]>): this {
    super.moeCombine(...args);
    this.#run();
    const [, , , nTokens, , dim, , , out] = args;
    this.#record("ffn_out", layout(out, nTokens, dim, dim));
    return this;
  }

  override norm(
    x: Ref,
    y: Ref,
    g: Parameters<CommandList["norm"]>[2],
    weight: number | null,
    eps: number,
    mode: "rms" | "l2" = "rms",
  ): this {
    super.norm(x, y, g, weight, eps, mode);
    this.#run();
    if (mode === "l2") {
      // the q heads then the k heads at the start of each conv row
      const half = g.nHeads / 2 * g.dim;
      this.#record("q_conv_predelta", layout(y, g.nTokens, g.yTokStride, half));
      this.#record(
        "k_conv_predelta",
        layout({ region: y.region, offset: y.offset + half }, g.nTokens, g.yTokStride, half),
      );
      return this;
    }
    const w = this.weights.get(weight!)!;
    if (w.field === "attnNorm") {
      this.#layer = w.layer;
      this.#adds = 0;
    }
    if (w.field === "outputNorm") this.#layer = -1;
    this.#record(
      NORM_NAMES[w.field],
      layout(y, g.nTokens, g.yTokStride, g.nHeads * g.dim, g.nHeads, g.yHeadStride),
    );
    return this;
  }

  override add(a: Ref, b: Ref, n: number): this {
    super.add(a, b, n);
    this.#run();
    this.#record(this.#adds++ === 0 ? "attn_residual" : "l_out", layout(a, 1, n, n));
    return this;
  }

  override swiglu(gate: Ref, up: Ref, out: Ref, n: number): this {
    super.swiglu(gate, up, out, n);
    this.#run();
    this.#record(this.#lastMatmul === "ffn_moe_up" ? "ffn_moe_swiglu" : "ffn_swiglu", layout(out, 1, n, n));
    return this;
  }

  override sigmoidGate(
    x: Ref,
    gate: Ref,
    nRows: number,
    dim: number,
    xStride: number,
    gateStride: number,
  ): this {
    // the attention output is compared (and forced) here, where it is complete
    const where = layout(x, nRows, xStride, dim);
    this.#record("attn_pregate", where);
    super.sigmoidGate(x, gate, nRows, dim, xStride, gateStride);
    this.#run();
    this.#record("attn_gated", where);
    return this;
  }

  override rope(
    x: Ref,
    nTokens: number,
    tokStride: number,
    nHeads: number,
    headStride: number,
    nRot: number,
    table: Ref,
  ): this {
    super.rope(x, nTokens, tokStride, nHeads, headStride, nRot, table);
    this.#run();
    const Dh = this.cfg.headDim;
    const query = headStride !== Dh; // the query halves of [query | gate] rows
    this.#record(query ? "Qcur" : "Kcur", layout(x, nTokens, tokStride, nHeads * Dh, nHeads, headStride));
    return this;
  }

  override conv1dSilu(
    x: Ref,
    state: Ref,
    weight: number,
    out: Ref,
    nTokens: number,
    channels: number,
    xStride: number,
  ): this {
    super.conv1dSilu(x, state, weight, out, nTokens, channels, xStride);
    this.#run();
    this.#record("conv_output_silu", layout(out, nTokens, channels, channels));
    return this;
  }

  override deltanet(...args: Parameters<CommandList["deltanet"]>): this {
    super.deltanet(...args);
    this.#run();
    const out = args[8], s = args[9];
    const width = s.nVHeads * s.headDim;
    this.#record("attn_output", layout(out, s.nTokens, width, width));
    return this;
  }

  override gatedNorm(
    o: Ref,
    z: Ref,
    weight: number,
    out: Ref,
    nRows: number,
    dim: number,
    eps: number,
  ): this {
    super.gatedNorm(o, z, weight, out, nRows, dim, eps);
    this.#run();
    this.#record("final_output", layout(out, 1, nRows * dim, nRows * dim));
    return this;
  }

  override kvStore(...args: Parameters<CommandList["kvStore"]>): this {
    super.kvStore(...args);
    this.#run();
    return this;
  }

  override attention(...args: Parameters<CommandList["attention"]>): this {
    super.attention(...args);
    this.#run();
    return this;
  }

  override label(): this {
    return this; // profiling only
  }
}

/** deltaq's intermediate tensors for each call (teacher-forced by `force[call]` when given). */
export function dumpOurs(
  path: string,
  batches: number[][],
  force: Dump[] | null,
  threads = 1,
): { calls: Tensor[][]; logits: Float32Array } {
  const w = loadWeights(path);
  const cfg = w.config;
  const ctx = new Context(threads);
  const total = batches.flat().length;
  const batch = Math.max(...batches.map((b) => b.length));
  const a = new Activations(cfg, batch, batch);
  const regions: Region[] = [];
  const at0 = (r: Region): Ref => ({ region: r.id, offset: 0 });
  try {
    const state = cfg.layerTypes.map((kind): LayerState => {
      if (kind === "attention") {
        const bytes = total * cfg.nHeadKv * cfg.headDim * 2;
        const k = allocate(bytes), v = allocate(bytes);
        regions.push(k, v);
        return { kind, cache: { k: at0(k), v: at0(v), kType: "f16", vType: "f16" } };
      }
      const conv = allocate((cfg.convKernel - 1) * convDim(cfg) * 4);
      const ssm = allocate(cfg.nVHeads * cfg.ssmHeadDim * cfg.ssmHeadDim * 4);
      regions.push(conv, ssm);
      return { kind, state: { conv: at0(conv), ssm: at0(ssm) } };
    });
    const info = weightInfo(w);
    const rope = new RopeSchedule(cfg.nRot, cfg.ropeBase, cfg.ropeSections);
    const V = cfg.nVocab;
    const logits = new Float32Array(total * V);
    const calls: Tensor[][] = [];
    let pos = 0;
    batches.forEach((b, c) => {
      const list = new TapList(ctx, a, cfg, info, force ? force[c] : null);
      a.region.i32(a.tokens.offset, b.length).set(b);
      rope.fill(a.region.f32(a.ropeTable.offset, b.length * cfg.nRot), pos, b.length);
      encodeForward(list, cfg, w, rope, a, singleSequence(state, b.length, pos), { first: 0, count: b.length });
      logits.set(a.region.f32(a.logits.offset, b.length * V), pos * V);
      calls.push(list.tensors);
      pos += b.length;
    });
    return { calls, logits };
  } finally {
    for (const r of regions) r.free();
    a.free();
    ctx.free();
    freeMappings(w);
  }
}

// ---------------------------------------------------------------------------------------------
// What a matmul actually multiplies: the activation as the weight type's dot partner holds it.

const F16 = 1, Q8_0 = 8, BF16 = 30;
/** Weight types llama.cpp multiplies against Q8_K activations: Q2_K … Q6_K, IQ4_XS and the grid IQ types. */
const Q8_K_PARTNERED = [10, 11, 12, 13, 14, 23, 16, 17, 18, 19, 21, 22, 29];

/** Rounds to nearest, ties to even (as the AVX quantizers do). */
function rint(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function toF16(x: number): number {
  const v = new DataView(new ArrayBuffer(2));
  v.setFloat16(0, x, true);
  return v.getFloat16(0, true);
}

/**
 * The activation as the dot product sees it: per value a code (the Q8_0/Q8_K integer, or the
 * F16/BF16-rounded value) and per block a scale (1 for float types). Null for F32 weights, whose
 * activations are used as they are.
 */
function dotPartner(
  x: Float32Array,
  weightType: number,
): { codes: Float32Array; scales: Float32Array } | null {
  const codes = new Float32Array(x.length);
  if (weightType === F16 || weightType === BF16) {
    const f = new Float32Array(1), u = new Uint32Array(f.buffer);
    for (let i = 0; i < x.length; i++) {
      f[0] = x[i];
      if (weightType === BF16) u[0] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) & 0xffff0000;
      codes[i] = weightType === F16 ? toF16(x[i]) : f[0];
    }
    return { codes, scales: new Float32Array(0) };
  }
  const block = weightType === Q8_0 ? 32 : Q8_K_PARTNERED.includes(weightType) ? 256 : 0;
  if (block === 0 || x.length % block !== 0) return null;
  const scales = new Float32Array(x.length / block);
  for (let b = 0; b < x.length; b += block) {
    let amax = 0, max = 0;
    for (let i = b; i < b + block; i++) {
      if (Math.abs(x[i]) > amax) {
        amax = Math.abs(x[i]);
        max = x[i];
      }
    }
    if (block === 32) {
      // Q8_0 (ggml's AVX quantizer): codes from 127/amax; the scale amax/127 is stored as f16
      const id = amax ? Math.fround(127 / amax) : 0;
      scales[b / block] = toF16(amax / 127);
      for (let i = b; i < b + block; i++) codes[i] = rint(Math.fround(x[i] * id));
    } else {
      // Q8_K: scale from the signed extreme, kept in f32
      const iscale = max ? Math.fround(-127 / max) : 0;
      scales[b / block] = iscale ? Math.fround(1 / iscale) : 0;
      for (let i = b; i < b + block; i++) codes[i] = Math.min(127, rint(Math.fround(iscale * x[i])));
    }
  }
  return { codes, scales };
}

// ---------------------------------------------------------------------------------------------

export interface Comparison {
  name: string;
  size: number;
  /** max|Δ| / max|llama.cpp|; NaN when llama.cpp has no node of this name and size. */
  rel: number;
  /** Share of bit-identical elements. */
  identical: number;
  /**
   * For matmul outputs: how many activation codes (quantized integers or rounded floats) and
   * block scales of the dot product's input differ between the engines.
   */
  inputDiffers?: { codes: number; of: number; scales: number; blocks: number };
}

/** Compares deltaq's tensors of one call with llama.cpp's nodes of the same call. */
export function compareCall(ours: Tensor[], theirs: Dump): Comparison[] {
  const out: Comparison[] = [];
  const reference = new Map<string, Float32Array>();
  const mine = new Map<string, Float32Array>();
  for (const t of ours) {
    const r = counterpart(theirs, t, t.values.length);
    mine.set(t.name, t.values);
    if (!r) {
      out.push({ name: t.name, size: t.values.length, rel: NaN, identical: NaN });
      continue;
    }
    reference.set(t.name, r);
    let maxAbs = 0, maxDiff = 0, same = 0;
    for (let i = 0; i < r.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(r[i]));
      maxDiff = Math.max(maxDiff, Math.abs(r[i] - t.values[i]));
      if (Object.is(r[i], t.values[i])) same++;
    }
    const c: Comparison = {
      name: t.name,
      size: r.length,
      rel: maxAbs ? maxDiff / maxAbs : maxDiff,
      identical: same / r.length,
    };
    if (t.input && t.weightType !== undefined) {
      const x = mine.get(t.input), y = reference.get(t.input);
      const a = x && dotPartner(x, t.weightType),
        b = y && y.length === x?.length && dotPartner(y, t.weightType);
      if (a && b) {
        let codes = 0, scales = 0;
        for (let i = 0; i < a.codes.length; i++) if (a.codes[i] !== b.codes[i]) codes++;
        for (let i = 0; i < a.scales.length; i++) if (a.scales[i] !== b.scales[i]) scales++;
        c.inputDiffers = { codes, of: a.codes.length, scales, blocks: a.scales.length };
      }
    }
    out.push(c);
  }
  return out;
}

/** Joins per-call comparisons of a token-by-token run: worst ratio, pooled counts. */
export function mergeCalls(calls: Comparison[][]): Comparison[] {
  return calls[0].map((first, i) => {
    const all = calls.map((c) => c[i]);
    const size = all.reduce((s, c) => s + c.size, 0);
    const merged: Comparison = {
      name: first.name,
      size,
      rel: Math.max(...all.map((c) => c.rel)),
      identical: all.reduce((s, c) => s + c.identical * c.size, 0) / size,
    };
    if (all.every((c) => c.inputDiffers)) {
      const sum = (k: "codes" | "of" | "scales" | "blocks") =>
        all.reduce((s, c) => s + c.inputDiffers![k], 0);
      merged.inputDiffers = {
        codes: sum("codes"),
        of: sum("of"),
        scales: sum("scales"),
        blocks: sum("blocks"),
      };
    }
    return merged;
  });
}
