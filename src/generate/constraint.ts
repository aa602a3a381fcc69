/**
 * Constrained sampling: a `TokenConstraint` masks, before each sampling step, every token that
 * cannot continue the output validly, and follows the tokens chosen. `jsonConstraint` builds one
 * that keeps the output to JSON (any object, or a JSON Schema; see ./json_schema.ts).
 *
 * Masking the 248,320-token Qwen3.5 vocabulary must not dominate a decode step. The token pieces
 * are kept in a trie (built once per tokenizer), so a byte the automaton rejects prunes every
 * token that starts with the same bytes at once, and the allowed set is cached per automaton
 * state: inside a long string or between the same keys of repeated objects the state recurs and
 * the mask is one pass over a byte array.
 *
 * @module
 */
import { DeltaqError } from "../errors.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { canEnd, compileSchema, stringRoom, type Stack, startState, stateKey, step } from "./json_schema.ts";

/** Restricts sampling (the engine calls `mask` before sampling and `accept` after). */
export interface TokenConstraint {
  /** Sets the logits of tokens that cannot come next to -Infinity, in place. */
  mask(logits: Float32Array): void;
  /** Follows the chosen token (not called for the end-of-generation token). */
  accept(token: number): void;
}

/** What `response_format` asks for (OpenAI's shape, also the library's `responseFormat` option). */
export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; json_schema: { name?: string; schema?: unknown; strict?: boolean | null; description?: string } };

/**
 * The token pieces of a vocabulary as a trie in depth-first order: node i's children start at
 * i + 1 and each child's subtree ends at `end[child]`, where the next sibling starts. Node 0 is the
 * empty prefix. Tokens without text (control tokens) and special tokens are left out: they never
 * continue constrained output.
 */
class VocabTrie {
  readonly byte: Uint8Array;
  readonly end: Int32Array;
  /** The first token whose piece ends at the node (-1: none); more in `nextToken`. */
  readonly token: Int32Array;
  readonly nextToken: Int32Array;
  readonly pieces: (Uint8Array | undefined)[];
  /**
   * Each piece read as the inside of a JSON string from a character boundary (see
   * `scanStringContent`): the common case of masking, a free string, needs no trie walk then.
   */
  readonly stringScan: Int32Array;
  /** Characters each piece starts when read as string content (for maxLength). */
  readonly stringChars: Int32Array;
  /** Tokens whose piece closes a string (a `"` outside an escape). */
  readonly closing: Int32Array;

  constructor(tokenizer: Tokenizer) {
    const n = tokenizer.vocabSize;
    const entries: Array<{ id: number; key: string }> = [];
    this.pieces = new Array(n);
    for (let id = 0; id < n; id++) {
      const piece = tokenizer.tokenToPiece(id, { special: false });
      if (piece.length === 0 || tokenizer.specialTokenId(tokenizer.tokenText(id)) === id) continue;
      this.pieces[id] = piece;
      entries.push({ id, key: String.fromCharCode(...piece) });
    }
    entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.id - b.id));
    let total = 1;
    for (let i = 0; i < entries.length; i++) {
      const prev = i > 0 ? entries[i - 1].key : "";
      total += entries[i].key.length - commonPrefix(prev, entries[i].key);
    }
    this.byte = new Uint8Array(total);
    this.end = new Int32Array(total);
    this.token = new Int32Array(total).fill(-1);
    this.nextToken = new Int32Array(n).fill(-1);
    const path = [0]; // open nodes: path[d] is the node for the first d bytes of the current key
    let count = 1;
    let prev = "";
    const close = (depth: number) => {
      while (path.length - 1 > depth) this.end[path.pop()!] = count;
    };
    for (const { id, key } of entries) {
      const common = commonPrefix(prev, key);
      close(common);
      for (let d = common; d < key.length; d++) {
        this.byte[count] = key.charCodeAt(d);
        path.push(count++);
      }
      const node = path[key.length];
      if (this.token[node] < 0) this.token[node] = id;
      else {
        let t = this.token[node];
        while (this.nextToken[t] >= 0) t = this.nextToken[t];
        this.nextToken[t] = id;
      }
      prev = key;
    }
    close(0);
    this.end[0] = count;

    this.stringScan = new Int32Array(n).fill(STRING_INVALID);
    this.stringChars = new Int32Array(n);
    const closing: number[] = [];
    for (const { id } of entries) {
      const piece = this.pieces[id]!;
      const scan = scanStringContent(piece);
      this.stringScan[id] = scan;
      if (scan >= 0) closing.push(id);
      if (scan === STRING_INSIDE) this.stringChars[id] = charactersStarted(piece);
    }
    this.closing = Int32Array.from(closing);
  }
}

