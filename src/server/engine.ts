/**
 * The inference engine under `deltaq serve`: a queue of jobs (prompt token ids in, sampled token
 * ids out) run on a fixed number of slots of one model. The HTTP layer renders chats, tokenizes,
 * detokenizes, applies stop strings and parses tool calls; the engine only evaluates and samples.
 *
 *   submit(job) → queue → a free slot (one Session each)
 *     start:  resume at the prompt cache's deepest checkpoint on the prompt (prompt_cache.ts)
 *     prompt: evaluate the rest in passes, stopping at checkpoint positions to save them
 *     decode: every decoding slot advances one token per step, all in one forward pass
 *   steps alternate between one prompt pass (of the oldest prompting slot) and one decode step,
 *   so a long prompt does not stall the replies being streamed.
 *
 * Exactness. A cached reply must equal an uncached one token for token, and a reply must not
 * depend on what else is decoded with it. The kernels give that if two rules hold: (1) a prompt
 * pass always holds at least two tokens — GEMM tiles compute each token the same way whatever the
 * batch, while a one-token pass takes the one-token kernels, which round differently; (2) only
 * state computed from prompts is reused — KV rows of generated tokens (decode kernels) are not,
 * and checkpoints are only taken inside prompts. Decode steps of several sequences use `matvec`,
 * the one-token kernels for every row (Session.decode), so batching changes no bits either.
 *
 * Native calls run off the JS thread (FFI `nonblocking`), so the HTTP server keeps accepting,
 * streaming and noticing disconnects while a pass runs.
 *
 * The interface (EngineJob, EngineRequest, EngineResult) is the contract with the HTTP layer,
 * described in /work/coord/server-interface.md; keep it stable.
 */
import { DeltaqError } from "../errors.ts";
import type { TokenConstraint } from "../generate/constraint.ts";
import { Sampler, type SamplerOptions } from "../generate/sampler.ts";
import type { Model } from "../model/model.ts";
import { Session } from "../model/session.ts";
import { PromptCache } from "./prompt_cache.ts";

export interface EngineOptions {
  /** Slots: sequences decoded together. More requests wait in the queue. Default 1. */
  parallel?: number;
  /** Prompt-cache budget in MiB (0 turns the cache off). Default: sized to the machine. */
  cacheMiB?: number;
  /** Long prompts also get a checkpoint every this many tokens. Default 2048. */
  checkpointInterval?: number;
  /**
   * Run native calls off the JS thread (FFI nonblocking; default true). Off, each prompt pass or
   * decode step blocks the event loop while it runs (kept for measuring the difference).
   */
  nonblocking?: boolean;
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
/** Tokens per prompt pass: alone, and while other slots decode (their next token waits for it). */
const PROMPT_PASS = 512;
const PROMPT_PASS_SHARED = 64;

/** The default prompt-cache budget: a quarter of the memory available now, 512 MiB to 16 GiB. */
export function defaultCacheMiB(): number {
  let availableMiB = 4096;
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/meminfo"));
    if (m) availableMiB = Number(m[1]) / 1024;
  } catch { /* not Linux: assume 4 GiB available */ }
  return Math.round(Math.min(16384, Math.max(512, availableMiB / 4)));
}

/** The engine's view of one job in flight. */
class Job {
  readonly tokens: EngineToken[] = [];
  #wake: (() => void) | undefined;
  done = false;
  error: unknown;
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
  /** Called once when the job ends (the engine detaches its abort listener). */
  onEnd: (() => void) | undefined;

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
    for (let i = 0; i < prompt.length; i++) {
      const t = prompt[i];
      if (!Number.isInteger(t) || t < 0 || t >= nVocab) {
        throw new DeltaqError(
          `prompt token ${t} (at index ${i}) is outside the vocabulary (0..${nVocab - 1})`,
        );
      }
    }
    this.prompt = Int32Array.from(prompt as ArrayLike<number>);
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
    this.#ended();
  }

  fail(e: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = e;
    this.reject(e);
    this.#ended();
  }

  #ended(): void {
    this.onEnd?.();
    this.onEnd = undefined;
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

