/**
 * The weights of a Qwen3.5 model: the file is memory-mapped by the native library (no copy into
 * the JS heap), its header parsed from a zero-copy view of the mapping, checked against the spec,
 * and each tensor registered with the kernels. What a layer needs is gathered into plain objects
 * of weight ids that the forward pass (qwen35.ts) reads by name.
 */
import { checkGgufPath, Metadata, parseGguf } from "../gguf/read.ts";
import { checkSplitPart, joinSplitParts, splitPartPaths } from "../gguf/split.ts";
import type { GgufFile, GgufTensorInfo } from "../gguf/types.ts";
import { allocate, type Context, mapFile, type Region, registerWeight, repackBytes, repackGroupRows } from "../native/kernels.ts";
import { expectedTensors, type Qwen35Config, readConfig } from "./config.ts";

/** A dense SwiGLU FFN (`qwen35`). */
export interface DenseFfnWeights {
  kind: "dense";
  gate: number;
  up: number;
  down: number;
}

/**
 * A mixture-of-experts FFN (`qwen35moe`, spec qwen35moe.md §3–§4). Each expert tensor stacks
 * `nExpert` slices of `rowsPerExpert` rows; a fused gate/up tensor is `gate` and `up` at once,
 * the gate rows of each expert first (`upFirst` = nFfExp), the up rows after them.
 */
export interface MoeFfnWeights {
  kind: "moe";
  /** Experts each token uses in this layer. */
  nUsed: number;
  router: number; // ffn_gate_inp, {E, nExpert}
  gate: number;
  up: number;
  /** Rows per expert of `gate`/`up` (nFfExp, or 2·nFfExp when fused) and where each half starts. */
  gateUpRowsPerExpert: number;
  gateFirst: number;
  upFirst: number;
  down: number;
  sharedGateInp: number; // ffn_gate_inp_shexp, {E}: the shared expert's scalar gate
  sharedGate: number;
  sharedUp: number;
  sharedDown: number;
}

export type FfnWeights = DenseFfnWeights | MoeFfnWeights;

export interface AttentionWeights {
  kind: "attention";
  attnNorm: number;
  q: number; // [query | gate] per head
  k: number;
  v: number;
  qNorm: number;
  kNorm: number;
  output: number;
  postAttentionNorm: number;
  ffn: FfnWeights;
}

export interface DeltaNetWeights {
  kind: "deltanet";
  attnNorm: number;
  qkv: number;
  gate: number; // z
  beta: number;
  alpha: number;
  conv: number;
  dtBias: number;
  ssmA: number;
  ssmNorm: number;
  ssmOut: number;
  postAttentionNorm: number;
  ffn: FfnWeights;
}

export type LayerWeights = AttentionWeights | DeltaNetWeights;

export interface ModelWeights {
  file: string;
  gguf: GgufFile;
  metadata: Metadata;
  config: Qwen35Config;
  /** The file's mapping (of the first part, for a split model). */
  mapping: Region;
  /** The mappings of a split model's other parts (empty for one file); `freeMappings` frees all. */
  partMappings: Region[];
  tokenEmbd: number;
  outputNorm: number;
  /** LM head: output.weight, or token_embd.weight when tied. */
  output: number;
  layers: LayerWeights[];
  /** Tensor name → GGML type, for info and profiling. */
  tensorTypes: Map<string, number>;
}

/** The fields of each layer kind that are matrices the forward pass multiplies by. */
const MATRIX_FIELDS: {
  attention: (keyof AttentionWeights)[];
  deltanet: (keyof DeltaNetWeights)[];
  dense: (keyof DenseFfnWeights)[];
  moe: (keyof MoeFfnWeights)[];
} = {
  attention: ["q", "k", "v", "output"],
  deltanet: ["qkv", "gate", "beta", "alpha", "ssmOut"],
  dense: ["gate", "up", "down"],
  // the router is F32 in every llama.cpp file, so never repacked; listed for completeness
  moe: ["router", "gate", "up", "down", "sharedGate", "sharedUp", "sharedDown"],
};

