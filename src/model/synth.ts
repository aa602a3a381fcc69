/**
 * Synthetic `qwen35` and `qwen35moe` GGUF models of any shape (no weights can be downloaded, so
 * every test and benchmark builds its own). Tensor names, shapes and metadata follow
 * ../shared/spec (qwen35.md §1–§2, qwen35moe.md §2–§3) and llama.cpp's loaders, so llama.cpp loads
 * the files too.
 *
 * The weights are seeded and deterministic (each row has its own PRNG stream derived from the seed
 * and the tensor name, so output never depends on chunking), and scaled to behave like a model
 * rather than noise:
 * - every sub-layer sees an RMS-normalised input and returns ~0.25 RMS, so the residual stream stays
 *   O(1) through any number of layers;
 * - the LM head gives logits with a spread of a few units;
 * - in Gated DeltaNet layers the k rows of `attn_qkv` and their conv taps are the q rows plus a
 *   little noise. The gated norm rescales o = β(q·k)v to unit RMS, so if q·k could be near zero
 *   a tiny weight change would flip the sign of a whole head's output; with k ≈ q it cannot.
 * - in mixture-of-experts models the router must never be near a tie between the k-th and the
 *   (k+1)-th expert, or two engines whose activations differ by rounding noise would choose
 *   different experts (see `routingLayout`).
 */
import { DeltaqError } from "../errors.ts";
import { FNV1A_INIT, fnv1a, hex32, mix32 } from "../util/hash.ts";
import { readGgufHeader } from "../gguf/read.ts";
import { ggmlTypeName, GgufValueType } from "../gguf/types.ts";
import {
  array,
  bool,
  f32,
  floatTensor,
  GGML_BF16,
  GGML_F16,
  GGML_F32,
  type GgufToWrite,
  type MetadataInput,
  str,
  type TensorToWrite,
  TypedValue,
  u32,
  writeGguf,
} from "../gguf/write.ts";

/** The shape of a Qwen3.5 text model, in the terms of the GGUF metadata. */
export interface Qwen35Shape {
  /** E (`embedding_length`). */
  embedding: number;
  /** Layers of the forward pass (`block_count` minus MTP layers). */
  layers: number;
  /** F (`feed_forward_length`). */
  feedForward: number;
  /** Full-attention query heads, KV heads and head dim (key_length = value_length). */
  headCount: number;
  headCountKv: number;
  headDim: number;
  /** Rotated dims per head (n_rot) and the RoPE base. */
  ropeDims: number;
  ropeFreqBase: number;
  /** Gated DeltaNet: Hk (`ssm.group_count`), Hv (`ssm.time_step_rank`), Dk = Dv (`ssm.state_size`). */
  ssmKHeads: number;
  ssmVHeads: number;
  ssmHeadDim: number;
  convKernel: number;
  vocabSize: number;
  /** Layer i is full attention iff (i+1) % interval == 0. */
  fullAttentionInterval: number;
  /** Also write the per-layer `attention.recurrent_layers` flags (same schedule). */
  explicitRecurrentLayers: boolean;
  /** No `output.weight`: the LM head is `token_embd.weight`. */
  tiedOutput: boolean;
  /** MTP blocks stored after the trunk (`nextn_predict_layers`); llama.cpp supports 0 or 1. */
  mtpLayers: number;
  rmsEps: number;
  contextLength: number;
  /** Mixture of experts: a `qwen35moe` model (`feedForward` is then only metadata, 0 = absent). */
  moe?: MoeShape;
}

/** The FFN of a `qwen35moe` model, in the terms of its GGUF metadata and tensors. */
export interface MoeShape {
  /** `expert_count`. */
  experts: number;
  /** `expert_used_count`. */
  expertsUsed: number;
  /** `expert_feed_forward_length`: one routed expert's FFN width. */
  expertFeedForward: number;
  /** `expert_shared_feed_forward_length`: the shared expert's FFN width. */
  sharedFeedForward: number;
  /** One `ffn_gate_up_exps` tensor instead of `ffn_gate_exps` and `ffn_up_exps` (same values). */
  fusedGateUp: boolean;
}

export type SynthType = "f32" | "f16" | "bf16";