/** Characters a valid string-content piece starts (ASCII bytes, UTF-8 lead bytes, escapes). */
function charactersStarted(piece: Uint8Array): number {
  let n = 0, escaped = false, hex = 0;
  for (const b of piece) {
    if (hex > 0) hex--;
    else if (escaped) {
      escaped = false;
      if (b === 0x75) hex = 4; // \uXXXX
    } else if (b === 0x5c) {
      escaped = true;
      n++;
    } else if (b < 0x80 || b >= 0xc0) n++;
  }
  return n;
}

const STRING_INSIDE = -1;
const STRING_INVALID = -2;

/**
 * Reads `piece` as JSON string content starting at a character boundary: STRING_INSIDE if every
 * byte can be string content (the piece may end inside an escape or a UTF-8 sequence),
 * STRING_INVALID if some byte cannot, else the index of the `"` that closes the string. The same
 * rules as the automaton's string frame (./json_schema.ts), without length limits.
 */
function scanStringContent(piece: Uint8Array): number {
  let esc = 0, utf8 = 0, low = 0x80, high = 0xbf;
  for (let i = 0; i < piece.length; i++) {
    const b = piece[i];
    if (utf8 > 0) {
      if (b < low || b > high) return STRING_INVALID;
      utf8--;
      low = 0x80;
      high = 0xbf;
    } else if (esc === 1) {
      if (b === 0x75) esc = 2;
      else if (b === 0x22 || b === 0x5c || b === 0x2f || b === 0x62 || b === 0x66 || b === 0x6e || b === 0x72 || b === 0x74) esc = 0;
      else return STRING_INVALID;
    } else if (esc >= 2) {
      const hex = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
      if (!hex) return STRING_INVALID;
      esc = esc === 5 ? 0 : esc + 1;
    } else if (b === 0x22) return i;
    else if (b < 0x20) return STRING_INVALID;
    else if (b === 0x5c) esc = 1;
    else if (b < 0x80) continue;
    else if (b >= 0xc2 && b <= 0xdf) utf8 = 1;
    else if (b === 0xe0) [utf8, low] = [2, 0xa0];
    else if (b === 0xed) [utf8, high] = [2, 0x9f];
    else if (b >= 0xe1 && b <= 0xef) utf8 = 2;
    else if (b === 0xf0) [utf8, low] = [3, 0x90];
    else if (b >= 0xf1 && b <= 0xf3) utf8 = 3;
    else if (b === 0xf4) [utf8, high] = [3, 0x8f];
    else return STRING_INVALID;
  }
  return STRING_INSIDE;
}

