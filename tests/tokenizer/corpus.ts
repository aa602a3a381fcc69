/**
 * Deterministic, varied test strings for tokenizer parity: a seeded generator mixing prose, code,
 * many scripts, emoji sequences, combining marks, whitespace and digit runs, contractions, special
 * token texts, control characters, lone surrogates and random code points from all planes
 * (including unassigned, private-use and code points assigned after Unicode 15.1).
 */

/** mulberry32: small, fast, good enough to pick test cases. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const int = (r: Rand, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)];
const cp = (c: number) => String.fromCodePoint(c);
const range = (r: Rand, lo: number, hi: number) => cp(lo + int(r, hi - lo + 1));
const repeat = (n: number, f: () => string) => Array.from({ length: n }, f).join("");

const WORDS = [
  "the",
  "quick",
  "brown",
  "fox",
  "jumps",
  "over",
  "lazy",
  "dog",
  "Hello",
  "world",
  "tokenizer",
  "GGUF",
  "llama",
  "Qwen",
  "DeltaNet",
  "attention",
  "don't",
  "I'm",
  "you're",
  "we've",
  "they'll",
  "she'd",
  "it's",
  "CAN'T",
  "WON'T",
  "O'Neill",
  "rock'n'roll",
  "naïve",
  "café",
  "résumé",
  "Straße",
  "Ægir",
  "ǅemal",
];
const APOSTROPHES = ["'", "’", "ʼ", "′", "＇", "`", "‘"];
const CONTRACTION_TAILS = [
  "s",
  "S",
  "t",
  "T",
  "re",
  "RE",
  "rE",
  "ve",
  "VE",
  "m",
  "M",
  "ll",
  "LL",
  "lL",
  "d",
  "D",
  "x",
  "",
];
const CODE = [
  "function f(x) {\n  return x * 2;\n}\n",
  "def main():\n\tprint('hi')\n\treturn 0\n",
  "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
  '{"key": [1, 2.5, -3e10, null, true], "s": "\\u00e9\\n"}',
  "SELECT * FROM t WHERE a >= 10 AND b <> 'x';",
  "if x != nil {\r\n\treturn err\r\n}\r\n",
  '#include <stdio.h>\nint main(void){printf("%d\\n",42);}',
  "    indented    code\t\twith\ttabs   ",
  "a=>b; c->d; e::f; g<<=2; h>>>=1; i**=3; j//k; l||m&&n",
  "https://example.com/path?q=1&r=%20#frag",
  "$ ls -la | grep '\\.ts$' > out.txt 2>&1",
];
const SPECIALS = [
  "<|im_start|>",
  "<|im_end|>",
  "<|endoftext|>",
  "[PAD151650]",
  "[PAD151935]",
  "<|im_start",
  "im_end|>",
  "<|",
  "|>",
  "<|im_<|im_end|>start|>",
  "<|im_start|><|im_start|>",
  "[PAD1516",
  "<think>",
  "</think>",
  "<|endoftext|>x",
];
const EMOJI = [
  "😀",
  "👍",
  "👍🏽",
  "👩‍💻",
  "👨‍👩‍👧‍👦",
  "🏳️‍🌈",
  "🇺🇸",
  "🇯🇵",
  "1️⃣",
  "❤️",
  "🧑🏿‍🚀",
  "🫠",
  "🤌🏻",
  "☺︎",
  "🐈‍⬛",
];
const COMBINING = [
  0x300,
  0x301,
  0x302,
  0x308,
  0x327,
  0x332,
  0x20d7,
  0x1ab0,
  0x1dc0,
  0xfe20,
  0x0e48,
  0x0951,
  0x05b7,
  0x064b,
];
const WHITESPACE = [
  " ",
  " ",
  " ",
  "\t",
  "\n",
  "\r",
  "\r\n",
  "\u000b",
  "\u000c",
  "\u0085",
  "\u00a0",
  "\u1680",
  "\u2003",
  "\u2028",
  "\u2029",
  "\u202f",
  "\u3000",
  "\ufeff",
  "\u001c",
  "\u001f",
  "\u200b",
];
const DIGITS = ["0123456789", "٠١٢٣٤٥٦٧٨٩", "０１２３", "²³¹", "½¼⅞", "ⅫⅣ", "①②", "𝟘𝟙𝟚", "߀߁", "১২৩"];
const PUNCT = '!"#$%&()*+,-./:;<=>?@[\\]^_{|}~¡¿«»—–…·•§¶†‡‰′″‹›€£¥₹©®™°±×÷'.split("");

/** Code point ranges to draw random characters from: [lo, hi, weight]. */
const BLOCKS: [number, number, number][] = [
  [0x20, 0x7e, 6], // ASCII
  [0x00, 0x1f, 2], // C0 controls incl. NUL, \t, \n, \r
  [0x7f, 0x9f, 1], // DEL, C1 controls incl. U+0085
  [0xa0, 0x24f, 3], // Latin-1, Latin Extended
  [0x300, 0x36f, 2], // combining diacritics
  [0x370, 0x52f, 2], // Greek, Cyrillic (with some unassigned, e.g. U+0378)
  [0x590, 0x6ff, 2], // Hebrew, Arabic
  [0x900, 0xdff, 3], // Indic scripts (with gaps)
  [0xe00, 0xeff, 2], // Thai, Lao
  [0x1000, 0x1cff, 2], // Myanmar … Cyrillic Extended-C (U+1C89 is Unicode 16)
  [0x1d00, 0x1fff, 1],
  [0x2000, 0x2bff, 3], // punctuation, symbols, arrows, math
  [0x2e80, 0x2fff, 1], // CJK radicals
  [0x3000, 0x30ff, 2], // CJK punctuation, kana
  [0x3400, 0x4dbf, 1], // CJK Extension A
  [0x4e00, 0x9fff, 6], // CJK
  [0xa000, 0xabff, 1], // Yi, … (with U+A7CB.., assigned after 15.1)
  [0xac00, 0xd7a3, 2], // Hangul
  [0xe000, 0xf8ff, 1], // private use
  [0xf900, 0xffff, 2], // compatibility, half/full width, specials, noncharacters
  [0x10000, 0x1044f, 1], // Linear B, old scripts
  [0x10d00, 0x10fff, 1], // (Garay etc. are Unicode 16: unassigned in 15.1)
  [0x11000, 0x11fff, 1], // Brahmi … (U+113xx Tulu-Tigalari is Unicode 16)
  [0x16a40, 0x16fff, 1],
  [0x1d400, 0x1d7ff, 1], // math alphanumerics
  [0x1e000, 0x1e8ff, 1],
  [0x1f000, 0x1faff, 3], // emoji, symbols
  [0x20000, 0x2ffff, 1], // CJK extensions, unassigned tails
  [0x30000, 0x3134f, 1],
  [0xe0000, 0xe01ef, 1], // tags, variation selectors supplement
  [0xf0000, 0x10ffff, 1], // supplementary private use
];
const BLOCK_WEIGHT = BLOCKS.reduce((s, b) => s + b[2], 0);

