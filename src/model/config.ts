/**
 * Qwen3.5 hyper-parameters from GGUF metadata, the layer schedule, and the tensor table every
 * layer must have (names, shapes) — checked against the file before any weight is used.
 * See ../shared/spec/qwen35.md §1–§2; the mixture-of-experts variant (`qwen35moe`, every FFN a
 * routed + shared expert block) ../shared/spec/qwen35moe.md §2–§3.
 */
import { DeltaqError } from "../errors.ts";
import type { Metadata } from "../gguf/read.ts";
import { COMPUTABLE_TYPES, computableTypeNames, ggmlTypeName, type GgufTensorInfo } from "../gguf/types.ts";

export type LayerType = "attention" | "deltanet";

/** The FFN of a `qwen35moe` model: routed experts plus one sigmoid-gated shared expert per layer. */
export interface MoeConfig {
  /** Routed experts per layer (`expert_count`). */
  nExpert: number;
  /** Experts each token is routed to, per layer (`expert_used_count`: one value or one per layer). */
  nExpertUsed: number[];
  /** One routed expert's FFN width (`expert_feed_forward_length`, else feed_forward_length / used). */
  nFfExp: number;
  /** The shared expert's FFN width (`expert_shared_feed_forward_length`, else feed_forward_length). */
  nFfShexp: number;
  /** Per layer: gate and up experts stored as one tensor (`ffn_gate_up_exps`, gate rows first). */
  fusedGateUp: boolean[];
}

export interface Qwen35Config {
  architecture: "qwen35" | "qwen35moe";
  /** Layers run by the forward pass (MTP blocks excluded). */
  nLayer: number;
  /** Layers stored in the file, including MTP blocks. */
  nLayerStored: number;
  nEmbd: number;
  /** Dense FFN width (`feed_forward_length`); for MoE models only a fallback, 0 when absent. */
  nFf: number;
  nVocab: number;
  nCtxTrain: number;
  eps: number;
  layerTypes: LayerType[];
  // full attention
  nHead: number;
  nHeadKv: number;
  headDim: number;
  nRot: number;
  ropeBase: number;
  /** `rope.dimension_sections` padded to 4 entries, or [] when the file has none. */
  ropeSections: number[];
  attentionScale: number;
  // Gated DeltaNet
  convKernel: number;
  /** Q/K heads (ssm.group_count). */
  nKHeads: number;
  /** V heads (ssm.time_step_rank). */
  nVHeads: number;
  /** Dk = Dv (ssm.state_size). */
  ssmHeadDim: number;
  tiedEmbeddings: boolean;
  /** Present for `qwen35moe` models (every layer's FFN is a mixture of experts). */
  moe?: MoeConfig;
}

const ARCHITECTURES = ["qwen35", "qwen35moe"] as const;
/** llama.cpp's LLAMA_MAX_LAYERS: a larger block_count is corruption (and would size loops). */
const MAX_LAYERS = 512;
/**
 * Upper bound for each width (embedding, FFN, head counts): far above any real model, low enough
 * that products of two or three of them stay exact integers and fit the kernels' u32 operands.
 */
const MAX_WIDTH = 1 << 20;
/** Token ids are i32 on the native side. */
const MAX_VOCAB = 2 ** 31 - 1;
/** llama.cpp's LLAMA_MAX_EXPERTS (also the kernels' limit). */
const MAX_EXPERTS = 1024;

