/**
 * The Qwen3.5 forward pass, top to bottom (../shared/spec/qwen35.md §3):
 *
 *   h = token_embd[tok]
 *   for each layer:
 *       x = rmsnorm(h)·attn_norm
 *       h += full_attention(i) ? gatedAttention(x, pos) : gatedDeltaNet(x)
 *       y = rmsnorm(h)·post_attention_norm
 *       h += ffn_down·(silu(ffn_gate·y) ⊙ ffn_up·y)                  (qwen35)
 *         or Σ_{e ∈ top-k(router·y)} w_e·expert_e(y) + σ(g·y)·shared(y)  (qwen35moe)
 *   logits = (output ?? token_embd)·(rmsnorm(h)·output_norm)
 *
 * `encodeForward` writes this as one kernel command list for a batch of tokens; the session runs
 * it with a single native call. Weights live in the file mapping (weights.ts), activations in one
 * region owned by the model (below), and per-sequence state (KV cache, conv and DeltaNet state)
 * in a region owned by each session (session.ts).
 *
 * A batch holds the rows of one or several sequences (a prompt chunk of one, or one decoded token
 * of each of several): the matmuls, norms and element-wise steps run over all rows at once — one
 * pass over the weights serves every sequence — while the steps that read a sequence's state
 * (KV store and attention, conv and DeltaNet recurrence) run per sequence on its rows.
 */
import { allocate, type CommandList, type Ref, type Region, rowsOf } from "../native/kernels.ts";
import { type AttentionBuffers, gatedAttention, type KvCache } from "./attention.ts";
import type { Qwen35Config } from "./config.ts";
import { convDim, type DeltaNetBuffers, type DeltaNetState, gatedDeltaNet } from "./deltanet.ts";
import type { RopeSchedule } from "./rope.ts";
import type { ModelWeights } from "./weights.ts";

/** Mixture-of-experts scratch for up to `batch` tokens (k = the most experts a layer uses). */
export interface MoeBuffers {
  logits: Ref; // [batch][nExpert] router logits
  ids: Ref; // i32 [batch][k] chosen experts, most probable first
  weights: Ref; // [batch][k] their renormalised probabilities
  gate: Ref; // [batch·k][nFfExp], then silu(gate)·up in place
  up: Ref; // [batch·k][nFfExp]
  down: Ref; // [batch·k][E] each chosen expert's output
  sharedGate: Ref; // [batch][nFfShexp], then silu(gate)·up in place
  sharedUp: Ref; // [batch][nFfShexp]
  shared: Ref; // [batch][E] the shared expert's output
  sharedScore: Ref; // [batch] its gate logit
}

/** Per-sequence state for each layer, by layer index. */
export type LayerState = { kind: "attention"; cache: KvCache } | { kind: "deltanet"; state: DeltaNetState };

/**
 * Activation buffers for up to `batch` tokens, in one region. The attention, DeltaNet and FFN
 * scratch rows are never live at the same time, so they share one area.
 */
export class Activations {
  readonly region: Region;
  readonly tokens: Ref; // i32 [batch]
  readonly h: Ref; // residual stream [batch][E]
  readonly x: Ref; // normed input of the current block [batch][E]
  readonly out: Ref; // block output before the residual add [batch][E]
  readonly attention: AttentionBuffers;
  readonly deltanet: DeltaNetBuffers;
  readonly ffnGate: Ref; // [batch][F], then silu(gate)·up in place
  readonly ffnUp: Ref; // [batch][F]
  readonly moe: MoeBuffers | undefined;
  readonly ropeTable: Ref;
  readonly logits: Ref; // [logitRows][V]

