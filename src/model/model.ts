/**
 * A loaded Qwen3.5 model: its mapped weights, a kernel context (worker pool), activation buffers,
 * and the sessions created from it.
 */
import { type ChatMessage, ChatTemplate, type ChatTool } from "../chat/template.ts";
import { DeltaqError } from "../errors.ts";
import { type GenerateOptions, type Generation, generateTokens } from "../generate/generate.ts";
import { promptOpensThinking } from "../generate/stream.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";
import {
  allocate,
  type CacheType,
  CommandList,
  Context,
  performanceCores,
  type ProfileEntry,
  type Region,
} from "../native/kernels.ts";
import type { Qwen35Config } from "./config.ts";
import { Activations, type Batch, encodeForward, type LayerState, type LogitRows, singleSequence } from "./qwen35.ts";
import { RopeSchedule } from "./rope.ts";
import {
  type CacheTypes,
  checkCacheTypes,
  type DecodeStep,
  F16_CACHE,
  kvCacheBytes,
  recurrentStateBytes,
  Session,
  type SessionHost,
} from "./session.ts";
import { freeMappings, loadWeights, type ModelWeights, repackWeights } from "./weights.ts";
import { fnv1a } from "../util/hash.ts";

export interface LoadOptions {
  /** Worker threads for the kernels (default: the physical performance cores, `performanceCores`). */
  threads?: number;
  /**
   * Tokens a session can hold (default 4096, at most the trained context); `"max"` means the
   * model's trained context (the CLI's `-c 0`, as in llama.cpp). Sessions hold memory only for
   * the tokens they have, whatever the context length.
   */
  contextLength?: number | "max";
  /**
   * Element types of the sessions' KV caches, like llama.cpp's `-ctk`/`-ctv`: "f16" (default),
   * "q8_0" (about half the memory) or "q4_0" (about a quarter). `createSession` may override them.
   */
  cacheTypeK?: CacheType;
  cacheTypeV?: CacheType;
  /** Tokens per forward batch when evaluating prompts (default 512). */
  batchSize?: number;
}

export interface ChatOptions {
  /** Thinking on or off (templates that support it; Qwen3.5 thinks by default). */
  enableThinking?: boolean;
  /** Tools offered to the model (OpenAI function format, passed to the template). */
  tools?: ChatTool[];
}

/** What a loaded model is: its hyper-parameters and layer schedule (Qwen35Config) plus the file and run settings. */
export interface ModelInfo extends Qwen35Config {
  name?: string;
  file: string;
  fileSize: number;
  /** Tokens a session of this model holds. */
  contextLength: number;
  /** The sessions' KV cache element types. */
  cacheTypeK: CacheType;
  cacheTypeV: CacheType;
  threads: number;
}

/** Memory a session of a given context length and cache types needs when full. */
export interface ContextMemory {
  contextLength: number;
  cacheTypeK: CacheType;
  cacheTypeV: CacheType;
  /** KV cache of every attention layer at the full context length. */
  kvCacheBytes: number;
  /** Conv and DeltaNet state, the same at any length. */
  recurrentBytes: number;
  /** Both. */
  totalBytes: number;
}

/** The memory a session needs at `contextLength` tokens with these cache types. */
export function contextMemory(cfg: Qwen35Config, contextLength: number, types: CacheTypes = F16_CACHE): ContextMemory {
  checkCacheTypes(cfg, types);
  const kv = kvCacheBytes(cfg, contextLength, types);
  const recurrent = recurrentStateBytes(cfg);
  return { contextLength, cacheTypeK: types.k, cacheTypeV: types.v, kvCacheBytes: kv, recurrentBytes: recurrent, totalBytes: kv + recurrent };
}

/** The context length `LoadOptions.contextLength` asks for: "max" means the trained context. */
export function resolveContextLength(requested: number | "max" | undefined, cfg: Qwen35Config): number {
  const ctxTrain = cfg.nCtxTrain || Infinity;
  if (requested === "max") {
    if (!cfg.nCtxTrain) throw new DeltaqError(`the model does not say its trained context length; give contextLength as a number`);
    return cfg.nCtxTrain;
  }
  const contextLength = requested ?? Math.min(DEFAULT_CONTEXT, ctxTrain);
  if (!Number.isInteger(contextLength) || contextLength < 1) {
    throw new DeltaqError(`contextLength must be a positive integer or "max", got ${requested}`);
  }
  if (contextLength > ctxTrain) {
    throw new DeltaqError(`contextLength ${contextLength} exceeds the model's trained context ${cfg.nCtxTrain}`);
  }
  return contextLength;
}

