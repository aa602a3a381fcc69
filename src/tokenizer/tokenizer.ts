/**
 * The tokenizer of a GGUF model: byte-level BPE with the Qwen pre-tokenizers, matching llama.cpp
 * token for token (see tests/tokenizer/ for the parity checks).
 *
 *   const tok = loadTokenizer("model.gguf");            // reads only the GGUF header
 *   const ids = tok.tokenize(prompt, { special: true }); // chat markup → control tokens
 *   const text = tok.detokenize(ids);
 *
 * Strings are UTF-16 in JavaScript; the tokenizer sees them as UTF-8, so a lone surrogate (which
 * has no UTF-8 form) is read as U+FFFD, exactly as TextEncoder (and so llama.cpp fed from
 * JavaScript) would read it. Detokenizing such text gives U+FFFD back where the surrogate was.
 */
import { DeltaqError } from "../errors.ts";
import { Metadata, readGgufHeader } from "../gguf/read.ts";
import type { GgufFile } from "../gguf/types.ts";
import { BytePairEncoder, CHAR_TO_BYTE } from "./bpe.ts";
import { type PreTokenizerKind, splitWords } from "./pretokenize.ts";
import { SpecialTokenMatcher } from "./special.ts";
import { decodeCodepoints, writeUtf8 } from "./unicode.ts";
import {
  ATTR_BYTE,
  ATTR_CONTROL,
  ATTR_NORMAL,
  ATTR_UNKNOWN,
  ATTR_USER_DEFINED,
  readVocab,
  type Vocab,
} from "./vocab.ts";

export interface TokenizeOptions {
  /**
   * Match control tokens (`<|im_start|>`, `<|im_end|>`, …) written in the text. Off by default:
   * user text must never turn into control tokens. User-defined tokens are matched either way,
   * as in llama.cpp.
   */
  special?: boolean;
  /** Add BOS/EOS where the model's metadata asks for them (Qwen asks for neither). */
  addSpecial?: boolean;
  /**
   * Ranges `[start, end)` (UTF-16 units) that are literal text even with `special`: a control
   * token overlapping one is not matched there (the chat template marks message text this way,
   * see src/chat/template.ts). The text is still BPE-encoded together with its neighbours.
   */
  literalSpans?: readonly { start: number; end: number }[];
}

export interface DetokenizeOptions {
  /** Render control tokens as their text (default true, like llama.cpp); false omits them. */
  special?: boolean;
}

/** Words longer than this (UTF-16 units) are not cached: long words rarely repeat. */
const CACHE_MAX_WORD = 48;
/** The word cache is cleared when it reaches this many entries, bounding its memory. */
const CACHE_MAX_ENTRIES = 100_000;
/** Scratch buffers up to this many entries are kept between calls; bigger ones are dropped. */
const KEEP_SCRATCH_UNITS = 1 << 20;

const utf8Encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

export class Tokenizer {
  /** Number of token ids (rows of the embedding). */
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  /** The end-of-sequence id from the metadata (`<|im_end|>` in Qwen3.5 chat models). */
  readonly eosId: number | undefined;
  readonly padId: number | undefined;
  readonly imStartId: number | undefined;
  readonly imEndId: number | undefined;
  readonly endOfTextId: number | undefined;
  /** Which pre-tokenizer splits text into words (from `tokenizer.ggml.pre`). */
  readonly preTokenizer: PreTokenizerKind;

  readonly #vocab: Vocab;
  readonly #bpe: BytePairEncoder;
  readonly #special: SpecialTokenMatcher;
  readonly #wordCache = new Map<string, number[]>();
  readonly #pieces: (Uint8Array | undefined)[];

  // Scratch buffers, grown on demand.
  #cps = new Uint32Array(256);
  #starts = new Uint32Array(257);
  #ends = new Uint32Array(256);
  #bytes = new Uint8Array(1024);
  #wordTokens: number[] = [];

  private constructor(vocab: Vocab) {
    this.#vocab = vocab;
    this.vocabSize = vocab.texts.length;
    this.bosId = vocab.bosId;
    this.eosId = vocab.eosId;
    this.padId = vocab.padId;
    this.imStartId = vocab.index.get("<|im_start|>");
    this.imEndId = vocab.index.get("<|im_end|>");
    this.endOfTextId = vocab.index.get("<|endoftext|>");
    this.preTokenizer = vocab.preTokenizer;
    this.#bpe = new BytePairEncoder(vocab.index, this.vocabSize, vocab.merges);
    this.#special = new SpecialTokenMatcher(vocab.texts, vocab.attrs);
    this.#pieces = new Array(this.vocabSize);
  }

