/**
 * `deltaq serve`: an OpenAI-compatible HTTP server on `Deno.serve`.
 *
 *   request → CORS / auth → route → body (bounded, timed) → parseJson → parse*Request (400s)
 *           → render + tokenize (chat template) → constraint (response_format) → engine.submit
 *           → ReplyAssembler (text, reasoning, tool calls, logprobs) → JSON or server-sent events
 *
 * Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models[/{id}], GET /health,
 * GET /metrics (Prometheus text). Every route but /health needs `Authorization: Bearer KEY` when
 * an API key is set. Errors are OpenAI error objects.
 *
 * @module
 */
import { parseJson } from "../chat/json.ts";
import { DeltaqError } from "../errors.ts";
import type { ChatTool } from "../chat/template.ts";
import { prefixConstraint, prepareConstraints, responseFormatConstraint, type TokenConstraint } from "../generate/constraint.ts";
import { SchemaError } from "../generate/json_schema.ts";
import type { Model } from "../model/model.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { Engine, type EngineRequest, type EngineResult } from "./engine.ts";
import { Metrics } from "./metrics.ts";
import {
  ApiError,
  type ChatRequest,
  chatChunk,
  chatCompletion,
  type CompletionRequest,
  type FinishReason,
  newId,
  parseChatRequest,
  parseCompletionRequest,
  type RequestLimits,
  textCompletion,
  type Usage,
} from "./openai.ts";
import { ReplyAssembler, type ReplyEvent } from "./reply.ts";

export interface ServeOptions {
  /** Address to listen on (default 127.0.0.1: this machine only). */
  host?: string;
  /** Port (default 8080; 0 picks a free one, see `ServerHandle.port`). */
  port?: number;
  /** Require `Authorization: Bearer KEY` on every route but /health. */
  apiKey?: string;
  /** Sequences decoded together (default 1); more requests wait. */
  parallel?: number;
  /** Prompt-cache budget in MiB (default: the engine's, sized to the machine). */
  cacheMiB?: number;
  /** Allow browsers from this origin (`*` for any): answers preflights, sets CORS headers. */
  cors?: string;
  /** The model id in responses and /v1/models (default: the file name without `.gguf`). */
  modelName?: string;
  /** Per-request bounds (defaults: 4 MiB body, context-length tokens, 1024 messages). */
  limits?: Partial<RequestLimits>;
  /** Requests waiting for a slot beyond this many are refused with 503 (default 64). */
  maxQueue?: number;
  /** A client must send its whole body within this many ms (default 30 000), else 408. */
  bodyTimeoutMs?: number;
  /**
   * Run on this engine instead of a new one (`parallel` and `cacheMiB` are then the engine's
   * business). The server does not close an engine it was given.
   */
  engine?: EngineLike;
  /** Called once listening (default: print nothing). */
  onListen?: (addr: { hostname: string; port: number }) => void;
}

/** What the server needs of an engine (see ./engine.ts). */
export type EngineLike = Pick<Engine, "submit" | "stats" | "close">;

/** A running server. */
export interface ServerHandle {
  readonly url: string;
  readonly hostname: string;
  readonly port: number;
  readonly engine: EngineLike;
  /** Settles when the server has stopped. */
  readonly finished: Promise<void>;
  /** Stops accepting, ends running generations and frees the engine (the model stays yours). */
  close(): Promise<void>;
}

const DEFAULT_BODY_BYTES = 4 << 20;
const DEFAULT_MESSAGES = 1024;