export const PRESETS: Record<string, Qwen35Shape> = {
  /** Fast tests: interval 3, V/K head ratio 4; every ne0 a multiple of 256 (K-quant friendly). */
  tiny: {
    embedding: 256,
    layers: 6,
    feedForward: 512,
    headCount: 4,
    headCountKv: 2,
    headDim: 64,
    ropeDims: 32,
    ropeFreqBase: 1e7,
    ssmKHeads: 2,
    ssmVHeads: 8,
    ssmHeadDim: 32,
    convKernel: 4,
    vocabSize: 1024,
    fullAttentionInterval: 3,
    explicitRecurrentLayers: false,
    tiedOutput: true,
    mtpLayers: 0,
    rmsEps: 1e-6,
    contextLength: 4096,
  },
  /** The other layout: interval 4, V/K ratio 2, explicit recurrent_layers, untied output. */
  "tiny-b": {
    embedding: 256,
    layers: 8,
    feedForward: 768,
    headCount: 2,
    headCountKv: 1,
    headDim: 128,
    ropeDims: 32,
    ropeFreqBase: 1e6,
    ssmKHeads: 4,
    ssmVHeads: 8,
    ssmHeadDim: 32,
    convKernel: 4,
    vocabSize: 1000,
    fullAttentionInterval: 4,
    explicitRecurrentLayers: true,
    tiedOutput: false,
    mtpLayers: 0,
    rmsEps: 1e-6,
    contextLength: 4096,
  },
  /**
   * Mixture of experts, tied: 6 experts (not a power of two), 2 used per token, fused gate/up,
   * no feed_forward_length key; widths multiples of 256 (so no K-quant falls back to Q5_0/Q8_0).
   */
  "tiny-moe": {
    embedding: 256,
    layers: 6,
    feedForward: 0,
    headCount: 4,
    headCountKv: 2,
    headDim: 64,
    ropeDims: 32,
    ropeFreqBase: 1e7,
    ssmKHeads: 2,
    ssmVHeads: 8,
    ssmHeadDim: 32,
    convKernel: 4,
    vocabSize: 1024,
    fullAttentionInterval: 3,
    explicitRecurrentLayers: false,
    tiedOutput: true,
    mtpLayers: 0,
    rmsEps: 1e-6,
    contextLength: 4096,
    moe: { experts: 6, expertsUsed: 2, expertFeedForward: 256, sharedFeedForward: 256, fusedGateUp: true },
  },
  /**
   * The other mixture: untied, 5 experts, 1 used per token, separate gate and up experts, a
   * wider shared expert, and a feed_forward_length that must be ignored.
   */
  "tiny-moe-b": {
    embedding: 256,
    layers: 8,
    feedForward: 768,
    headCount: 2,
    headCountKv: 1,
    headDim: 128,
    ropeDims: 32,
    ropeFreqBase: 1e6,
    ssmKHeads: 4,
    ssmVHeads: 8,
    ssmHeadDim: 32,
    convKernel: 4,
    vocabSize: 1000,
    fullAttentionInterval: 4,
    explicitRecurrentLayers: true,
    tiedOutput: false,
    mtpLayers: 0,
    rmsEps: 1e-6,
    contextLength: 4096,
    moe: { experts: 5, expertsUsed: 1, expertFeedForward: 256, sharedFeedForward: 512, fusedGateUp: false },
  },
  /** Exactly Qwen3.5-4B's shapes. */
  "qwen35-4b": {
    embedding: 2560,
    layers: 32,
    feedForward: 9216,
    headCount: 16,
    headCountKv: 4,
    headDim: 256,
    ropeDims: 64,
    ropeFreqBase: 1e7,
    ssmKHeads: 16,
    ssmVHeads: 32,
    ssmHeadDim: 128,
    convKernel: 4,
    vocabSize: 248320,
    fullAttentionInterval: 4,
    explicitRecurrentLayers: false,
    tiedOutput: true,
    mtpLayers: 0,
    rmsEps: 1e-6,
    contextLength: 262144,
  },
  /**
   * Exactly Qwen3.5-35B-A3B's shapes (Qwen/Qwen3.5-35B-A3B config.json: hidden 2048, 40 layers,
   * 16 query / 2 KV heads of 256, partial rotary 0.25, linear attention 16 K / 32 V heads of 128,
   * 256 experts of 512 with 8 used, a shared expert of 512, untied; llama.cpp's qwen35moe.cpp
   * names 40 layers 35B.A3B). Separate gate and up experts, as the converter writes by default.
   */
  "qwen35-35b-a3b": {
    embedding: 2048,
    layers: 40,
    feedForward: 0,
    headCount: 16,
    headCountKv: 2,
    headDim: 256,
    ropeDims: 64,
    ropeFreqBase: 1e7,
    ssmKHeads: 16,
    ssmVHeads: 32,
    ssmHeadDim: 128,
    convKernel: 4,
    vocabSize: 248320,
    fullAttentionInterval: 4,
    explicitRecurrentLayers: false,
    tiedOutput: false,
    mtpLayers: 0,
    rmsEps: 1e-6,
    contextLength: 262144,
    moe: { experts: 256, expertsUsed: 8, expertFeedForward: 512, sharedFeedForward: 512, fusedGateUp: false },
  },
};

export interface SynthOptions {
  shape: Qwen35Shape;
  /** Storage of the matrices; 1-D tensors and `ssm_conv1d` are always F32. */
  type: SynthType;
  seed: number;
  /** Copy every `tokenizer.*` key from this GGUF (padding the token list to `shape.vocabSize`). */
  vocabFile?: string;
  /** Overrides `tokenizer.chat_template`. */
  chatTemplate?: string;
  /** `general.name`. */
  name?: string;
}

/** Layer i is full attention iff (i+1) % interval == 0. */
export function isFullAttention(shape: Qwen35Shape, layer: number): boolean {
  return layer >= shape.layers || (layer + 1) % shape.fullAttentionInterval === 0;
}

/** Throws a DeltaqError when llama.cpp (or deltaq) could not use a model of this shape. */
export function checkShape(s: Qwen35Shape): void {
  const bad = (what: string): never => {
    throw new DeltaqError(`invalid synthetic model shape: ${what}`);
  };
  const positive = [
    "embedding",
    "layers",
    "headCount",
    "headCountKv",
    "headDim",
    "ropeDims",
    "ssmKHeads",
    "ssmVHeads",
    "ssmHeadDim",
    "convKernel",
    "vocabSize",
    "fullAttentionInterval",
    "contextLength",
  ] as const;
  for (const k of positive) {
    if (!Number.isSafeInteger(s[k]) || s[k] <= 0) bad(`${k} must be a positive integer, got ${s[k]}`);
  }
  if (!Number.isSafeInteger(s.feedForward) || s.feedForward < 0 || (!s.moe && s.feedForward === 0)) {
    bad(`feedForward must be a positive integer${s.moe ? " or 0 (absent)" : ""}, got ${s.feedForward}`);
  }
  if (s.moe) {
    const m = s.moe;
    for (const k of ["experts", "expertsUsed", "expertFeedForward", "sharedFeedForward"] as const) {
      if (!Number.isSafeInteger(m[k]) || m[k] <= 0) bad(`moe.${k} must be a positive integer, got ${m[k]}`);
    }
    if (m.experts > 1024) bad(`at most 1024 experts (llama.cpp's limit)`);
    if (m.expertsUsed > m.experts) bad(`${m.expertsUsed} experts used of ${m.experts}`);
    routingLayout(s); // throws when the embedding is too narrow to route robustly
  }
  if (s.headCount % s.headCountKv !== 0) bad(`${s.headCount} heads cannot share ${s.headCountKv} KV heads`);
  if (s.ssmVHeads % s.ssmKHeads !== 0) {
    bad(`${s.ssmVHeads} DeltaNet V heads cannot tile ${s.ssmKHeads} K heads`);
  }
  if (s.ropeDims % 2 !== 0 || s.ropeDims > s.headDim || s.ropeDims < 6) {
    bad(`ropeDims ${s.ropeDims} must be even, ≥ 6 and ≤ headDim ${s.headDim}`);
  }
  if (!Number.isInteger(s.mtpLayers) || s.mtpLayers < 0 || s.mtpLayers > 1) {
    bad(`mtpLayers must be 0 or 1 (llama.cpp supports one MTP block)`);
  }
  if (s.layers + s.mtpLayers > 512) bad(`at most 512 layers`);
  if (!(s.rmsEps > 0 && s.rmsEps < 1)) bad(`rmsEps ${s.rmsEps} out of range`);
  if (!(s.ropeFreqBase > 0)) bad(`ropeFreqBase must be positive`);
  if (!Array.from({ length: s.layers }, (_, i) => !isFullAttention(s, i)).some(Boolean)) {
    bad(`fullAttentionInterval ${s.fullAttentionInterval} leaves no DeltaNet layer`);
  }
}

