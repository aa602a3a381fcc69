/**
 * The prompt cache for hybrid models: checkpoints of sequence state that later prompts resume
 * from, in a memory-bounded LRU shared by all requests.
 *
 * A transformer's state at a position is its KV rows, which can be cut anywhere; a DeltaNet's is
 * a recurrent state that only exists at the positions where it was saved. So a checkpoint is the
 * recurrent state (conv + DeltaNet, ~50 MiB at 4B shapes) at one position plus the KV rows of
 * every position before it. Checkpoints of one conversation share most of their KV rows, so they
 * live in a radix tree over token ids: each node holds the tokens [start, end) of its edge and
 * their KV rows, and a checkpoint is a node with a recurrent state at its end. A prompt resumes
 * at the deepest checkpoint on its path; the KV rows come from the nodes above it.
 *
 *   root ─ [0, 812) system + tools ─┬─ [812, 1290) turn 1 ●          ● = recurrent state at the end
 *                                   └─ [812, 1044) other chat ●
 *
 * Memory is the KV rows of the tree plus its recurrent states. Past the budget, the least
 * recently used recurrent states go first; nodes left without a checkpoint below them go with
 * them.
 */

/** A node: tokens [start, start + tokens.length) of a path, their KV rows, maybe a checkpoint. */
class Node {
  readonly children = new Map<number, Node>();
  recurrent: Uint8Array | null = null;
  lastUsed = 0;
  constructor(
    public parent: Node | null,
    public start: number,
    public tokens: Int32Array,
    /** KV rows of the node's tokens (Session.kvRows layout). */
    public kv: Uint8Array,
  ) {}

  get end(): number {
    return this.start + this.tokens.length;
  }

  get bytes(): number {
    return this.kv.byteLength + (this.recurrent?.byteLength ?? 0);
  }
}

/** Where a prompt can resume: position, recurrent state there, KV rows of the positions before. */
export interface CacheHit {
  position: number;
  recurrent: Uint8Array;
  /** Buffers of KV rows, each with the position it starts at, covering [0, position) in order. */
  kv: { from: number; bytes: Uint8Array }[];
}

/** What the cache reads from a sequence when it saves a checkpoint. */
export interface CheckpointSource {
  /** The recurrent state at the checkpoint's position. */
  recurrent(): Uint8Array;
  /** KV rows [from, to), as Session.kvRows gives them. */
  kvRows(from: number, to: number): Uint8Array;
  /** Bytes per row of each block of a `kvRows` buffer, in order (Session.kvRowLayout). */
  kvRowLayout: readonly number[];
}

export class PromptCache {
  readonly #root = new Node(null, 0, new Int32Array(0), new Uint8Array(0));
  #bytes = 0;
  #clock = 0;
  #checkpoints = 0;
  hits = 0;
  misses = 0;

  constructor(readonly capacityBytes: number) {}

  /** Bytes held: KV rows and recurrent states. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Checkpoints held. */
  get entries(): number {
    return this.#checkpoints;
  }

  /**
   * The deepest checkpoint whose tokens are a prefix of `prompt` at a position ≤ `limit`, or
   * undefined. Counts a hit or a miss.
   */
  lookup(prompt: ArrayLike<number>, limit: number): CacheHit | undefined {
    const path = this.#walk(prompt, limit);
    let best = -1;
    for (let i = path.length - 1; i >= 0; i--) {
      if (path[i].recurrent) {
        best = i;
        break;
      }
    }
    if (best < 0) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    const node = path[best];
    node.lastUsed = ++this.#clock;
    return {
      position: node.end,
      recurrent: node.recurrent!,
      kv: path.slice(0, best + 1).map((n) => ({ from: n.start, bytes: n.kv })),
    };
  }

  /** Whether a checkpoint exists at exactly `tokens` (refreshing it as recently used). */
  has(tokens: ArrayLike<number>): boolean {
    const path = this.#walk(tokens, tokens.length);
    const last = path.at(-1);
    if (!last || last.end !== tokens.length || !last.recurrent) return false;
    last.lastUsed = ++this.#clock;
    return true;
  }

