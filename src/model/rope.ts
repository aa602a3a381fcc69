/**
 * The RoPE schedule of Qwen3.5's full-attention layers: NeoX-style rotation of the first
 * `rope.dimension_count` dims of each 256-dim head (the rest pass through), θ_j = pos · base^(−2j/n_rot).
 *
 * TypeScript owns the angles; the `rope` kernel only rotates. The angles are computed the way
 * llama.cpp's CPU rope cache does — θ starts at the position and is multiplied by
 * base^(−2/n_rot) in float32 once per pair — so long positions round the same way as the reference.
 *
 * llama.cpp runs Qwen3.5 as interleaved multimodal RoPE (IMROPE) with four position streams
 * (time, height, width, extra). For text the first three carry the token's position and the extra
 * one is 0. Pair j belongs to sector j mod Σsections; sector s uses stream
 *   height  if s mod 3 = 1 and s < 3·sections[1]
 *   width   if s mod 3 = 2 and s < 3·sections[2]
 *   time    if s mod 3 = 0 and s < 3·sections[0]
 *   extra   otherwise — angle 0: the pair is not rotated.
 * Qwen3.5's [11, 11, 10, 0] sends no pair to the extra stream, so there the rotation is plain
 * NeoX RoPE; other section sizes (e.g. [6, 6, 4, 0] for 16 pairs: pair 14) leave pairs unrotated.
 */
import type { CommandList, Ref } from "../native/kernels.ts";

export class RopeSchedule {
  readonly half: number;
  readonly thetaScale: number;
  /** Pairs llama.cpp takes from the extra (always 0 for text) position stream. */
  readonly unrotated: boolean[];

  /** `sections`: `rope.dimension_sections` (4 entries), or [] for plain NeoX RoPE on every pair. */
  constructor(readonly nRot: number, readonly base: number, sections: readonly number[] = []) {
    this.half = nRot / 2;
    this.thetaScale = Math.fround(Math.pow(base, -2 / nRot));
    const total = sections.reduce((a, b) => a + b, 0);
    this.unrotated = Array.from({ length: this.half }, (_, j) => {
      if (total === 0) return false;
      const s = j % total;
      return s >= 3 * sections[s % 3]; // s mod 3 picks time, height or width; past it: extra
    });
  }

  /** Writes the cos/sin table for positions pos..pos+n: row t = cos[nRot/2] then sin[nRot/2]. */
  fill(table: Float32Array, pos: number, n: number): void {
    const { half, thetaScale } = this;
    for (let t = 0; t < n; t++) {
      const row = t * this.nRot;
      let theta = Math.fround(pos + t);
      for (let j = 0; j < half; j++) {
        const unrotated = this.unrotated[j];
        table[row + j] = unrotated ? 1 : Math.cos(theta);
        table[row + half + j] = unrotated ? 0 : Math.sin(theta);
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
