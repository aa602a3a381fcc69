/**
 * The inference engine under `deltaq serve`: a queue of jobs (prompt token ids in, sampled token
 * ids out) run on a fixed number of slots of one model. The HTTP layer renders chats, tokenizes,
 * detokenizes, applies stop strings and parses tool calls; the engine only evaluates and samples.
 *
 *   submit(job) → queue → slot (one Session each)
 *     prompt: the slot continues from what it holds, or restores the prompt cache's longest prefix,
 *             then evaluates the rest (checkpoints saved where the job asks)
 *     decode: every decoding slot advances one token per step
 *
 * The interface (EngineJob, EngineRequest, EngineResult) is the contract with the HTTP layer,
 * described in /work/coord/server-interface.md; keep it stable.
 */
import { DeltaqError } from "../errors.ts";
import type { TokenConstraint } from "../generate/constraint.ts";
import { Sampler, type SamplerOptions } from "../generate/sampler.ts";
import type { Model } from "../model/model.ts";
import type { Session } from "../model/session.ts";

export interface EngineOptions {
  /** Slots: sequences decoded together. More requests wait in the queue. Default 1. */
  parallel?: number;
  /** Prompt-cache budget in MiB (0 turns the cache off). Default: sized to the machine. */
  cacheMiB?: number;
  /** Long prompts also get a checkpoint every this many tokens. Default 2048. */
  checkpointInterval?: number;
}

/** Restricts which tokens may be sampled (structured output); see src/generate/constraint.ts. */
export type { TokenConstraint };

export interface EngineJob {
  /** Prompt token ids (at least one; at most the context length). */
  prompt: ArrayLike<number>;
  /**
   * Prompt positions worth a checkpoint of the sequence state, typically the end of a chat's
   * history before the generation prompt (`Model.renderChat().historyTokens`): the next turn's
   * prompt starts to differ right after it. Positions outside 1..prompt.length-1 are ignored.
   */
  checkpoints?: readonly number[];
  /** Temperature, top-k/p, min-p, penalties, logit bias, seed (see SamplerOptions). */
  sampling?: SamplerOptions;
  /** Most tokens to generate (default: until end of generation or the context is full). */
  maxTokens?: number;
  constraint?: TokenConstraint;
  /**
   * Return each token's log-probability and that of the `logprobs` most likely tokens (0–20;
   * 0 = the chosen token's only). Omit for none.
   */
  logprobs?: number;
  /** Aborting ends the job (finishReason "abort") within one token; queued jobs leave the queue. */
  signal?: AbortSignal;
}

export interface TokenLogprob {
  id: number;
  /** Natural log of the token's probability under the model (after the constraint's mask). */
  logprob: number;
}

/** A generated token, yielded as soon as it is sampled. */
export interface EngineToken {
  id: number;
  /** When the job asked for logprobs. */
  logprob?: number;
  /** The job's `logprobs` most likely tokens, most likely first (when asked). */
  topLogprobs?: TokenLogprob[];
}

/**
 * Why generation ended: "eog" an end-of-generation token (not yielded), "length" maxTokens,
 * "context" the context length, "abort" the signal or the consumer stopped iterating.
 */
export type FinishReason = "eog" | "length" | "context" | "abort";

export interface EngineUsage {
  promptTokens: number;
  /** Prompt tokens not evaluated: restored from the slot or the prompt cache. */
  cachedTokens: number;
  completionTokens: number;
}

export interface EngineResult {
  finishReason: FinishReason;
  usage: EngineUsage;
  /** The sampler's seed (the job's, or the random one chosen). */
  seed: number;
  timings: {
    /** From submit to a slot taking the job, ms. */
    queuedMs: number;
    /** Restoring and evaluating the prompt, ms. */
    promptMs: number;
    /** From submit to the first sampled token, ms. */
    firstTokenMs: number;
    /** From the first token to the end, ms. */
    decodeMs: number;
  };
}

/**
 * A submitted job: iterate it for tokens (once); `result` settles when it ends. Leaving the
 * iteration early aborts the job. Errors reject `result` and are thrown by the iteration.
 */
export interface EngineRequest extends AsyncIterable<EngineToken> {
  readonly result: Promise<EngineResult>;
}

/** Counters for metrics (cumulative since the engine started, except the gauges). */
export interface EngineStats {
  slots: number;
  /** Gauges: slots running a job, jobs waiting. */
  active: number;
  queued: number;
  requests: number;
  promptTokens: number;
  cachedTokens: number;
  evaluatedTokens: number;
  generatedTokens: number;
  cache: { entries: number; bytes: number; capacityBytes: number; hits: number; misses: number };
}

const DEFAULT_CHECKPOINT_INTERVAL = 2048;
const MAX_LOGPROBS = 20;

/** The engine's view of one job in flight. */
class Job {
  readonly tokens: EngineToken[] = [];
  #wake: (() => void) | undefined;
  done = false;
  error: unknown;
  finishReason: FinishReason = "abort";
  readonly submitted = performance.now();
  started = 0;
  firstToken = 0;
  promptEnd = 0;
  cachedTokens = 0;
  generated = 0;
  readonly sampler: Sampler;
  readonly maxTokens: number;
  readonly logprobs: number | undefined;
  readonly prompt: Int32Array;
  readonly checkpoints: number[];
  resolve!: (r: EngineResult) => void;
  reject!: (e: unknown) => void;
  readonly result: Promise<EngineResult>;
  /** Set when the consumer stopped iterating. */
  abandoned = false;