/** Reads the hyper-parameters and layer schedule; throws a DeltaqError naming the file. */
export function readConfig(md: Metadata, tensors: GgufTensorInfo[], file: string): Qwen35Config {
  const arch = md.string("general.architecture");
  const ARCH = ARCHITECTURES.find((a) => a === arch);
  if (ARCH === undefined) {
    throw new DeltaqError(
      `${file}: unsupported architecture ${JSON.stringify(arch)} (deltaq runs Qwen3.5 models, architecture "qwen35" or "qwen35moe")`,
    );
  }
  const k = (name: string) => `${ARCH}.${name}`;
  const nLayerStored = md.uint(k("block_count"));
  if (nLayerStored === 0 || nLayerStored > MAX_LAYERS) {
    throw new DeltaqError(`${file}: block_count ${nLayerStored} is outside 1..${MAX_LAYERS}`);
  }
  const nextn = md.uint(k("nextn_predict_layers"), 0);
  if (nextn >= nLayerStored) throw new DeltaqError(`${file}: nextn_predict_layers (${nextn}) leaves no layers to run`);
  const nLayer = nLayerStored - nextn;
  const nHead = md.uint(k("attention.head_count"));
  const nHeadKv = md.uint(k("attention.head_count_kv"));
  const headDim = md.uint(k("attention.key_length"));
  const valueDim = md.uint(k("attention.value_length"), headDim);
  const nRot = md.uint(k("rope.dimension_count"), headDim);
  const embd = tensors.find((t) => t.name === "token_embd.weight");
  if (!embd) throw new DeltaqError(`${file}: required tensor token_embd.weight is missing`);

  const cfg: Qwen35Config = {
    architecture: ARCH,
    nLayer,
    nLayerStored,
    nEmbd: md.uint(k("embedding_length")),
    nFf: ARCH === "qwen35moe" ? firstUint(md, k("feed_forward_length"), 0) : md.uint(k("feed_forward_length")),
    nVocab: embd.shape[1] ?? 0,
    nCtxTrain: md.uint(k("context_length"), 0),
    eps: md.float(k("attention.layer_norm_rms_epsilon")),
    layerTypes: layerSchedule(md, ARCH, nLayer, file),
    nHead,
    nHeadKv,
    headDim,
    nRot,
    ropeBase: md.float(k("rope.freq_base"), 10000),
    ropeSections: ropeSections(md, ARCH, file),
    attentionScale: md.float(k("attention.scale"), 0) || 1 / Math.sqrt(headDim),
    convKernel: md.uint(k("ssm.conv_kernel")),
    nKHeads: md.uint(k("ssm.group_count")),
    nVHeads: md.uint(k("ssm.time_step_rank")),
    ssmHeadDim: md.uint(k("ssm.state_size")),
    tiedEmbeddings: !tensors.some((t) => t.name === "output.weight"),
  };

  const bad = (what: string): never => {
    throw new DeltaqError(`${file}: ${what}`);
  };
  const widths: [string, number][] = [
    ["embedding_length", cfg.nEmbd],
    ["feed_forward_length", cfg.nFf],
    ["attention.head_count", nHead],
    ["attention.head_count_kv", nHeadKv],
    ["ssm.group_count", cfg.nKHeads],
    ["ssm.time_step_rank", cfg.nVHeads],
  ];
  for (const [key, n] of widths) if (n > MAX_WIDTH) bad(`${key} ${n} is larger than deltaq supports (${MAX_WIDTH})`);
  if (cfg.nVocab > MAX_VOCAB) bad(`token_embd.weight has ${cfg.nVocab} rows, more than token ids can address`);
  if (valueDim !== headDim) bad(`attention key_length ${headDim} ≠ value_length ${valueDim} (not supported)`);
  if (cfg.nEmbd === 0) bad("embedding_length must be positive");
  if (ARCH === "qwen35moe") cfg.moe = moeConfig(md, cfg, tensors, file);
  else if (cfg.nFf === 0) bad("feed_forward_length must be positive");
  if (nHead === 0 || nHeadKv === 0 || nHead % nHeadKv !== 0) bad(`${nHead} attention heads cannot share ${nHeadKv} KV heads`);
  if (headDim === 0 || headDim % 8 !== 0 || headDim > 512) bad(`attention head dim ${headDim} must be a multiple of 8 up to 512`);
  if (nHead / nHeadKv > 16) bad(`${nHead / nHeadKv} query heads per KV head is more than deltaq supports (16)`);
  if (nRot === 0 || nRot % 2 !== 0 || nRot > headDim) bad(`rope.dimension_count ${nRot} must be even and at most the head dim ${headDim}`);
  if (cfg.convKernel < 2 || cfg.convKernel > 16) bad(`ssm.conv_kernel ${cfg.convKernel} must be between 2 and 16`);
  if (cfg.nKHeads === 0 || cfg.nVHeads % cfg.nKHeads !== 0) bad(`${cfg.nVHeads} DeltaNet V heads cannot tile ${cfg.nKHeads} K heads`);
  if (cfg.ssmHeadDim === 0 || cfg.ssmHeadDim % 8 !== 0 || cfg.ssmHeadDim > 256) bad(`ssm.state_size ${cfg.ssmHeadDim} must be a multiple of 8 up to 256`);
  const inner = md.uint(k("ssm.inner_size"), cfg.nVHeads * cfg.ssmHeadDim);
  if (inner !== cfg.nVHeads * cfg.ssmHeadDim) bad(`ssm.inner_size ${inner} ≠ time_step_rank × state_size (${cfg.nVHeads} × ${cfg.ssmHeadDim})`);
  if (!(cfg.eps > 0 && cfg.eps < 1)) bad(`layer_norm_rms_epsilon ${cfg.eps} is out of range`);
  if (!(cfg.ropeBase > 0)) bad(`rope.freq_base ${cfg.ropeBase} must be positive`);
  checkTensors(cfg, tensors, file);
  // llama.cpp sizes token_embd from the token list; a mismatch would let the tokenizer produce
  // ids without an embedding row (or leave rows no token reaches).
  const tokens = md.get("tokenizer.ggml.tokens");
  if (Array.isArray(tokens) && tokens.length !== cfg.nVocab) {
    bad(`tokenizer.ggml.tokens has ${tokens.length} entries but token_embd.weight has ${cfg.nVocab} rows`);
  }
  return cfg;
}

