/**
 * How two engines' logits are compared (parity_test.ts, outliers_test.ts): per position, the
 * largest |Δlogit| relative to the largest |logit|, and KL(llama.cpp ‖ deltaq) of the two
 * softmax distributions. The quantized marks (mean KL ≤ 2e-3, max KL ≤ 5e-3 per position) are
 * the ones for files whose activations are rounded to a coarse grid before every matmul, where
 * two correct engines differ by what that rounding noise does to the logits.
 */
import assert from "node:assert/strict";

function logSoftmax(row: Float32Array): Float64Array {
  let mx = -Infinity;
  for (const v of row) mx = Math.max(mx, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - mx);
  const lse = mx + Math.log(s);
  return Float64Array.from(row, (v) => v - lse);
}

/** KL(p ‖ q) for logits rows p (reference) and q (ours). */
export function klDivergence(pLogits: Float32Array, qLogits: Float32Array): number {
  const lp = logSoftmax(pLogits), lq = logSoftmax(qLogits);
  let kl = 0;
  for (let i = 0; i < lp.length; i++) kl += Math.exp(lp[i]) * (lp[i] - lq[i]);
  return Math.max(0, kl);
}

export interface Report {
  worstRel: number;
  meanKl: number;
  maxKl: number;
}

/** `ref` and `ours` hold one row of `nVocab` logits per position. */
export function compare(ref: Float32Array, ours: Float32Array, nVocab: number): Report {
  const n = ref.length / nVocab;
  let worstRel = 0, sumKl = 0, maxKl = 0;
  for (let t = 0; t < n; t++) {
    const r = ref.subarray(t * nVocab, (t + 1) * nVocab);
    const o = ours.subarray(t * nVocab, (t + 1) * nVocab);
    let maxAbs = 0, maxDiff = 0;
    for (let i = 0; i < nVocab; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(r[i]));
      maxDiff = Math.max(maxDiff, Math.abs(r[i] - o[i]));
    }
    worstRel = Math.max(worstRel, maxDiff / maxAbs);
    const kl = klDivergence(r, o);
    sumKl += kl;
    maxKl = Math.max(maxKl, kl);
  }
  return { worstRel, meanKl: sumKl / n, maxKl };
}

/** The report as one line (printed with PARITY_VERBOSE=1, and as the failure message). */
export function describe(what: string, r: Report): string {
  const line = `${what}: worst max|Δ|/max|logit| ${r.worstRel.toExponential(2)}, mean KL ${
    r.meanKl.toExponential(2)
  }, max KL ${r.maxKl.toExponential(2)}`;
  if (Deno.env.get("PARITY_VERBOSE")) console.log(line);
  return line;
}

export function checkQuantized(what: string, r: Report): void {
  assert.ok(r.meanKl <= 2e-3 && r.maxKl <= 5e-3, describe(what, r));
}