  constructor(cfg: Qwen35Config, readonly batch: number, readonly logitRows: number) {
    const E = cfg.nEmbd, F = cfg.moe ? 0 : cfg.nFf, V = cfg.nVocab;
    const Dh = cfg.headDim, Hq = cfg.nHead, kvDim = cfg.nHeadKv * Dh;
    const vDim = cfg.nVHeads * cfg.ssmHeadDim, C = convDim(cfg);
    let size = 0;
    const take = (elements: number): number => {
      const at = size;
      size += Math.ceil(elements / 16) * 16; // 64-byte aligned rows for SIMD
      return at;
    };
    const at = {
      tokens: take(batch),
      h: take(batch * E),
      x: take(batch * E),
      out: take(batch * E),
      rope: take(batch * cfg.nRot),
      logits: take(logitRows * V),
    };
    const shared = size;
    // attention scratch
    const qg = take(batch * 2 * Hq * Dh), k = take(batch * kvDim), v = take(batch * kvDim);
    const attn = take(batch * Hq * Dh);
    const attentionEnd = size;
    // DeltaNet scratch, overlapping the attention scratch
    size = shared;
    const mixed = take(batch * C), conv = take(batch * C), z = take(batch * vDim);
    const beta = take(batch * cfg.nVHeads), alpha = take(batch * cfg.nVHeads), o = take(batch * vDim);
    const deltanetEnd = size;
    // FFN scratch, overlapping both
    size = shared;
    const gate = take(batch * F), up = take(batch * F);
    const moe = cfg.moe;
    let moeAt: Record<keyof MoeBuffers, number> | undefined;
    if (moe) {
      const k = Math.max(...moe.nExpertUsed), Fe = moe.nFfExp, Fs = moe.nFfShexp;
      moeAt = {
        logits: take(batch * moe.nExpert),
        ids: take(batch * k),
        weights: take(batch * k),
        gate: take(batch * k * Fe),
        up: take(batch * k * Fe),
        down: take(batch * k * E),
        sharedGate: take(batch * Fs),
        sharedUp: take(batch * Fs),
        shared: take(batch * E),
        sharedScore: take(batch),
      };
    }
    size = Math.max(size, attentionEnd, deltanetEnd);

    this.region = allocate(size * 4);
    const r = (offset: number): Ref => ({ region: this.region.id, offset });
    this.tokens = r(at.tokens);
    this.h = r(at.h);
    this.x = r(at.x);
    this.out = r(at.out);
    this.ropeTable = r(at.rope);
    this.logits = r(at.logits);
    this.attention = { x: this.x, qg: r(qg), k: r(k), v: r(v), attn: r(attn), ropeTable: this.ropeTable, out: this.out };
    this.deltanet = {
      x: this.x,
      mixed: r(mixed),
      conv: r(conv),
      z: r(z),
      beta: r(beta),
      alpha: r(alpha),
      o: r(o),
      out: this.out,
    };
    this.ffnGate = r(gate);
    this.ffnUp = r(up);
    this.moe = moeAt && Object.fromEntries(Object.entries(moeAt).map(([k, at]) => [k, r(at)])) as unknown as MoeBuffers;
  }

  free(): void {
    this.region.free();
  }
}

/** Which positions of the batch get logits: rows [first, first + count). */
export interface LogitRows {
  first: number;
  count: number;
}

/** One sequence's part of a batch: `n` tokens in rows [row, row + n), at positions pos.. . */
export interface SequenceRows<S = LayerState[]> {
  state: S;
  row: number;
  n: number;
  pos: number;
}

/** The rows of one forward pass, by sequence (rows of a sequence are contiguous). */
export interface Batch {
  /** Rows in all (tokens in `a.tokens`, RoPE table rows filled with each token's position). */
  n: number;
  seqs: SequenceRows[];
  /**
   * A decode step of several sequences: each row is multiplied as a lone token would be, so each
   * sequence's logits are those of decoding it alone (CommandList.eachTokenAlone).
   */
  eachTokenAlone: boolean;
}

/** A batch of one sequence: `n` tokens continuing it at `pos`. */
export function singleSequence(state: LayerState[], n: number, pos: number): Batch {
  return { n, seqs: [{ state, row: 0, n, pos }], eachTokenAlone: false };
}