/** A u32 key that llama.cpp also accepts as a per-layer array (`get_key_or_arr`): its first value. */
function firstUint(md: Metadata, key: string, fallback: number): number {
  const v = md.get(key);
  if (v !== undefined && typeof v !== "number") {
    const arr = md.numbers(key)!;
    if (arr.length === 0 || !Number.isInteger(arr[0]) || arr[0] < 0) throw new DeltaqError(`${md.file}: metadata ${key} should hold non-negative integers`);
    return arr[0];
  }
  return md.uint(key, fallback);
}

/**
 * The expert layout of a `qwen35moe` file: counts and widths from the metadata (with llama.cpp's
 * fallbacks, spec §2), fused or split gate/up experts from the tensors present (§3).
 */
function moeConfig(md: Metadata, cfg: Qwen35Config, tensors: GgufTensorInfo[], file: string): MoeConfig {
  const k = (name: string) => `qwen35moe.${name}`;
  const bad = (what: string): never => {
    throw new DeltaqError(`${file}: ${what}`);
  };
  const nExpert = md.uint(k("expert_count"));
  if (nExpert === 0 || nExpert > MAX_EXPERTS) bad(`expert_count ${nExpert} is outside 1..${MAX_EXPERTS}`);
  const usedKey = k("expert_used_count");
  const usedRaw = md.get(usedKey);
  let nExpertUsed: number[];
  if (usedRaw === undefined) nExpertUsed = bad(`required metadata key ${usedKey} is missing`);
  else if (typeof usedRaw === "number") nExpertUsed = new Array(cfg.nLayer).fill(md.uint(usedKey));
  else {
    const arr = Array.from(md.numbers(usedKey)!);
    if (arr.length < cfg.nLayer) bad(`${usedKey} has ${arr.length} entries for ${cfg.nLayer} layers`);
    nExpertUsed = arr.slice(0, cfg.nLayer);
  }
  for (const used of nExpertUsed) {
    if (!Number.isInteger(used) || used < 1 || used > nExpert) bad(`expert_used_count ${used} is outside 1..expert_count (${nExpert})`);
  }
  if (md.uint(k("expert_group_count"), 0) > 1) bad("grouped expert selection (expert_group_count > 1) is not supported");
  const maxUsed = Math.max(...nExpertUsed);
  const nFfExp = firstUint(md, k("expert_feed_forward_length"), 0) || Math.floor(cfg.nFf / maxUsed);
  const nFfShexp = md.uint(k("expert_shared_feed_forward_length"), 0) || cfg.nFf;
  if (nFfExp === 0) bad("expert_feed_forward_length is missing or zero (and feed_forward_length gives no fallback)");
  if (nFfShexp === 0) bad("expert_shared_feed_forward_length is missing or zero (and feed_forward_length gives no fallback)");
  if (nFfExp > MAX_WIDTH || nFfShexp > MAX_WIDTH) bad(`expert FFN widths ${nFfExp}, ${nFfShexp} are larger than deltaq supports (${MAX_WIDTH})`);
  // A stacked expert tensor is one kernel weight of n_expert · rows rows (a u32 count).
  if (nExpert * 2 * nFfExp >= 2 ** 32 || nExpert * cfg.nEmbd >= 2 ** 32) bad(`${nExpert} experts of these widths are more rows than deltaq supports`);
  const names = new Set(tensors.map((t) => t.name));
  for (const n of names) {
    if (/^blk\.\d+\.ffn_(gate|up|down|gate_up)_exps\.scale$/.test(n)) bad(`tensor ${n}: per-expert output scales are not supported`);
  }
  const fusedGateUp = cfg.layerTypes.map((_, i) => names.has(`blk.${i}.ffn_gate_up_exps.weight`));
  return { nExpert, nExpertUsed, nFfExp, nFfShexp, fusedGateUp };
}

