/**
 * The default CLI command: one-shot prompts (`-p`, `-f`, `-p -`), `--json`, and interactive
 * multi-turn chat (`-i`). The completion streams to stdout; statistics and progress go to stderr.
 * Ctrl-C stops the current generation (a second one exits); the terminal is left clean.
 */
import type { ChatMessage } from "../chat/template.ts";
import { ContextFullError, DeltaqError } from "../errors.ts";
import type { GenerateOptions, Generation, GenerationResult } from "../generate/generate.ts";
import { DEFAULT_MODEL, formatHfRef, parseHfRef, resolveModel } from "../hub/download.ts";
import { type LoadOptions, Model } from "../model/model.ts";
import type { Session } from "../model/session.ts";
import { cacheTypeFlag, type ParsedFlags } from "./args.ts";
import { formatBytes } from "./info.ts";
import { ProgressBar } from "./progress.ts";

const encoder = new TextEncoder();
const DIM = "\x1b[2m", RESET = "\x1b[0m";

function write(stream: typeof Deno.stdout | typeof Deno.stderr, text: string): void {
  const bytes = encoder.encode(text);
  let at = 0;
  while (at < bytes.length) at += stream.writeSync(bytes.subarray(at));
}

/** Reads all of stdin as text. */
async function readStdin(): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const c of Deno.stdin.readable) chunks.push(c);
  return new TextDecoder().decode(await new Blob(chunks as BlobPart[]).arrayBuffer());
}

async function readPrompt(flags: ParsedFlags): Promise<string | undefined> {
  if (flags.prompt !== undefined && flags.file !== undefined) throw new DeltaqError("give the prompt with -p or -f, not both");
  if (flags.prompt === "-") return await readStdin();
  if (typeof flags.prompt === "string") return flags.prompt;
  if (typeof flags.file === "string") {
    try {
      return await Deno.readTextFile(flags.file);
    } catch (e) {
      const why = e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message;
      throw new DeltaqError(`${flags.file}: cannot read the prompt file: ${why}`);
    }
  }
  return undefined;
}

/** The model file: -m, --hf, or the default Qwen3.5-4B download. */
export async function modelPath(flags: ParsedFlags, signal: AbortSignal): Promise<string> {
  if (flags.model !== undefined && flags.hf !== undefined) throw new DeltaqError("give the model with -m or --hf, not both");
  if (typeof flags.model === "string") return flags.model;
  const ref = typeof flags.hf === "string" ? parseHfRef(flags.hf) : { ...DEFAULT_MODEL };
  if (flags.hf === undefined) console.error(`deltaq: no -m given; using ${formatHfRef(ref)} (downloaded once into the Hugging Face cache)`);
  const bar = new ProgressBar(formatHfRef(ref));
  try {
    return await resolveModel(ref, { signal, onProgress: (done, total, file) => bar.update(done, total, file) });
  } finally {
    bar.finish();
  }
}

function samplingOptions(flags: ParsedFlags): GenerateOptions {
  const n = flags.nPredict as number | undefined;
  return {
    maxTokens: n === undefined || n < 0 ? undefined : n,
    temperature: flags.temp as number | undefined,
    topK: flags.topK as number | undefined,
    topP: flags.topP as number | undefined,
    minP: flags.minP as number | undefined,
    repeatPenalty: flags.repeatPenalty as number | undefined,
    presencePenalty: flags.presencePenalty as number | undefined,
    frequencyPenalty: flags.frequencyPenalty as number | undefined,
    seed: flags.seed as number | undefined,
    stop: flags.stop as string[] | undefined,
  };
}