/** Starts serving `model` with the OpenAI API. */
export function serve(model: Model, opts: ServeOptions = {}): ServerHandle {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? 8080;
  const context = model.info.contextLength;
  const limits: RequestLimits = {
    maxBodyBytes: opts.limits?.maxBodyBytes ?? DEFAULT_BODY_BYTES,
    maxTokens: opts.limits?.maxTokens ?? context,
    maxMessages: opts.limits?.maxMessages ?? DEFAULT_MESSAGES,
    maxPromptTokens: Math.min(opts.limits?.maxPromptTokens ?? context - 1, context - 1),
  };
  const modelName = opts.modelName ?? model.info.file.replace(/^.*\//, "").replace(/\.gguf$/i, "");
  // The vocabulary index for response_format, built now rather than in a first request's way.
  prepareConstraints(model.tokenizer);
  const ownEngine = opts.engine === undefined;
  const engine = opts.engine ?? new Engine(model, { parallel: opts.parallel, cacheMiB: opts.cacheMiB });
  const metrics = new Metrics();
  const created = Math.floor(Date.now() / 1000);
  const app = new Handler(model, engine, metrics, {
    limits,
    modelName,
    created,
    apiKey: opts.apiKey,
    cors: opts.cors,
    maxQueue: opts.maxQueue ?? 64,
    bodyTimeoutMs: opts.bodyTimeoutMs ?? 30_000,
  });
  const shutdown = new AbortController();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: host,
      port,
      signal: shutdown.signal,
      onListen: (addr) => opts.onListen?.(addr),
      onError: (e) => app.internalError(e),
    }, (request) => app.handle(request));
  } catch (e) {
    if (ownEngine) engine.close();
    if (e instanceof Deno.errors.AddrInUse) throw new DeltaqError(`cannot listen on ${host}:${port}: the address is in use`);
    if (e instanceof Deno.errors.PermissionDenied) throw new DeltaqError(`cannot listen on ${host}:${port}: permission denied`);
    throw new DeltaqError(`cannot listen on ${host}:${port}: ${(e as Error).message}`);
  }
  const addr = server.addr;
  const hostname = addr.hostname;
  const url = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${addr.port}`;
  let closing: Promise<void> | undefined;
  return {
    url,
    hostname,
    port: addr.port,
    engine,
    finished: server.finished,
    close() {
      closing ??= (async () => {
        app.closing = true;
        app.abortAll(); // ends running generations, so open streams finish
        if (ownEngine) engine.close();
        shutdown.abort();
        await server.finished;
      })();
      return closing;
    },
  };
}

interface HandlerConfig {
  limits: RequestLimits;
  modelName: string;
  created: number;
  apiKey?: string;
  cors?: string;
  maxQueue: number;
  bodyTimeoutMs: number;
}

class Handler {
  closing = false;
  readonly #keyDigest: Promise<Uint8Array> | undefined;
  /** Aborts of the generations in flight. */
  readonly #running = new Set<AbortController>();

  /**
   * Characters a prompt's text may have before tokenizing: a token covers at most the longest
   * piece in the vocabulary, so a longer text cannot fit in maxPromptTokens and is refused
   * before the tokenizer spends seconds on it.
   */
  readonly #maxPromptChars: number;

  constructor(
    readonly model: Model,
    readonly engine: EngineLike,
    readonly metrics: Metrics,
    readonly config: HandlerConfig,
  ) {
    this.#keyDigest = config.apiKey !== undefined ? sha256(config.apiKey) : undefined;
    const tokenizer = model.tokenizer;
    let longest = 1;
    for (let id = 0; id < tokenizer.vocabSize; id++) longest = Math.max(longest, tokenizer.tokenToPiece(id).length);
    this.#maxPromptChars = config.limits.maxPromptTokens * longest;
  }

  async handle(request: Request): Promise<Response> {
    const started = performance.now();
    const url = new URL(request.url);
    const route = routeName(request.method, url.pathname);
    let response: Response;
    try {
      response = await this.#route(request, url, route);
    } catch (e) {
      response = this.#errorResponse(e);
    }
    if (this.config.cors) setCors(response.headers, this.config.cors);
    this.metrics.request(route, response.status, performance.now() - started);
    return response;
  }

  abortAll(): void {
    for (const abort of this.#running) abort.abort();
  }

  internalError(e: unknown): Response {
    console.error("deltaq serve: internal error:", e);
    return json(new ApiError(500, "internal server error").toJSON(), 500);
  }

  #errorResponse(e: unknown): Response {
    if (e instanceof ApiError) return json(e.toJSON(), e.status);
    if (e instanceof DeltaqError) return json(new ApiError(400, e.message).toJSON(), 400);
    return this.internalError(e);
  }

  async #route(request: Request, url: URL, route: string): Promise<Response> {
    if (request.method === "OPTIONS" && this.config.cors) return new Response(null, { status: 204 });
    if (url.pathname === "/health" || url.pathname === "/v1/health") {
      if (request.method !== "GET" && request.method !== "HEAD") throw methodNotAllowed(request.method, url.pathname);
      return json({ status: "ok" });
    }
    await this.#authorize(request);
    switch (route) {
      case "chat":
        return await this.#chat(request);
      case "completions":
        return await this.#completions(request);
      case "models":
        return json({ object: "list", data: [this.#modelObject()] });
      case "model": {
        const id = decodeURIComponent(url.pathname.slice("/v1/models/".length));
        if (id !== this.config.modelName) throw new ApiError(404, `the model ${JSON.stringify(id)} does not exist`, "model", "model_not_found");
        return json(this.#modelObject());
      }
      case "metrics":
        return new Response(this.metrics.render(this.engine.stats()), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      case "method":
        throw methodNotAllowed(request.method, url.pathname);
      default:
        throw new ApiError(404, `no route ${request.method} ${url.pathname}`, null, "not_found");
    }
  }

  #modelObject() {
    return { id: this.config.modelName, object: "model", created: this.config.created, owned_by: "deltaq" };
  }

  /** Constant-time comparison of the bearer token with the key (digests of both, XOR-summed). */
  async #authorize(request: Request): Promise<void> {
    if (!this.#keyDigest) return;
    const header = request.headers.get("authorization") ?? "";
    const m = /^Bearer\s+(.+)$/i.exec(header.trim());
    const given = await sha256(m ? m[1] : "");
    const want = await this.#keyDigest;
    let diff = m ? 0 : 1;
    for (let i = 0; i < want.length; i++) diff |= want[i] ^ given[i];
    if (diff !== 0) {
      throw new ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)", null, "invalid_api_key");
    }
  }

  /** The body as JSON: bounded in size and time, parsed strictly (key order kept for templates). */
  async #body(request: Request): Promise<unknown> {
    const max = this.config.limits.maxBodyBytes;
    const declared = Number(request.headers.get("content-length") ?? NaN);
    if (declared > max) throw tooLarge(max);
    if (!request.body) throw new ApiError(400, "the request has no body (expected JSON)");
    const reader = request.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ApiError(408, `the request body did not arrive within ${this.config.bodyTimeoutMs} ms`)), this.config.bodyTimeoutMs);
    });
    try {
      for (;;) {
        const { value, done } = await Promise.race([reader.read(), timeout]);
        if (done) break;
        total += value.byteLength;
        if (total > max) throw tooLarge(max);
        chunks.push(value);
      }
    } catch (e) {
      reader.cancel().catch(() => {});
      if (e instanceof ApiError) throw e;
      throw new ApiError(400, `cannot read the request body: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      bytes.set(c, at);
      at += c.byteLength;
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw new ApiError(400, "the request body is not valid UTF-8");
    }
    try {
      return parseJson(text);
    } catch (e) {
      throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`);
    }
  }

  #checkCapacity(): void {
    if (this.closing) throw new ApiError(503, "the server is shutting down");
    if (this.engine.stats().queued >= this.config.maxQueue) {
      throw new ApiError(503, `the server is busy (${this.config.maxQueue} requests waiting); try again later`);
    }
  }

  #checkPromptLength(n: number, param: string): void {
    const max = this.config.limits.maxPromptTokens;
    if (n > max) {
      throw new ApiError(
        400,
        `the prompt has ${n} tokens, more than the ${max} this server accepts (context ${this.model.info.contextLength})`,
        param,
        "context_length_exceeded",
      );
    }
  }

  /** Refuses a prompt whose text alone is too long to fit, without tokenizing it. */
  #checkPromptChars(chars: number, param: string): void {
    if (chars > this.#maxPromptChars) {
      throw new ApiError(
        400,
        `the prompt's text (${chars} characters) is longer than ${this.config.limits.maxPromptTokens} tokens can be`,
        param,
        "context_length_exceeded",
      );
    }
  }

  async #chat(request: Request): Promise<Response> {
    const req = parseChatRequest(await this.#body(request), this.config.limits);
    this.#checkCapacity();
    this.#checkPromptChars(textLength(req.messages) + textLength(req.tools), "messages");
    const rendered = this.model.renderChat(req.messages, { enableThinking: req.enableThinking, tools: req.tools });
    this.#checkPromptLength(rendered.tokens.length, "messages");
    const constraint = req.forceToolCall
      ? toolCallConstraint(this.model.tokenizer, req.tools, rendered.opensThinking)
      : this.#constraint(req, rendered.opensThinking);
    const reply = new ReplyAssembler(this.model.tokenizer, {
      stop: req.stop,
      splitThinking: true,
      startInThinking: rendered.opensThinking,
      tools: req.parseToolCalls ? req.tools : undefined,
    });
    const job = this.#submit(req, rendered.tokens, rendered.historyTokens, constraint);
    const id = newId("chatcmpl-");
    const created = Math.floor(Date.now() / 1000);
    const model = this.config.modelName;
    if (!req.stream) {
      return this.#whenDone(job, async () => {
        const result = await this.#drain(job, reply);
        return chatCompletion(id, created, model, {
          content: reply.content.trim(),
          reasoning: reply.reasoning,
          toolCalls: reply.toolCalls,
          finishReason: finishReason(result.engine, reply, result.stopped),
          logprobs: req.logprobs !== undefined ? reply.logprobs : undefined,
          usage: this.#usage(result.engine, reply.reasoningTokens),
        });
      });
    }
    let sentLogprobs = 0;
    const pendingLogprobs = () => {
      if (req.logprobs === undefined) return undefined;
      const items = reply.logprobs.slice(sentLogprobs);
      sentLogprobs = reply.logprobs.length;
      return items;
    };
    const usageField = req.includeUsage ? null : undefined;
    return this.#sse(job, reply, {
      first: () => [chatChunk(id, created, model, { delta: { role: "assistant", content: "" } }, usageField)],
      events: (events) =>
        events.map((e) => {
          const delta = e.kind === "reasoning"
            ? { reasoning_content: e.text }
            : e.kind === "content"
            ? { content: e.text }
            : { tool_calls: [{ index: e.index, ...e.call }] };
          return chatChunk(id, created, model, { delta, logprobs: pendingLogprobs() }, usageField);
        }),
      last: (result, stopped) => {
        const chunks: unknown[] = [
          chatChunk(id, created, model, {
            delta: {},
            logprobs: pendingLogprobs(),
            finishReason: finishReason(result, reply, stopped),
          }, usageField),
        ];
        if (req.includeUsage) chunks.push(chatChunk(id, created, model, null, this.#usage(result, reply.reasoningTokens)));
        return chunks;
      },
    });
  }

  async #completions(request: Request): Promise<Response> {
    const req = parseCompletionRequest(await this.#body(request), this.config.limits);
    this.#checkCapacity();
    if (typeof req.prompt === "string") this.#checkPromptChars(req.prompt.length, "prompt");
    const tokens = typeof req.prompt === "string" ? this.model.tokenize(req.prompt) : req.prompt;
    if (tokens.length === 0) throw new ApiError(400, "the prompt is empty", "prompt");
    this.#checkPromptLength(tokens.length, "prompt");
    const constraint = this.#constraint(req, false);
    const reply = new ReplyAssembler(this.model.tokenizer, { stop: req.stop, splitThinking: false });
    const job = this.#submit(req, tokens, undefined, constraint);
    const id = newId("cmpl-");
    const created = Math.floor(Date.now() / 1000);
    const model = this.config.modelName;
    if (!req.stream) {
      return this.#whenDone(job, async () => {
        const result = await this.#drain(job, reply);
        return textCompletion(id, created, model, {
          text: reply.content,
          logprobs: req.logprobs !== undefined ? reply.logprobs : undefined,
          finishReason: finishReason(result.engine, reply, result.stopped),
        }, this.#usage(result.engine, 0));
      });
    }
    let sentLogprobs = 0;
    let offset = 0;
    const usageField = req.includeUsage ? null : undefined;
    const piece = (text: string, finish: FinishReason | null) => {
      const items = req.logprobs !== undefined ? reply.logprobs.slice(sentLogprobs) : undefined;
      sentLogprobs = reply.logprobs.length;
      const chunk = textCompletion(id, created, model, { text, logprobs: items, offset, finishReason: finish }, usageField);
      offset += items?.reduce((n, t) => n + t.token.length, 0) ?? 0;
      return chunk;
    };
    return this.#sse(job, reply, {
      first: () => [],
      events: (events) => events.map((e) => piece(e.kind === "content" ? e.text : "", null)),
      last: (result, stopped) => {
        const chunks: unknown[] = [piece("", finishReason(result, reply, stopped))];
        if (req.includeUsage) chunks.push(textCompletion(id, created, model, null, this.#usage(result, 0)));
        return chunks;
      },
    });
  }

  #constraint(req: ChatRequest | CompletionRequest, afterThinking: boolean): TokenConstraint | undefined {
    try {
      return responseFormatConstraint(this.model.tokenizer, req.responseFormat, { afterThinking });
    } catch (e) {
      if (e instanceof SchemaError || e instanceof DeltaqError) {
        throw new ApiError(400, `response_format: ${e.message}`, "response_format");
      }
      throw e;
    }
  }

  /**
   * Submits the job. It is aborted when the client goes away, which the server learns from its
   * response body being cancelled (both kinds of response are bodies written as the job runs:
   * `request.signal` would also fire after every successful response in Deno's legacy mode).
   */
  #submit(
    req: ChatRequest | CompletionRequest,
    prompt: ArrayLike<number>,
    historyTokens: number | undefined,
    constraint: TokenConstraint | undefined,
  ): { request: EngineRequest; abort: AbortController } {
    const abort = new AbortController();
    this.#running.add(abort);
    const done = () => this.#running.delete(abort);
    let job: EngineRequest;
    try {
      job = this.engine.submit({
        prompt,
        checkpoints: historyTokens !== undefined ? [historyTokens] : undefined,
        sampling: req.sampling,
        maxTokens: req.maxTokens,
        constraint,
        logprobs: req.logprobs,
        signal: abort.signal,
      });
    } catch (e) {
      done();
      throw e;
    }
    job.result.finally(done).catch(() => {});
    this.metrics.started();
    return { request: job, abort };
  }

  /** Runs a job to the end for a non-streamed response. */
  async #drain(
    job: { request: EngineRequest; abort: AbortController },
    reply: ReplyAssembler,
  ): Promise<{ engine: EngineResult; stopped: boolean }> {
    let stopped = false;
    const t0 = performance.now();
    let first = true;
    try {
      for await (const token of job.request) {
        if (first) this.metrics.firstToken(performance.now() - t0);
        first = false;
        if (reply.push(token).stopped) {
          stopped = true;
          break;
        }
      }
      if (!stopped) reply.finish();
      const engine = await job.request.result;
      this.metrics.finished(engine);
      return { engine, stopped };
    } catch (e) {
      job.abort.abort();
      throw e;
    }
  }

  /**
   * A JSON response written when the job is done. The status (200) is committed when the job is
   * accepted, so that a client leaving early cancels the body and with it the job; a failure
   * after that (an engine error) is answered as an error object in the body.
   */
  #whenDone(job: { request: EngineRequest; abort: AbortController }, produce: () => Promise<unknown>): Response {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        let value: unknown;
        try {
          value = await produce();
        } catch (e) {
          if (!(e instanceof ApiError) && !(e instanceof DeltaqError)) console.error("deltaq serve: generation failed:", e);
          value = (e instanceof ApiError ? e : new ApiError(500, e instanceof DeltaqError ? e.message : "internal server error")).toJSON();
        }
        if (cancelled) return;
        controller.enqueue(new TextEncoder().encode(JSON.stringify(value)));
        controller.close();
      },
      cancel() {
        cancelled = true;
        job.abort.abort();
      },
    });
    return new Response(body, { headers: { "content-type": "application/json" } });
  }

  /** A server-sent-event stream of the job's chunks; `[DONE]` at the end. */
  #sse(
    job: { request: EngineRequest; abort: AbortController },
    reply: ReplyAssembler,
    shape: {
      first: () => unknown[];
      events: (events: ReplyEvent[]) => unknown[];
      last: (result: EngineResult, stopped: boolean) => unknown[];
    },
  ): Response {
    const encoder = new TextEncoder();
    const metrics = this.metrics;
    const t0 = performance.now();
    let cancelled = false; // the client went away
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        const send = (chunks: unknown[]) => {
          if (cancelled) return;
          for (const c of chunks) controller.enqueue(encoder.encode(`data: ${JSON.stringify(c)}\n\n`));
        };
        let stopped = false;
        let first = true;
        try {
          send(shape.first());
          for await (const token of job.request) {
            if (cancelled) break;
            if (first) metrics.firstToken(performance.now() - t0);
            first = false;
            const pushed = reply.push(token);
            send(shape.events(pushed.events));
            if (pushed.stopped) {
              stopped = true;
              break;
            }
          }
          if (!stopped) send(shape.events(reply.finish()));
          const result = await job.request.result;
          metrics.finished(result);
          if (cancelled || (result.finishReason === "abort" && !stopped)) {
            // The client went away (or the server is closing): nobody is listening.
            controller.close();
            return;
          }
          send(shape.last(result, stopped));
          controller.enqueue(encoder.encode("data: [DONE]\n\n"));
          controller.close();
        } catch (e) {
          job.abort.abort();
          if (cancelled) return;
          try {
            const error = e instanceof ApiError ? e : new ApiError(500, e instanceof DeltaqError ? e.message : "internal server error");
            if (!(e instanceof ApiError) && !(e instanceof DeltaqError)) console.error("deltaq serve: generation failed:", e);
            send([error.toJSON()]);
            controller.close();
          } catch {
            // the stream is already closed
          }
        }
      },
      cancel() {
        cancelled = true;
        job.abort.abort();
      },
    });
    return new Response(body, {
      headers: { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no" },
    });
  }

  #usage(result: EngineResult, reasoningTokens: number): Usage {
    return {
      promptTokens: result.usage.promptTokens,
      cachedTokens: result.usage.cachedTokens,
      completionTokens: result.usage.completionTokens,
      reasoningTokens,
    };
  }
}