/** One sequence of the engine: a session and the job it runs. */
class Slot {
  job: Job | null = null;
  /** Its first validKv positions hold KV rows computed from a prompt (reusable; see the top). */
  validKv = 0;
  /** Positions where the prompt passes stop, ascending: checkpoints, then the prompt's end. */
  stops: number[] = [];
  /** The sampled token the next decode step evaluates. */
  pending = -1;
  lastUsed = 0;
  readonly logits: Float32Array;
  /** Scratch for a constraint's mask (the logits stay as the model gave them). */
  readonly masked: Float32Array;

  constructor(readonly session: Session, nVocab: number) {
    this.logits = new Float32Array(nVocab);
    this.masked = new Float32Array(nVocab);
  }

  get decoding(): boolean {
    return this.pending >= 0;
  }
}

export class Engine {
  readonly model: Model;
  readonly parallel: number;
  readonly checkpointInterval: number;
  readonly nonblocking: boolean;
  /** The prompt cache (null when `cacheMiB` is 0). */
  readonly cache: PromptCache | null;
  readonly #queue: Job[] = [];
  readonly #slots: Slot[] = [];
  #running = false;
  #closed = false;
  #clock = 0;
  #lastStepDecoded = false;
  #stats = { requests: 0, promptTokens: 0, cachedTokens: 0, evaluatedTokens: 0, generatedTokens: 0 };

  constructor(model: Model, opts: EngineOptions = {}) {
    model.assertLive();
    const parallel = opts.parallel ?? 1;
    if (!Number.isInteger(parallel) || parallel < 1 || parallel > 64) {
      throw new DeltaqError(`parallel must be an integer from 1 to 64, got ${opts.parallel}`);
    }
    const interval = opts.checkpointInterval ?? DEFAULT_CHECKPOINT_INTERVAL;
    if (!Number.isInteger(interval) || interval < 2) {
      throw new DeltaqError(`checkpointInterval must be an integer ≥ 2, got ${opts.checkpointInterval}`);
    }
    const cacheMiB = opts.cacheMiB ?? defaultCacheMiB();
    if (!(Number.isFinite(cacheMiB) && cacheMiB >= 0)) {
      throw new DeltaqError(`cacheMiB must be a non-negative number, got ${opts.cacheMiB}`);
    }
    this.model = model;
    this.parallel = parallel;
    this.checkpointInterval = interval;
    this.nonblocking = opts.nonblocking ?? true;
    this.cache = cacheMiB > 0 ? new PromptCache(Math.floor(cacheMiB * 2 ** 20)) : null;
    try {
      for (let i = 0; i < parallel; i++) {
        this.#slots.push(new Slot(model.createSession(), model.config.nVocab));
      }
    } catch (e) {
      this.#release();
      throw e;
    }
  }

  /**
   * Queues a job. Throws a DeltaqError at once for a job that cannot run (empty or too long a
   * prompt, a token outside the vocabulary, bad options) or when the engine is closed.
   */
  submit(spec: EngineJob): EngineRequest {
    if (this.#closed) throw new DeltaqError("the engine is closed");
    const job = new Job(spec, this.model.config.nVocab, this.model.info.contextLength);
    this.#stats.requests++;
    if (spec.signal?.aborted) {
      job.finish("abort");
      return request(job, () => {});
    }
    const cancel = () => this.#cancel(job);
    if (spec.signal) {
      const signal = spec.signal;
      signal.addEventListener("abort", cancel, { once: true });
      job.onEnd = () => signal.removeEventListener("abort", cancel);
    }
    this.#queue.push(job);
    this.#kick();
    return request(job, cancel);
  }

  /** Counters and gauges for metrics. */
  stats(): EngineStats {
    const c = this.cache;
    return {
      slots: this.parallel,
      active: this.#slots.filter((s) => s.job).length,
      queued: this.#queue.length,
      ...this.#stats,
      cache: {
        entries: c?.entries ?? 0,
        bytes: c?.bytes ?? 0,
        capacityBytes: c?.capacityBytes ?? 0,
        hits: c?.hits ?? 0,
        misses: c?.misses ?? 0,
      },
    };
  }

  /** Aborts every job and frees the slots. The model stays loaded (it is the caller's). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const job of this.#queue.splice(0)) job.finish("abort");
    for (const slot of this.#slots) if (slot.job) this.#end(slot, "abort");
    this.cache?.clear();
    if (!this.#running) this.#release();
  }

  #release(): void {
    for (const s of this.#slots) s.session.dispose();
  }

  /** A queued job leaves the queue at once; a running one ends at the loop's next look. */
  #cancel(job: Job): void {
    job.abandoned = true;
    const i = this.#queue.indexOf(job);
    if (i >= 0) {
      this.#queue.splice(i, 1);
      job.finish("abort");
    }
  }

