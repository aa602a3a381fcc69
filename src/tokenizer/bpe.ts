/**
 * Byte-level BPE (GPT-2 style): a word's UTF-8 bytes start as one symbol each, then the adjacent
 * pair with the lowest merge rank is merged — the leftmost one on ties — until no pair has a rank.
 * This is the order llama.cpp's priority queue produces (rank, then left position).
 *
 * Symbols are ids: vocabulary ids for strings in the vocabulary, and ids past the vocabulary for
 * strings that only occur inside merges (a broken vocabulary may merge into a string it lacks;
 * such a symbol is emitted as its single-byte tokens, as llama.cpp does).
 */

import type { TextIndex } from "./text-index.ts";

/**
 * GPT-2's byte → character table: printable bytes stand for themselves, the other 68 bytes are
 * mapped to U+0100.. in byte order, so every token text is printable.
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : next++);
  }
  return table;
})();

/** The inverse of BYTE_TO_CHAR by character code (-1: not a byte character). */
export const CHAR_TO_BYTE: Int16Array = (() => {
  const table = new Int16Array(512).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => (table[ch.charCodeAt(0)] = b));
  return table;
})();

/**
 * Merge ranks keyed by a pair of symbol ids, in an open-addressing hash table (typed arrays:
 * ~150k merges take a few MB and no per-entry objects). Lookups are the hot path of BPE.
 */
class MergeTable {
  #left: Int32Array;
  #right: Int32Array;
  #rank: Int32Array;
  #result: Int32Array;
  #mask: number;

  constructor(capacityHint: number) {
    let size = 1024;
    while (size < capacityHint * 2) size *= 2;
    this.#left = new Int32Array(size).fill(-1);
    this.#right = new Int32Array(size);
    this.#rank = new Int32Array(size);
    this.#result = new Int32Array(size);
    this.#mask = size - 1;
  }

