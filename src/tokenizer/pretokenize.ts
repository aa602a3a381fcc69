/**
 * The Qwen pre-tokenizers: split text into the words that BPE then encodes one by one.
 *
 * `qwen35` is the tokenizer.json regex
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * and `qwen2` the same with `\p{L}+` for the letter run and `[^\s\p{L}\p{N}]` for the symbol run
 * (combining marks are symbols there, not part of words).
 *
 * Written as a scanner rather than a JavaScript RegExp because the result must equal llama.cpp's,
 * which splits with a hand-written scanner over its own Unicode 15.1 tables: JavaScript's `\s`
 * and `\p{…}` differ from those on U+0085, U+FEFF, U+001C..U+001F and every code point assigned
 * after Unicode 15.1. The alternatives are tried in order at each position, like the regex.
 */
import { codepointClasses, LETTER, MARK, NUMBER, WHITESPACE } from "./unicode.ts";

export type PreTokenizerKind = "qwen2" | "qwen35";

const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;
const APOSTROPHE = 0x27;
/** Class of a position past the end of the text: matches nothing. */
const NONE = 255;

/** ASCII lower case (the only case folding that can produce the contraction letters). */
function lower(cp: number): number {
  return cp >= 0x41 && cp <= 0x5a ? cp + 32 : cp;
}

/** Length (1..3) of a contraction 's 't 'm 'd 're 've 'll starting at `pos`, or 0. */
function contractionLength(cps: Uint32Array, pos: number, end: number): number {
  if (cps[pos] !== APOSTROPHE || pos + 1 >= end) return 0;
  const a = lower(cps[pos + 1]);
  if (a === 0x73 || a === 0x74 || a === 0x6d || a === 0x64) return 2; // s t m d
  if (pos + 2 >= end) return 0;
  const b = lower(cps[pos + 2]);
  if ((a === 0x72 && b === 0x65) || (a === 0x76 && b === 0x65) || (a === 0x6c && b === 0x6c)) return 3; // re ve ll
  return 0;
}

/**
 * Splits the code points `cps[start..end)` into words; writes each word's end index into `ends`
 * (which needs room for `end - start` entries) and returns how many were written.
 */
export function splitWords(
  kind: PreTokenizerKind,
  cps: Uint32Array,
  start: number,
  end: number,
  ends: Uint32Array,
): number {
  const cls = codepointClasses();
  const marksInWords = kind === "qwen35";
  const inWord = (c: number) => c === LETTER || (marksInWords && c === MARK);
  // A "symbol" is anything that is not whitespace, letter, number (or, for qwen35, mark).
  const isSymbol = (c: number) =>
    c !== NONE && c !== WHITESPACE && c !== LETTER && c !== NUMBER && (!marksInWords || c !== MARK);
  const classAt = (pos: number) => (pos < end ? cls[cps[pos]] : NONE);

  let count = 0;
  let pos = start;
  while (pos < end) {
    const cp = cps[pos];
    const c = cls[cp];

    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    const contraction = contractionLength(cps, pos, end);
    if (contraction > 0) {
      pos += contraction;
      ends[count++] = pos;
      continue;
    }

    // [^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+  (qwen2: \p{L}+)
    if (cp !== CR && cp !== LF && c !== NUMBER && (inWord(c) || inWord(classAt(pos + 1)))) {
      pos++;
      while (inWord(classAt(pos))) pos++;
      ends[count++] = pos;
      continue;
    }

    // \p{N}
    if (c === NUMBER) {
      ends[count++] = ++pos;
      continue;
    }

    // ` ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*`. A space at the very end of the text also lands here and
    // becomes a word by itself, as `\s+` would make it.
    const afterSpace = cp === SPACE ? classAt(pos + 1) : c;
    if (isSymbol(afterSpace) || afterSpace === NONE) {
      if (cp === SPACE) pos++;
      while (isSymbol(classAt(pos))) pos++;
      while (pos < end && (cps[pos] === CR || cps[pos] === LF)) pos++;
      ends[count++] = pos;
      continue;
    }

    // Whitespace: \s*[\r\n]+ takes the run up to its last line break; otherwise \s+(?!\S) leaves
    // the last blank to start the next word, unless the run ends the text (then \s+ takes it all).
    let run = 0;
    let afterLastBreak = -1;
    while (classAt(pos + run) === WHITESPACE) {
      const w = cps[pos + run];
      if (w === CR || w === LF) afterLastBreak = pos + run + 1;
      run++;
    }
    if (afterLastBreak >= 0) {
      pos = afterLastBreak;
    } else if (run > 1 && pos + run < end) {
      pos += run - 1;
    } else if (run > 0) {
      pos += run;
    } else {
      pos++; // unreachable with these classes; kept so the loop always advances
    }
    ends[count++] = pos;
  }
  return count;
}