/** Writes a synthetic model; returns the file size. */
export async function writeSyntheticQwen35(
  path: string,
  options: SynthOptions,
  onProgress?: (written: number, total: number) => void,
): Promise<number> {
  return await writeGguf(path, buildSyntheticQwen35(options), { onProgress });
}

/** The metadata and (lazily generated) tensors of a synthetic model. */
export function buildSyntheticQwen35(options: SynthOptions): GgufToWrite {
  const shape = options.shape;
  checkShape(shape);
  if (!Number.isSafeInteger(options.seed)) {
    throw new DeltaqError(`seed must be an integer, got ${options.seed}`);
  }
  const vocab = options.vocabFile
    ? copiedVocab(options.vocabFile, shape.vocabSize)
    : syntheticVocab(shape.vocabSize);
  if (options.chatTemplate !== undefined) vocab.set("tokenizer.chat_template", str(options.chatTemplate));
  return {
    metadata: [...modelMetadata(shape, options), ...vocab],
    tensors: modelTensors(shape, options.type, options.seed),
  };
}

const FILE_TYPE: Record<SynthType, number> = { f32: 0, f16: 1, bf16: 32 }; // llama_ftype ALL_F32, MOSTLY_F16, MOSTLY_BF16
const GGML_TYPE: Record<SynthType, number> = { f32: GGML_F32, f16: GGML_F16, bf16: GGML_BF16 };

function modelMetadata(s: Qwen35Shape, o: SynthOptions): [string, MetadataInput][] {
  const arch = s.moe ? "qwen35moe" : "qwen35";
  const a = (k: string) => `${arch}.${k}`;
  const blocks = s.layers + s.mtpLayers;
  const m: [string, MetadataInput][] = [
    ["general.architecture", arch],
    ["general.name", o.name ?? `deltaq synthetic ${arch}`],
    ["general.file_type", u32(FILE_TYPE[o.type])],
    [a("context_length"), u32(s.contextLength)],
    [a("embedding_length"), u32(s.embedding)],
    [a("block_count"), u32(blocks)],
    ...(s.feedForward > 0 ? [[a("feed_forward_length"), u32(s.feedForward)] as [string, MetadataInput]] : []),
    [a("attention.head_count"), u32(s.headCount)],
    [a("attention.head_count_kv"), u32(s.headCountKv)],
    [a("attention.key_length"), u32(s.headDim)],
    [a("attention.value_length"), u32(s.headDim)],
    [a("attention.layer_norm_rms_epsilon"), f32(s.rmsEps)],
    [a("rope.dimension_count"), u32(s.ropeDims)],
    [a("rope.freq_base"), f32(s.ropeFreqBase)],
    // Required by llama.cpp's loader; text positions are equal in every section, so only the sum
    // (n_rot/2, as in the real [11, 11, 10, 0]) matters.
    [a("rope.dimension_sections"), array(GgufValueType.INT32, ropeSections(s.ropeDims))],
    [a("ssm.conv_kernel"), u32(s.convKernel)],
    [a("ssm.state_size"), u32(s.ssmHeadDim)],
    [a("ssm.group_count"), u32(s.ssmKHeads)],
    [a("ssm.time_step_rank"), u32(s.ssmVHeads)],
    [a("ssm.inner_size"), u32(s.ssmVHeads * s.ssmHeadDim)],
    [a("full_attention_interval"), u32(s.fullAttentionInterval)],
  ];
  if (s.explicitRecurrentLayers) {
    // One flag per stored block (llama.cpp checks the length against block_count); MTP blocks are attention.
    const flags = Array.from({ length: blocks }, (_, i) => !isFullAttention(s, i));
    m.push([a("attention.recurrent_layers"), array(GgufValueType.BOOL, flags)]);
  }
  if (s.mtpLayers > 0) m.push([a("nextn_predict_layers"), u32(s.mtpLayers)]);
  if (s.moe) {
    m.push(
      [a("expert_count"), u32(s.moe.experts)],
      [a("expert_used_count"), u32(s.moe.expertsUsed)],
      [a("expert_feed_forward_length"), u32(s.moe.expertFeedForward)],
      [a("expert_shared_feed_forward_length"), u32(s.moe.sharedFeedForward)],
    );
  }
  return m;
}

function ropeSections(ropeDims: number): number[] {
  const half = ropeDims / 2;
  const s = Math.round(half * 11 / 32);
  return [s, s, half - 2 * s, 0];
}

// ---------------------------------------------------------------------------------------------
// Weights