  /**
   * Saves a checkpoint at the end of `tokens` (the sequence's first tokens.length tokens): the
   * recurrent state and the KV rows the tree does not hold yet. Returns false when it does not fit
   * in the budget even alone.
   */
  save(tokens: ArrayLike<number>, source: CheckpointSource): boolean {
    const n = tokens.length;
    if (n === 0) return false;
    // a checkpoint needs at least its recurrent state and the KV rows missing from the tree
    const path = this.#walk(tokens, n);
    const held = path.at(-1)?.end ?? 0;
    const recurrent = source.recurrent();
    const perToken = source.kvRowLayout.reduce((a, b) => a + b, 0);
    if (recurrent.byteLength + (n - held) * perToken > this.capacityBytes) return false;

    let node = this.#root;
    let at = 0;
    while (at < n) {
      const child = node.children.get(tokens[at]);
      if (!child) {
        const leaf = new Node(node, at, Int32Array.from(slice(tokens, at, n)), source.kvRows(at, n));
        node.children.set(tokens[at], leaf);
        this.#bytes += leaf.bytes;
        node = leaf;
        at = n;
        break;
      }
      let m = 0;
      while (m < child.tokens.length && at + m < n && child.tokens[m] === tokens[at + m]) m++;
      if (m < child.tokens.length) this.#split(child, m, source.kvRowLayout);
      node = node.children.get(tokens[at])!;
      at += m;
    }
    if (node.recurrent) {
      this.#bytes -= node.recurrent.byteLength;
      this.#checkpoints--;
    }
    node.recurrent = recurrent;
    node.lastUsed = ++this.#clock;
    this.#bytes += recurrent.byteLength;
    this.#checkpoints++;
    this.#evict(node);
    return true;
  }

  /** Empties the cache. */
  clear(): void {
    this.#root.children.clear();
    this.#bytes = 0;
    this.#checkpoints = 0;
  }

  /** The nodes along `prompt` from the root whose tokens it holds in full, ending at ≤ limit. */
  #walk(prompt: ArrayLike<number>, limit: number): Node[] {
    const path: Node[] = [];
    let node = this.#root;
    while (node.end < prompt.length) {
      const child = node.children.get(prompt[node.end]);
      if (!child || child.end > limit || child.end > prompt.length) break;
      let m = 0;
      while (m < child.tokens.length && child.tokens[m] === prompt[child.start + m]) m++;
      if (m < child.tokens.length) break;
      path.push(child);
      node = child;
    }
    return path;
  }

  /** Cuts `node` after its first `m` tokens: a new node holds those, `node` keeps the rest below it. */
  #split(node: Node, m: number, layout: readonly number[]): void {
    const parent = node.parent!;
    const rows = node.tokens.length;
    const perRow = layout.reduce((a, b) => a + b, 0);
    const top = new Node(parent, node.start, node.tokens.slice(0, m), new Uint8Array(m * perRow));
    const rest = new Uint8Array((rows - m) * perRow);
    // the rows are stored block by block (each layer's K rows, then its V rows): cut each block
    let src = 0, topAt = 0, restAt = 0;
    for (const rowBytes of layout) {
      top.kv.set(node.kv.subarray(src, src + m * rowBytes), topAt);
      rest.set(node.kv.subarray(src + m * rowBytes, src + rows * rowBytes), restAt);
      src += rows * rowBytes;
      topAt += m * rowBytes;
      restAt += (rows - m) * rowBytes;
    }
    parent.children.set(node.tokens[0], top);
    node.parent = top;
    node.start += m;
    node.tokens = node.tokens.slice(m);
    node.kv = rest;
    top.children.set(node.tokens[0], node);
  }

  /** Drops least recently used checkpoints (never `keep`) until the budget holds. */
  #evict(keep: Node): void {
    while (this.#bytes > this.capacityBytes) {
      let victim: Node | undefined;
      const visit = (n: Node) => {
        if (n.recurrent && n !== keep && (!victim || n.lastUsed < victim.lastUsed)) victim = n;
        for (const c of n.children.values()) visit(c);
      };
      visit(this.#root);
      if (!victim) return;
      this.#bytes -= victim.recurrent!.byteLength;
      victim.recurrent = null;
      this.#checkpoints--;
      // nodes with no checkpoint at or below them hold KV rows nobody can resume with
      let n: Node | null = victim;
      while (n && n !== this.#root && !n.recurrent && n.children.size === 0) {
        n.parent!.children.delete(n.tokens[0]);
        this.#bytes -= n.kv.byteLength;
        n = n.parent;
      }
    }
  }
}

function slice(a: ArrayLike<number>, from: number, to: number): number[] {
  return Array.prototype.slice.call(a, from, to);
}