const DEFAULT_CONTEXT = 4096;
const DEFAULT_BATCH = 512;
/** Logits rows kept at once when every position's logits are requested (bounds memory). */
const LOGIT_BUFFER_BYTES = 64 << 20;

export class Model implements SessionHost {
  readonly info: ModelInfo;
  readonly config: Qwen35Config;
  readonly weights: ModelWeights;
  readonly fingerprint: number;
  readonly #context: Context;
  readonly #rope: RopeSchedule;
  readonly #batch: number;
  #activations: Activations;
  readonly #cmds = new CommandList();
  #decodeLists = new WeakMap<LayerState[], CommandList>();
  readonly #sessions = new Set<Session>();
  #disposed = false;
  #tokenizer: Tokenizer | undefined;
  #template: ChatTemplate | undefined;
  /**
   * One session's recurrent state, faulted in at load (as llama.cpp allocates its state with the
   * context) and recycled by disposed sessions, so a new session's first prompt does not pay for
   * fresh pages. Zeroed while spare.
   */
  #spareState: Region | undefined;
  /** The matrices repacked for the kernels (see repackWeights). */
  #repacked: Region | undefined;
  /** Set while a forward pass runs off the JS thread (`…Async`): the activations are in use. */
  #busy = false;
  /** The last off-thread pass queued: the next one starts when it has settled. */
  #lastAsync: Promise<void> = Promise.resolve();
  /** Wall time inside native exec calls and in JS preparing them, while profiling. */
  #profile: { execMs: number; jsMs: number; execs: number } | null = null;

  private constructor(weights: ModelWeights, opts: LoadOptions) {
    const cfg = weights.config;
    const threads = opts.threads ?? Math.min(performanceCores(), 64);
    if (!Number.isInteger(threads) || threads < 1 || threads > 64) {
      throw new DeltaqError(`threads must be an integer from 1 to 64, got ${threads}`);
    }
    const contextLength = resolveContextLength(opts.contextLength, cfg);
    const cacheTypes = checkCacheTypes(cfg, { k: opts.cacheTypeK ?? "f16", v: opts.cacheTypeV ?? "f16" });
    const batch = opts.batchSize ?? DEFAULT_BATCH;
    if (!Number.isInteger(batch) || batch < 1) throw new DeltaqError(`batchSize must be a positive integer, got ${batch}`);
    this.weights = weights;
    this.config = cfg;
    this.fingerprint = fingerprintOf(weights);
    this.#batch = Math.min(batch, contextLength);
    this.#context = new Context(threads);
    this.#rope = new RopeSchedule(cfg.nRot, cfg.ropeBase, cfg.ropeSections);
    try {
      this.#repacked = repackWeights(weights, this.#context);
      this.#spareState = allocate(recurrentStateBytes(cfg), { resident: true });
      this.#activations = new Activations(cfg, this.#batch, 1);
    } catch (e) {
      this.#spareState?.free();
      this.#repacked?.free();
      this.#context.free(); // else its worker threads outlive the failed load
      throw e;
    }
    this.info = {
      ...cfg,
      name: weights.metadata.string("general.name", undefined),
      file: weights.file,
      fileSize: weights.gguf.fileSize,
      contextLength,
      cacheTypeK: cacheTypes.k,
      cacheTypeV: cacheTypes.v,
      threads,
    };
  }

  static load(path: string, opts: LoadOptions = {}): Model {
    const weights = loadWeights(path);
    try {
      return new Model(weights, opts);
    } catch (e) {
      freeMappings(weights);
      throw e;
    }
  }

