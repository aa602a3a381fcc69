/**
 * A session is one sequence: its position, the tokens seen so far, the KV cache of every attention
 * layer and the conv and DeltaNet state of every recurrent layer, in native regions: one for all
 * recurrent state and one per attention layer's cache (kernel operands address at most 2^32
 * elements of a region, and a long context's caches together would pass that).
 * `eval` continues from the current position, so a prompt evaluated in one call and the same
 * tokens fed one by one reach the same state and logits.
 *
 * A snapshot is the whole sequence state as bytes (only the KV rows in use), restorable into any
 * session of the same model: `restore(s.snapshot())`, or through a file with `saveSnapshot` /
 * `loadSnapshot`.
 *
 * Several sessions of one model decode together with `Session.decode` (one forward pass, one read
 * of the weights for all); the `…Async` forms run the native work off the JS thread.
 */
import { DeltaqError } from "../errors.ts";
import { CACHE_TYPES, type CacheType, cacheRowBytes, COMMIT_GRANULE, type Ref, type Region, reserve } from "../native/kernels.ts";
import type { Qwen35Config } from "./config.ts";
import { convDim } from "./deltanet.ts";
import type { LayerState } from "./qwen35.ts";
import { logitsOutput } from "../util/logits.ts";

export interface EvalOptions {
  /** Return logits for every evaluated token (n × nVocab) instead of only the last one. */
  allLogits?: boolean;
  /**
   * Write the logits into this array (nVocab floats, or n × nVocab with `allLogits`) and return
   * it, instead of a new one: a token-by-token loop then makes no 1 MB garbage per token (at
   * 248K vocab entries), which otherwise piles up as resident memory between collections.
   */
  out?: Float32Array;
}

/** One sequence's part of a decode step: its state, the token it continues with, its position. */
export interface DecodeStep {
  state: LayerState[];
  token: number;
  pos: number;
}

/** The model-side operations a session needs (implemented by Model). */
export interface SessionHost {
  readonly config: Qwen35Config;
  /** Identifies the model file, so a snapshot is only restored into the model it came from. */
  readonly fingerprint: number;
  /** Runs tokens at `pos` with `state`; writes logits of the chosen rows into `out`. */
  run(state: LayerState[], tokens: ArrayLike<number>, pos: number, allLogits: boolean, out: Float32Array): void;
  /** `run` with the native work off the JS thread. */
  runAsync(state: LayerState[], tokens: ArrayLike<number>, pos: number, allLogits: boolean, out: Float32Array): Promise<void>;
  /**
   * One token for each of several sequences in one forward pass; sequence i's logits into
   * `outs[i]`, the same as running it alone.
   */
  decode(steps: DecodeStep[], outs: Float32Array[]): void;
  /** `decode` with the native work off the JS thread. */
  decodeAsync(steps: DecodeStep[], outs: Float32Array[]): Promise<void>;
  assertLive(): void;
  /** A zeroed, resident buffer for a new session's recurrent state (`recurrentStateBytes`). */
  takeRecurrentState(): Region;
  /** Takes back a disposed session's recurrent state (to free or to reuse). */
  returnRecurrentState(region: Region): void;
}

/**
 * Where a layer's state lives: attention layers in two growable regions of their own (K and V,
 * `rowBytes` per position), recurrent layers at offsets of region 0.
 */
type LayerLayout =
  | { kind: "attention"; k: number; v: number; kRowBytes: number; vRowBytes: number }
  | { kind: "deltanet"; region: number; conv: number; convBytes: number; ssm: number; ssmBytes: number };

/** The element types of a session's KV cache (llama.cpp's `-ctk/-ctv`). */
export interface CacheTypes {
  k: CacheType;
  v: CacheType;
}

export const F16_CACHE: CacheTypes = { k: "f16", v: "f16" };

/** Bytes of one session's recurrent state (every DeltaNet layer's conv and DeltaNet state). */
export function recurrentStateBytes(cfg: Qwen35Config): number {
  return stateLayout(cfg, F16_CACHE).recurrentBytes;
}

