/** Small non-cryptographic hashes: names of cached files, model fingerprints, PRNG seeds. */

/** FNV-1a's starting value (what `fnv1a` continues from by default). */
export const FNV1A_INIT = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * 32-bit FNV-1a over bytes, or over a string's UTF-16 code units, continuing from `h` (so several
 * pieces hash like their concatenation).
 */
export function fnv1a(data: ArrayLike<number> | string, h = FNV1A_INIT): number {
  if (typeof data === "string") {
    for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data.charCodeAt(i), FNV_PRIME) >>> 0;
  } else {
    for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i], FNV_PRIME) >>> 0;
  }
  return h;
}

/** A 32-bit hash as 8 hex digits. */
export function hex32(h: number): string {
  return h.toString(16).padStart(8, "0");
}

/** 32-bit avalanche hash (lowbias32, Chris Wellons). */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}