/**
 * `tool_choice` "required" or a named function: the answer opens with `<tool_call>` and
 * `<function=NAME>` for one of the tools (after the thinking and the blank line the template puts
 * after it, when the prompt opened a think block), then continues freely.
 */
function toolCallConstraint(tokenizer: Tokenizer, tools: ChatTool[], afterThinking: boolean): TokenConstraint {
  const lead = afterThinking ? "\n\n" : "";
  return prefixConstraint(tokenizer, tools.map((t) => `${lead}<tool_call>\n<function=${t.function.name}>\n`), { afterThinking });
}

/** Characters in all the strings of a value (keys included): a lower bound of its rendered text. */
function textLength(value: unknown): number {
  if (typeof value === "string") return value.length;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + textLength(v), 0);
  if (value !== null && typeof value === "object") {
    let n = 0;
    for (const [k, v] of Object.entries(value)) n += k.length + textLength(v);
    return n;
  }
  return 0;
}

function finishReason(result: EngineResult, reply: ReplyAssembler, stopped: boolean): FinishReason {
  if (reply.toolCalls.length > 0 && (result.finishReason === "eog" || stopped)) return "tool_calls";
  if (stopped || result.finishReason === "eog" || result.finishReason === "abort") return "stop";
  return "length";
}

function routeName(method: string, path: string): string {
  const routes: Record<string, [string, string]> = {
    "/v1/chat/completions": ["POST", "chat"],
    "/chat/completions": ["POST", "chat"],
    "/v1/completions": ["POST", "completions"],
    "/completions": ["POST", "completions"],
    "/v1/models": ["GET", "models"],
    "/models": ["GET", "models"],
    "/metrics": ["GET", "metrics"],
    "/health": ["GET", "health"],
    "/v1/health": ["GET", "health"],
  };
  const hit = routes[path] ?? (path.startsWith("/v1/models/") ? ["GET", "model"] : undefined);
  if (!hit) return "unknown";
  return method === hit[0] || (method === "HEAD" && hit[0] === "GET") ? hit[1] : "method";
}

function methodNotAllowed(method: string, path: string): ApiError {
  return new ApiError(405, `${method} is not allowed on ${path}`, null, "method_not_allowed");
}

function tooLarge(max: number): ApiError {
  return new ApiError(413, `the request body is larger than ${max} bytes`, null, "request_too_large");
}

function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
}

function setCors(headers: Headers, origin: string): void {
  headers.set("access-control-allow-origin", origin);
  headers.set("access-control-allow-methods", "GET, POST, OPTIONS");
  headers.set("access-control-allow-headers", "authorization, content-type");
  headers.set("access-control-max-age", "600");
  if (origin !== "*") headers.set("vary", "origin");
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}