/**
 * Target RMS of what each sub-layer adds to the residual stream (inputs are RMS-normalised, so
 * this keeps the stream O(1): after L layers its RMS is about sqrt(2L)·0.25).
 *
 * This and LOGIT_SPREAD are calibrated against llama.cpp itself. Activation quantization (Q8_K /
 * Q8_0 codes) makes any float-noise difference between two runs flip a code somewhere, which then
 * cascades through the layers and positions until the runs' quantization noise is unrelated; how
 * far the logits then differ is the model's sensitivity to that noise. With gain 0.4 and spread 3,
 * llama.cpp's own token-by-token run differed from its prompt run by up to 1e-2 max KL on Q4_K_M-Q6_K,
 * above the parity marks (2e-3 mean, 5e-3 max), so no engine could pass. With 0.25 and 1.5 its
 * self-consistency is ≤ 2.6e-3 max KL (tiny and tiny-b, seeds 1 and 2), which the marks can judge.
 */
const SUBLAYER_GAIN = 0.25;
/** Spread (standard deviation over the vocabulary) of the logits for an RMS-1 final hidden state. */
const LOGIT_SPREAD = 1.5;
/** Relative noise of norm weights around their centre. */
const NORM_NOISE = 0.1;
/** Relative noise that makes DeltaNet k rows (and conv taps) differ from their q rows. */
const KQ_NOISE = 0.1;
/** Approximate RMS of silu(a)·b and silu(a) for a, b ~ N(0, 1), used to size the output projections. */
const SWIGLU_RMS = 0.6;
const SILU_RMS = 0.6;
/** RMS of sigmoid-gated attention output (sigmoid ≈ 0.5). */
const GATED_ATTENTION_RMS = 0.5;

/** Fills row `row` of a tensor (one row = ne0 values). */
type RowFill = (dst: Float32Array, row: number) => void;