/** Bytes of KV cache a session holds at `positions` tokens (all attention layers, K and V). */
export function kvCacheBytes(cfg: Qwen35Config, positions: number, types: CacheTypes): number {
  const { layers } = stateLayout(cfg, types);
  return layers.reduce((n, l) => n + (l.kind === "attention" ? positions * (l.kRowBytes + l.vRowBytes) : 0), 0);
}

/** Where each layer's state lives; region 0 holds all recurrent state, then K and V per attention layer. */
function stateLayout(cfg: Qwen35Config, types: CacheTypes): { recurrentBytes: number; layers: LayerLayout[] } {
  const kvDim = cfg.nHeadKv * cfg.headDim;
  const kRowBytes = cacheRowBytes(types.k, kvDim), vRowBytes = cacheRowBytes(types.v, kvDim);
  const convBytes = (cfg.convKernel - 1) * convDim(cfg) * 4;
  const ssmBytes = cfg.nVHeads * cfg.ssmHeadDim * cfg.ssmHeadDim * 4;
  let recurrentBytes = 0;
  let regions = 1;
  const take = (n: number) => {
    const at = recurrentBytes;
    recurrentBytes += Math.ceil(n / 64) * 64;
    return at;
  };
  const layers = cfg.layerTypes.map((kind): LayerLayout => {
    if (kind === "deltanet") return { kind, region: 0, conv: take(convBytes), convBytes, ssm: take(ssmBytes), ssmBytes };
    const k = regions++, v = regions++;
    return { kind, k, v, kRowBytes, vRowBytes };
  });
  return { recurrentBytes, layers };
}

/**
 * Checks that a model can keep its KV cache in these types (quantized rows are whole 32-value
 * blocks per head); returns them.
 */
export function checkCacheTypes(cfg: Qwen35Config, types: CacheTypes): CacheTypes {
  for (const [which, t] of [["K", types.k], ["V", types.v]] as const) {
    if (!(t in CACHE_TYPES)) {
      throw new DeltaqError(`unknown ${which} cache type ${JSON.stringify(t)}; use one of ${Object.keys(CACHE_TYPES).join(", ")}`);
    }
    const block = CACHE_TYPES[t].blockValues;
    if (cfg.headDim % block !== 0) {
      throw new DeltaqError(`a ${t} ${which} cache needs a head dim that is a multiple of ${block}; this model's is ${cfg.headDim}`);
    }
  }
  return types;
}

const SNAPSHOT_MAGIC = 0x4e535144; // "DQSN"
/** 1: F16 cache, 4 header words. 2: adds the K and V cache types (GGML ids). */
const SNAPSHOT_VERSION = 2;
const SNAPSHOT_HEADER_WORDS = 6; // magic, version, fingerprint, position, K type, V type
const SNAPSHOT_V1_HEADER_WORDS = 4;

/** Recurrent state saved at a position, so the session can go back there (see `checkpoint`). */
interface Checkpoint {
  position: number;
  epoch: number;
  recurrent: Uint8Array;
}

export class Session {
  #position = 0;
  /** Bumped whenever the token history is replaced (reset, restore), invalidating checkpoints. */
  #epoch = 0;
  #checkpoint: Checkpoint | undefined;
  #disposed = false;
  /** Set while an `…Async` evaluation runs: the state is in use off the JS thread. */
  #inFlight = false;
  #disposeWhenLanded = false;
  readonly #regions: Region[] = [];
  readonly #state: LayerState[];
  readonly #layout: ReturnType<typeof stateLayout>;
  readonly #history: Int32Array;

  /** The KV cache's element types. */
  readonly cacheTypes: CacheTypes;