  /** A tokenizer from metadata already parsed (e.g. by the model loader). */
  static fromMetadata(meta: Metadata): Tokenizer {
    return new Tokenizer(readVocab(meta));
  }

  static fromGguf(gguf: GgufFile, file: string): Tokenizer {
    return Tokenizer.fromMetadata(new Metadata(gguf, file));
  }

  /** Token ids of `text`. */
  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    if (!text.isWellFormed()) text = text.toWellFormed();
    const vocab = this.#vocab;
    const out: number[] = [];
    if (options.addSpecial && vocab.addBos && vocab.bosId !== undefined) out.push(vocab.bosId);
    let literal: Uint8Array | undefined;
    if (options.literalSpans?.length) {
      literal = new Uint8Array(text.length);
      for (const { start, end } of options.literalSpans) {
        literal.fill(1, Math.max(0, start), Math.min(end, text.length));
      }
    }
    let at = 0;
    for (const match of this.#special.find(text, options.special ?? false, literal)) {
      if (match.start > at) this.#encodeText(text, at, match.start, out);
      out.push(match.id);
      at = match.end;
    }
    if (at < text.length) this.#encodeText(text, at, text.length, out);
    if (options.addSpecial && vocab.addEos && vocab.eosId !== undefined) out.push(vocab.eosId);
    return out;
  }

  /** Pre-tokenizes `text[from..to)` (no special tokens in it) and BPE-encodes each word. */
  #encodeText(text: string, from: number, to: number, out: number[]): void {
    const units = to - from;
    let cps = this.#cps, starts = this.#starts, ends = this.#ends;
    if (cps.length < units) {
      cps = new Uint32Array(units);
      starts = new Uint32Array(units + 1);
      ends = new Uint32Array(units);
      // Keep grown buffers for next time, but not those of a huge text (12 bytes per unit).
      if (units <= KEEP_SCRATCH_UNITS) {
        this.#cps = cps;
        this.#starts = starts;
        this.#ends = ends;
      }
    }
    const n = decodeCodepoints(text, from, to, cps, starts);
    const words = splitWords(this.preTokenizer, cps, 0, n, ends);
    const cache = this.#wordCache;
    let begin = 0;
    for (let w = 0; w < words; w++) {
      const end = ends[w];
      const u0 = starts[begin], u1 = starts[end];
      if (u1 - u0 <= CACHE_MAX_WORD) {
        const key = text.slice(u0, u1);
        let ids = cache.get(key);
        if (ids === undefined) {
          ids = this.#encodeWord(cps, begin, end, []);
          if (cache.size >= CACHE_MAX_ENTRIES) cache.clear();
          cache.set(key, ids);
        }
        for (let i = 0; i < ids.length; i++) out.push(ids[i]);
      } else {
        this.#encodeWord(cps, begin, end, out);
      }
      begin = end;
    }
  }

  /** BPE of the word `cps[begin..end)`, appended to `out` (which is returned). */
  #encodeWord(cps: Uint32Array, begin: number, end: number, out: number[]): number[] {
    let bytes = this.#bytes;
    if (bytes.length < 4 * (end - begin)) {
      bytes = new Uint8Array(4 * (end - begin));
      if (bytes.length <= KEEP_SCRATCH_UNITS) this.#bytes = bytes;
    }
    let nb = 0;
    for (let i = begin; i < end; i++) nb = writeUtf8(cps[i], bytes, nb);
    this.#bpe.encode(bytes, 0, nb, out);
    return out;
  }

  /**
   * The bytes a token stands for. A piece can be part of a UTF-8 sequence; join pieces before
   * decoding (or use `decoder()`). Control tokens give their text unless `special` is false.
   */
  tokenToPiece(id: number, options: DetokenizeOptions = {}): Uint8Array {
    this.#checkId(id);
    const attr = this.#vocab.attrs[id];
    if (attr & (ATTR_CONTROL | ATTR_UNKNOWN) && options.special === false) return EMPTY;
    return this.#pieces[id] ??= this.#piece(id, attr);
  }

  #piece(id: number, attr: number): Uint8Array {
    const text = this.#vocab.texts[id];
    if (attr & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED)) return utf8Encoder.encode(text);
    if (attr & ATTR_NORMAL) return decodeByteChars(text);
    if (attr & ATTR_BYTE) return new Uint8Array([parseInt(text.slice(3, 5), 16)]); // "<0xXX>"
    return EMPTY; // unused and undefined tokens render as nothing, as in llama.cpp
  }

  /** Text of `ids` (bytes joined, then decoded; invalid UTF-8 becomes U+FFFD). */
  detokenize(ids: ArrayLike<number>, options: DetokenizeOptions = {}): string {
    const pieces: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const piece = this.tokenToPiece(ids[i], options);
      pieces.push(piece);
      total += piece.length;
    }
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const piece of pieces) {
      bytes.set(piece, at);
      at += piece.length;
    }
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
  }

  /** A streaming detokenizer: emits text as soon as its characters are complete. */
  decoder(options: DetokenizeOptions = {}): StreamDecoder {
    return new StreamDecoder(this, options);
  }

  /** The token's text as stored in the vocabulary (GPT-2 byte characters for normal tokens). */
  tokenText(id: number): string {
    this.#checkId(id);
    return this.#vocab.texts[id];
  }

  /** Id of the control or user-defined token with exactly this text, if the vocabulary has one. */
  specialTokenId(text: string): number | undefined {
    const id = this.#vocab.index.get(text);
    if (id === undefined) return undefined;
    return this.#vocab.attrs[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) ? id : undefined;
  }

  /**
   * Whether generation stops at this token: llama.cpp's end-of-generation set (the metadata's eos,
   * `<|im_end|>`, `<|endoftext|>` and the other end texts it knows, and the FIM pad/repo/file-sep
   * tokens).
   */
  isEndOfGeneration(id: number): boolean {
    return this.#vocab.eog.has(id);
  }

  /** The end-of-generation ids, ascending. */
  get endOfGenerationIds(): number[] {
    return [...this.#vocab.eog].sort((a, b) => a - b);
  }

  /**
   * Texts of the tokens that text turns into only with special parsing (control and unknown
   * tokens, including those llama.cpp promotes by their text, such as an end-of-generation
   * `</s>`): what a chat template must keep message text from producing.
   */
  get controlTokenTexts(): string[] {
    const { texts, attrs } = this.#vocab;
    const out: string[] = [];
    for (let id = 0; id < texts.length; id++) {
      if (attrs[id] & (ATTR_CONTROL | ATTR_UNKNOWN)) out.push(texts[id]);
    }
    return out;
  }

  isControl(id: number): boolean {
    return id >= 0 && id < this.vocabSize && (this.#vocab.attrs[id] & ATTR_CONTROL) !== 0;
  }

  #checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new DeltaqError(`token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
    }
  }
}