  /**
   * A new, empty sequence. Its KV cache uses the model's cache types unless `cacheTypeK` /
   * `cacheTypeV` say otherwise.
   */
  createSession(opts: { cacheTypeK?: CacheType; cacheTypeV?: CacheType } = {}): Session {
    this.assertLive();
    const types = { k: opts.cacheTypeK ?? this.info.cacheTypeK, v: opts.cacheTypeV ?? this.info.cacheTypeV };
    const s = new Session(this, this.info.contextLength, () => this.#sessions.delete(s), types);
    this.#sessions.add(s);
    return s;
  }

  /** See SessionHost. */
  takeRecurrentState(): Region {
    const region = this.#spareState ?? allocate(recurrentStateBytes(this.config), { resident: true });
    this.#spareState = undefined;
    return region;
  }

  /** See SessionHost. */
  returnRecurrentState(region: Region): void {
    if (this.#disposed || this.#spareState) return region.free();
    region.bytes().fill(0);
    this.#spareState = region;
  }

  /**
   * Frees the recurrent state a closed session left for the next one to reuse (one session's
   * worth). The next new session then allocates its own. For callers that briefly held more
   * sessions than they will again (the benchmark's paired decode).
   */
  freeIdleMemory(): void {
    this.#spareState?.free();
    this.#spareState = undefined;
  }

  /** The memory a session of this model needs when its context is full (KV cache and recurrent state). */
  contextMemory(contextLength = this.info.contextLength): ContextMemory {
    return contextMemory(this.config, contextLength, { k: this.info.cacheTypeK, v: this.info.cacheTypeV });
  }

  /** The model's tokenizer (built from the GGUF metadata on first use). */
  get tokenizer(): Tokenizer {
    this.assertLive();
    return this.#tokenizer ??= Tokenizer.fromMetadata(this.weights.metadata);
  }

  /** The chat template from `tokenizer.chat_template`, or ChatML when the GGUF has none. */
  get chatTemplate(): ChatTemplate {
    this.assertLive();
    if (!this.#template) {
      const tok = this.tokenizer;
      const text = (id: number | undefined) => id === undefined ? "" : tok.tokenText(id);
      this.#template = new ChatTemplate(this.weights.metadata.string("tokenizer.chat_template", undefined), {
        origin: `${this.weights.file}: tokenizer.chat_template`,
        bosToken: text(tok.bosId),
        eosToken: text(tok.eosId),
      });
    }
    return this.#template;
  }

  /** Token ids of `text`; with `special`, control-token texts like `<|im_start|>` become those tokens. */
  tokenize(text: string, opts: { special?: boolean } = {}): number[] {
    return this.tokenizer.tokenize(text, { special: opts.special ?? false });
  }

  /** Text of token ids (control tokens rendered as their text unless `special: false`). */
  detokenize(ids: ArrayLike<number>, opts: { special?: boolean } = {}): string {
    return this.tokenizer.detokenize(ids, opts);
  }

  /**
   * Continues `prompt` (text, fed as is with no template, or token ids). Iterate the result for
   * text chunks; `await gen.result` for the full text, token counts and timings.
   */
  generate(prompt: string | ArrayLike<number>, opts: GenerateOptions & { special?: boolean } = {}): Generation {
    this.assertLive();
    const tokens = typeof prompt === "string" ? this.tokenize(prompt, { special: opts.special }) : Array.from(prompt);
    const session = opts.session ?? this.createSession();
    return generateTokens({ tokenizer: this.tokenizer, nVocab: this.config.nVocab }, session, tokens, {
      ...opts,
      ownsSession: !opts.session,
    });
  }

  /**
   * Replies to a conversation rendered with the model's chat template. Pass the same `session` on
   * every turn: only what changed since the last turn is evaluated (the previous reply as the
   * template re-renders it, and the new messages), never the earlier history.
   */
  chat(messages: ChatMessage[], opts: GenerateOptions & ChatOptions = {}): Generation {
    this.assertLive();
    const { tokens, historyTokens, opensThinking } = this.renderChat(messages, opts);
    const session = opts.session ?? this.createSession();
    return generateTokens({ tokenizer: this.tokenizer, nVocab: this.config.nVocab }, session, tokens, {
      ...opts,
      startInThinking: opensThinking,
      checkpointAt: historyTokens,
      ownsSession: !opts.session,
    });
  }

  /**
   * The prompt tokens of a conversation (message text never turns into control tokens), how many
   * of them are the history before the assistant header, and whether the prompt opens a think block.
   */
  renderChat(messages: ChatMessage[], opts: ChatOptions = {}): { text: string; tokens: number[]; historyTokens: number | undefined; opensThinking: boolean } {
    const tok = this.tokenizer;
    const render = (addGenerationPrompt: boolean) => {
      const r = this.chatTemplate.render(messages, {
        addGenerationPrompt,
        enableThinking: opts.enableThinking,
        tools: opts.tools,
        literalTokens: tok.controlTokenTexts,
      });
      return { text: r.text, tokens: tok.tokenize(r.text, { special: true, literalSpans: r.literalSpans }) };
    };
    const prompt = render(true);
    let historyTokens: number | undefined;
    try {
      const history = render(false).tokens;
      const isPrefix = history.length < prompt.tokens.length && history.every((t, i) => prompt.tokens[i] === t);
      if (isPrefix) historyTokens = history.length;
    } catch {
      // some templates cannot render a conversation without a generation prompt; no checkpoint then
    }
    return { text: prompt.text, tokens: prompt.tokens, historyTokens, opensThinking: promptOpensThinking(prompt.text) };
  }

