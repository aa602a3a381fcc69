/**
 * A session is one sequence: its position, the KV cache of every attention layer and the conv and
 * DeltaNet state of every recurrent layer, all in one native region. `eval` continues from the
 * current position, so a prompt evaluated in one call and the same tokens fed one by one reach the
 * same state and logits.
 */
import { DeltaqError } from "../errors.ts";
import { allocate, type Ref, type Region } from "../native/kernels.ts";
import type { Qwen35Config } from "./config.ts";
import { convDim } from "./deltanet.ts";
import type { LayerState } from "./qwen35.ts";

export interface EvalOptions {
  /** Return logits for every evaluated token (n × nVocab) instead of only the last one. */
  allLogits?: boolean;
}

/** The model-side operations a session needs (implemented by Model). */
export interface SessionHost {
  readonly config: Qwen35Config;
  /** Runs tokens at `pos` with `state`; writes logits of the chosen rows into `out`. */
  run(state: LayerState[], tokens: ArrayLike<number>, pos: number, allLogits: boolean, out: Float32Array): void;
  assertLive(): void;
}

/** Byte layout of a session's state region. */
export function stateLayout(cfg: Qwen35Config, contextLength: number) {
  const kvDim = cfg.nHeadKv * cfg.headDim;
  const C = convDim(cfg);
  const D = cfg.ssmHeadDim;
  let bytes = 0;
  const take = (n: number) => {
    const at = bytes;
    bytes += Math.ceil(n / 64) * 64;
    return at;
  };
  const layers = cfg.layerTypes.map((kind) =>
    kind === "attention"
      ? { kind, k: take(contextLength * kvDim * 2), v: take(contextLength * kvDim * 2), rowBytes: kvDim * 2 }
      : { kind, conv: take((cfg.convKernel - 1) * C * 4), ssm: take(cfg.nVHeads * D * D * 4) }
  );
  return { bytes, layers };
}

export class Session {
  #position = 0;
  #disposed = false;
  readonly #region: Region;
  readonly #state: LayerState[];
  readonly #layout: ReturnType<typeof stateLayout>;

  constructor(readonly host: SessionHost, readonly contextLength: number) {
    const cfg = host.config;
    const layout = stateLayout(cfg, contextLength);
    this.#layout = layout;
    this.#region = allocate(layout.bytes);
    const ref = (byteOffset: number, elementBytes: number): Ref => ({
      region: this.#region.id,
      offset: byteOffset / elementBytes,
    });
    this.#state = layout.layers.map((l) =>
      l.kind === "attention"
        ? { kind: "attention", cache: { k: ref(l.k!, 2), v: ref(l.v!, 2) } }
        : { kind: "deltanet", state: { conv: ref(l.conv!, 4), ssm: ref(l.ssm!, 4) } }
    );
  }

  /** Tokens evaluated so far (the position of the next token). */
  get position(): number {
    return this.#position;
  }

  /**
   * Evaluates `tokens` after the current position and returns the last token's logits (nVocab
   * floats), or with `allLogits` every token's (n × nVocab, row-major). Invalid token ids or a
   * batch that would pass the context length throw before any state changes.
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
    const out = new Float32Array((opts.allLogits ? n : 1) * cfg.nVocab);
    this.host.run(this.#state, tokens, this.#position, !!opts.allLogits, out);
    this.#position += n;
    return out;
  }

  /** Forgets everything: position 0, caches and recurrent state cleared. */
  reset(): void {
    this.#assertLive();
    // The KV cache needs no clearing: attention only reads rows below the position, which are
    // rewritten before they are read again.
    const bytes = this.#region.bytes();
    const cfg = this.host.config;
    for (const l of this.#layout.layers) {
      if (l.kind !== "deltanet") continue;
      bytes.fill(0, l.conv!, l.conv! + (cfg.convKernel - 1) * convDim(cfg) * 4);
      bytes.fill(0, l.ssm!, l.ssm! + cfg.nVHeads * cfg.ssmHeadDim ** 2 * 4);
    }
    this.#position = 0;
  }

  /** Frees the session's memory. Calling it twice is harmless. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#region.free();
  }

  #assertLive(): void {
    if (this.#disposed) throw new DeltaqError("this session was disposed");
    this.host.assertLive();
  }
}