/** GPT-2 byte characters → bytes; a character outside that alphabet renders as llama.cpp does. */
function decodeByteChars(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    const byte = code < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[code] : -1;
    if (byte >= 0) {
      out.push(byte);
    } else {
      const hex = [...utf8Encoder.encode(ch)].map((b) => b.toString(16).padStart(2, "0")).join("");
      out.push(...utf8Encoder.encode(`[UNK_BYTE_0x${hex}${text}]`));
    }
  }
  return new Uint8Array(out);
}

/**
 * Turns tokens into text incrementally. `push` returns the text completed by that token; bytes of
 * a character split across tokens are held until the character is complete. `flush` ends the
 * stream (an incomplete character left over becomes U+FFFD).
 */
export class StreamDecoder {
  readonly #tokenizer: Tokenizer;
  readonly #options: DetokenizeOptions;
  #utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

  constructor(tokenizer: Tokenizer, options: DetokenizeOptions = {}) {
    this.#tokenizer = tokenizer;
    this.#options = options;
  }

  push(id: number): string {
    return this.#utf8.decode(this.#tokenizer.tokenToPiece(id, this.#options), { stream: true });
  }

  flush(): string {
    const rest = this.#utf8.decode();
    this.#utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
    return rest;
  }
}

/** Loads the tokenizer of a GGUF file (model or vocab-only), reading only its header. */
export function loadTokenizer(path: string): Tokenizer {
  return Tokenizer.fromGguf(readGgufHeader(path), path);
}
