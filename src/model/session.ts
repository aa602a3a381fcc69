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
 */
import { DeltaqError } from "../errors.ts";
import { allocate, type Ref, type Region } from "../native/kernels.ts";
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

/** The model-side operations a session needs (implemented by Model). */
export interface SessionHost {
  readonly config: Qwen35Config;
  /** Identifies the model file, so a snapshot is only restored into the model it came from. */
  readonly fingerprint: number;
  /** Runs tokens at `pos` with `state`; writes logits of the chosen rows into `out`. */
  run(state: LayerState[], tokens: ArrayLike<number>, pos: number, allLogits: boolean, out: Float32Array): void;
  assertLive(): void;
  /** A zeroed, resident buffer for a new session's recurrent state (`recurrentStateBytes`). */
  takeRecurrentState(): Region;
  /** Takes back a disposed session's recurrent state (to free or to reuse). */
  returnRecurrentState(region: Region): void;
}

type LayerLayout =
  | { kind: "attention"; region: number; k: number; v: number; rowBytes: number }
  | { kind: "deltanet"; region: number; conv: number; convBytes: number; ssm: number; ssmBytes: number };

/** Bytes of one session's recurrent state (every DeltaNet layer's conv and DeltaNet state). */
export function recurrentStateBytes(cfg: Qwen35Config): number {
  return stateLayout(cfg, 0).regionBytes[0];
}

/** Region sizes and where each layer's state lives: region 0 holds all recurrent state. */
function stateLayout(cfg: Qwen35Config, contextLength: number): { regionBytes: number[]; layers: LayerLayout[] } {
  const kvRowBytes = cfg.nHeadKv * cfg.headDim * 2; // f16
  const convBytes = (cfg.convKernel - 1) * convDim(cfg) * 4;
  const ssmBytes = cfg.nVHeads * cfg.ssmHeadDim * cfg.ssmHeadDim * 4;
  const regionBytes = [0];
  const take = (region: number, n: number) => {
    const at = regionBytes[region];
    regionBytes[region] += Math.ceil(n / 64) * 64;
    return at;
  };
  const layers = cfg.layerTypes.map((kind): LayerLayout => {
    if (kind === "deltanet") return { kind, region: 0, conv: take(0, convBytes), convBytes, ssm: take(0, ssmBytes), ssmBytes };
    const region = regionBytes.push(0) - 1;
    const cacheBytes = contextLength * kvRowBytes;
    return { kind, region, k: take(region, cacheBytes), v: take(region, cacheBytes), rowBytes: kvRowBytes };
  });
  return { regionBytes, layers };
}

const SNAPSHOT_MAGIC = 0x4e535144; // "DQSN"
const SNAPSHOT_VERSION = 1;
const SNAPSHOT_HEADER_WORDS = 4; // magic, version, fingerprint, position

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
  readonly #regions: Region[] = [];
  readonly #state: LayerState[];
  readonly #layout: ReturnType<typeof stateLayout>;
  readonly #history: Int32Array;

  constructor(
    readonly host: SessionHost,
    readonly contextLength: number,
    private readonly onDispose?: () => void,
  ) {
    this.#layout = stateLayout(host.config, contextLength);
    const [, ...kvBytes] = this.#layout.regionBytes;
    this.#regions.push(host.takeRecurrentState());
    try {
      for (const bytes of kvBytes) this.#regions.push(allocate(bytes));
    } catch (e) {
      this.#releaseRegions();
      throw e;
    }
    this.#history = new Int32Array(contextLength);
    const ref = (region: number, byteOffset: number, elementBytes: number): Ref => ({
      region: this.#regions[region].id,
      offset: byteOffset / elementBytes,
    });
    this.#state = this.#layout.layers.map((l): LayerState =>
      l.kind === "attention"
        ? { kind: "attention", cache: { k: ref(l.region, l.k, 2), v: ref(l.region, l.v, 2) } }
        : { kind: "deltanet", state: { conv: ref(l.region, l.conv, 4), ssm: ref(l.region, l.ssm, 4) } }
    );
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
    this.host.run(this.#state, tokens, this.#position, !!opts.allLogits, out);
    for (let i = 0; i < n; i++) this.#history[this.#position + i] = tokens[i];
    this.#position += n;
    return out;
  }

  /** Forgets everything: position 0, recurrent state cleared. */
  reset(): void {
    this.#assertLive();
    // The KV cache needs no clearing: attention only reads rows below the position, which are
    // rewritten before they are read again.
    for (const p of this.#stateParts(0, true)) p.bytes.fill(0, p.from, p.from + p.length);
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
    this.#assertLive();
    const parts = this.#stateParts(this.#position, true);
    const recurrent = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      recurrent.set(p.bytes.subarray(p.from, p.from + p.length), at);
      at += p.length;
    }
    this.#checkpoint = { position: this.#position, epoch: this.#epoch, recurrent };
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

  /** The sequence state as bytes: position, tokens, the used KV rows and the recurrent state. */
  snapshot(): Uint8Array {
    this.#assertLive();
    const pos = this.#position;
    const size = this.#snapshotBytes(pos);
    const out = new Uint8Array(size);
    const words = new Uint32Array(out.buffer, 0, SNAPSHOT_HEADER_WORDS);
    words.set([SNAPSHOT_MAGIC, SNAPSHOT_VERSION, this.host.fingerprint, pos]);
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
    if (snapshot.byteLength < SNAPSHOT_HEADER_WORDS * 4) bad("too short");
    const header = new DataView(snapshot.buffer, snapshot.byteOffset, SNAPSHOT_HEADER_WORDS * 4);
    const word = (i: number) => header.getUint32(i * 4, true);
    if (word(0) !== SNAPSHOT_MAGIC) bad("not a deltaq session snapshot");
    if (word(1) !== SNAPSHOT_VERSION) bad(`unsupported snapshot version ${word(1)}`);
    if (word(2) !== this.host.fingerprint) bad("it was taken with a different model");
    const pos = word(3);
    if (pos > this.contextLength) bad(`its ${pos} tokens exceed this session's context length ${this.contextLength}`);
    if (snapshot.byteLength !== this.#snapshotBytes(pos)) bad("its size does not match the model");
    let at = SNAPSHOT_HEADER_WORDS * 4;
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
    this.#disposed = true;
    this.#releaseRegions();
    this.#checkpoint = undefined;
    this.onDispose?.();
  }

  #releaseRegions(): void {
    const [recurrent, ...kv] = this.#regions;
    for (const r of kv) r.free();
    this.host.returnRecurrentState(recurrent);
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
    const regions = this.#regions.map((r) => r.bytes());
    return this.#layout.layers.flatMap((l) => {
      const bytes = regions[l.region];
      if (l.kind === "attention") {
        if (recurrentOnly) return [];
        return [{ bytes, from: l.k, length: pos * l.rowBytes }, { bytes, from: l.v, length: pos * l.rowBytes }];
      }
      return [{ bytes, from: l.conv, length: l.convBytes }, { bytes, from: l.ssm, length: l.ssmBytes }];
    });
  }

  #snapshotBytes(pos: number): number {
    return SNAPSHOT_HEADER_WORDS * 4 + pos * 4 + this.#stateParts(pos).reduce((n, p) => n + p.length, 0);
  }

  #assertLive(): void {
    if (this.#disposed) throw new DeltaqError("this session was disposed");
    this.host.assertLive();
  }
}
