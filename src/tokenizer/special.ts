/**
 * Finding special tokens in text before BPE, with llama.cpp's semantics
 * (`tokenizer_st_partition`): the special tokens are taken one at a time, longest text first, and
 * each claims all of its non-overlapping occurrences (left to right) that lie wholly inside text
 * no earlier token claimed. Control (and unknown) tokens take part only when special parsing is
 * on; user-defined tokens always do — so `<|im_start|>` typed by a user is plain text unless the
 * caller asks for special parsing, while e.g. Qwen's user-defined `[PAD151650]` is always one token.
 *
 * Occurrences are found in one pass over the text with a trie of the token texts (UTF-16 code
 * units; the text is well-formed, so this equals llama.cpp's byte matching), then resolved in
 * llama.cpp's order.
 */
import { ATTR_CONTROL, ATTR_UNKNOWN, ATTR_USER_DEFINED } from "./vocab.ts";

interface TrieNode {
  next: Map<number, TrieNode>;
  /** Index (into `#tokens`) of the token whose text ends here, or -1. */
  token: number;
}

/** A special token found in text: `[start, end)` in UTF-16 units. */
export interface SpecialMatch {
  start: number;
  end: number;
  id: number;
}

export class SpecialTokenMatcher {
  /** Special token ids in llama.cpp's processing order (longest UTF-8 text first). */
  readonly #tokens: number[];
  readonly #lengths: number[];
  readonly #alwaysMatched: boolean[];
  readonly #root: TrieNode = { next: new Map(), token: -1 };
  /** Code units that start some special token text: a cheap filter before the trie. */
  readonly #starts = new Uint8Array(65536);

  constructor(texts: readonly string[], attrs: Uint8Array) {
    const utf8 = new TextEncoder();
    const ids: number[] = [];
    const byteLength = new Map<number, number>();
    for (let id = 0; id < texts.length; id++) {
      if (attrs[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) {
        ids.push(id);
        byteLength.set(id, utf8.encode(texts[id]).length);
      }
    }
    // llama.cpp sorts by byte length only (its std::sort leaves equal lengths in no defined order);
    // ids break ties here so the order is at least deterministic.
    ids.sort((a, b) => byteLength.get(b)! - byteLength.get(a)! || a - b);
    this.#tokens = ids;
    this.#lengths = ids.map((id) => texts[id].length);
    this.#alwaysMatched = ids.map((id) => (attrs[id] & (ATTR_CONTROL | ATTR_UNKNOWN)) === 0);
    ids.forEach((id, index) => {
      const text = texts[id];
      let node = this.#root;
      for (let i = 0; i < text.length; i++) {
        const unit = text.charCodeAt(i);
        let child = node.next.get(unit);
        if (!child) node.next.set(unit, child = { next: new Map(), token: -1 });
        node = child;
      }
      node.token = index;
      this.#starts[text.charCodeAt(0)] = 1;
    });
  }

  /**
   * The special tokens claimed in `text`, in text order (empty when there are none). With
   * `literal` (one byte per UTF-16 unit, 1 = literal), control tokens are not matched where they
   * would overlap literal text, even with `parseSpecial`.
   */
  find(text: string, parseSpecial: boolean, literal?: Uint8Array): SpecialMatch[] {
    // Every occurrence of every eligible token, as (order index, start) pairs.
    const found: number[] = [];
    const starts = this.#starts;
    for (let i = 0; i < text.length; i++) {
      if (!starts[text.charCodeAt(i)]) continue;
      let node: TrieNode | undefined = this.#root;
      for (let j = i; j < text.length; j++) {
        node = node.next.get(text.charCodeAt(j));
        if (!node) break;
        if (node.token < 0) continue;
        if (this.#alwaysMatched[node.token] || (parseSpecial && !(literal && overlaps(literal, i, j + 1)))) {
          found.push(node.token, i);
        }
      }
    }
    if (found.length === 0) return [];

    const order = Array.from({ length: found.length / 2 }, (_, k) => k);
    order.sort((a, b) => found[2 * a] - found[2 * b] || found[2 * a + 1] - found[2 * b + 1]);
    const claimed = new Uint8Array(text.length);
    const matches: SpecialMatch[] = [];
    for (const k of order) {
      const index = found[2 * k];
      const start = found[2 * k + 1];
      const end = start + this.#lengths[index];
      let free = true;
      for (let p = start; p < end && free; p++) free = claimed[p] === 0;
      if (!free) continue;
      claimed.fill(1, start, end);
      matches.push({ start, end, id: this.#tokens[index] });
    }
    return matches.sort((a, b) => a.start - b.start);
  }
}

function overlaps(mask: Uint8Array, start: number, end: number): boolean {
  for (let p = start; p < end; p++) if (mask[p]) return true;
  return false;
}