function modelTensors(s: Qwen35Shape, type: SynthType, seed: number): TensorToWrite[] {
  const E = s.embedding, F = s.feedForward, V = s.vocabSize;
  const matrixType = GGML_TYPE[type];
  const tensors: TensorToWrite[] = [];
  const matrix = (name: string, inDim: number, outDim: number, fill: RowFill) =>
    tensors.push(rowTensor(name, [inDim, outDim], matrixType, fill));
  const vector = (name: string, n: number, fill: RowFill) =>
    tensors.push(rowTensor(name, [n], GGML_F32, fill));
  const dense = (name: string, inDim: number, outDim: number, std: number) =>
    matrix(name, inDim, outDim, uniformRows(streamSeed(seed, name), std));
  const norm = (name: string, n: number, centre = 1) =>
    vector(name, n, normRow(streamSeed(seed, name), centre));

  // token_embd rows have RMS 1/sqrt(E): an embedding is then as "loud" as one logit direction, so
  // with a tied head the input token does not dominate the next-token logits.
  const embedStd = 1 / Math.sqrt(E);
  const routing = s.moe ? routingLayout(s) : undefined;
  if (routing) {
    const name = "token_embd.weight";
    matrix(name, E, V, withRoutingCode(uniformRows(streamSeed(seed, name), embedStd), routing, seed));
  } else dense("token_embd.weight", E, V, embedStd);
  // Tied: output_norm carries the logit spread (logit std = centre · embedStd · sqrt(E)). The LM
  // head does not see the routing dims (their code would dominate a tied head's logits).
  const outputNorm = "output_norm.weight";
  vector(outputNorm, E, zeroRoutingDims(normRow(streamSeed(seed, outputNorm), s.tiedOutput ? LOGIT_SPREAD : 1), routing, 1));
  if (!s.tiedOutput) dense("output.weight", E, V, LOGIT_SPREAD / Math.sqrt(E));
  /** A projection that writes the residual stream (rows = E outputs, stacked per expert). */
  const writeBack = (name: string, inDim: number, outDim: number, std: number, slices = 1) =>
    tensors.push(
      rowTensor(
        name,
        slices > 1 ? [inDim, outDim, slices] : [inDim, outDim],
        matrixType,
        zeroRoutingDims(uniformRows(streamSeed(seed, name), std), routing, outDim),
      ),
    );

  const inStd = 1 / Math.sqrt(E); // projections of an RMS-1 input give RMS-1 outputs
  const attentionBlock = (b: string) => {
    const qDim = s.headCount * s.headDim, kvDim = s.headCountKv * s.headDim;
    dense(`${b}attn_q.weight`, E, 2 * qDim, inStd); // per head: Dh query rows, then Dh gate rows
    dense(`${b}attn_k.weight`, E, kvDim, inStd);
    dense(`${b}attn_v.weight`, E, kvDim, inStd);
    writeBack(`${b}attn_output.weight`, qDim, E, SUBLAYER_GAIN / (GATED_ATTENTION_RMS * Math.sqrt(qDim)));
    norm(`${b}attn_q_norm.weight`, s.headDim);
    norm(`${b}attn_k_norm.weight`, s.headDim);
  };
  const ffnBlock = (b: string) => {
    dense(`${b}ffn_gate.weight`, E, F, inStd);
    dense(`${b}ffn_up.weight`, E, F, inStd);
    dense(`${b}ffn_down.weight`, F, E, SUBLAYER_GAIN / (SWIGLU_RMS * Math.sqrt(F)));
  };
  const moeBlock = (b: string) => {
    const m = s.moe!, X = m.experts, Fe = m.expertFeedForward, Fs = m.sharedFeedForward;
    const router = `${b}ffn_gate_inp.weight`;
    // the router is never quantized by llama.cpp (spec §3): always F32
    tensors.push(rowTensor(router, [E, X], GGML_F32, routerRows(routing!, seed, streamSeed(seed, router), m)));
    // Expert e's rows of gate (and up) are rows e·Fe.. of the stacked tensor; the fused tensor
    // holds the same values (gate rows, then up rows, per expert), so both layouts are one model.
    const gate = uniformRows(streamSeed(seed, `${b}ffn_gate_exps.weight`), inStd);
    const up = uniformRows(streamSeed(seed, `${b}ffn_up_exps.weight`), inStd);
    if (m.fusedGateUp) {
      tensors.push(rowTensor(`${b}ffn_gate_up_exps.weight`, [E, 2 * Fe, X], matrixType, (dst, row) => {
        const e = Math.floor(row / (2 * Fe)), r = row % (2 * Fe);
        if (r < Fe) gate(dst, e * Fe + r);
        else up(dst, e * Fe + r - Fe);
      }));
    } else {
      tensors.push(rowTensor(`${b}ffn_gate_exps.weight`, [E, Fe, X], matrixType, gate));
      tensors.push(rowTensor(`${b}ffn_up_exps.weight`, [E, Fe, X], matrixType, up));
    }
    // The routed experts' weighted sum and the shared expert (gate ≈ 0.5) add ~SUBLAYER_GAIN.
    writeBack(`${b}ffn_down_exps.weight`, Fe, E, SUBLAYER_GAIN / (SWIGLU_RMS * Math.sqrt(Fe)), X);
    vector(`${b}ffn_gate_inp_shexp.weight`, E, uniformRows(streamSeed(seed, `${b}ffn_gate_inp_shexp.weight`), inStd));
    dense(`${b}ffn_gate_shexp.weight`, E, Fs, inStd);
    dense(`${b}ffn_up_shexp.weight`, E, Fs, inStd);
    writeBack(`${b}ffn_down_shexp.weight`, Fs, E, SUBLAYER_GAIN / (SWIGLU_RMS * Math.sqrt(Fs)));
  };
  const deltanetBlock = (b: string) => {
    const keyDim = s.ssmKHeads * s.ssmHeadDim, valueDim = s.ssmVHeads * s.ssmHeadDim;
    const convDim = 2 * keyDim + valueDim;
    const qkv = `${b}attn_qkv.weight`;
    matrix(
      qkv,
      E,
      convDim,
      kEqualsQPlusNoise(streamSeed(seed, qkv), streamSeed(seed, `${qkv}#k`), keyDim, inStd),
    );
    dense(`${b}attn_gate.weight`, E, valueDim, inStd);
    dense(`${b}ssm_beta.weight`, E, s.ssmVHeads, inStd); // beta = sigmoid(N(0,1)): mostly 0.3..0.7
    dense(`${b}ssm_alpha.weight`, E, s.ssmVHeads, 0.5 * inStd);
    const conv = `${b}ssm_conv1d.weight`;
    tensors.push(
      rowTensor(
        conv,
        [s.convKernel, convDim],
        GGML_F32,
        convTaps(streamSeed(seed, conv), streamSeed(seed, `${conv}#k`), keyDim),
      ),
    );
    // g = -exp(A_log) · softplus(alpha·x + dt_bias): A in [0.22, 1.65], softplus(dt_bias) in
    // [0.13, 0.69], so per-token decays exp(g) lie roughly in [0.3, 0.97].
    vector(`${b}ssm_dt.bias`, s.ssmVHeads, uniformRange(streamSeed(seed, `${b}ssm_dt.bias`), -2, 0));
    vector(`${b}ssm_a`, s.ssmVHeads, negExpUniform(streamSeed(seed, `${b}ssm_a`), -1.5, 0.5));
    norm(`${b}ssm_norm.weight`, s.ssmHeadDim);
    writeBack(`${b}ssm_out.weight`, valueDim, E, SUBLAYER_GAIN / (SILU_RMS * Math.sqrt(valueDim)));
  };

  for (let i = 0; i < s.layers + s.mtpLayers; i++) {
    const b = `blk.${i}.`;
    norm(`${b}attn_norm.weight`, E);
    norm(`${b}post_attention_norm.weight`, E);
    if (isFullAttention(s, i)) attentionBlock(b);
    else deltanetBlock(b);
    if (s.moe) moeBlock(b);
    else ffnBlock(b);
    if (i >= s.layers) {
      // MTP block (llama.cpp's qwen35 loader): concat(enorm(embedding), hnorm(hidden)) → eh_proj.
      dense(`${b}nextn.eh_proj.weight`, 2 * E, E, 1 / Math.sqrt(2 * E));
      norm(`${b}nextn.enorm.weight`, E);
      norm(`${b}nextn.hnorm.weight`, E);
      norm(`${b}nextn.shared_head_norm.weight`, E, s.tiedOutput ? LOGIT_SPREAD : 1);
    }
  }
  return tensors;
}

// ---------------------------------------------------------------------------------------------
// Routing without near-ties (mixture-of-experts models)
//
// A router that scores random directions of the hidden state would sometimes put two experts
// within rounding noise of each other at the k-th place, and two correct engines would then pick
// different experts and diverge. Instead the model carries a *routing code* the router reads
// with a wide margin:
// - m = ⌈experts / k⌉ directions r_j, each ±1/√d on its own d dims at the start of the embedding;
// - token v's embedding adds ROUTING_CODE · r_{j(v)} (j(v) a hash of v), and no sub-layer writes
//   those dims (their output rows are zero), so every layer's hidden state keeps the code;
// - layer l's router gives expert e the logit ROUTER_GAIN · (1 + ROUTER_STEP·i) · (h·r_j) for each
//   direction j whose group of k experts (a per-layer permutation) holds e at place i, plus
//   ROUTER_NOISE of random direction: the k experts of the token's group score several units
//   above all others, and their weights still vary with the token;
// - the LM head ignores the routing dims (output_norm is 0 there).

/** Norm of the routing code added to each token's embedding. */
const ROUTING_CODE = 1;
const ROUTER_GAIN = 4;
const ROUTER_STEP = 0.1;
/** Logit spread of the router's random part (for an RMS-1 hidden state). */
const ROUTER_NOISE = 0.5;

