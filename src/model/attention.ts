/**
 * Gated full attention (Qwen3.5 layers where (i+1) % full_attention_interval == 0).
 *
 * `attn_q` produces, per head, the query followed by an output gate: head h owns
 * QG[h·2Dh, h·2Dh+Dh) (query) and QG[h·2Dh+Dh, (h+1)·2Dh) (gate) — not all queries then all gates.
 * Rather than copying the halves apart, every kernel below walks the query or gate half with a
 * head stride of 2·Dh. The attention output is multiplied by sigmoid(gate) before `attn_output`.
 */
import { type CacheType, type CommandList, type Ref, rowsOf } from "../native/kernels.ts";
import type { Qwen35Config } from "./config.ts";
import type { SequenceRows } from "./qwen35.ts";
import type { RopeSchedule } from "./rope.ts";
import type { AttentionWeights } from "./weights.ts";

/** Activation rows the block reads and writes (f32 refs into the model's activation region). */
export interface AttentionBuffers {
  x: Ref; // normed input [n][E]
  qg: Ref; // [n][Hq][query Dh | gate Dh]
  k: Ref; // [n][Hkv·Dh]
  v: Ref; // [n][Hkv·Dh]
  attn: Ref; // [n][Hq·Dh]
  ropeTable: Ref; // [n][n_rot]
  out: Ref; // [n][E]
}

/**
 * This layer's KV cache: K and V each [position][Hkv·Dh] values of their cache type (F16, Q8_0
 * or Q4_0 blocks), addressed in bytes.
 */
export interface KvCache {
  k: Ref;
  v: Ref;
  kType: CacheType;
  vType: CacheType;
}

export function gatedAttention(
  cmds: CommandList,
  cfg: Qwen35Config,
  w: AttentionWeights,
  rope: RopeSchedule,
  b: AttentionBuffers,
  n: number,
  seqs: SequenceRows<KvCache>[],
): void {
  const E = cfg.nEmbd, Dh = cfg.headDim, Hq = cfg.nHead, Hkv = cfg.nHeadKv;
  const qgStride = 2 * Hq * Dh;
  const kvDim = Hkv * Dh;
  const gate: Ref = { region: b.qg.region, offset: b.qg.offset + Dh };

  cmds.matmul(w.q, b.x, E, b.qg, qgStride, n);
  cmds.matmul(w.k, b.x, E, b.k, kvDim, n);
  cmds.matmul(w.v, b.x, E, b.v, kvDim, n);

  // per-head RMS norms of the query halves and the keys, in place
  cmds.norm(b.qg, b.qg, headGrid(n, qgStride, Hq, 2 * Dh, Dh), w.qNorm, cfg.eps);
  cmds.norm(b.k, b.k, headGrid(n, kvDim, Hkv, Dh, Dh), w.kNorm, cfg.eps);

  rope.rotate(cmds, b.qg, n, qgStride, Hq, 2 * Dh, b.ropeTable);
  rope.rotate(cmds, b.k, n, kvDim, Hkv, Dh, b.ropeTable);

  // each sequence's rows against its own cache
  for (const { state: cache, row, n: rows, pos } of seqs) {
    const types = { k: cache.kType, v: cache.vType, headDim: Dh };
    cmds.kvStore(rowsOf(b.k, row, kvDim), rowsOf(b.v, row, kvDim), rows, kvDim, cache.k, cache.v, pos, types);
    cmds.attention(rowsOf(b.qg, row, qgStride), qgStride, 2 * Dh, cache.k, cache.v, rowsOf(b.attn, row, Hq * Dh), {
      nTokens: rows,
      pos,
      nHead: Hq,
      nHeadKv: Hkv,
      headDim: Dh,
      scale: cfg.attentionScale,
      kType: cache.kType,
      vType: cache.vType,
    });
  }

  // o = attn ⊙ sigmoid(gate), row (t, h) of attn against the gate half of head h of token t
  cmds.sigmoidGate(b.attn, gate, n * Hq, Dh, Dh, 2 * Dh);
  cmds.matmul(w.output, b.attn, Hq * Dh, b.out, E, n);
}

function headGrid(nTokens: number, tokStride: number, nHeads: number, headStride: number, dim: number) {
  return {
    nTokens,
    xTokStride: tokStride,
    yTokStride: tokStride,
    nHeads,
    xHeadStride: headStride,
    yHeadStride: headStride,
    dim,
  };
}