/**
 * Copies every matrix the kernels can repack (Q4_K, Q3_K, Q2_K, IQ4_XS, Q4_0, Q8_0, IQ3_S) into
 * one buffer, in the layouts their one-token matmuls run fastest on (IQ3_S: 4-bit value codes, 134
 * bytes per block instead of 110; the others keep their size), and points the layers (and a
 * separate LM head) at the copies; each copy takes `repackBytes`.
 * The kernels unmap each original's pages as it is copied (and free its id), so resident memory stays
 * the file's size (plus a fifth of the IQ3_S matrices). The token embedding keeps the mapping (a
 * prompt reads only its own rows).
 * Returns the buffer, to be freed with the model, or undefined when no matrix qualifies.
 */
export function repackWeights(w: ModelWeights, context: Context): Region | undefined {
  const targets: { holder: Record<string, unknown>; key: string; id: number; offset: number }[] = [];
  let total = 0;
  const copies = new Map<number, number>(); // original id → offset (a fused tensor is gate and up)
  const consider = (holder: Record<string, unknown>, key: string) => {
    const id = holder[key] as number;
    const bytes = repackBytes(id);
    if (bytes === 0) return;
    if (!copies.has(id)) {
      copies.set(id, total);
      total += Math.ceil(bytes / 64) * 64;
    }
    targets.push({ holder, key, id, offset: copies.get(id)! });
  };
  for (const layer of w.layers) {
    const fields: string[] = layer.kind === "attention" ? MATRIX_FIELDS.attention : MATRIX_FIELDS.deltanet;
    for (const key of fields) consider(layer as unknown as Record<string, unknown>, key);
    const ffn = layer.ffn;
    if (ffn.kind === "dense") {
      for (const key of MATRIX_FIELDS.dense) consider(ffn as unknown as Record<string, unknown>, key);
    } else {
      // An expert's rows must start and end on the repacked layout's row groups (8 or 16 rows).
      const expertRows: Partial<Record<keyof MoeFfnWeights, number>> = {
        gate: w.config.moe!.nFfExp,
        up: w.config.moe!.nFfExp,
        down: w.config.nEmbd,
      };
      for (const key of MATRIX_FIELDS.moe) {
        const group = repackGroupRows((ffn as unknown as Record<string, number>)[key]);
        if (group > 0 && (expertRows[key] ?? 0) % group === 0) consider(ffn as unknown as Record<string, unknown>, key);
      }
    }
  }
  if (w.output !== w.tokenEmbd) consider(w as unknown as Record<string, unknown>, "output");
  if (targets.length === 0) return undefined;
  // Not resident: pages arrive as the copies are written while the originals' pages leave, so
  // memory never holds both. Small pages: huge ones halved the copy's ~600 ms when memory was
  // unfragmented but took ~3 s (kernel compaction) in benchmark runs alternating with llama.cpp,
  // and whole-model decode measured 13.5 vs 14.0 tok/s, within this machine's run-to-run noise.
  const region = allocate(total);
  try {
    const repacked = new Map<number, number>();
    for (const t of targets) {
      let id = repacked.get(t.id);
      if (id === undefined) {
        id = context.repack(t.id, region, t.offset, `${w.file}: ${t.key}`);
        repacked.set(t.id, id);
      }
      t.holder[t.key] = id;
    }
  } catch (e) {
    region.free();
    throw e;
  }
  return region;
}

function ffnWeights(config: Qwen35Config, layer: number, b: (name: string) => number): FfnWeights {
  const moe = config.moe;
  if (!moe) return { kind: "dense", gate: b("ffn_gate.weight"), up: b("ffn_up.weight"), down: b("ffn_down.weight") };
  const Fe = moe.nFfExp;
  const fused = moe.fusedGateUp[layer];
  return {
    kind: "moe",
    nUsed: moe.nExpertUsed[layer],
    router: b("ffn_gate_inp.weight"),
    gate: b(fused ? "ffn_gate_up_exps.weight" : "ffn_gate_exps.weight"),
    up: b(fused ? "ffn_gate_up_exps.weight" : "ffn_up_exps.weight"),
    gateUpRowsPerExpert: fused ? 2 * Fe : Fe,
    gateFirst: 0,
    upFirst: fused ? Fe : 0,
    down: b("ffn_down_exps.weight"),
    sharedGateInp: b("ffn_gate_inp_shexp.weight"),
    sharedGate: b("ffn_gate_shexp.weight"),
    sharedUp: b("ffn_up_shexp.weight"),
    sharedDown: b("ffn_down_shexp.weight"),
  };
}