interface RoutingLayout {
  directions: number;
  /** Dims per direction; direction j owns dims [j·dims, (j+1)·dims). */
  dims: number;
}

/** Where the routing code lives; throws when the embedding is too narrow for it. */
export function routingLayout(s: Qwen35Shape): RoutingLayout {
  const m = s.moe!;
  const directions = Math.ceil(m.experts / m.expertsUsed);
  const dims = Math.min(16, Math.floor(s.embedding / (2 * directions)));
  if (dims < 4) {
    throw new DeltaqError(
      `invalid synthetic model shape: ${directions} routing directions need an embedding of at least ${8 * directions}`,
    );
  }
  return { directions, dims };
}

function isRoutingDim(r: RoutingLayout | undefined, dim: number): boolean {
  return r !== undefined && dim < r.directions * r.dims;
}

/** Sign of dim i of direction j's code. */
function codeSign(seed: number, j: number, i: number): number {
  return rowSeed(streamSeed(seed, "routing#sign"), j * 65536 + i) & 1 ? 1 : -1;
}

function tokenDirection(seed: number, r: RoutingLayout, token: number): number {
  return rowSeed(streamSeed(seed, "routing#token"), token) % r.directions;
}

function withRoutingCode(fill: RowFill, r: RoutingLayout, seed: number): RowFill {
  const amplitude = ROUTING_CODE / Math.sqrt(r.dims);
  return (dst, token) => {
    fill(dst, token);
    const j = tokenDirection(seed, r, token);
    for (let i = 0; i < r.dims; i++) dst[j * r.dims + i] += amplitude * codeSign(seed, j, i);
  };
}

/** Zero on the routing dims of each `width`-value output slice (rows of E outputs), else `fill`. */
function zeroRoutingDims(fill: RowFill, r: RoutingLayout | undefined, width: number): RowFill {
  if (!r) return fill;
  return (dst, row) => {
    fill(dst, row);
    // a vector (width 1) is one row of dims; a matrix's row is one output dim
    if (width === 1) for (let i = 0; i < r.directions * r.dims; i++) dst[i] = 0;
    else if (isRoutingDim(r, row % width)) dst.fill(0);
  };
}

/**
 * A layer's router rows (one per expert; `stream` is the tensor's own random stream, so each
 * layer groups the experts differently); see the section comment.
 */
function routerRows(r: RoutingLayout, seed: number, stream: number, m: MoeShape): RowFill {
  const order = permutation(m.experts, stream);
  const noise = uniformRows(stream, ROUTER_NOISE);
  return (dst, expert) => {
    noise(dst, expert);
    for (let i = 0; i < dst.length; i++) dst[i] /= Math.sqrt(dst.length);
    for (let j = 0; j < r.directions; j++) {
      for (let place = 0; place < m.expertsUsed; place++) {
        if (order[(j * m.expertsUsed + place) % m.experts] !== expert) continue;
        const gain = ROUTER_GAIN * (1 + ROUTER_STEP * place) / Math.sqrt(r.dims);
        for (let i = 0; i < r.dims; i++) dst[j * r.dims + i] += gain * codeSign(seed, j, i);
      }
    }
  };
}