  #slot(left: number, right: number): number {
    return (Math.imul(left, 0x9e3779b1) ^ Math.imul(right + 0x7f4a7c15, 0x85ebca77)) >>> 0 & this.#mask;
  }

  /** Adds a merge unless the pair already has one (the first listed merge wins, as in llama.cpp). */
  add(left: number, right: number, rank: number, result: number): void {
    let s = this.#slot(left, right);
    while (this.#left[s] !== -1) {
      if (this.#left[s] === left && this.#right[s] === right) return;
      s = (s + 1) & this.#mask;
    }
    this.#left[s] = left;
    this.#right[s] = right;
    this.#rank[s] = rank;
    this.#result[s] = result;
  }

  /** Slot of the pair's merge, or -1. */
  find(left: number, right: number): number {
    let s = this.#slot(left, right);
    for (;;) {
      const l = this.#left[s];
      if (l === -1) return -1;
      if (l === left && this.#right[s] === right) return s;
      s = (s + 1) & this.#mask;
    }
  }

  rankAt(slot: number): number {
    return this.#rank[slot];
  }

  resultAt(slot: number): number {
    return this.#result[slot];
  }
}

/** Words up to this many bytes use the simple quadratic merge loop; longer ones use a heap. */
const SHORT_WORD = 64;
const NO_RANK = 0x7fffffff;
/** Scratch space for words up to this many bytes is kept between calls. */
const KEEP_SCRATCH = 1 << 16;

export class BytePairEncoder {
  readonly #merges: MergeTable;
  /** Initial symbol of each byte value. */
  readonly #byteSymbol = new Int32Array(256);
  /** Ids ≥ this are merge-only strings (not in the vocabulary). */
  readonly #vocabSize: number;
  /** Merge-only strings, by id - vocabSize (for the byte fallback). */
  readonly #extraTexts: string[] = [];
  readonly #index: TextIndex;

  // Scratch space for short words, reused across calls.
  #ids = new Int32Array(SHORT_WORD);
  #ranks = new Int32Array(SHORT_WORD);
  #slots = new Int32Array(SHORT_WORD);
  // Scratch space for long words, grown on demand.
  #long = { ids: new Int32Array(0), next: new Int32Array(0), prev: new Int32Array(0) };
  #heap = new MergeHeap();

  /**
   * `index` finds token texts (in byte-character form); `merges` are "left right" strings whose
   * index is their rank.
   */
  constructor(index: TextIndex, vocabSize: number, merges: readonly string[]) {
    this.#index = index;
    this.#vocabSize = vocabSize;
    const extraIds = new Map<string, number>();
    const extraId = (text: string): number => {
      let extra = extraIds.get(text);
      if (extra === undefined) {
        extra = vocabSize + this.#extraTexts.length;
        this.#extraTexts.push(text);
        extraIds.set(text, extra);
      }
      return extra;
    };
    this.#merges = new MergeTable(merges.length);
    let resultOffset = 0;
    for (let rank = 0; rank < merges.length; rank++) {
      const merge = merges[rank];
      const space = merge.indexOf(" ", 1);
      // llama.cpp keys an entry without a separating space as ("", ""), which never matches.
      if (space < 0 || space + 1 === merge.length) continue;
      const end = merge.length;
      let left = index.findRange(merge, 0, space);
      if (left < 0) left = extraId(merge.slice(0, space));
      let right = index.findRange(merge, space + 1, end);
      if (right < 0) right = extraId(merge.slice(space + 1));
      // Vocabularies made by BPE training list merge results in merge order (Qwen: merge i makes
      // token 256 + i), so try the id after the previous result before hashing.
      let result = resultOffset + rank;
      if (!index.isJoined(result, merge, 0, space, space + 1, end)) {
        result = index.findJoined(merge, 0, space, space + 1, end);
        if (result >= 0) resultOffset = result - rank;
        else result = extraId(merge.slice(0, space) + merge.slice(space + 1));
      }
      this.#merges.add(left, right, rank, result);
    }
    for (let b = 0; b < 256; b++) {
      const id = index.get(BYTE_TO_CHAR[b]);
      this.#byteSymbol[b] = id ?? extraId(BYTE_TO_CHAR[b]);
    }
  }

  /** Appends the tokens of one word (`bytes[start..end)`, non-empty) to `out`. */
  encode(bytes: Uint8Array, start: number, end: number, out: number[]): void {
    const n = end - start;
    if (n === 1) return this.#emit(this.#byteSymbol[bytes[start]], out);
    if (n <= SHORT_WORD) return this.#encodeShort(bytes, start, n, out);
    return this.#encodeLong(bytes, start, n, out);
  }

  #emit(id: number, out: number[]): void {
    if (id < this.#vocabSize) {
      out.push(id);
      return;
    }
    // Not a token: emit the tokens of its single characters where those exist (llama.cpp looks up
    // each byte of the text; only ASCII byte characters can be single-byte tokens).
    for (const ch of this.#extraTexts[id - this.#vocabSize]) {
      const single = ch.length === 1 && ch.charCodeAt(0) < 0x80 ? this.#index.get(ch) : undefined;
      if (single !== undefined) out.push(single);
    }
  }

  #rankOf(left: number, right: number, i: number): void {
    const slot = this.#merges.find(left, right);
    this.#slots[i] = slot;
    this.#ranks[i] = slot < 0 ? NO_RANK : this.#merges.rankAt(slot);
  }

  /** Quadratic in the word length but with one hash lookup per merge: fastest for short words. */
  #encodeShort(bytes: Uint8Array, start: number, n: number, out: number[]): void {
    const ids = this.#ids, ranks = this.#ranks, slots = this.#slots;
    for (let i = 0; i < n; i++) ids[i] = this.#byteSymbol[bytes[start + i]];
    for (let i = 0; i + 1 < n; i++) this.#rankOf(ids[i], ids[i + 1], i);
    let len = n;
    while (len > 1) {
      let best = -1;
      let bestRank = NO_RANK;
      for (let i = 0; i + 1 < len; i++) {
        if (ranks[i] < bestRank) {
          bestRank = ranks[i];
          best = i;
        }
      }
      if (best < 0) break;
      ids[best] = this.#merges.resultAt(slots[best]);
      ids.copyWithin(best + 1, best + 2, len);
      ranks.copyWithin(best + 1, best + 2, len - 1);
      slots.copyWithin(best + 1, best + 2, len - 1);
      len--;
      if (best > 0) this.#rankOf(ids[best - 1], ids[best], best - 1);
      if (best + 1 < len) this.#rankOf(ids[best], ids[best + 1], best);
    }
    for (let i = 0; i < len; i++) this.#emit(ids[i], out);
  }

  /**
   * Linked symbols and a binary heap of candidate merges keyed by (rank, left position); entries
   * made stale by earlier merges are skipped when popped. O(n log n) for long words.
   */
  #encodeLong(bytes: Uint8Array, start: number, n: number, out: number[]): void {
    let long = this.#long;
    if (long.ids.length < n) {
      long = { ids: new Int32Array(n), next: new Int32Array(n), prev: new Int32Array(n) };
      if (n <= KEEP_SCRATCH) this.#long = long;
    }
    const { ids, next, prev } = long;
    for (let i = 0; i < n; i++) {
      ids[i] = this.#byteSymbol[bytes[start + i]];
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    // A heap for a huge word is not kept (it takes 36 bytes per byte of the word).
    const heap = n <= KEEP_SCRATCH ? this.#heap : new MergeHeap();
    heap.reset(n);
    const push = (left: number, right: number) => {
      const slot = this.#merges.find(ids[left], ids[right]);
      if (slot >= 0) heap.push(this.#merges.rankAt(slot), left, right, ids[left], ids[right], slot);
    };
    for (let i = 0; i + 1 < n; i++) push(i, i + 1);
    while (heap.size > 0) {
      heap.pop();
      const left = heap.left, right = heap.right;
      // Stale unless both symbols are still the ones the entry was made for, side by side.
      if (ids[left] !== heap.leftId || ids[right] !== heap.rightId || next[left] !== right) continue;
      ids[left] = this.#merges.resultAt(heap.slot);
      ids[right] = -1;
      const after = next[right];
      next[left] = after;
      if (after >= 0) prev[after] = left;
      if (prev[left] >= 0) push(prev[left], left);
      if (after >= 0) push(left, after);
    }
    for (let i = 0; i >= 0; i = next[i]) this.#emit(ids[i], out);
  }
}

