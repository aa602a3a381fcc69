/**
 * Token text → id lookup that can look up a *part* of a string (or two parts joined) without
 * creating the substring. Loading BPE merges does ~450k lookups of "left", "right" and
 * "left+right" taken from "left right" strings; with a Map each needs fresh strings and their
 * hashes, which was most of the tokenizer's load time.
 */
export class TextIndex {
  readonly #texts: readonly string[];
  readonly #slots: Int32Array;
  readonly #mask: number;
  /** The first pair of ids found with the same text, if any. */
  readonly duplicate: [number, number] | undefined;

  constructor(texts: readonly string[]) {
    this.#texts = texts;
    let size = 1024;
    while (size < texts.length * 2) size *= 2;
    this.#slots = new Int32Array(size).fill(-1);
    this.#mask = size - 1;
    for (let id = 0; id < texts.length; id++) {
      const t = texts[id];
      let s = finish(hashRange(t, 0, t.length, HASH_SEED)) & this.#mask;
      for (;;) {
        const other = this.#slots[s];
        if (other === -1) {
          this.#slots[s] = id;
          break;
        }
        if (texts[other] === t) {
          this.duplicate ??= [other, id];
          break;
        }
        s = (s + 1) & this.#mask;
      }
    }
  }

  get(text: string): number | undefined {
    const id = this.findJoined(text, 0, text.length, 0, 0);
    return id < 0 ? undefined : id;
  }

  /** Id of `s[from..to)`, or -1. */
  findRange(s: string, from: number, to: number): number {
    return this.findJoined(s, from, to, 0, 0);
  }

  /** Whether token `id` has the text `s[a0..a1)` followed by `s[b0..b1)`. */
  isJoined(id: number, s: string, a0: number, a1: number, b0: number, b1: number): boolean {
    const t = this.#texts[id];
    return t !== undefined && t.length === a1 - a0 + b1 - b0 && equalsJoined(t, s, a0, a1, b0, b1);
  }

  /** Id of `s[a0..a1)` followed by `s[b0..b1)`, or -1. */
  findJoined(s: string, a0: number, a1: number, b0: number, b1: number): number {
    const length = a1 - a0 + b1 - b0;
    let slot = finish(hashRange(s, b0, b1, hashRange(s, a0, a1, HASH_SEED))) & this.#mask;
    for (;;) {
      const id = this.#slots[slot];
      if (id === -1) return -1;
      const t = this.#texts[id];
      if (t.length === length && equalsJoined(t, s, a0, a1, b0, b1)) return id;
      slot = (slot + 1) & this.#mask;
    }
  }
}

const HASH_SEED = 0x811c9dc5;

/** FNV-1a over UTF-16 units, continuing from `h` (so two ranges hash like their concatenation). */
function hashRange(s: string, from: number, to: number, h: number): number {
  for (let i = from; i < to; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h;
}

function finish(h: number): number {
  return (h ^ (h >>> 15)) >>> 0;
}

function equalsJoined(t: string, s: string, a0: number, a1: number, b0: number, b1: number): boolean {
  let k = 0;
  for (let i = a0; i < a1; i++) if (t.charCodeAt(k++) !== s.charCodeAt(i)) return false;
  for (let i = b0; i < b1; i++) if (t.charCodeAt(k++) !== s.charCodeAt(i)) return false;
  return true;
}
