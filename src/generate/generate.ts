/**
 * Text generation on a session: bring the session to the prompt (reusing whatever prefix it
 * already holds), then sample token by token, streaming decoded text split into thinking and
 * answer, until an end-of-generation token, a stop string, the token limit, the context end or an
 * abort.
 *
 *   prompt tokens → syncPrompt (reuse / rollback / reset, then eval) → logits
 *   loop: Sampler → token → StreamDecoder → StopStringFilter → ThinkingSplitter → chunks
 */
import { ContextFullError, DeltaqError } from "../errors.ts";
import type { Session } from "../model/session.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { type ResponseFormat, responseFormatConstraint } from "./constraint.ts";
import { Sampler, type SamplerOptions } from "./sampler.ts";
import { StopStringFilter, ThinkingSplitter } from "./stream.ts";

export interface GenerateOptions extends SamplerOptions {
  /** Most tokens to generate (default: until end of generation or the context is full). */
  maxTokens?: number;
  /** Strings that end generation; they are not part of the output. */
  stop?: string[];
  /** Stops generation (the result's stopReason is "abort"). */
  signal?: AbortSignal;
  /** Continue this session (multi-turn) instead of a fresh one. */
  session?: Session;
  /** Called while the prompt is evaluated, with tokens done and total. */
  onPromptProgress?: (done: number, total: number) => void;
  /**
   * Structured output, in OpenAI's `response_format` shape: `{type: "json_object"}` or
   * `{type: "json_schema", json_schema: {schema}}` keep the answer to JSON (that schema) while
   * sampling, so it always parses and validates unless the token limit cuts it short. With
   * thinking on, the thinking is free and the JSON starts after it.
   */
  responseFormat?: ResponseFormat;
}

/** A piece of generated text. */
export interface GenerationChunk {
  text: string;
  /** True for reasoning inside `<think>…</think>`, false for the answer. */
  thinking: boolean;
}

export type StopReason = "eog" | "stop" | "length" | "context" | "abort";

export interface GenerationResult {
  /** The answer (thinking excluded). */
  text: string;
  /** The reasoning, without its tags ("" when the model did not think). */
  thinking: string;
  /** Ids of the generated tokens (the end-of-generation token included when one ended it). */
  tokens: number[];
  stopReason: StopReason;
  /** The stop string that ended generation, when stopReason is "stop". */
  stopString?: string;
  promptTokens: number;
  /** Prompt tokens actually evaluated: the rest were already in the session. */
  promptTokensEvaluated: number;
  generatedTokens: number;
  timings: {
    /** Prompt evaluation, ms. */
    promptMs: number;
    /** From the call to the first sampled token, ms. */
    firstTokenMs: number;
    /** Sampling and evaluating the generated tokens, ms. */
    generateMs: number;
    promptTokensPerSecond: number;
    tokensPerSecond: number;
  };
}

/** An async iterable of chunks; `result` settles when generation ends (iterate to drive it). */
export interface Generation extends AsyncIterable<GenerationChunk> {
  readonly result: Promise<GenerationResult>;
}

/** What a generation needs besides the session. */
export interface GenerationContext {
  tokenizer: Tokenizer;
  nVocab: number;
}

/**
 * Brings `session` to exactly `tokens` and returns the last token's logits. The longest common
 * prefix with what the session holds is reused; if the session holds more than that prefix, it
 * rolls back to its checkpoint when that lies within the prefix, else starts over. When
 * `checkpointAt` is given (and past the reused part), the session saves a checkpoint there — the
 * end of a chat's history, where the next turn's rendering may start to differ.
 */
export function syncPrompt(
  session: Session,
  tokens: ArrayLike<number>,
  checkpointAt: number | undefined,
  onProgress?: (done: number, total: number) => void,
): { logits: Float32Array; evaluated: number } {
  if (tokens.length === 0) throw new DeltaqError("the prompt is empty");
  if (tokens.length > session.contextLength) {
    throw new ContextFullError(
      `the prompt has ${tokens.length} tokens, more than the context length ${session.contextLength}`,
      tokens.length,
      session.contextLength,
    );
  }
  const held = session.tokens;
  let common = 0;
  while (common < held.length && common < tokens.length && held[common] === tokens[common]) common++;
  // The last prompt token must be evaluated to get its logits.
  const reusable = Math.min(common, tokens.length - 1);
  if (reusable < session.position) {
    const cp = session.checkpointPosition;
    if (cp !== undefined && cp <= reusable) session.rollback();
    else session.reset();
  }
  let from = session.position;
  const startPos = from;
  const total = tokens.length - from;
  let logits: Float32Array | undefined;
  const evalRange = (end: number) => {
    // Chunks keep progress reporting (and Ctrl-C between chunks) responsive on long prompts.
    const chunk = onProgress ? 128 : end - from;
    while (from < end) {
      const to = Math.min(end, from + chunk);
      logits = session.eval(Array.prototype.slice.call(tokens, from, to));
      from = to;
      onProgress?.(from - startPos, total);
    }
  };
  if (checkpointAt !== undefined && checkpointAt > from && checkpointAt < tokens.length) {
    evalRange(checkpointAt);
    session.checkpoint();
  }
  evalRange(tokens.length);
  return { logits: logits!, evaluated: total };
}