/** `rope.dimension_sections`: up to 4 non-negative counts of rotation pairs, not all zero. */
function ropeSections(md: Metadata, arch: string, file: string): number[] {
  const v = md.numbers(`${arch}.rope.dimension_sections`);
  if (v === undefined) return [];
  const s = Array.from(v);
  if (s.length > 4 || s.some((x) => !Number.isInteger(x) || x < 0 || x > MAX_WIDTH) || s.every((x) => x === 0)) {
    throw new DeltaqError(`${file}: rope.dimension_sections [${s.join(", ")}] must be 1 to 4 non-negative counts, not all zero`);
  }
  while (s.length < 4) s.push(0);
  return s;
}

/**
 * Which layers are full attention: `attention.recurrent_layers` (per-layer flags) when present,
 * else layer i is attention iff (i+1) % full_attention_interval == 0 (default interval 4).
 */
function layerSchedule(md: Metadata, arch: string, nLayer: number, file: string): LayerType[] {
  const flags = md.numbers(`${arch}.attention.recurrent_layers`);
  if (flags) {
    if (flags.length < nLayer) {
      throw new DeltaqError(`${file}: attention.recurrent_layers has ${flags.length} entries for ${nLayer} layers`);
    }
    return Array.from({ length: nLayer }, (_, i) => flags[i] ? "deltanet" : "attention");
  }
  const interval = md.uint(`${arch}.full_attention_interval`, 4);
  if (interval === 0) throw new DeltaqError(`${file}: full_attention_interval must be positive`);
  return Array.from({ length: nLayer }, (_, i) => (i + 1) % interval === 0 ? "attention" : "deltanet");
}