/** Unmaps the model file (every part of a split model). */
export function freeMappings(w: ModelWeights): void {
  w.mapping.free();
  for (const m of w.partMappings) m.free();
}

/**
 * Maps a model file — every part of a split one (`../gguf/split.ts`) — and checks it; returns the
 * mappings (first part first), the joined header and which part holds each tensor.
 */
function mapModel(path: string): { mappings: Region[]; gguf: GgufFile; part: Map<string, number> } {
  checkGgufPath(path);
  const mappings = [mapFile(path)];
  try {
    const first = parseGguf(mappings[0].bytes(), path, mappings[0].byteLength);
    const paths = splitPartPaths(path, first);
    if (paths.length === 1) return { mappings, gguf: first, part: new Map() };
    const parts = [first];
    for (let i = 1; i < paths.length; i++) {
      checkGgufPath(paths[i]);
      mappings.push(mapFile(paths[i]));
      parts.push(parseGguf(mappings[i].bytes(), paths[i], mappings[i].byteLength));
      checkSplitPart(paths[i], parts[i], i, paths.length);
    }
    return { mappings, ...joinSplitParts(paths, parts) };
  } catch (e) {
    for (const m of mappings) m.free();
    throw e;
  }
}

export function loadWeights(path: string): ModelWeights {
  const { mappings, gguf, part } = mapModel(path);
  const mapping = mappings[0];
  try {
    const metadata = new Metadata(gguf, path);
    const config = readConfig(metadata, gguf.tensors, path);
    const byName = new Map(gguf.tensors.map((t) => [t.name, t]));
    const register = (name: string): number => {
      const t = byName.get(name) as GgufTensorInfo; // presence and shape checked by readConfig
      const ne0 = t.shape[0];
      const ne1 = t.shape.slice(1).reduce((a, b) => a * b, 1);
      return registerWeight(mappings[part.get(name) ?? 0], t.fileOffset, t.type, ne0, ne1, `${path}: tensor ${name}`);
    };
    // Register only what the pass uses (MTP blocks and unknown extras are ignored).
    const ids = new Map<string, number>();
    for (const name of expectedTensors(config).keys()) if (byName.has(name)) ids.set(name, register(name));
    const id = (name: string) => ids.get(name)!;
    const layers: LayerWeights[] = config.layerTypes.map((kind, i) => {
      const b = (n: string) => id(`blk.${i}.${n}`);
      const common = {
        attnNorm: b("attn_norm.weight"),
        postAttentionNorm: b("post_attention_norm.weight"),
        ffn: ffnWeights(config, i, b),
      };
      if (kind === "attention") {
        return {
          kind,
          ...common,
          q: b("attn_q.weight"),
          k: b("attn_k.weight"),
          v: b("attn_v.weight"),
          qNorm: b("attn_q_norm.weight"),
          kNorm: b("attn_k_norm.weight"),
          output: b("attn_output.weight"),
        };
      }
      return {
        kind,
        ...common,
        qkv: b("attn_qkv.weight"),
        gate: b("attn_gate.weight"),
        beta: b("ssm_beta.weight"),
        alpha: b("ssm_alpha.weight"),
        conv: b("ssm_conv1d.weight"),
        dtBias: b("ssm_dt.bias"),
        ssmA: b("ssm_a"),
        ssmNorm: b("ssm_norm.weight"),
        ssmOut: b("ssm_out.weight"),
      };
    });
    return {
      file: path,
      gguf,
      metadata,
      config,
      mapping,
      partMappings: mappings.slice(1),
      tokenEmbd: id("token_embd.weight"),
      outputNorm: id("output_norm.weight"),
      output: ids.get("output.weight") ?? id("token_embd.weight"),
      layers,
      tensorTypes: new Map(gguf.tensors.map((t) => [t.name, t.type])),
    };
  } catch (e) {
    for (const m of mappings) m.free();
    throw e;
  }
}