/** Encodes the forward pass of a batch; logits for `rows` land in `a.logits`. */
export function encodeForward(
  cmds: CommandList,
  cfg: Qwen35Config,
  w: ModelWeights,
  rope: RopeSchedule,
  a: Activations,
  batch: Batch,
  rows: LogitRows | null,
): void {
  const E = cfg.nEmbd, F = cfg.nFf;
  const n = batch.n;
  cmds.eachTokenAlone(batch.eachTokenAlone);

  cmds.label("other").embed(w.tokenEmbd, a.tokens, n, a.h, E);

  for (let i = 0; i < cfg.nLayer; i++) {
    const layer = w.layers[i];

    cmds.label(layer.kind).norm(a.h, a.x, rowGrid(n, E), layer.attnNorm, cfg.eps);
    if (layer.kind === "attention") {
      const seqs = batch.seqs.map((s) => ({ ...s, state: kvCacheOf(s.state[i], i) }));
      gatedAttention(cmds, cfg, layer, rope, a.attention, n, seqs);
    } else {
      const seqs = batch.seqs.map((s) => ({ ...s, state: deltaNetStateOf(s.state[i], i) }));
      gatedDeltaNet(cmds, cfg, layer, a.deltanet, n, seqs);
    }
    cmds.add(a.h, a.out, n * E);

    cmds.label("ffn").norm(a.h, a.x, rowGrid(n, E), layer.postAttentionNorm, cfg.eps);
    const ffn = layer.ffn;
    if (ffn.kind === "dense") {
      cmds.matmul(ffn.gate, a.x, E, a.ffnGate, F, n);
      cmds.matmul(ffn.up, a.x, E, a.ffnUp, F, n);
      cmds.swiglu(a.ffnGate, a.ffnUp, a.ffnGate, n * F);
      cmds.matmul(ffn.down, a.ffnGate, F, a.out, E, n);
    } else {
      // Mixture of experts (../shared/spec/qwen35moe.md §4): the router scores every expert, each
      // token takes its k most probable ones (softmax over all, weights renormalised over the k);
      // each chosen expert is a SwiGLU FFN of its own. Expert matmuls group the batch's tokens by
      // expert, so only chosen experts' rows are read, once per batch. A shared expert, gated by
      // sigmoid(ffn_gate_inp_shexp·y), runs for every token.
      const m = a.moe!, X = cfg.moe!.nExpert, Fe = cfg.moe!.nFfExp, Fs = cfg.moe!.nFfShexp, k = ffn.nUsed;
      const experts = (first: number, rows: number) => ({ nTokens: n, k, nExpert: X, first, rows });
      cmds.matmul(ffn.router, a.x, E, m.logits, X, n);
      cmds.moeRoute(m.logits, n, X, k, m.ids, m.weights);
      cmds.matmulExperts(ffn.gate, a.x, E, false, m.ids, experts(ffn.gateFirst, Fe), m.gate, Fe);
      cmds.matmulExperts(ffn.up, a.x, E, false, m.ids, experts(ffn.upFirst, Fe), m.up, Fe);
      cmds.swiglu(m.gate, m.up, m.gate, n * k * Fe);
      cmds.matmulExperts(ffn.down, m.gate, Fe, true, m.ids, experts(0, E), m.down, E);
      cmds.matmul(ffn.sharedGate, a.x, E, m.sharedGate, Fs, n);
      cmds.matmul(ffn.sharedUp, a.x, E, m.sharedUp, Fs, n);
      cmds.swiglu(m.sharedGate, m.sharedUp, m.sharedGate, n * Fs);
      cmds.matmul(ffn.sharedDown, m.sharedGate, Fs, m.shared, E, n);
      cmds.matmul(ffn.sharedGateInp, a.x, E, m.sharedScore, 1, n);
      cmds.moeCombine(m.down, E, m.weights, n, k, E, m.shared, m.sharedScore, a.out);
    }
    cmds.add(a.h, a.out, n * E);
  }

  if (rows && rows.count > 0) {
    cmds.label("lm_head").norm(rowsOf(a.h, rows.first, E), a.x, rowGrid(rows.count, E), w.outputNorm, cfg.eps);
    cmds.matmul(w.output, a.x, E, a.logits, cfg.nVocab, rows.count);
  }
}

function kvCacheOf(s: LayerState, layer: number): KvCache {
  if (s.kind !== "attention") throw new Error(`layer ${layer}: weights and state disagree on the layer type`);
  return s.cache;
}

function deltaNetStateOf(s: LayerState, layer: number): DeltaNetState {
  if (s.kind !== "deltanet") throw new Error(`layer ${layer}: weights and state disagree on the layer type`);
  return s.state;
}

/** n contiguous rows of `dim` values, one "head" per token. */
function rowGrid(n: number, dim: number) {
  return { nTokens: n, xTokStride: dim, yTokStride: dim, nHeads: 1, xHeadStride: dim, yHeadStride: dim, dim };
}