  /** Runs the forward pass in batches; see SessionHost. */
  run(state: LayerState[], tokens: ArrayLike<number>, pos: number, allLogits: boolean, out: Float32Array): void {
    this.#drive(this.#promptPasses(state, tokens, pos, allLogits, out));
  }

  /** `run` with the native calls off the JS thread; see SessionHost. */
  runAsync(state: LayerState[], tokens: ArrayLike<number>, pos: number, allLogits: boolean, out: Float32Array): Promise<void> {
    return this.#driveAsync(this.#promptPasses(state, tokens, pos, allLogits, out));
  }

  /** One decode step of several sequences in one forward pass; see SessionHost. */
  decode(steps: DecodeStep[], outs: Float32Array[]): void {
    this.#drive(this.#decodePass(steps, outs));
  }

  /** `decode` with the native call off the JS thread; see SessionHost. */
  decodeAsync(steps: DecodeStep[], outs: Float32Array[]): Promise<void> {
    return this.#driveAsync(this.#decodePass(steps, outs));
  }

  /** Runs each command list a pass yields, on this thread. */
  #drive(passes: Generator<CommandList, void, void>): void {
    if (this.#busy) throw new DeltaqError("the model is busy with another forward pass (a serving engine's step)");
    for (let r = passes.next(); !r.done; r = passes.next()) this.#exec(r.value);
  }