  #kick(): void {
    if (this.#running || this.#closed) return;
    this.#running = true;
    this.#loop()
      .catch((e) => {
        // a failure outside any one job's work: fail everything rather than hang
        for (const slot of this.#slots) this.#guard(slot, () => Promise.reject(e));
        for (const job of this.#queue.splice(0)) job.fail(e);
      })
      .finally(() => {
        this.#running = false;
        if (this.#closed) this.#release();
        else if (this.#queue.length > 0) this.#kick();
      });
  }

  /** Runs steps while there is work: admit queued jobs, then one prompt pass or one decode step. */
  async #loop(): Promise<void> {
    while (!this.#closed) {
      this.#admit();
      for (const slot of this.#slots) if (slot.job?.aborted) this.#end(slot, "abort");
      const prompting = this.#slots.filter((s) => s.job && !s.decoding);
      const decoding = this.#slots.filter((s) => s.job && s.decoding);
      if (prompting.length === 0 && decoding.length === 0) return;
      if (prompting.length > 0 && (decoding.length === 0 || this.#lastStepDecoded)) {
        // the oldest job first
        const slot = prompting.reduce((a, b) => (a.job!.submitted <= b.job!.submitted ? a : b));
        await this.#guard(slot, () => this.#promptPass(slot, decoding.length > 0));
        this.#lastStepDecoded = false;
      } else {
        await this.#decodeStep(decoding);
        this.#lastStepDecoded = true;
      }
      if (!this.nonblocking) await breathe();
    }
  }

  /** Runs a slot's work; an error fails that slot's job only. */
  async #guard(slot: Slot, work: () => void | Promise<void>): Promise<void> {
    try {
      await work();
    } catch (e) {
      const job = slot.job;
      slot.job = null;
      slot.pending = -1;
      slot.validKv = 0;
      job?.fail(e);
    }
  }

  /** Gives queued jobs to free slots: the slot already holding most of the prompt's KV rows. */
  #admit(): void {
    while (this.#queue.length > 0) {
      const free = this.#slots.filter((s) => !s.job);
      if (free.length === 0) return;
      const job = this.#queue.shift()!;
      const overlap = (s: Slot) => commonPrefix(s.session.tokens.subarray(0, s.validKv), job.prompt);
      const slot = free.reduce((a, b) => {
        const oa = overlap(a), ob = overlap(b);
        return ob > oa || (ob === oa && b.lastUsed < a.lastUsed) ? b : a;
      });
      slot.job = job;
      slot.lastUsed = ++this.#clock;
      job.started = performance.now();
      this.#guard(slot, () => this.#start(slot, job));
    }
  }

  /**
   * Brings a slot to the prompt's longest cached prefix and plans the prompt passes. The resume
   * point leaves at least two prompt tokens to evaluate (see the top: one-token passes round
   * differently), and so does every stop after it.
   */
  #start(slot: Slot, job: Job): void {
    const prompt = job.prompt, n = prompt.length;
    const session = slot.session;
    const hit = n >= 3 ? this.cache?.lookup(prompt, n - 2) : undefined;
    if (hit) {
      const keep = Math.min(hit.position, commonPrefix(session.tokens.subarray(0, slot.validKv), prompt));
      session.resume(prompt.subarray(0, hit.position), hit.recurrent, keep, hit.kv);
    } else {
      session.reset();
    }
    job.cachedTokens = session.position;
    slot.validKv = session.position;
    slot.pending = -1;
    const wanted = [...job.checkpoints];
    if (this.cache) {
      for (let p = this.checkpointInterval; p < n; p += this.checkpointInterval) wanted.push(p);
    } else {
      wanted.length = 0;
    }
    const stops: number[] = [];
    let last = session.position;
    for (const p of [...new Set(wanted)].sort((a, b) => a - b)) {
      if (p - last >= 2 && n - p >= 2) stops.push(last = p);
    }
    stops.push(n);
    slot.stops = stops;
  }

  /** Evaluates the next piece of a slot's prompt (up to its next stop). */
  async #promptPass(slot: Slot, othersDecoding: boolean): Promise<void> {
    const job = slot.job!, session = slot.session;
    const from = session.position, stop = slot.stops[0];
    const limit = othersDecoding ? PROMPT_PASS_SHARED : PROMPT_PASS;
    let to = Math.min(stop, from + limit);
    if (stop - to === 1) to--; // never leave a one-token piece
    const piece = job.prompt.subarray(from, to);
    if (this.nonblocking) await session.evalAsync(piece, { out: slot.logits });
    else session.eval(piece, { out: slot.logits });
    if (slot.job !== job) return; // the engine closed meanwhile
    slot.validKv = to;
    if (to < stop) return;
    slot.stops.shift();
    if (to < job.prompt.length) {
      this.#saveCheckpoint(slot, job.prompt.subarray(0, to));
      return;
    }
    // the prompt is in: sample the first token
    const evaluated = job.prompt.length - job.cachedTokens;
    this.#stats.promptTokens += job.prompt.length;
    this.#stats.cachedTokens += job.cachedTokens;
    this.#stats.evaluatedTokens += evaluated;
    job.promptEnd = performance.now();
    job.sampler.accept(job.prompt);
    if (job.aborted) return this.#end(slot, "abort");
    if (job.maxTokens === 0) return this.#end(slot, "length");
    this.#sample(slot);
  }

  #saveCheckpoint(slot: Slot, prefix: Int32Array): void {
    const cache = this.cache;
    if (!cache || cache.has(prefix)) return;
    const session = slot.session;
    cache.save(prefix, {
      recurrent: () => session.recurrentState(),
      kvRows: (from, to) => session.kvRows(from, to),
      kvRowLayout: session.kvRowLayout,
    });
  }