  constructor(readonly spec: EngineJob, nVocab: number, contextLength: number) {
    const prompt = spec.prompt;
    if (!prompt || typeof prompt.length !== "number" || prompt.length === 0) {
      throw new DeltaqError("the prompt is empty");
    }
    if (prompt.length > contextLength) {
      throw new DeltaqError(
        `the prompt has ${prompt.length} tokens, more than the context length ${contextLength}`,
      );
    }
    this.prompt = Int32Array.from(prompt as ArrayLike<number>);
    for (let i = 0; i < prompt.length; i++) {
      const t = prompt[i];
      if (!Number.isInteger(t) || t < 0 || t >= nVocab) {
        throw new DeltaqError(
          `prompt token ${t} (at index ${i}) is outside the vocabulary (0..${nVocab - 1})`,
        );
      }
    }
    const max = spec.maxTokens ?? Infinity;
    if (!(max === Infinity || (Number.isInteger(max) && max >= 0))) {
      throw new DeltaqError(`maxTokens must be a non-negative integer, got ${spec.maxTokens}`);
    }
    this.maxTokens = max;
    if (
      spec.logprobs !== undefined &&
      !(Number.isInteger(spec.logprobs) && spec.logprobs >= 0 && spec.logprobs <= MAX_LOGPROBS)
    ) {
      throw new DeltaqError(`logprobs must be an integer from 0 to ${MAX_LOGPROBS}, got ${spec.logprobs}`);
    }
    this.logprobs = spec.logprobs;
    this.checkpoints = [...new Set(spec.checkpoints ?? [])]
      .filter((p) => Number.isInteger(p) && p > 0 && p < prompt.length)
      .sort((a, b) => a - b);
    this.sampler = new Sampler(nVocab, spec.sampling ?? {});
    this.result = new Promise<EngineResult>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.result.catch(() => {}); // reported through iteration too
  }

  get aborted(): boolean {
    return this.abandoned || !!this.spec.signal?.aborted;
  }

  push(token: EngineToken): void {
    this.tokens.push(token);
    this.#notify();
  }

  finish(reason: FinishReason): void {
    if (this.done) return;
    this.done = true;
    this.finishReason = reason;
    const end = performance.now();
    this.resolve({
      finishReason: reason,
      usage: {
        promptTokens: this.prompt.length,
        cachedTokens: this.cachedTokens,
        completionTokens: this.generated,
      },
      seed: this.sampler.seed,
      timings: {
        queuedMs: (this.started || end) - this.submitted,
        promptMs: this.started ? (this.promptEnd || end) - this.started : 0,
        firstTokenMs: this.firstToken ? this.firstToken - this.submitted : 0,
        decodeMs: this.firstToken ? end - this.firstToken : 0,
      },
    });
    this.#notify();
  }

  fail(e: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = e;
    this.reject(e);
    this.#notify();
  }