/**
 * A binary min-heap of candidate merges ordered by (rank, left position). Entries are written once
 * into flat arrays; the heap orders entry numbers, so sifting moves one integer per level.
 */
class MergeHeap {
  size = 0;
  #entries = 0;
  /** rank · 2^32 + left: exact in a double for rank < 2^21, ordered by (rank, left). */
  #key = new Float64Array(0);
  #right = new Int32Array(0);
  #leftId = new Int32Array(0);
  #rightId = new Int32Array(0);
  #slot = new Int32Array(0);
  #heap = new Int32Array(0);
  // The entry last popped.
  left = 0;
  right = 0;
  leftId = 0;
  rightId = 0;
  slot = 0;

  /** Empties the heap, making room for the merges of an n-symbol word. */
  reset(n: number): void {
    // n - 1 initial pairs plus at most two per merge.
    const capacity = 3 * n + 4;
    if (this.#key.length < capacity) {
      this.#key = new Float64Array(capacity);
      this.#right = new Int32Array(capacity);
      this.#leftId = new Int32Array(capacity);
      this.#rightId = new Int32Array(capacity);
      this.#slot = new Int32Array(capacity);
      this.#heap = new Int32Array(capacity);
    }
    this.size = 0;
    this.#entries = 0;
  }

  push(rank: number, left: number, right: number, leftId: number, rightId: number, slot: number): void {
    const e = this.#entries++;
    const key = rank * 4294967296 + left;
    this.#key[e] = key;
    this.#right[e] = right;
    this.#leftId[e] = leftId;
    this.#rightId[e] = rightId;
    this.#slot[e] = slot;
    const heap = this.#heap, keys = this.#key;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[heap[parent]] <= key) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = e;
  }

  pop(): void {
    const heap = this.#heap, keys = this.#key;
    const e = heap[0];
    this.left = keys[e] % 4294967296;
    this.right = this.#right[e];
    this.leftId = this.#leftId[e];
    this.rightId = this.#rightId[e];
    this.slot = this.#slot[e];
    const last = --this.size;
    if (last === 0) return;
    const moved = heap[last];
    const movedKey = keys[moved];
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= last) break;
      if (child + 1 < last && keys[heap[child + 1]] < keys[heap[child]]) child++;
      if (keys[heap[child]] >= movedKey) break;
      heap[i] = heap[child];
      i = child;
    }
    heap[i] = moved;
  }
}