  /**
   * Runs each command list a pass yields in a native call that does not block the JS thread
   * (FFI nonblocking), so a server keeps accepting and streaming while a prompt is evaluated.
   * Off-thread passes queue behind each other; a synchronous pass meanwhile is refused.
   */
  #driveAsync(passes: Generator<CommandList, void, void>): Promise<void> {
    const run = this.#lastAsync.then(() => this.#runAsync(passes));
    this.#lastAsync = run.catch(() => {});
    return run;
  }

  async #runAsync(passes: Generator<CommandList, void, void>): Promise<void> {
    this.assertLive();
    this.#busy = true;
    try {
      for (let r = passes.next(); !r.done; r = passes.next()) {
        await this.#context.execAsync(r.value);
        this.assertLive(); // disposed while the call ran
      }
    } finally {
      this.#busy = false;
      if (this.#disposed) this.#free();
    }
  }

  #exec(cmds: CommandList): void {
    const t1 = this.#profile ? performance.now() : 0;
    this.#context.exec(cmds);
    if (this.#profile) {
      this.#profile.execMs += performance.now() - t1;
      this.#profile.execs++;
    }
  }

  /** The command lists of a prompt (or one token) in batches; logits of the chosen rows into `out`. */
  *#promptPasses(
    state: LayerState[],
    tokens: ArrayLike<number>,
    pos: number,
    allLogits: boolean,
    out: Float32Array,
  ): Generator<CommandList, void, void> {
    const V = this.config.nVocab;
    let batch = this.#batch;
    if (allLogits) {
      batch = Math.max(1, Math.min(batch, Math.floor(LOGIT_BUFFER_BYTES / (V * 4))));
      if (this.#activations.logitRows < batch) this.#resizeActivations(batch);
    }
    const a = this.#activations;
    const tokenView = a.region.i32(a.tokens.offset, batch);
    const ropeView = a.region.f32(a.ropeTable.offset, batch * this.config.nRot);
    for (let done = 0; done < tokens.length; done += batch) {
      const n = Math.min(batch, tokens.length - done);
      for (let i = 0; i < n; i++) tokenView[i] = tokens[done + i];
      this.#rope.fill(ropeView, pos + done, n);
      const last = done + n === tokens.length;
      const rows = allLogits ? { first: 0, count: n } : last ? { first: n - 1, count: 1 } : null;
      const t0 = this.#profile ? performance.now() : 0;
      const cmds = this.#commandsFor(state, tokens.length === 1 && !allLogits, n, pos + done, rows);
      if (this.#profile) this.#profile.jsMs += performance.now() - t0;
      yield cmds;
      if (rows) {
        const logits = a.region.f32(a.logits.offset, rows.count * V);
        out.set(logits, allLogits ? done * V : 0);
      }
    }
  }

  /** The command list of one decode step over several sequences; each one's logits into its `outs` row. */
  *#decodePass(steps: DecodeStep[], outs: Float32Array[]): Generator<CommandList, void, void> {
    const V = this.config.nVocab, nRot = this.config.nRot;
    const n = steps.length;
    if (n > this.#batch) throw new DeltaqError(`a decode step of ${n} sequences exceeds the batch size ${this.#batch}`);
    if (this.#activations.logitRows < n) this.#resizeActivations(n);
    const a = this.#activations;
    const tokenView = a.region.i32(a.tokens.offset, n);
    const ropeView = a.region.f32(a.ropeTable.offset, n * nRot);
    const batch: Batch = { n, seqs: [], eachTokenAlone: true };
    steps.forEach((s, i) => {
      tokenView[i] = s.token;
      this.#rope.fill(ropeView.subarray(i * nRot), s.pos, 1);
      batch.seqs.push({ state: s.state, row: i, n: 1, pos: s.pos });
    });
    const t0 = this.#profile ? performance.now() : 0;
    encodeForward(this.#cmds.clear(), this.config, this.weights, this.#rope, a, batch, { first: 0, count: n });
    if (this.#profile) this.#profile.jsMs += performance.now() - t0;
    yield this.#cmds;
    const logits = a.region.f32(a.logits.offset, n * V);
    outs.forEach((o, i) => o.set(logits.subarray(i * V, (i + 1) * V)));
  }

  /** Starts timing every kernel command (adds a clock read per command; for benchmarks). */
  startProfile(): void {
    this.assertLive();
    this.#context.profile(true);
    this.#profile = { execMs: 0, jsMs: 0, execs: 0 };
  }

  /**
   * Stops profiling and returns the time per (model part, kernel op, weight type), plus the wall
   * time of the native calls (whose excess over the kernels' sum is FFI and dispatch overhead) and
   * the JS time spent encoding command lists.
   */
  stopProfile(): { entries: ProfileEntry[]; execMs: number; jsMs: number; execs: number } {
    this.assertLive();
    const entries = this.#context.readProfile();
    this.#context.profile(false);
    const totals = this.#profile ?? { execMs: 0, jsMs: 0, execs: 0 };
    this.#profile = null;
    return { entries, ...totals };
  }

  /**
   * The command list for a batch. A single decoded token reuses the list encoded for its session
   * the first time (only the position changes from token to token), which saves re-encoding
   * hundreds of commands per token.
   */
  #commandsFor(state: LayerState[], decode: boolean, n: number, pos: number, rows: LogitRows | null): CommandList {
    const encode = (cmds: CommandList) =>
      encodeForward(cmds, this.config, this.weights, this.#rope, this.#activations, singleSequence(state, n, pos), rows);
    if (!decode) {
      encode(this.#cmds.clear());
      return this.#cmds;
    }
    let cmds = this.#decodeLists.get(state);
    if (!cmds) {
      cmds = new CommandList();
      encode(cmds);
      this.#decodeLists.set(state, cmds);
    }
    return cmds.setPosition(pos);
  }

  #resizeActivations(logitRows: number): void {
    this.#decodeLists = new WeakMap(); // they point into the old activation region
    this.#activations.free();
    this.#activations = new Activations(this.config, this.#batch, logitRows);
  }

  assertLive(): void {
    if (this.#disposed) throw new DeltaqError("this model was disposed");
  }

  /**
   * Frees the model, its sessions and the file mapping. Calling it twice is harmless. During a
   * forward pass running off the JS thread the memory is freed when that pass ends.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (!this.#busy) this.#free();
  }

  #free(): void {
    for (const s of this.#sessions) s.dispose();
    this.#sessions.clear();
    this.#spareState?.free();
    this.#activations.free();
    this.#context.free();
    this.#repacked?.free();
    freeMappings(this.weights);
  }
}

/** FNV-1a over the file size and tensor table: equal for the same file, different across quantizations. */
function fingerprintOf(w: ModelWeights): number {
  let h = fnv1a(String(w.gguf.fileSize));
  for (const t of w.gguf.tensors) h = fnv1a(`${t.name}:${t.type}:${t.offset}:${t.shape.join("x")};`, h);
  return h;
}