/** A seeded permutation of 0..n-1 (Fisher–Yates). */
function permutation(n: number, stream: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rowSeed(stream, i) % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

function rowTensor(name: string, shape: number[], type: number, fill: RowFill): TensorToWrite {
  const rowLength = shape[0];
  return floatTensor(name, shape, type, (values, firstRow) => {
    const rows = values.length / rowLength;
    for (let r = 0; r < rows; r++) fill(values.subarray(r * rowLength, (r + 1) * rowLength), firstRow + r);
  });
}

/** Uniform values with standard deviation `std`. */
function uniformRows(seed: number, std: number): RowFill {
  const amplitude = std * Math.sqrt(3);
  return (dst, row) => fillUniform(dst, rowSeed(seed, row), amplitude, false);
}

/** centre · (1 ± NORM_NOISE). */
function normRow(seed: number, centre: number): RowFill {
  return (dst, row) => {
    fillUniform(dst, rowSeed(seed, row), NORM_NOISE, false);
    for (let i = 0; i < dst.length; i++) dst[i] = centre * (1 + dst[i]);
  };
}

function uniformRange(seed: number, lo: number, hi: number): RowFill {
  return (dst, row) => {
    fillUniform(dst, rowSeed(seed, row), 1, false);
    for (let i = 0; i < dst.length; i++) dst[i] = lo + (hi - lo) * (dst[i] + 1) / 2;
  };
}

/** −exp(A_log) with A_log uniform in [lo, hi] (how the converter stores ssm_a). */
function negExpUniform(seed: number, lo: number, hi: number): RowFill {
  const range = uniformRange(seed, lo, hi);
  return (dst, row) => {
    range(dst, row);
    for (let i = 0; i < dst.length; i++) dst[i] = -Math.exp(dst[i]);
  };
}

/** `attn_qkv` rows: [q (keyDim) | k (keyDim) | v]; k row r is q row r plus KQ_NOISE relative noise. */
function kEqualsQPlusNoise(seed: number, noiseSeed: number, keyDim: number, std: number): RowFill {
  const amplitude = std * Math.sqrt(3);
  return (dst, row) => {
    const isK = row >= keyDim && row < 2 * keyDim;
    fillUniform(dst, rowSeed(seed, isK ? row - keyDim : row), amplitude, false);
    if (isK) fillUniform(dst, rowSeed(noiseSeed, row), amplitude * KQ_NOISE, true);
  };
}

/**
 * Conv taps of one channel (K values, the last multiplies the current token): mostly the current
 * token (0.8 ± 0.2) with ±0.3 of the previous ones; k channels copy their q channel plus noise.
 */
function convTaps(seed: number, noiseSeed: number, keyDim: number): RowFill {
  return (dst, channel) => {
    const isK = channel >= keyDim && channel < 2 * keyDim;
    fillUniform(dst, rowSeed(seed, isK ? channel - keyDim : channel), 0.3, false);
    dst[dst.length - 1] = 0.8 + (2 / 3) * dst[dst.length - 1];
    if (isK) fillUniform(dst, rowSeed(noiseSeed, channel), 0.3 * KQ_NOISE, true);
  };
}

// ---------------------------------------------------------------------------------------------
// PRNG: one xorshift32 stream per (seed, tensor, row), started from a hash so rows are independent.

function streamSeed(seed: number, name: string): number {
  let h = mix32((seed >>> 0) ^ mix32(Math.floor(seed / 2 ** 32) >>> 0));
  for (let i = 0; i < name.length; i++) h = mix32(h ^ name.charCodeAt(i));
  return h;
}

function rowSeed(stream: number, row: number): number {
  const x = mix32(stream ^ mix32(row + 0x9e3779b9));
  return x === 0 ? 0x6d2b79f5 : x; // xorshift32 must not start at 0
}

/** Uniform values in [−amplitude, amplitude), written or (add) added to dst. */
function fillUniform(dst: Float32Array, state: number, amplitude: number, add: boolean): void {
  const scale = amplitude / 2 ** 31;
  let x = state | 0;
  if (add) {
    for (let i = 0; i < dst.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      dst[i] += x * scale;
    }
  } else {
    for (let i = 0; i < dst.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      dst[i] = x * scale;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer metadata

const TOKEN_NORMAL = 1;
const TOKEN_CONTROL = 3;
const TOKEN_USER_DEFINED = 4;
const TOKEN_UNUSED = 5;

/** Special tokens of the synthetic vocab (Qwen's texts and types). */
const SPECIALS: [string, number][] = [
  ["<|endoftext|>", TOKEN_CONTROL],
  ["<|im_start|>", TOKEN_CONTROL],
  ["<|im_end|>", TOKEN_CONTROL],
  ["<think>", TOKEN_USER_DEFINED],
  ["</think>", TOKEN_USER_DEFINED],
];

/** A ChatML template that opens the assistant turn with `<think>\n`, like Qwen3.5's. */
export const SYNTH_CHAT_TEMPLATE = "{%- for message in messages %}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}";

/** Qwen3.5's pre-tokenizer (spec §5), used to split the merge-training text into words. */
const PRETOKENIZER =
  /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/** Text the synthetic BPE merges are learned from (any text works; this mixes prose and code). */
const MERGE_TRAINING_TEXT = `
The river runs past the old mill, where the miller's daughter counts the sacks of grain each morning.
She writes the numbers in a thin green book: three hundred and twelve on Monday, two hundred and
ninety on Tuesday, and on Wednesday there were none, because the wheel had stopped turning.
Nobody could say why. The water was high, the gears were oiled, and the stones were sharp.
"It is the weather," said her father, although the sky was clear and the wind was still.
In the evening they walked along the bank and listened to the water, which sounded the same as
always. A heron stood in the shallows, watching them. When they came back the wheel was turning
again, slowly at first and then faster, and the mill filled with the smell of fresh flour.
Questions: What stopped the wheel? Why did it start again? What would you have done?
Answer in one sentence, then explain your reasoning step by step.
function count(items) { let total = 0; for (const item of items) { total += item.weight; } return total; }
def mean(values): return sum(values) / len(values) if values else 0.0
for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }
The quick brown fox jumps over the lazy dog. 1234567890 + 42 = 1234567932.
<p>Hello, world!</p> https://example.com/path?query=value&other=1
`;

/** GPT-2's byte → printable character table (byte-level BPE symbols). */
export function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable(b) ? b : 256 + extra++);
  return table;
}

/** The 256 byte symbols in GPT-2's vocabulary order (printable bytes first). */
function byteSymbolsInVocabOrder(table: string[]): string[] {
  const printable: string[] = [], others: string[] = [];
  for (let b = 0; b < 256; b++) (table[b].codePointAt(0)! < 256 ? printable : others).push(table[b]);
  return [...printable, ...others];
}

/**
 * Learns up to `maxMerges` BPE merges from the training text, most frequent pair first (ties
 * broken by merge text), continuing with pairs seen once until every word is a single token.
 */
function learnMerges(table: string[], maxMerges: number): string[] {
  const utf8 = new TextEncoder();
  const counts = new Map<string, number>();
  for (const m of MERGE_TRAINING_TEXT.matchAll(PRETOKENIZER)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
  const words = [...counts].map(([w, n]) => ({ symbols: Array.from(utf8.encode(w), (b) => table[b]), n }));
  const merges: string[] = [];
  while (merges.length < maxMerges) {
    const pairs = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.symbols.length; i++) {
        const key = `${w.symbols[i]} ${w.symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + w.n);
      }
    }
    let best = "", bestCount = 0;
    for (const [key, n] of pairs) {
      if (n > bestCount || (n === bestCount && key < best)) [best, bestCount] = [key, n];
    }
    if (bestCount === 0) break; // every word is one token
    merges.push(best);
    const [a, b] = best.split(" ");
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.symbols.length; i++) {
        if (i + 1 < w.symbols.length && w.symbols[i] === a && w.symbols[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(w.symbols[i]);
      }
      w.symbols = out;
    }
  }
  return merges;
}

/**
 * A byte-level BPE vocab of exactly `size` tokens: the 256 byte symbols, merged tokens learned
 * from a built-in text, the special tokens, then `[PAD{id}]` tokens typed unused (as llama.cpp's
 * converter pads real vocabularies).
 */
export function syntheticVocab(size: number): Map<string, MetadataInput> {
  const minimum = 256 + SPECIALS.length;
  if (size < minimum) {
    throw new DeltaqError(`a synthetic vocab needs at least ${minimum} tokens, got ${size}`);
  }
  const table = bytesToUnicode();
  const tokens = byteSymbolsInVocabOrder(table);
  const merges: string[] = [];
  const known = new Set(tokens);
  for (const merge of learnMerges(table, size - minimum)) {
    const token = merge.replace(" ", "");
    if (known.has(token)) continue; // another merge order already made this token
    if (tokens.length >= size - SPECIALS.length) break;
    merges.push(merge);
    tokens.push(token);
    known.add(token);
  }
  const types = new Int32Array(size).fill(TOKEN_NORMAL);
  const specialId = new Map<string, number>();
  for (const [text, type] of SPECIALS) {
    specialId.set(text, tokens.length);
    types[tokens.length] = type;
    tokens.push(text);
  }
  for (let id = tokens.length; id < size; id++) {
    tokens.push(`[PAD${id}]`);
    types[id] = TOKEN_UNUSED;
  }
  return new Map<string, MetadataInput>([
    ["tokenizer.ggml.model", "gpt2"],
    ["tokenizer.ggml.pre", "qwen35"],
    ["tokenizer.ggml.tokens", array(GgufValueType.STRING, tokens)],
    ["tokenizer.ggml.token_type", array(GgufValueType.INT32, types)],
    ["tokenizer.ggml.merges", array(GgufValueType.STRING, merges)],
    ["tokenizer.ggml.eos_token_id", u32(specialId.get("<|im_end|>")!)],
    ["tokenizer.ggml.padding_token_id", u32(specialId.get("<|endoftext|>")!)],
    ["tokenizer.ggml.bos_token_id", u32(specialId.get("<|endoftext|>")!)],
    ["tokenizer.ggml.add_bos_token", bool(false)],
    ["tokenizer.chat_template", str(SYNTH_CHAT_TEMPLATE)],
  ]);
}

/**
 * Every `tokenizer.*` key of a vocab GGUF, with its stored type. The token list (and the per-token
 * arrays) are padded with `[PAD{id}]` tokens typed unused up to `size` rows.
 */
export function copiedVocab(path: string, size: number): Map<string, MetadataInput> {
  const gguf = readGgufHeader(path);
  const out = new Map<string, MetadataInput>();
  for (const [key, value] of gguf.metadata) {
    if (!key.startsWith("tokenizer.")) continue;
    const t = gguf.metadataTypes.get(key)!;
    out.set(key, new TypedValue(t.type, value, t.arrayType));
  }
  const tokens = gguf.metadata.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.length === 0) {
    throw new DeltaqError(`${path}: no tokenizer.ggml.tokens list, so it cannot provide a vocab`);
  }
  const n = tokens.length;
  if (n > size) {
    throw new DeltaqError(
      `${path} has ${n} tokens, more than the model's vocab size ${size} (use a larger --vocab-size)`,
    );
  }
  if (n === size) return out;
  const padded = tokens.slice();
  for (let id = n; id < size; id++) padded.push(`[PAD${id}]`);
  out.set("tokenizer.ggml.tokens", array(GgufValueType.STRING, padded));
  const types = gguf.metadata.get("tokenizer.ggml.token_type");
  if (types !== undefined) {
    const t = new Int32Array(size).fill(TOKEN_UNUSED);
    t.set(Int32Array.from(types as ArrayLike<number>).subarray(0, n));
    out.set("tokenizer.ggml.token_type", array(GgufValueType.INT32, t));
  }
  const scores = gguf.metadata.get("tokenizer.ggml.scores");
  if (scores !== undefined) {
    const sc = new Float32Array(size).fill(-1000); // what the converter gives padding tokens
    sc.set(Float32Array.from(scores as ArrayLike<number>).subarray(0, n));
    out.set("tokenizer.ggml.scores", array(GgufValueType.FLOAT32, sc));
  }
  return out;
}

/** Number of tokens in a vocab GGUF (for choosing the model's vocab size). */
export function vocabFileSize(path: string): number {
  const tokens = readGgufHeader(path).metadata.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens)) {
    throw new DeltaqError(`${path}: no tokenizer.ggml.tokens list, so it cannot provide a vocab`);
  }
  return tokens.length;
}

