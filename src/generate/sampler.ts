/**
 * Token sampling over a vector of logits, following llama.cpp's default sampler chain and its exact
 * arithmetic (float32 where it uses float, double where it uses double, mt19937 with libstdc++'s
 * uniform_real_distribution for the draw), so that the same seed and the same logits pick the same
 * token as llama.cpp's `common_sampler` with the same settings:
 *
 *   logit bias → penalties (repeat, frequency, presence) → top-k → top-p → min-p → temperature → draw
 *
 * Temperature ≤ 0 is greedy (argmax after bias and penalties; ties go to the lowest id). llama.cpp's
 * other chain members (DRY, typical-p, top-n-σ, XTC, mirostat) are not implemented; their defaults
 * leave them disabled. Tokens whose logit is -Infinity (banned) or NaN are never candidates.
 *
 * Speed: one pass over the vocabulary for bias/penalties (a copy) and one selection pass; only the
 * few surviving candidates are sorted (top-k by a bounded heap, top-p by growing the sorted prefix
 * 256 → 4096 → all only while the probability mass is not reached). Without top-k, top-p needs one
 * exp per vocabulary entry, as in llama.cpp.
 *
 * Ordering note: where llama.cpp leaves the order of equal logits unspecified (std::partial_sort),
 * we order by id, so exact ties may resolve differently from llama.cpp.
 *
 * @module
 */
import { DeltaqError } from "../errors.ts";

export interface SamplerOptions {
  /** ≤ 0: greedy. Default 0.8 (llama.cpp). Applied after the filters, as in llama.cpp. */
  temperature?: number;
  /** Keep the k most likely tokens; ≤ 0 disables. Default 40. */
  topK?: number;
  /** Keep the smallest most-likely set whose probability reaches p; ≥ 1 disables. Default 0.95. */
  topP?: number;
  /** Drop tokens less likely than p × the most likely one; ≤ 0 disables. Default 0.05. */
  minP?: number;
  /** Divide positive logits / multiply negative logits of recent tokens by this; 1 disables. */
  repeatPenalty?: number;
  /** Subtract `frequencyPenalty × count` from a recent token's logit. Default 0. */
  frequencyPenalty?: number;
  /** Subtract `presencePenalty` from the logit of every recent token. Default 0. */
  presencePenalty?: number;
  /** How many recent tokens the penalties look at: 0 disables penalties, -1 means all. Default 64. */
  penaltyLastN?: number;
  /** Added to a token's logit before anything else; -Infinity bans the token. */
  logitBias?: ReadonlyMap<number, number> | Readonly<Record<number, number>>;
  /** Unsigned 32-bit seed; default: a random one (see `Sampler.seed`). */
  seed?: number;
}

/** The defaults of llama.cpp's `common_params_sampling`. */
export const DEFAULT_SAMPLER_OPTIONS = {
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  frequencyPenalty: 0,
  presencePenalty: 0,
  penaltyLastN: 64,
} as const;

/** The distribution a draw would use: candidate ids and their probabilities (summing to 1). */
export interface Candidates {
  ids: Int32Array;
  probs: Float32Array;
}

/**
 * A sampler for one generation. `sample` picks a token and remembers it for the penalties (like
 * llama.cpp's `llama_sampler_sample`); feed prompt tokens with `accept`. Holds vocabulary-sized
 * scratch buffers (4 × 4 bytes per entry); not shareable between concurrent generations.
 */
export class Sampler {
  readonly vocabSize: number;
  /** The seed in use (chosen at random when none was given), to reproduce a run. */
  readonly seed: number;
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repeatPenalty: number;
  readonly frequencyPenalty: number;
  readonly presencePenalty: number;
  readonly penaltyLastN: number;
  readonly #bias: Array<[number, number]>;
  readonly #penalize: boolean;
  #rng: Mt19937;
  readonly #recent: Int32Array; // ring of the last penaltyLastN accepted tokens
  #recentStart = 0;
  #recentLength = 0;
  readonly #counts = new Map<number, number>(); // token → occurrences in #recent
  // Scratch, allocated once: adjusted logits, candidate ids/logits, exp values.
  readonly #work: Float32Array;
  readonly #ids: Int32Array;
  readonly #vals: Float32Array;
  readonly #exps: Float32Array;
  #heapIds = new Int32Array(0);
  #heapVals = new Float32Array(0);

