/**
 * Shared by the server tests: the tiny synthetic model with the real Qwen3.5 chat template, a
 * server on 127.0.0.1 (a free port) that is always closed, a server-sent-events reader, and a
 * scripted engine that "generates" a given text (for replies a random model never writes, such
 * as tool calls).
 */
import { loadModel, type Model } from "../../mod.ts";
import { serve, type ServeOptions, type ServerHandle } from "../../src/server/server.ts";
import type { EngineJob, EngineRequest, EngineResult, EngineStats, EngineToken } from "../../src/server/engine.ts";
import { testModel } from "../models.ts";

const QWEN_TEMPLATE = Deno.readTextFileSync(new URL("../chat/qwen3.5-4b.chat_template.jinja", import.meta.url));

let shared: Promise<Model> | undefined;

/** The tiny model with the real template (loaded once per test file; never disposed while tests run). */
export function tinyChatModel(): Promise<Model> {
  shared ??= testModel({ preset: "tiny", chatTemplate: QWEN_TEMPLATE })
    .then((path) => loadModel(path, { threads: 2, contextLength: 2048 }));
  return shared;
}

/** Runs `fn` against a fresh server on 127.0.0.1 and closes it afterwards, whatever happens. */
export async function withServer(opts: ServeOptions, fn: (server: ServerHandle, model: Model) => Promise<void>): Promise<void> {
  const model = await tinyChatModel();
  const server = serve(model, { port: 0, ...opts });
  try {
    await fn(server, model);
  } finally {
    await server.close();
  }
}

/** The `data:` payloads of a server-sent-events body, parsed (the final `[DONE]` as the string). */
export async function readEvents(response: Response): Promise<unknown[]> {
  const text = await response.text();
  const events: unknown[] = [];
  for (const block of text.split("\n\n")) {
    if (!block.trim()) continue;
    if (!block.startsWith("data: ")) throw new Error(`not an SSE data line: ${JSON.stringify(block)}`);
    const data = block.slice("data: ".length);
    events.push(data === "[DONE]" ? data : JSON.parse(data));
  }
  return events;
}

export function post(server: ServerHandle, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/**
 * An engine that replies with fixed text: each job yields `tokenize(script)` one token per
 * `delayMs`, honouring maxTokens and the abort signal, with made-up logprobs when asked.
 */
export class ScriptedEngine {
  /** Jobs submitted, running, and ended early (aborted). */
  readonly counts = { requests: 0, active: 0, aborted: 0 };
  constructor(readonly model: Model, public script: string, readonly delayMs = 2) {}

  submit(job: EngineJob): EngineRequest {
    const counts = this.counts;
    counts.requests++;
    counts.active++;
    const ids = this.model.tokenize(this.script, { special: true });
    const max = job.maxTokens ?? Infinity;
    let resolve!: (r: EngineResult) => void;
    const result = new Promise<EngineResult>((r) => (resolve = r));
    const started = performance.now();
    const delayMs = this.delayMs;
    let finish: EngineResult["finishReason"] = "eog";
    let count = 0;
    async function* tokens(): AsyncGenerator<EngineToken> {
      try {
        for (const id of ids) {
          if (job.signal?.aborted) {
            finish = "abort";
            return;
          }
          if (count >= max) {
            finish = "length";
            return;
          }
          await new Promise((r) => setTimeout(r, delayMs));
          count++;
          yield job.logprobs === undefined ? { id } : { id, logprob: -0.5, topLogprobs: [{ id, logprob: -0.5 }].slice(0, job.logprobs) };
        }
      } finally {
        if (finish === "eog" && count < ids.length) finish = "abort"; // the consumer left early
        if (finish === "abort") counts.aborted++;
        counts.active--;
        resolve({
          finishReason: finish,
          usage: { promptTokens: job.prompt.length, cachedTokens: 0, completionTokens: count },
          seed: 0,
          timings: { queuedMs: 0, promptMs: 0, firstTokenMs: 0, decodeMs: performance.now() - started },
        });
      }
    }
    const it = tokens();
    return { result, [Symbol.asyncIterator]: () => it };
  }

  stats(): EngineStats {
    return {
      slots: 1,
      active: this.counts.active,
      queued: 0,
      requests: this.counts.requests,
      promptTokens: 0,
      cachedTokens: 0,
      evaluatedTokens: 0,
      generatedTokens: 0,
      cache: { entries: 0, bytes: 0, capacityBytes: 0, hits: 0, misses: 0 },
    };
  }

  close(): void {}
}