function commonPrefix(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/** Builds the vocabulary index constrained output needs (once per tokenizer; ~3 s for 248K tokens). */
export function prepareConstraints(tokenizer: Tokenizer): void {
  trieOf(tokenizer);
}

const tries = new WeakMap<Tokenizer, VocabTrie>();
function trieOf(tokenizer: Tokenizer): VocabTrie {
  let trie = tries.get(tokenizer);
  if (!trie) tries.set(tokenizer, trie = new VocabTrie(tokenizer));
  return trie;
}

/** Allowed-token sets kept per constraint (each is one byte per vocabulary entry). */
const MASK_CACHE_ENTRIES = 48;

/**
 * Keeps output to JSON: `schema` undefined for any JSON object (`json_object`), else a JSON Schema.
 * With `afterThinking`, the output is free until the model closes its think block with
 * `</think>` (it may not end before), then JSON.
 */
export function jsonConstraint(
  tokenizer: Tokenizer,
  schema: unknown | undefined,
  opts: { afterThinking?: boolean } = {},
): TokenConstraint & { readonly complete: boolean } {
  const node = compileSchema(schema === undefined ? { type: "object" } : schema);
  const trie = trieOf(tokenizer);
  const vocab = tokenizer.vocabSize;
  const eog = tokenizer.endOfGenerationIds;
  const thinkEnd = opts.afterThinking ? tokenizer.specialTokenId("</think>") : undefined;
  let thinking = thinkEnd !== undefined;
  let states: Stack[] = startState(node);
  const cache = new Map<string, Uint8Array>();

  const allowedFor = (current: Stack[]): Uint8Array => {
    const key = current.length === 1 ? stateKey(current[0]) : current.map(stateKey).sort().join("\n");
    const hit = cache.get(key);
    if (hit) {
      cache.delete(key); // most recent last
      cache.set(key, hit);
      return hit;
    }
    const allowed = new Uint8Array(vocab);
    const room = current.length === 1 ? stringRoom(current[0]) : undefined;
    if (room !== undefined) {
      // Inside a string at a character boundary: a token that stays inside is fine if its
      // characters fit; one that closes the string must fit what follows.
      const { stringScan: scan, stringChars: chars } = trie;
      for (let id = 0; id < vocab; id++) if (scan[id] === STRING_INSIDE && chars[id] <= room) allowed[id] = 1;
      for (const id of trie.closing) if (accepts(current, trie.pieces[id]!)) allowed[id] = 1;
      if (cache.size >= MASK_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
      cache.set(key, allowed);
      return allowed;
    }
    const { byte, end, token, nextToken } = trie;
    const visit = (node: number, at: Stack[]) => {
      for (let t = token[node]; t >= 0; t = nextToken[t]) allowed[t] = 1;
      for (let child = node + 1; child < end[node]; child = end[child]) {
        const b = byte[child];
        let next: Stack[] = [];
        for (const s of at) {
          const r = step(s, b);
          if (r.length > 0) next = next.length === 0 ? r : next.concat(r);
        }
        if (next.length > 0) visit(child, next.length > 4 ? dedupe(next) : next);
      }
    };
    visit(0, current);
    if (current.some(canEnd)) for (const id of eog) allowed[id] = 1;
    if (cache.size >= MASK_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
    cache.set(key, allowed);
    return allowed;
  };

  return {
    get complete() {
      return !thinking && states.some(canEnd);
    },
    mask(logits: Float32Array): void {
      if (thinking) {
        for (const id of eog) logits[id] = -Infinity; // the answer must still come
        return;
      }
      const allowed = allowedFor(states);
      for (let i = 0; i < vocab; i++) if (allowed[i] === 0) logits[i] = -Infinity;
    },
    accept(token: number): void {
      if (thinking) {
        if (token === thinkEnd) thinking = false;
        return;
      }
      const piece = trie.pieces[token];
      const next = piece ? feed(states, piece) : [];
      if (next.length === 0) throw new DeltaqError(`constrained output: token ${token} cannot continue the JSON`);
      states = next;
    },
  };
}

/** The states after feeding `bytes` (empty: rejected). */
function feed(states: Stack[], bytes: Uint8Array): Stack[] {
  let next = states;
  for (let i = 0; i < bytes.length && next.length > 0; i++) {
    const b = bytes[i];
    next = next.length === 1 ? step(next[0], b) : next.flatMap((s) => step(s, b));
    if (next.length > 4) next = dedupe(next);
  }
  return next;
}

function accepts(states: Stack[], bytes: Uint8Array): boolean {
  return feed(states, bytes).length > 0;
}

function dedupe(states: Stack[]): Stack[] {
  const seen = new Map<string, Stack>();
  for (const s of states) seen.set(stateKey(s), s);
  return [...seen.values()];
}

/**
 * Makes the answer begin with one of `prefixes` (after the thinking, with `afterThinking`), then
 * leaves it free: `tool_choice` "required" or a named function opens the reply with a tool call
 * (`<tool_call>\n<function=NAME>\n`). Each prefix is forced as its canonical tokens, so a special
 * token such as `<tool_call>` is the token the model was trained on, not its text spelled out.
 */
export function prefixConstraint(
  tokenizer: Tokenizer,
  prefixes: string[],
  opts: { afterThinking?: boolean } = {},
): TokenConstraint {
  let open = prefixes.map((p) => tokenizer.tokenize(p, { special: true })).filter((t) => t.length > 0);
  const thinkEnd = opts.afterThinking ? tokenizer.specialTokenId("</think>") : undefined;
  let thinking = thinkEnd !== undefined;
  let at = 0; // tokens of the prefix written so far
  const eog = tokenizer.endOfGenerationIds;
  return {
    mask(logits: Float32Array): void {
      if (thinking) {
        for (const id of eog) logits[id] = -Infinity;
        return;
      }
      if (open.length === 0) return;
      const allowed = new Set(open.map((t) => t[at]));
      for (let i = 0; i < logits.length; i++) if (!allowed.has(i)) logits[i] = -Infinity;
    },
    accept(token: number): void {
      if (thinking) {
        if (token === thinkEnd) thinking = false;
        return;
      }
      if (open.length === 0) return;
      open = open.filter((t) => t[at] === token);
      at++;
      open = open.some((t) => t.length === at) ? [] : open; // a whole prefix is written: free from here
    },
  };
}

/** The constraint a `response_format` asks for (undefined for text), or a DeltaqError naming the problem. */
export function responseFormatConstraint(
  tokenizer: Tokenizer,
  format: ResponseFormat | undefined,
  opts: { afterThinking?: boolean } = {},
): (TokenConstraint & { readonly complete: boolean }) | undefined {
  if (!format || format.type === "text") return undefined;
  if (format.type === "json_object") return jsonConstraint(tokenizer, undefined, opts);
  if (format.type === "json_schema") {
    const schema = format.json_schema?.schema;
    return jsonConstraint(tokenizer, schema === undefined ? true : schema, opts);
  }
  throw new DeltaqError(`response_format type must be "text", "json_object" or "json_schema"`);
}