  constructor(vocabSize: number, options: SamplerOptions = {}) {
    if (!Number.isInteger(vocabSize) || vocabSize <= 0) {
      throw new DeltaqError(`sampler: vocabulary size must be a positive integer, got ${vocabSize}`);
    }
    this.vocabSize = vocabSize;
    const o = { ...DEFAULT_SAMPLER_OPTIONS, ...definedOnly(options) };
    // llama.cpp keeps these as C floats; rounding here reproduces its comparisons exactly.
    this.temperature = Math.fround(finite("temperature", o.temperature));
    this.topK = integer("topK", o.topK);
    this.topP = Math.fround(finite("topP", o.topP));
    this.minP = Math.fround(finite("minP", o.minP));
    this.repeatPenalty = Math.fround(finite("repeatPenalty", o.repeatPenalty));
    this.frequencyPenalty = Math.fround(finite("frequencyPenalty", o.frequencyPenalty));
    this.presencePenalty = Math.fround(finite("presencePenalty", o.presencePenalty));
    this.penaltyLastN = integer("penaltyLastN", o.penaltyLastN);
    if (!(this.minP <= 1)) throw new DeltaqError(`sampler: minP must be ≤ 1, got ${o.minP}`);
    if (this.repeatPenalty <= 0) {
      throw new DeltaqError(`sampler: repeatPenalty must be > 0, got ${o.repeatPenalty}`);
    }
    if (this.penaltyLastN < -1) {
      throw new DeltaqError(`sampler: penaltyLastN must be ≥ -1, got ${this.penaltyLastN}`);
    }
    this.#penalize = this.penaltyLastN !== 0 &&
      (this.repeatPenalty !== 1 || this.frequencyPenalty !== 0 || this.presencePenalty !== 0);
    this.#bias = biasEntries(options.logitBias, vocabSize);
    if (options.seed === undefined) {
      this.seed = crypto.getRandomValues(new Uint32Array(1))[0];
    } else if (!Number.isInteger(options.seed) || options.seed < 0 || options.seed > 0xffffffff) {
      throw new DeltaqError(`sampler: seed must be an integer in [0, 2^32), got ${options.seed}`);
    } else {
      this.seed = options.seed;
    }
    this.#rng = new Mt19937(this.seed);
    this.#recent = new Int32Array(Math.max(this.penaltyLastN, 0));
    this.#work = new Float32Array(vocabSize);
    this.#ids = new Int32Array(vocabSize);
    this.#vals = new Float32Array(vocabSize);
    this.#exps = new Float32Array(vocabSize);
  }

  /** Picks the next token from `logits` (not modified) and remembers it for the penalties. */
  sample(logits: Float32Array): number {
    this.#adjust(logits);
    let token: number;
    if (this.temperature <= 0) {
      token = this.#argmax();
    } else {
      const n = this.#filter();
      token = this.#ids[this.#draw(n)];
    }
    this.accept(token);
    return token;
  }