/** Ctrl-C handling: the first press aborts the running generation, a second one exits. */
class Interrupts {
  #controller = new AbortController();
  #pressed = 0;
  readonly #handler = () => {
    this.#pressed++;
    if (this.#pressed > 1) {
      write(Deno.stderr, `${Deno.stderr.isTerminal() ? RESET : ""}\n`);
      Deno.exit(130);
    }
    this.#controller.abort();
  };

  constructor() {
    Deno.addSignalListener("SIGINT", this.#handler);
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** A fresh signal for the next turn (interactive mode). */
  rearm(): void {
    this.#pressed = 0;
    if (this.#controller.signal.aborted) this.#controller = new AbortController();
  }

  dispose(): void {
    Deno.removeSignalListener("SIGINT", this.#handler);
  }
}

function statsLine(r: GenerationResult): string {
  const t = r.timings;
  const reused = r.promptTokens - r.promptTokensEvaluated;
  return `deltaq: prompt ${r.promptTokens} tokens${reused ? ` (${reused} reused)` : ""} in ${(t.promptMs / 1000).toFixed(2)} s` +
    ` (${t.promptTokensPerSecond.toFixed(1)} tok/s), generated ${r.generatedTokens} tokens in ${(t.generateMs / 1000).toFixed(2)} s` +
    ` (${t.tokensPerSecond.toFixed(1)} tok/s), first token after ${(t.firstTokenMs / 1000).toFixed(2)} s, stop: ${r.stopReason}`;
}

/** Streams a generation to the terminal; returns its result. */
async function stream(gen: Generation, flags: ParsedFlags): Promise<GenerationResult> {
  const tty = Deno.stdout.isTerminal();
  let inThinking = false;
  let thinkingNoted = false;
  for await (const chunk of gen) {
    if (flags.json) continue;
    if (chunk.thinking) {
      if (flags.showThinking) {
        // on a terminal thinking is dimmed inline; when piped it goes to stderr, keeping stdout the answer
        if (tty) write(Deno.stdout, (inThinking ? "" : DIM) + chunk.text);
        else write(Deno.stderr, chunk.text);
        inThinking = true;
      } else if (!thinkingNoted && Deno.stderr.isTerminal()) {
        write(Deno.stderr, `${DIM}(thinking…)${RESET}\r`);
        thinkingNoted = true;
      }
      continue;
    }
    if (inThinking) {
      if (tty) write(Deno.stdout, `${RESET}\n\n`);
      else write(Deno.stderr, "\n");
      inThinking = false;
    }
    if (thinkingNoted) {
      write(Deno.stderr, "\x1b[2K");
      thinkingNoted = false;
    }
    write(Deno.stdout, chunk.text);
  }
  if (inThinking && tty) write(Deno.stdout, RESET);
  if (thinkingNoted) write(Deno.stderr, "\x1b[2K");
  return await gen.result;
}

/** A progress bar for long prompts on a terminal (short ones finish before it would help). */
function promptProgress(): ((done: number, total: number) => void) | undefined {
  if (!Deno.stderr.isTerminal()) return undefined;
  const bar = new ProgressBar("prompt", { format: (n) => `${n} tok` });
  return (done, total) => {
    if (total < 256) return;
    bar.update(done, total);
    if (done >= total) bar.clear();
  };
}

/** Threads, context length (`-c 0`: the trained context) and KV cache types from the flags. */
export function loadOptions(flags: ParsedFlags): LoadOptions {
  const ctx = flags.ctx as number | undefined;
  return {
    threads: flags.threads as number | undefined,
    contextLength: ctx === 0 ? "max" : ctx,
    cacheTypeK: cacheTypeFlag(flags.cacheTypeK, "--cache-type-k"),
    cacheTypeV: cacheTypeFlag(flags.cacheTypeV, "--cache-type-v"),
  };
}

/** Loads the model, with a status line on a terminal (mapping reads the whole file from disk). */
export function loadWithStatus(path: string, flags: ParsedFlags): Model {
  const tty = Deno.stderr.isTerminal();
  if (tty) {
    let size = "";
    try {
      size = ` (${formatBytes(Deno.statSync(path).size)})`;
    } catch {
      // the loader reports a missing file
    }
    write(Deno.stderr, `deltaq: loading ${path}${size}…`);
  }
  try {
    return Model.load(path, loadOptions(flags));
  } finally {
    if (tty) write(Deno.stderr, "\r\x1b[2K");
  }
}

export async function runGenerate(flags: ParsedFlags): Promise<number> {
  if (flags.raw && flags.chat) throw new DeltaqError("--raw and --chat cannot be combined");
  if (flags.think && flags.noThink) throw new DeltaqError("--think and --no-think cannot be combined");
  if (flags.interactive && flags.json) throw new DeltaqError("--json is for one-shot prompts, not -i");
  if (flags.interactive && flags.raw) throw new DeltaqError("-i is a chat; it cannot be combined with --raw");
  const prompt = await readPrompt(flags);
  if (prompt === undefined && !flags.interactive) {
    throw new DeltaqError("no prompt: give one with -p TEXT, -p - (stdin) or -f FILE, or chat with -i (see --help)");
  }
  const interrupts = new Interrupts();
  try {
    const path = await modelPath(flags, interrupts.signal);
    const model = loadWithStatus(path, flags);
    try {
      const hasTemplate = model.weights.metadata.has("tokenizer.chat_template");
      const chatMode = !flags.raw && (flags.chat || hasTemplate || flags.interactive);
      const enableThinking = flags.noThink ? false : flags.think ? true : undefined;
      const sampling = samplingOptions(flags);
      if (flags.interactive) return await interactive(model, flags, sampling, enableThinking, prompt, interrupts);

      const messages: ChatMessage[] = [];
      if (typeof flags.system === "string") messages.push({ role: "system", content: flags.system });
      messages.push({ role: "user", content: prompt! });
      const opts = { ...sampling, signal: interrupts.signal, onPromptProgress: promptProgress() };
      if (!chatMode && flags.system !== undefined) throw new DeltaqError("--system needs chat mode (drop --raw)");
      const gen = chatMode
        ? model.chat(messages, { ...opts, enableThinking })
        : model.generate(prompt!, { ...opts, special: !!flags.special });
      let result: GenerationResult;
      try {
        result = await stream(gen, flags);
      } catch (e) {
        if (e instanceof ContextFullError) throw new DeltaqError(`${e.message}; ${longerContextHint(model)}`);
        throw e;
      }
      if (flags.json) {
        console.log(JSON.stringify({
          model: path,
          mode: chatMode ? "chat" : "raw",
          text: result.text,
          thinking: result.thinking,
          stopReason: result.stopReason,
          tokens: { prompt: result.promptTokens, promptEvaluated: result.promptTokensEvaluated, generated: result.generatedTokens },
          generatedIds: result.tokens,
          timings: result.timings,
          memory: model.contextMemory(),
        }));
      } else {
        if (Deno.stdout.isTerminal() || result.text.length > 0) write(Deno.stdout, "\n");
        console.error(statsLine(result));
        if (result.stopReason === "context") console.error(`deltaq: the reply stopped at the end of the context (${model.info.contextLength} tokens); ${longerContextHint(model)}`);
      }
      return result.stopReason === "abort" ? 130 : 0;
    } finally {
      model.dispose();
    }
  } finally {
    interrupts.dispose();
  }
}

/** How to get a longer context, for messages about a full one. */
function longerContextHint(model: Model): string {
  const trained = model.config.nCtxTrain;
  const now = model.info.contextLength;
  if (trained && trained > now) return `give a longer context with -c N (up to the model's ${trained}; -c 0 takes all of it)`;
  return `the model's trained context is ${now} tokens`;
}

/** Tokens left for a reply when deciding whether a conversation still fits. */
function replyRoom(contextLength: number, nPredict: number | undefined): number {
  return Math.min(nPredict !== undefined && nPredict >= 0 ? nPredict : 1024, Math.floor(contextLength / 4));
}

/**
 * Multi-turn chat on stdin/stdout; the session (KV cache and DeltaNet state) carries across turns.
 * When the conversation outgrows the context, it says so and offers a way on: drop the oldest
 * turns and re-process the rest, or start over (on a terminal it asks; with piped input it drops).
 * `/reset` starts over at any time.
 */
async function interactive(
  model: Model,
  flags: ParsedFlags,
  sampling: GenerateOptions,
  enableThinking: boolean | undefined,
  firstPrompt: string | undefined,
  interrupts: Interrupts,
): Promise<number> {
  const session: Session = model.createSession();
  const messages: ChatMessage[] = [];
  const system = typeof flags.system === "string" ? flags.system : undefined;
  if (system !== undefined) messages.push({ role: "system", content: system });
  const firstTurn = system !== undefined ? 1 : 0;
  const contextLength = model.info.contextLength;
  const room = replyRoom(contextLength, flags.nPredict as number | undefined);
  const tty = Deno.stdin.isTerminal();
  const lines = readLines();
  const ask = async (question: string): Promise<string | undefined> => {
    write(Deno.stderr, question);
    const line = await lines.next();
    return line.done ? undefined : line.value.trim().toLowerCase();
  };
  const startOver = () => {
    messages.splice(firstTurn);
    session.reset();
  };
  const promptTokens = () => model.renderChat(messages, { enableThinking }).tokens.length;
  console.error(
    `deltaq: chatting with ${model.info.name ?? model.info.file} (context ${contextLength} tokens); an empty line or Ctrl-D ends, ` +
      `Ctrl-C stops a reply, /reset starts over`,
  );
  let next = firstPrompt;
  while (true) {
    if (next === undefined) {
      if (tty) write(Deno.stdout, "\n> ");
      const line = await lines.next();
      if (line.done) break;
      next = line.value;
    }
    const text = next.trim();
    next = undefined;
    if (text === "" || text === "/exit" || text === "/quit") break;
    if (text === "/reset") {
      startOver();
      console.error("deltaq: started over");
      continue;
    }
    messages.push({ role: "user", content: text });

    // Does the conversation, with room for a reply, still fit?
    let tokens = promptTokens();
    if (tokens + room > contextLength) {
      const alone = (() => {
        const kept = messages.splice(firstTurn, messages.length - 1 - firstTurn);
        const n = promptTokens();
        messages.splice(firstTurn, 0, ...kept);
        return n;
      })();
      if (alone + room > contextLength) {
        messages.pop();
        console.error(
          `deltaq: this message alone takes ${alone} tokens, too many for a context of ${contextLength} with room for a reply; ` +
            `send a shorter one, or restart with a longer context (${longerContextHint(model)})`,
        );
        continue;
      }
      const turns = messages.length - 1 - firstTurn;
      console.error(
        `deltaq: the conversation has outgrown the context: with this message it takes ${tokens} tokens, ` +
          `and the context holds ${contextLength} (${room} kept free for the reply).`,
      );
      let choice = "d";
      if (tty) {
        const answer = await ask(`  [d] drop the oldest turns and re-process the rest (${turns} earlier messages now)\n  [s] start over with just this message\n  [q] quit\nchoice [d/s/q]: `);
        if (answer === undefined || answer.startsWith("q")) break;
        choice = answer.startsWith("s") ? "s" : "d";
      }
      if (choice === "s") {
        const last = messages.pop()!;
        startOver();
        messages.push(last);
        console.error("deltaq: started over");
      } else {
        let dropped = 0;
        // a user message and the reply to it at a time, until the rest fits with room to reply
        while (tokens + room > contextLength && messages.length - firstTurn > 1) {
          const drop = messages[firstTurn + 1]?.role === "assistant" ? 2 : 1;
          messages.splice(firstTurn, Math.min(drop, messages.length - 1 - firstTurn));
          dropped++;
          tokens = promptTokens();
        }
        console.error(`deltaq: dropped the ${dropped} oldest turn${dropped === 1 ? "" : "s"}; re-processing ${tokens} tokens`);
      }
    }

    interrupts.rearm();
    const gen = model.chat(messages, { ...sampling, enableThinking, session, signal: interrupts.signal, onPromptProgress: promptProgress() });
    try {
      const result = await stream(gen, flags);
      write(Deno.stdout, "\n");
      messages.push({ role: "assistant", content: result.text, reasoning_content: result.thinking || undefined });
      if (Deno.stderr.isTerminal()) console.error(`${DIM}${statsLine(result)}${RESET}`);
      if (result.stopReason === "context") {
        console.error(`deltaq: the reply stopped at the end of the context (${contextLength} tokens); the next message will offer to drop old turns or start over`);
      }
    } catch (e) {
      messages.pop();
      if (!(e instanceof DeltaqError)) throw e;
      console.error(`deltaq: ${e.message}`);
    }
  }
  session.dispose();
  return 0;
}

/** Lines of stdin, decoded incrementally. */
async function* readLines(): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of Deno.stdin.readable) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, nl).replace(/\r$/, "");
      buffered = buffered.slice(nl + 1);
    }
  }
  buffered += decoder.decode();
  if (buffered) yield buffered;
}