function randomCodepoint(r: Rand): string {
  let w = r() * BLOCK_WEIGHT;
  for (const [lo, hi, weight] of BLOCKS) {
    if ((w -= weight) < 0) return range(r, lo, hi);
  }
  return "x";
}

const FRAGMENTS: ((r: Rand) => string)[] = [
  // English-like prose with punctuation and casing
  (r) =>
    repeat(
      1 + int(r, 12),
      () => pick(r, WORDS) + pick(r, [" ", " ", " ", ", ", ". ", "! ", "? ", "\n", "  "]),
    ),
  // contractions with assorted apostrophes
  (r) =>
    pick(r, WORDS) + pick(r, APOSTROPHES) + pick(r, CONTRACTION_TAILS) + pick(r, ["", " ", "s", "x", "'"]),
  // code
  (r) => pick(r, CODE),
  // CJK / kana / Hangul runs with CJK punctuation
  (r) =>
    repeat(
      1 + int(r, 30),
      () => (r() < 0.1 ? pick(r, ["。", "，", "、", "「", "」", "！", "？", " "]) : range(r, 0x4e00, 0x9fff)),
    ),
  (r) => repeat(1 + int(r, 20), () => range(r, 0x3041, 0x30ff)),
  (r) => repeat(1 + int(r, 10), () => range(r, 0xac00, 0xd7a3) + (r() < 0.3 ? " " : "")),
  // RTL and Indic/Thai with their marks
  (r) =>
    repeat(1 + int(r, 15), () => range(r, 0x627, 0x64a) + (r() < 0.4 ? range(r, 0x64b, 0x652) : "")) + " ",
  (r) => repeat(1 + int(r, 15), () => range(r, 0x5d0, 0x5ea) + (r() < 0.3 ? range(r, 0x5b0, 0x5bc) : "")),
  (r) => repeat(1 + int(r, 15), () => range(r, 0x915, 0x939) + (r() < 0.5 ? range(r, 0x93e, 0x94d) : "")),
  (r) =>
    repeat(
      1 + int(r, 15),
      () =>
        range(r, 0xe01, 0xe2e) + (r() < 0.4 ? range(r, 0xe31, 0xe3a) : "") +
        (r() < 0.3 ? range(r, 0xe48, 0xe4b) : ""),
    ),
  // combining marks: after letters, at the start, after spaces, digits and punctuation, stacked
  (r) =>
    pick(r, ["e", "a", " ", "1", ".", "", "\n", "ß", "Ω"]) +
    repeat(1 + int(r, 4), () => cp(pick(r, COMBINING))),
  // emoji sequences
  (r) => repeat(1 + int(r, 5), () => pick(r, EMOJI) + (r() < 0.3 ? " " : "")),
  // whitespace runs
  (r) => repeat(1 + int(r, 8), () => pick(r, WHITESPACE)),
  (r) => pick(r, WORDS) + repeat(1 + int(r, 6), () => pick(r, [" ", "\t", "\n", "\r\n"])) + pick(r, WORDS),
  // digit runs, long and in other scripts
  (r) => repeat(1 + int(r, 25), () => String(int(r, 10))) + pick(r, ["", " ", ".", ",", "k", "%"]),
  (r) => pick(r, DIGITS) + pick(r, ["", " ", "a"]),
  // punctuation runs followed by line breaks
  (r) =>
    pick(r, ["", " "]) + repeat(1 + int(r, 6), () => pick(r, PUNCT)) +
    pick(r, ["", "\n", "\r\n", "\n\n", " x"]),
  // special token texts (matched or not depending on the mode)
  (r) => pick(r, SPECIALS) + pick(r, ["", "user\n", " ", "\n", "x"]),
  // random code points from many blocks, including unassigned and private use
  (r) => repeat(1 + int(r, 10), () => randomCodepoint(r)),
  // lone surrogates (UTF-8 encoders turn them into U+FFFD)
  (r) => pick(r, ["a\ud800b", "\udfff", "x\udbff", "\ud83d", "\ude00z", "\ud800\ud800"]),
  // long words: exercise the long-word BPE path
  (r) => repeat(60 + int(r, 400), () => pick(r, ["a", "b", "ab", "x"])),
  (r) => repeat(30 + int(r, 200), () => range(r, 0x4e00, 0x4fff)),
  (r) => repeat(70 + int(r, 200), () => pick(r, ["=", "-", "*", "#", "_"])),
  (r) => repeat(100 + int(r, 300), () => pick(r, ["A", "z", "0", "+", "/", "Q", "k"])),
];

/** `count` strings from `seed`, each 1–6 fragments; the same seed always gives the same strings. */
export function corpus(seed: number, count: number): string[] {
  const r = rng(seed);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const parts = 1 + int(r, 6);
    let s = "";
    for (let p = 0; p < parts; p++) s += pick(r, FRAGMENTS)(r);
    out.push(s);
  }
  return out;
}
