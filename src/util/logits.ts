import { DeltaqError } from "../errors.ts";

/**
 * The array an eval writes `length` logits into: the caller's `out` when given (it must hold
 * exactly `length` floats; checked before any work), else a new one.
 */
export function logitsOutput(out: Float32Array | undefined, length: number): Float32Array {
  if (!out) return new Float32Array(length);
  if (out.length !== length) throw new DeltaqError(`eval: the output array holds ${out.length} floats; ${length} are needed`);
  return out;
}