/** A one-line summary of a shape, for logs. */
export function describeShape(s: Qwen35Shape, type: SynthType): string {
  const attn = Array.from({ length: s.layers }, (_, i) => isFullAttention(s, i)).filter(Boolean).length;
  return `E=${s.embedding} layers=${s.layers} (${attn} attention, ${s.layers - attn} DeltaNet${
    s.mtpLayers ? `, +${s.mtpLayers} MTP` : ""
  }) ${
    s.moe
      ? `MoE ${s.moe.experts} experts (${s.moe.expertsUsed} used) F=${s.moe.expertFeedForward}${
        s.moe.fusedGateUp ? " fused" : ""
      } + shared F=${s.moe.sharedFeedForward}`
      : `F=${s.feedForward}`
  } attn ${s.headCount}/${s.headCountKv}×${s.headDim} rot ${s.ropeDims} ` +
    `DeltaNet ${s.ssmKHeads}/${s.ssmVHeads}×${s.ssmHeadDim} vocab ${s.vocabSize} ${
      s.tiedOutput ? "tied" : "untied"
    } ` +
    `${ggmlTypeName(GGML_TYPE[type])}`;
}

/**
 * A short hash of the sources that decide a synthetic model's bytes (this file, the GGUF writer
 * and the hash behind its random streams), for naming cached models so that a generator change
 * rebuilds them.
 */
export function generatorVersion(): string {
  let h = FNV1A_INIT;
  for (const f of ["./synth.ts", "../gguf/write.ts", "../util/hash.ts"]) {
    h = fnv1a(Deno.readFileSync(new URL(f, import.meta.url)), h);
  }
  return hex32(h);
}