  /** One token for every decoding slot, in one forward pass. */
  async #decodeStep(slots: Slot[]): Promise<void> {
    const sessions = slots.map((s) => s.session);
    const tokens = slots.map((s) => s.pending);
    const outs = slots.map((s) => s.logits);
    try {
      if (this.nonblocking) await Session.decodeAsync(sessions, tokens, outs);
      else Session.decode(sessions, tokens, outs);
    } catch (e) {
      for (const slot of slots) await this.#guard(slot, () => Promise.reject(e));
      return;
    }
    for (const slot of slots) {
      if (!slot.job) continue; // closed meanwhile
      if (slot.job.aborted) this.#end(slot, "abort");
      else await this.#guard(slot, () => this.#sample(slot));
    }
  }

  /** Samples a slot's next token from its logits and hands it to the job. */
  #sample(slot: Slot): void {
    const job = slot.job!;
    let logits = slot.logits;
    const constraint = job.spec.constraint;
    if (constraint) {
      logits = slot.masked;
      logits.set(slot.logits);
      constraint.mask(logits);
    }
    const id = job.sampler.sample(logits);
    if (!job.firstToken) job.firstToken = performance.now();
    if (this.model.tokenizer.isEndOfGeneration(id)) return this.#end(slot, "eog");
    constraint?.accept(id);
    job.generated++;
    this.#stats.generatedTokens++;
    job.push(job.logprobs === undefined ? { id } : { id, ...logprobsOf(logits, id, job.logprobs) });
    if (job.generated >= job.maxTokens) return this.#end(slot, "length");
    if (slot.session.position >= slot.session.contextLength) return this.#end(slot, "context");
    slot.pending = id;
  }

  #end(slot: Slot, reason: FinishReason): void {
    const job = slot.job;
    slot.job = null;
    slot.pending = -1;
    slot.stops = [];
    job?.finish(reason);
  }
}

/** Length of the common prefix of two token arrays. */
function commonPrefix(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
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

function request(job: Job, cancel: () => void): EngineRequest {
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
          if (!job.done) cancel();
          return Promise.resolve({ done: true, value: undefined });
        },
      };
    },
  };
}
