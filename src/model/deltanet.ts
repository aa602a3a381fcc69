/**
 * Gated DeltaNet (Qwen3.5's linear-attention layers), see ../shared/spec/qwen35.md §3.
 *
 *   mixed = attn_qkv·x = [q: Hk·D | k: Hk·D | v: Hv·D]   z = attn_gate·x
 *   u = silu(causal conv1d(mixed))  (conv state carried across calls)
 *   q, k heads L2-normalised; V head j reads Q/K head j % Hk (tiled, not j / (Hv/Hk))
 *   recurrence with decay g = ssm_a·softplus(alpha + dt_bias) and beta = sigmoid(ssm_beta·x)
 *   out = ssm_out · (rmsnorm(o_j)·ssm_norm ⊙ silu(z_j)) per V head j
 */
import { type CommandList, type Ref, rowsOf } from "../native/kernels.ts";
import type { Qwen35Config } from "./config.ts";
import type { SequenceRows } from "./qwen35.ts";
import type { DeltaNetWeights } from "./weights.ts";

export interface DeltaNetBuffers {
  x: Ref; // normed input [n][E]
  mixed: Ref; // [n][conv_dim] raw attn_qkv output
  conv: Ref; // [n][conv_dim] after conv + SiLU (q and k heads normalised in place)
  z: Ref; // [n][Hv·D]
  beta: Ref; // [n][Hv]
  alpha: Ref; // [n][Hv]
  o: Ref; // [n][Hv·D] recurrence output, then gated-normed in place
  out: Ref; // [n][E]
}

/** This layer's recurrent state: conv window [(K−1)][conv_dim] and S [Hv][D][D], f32. */
export interface DeltaNetState {
  conv: Ref;
  ssm: Ref;
}

export function convDim(cfg: Qwen35Config): number {
  return (2 * cfg.nKHeads + cfg.nVHeads) * cfg.ssmHeadDim;
}

export function gatedDeltaNet(
  cmds: CommandList,
  cfg: Qwen35Config,
  w: DeltaNetWeights,
  b: DeltaNetBuffers,
  n: number,
  seqs: SequenceRows<DeltaNetState>[],
): void {
  const E = cfg.nEmbd, D = cfg.ssmHeadDim, Hk = cfg.nKHeads, Hv = cfg.nVHeads;
  const C = convDim(cfg);

  cmds.matmul(w.qkv, b.x, E, b.mixed, C, n);
  cmds.matmul(w.gate, b.x, E, b.z, Hv * D, n);
  cmds.matmul(w.beta, b.x, E, b.beta, Hv, n);
  cmds.matmul(w.alpha, b.x, E, b.alpha, Hv, n);

  for (const { state, row, n: rows } of seqs) {
    cmds.conv1dSilu(rowsOf(b.mixed, row, C), state.conv, w.conv, rowsOf(b.conv, row, C), rows, C, C);
  }
  // the 2·Hk q and k heads sit contiguously at the start of each conv row
  cmds.norm(b.conv, b.conv, {
    nTokens: n,
    xTokStride: C,
    yTokStride: C,
    nHeads: 2 * Hk,
    xHeadStride: D,
    yHeadStride: D,
    dim: D,
  }, null, cfg.eps, "l2");

  for (const { state, row, n: rows } of seqs) {
    cmds.deltanet(
      rowsOf(b.conv, row, C),
      C,
      rowsOf(b.beta, row, Hv),
      rowsOf(b.alpha, row, Hv),
      Hv,
      w.ssmA,
      w.dtBias,
      state.ssm,
      rowsOf(b.o, row, Hv * D),
      { nTokens: rows, nKHeads: Hk, nVHeads: Hv, headDim: D },
    );
  }
  cmds.gatedNorm(b.o, b.z, w.ssmNorm, b.o, n * Hv, D, cfg.eps);
  cmds.matmul(w.ssmOut, b.o, Hv * D, b.out, E, n);
}