  /** The distribution `sample` would draw from now (after filters and temperature); no side effects. */
  candidates(logits: Float32Array): Candidates {
    this.#adjust(logits);
    if (this.temperature <= 0) {
      return { ids: Int32Array.of(this.#argmax()), probs: Float32Array.of(1) };
    }
    const n = this.#filter();
    const sum = this.#exponentiate(n);
    const probs = new Float32Array(n);
    for (let i = 0; i < n; i++) probs[i] = this.#exps[i] / sum;
    return { ids: this.#ids.slice(0, n), probs };
  }

  /**
   * Records tokens for the penalties without sampling: forced tokens, and the prompt (llama-server
   * accepts the prompt tokens into its sampler before generating; do the same for parity).
   */
  accept(tokens: number | Iterable<number>): void {
    if (this.penaltyLastN === 0) return;
    for (const token of typeof tokens === "number" ? [tokens] : tokens) {
      this.#counts.set(token, (this.#counts.get(token) ?? 0) + 1);
      if (this.penaltyLastN < 0) continue; // all history counts; nothing to forget
      const ring = this.#recent;
      if (this.#recentLength < ring.length) {
        ring[(this.#recentStart + this.#recentLength++) % ring.length] = token;
        continue;
      }
      const old = ring[this.#recentStart];
      ring[this.#recentStart] = token;
      this.#recentStart = (this.#recentStart + 1) % ring.length;
      const c = this.#counts.get(old)! - 1;
      if (c === 0) this.#counts.delete(old);
      else this.#counts.set(old, c);
    }
  }

  /** Forgets accepted tokens and restarts the random sequence from the seed. */
  reset(): void {
    this.#recentStart = 0;
    this.#recentLength = 0;
    this.#counts.clear();
    this.#rng = new Mt19937(this.seed);
  }

  /** Copies logits into the scratch and applies logit bias, then penalties (llama.cpp order). */
  #adjust(logits: Float32Array): void {
    if (logits.length !== this.vocabSize) {
      throw new DeltaqError(`sampler: expected ${this.vocabSize} logits, got ${logits.length}`);
    }
    const w = this.#work;
    w.set(logits);
    // Float32Array stores round each step to float, as llama.cpp's float arithmetic does.
    for (const [id, bias] of this.#bias) w[id] += bias;
    if (!this.#penalize) return;
    for (const [id, count] of this.#counts) {
      if (id < 0 || id >= this.vocabSize) continue;
      w[id] = w[id] <= 0 ? w[id] * this.repeatPenalty : w[id] / this.repeatPenalty;
      w[id] -= Math.fround(Math.fround(count * this.frequencyPenalty) + this.presencePenalty);
    }
  }

  #argmax(): number {
    const w = this.#work;
    let best = -1;
    let bestVal = -Infinity;
    for (let i = 0; i < w.length; i++) {
      if (w[i] > bestVal) {
        bestVal = w[i];
        best = i;
      }
    }
    if (best < 0) throw new DeltaqError("sampler: every token is banned (-Infinity) or NaN");
    return best;
  }

  /**
   * Leaves the surviving candidates in #ids/#vals[0, n) (logits before temperature) and returns n.
   * They are sorted by logit (descending) when top-k or top-p ran, in id order otherwise — the
   * order llama.cpp draws in.
   */
  #filter(): number {
    const w = this.#work;
    const ids = this.#ids;
    const vals = this.#vals;
    let n: number;
    let sorted = false;
    if (this.topK > 0) {
      n = this.#selectTop(Math.min(this.topK, w.length));
      sorted = true;
    } else {
      n = 0;
      for (let i = 0; i < w.length; i++) {
        if (w[i] > -Infinity) {
          ids[n] = i;
          vals[n++] = w[i];
        }
      }
    }
    if (n === 0) throw new DeltaqError("sampler: every token is banned (-Infinity) or NaN");

    if (this.topP < 1) {
      n = this.#topP(n, sorted);
      sorted = true;
    }

    if (this.minP > 0) {
      if (sorted) {
        const minLogit = Math.fround(vals[0] + Math.fround(Math.log(this.minP)));
        let keep = 1;
        while (keep < n && vals[keep] >= minLogit) keep++;
        n = keep;
      } else {
        let max = -Infinity;
        for (let i = 0; i < n; i++) if (vals[i] > max) max = vals[i];
        const minLogit = Math.fround(max + Math.fround(Math.log(this.minP)));
        let kept = 0;
        for (let i = 0; i < n; i++) {
          if (vals[i] >= minLogit) {
            ids[kept] = ids[i];
            vals[kept++] = vals[i];
          }
        }
        n = kept; // ≥ 1: minP ≤ 1 puts the threshold at or below the maximum
      }
    }
    return n;
  }

  /** Top-p over candidates [0, n): softmax over all of them, then the sorted prefix reaching p. */
  #topP(n: number, sorted: boolean): number {
    const vals = this.#vals;
    const p = this.#exps; // probabilities in candidate order
    let max = vals[0];
    if (!sorted) { for (let i = 1; i < n; i++) if (vals[i] > max) max = vals[i]; }
    let sum = 0;
    for (let i = 0; i < n; i++) {
      p[i] = Math.exp(Math.fround(vals[i] - max));
      sum = Math.fround(sum + p[i]);
    }
    if (sorted) return Math.min(n, prefixReaching(p, n, sum, this.topP));
    // Unsorted (no top-k): sort only as much of the head as the probability mass needs.
    for (let k = Math.min(n, 256);; k = Math.min(n, k * 16)) {
      const m = this.#selectTopOf(n, k); // the top k candidates, sorted, in #heapIds/#heapVals
      const cut = prefixReaching(this.#heapVals, m, sum, this.topP, max);
      if (cut <= m || m === n) {
        const keep = Math.min(cut, m);
        this.#ids.set(this.#heapIds.subarray(0, keep));
        vals.set(this.#heapVals.subarray(0, keep));
        return keep;
      }
    }
  }

  /** The top k of the whole adjusted vocabulary into #ids/#vals, sorted; returns the count. */
  #selectTop(k: number): number {
    const m = heapSelect(this.#work, null, this.#work.length, k, this.#heap(k));
    this.#ids.set(this.#heapIds.subarray(0, m));
    this.#vals.set(this.#heapVals.subarray(0, m));
    return m;
  }

  /** The top k of the candidates [0, n) into #heapIds/#heapVals, sorted; returns the count. */
  #selectTopOf(n: number, k: number): number {
    return heapSelect(this.#vals, this.#ids, n, k, this.#heap(k));
  }

  #heap(k: number): Heap {
    if (this.#heapIds.length < k) {
      this.#heapIds = new Int32Array(k);
      this.#heapVals = new Float32Array(k);
    }
    return { ids: this.#heapIds, vals: this.#heapVals };
  }

  /**
   * Applies the temperature and exponentiates: exp(logit/T - max) per candidate into #exps, in
   * float as llama.cpp (temperature, then dist); returns their sum in double, as llama.cpp.
   */
  #exponentiate(n: number): number {
    const vals = this.#vals;
    const e = this.#exps;
    const t = this.temperature;
    let max = vals[0];
    for (let i = 1; i < n; i++) if (vals[i] > max) max = vals[i];
    // Division by T > 0 preserves order, so the scaled maximum is the maximum scaled.
    const scaledMax = Math.fround(max / t);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      e[i] = Math.exp(Math.fround(Math.fround(vals[i] / t) - scaledMax));
      sum += e[i];
    }
    return sum;
  }

  /** llama.cpp's `dist`: one uniform draw, first candidate whose running mass reaches it. */
  #draw(n: number): number {
    if (n === 1) {
      this.#rng.nextDouble(); // llama.cpp draws even then; keeps the sequence aligned
      return 0;
    }
    const sum = this.#exponentiate(n);
    const target = sum * this.#rng.nextDouble();
    const e = this.#exps;
    let running = 0;
    for (let i = 0; i < n; i++) {
      running += e[i];
      if (running >= target) return i;
    }
    return n - 1;
  }
}

/**
 * Length of the shortest prefix of sorted candidates whose probability reaches `p` (all of them if
 * none does). `weights` are exp values (or logits when `max` is given, exponentiated here);
 * probabilities are weight/sum, accumulated in float as llama.cpp does.
 */
function prefixReaching(weights: Float32Array, n: number, sum: number, p: number, max?: number): number {
  let cum = 0;
  for (let i = 0; i < n; i++) {
    const w = max === undefined ? weights[i] : Math.fround(Math.exp(Math.fround(weights[i] - max)));
    cum = Math.fround(cum + Math.fround(w / sum));
    if (cum >= p) return i + 1;
  }
  return n + 1; // not reached within these n
}

interface Heap {
  ids: Int32Array;
  vals: Float32Array;
}

/**
 * The k best of n values (higher value first, lower id on ties) into `heap`, sorted best first;
 * returns how many there were (fewer than k when fewer are finite). `ids` maps positions to token
 * ids (null: position = id). A bounded min-heap keyed on the worst kept value: one comparison per
 * value for the common case of values that do not make it.
 */
function heapSelect(values: Float32Array, ids: Int32Array | null, n: number, k: number, heap: Heap): number {
  const hv = heap.vals;
  const hi = heap.ids;
  let size = 0;
  // "a is worse than b": lower value, or equal value and higher id.
  const worse = (va: number, ia: number, vb: number, ib: number) => va < vb || (va === vb && ia > ib);
  const siftDown = (start: number, len: number) => {
    let i = start;
    const v = hv[i];
    const id = hi[i];
    while (true) {
      const l = 2 * i + 1;
      if (l >= len) break;
      let c = l;
      if (l + 1 < len && worse(hv[l + 1], hi[l + 1], hv[l], hi[l])) c = l + 1;
      if (!worse(hv[c], hi[c], v, id)) break;
      hv[i] = hv[c];
      hi[i] = hi[c];
      i = c;
    }
    hv[i] = v;
    hi[i] = id;
  };
  let j = 0;
  for (; j < n && size < k; j++) {
    const v = values[j];
    if (!(v > -Infinity)) continue; // banned or NaN
    let i = size++; // sift up
    const id = ids === null ? j : ids[j];
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!worse(v, id, hv[parent], hi[parent])) break;
      hv[i] = hv[parent];
      hi[i] = hi[parent];
      i = parent;
    }
    hv[i] = v;
    hi[i] = id;
  }
  // The hot loop: one comparison per value. NaN and -Infinity never beat a finite worst value; a
  // value equal to the worst kept one has a higher id (ids ascend), so it is not better either.
  for (; j < n; j++) {
    const v = values[j];
    if (v > hv[0]) {
      hv[0] = v;
      hi[0] = ids === null ? j : ids[j];
      siftDown(0, size);
    }
  }
  // Heap sort in place: repeatedly move the worst to the end → best first.
  for (let end = size - 1; end > 0; end--) {
    const v = hv[0];
    const id = hi[0];
    hv[0] = hv[end];
    hi[0] = hi[end];
    hv[end] = v;
    hi[end] = id;
    siftDown(0, end);
  }
  return size;
}

/**
 * std::mt19937 (32-bit Mersenne Twister) and libstdc++'s `uniform_real_distribution<double>(0, 1)`,
 * which builds a double from two successive outputs (low word first): (a + b·2^32) / 2^64.
 */
export class Mt19937 {
  readonly #state = new Uint32Array(624);
  #index = 624;

  constructor(seed: number) {
    const s = this.#state;
    s[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = s[i - 1] ^ (s[i - 1] >>> 30);
      s[i] = Math.imul(1812433253, prev) + i;
    }
  }

  nextU32(): number {
    if (this.#index >= 624) this.#twist();
    let y = this.#state[this.#index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** A double in [0, 1), bit-for-bit what llama.cpp's `dist` sampler draws from the same state. */
  nextDouble(): number {
    const low = this.nextU32();
    const high = this.nextU32();
    const r = (low + high * 4294967296) / 18446744073709551616;
    return r >= 1 ? 1 - 2 ** -53 : r;
  }

  #twist(): void {
    const s = this.#state;
    for (let i = 0; i < 624; i++) {
      const y = (s[i] & 0x80000000) | (s[(i + 1) % 624] & 0x7fffffff);
      s[i] = s[(i + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.#index = 0;
  }
}

function definedOnly(o: SamplerOptions): Partial<typeof DEFAULT_SAMPLER_OPTIONS> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

function finite(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new DeltaqError(`sampler: ${name} must be a finite number, got ${v}`);
  }
  return v;
}

function integer(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new DeltaqError(`sampler: ${name} must be an integer, got ${v}`);
  }
  return v;
}

function biasEntries(bias: SamplerOptions["logitBias"], vocabSize: number): Array<[number, number]> {
  if (bias === undefined) return [];
  const entries: Array<[number, number]> = bias instanceof Map
    ? [...bias.entries()]
    : Object.entries(bias).map(([k, v]) => [Number(k), v as number]);
  for (const [id, b] of entries) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new DeltaqError(
        `sampler: logit bias for token ${id}, which is outside the vocabulary (0..${vocabSize - 1})`,
      );
    }
    if (typeof b !== "number" || Number.isNaN(b) || b === Infinity) {
      throw new DeltaqError(
        `sampler: logit bias for token ${id} must be a finite number or -Infinity, got ${b}`,
      );
    }
  }
  return entries;
}
