/**
 * Code point classes for the pre-tokenizers, from Unicode 15.1 (see tools/gen-unicode-data.ts for
 * why not the runtime's `\p{…}`), plus the UTF-8 helpers the tokenizer shares.
 */
import { CLASS_RUNS } from "./unicode-data.ts";

export const OTHER = 0;
export const LETTER = 1; // \p{L}
export const MARK = 2; // \p{M}
export const NUMBER = 3; // \p{N}
export const WHITESPACE = 4; // White_Space, llama.cpp's \s

export const MAX_CODEPOINT = 0x10ffff;
export const REPLACEMENT_CHARACTER = 0xfffd;

let table: Uint8Array | undefined;

/** One class byte per code point (1.1 MB), decoded from the run table on first use (~2 ms). */
export function codepointClasses(): Uint8Array {
  if (table) return table;
  const classes = new Uint8Array(MAX_CODEPOINT + 1);
  let at = 0;
  for (const run of CLASS_RUNS.split(",")) {
    if (run === "") continue;
    const cls = run.charCodeAt(0) - 48;
    const length = parseInt(run.slice(1), 36);
    classes.fill(cls, at, at + length);
    at += length;
  }
  if (at !== MAX_CODEPOINT + 1) {
    throw new Error(`unicode-data.ts covers ${at} code points, expected ${MAX_CODEPOINT + 1}`);
  }
  table = classes;
  return classes;
}

/**
 * The code points of `text[from..to)`, with lone surrogates replaced by U+FFFD — exactly what a
 * UTF-8 encoder (TextEncoder, and so anything that hands the text to llama.cpp) makes of them.
 * Writes them into `cps` and the UTF-16 index where each one starts into `starts` (plus `to` after
 * the last); both need `to - from + 1` entries. Returns the number of code points.
 */
export function decodeCodepoints(
  text: string,
  from: number,
  to: number,
  cps: Uint32Array,
  starts: Uint32Array,
): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    starts[n] = i;
    let c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < to ? text.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        i++;
      } else {
        c = REPLACEMENT_CHARACTER;
      }
    }
    cps[n++] = c;
  }
  starts[n] = to;
  return n;
}

/** Writes the UTF-8 encoding of `cp` at `out[at]`; returns the position after it. */
export function writeUtf8(cp: number, out: Uint8Array, at: number): number {
  if (cp < 0x80) {
    out[at++] = cp;
  } else if (cp < 0x800) {
    out[at++] = 0xc0 | (cp >> 6);
    out[at++] = 0x80 | (cp & 0x3f);
  } else if (cp < 0x10000) {
    out[at++] = 0xe0 | (cp >> 12);
    out[at++] = 0x80 | ((cp >> 6) & 0x3f);
    out[at++] = 0x80 | (cp & 0x3f);
  } else {
    out[at++] = 0xf0 | (cp >> 18);
    out[at++] = 0x80 | ((cp >> 12) & 0x3f);
    out[at++] = 0x80 | ((cp >> 6) & 0x3f);
    out[at++] = 0x80 | (cp & 0x3f);
  }
  return at;
}
