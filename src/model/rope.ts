/**
 * The RoPE schedule of Qwen3.5's full-attention layers: NeoX-style rotation of the first
 * `rope.dimension_count` dims of each 256-dim head (the rest pass through), θ_j = pos · base^(−2j/n_rot).
 *
 * TypeScript owns the angles; the `rope` kernel only rotates. The angles are computed the way
 * llama.cpp's CPU rope cache does — θ starts at the position and is multiplied by
 * base^(−2/n_rot) in float32 once per pair — so long positions round the same way as the reference.
 * (llama.cpp runs Qwen3.5 as interleaved multimodal RoPE; for text every section sees the same
 * position, which makes it exactly this.)
 */
import type { CommandList, Ref } from "../native/kernels.ts";

export class RopeSchedule {
  readonly half: number;
  readonly thetaScale: number;

  constructor(readonly nRot: number, readonly base: number) {
    this.half = nRot / 2;
    this.thetaScale = Math.fround(Math.pow(base, -2 / nRot));
  }

  /** Writes the cos/sin table for positions pos..pos+n: row t = cos[nRot/2] then sin[nRot/2]. */
  fill(table: Float32Array, pos: number, n: number): void {
    const { half, thetaScale } = this;
    for (let t = 0; t < n; t++) {
      const row = t * this.nRot;
      let theta = Math.fround(pos + t);
      for (let j = 0; j < half; j++) {
        table[row + j] = Math.cos(theta);
        table[row + half + j] = Math.sin(theta);
        theta = Math.fround(theta * thetaScale);
      }
    }
  }

  /** Rotates every head of `nTokens` rows in place. */
  rotate(
    cmds: CommandList,
    x: Ref,
    nTokens: number,
    tokStride: number,
    nHeads: number,
    headStride: number,
    table: Ref,
  ): void {
    cmds.rope(x, nTokens, tokStride, nHeads, headStride, this.nRot, table);
  }
}