/** Expected tensors: name → shape (ne order); `f32` marks tensors that must be stored as F32. */
export function expectedTensors(cfg: Qwen35Config): Map<string, { shape: number[]; f32?: boolean; optional?: boolean }> {
  const E = cfg.nEmbd, F = cfg.nFf, V = cfg.nVocab;
  const m = new Map<string, { shape: number[]; f32?: boolean; optional?: boolean }>();
  m.set("token_embd.weight", { shape: [E, V] });
  m.set("output_norm.weight", { shape: [E] });
  m.set("output.weight", { shape: [E, V], optional: true });
  const keyDim = cfg.nKHeads * cfg.ssmHeadDim;
  const valueDim = cfg.nVHeads * cfg.ssmHeadDim;
  for (let i = 0; i < cfg.nLayer; i++) {
    const b = `blk.${i}.`;
    m.set(`${b}attn_norm.weight`, { shape: [E] });
    m.set(`${b}post_attention_norm.weight`, { shape: [E] });
    const moe = cfg.moe;
    if (moe) {
      // spec qwen35moe.md §3: expert e is slice e of ne2
      const X = moe.nExpert, Fe = moe.nFfExp, Fs = moe.nFfShexp;
      m.set(`${b}ffn_gate_inp.weight`, { shape: [E, X] });
      if (moe.fusedGateUp[i]) m.set(`${b}ffn_gate_up_exps.weight`, { shape: [E, 2 * Fe, X] });
      else {
        m.set(`${b}ffn_gate_exps.weight`, { shape: [E, Fe, X] });
        m.set(`${b}ffn_up_exps.weight`, { shape: [E, Fe, X] });
      }
      m.set(`${b}ffn_down_exps.weight`, { shape: [Fe, E, X] });
      m.set(`${b}ffn_gate_inp_shexp.weight`, { shape: [E] });
      m.set(`${b}ffn_gate_shexp.weight`, { shape: [E, Fs] });
      m.set(`${b}ffn_up_shexp.weight`, { shape: [E, Fs] });
      m.set(`${b}ffn_down_shexp.weight`, { shape: [Fs, E] });
    } else {
      m.set(`${b}ffn_gate.weight`, { shape: [E, F] });
      m.set(`${b}ffn_up.weight`, { shape: [E, F] });
      m.set(`${b}ffn_down.weight`, { shape: [F, E] });
    }
    if (cfg.layerTypes[i] === "attention") {
      const qDim = cfg.nHead * cfg.headDim;
      const kvDim = cfg.nHeadKv * cfg.headDim;
      m.set(`${b}attn_q.weight`, { shape: [E, 2 * qDim] });
      m.set(`${b}attn_k.weight`, { shape: [E, kvDim] });
      m.set(`${b}attn_v.weight`, { shape: [E, kvDim] });
      m.set(`${b}attn_output.weight`, { shape: [qDim, E] });
      m.set(`${b}attn_q_norm.weight`, { shape: [cfg.headDim] });
      m.set(`${b}attn_k_norm.weight`, { shape: [cfg.headDim] });
    } else {
      m.set(`${b}attn_qkv.weight`, { shape: [E, 2 * keyDim + valueDim] });
      m.set(`${b}attn_gate.weight`, { shape: [E, valueDim] });
      m.set(`${b}ssm_beta.weight`, { shape: [E, cfg.nVHeads] });
      m.set(`${b}ssm_alpha.weight`, { shape: [E, cfg.nVHeads] });
      m.set(`${b}ssm_conv1d.weight`, { shape: [cfg.convKernel, 2 * keyDim + valueDim], f32: true });
      m.set(`${b}ssm_dt.bias`, { shape: [cfg.nVHeads], f32: true });
      m.set(`${b}ssm_a`, { shape: [cfg.nVHeads], f32: true });
      m.set(`${b}ssm_norm.weight`, { shape: [cfg.ssmHeadDim] });
      m.set(`${b}ssm_out.weight`, { shape: [valueDim, E] });
    }
  }
  return m;
}

function checkTensors(cfg: Qwen35Config, tensors: GgufTensorInfo[], file: string): void {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  for (const [name, want] of expectedTensors(cfg)) {
    const t = byName.get(name);
    if (!t) {
      if (want.optional) continue;
      throw new DeltaqError(`${file}: required tensor ${name} is missing`);
    }
    // Trailing 1s do not count ({n_embd, 1} loads as {n_embd}; one expert may be stored 2-D).
    const trim = (s: number[]) => {
      const out = s.slice();
      while (out.length > 1 && out[out.length - 1] === 1) out.pop();
      return out;
    };
    const shape = trim(t.shape), wantShape = trim(want.shape);
    if (shape.length !== wantShape.length || shape.some((n, i) => n !== wantShape[i])) {
      throw new DeltaqError(`${file}: tensor ${name} has shape [${t.shape.join(", ")}], expected [${want.shape.join(", ")}]`);
    }
    const is1d = wantShape.length === 1;
    if (want.f32 || is1d) {
      if (t.type !== 0) throw new DeltaqError(`${file}: tensor ${name} is ${ggmlTypeName(t.type)}, expected F32`);
    } else if (!COMPUTABLE_TYPES.has(t.type)) {
      throw new DeltaqError(`${file}: tensor ${name} has type ${ggmlTypeName(t.type)}, which deltaq cannot compute with (supported: ${computableTypeNames()})`);
    }
  }
}