  /**
   * The KV cache of each attention layer is address space for `contextLength` positions that
   * holds memory only for the positions in use: it grows in 2 MiB granules as the sequence grows
   * and gives them back on `reset`.
   */
  constructor(
    readonly host: SessionHost,
    readonly contextLength: number,
    private readonly onDispose?: () => void,
    cacheTypes: CacheTypes = F16_CACHE,
  ) {
    this.cacheTypes = checkCacheTypes(host.config, { ...cacheTypes });
    this.#layout = stateLayout(host.config, this.cacheTypes);
    this.#regions.push(host.takeRecurrentState());
    try {
      for (const l of this.#layout.layers) {
        if (l.kind !== "attention") continue;
        this.#regions.push(reserve(contextLength * l.kRowBytes), reserve(contextLength * l.vRowBytes));
      }
    } catch (e) {
      this.#releaseRegions();
      throw e;
    }
    this.#history = new Int32Array(contextLength);
    const ref = (region: number, byteOffset: number, elementBytes: number): Ref => ({
      region: this.#regions[region].id,
      offset: byteOffset / elementBytes,
    });
    const { k: kType, v: vType } = this.cacheTypes;
    this.#state = this.#layout.layers.map((l): LayerState =>
      l.kind === "attention"
        ? { kind: "attention", cache: { k: ref(l.k, 0, 1), v: ref(l.v, 0, 1), kType, vType } }
        : { kind: "deltanet", state: { conv: ref(l.region, l.conv, 4), ssm: ref(l.region, l.ssm, 4) } }
    );
  }

  /** Bytes of memory the session holds now: recurrent state and the KV cache's committed granules. */
  get memoryBytes(): number {
    return this.#regions.reduce((n, r) => n + r.committedBytes, 0);
  }

  /** Makes the KV cache hold `positions` rows (committing granules as needed). */
  #growCache(positions: number): void {
    for (const l of this.#layout.layers) {
      if (l.kind !== "attention") continue;
      for (const [region, rowBytes] of [[this.#regions[l.k], l.kRowBytes], [this.#regions[l.v], l.vRowBytes]] as const) {
        const need = positions * rowBytes;
        if (region.byteLength >= need) continue;
        region.resize(Math.min(this.contextLength * rowBytes, Math.ceil(need / COMMIT_GRANULE) * COMMIT_GRANULE));
      }
    }
  }

  /** Gives the KV cache's memory back. */
  #shrinkCache(): void {
    for (const l of this.#layout.layers) {
      if (l.kind === "attention") for (const i of [l.k, l.v]) this.#regions[i].resize(0);
    }
  }

  /** Tokens evaluated so far (the position of the next token). */
  get position(): number {
    return this.#position;
  }

  /** The tokens evaluated so far, oldest first (a copy). */
  get tokens(): Int32Array {
    return this.#history.slice(0, this.#position);
  }

  /**
   * Evaluates `tokens` after the current position and returns the last token's logits (nVocab
   * floats), or with `allLogits` every token's (n × nVocab, row-major), in `out` if given.
   * Invalid token ids, a batch that would pass the context length or an `out` of the wrong size
   * throw before any state changes.
   */
  eval(tokens: ArrayLike<number>, opts: EvalOptions = {}): Float32Array {
    const out = this.#prepareEval(tokens, opts);
    this.host.run(this.#state, tokens, this.#position, !!opts.allLogits, out);
    this.#advance(tokens);
    return out;
  }

  /**
   * `eval` with the native work off the JS thread (the event loop keeps running). Until it
   * settles the session refuses other calls; a `dispose` meanwhile takes effect when it lands.
   */
  async evalAsync(tokens: ArrayLike<number>, opts: EvalOptions = {}): Promise<Float32Array> {
    const out = this.#prepareEval(tokens, opts);
    await Session.#whileInFlight([this], () => this.host.runAsync(this.#state, tokens, this.#position, !!opts.allLogits, out));
    this.#advance(tokens);
    return out;
  }

  /**
   * Evaluates one token on each of several sessions of one model in a single forward pass (the
   * weights are read once for all of them) and returns each one's logits, in `outs[i]` if given.
   * Each session's logits and state are exactly (bit for bit) what `eval([tokens[i]])` would give.
   */
  static decode(sessions: Session[], tokens: number[], outs?: Float32Array[]): Float32Array[] {
    const { host, steps, logits } = Session.#prepareDecode(sessions, tokens, outs);
    host.decode(steps, logits);
    sessions.forEach((s, i) => s.#advance([tokens[i]]));
    return logits;
  }

  /** `Session.decode` with the native work off the JS thread (see `evalAsync`). */
  static async decodeAsync(sessions: Session[], tokens: number[], outs?: Float32Array[]): Promise<Float32Array[]> {
    const { host, steps, logits } = Session.#prepareDecode(sessions, tokens, outs);
    await Session.#whileInFlight(sessions, () => host.decodeAsync(steps, logits));
    sessions.forEach((s, i) => s.#advance([tokens[i]]));
    return logits;
  }

  static #prepareDecode(sessions: Session[], tokens: number[], outs?: Float32Array[]) {
    if (sessions.length === 0) throw new DeltaqError("decode needs at least one session");
    if (tokens.length !== sessions.length || (outs && outs.length !== sessions.length)) {
      throw new DeltaqError(`decode got ${sessions.length} sessions, ${tokens.length} tokens and ${outs?.length} outputs`);
    }
    const host = sessions[0].host;
    if (new Set(sessions).size !== sessions.length) throw new DeltaqError("decode got the same session twice");
    if (sessions.some((s) => s.host !== host)) throw new DeltaqError("decode needs sessions of one model");
    const logits = sessions.map((s, i) => s.#prepareEval([tokens[i]], { out: outs?.[i] }));
    const steps = sessions.map((s, i): DecodeStep => ({ state: s.#state, token: tokens[i], pos: s.#position }));
    return { host, steps, logits };
  }

  /** Marks sessions busy while `work` runs off the JS thread. */
  static async #whileInFlight(sessions: Session[], work: () => Promise<void>): Promise<void> {
    for (const s of sessions) s.#inFlight = true;
    try {
      await work();
    } finally {
      for (const s of sessions) {
        s.#inFlight = false;
        if (s.#disposeWhenLanded) s.dispose();
      }
    }
  }

  /** Checks an evaluation of `tokens` (nothing changes when it throws); returns the logits array. */
  #prepareEval(tokens: ArrayLike<number>, opts: EvalOptions): Float32Array {
    this.#assertLive();
    const cfg = this.host.config;
    const n = tokens.length;
    if (n === 0) throw new DeltaqError("eval needs at least one token");
    for (let i = 0; i < n; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t >= cfg.nVocab) {
        throw new DeltaqError(`token id ${t} (at index ${i}) is outside the vocabulary (0..${cfg.nVocab - 1})`);
      }
    }
    if (this.#position + n > this.contextLength) {
      throw new DeltaqError(
        `${n} tokens at position ${this.#position} would pass the context length ${this.contextLength}`,
      );
    }
    const out = logitsOutput(opts.out, (opts.allLogits ? n : 1) * cfg.nVocab);
    this.#growCache(this.#position + n);
    return out;
  }

  #advance(tokens: ArrayLike<number>): void {
    const n = tokens.length;
    for (let i = 0; i < n; i++) this.#history[this.#position + i] = tokens[i];
    this.#position += n;
  }

  /** Forgets everything: position 0, recurrent state cleared, the KV cache's memory released. */
  reset(): void {
    this.#assertLive();
    for (const p of this.#stateParts(0, true)) p.bytes.fill(0, p.from, p.from + p.length);
    this.#shrinkCache();
    this.#position = 0;
    this.#epoch++;
    this.#checkpoint = undefined;
  }

  /**
   * Remembers the current position so the session can later return to it (`rollback`). KV rows
   * below a position never change, so only the recurrent (conv and DeltaNet) state is copied. One
   * checkpoint is kept; a new one replaces it. Chats use this to re-render a conversation whose
   * template rewrites the previous reply (e.g. drops its thinking) without re-evaluating the
   * whole history.
   */
  checkpoint(): void {
    this.#checkpoint = { position: this.#position, epoch: this.#epoch, recurrent: this.recurrentState() };
  }

  /** The position of the checkpoint the session can roll back to, if any. */
  get checkpointPosition(): number | undefined {
    const c = this.#checkpoint;
    return c && c.epoch === this.#epoch && c.position <= this.#position ? c.position : undefined;
  }

  /** Returns to the checkpoint: position, tokens and state as they were when it was taken. */
  rollback(): void {
    this.#assertLive();
    const c = this.#checkpoint;
    if (!c || this.checkpointPosition === undefined) throw new DeltaqError("this session has no checkpoint to roll back to");
    let at = 0;
    for (const p of this.#stateParts(c.position, true)) {
      p.bytes.set(c.recurrent.subarray(at, at + p.length), p.from);
      at += p.length;
    }
    this.#position = c.position;
  }

  /** The conv and DeltaNet state at the current position, as bytes (what `checkpoint` keeps). */
  recurrentState(): Uint8Array {
    this.#assertLive();
    return concatParts(this.#stateParts(this.#position, true));
  }

  /** Bytes per row of each block of a `kvRows` buffer, in order: each attention layer's K, V. */
  get kvRowLayout(): number[] {
    return this.#layout.layers.flatMap((l) => l.kind === "attention" ? [l.kRowBytes, l.vRowBytes] : []);
  }

  /**
   * The KV rows [from, to) of every attention layer as one buffer: layer by layer, its K rows
   * then its V rows. With `recurrentState` and the tokens, what a prompt cache keeps of a prefix.
   */
  kvRows(from: number, to: number): Uint8Array {
    this.#assertLive();
    if (!(Number.isInteger(from) && Number.isInteger(to) && 0 <= from && from <= to && to <= this.#position)) {
      throw new DeltaqError(`KV rows [${from}, ${to}) are not within the ${this.#position} evaluated positions`);
    }
    return concatParts(this.#kvParts(from, to));
  }

  /**
   * Puts the session at the end of `tokens` with `recurrent` (from `recurrentState`) as its conv
   * and DeltaNet state. KV rows below `keep` stay as they are: the caller knows they already hold
   * these tokens' keys and values (the session held the same prefix). Rows from `keep` on come from
   * `kv`: buffers from `kvRows`, each with the position it starts at, in order, covering
   * [keep, tokens.length) (they may start before `keep` and end after the tokens).
   */
  resume(tokens: ArrayLike<number>, recurrent: Uint8Array, keep: number, kv: { from: number; bytes: Uint8Array }[]): void {
    this.#assertLive();
    const n = tokens.length;
    const bad = (why: string): never => {
      throw new DeltaqError(`cannot resume the session: ${why}`);
    };
    if (n > this.contextLength) bad(`${n} tokens exceed the context length ${this.contextLength}`);
    if (!(Number.isInteger(keep) && keep >= 0 && keep <= n)) bad(`kept rows ${keep} are not within the ${n} tokens`);
    const recurrentParts = this.#stateParts(n, true);
    if (recurrent.byteLength !== recurrentParts.reduce((t, p) => t + p.length, 0)) bad("the recurrent state's size does not match the model");
    const perToken = this.kvRowLayout.reduce((a, b) => a + b, 0);
    this.#growCache(n);
    let at = keep;
    for (const chunk of kv) {
      if (perToken === 0) break;
      const rows = chunk.bytes.byteLength / perToken;
      if (!Number.isInteger(rows) || chunk.from > at) bad(`KV rows from ${chunk.from} (${rows} rows) do not continue row ${at}`);
      const to = Math.min(n, chunk.from + rows);
      if (to > at) this.#writeKvRows(chunk.bytes, chunk.from, rows, at, to);
      at = Math.max(at, to);
    }
    if (perToken > 0 && at < n) bad(`KV rows [${at}, ${n}) are missing`);
    let offset = 0;
    for (const p of recurrentParts) {
      p.bytes.set(recurrent.subarray(offset, offset + p.length), p.from);
      offset += p.length;
    }
    for (let i = 0; i < n; i++) this.#history[i] = tokens[i];
    this.#position = n;
    this.#epoch++;
    this.#checkpoint = undefined;
  }

  /** Rows [from, to) of a `kvRows` buffer that starts at `chunkFrom` and holds `chunkRows` rows. */
  #writeKvRows(chunk: Uint8Array, chunkFrom: number, chunkRows: number, from: number, to: number): void {
    let offset = 0;
    for (const l of this.#layout.layers) {
      if (l.kind !== "attention") continue;
      for (const [region, rowBytes] of [[l.k, l.kRowBytes], [l.v, l.vRowBytes]]) {
        const src = offset + (from - chunkFrom) * rowBytes;
        this.#regions[region].bytes().set(chunk.subarray(src, src + (to - from) * rowBytes), from * rowBytes);
        offset += chunkRows * rowBytes;
      }
    }
  }

  /** Each attention layer's K rows then V rows [from, to), in `kvRows` order. */
  #kvParts(from: number, to: number): { bytes: Uint8Array; from: number; length: number }[] {
    return this.#layout.layers.flatMap((l) =>
      l.kind === "attention"
        ? [[l.k, l.kRowBytes], [l.v, l.vRowBytes]].map(([region, rowBytes]) => ({
          bytes: this.#regions[region].bytes(),
          from: from * rowBytes,
          length: (to - from) * rowBytes,
        }))
        : []
    );
  }

  /** The sequence state as bytes: position, tokens, the used KV rows and the recurrent state. */
  snapshot(): Uint8Array {
    this.#assertLive();
    const pos = this.#position;
    const size = this.#snapshotBytes(pos);
    const out = new Uint8Array(size);
    const words = new Uint32Array(out.buffer, 0, SNAPSHOT_HEADER_WORDS);
    const { k, v } = this.cacheTypes;
    words.set([SNAPSHOT_MAGIC, SNAPSHOT_VERSION, this.host.fingerprint, pos, CACHE_TYPES[k].id, CACHE_TYPES[v].id]);
    let at = SNAPSHOT_HEADER_WORDS * 4;
    new Int32Array(out.buffer, at, pos).set(this.#history.subarray(0, pos));
    at += pos * 4;
    for (const p of this.#stateParts(pos)) {
      out.set(p.bytes.subarray(p.from, p.from + p.length), at);
      at += p.length;
    }
    return out;
  }

  /** Replaces this session's state with a snapshot taken from a session of the same model. */
  restore(snapshot: Uint8Array): void {
    this.#assertLive();
    const bad = (why: string): never => {
      throw new DeltaqError(`cannot restore session snapshot: ${why}`);
    };
    if (snapshot.byteLength < SNAPSHOT_V1_HEADER_WORDS * 4) bad("too short");
    const header = new DataView(snapshot.buffer, snapshot.byteOffset, Math.min(snapshot.byteLength, SNAPSHOT_HEADER_WORDS * 4));
    const word = (i: number) => header.getUint32(i * 4, true);
    if (word(0) !== SNAPSHOT_MAGIC) bad("not a deltaq session snapshot");
    const version = word(1);
    if (version !== 1 && version !== SNAPSHOT_VERSION) bad(`unsupported snapshot version ${version}`);
    if (word(2) !== this.host.fingerprint) bad("it was taken with a different model");
    const headerWords = version === 1 ? SNAPSHOT_V1_HEADER_WORDS : SNAPSHOT_HEADER_WORDS;
    if (snapshot.byteLength < headerWords * 4) bad("too short");
    // version 1 snapshots were all taken with an F16 cache
    const typeName = (id: number) => Object.entries(CACHE_TYPES).find(([, t]) => t.id === id)?.[0] ?? `type ${id}`;
    const kType = version === 1 ? "f16" : typeName(word(4));
    const vType = version === 1 ? "f16" : typeName(word(5));
    if (kType !== this.cacheTypes.k || vType !== this.cacheTypes.v) {
      bad(
        `it holds a ${kType}/${vType} KV cache (K/V) and this session's is ${this.cacheTypes.k}/${this.cacheTypes.v}; ` +
          `use a session with the same cache types`,
      );
    }
    const pos = word(3);
    if (pos > this.contextLength) bad(`its ${pos} tokens exceed this session's context length ${this.contextLength}`);
    if (snapshot.byteLength !== this.#snapshotBytes(pos, headerWords)) bad("its size does not match the model");
    this.#growCache(pos);
    let at = headerWords * 4;
    const tokens = new Int32Array(snapshot.slice(at, at + pos * 4).buffer);
    at += pos * 4;
    for (const p of this.#stateParts(pos)) {
      p.bytes.set(snapshot.subarray(at, at + p.length), p.from);
      at += p.length;
    }
    this.#history.set(tokens);
    this.#position = pos;
    this.#epoch++;
    this.#checkpoint = undefined;
  }

  /** Writes `snapshot()` to a file (atomically: a temporary name is renamed into place). */
  async saveSnapshot(path: string): Promise<void> {
    const bytes = this.snapshot();
    const tmp = `${path}.partial`;
    try {
      await Deno.writeFile(tmp, bytes);
      await Deno.rename(tmp, path);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw new DeltaqError(`${path}: cannot write snapshot: ${(e as Error).message}`);
    }
  }

  /** Restores a snapshot written by `saveSnapshot`. */
  async loadSnapshot(path: string): Promise<void> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (e) {
      throw new DeltaqError(`${path}: cannot read snapshot: ${(e as Error).message}`);
    }
    try {
      this.restore(bytes);
    } catch (e) {
      if (e instanceof DeltaqError) throw new DeltaqError(`${path}: ${e.message}`);
      throw e;
    }
  }

  /** Frees the session's memory. Calling it twice is harmless. */
  dispose(): void {
    if (this.#disposed) return;
    if (this.#inFlight) {
      this.#disposeWhenLanded = true;
      return;
    }
    this.#disposed = true;
    this.#releaseRegions();
    this.#checkpoint = undefined;
    this.onDispose?.();
  }

  #releaseRegions(): void {
    const [recurrent, ...kv] = this.#regions;
    for (const r of kv) r.free();
    if (recurrent) this.host.returnRecurrentState(recurrent);
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * The byte ranges that make up the sequence state at position `pos`, in snapshot order: each
   * attention layer's K and V rows in use, each recurrent layer's conv and DeltaNet state.
   * `recurrentOnly` keeps the latter (what a checkpoint saves: KV rows never change).
   */
  #stateParts(pos: number, recurrentOnly = false): { bytes: Uint8Array; from: number; length: number }[] {
    return this.#layout.layers.flatMap((l) => {
      if (l.kind === "attention") {
        if (recurrentOnly) return [];
        return [
          { bytes: this.#regions[l.k].bytes(), from: 0, length: pos * l.kRowBytes },
          { bytes: this.#regions[l.v].bytes(), from: 0, length: pos * l.vRowBytes },
        ];
      }
      const bytes = this.#regions[l.region].bytes();
      return [{ bytes, from: l.conv, length: l.convBytes }, { bytes, from: l.ssm, length: l.ssmBytes }];
    });
  }

  #snapshotBytes(pos: number, headerWords = SNAPSHOT_HEADER_WORDS): number {
    const kvBytes = kvCacheBytes(this.host.config, pos, this.cacheTypes);
    const recurrent = this.#stateParts(0, true).reduce((n, p) => n + p.length, 0);
    return headerWords * 4 + pos * 4 + kvBytes + recurrent;
  }

  #assertLive(): void {
    if (this.#disposed || this.#disposeWhenLanded) throw new DeltaqError("this session was disposed");
    if (this.#inFlight) throw new DeltaqError("this session is busy with an evaluation (evalAsync or decodeAsync)");
    this.host.assertLive();
  }
}

/** The bytes of `parts`, one after another, in a new buffer. */
function concatParts(parts: { bytes: Uint8Array; from: number; length: number }[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p.bytes.subarray(p.from, p.from + p.length), at);
    at += p.length;
  }
  return out;
}