/** Yields to the event loop so signal handlers and aborts get a chance to run between tokens. */
function breathe(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Generates from prepared prompt tokens on `session`. `startInThinking` says the prompt already
 * opened a `<think>` block (the Qwen3.5 chat template does when thinking is on).
 */
export function generateTokens(
  ctx: GenerationContext,
  session: Session,
  promptTokens: number[],
  opts: GenerateOptions & { startInThinking?: boolean; checkpointAt?: number; ownsSession?: boolean },
): Generation {
  const maxTokens = opts.maxTokens ?? Infinity;
  if (!(maxTokens === Infinity || (Number.isInteger(maxTokens) && maxTokens >= 0))) {
    throw new DeltaqError(`maxTokens must be a non-negative integer, got ${opts.maxTokens}`);
  }
  const sampler = new Sampler(ctx.nVocab, opts);
  const constraint = responseFormatConstraint(ctx.tokenizer, opts.responseFormat, { afterThinking: opts.startInThinking });
  const stops = new StopStringFilter(opts.stop ?? []);
  const splitter = new ThinkingSplitter({ startInThinking: opts.startInThinking });
  const decoder = ctx.tokenizer.decoder({ special: false });

  let resolveResult!: (r: GenerationResult) => void;
  let rejectResult!: (e: unknown) => void;
  const result = new Promise<GenerationResult>((res, rej) => {
    resolveResult = res;
    rejectResult = rej;
  });
  result.catch(() => {}); // reported through iteration; avoid unhandled-rejection noise

  async function* run(): AsyncGenerator<GenerationChunk> {
    const start = performance.now();
    let answer = "", thinking = "";
    const generated: number[] = [];
    // Leaving the loop any other way (the consumer stopped iterating) counts as an abort.
    let stopReason: StopReason = "abort";
    let stopString: string | undefined;
    let promptMs = 0, firstTokenMs = 0, genStart = 0, evaluated = 0;
    const emitSplit = function* (split: { thinking: string; answer: string }): Generator<GenerationChunk> {
      if (split.thinking) {
        thinking += split.thinking;
        yield { text: split.thinking, thinking: true };
      }
      if (split.answer) {
        answer += split.answer;
        yield { text: split.answer, thinking: false };
      }
    };
    const emit = (piece: string) => emitSplit(splitter.push(piece));
    const finish = () => {
      const generateMs = genStart ? performance.now() - genStart : 0;
      resolveResult({
        text: answer,
        thinking,
        tokens: generated,
        stopReason,
        stopString,
        promptTokens: promptTokens.length,
        promptTokensEvaluated: evaluated,
        generatedTokens: generated.length,
        timings: {
          promptMs,
          firstTokenMs,
          generateMs,
          promptTokensPerSecond: promptMs > 0 ? evaluated / (promptMs / 1000) : 0,
          tokensPerSecond: generateMs > 0 ? generated.length / (generateMs / 1000) : 0,
        },
      });
    };

    if (opts.signal?.aborted) throw new DeltaqError("generation was aborted before it started");
    const synced = syncPrompt(session, promptTokens, opts.checkpointAt, opts.onPromptProgress);
    evaluated = synced.evaluated;
    promptMs = performance.now() - start;
    sampler.accept(promptTokens);
    let logits = synced.logits;
    genStart = performance.now();
    try {
      while (true) {
        if (generated.length >= maxTokens) {
          stopReason = "length";
          break;
        }
        if (opts.signal?.aborted) {
          stopReason = "abort";
          break;
        }
        constraint?.mask(logits);
        const id = sampler.sample(logits);
        if (generated.length === 0) firstTokenMs = performance.now() - start;
        generated.push(id);
        if (ctx.tokenizer.isEndOfGeneration(id)) {
          stopReason = "eog";
          break;
        }
        constraint?.accept(id);
        const piece = stops.push(decoder.push(id));
        yield* emit(piece.text);
        if (piece.stop !== undefined) {
          stopReason = "stop";
          stopString = piece.stop;
          break;
        }
        if (session.position >= session.contextLength) {
          stopReason = "context";
          break;
        }
        logits = session.eval([id], { out: logits });
        await breathe();
      }
      if (stopReason !== "stop") yield* emit(stops.push(decoder.flush()).text + stops.flush());
      yield* emitSplit(splitter.flush());
    } finally {
      finish();
      if (opts.ownsSession) session.dispose();
    }
  }

  let started = false;
  const iterate = () => {
    if (started) throw new DeltaqError("a generation can be iterated only once");
    started = true;
    const it = run();
    return {
      next: async () => {
        try {
          return await it.next();
        } catch (e) {
          rejectResult(e);
          throw e;
        }
      },
      return: async (v?: unknown) => {
        await it.return(undefined);
        return { done: true as const, value: v as GenerationChunk };
      },
    };
  };
  return {
    /** Awaiting the result without iterating runs the generation and drops the chunks. */
    get result() {
      if (!started) {
        const it = iterate();
        (async () => {
          try {
            while (!(await it.next()).done) { /* drain */ }
          } catch { /* rejected through `result` */ }
        })();
      }
      return result;
    },
    [Symbol.asyncIterator]: iterate,
  };
}