  /** Resolves when a token arrives or the job ends. */
  changed(): Promise<void> {
    if (this.tokens.length > 0 || this.done) return Promise.resolve();
    return new Promise((resolve) => this.#wake = resolve);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

export class Engine {
  readonly model: Model;
  readonly parallel: number;
  readonly checkpointInterval: number;
  readonly #queue: Job[] = [];
  readonly #sessions: Session[];
  #running = false;
  #closed = false;
  /** Wakes the loop when it waits for work. */
  #wake: (() => void) | undefined;
  #stats = { requests: 0, promptTokens: 0, cachedTokens: 0, evaluatedTokens: 0, generatedTokens: 0 };
  #active = 0;

  constructor(model: Model, opts: EngineOptions = {}) {
    model.assertLive();
    const parallel = opts.parallel ?? 1;
    if (!Number.isInteger(parallel) || parallel < 1 || parallel > 64) {
      throw new DeltaqError(`parallel must be an integer from 1 to 64, got ${opts.parallel}`);
    }
    const interval = opts.checkpointInterval ?? DEFAULT_CHECKPOINT_INTERVAL;
    if (!Number.isInteger(interval) || interval < 1) {
      throw new DeltaqError(`checkpointInterval must be a positive integer, got ${opts.checkpointInterval}`);
    }
    this.model = model;
    this.parallel = parallel;
    this.checkpointInterval = interval;
    this.#sessions = [model.createSession()];
  }

  /**
   * Queues a job. Throws a DeltaqError at once for a job that cannot run (empty or too long a
   * prompt, a token outside the vocabulary, bad options) or when the engine is closed.
   */
  submit(spec: EngineJob): EngineRequest {
    if (this.#closed) throw new DeltaqError("the engine is closed");
    const job = new Job(spec, this.model.config.nVocab, this.model.info.contextLength);
    if (spec.signal?.aborted) {
      job.finish("abort");
    } else {
      this.#queue.push(job);
      this.#stats.requests++;
      spec.signal?.addEventListener("abort", () => this.#kick(), { once: true });
      this.#kick();
    }
    return request(job);
  }

  /** Counters and gauges for metrics. */
  stats(): EngineStats {
    return {
      slots: this.parallel,
      active: this.#active,
      queued: this.#queue.length,
      ...this.#stats,
      cache: { entries: 0, bytes: 0, capacityBytes: 0, hits: 0, misses: 0 },
    };
  }

  /** Aborts every job and frees the slots. The model stays loaded (it is the caller's). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const job of this.#queue.splice(0)) job.finish("abort");
    this.#kick();
    if (!this.#running) this.#release();
  }

  #release(): void {
    for (const s of this.#sessions) s.dispose();
  }

  #kick(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
    if (!this.#running) {
      this.#running = true;
      this.#loop().finally(() => {
        this.#running = false;
        if (this.#closed) this.#release();
      });
    }
  }

  async #loop(): Promise<void> {
    while (!this.#closed) {
      const job = this.#queue.shift();
      if (!job) return;
      if (job.aborted) {
        job.finish("abort");
        continue;
      }
      this.#active = 1;
      try {
        await this.#run(job, this.#sessions[0]);
      } catch (e) {
        job.fail(e);
      } finally {
        this.#active = 0;
      }
    }
  }

  /** Serial implementation: one slot, no prompt cache beyond what the slot holds. */
  async #run(job: Job, session: Session): Promise<void> {
    job.started = performance.now();
    const prompt = job.prompt;
    const held = session.tokens;
    let common = 0;
    while (common < held.length && common < prompt.length && held[common] === prompt[common]) common++;
    const reusable = Math.min(common, prompt.length - 1);
    if (reusable < session.position) session.reset();
    job.cachedTokens = session.position;
    let logits!: Float32Array;
    while (session.position < prompt.length) {
      if (job.aborted) return job.finish("abort");
      const to = Math.min(prompt.length, session.position + 256);
      logits = session.eval(prompt.subarray(session.position, to));
      await breathe();
    }
    this.#stats.promptTokens += prompt.length;
    this.#stats.cachedTokens += job.cachedTokens;
    this.#stats.evaluatedTokens += prompt.length - job.cachedTokens;
    job.promptEnd = performance.now();
    job.sampler.accept(prompt);
    const tokenizer = this.model.tokenizer;
    const V = this.model.config.nVocab;
    const work = new Float32Array(V);
    while (true) {
      if (job.aborted) return job.finish("abort");
      if (job.generated >= job.maxTokens) return job.finish("length");
      work.set(logits);
      job.spec.constraint?.mask(work);
      const id = job.sampler.sample(work);
      if (!job.firstToken) job.firstToken = performance.now();
      if (tokenizer.isEndOfGeneration(id)) return job.finish("eog");
      job.spec.constraint?.accept(id);
      job.generated++;
      this.#stats.generatedTokens++;
      job.push(job.logprobs === undefined ? { id } : { id, ...logprobsOf(work, id, job.logprobs) });
      if (job.generated >= job.maxTokens) return job.finish("length");
      if (session.position >= session.contextLength) return job.finish("context");
      logits = session.eval([id], { out: logits });
      await breathe();
    }
  }
}

/** The log-probability of `id` and the `top` most likely tokens, from (masked) logits. */
export function logprobsOf(
  logits: Float32Array,
  id: number,
  top: number,
): { logprob: number; topLogprobs: TokenLogprob[] } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const logZ = max + Math.log(sum);
  const best: TokenLogprob[] = [];
  if (top > 0) {
    // a small sorted list: the vocabulary is scanned once, each entry compared with the worst kept
    for (let i = 0; i < logits.length; i++) {
      const l = logits[i];
      if (best.length === top && l <= best[top - 1].logprob) continue;
      let at = best.length < top ? best.length : top - 1;
      if (best.length < top) best.push({ id: i, logprob: l });
      while (at > 0 && best[at - 1].logprob < l) {
        best[at] = best[at - 1];
        at--;
      }
      best[at] = { id: i, logprob: l };
    }
    for (const b of best) b.logprob -= logZ;
  }
  return { logprob: logits[id] - logZ, topLogprobs: best };
}

/** Yields to the event loop so HTTP handlers and aborts run between steps. */
function breathe(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function request(job: Job): EngineRequest {
  let iterated = false;
  return {
    result: job.result,
    [Symbol.asyncIterator](): AsyncIterator<EngineToken> {
      if (iterated) throw new DeltaqError("an engine request can be iterated only once");
      iterated = true;
      return {
        async next(): Promise<IteratorResult<EngineToken>> {
          while (true) {
            const token = job.tokens.shift();
            if (token) return { done: false, value: token };
            if (job.done) {
              if (job.error !== undefined) throw job.error;
              return { done: true, value: undefined };
            }
            await job.changed();
          }
        },
        return(): Promise<IteratorResult<EngineToken>> {
          job.abandoned = true;
          return Promise.resolve({ done: true, value: undefined });
        },
      };
    },
  };
}
