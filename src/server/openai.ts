/**
 * The OpenAI wire format: request bodies checked field by field into what the server runs, and
 * the response objects (completions, stream chunks, errors) built field by field as OpenAI's API
 * reference and the `openai` npm package's types describe them.
 *
 * Unknown request fields are ignored (clients send vendor extensions); a known field of the wrong
 * type or out of range is a 400 naming the field (`param`), never a crash.
 *
 * @module
 */
import type { ChatMessage, ChatTool } from "../chat/template.ts";
import type { ResponseFormat } from "../generate/constraint.ts";
import type { SamplerOptions } from "../generate/sampler.ts";
import type { ToolCall } from "./tool_calls.ts";

/** An error answered as OpenAI's `{error: {message, type, param, code}}` with an HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  get type(): string {
    if (this.status === 401) return "authentication_error";
    if (this.status === 404) return "not_found_error";
    if (this.status === 429 || this.status === 503) return "server_overloaded";
    if (this.status >= 500) return "server_error";
    return "invalid_request_error";
  }

  toJSON(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** Bounds on what one request may ask for (see `ServeOptions.limits`). */
export interface RequestLimits {
  /** Largest request body in bytes (413 beyond). */
  maxBodyBytes: number;
  /** Largest `max_tokens` / `max_completion_tokens`. */
  maxTokens: number;
  /** Most messages in a conversation. */
  maxMessages: number;
  /** Most prompt tokens (after the template); checked by the server once tokenized. */
  maxPromptTokens: number;
}

interface Common {
  stream: boolean;
  includeUsage: boolean;
  sampling: SamplerOptions;
  maxTokens: number | undefined;
  stop: string[];
  /** Alternatives per token to report (0 = the chosen token's logprob only); undefined: no logprobs. */
  logprobs: number | undefined;
  responseFormat: ResponseFormat | undefined;
  model: string | undefined;
}

export interface ChatRequest extends Common {
  messages: ChatMessage[];
  /** The tools the template sees (after `tool_choice`). */
  tools: ChatTool[];
  /** Parse tool calls out of the reply. */
  parseToolCalls: boolean;
  /** `tool_choice` "required" or a named function: the reply must open with a call to one of `tools`. */
  forceToolCall: boolean;
  enableThinking: boolean | undefined;
}

export interface CompletionRequest extends Common {
  prompt: string | number[];
}

type Body = Record<string, unknown>;

const MAX_STOP = 16;
const MAX_TOP_LOGPROBS = 20;

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

function bad(param: string, message: string): never {
  throw new ApiError(400, `${param}: ${message}`, param);
}

function optionalNumber(
  body: Body,
  key: string,
  range: { min?: number; max?: number; integer?: boolean } = {},
): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) bad(key, `expected a number, got ${typeName(v)}`);
  if (range.integer && !Number.isInteger(v)) bad(key, `expected an integer, got ${v}`);
  if (range.min !== undefined && v < range.min) bad(key, `must be at least ${range.min}, got ${v}`);
  if (range.max !== undefined && v > range.max) bad(key, `must be at most ${range.max}, got ${v}`);
  return v;
}

function optionalBoolean(body: Body, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") bad(key, `expected a boolean, got ${typeName(v)}`);
  return v;
}

function optionalObject(body: Body, key: string): Body | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) bad(key, `expected an object, got ${typeName(v)}`);
  return v as Body;
}

/** The request body as an object, or a 400. */
export function requireObject(body: unknown): Body {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ApiError(400, `the request body must be a JSON object, got ${typeName(body)}`);
  }
  return body as Body;
}

function common(body: Body, limits: RequestLimits, maxTokensKeys: string[]): Common {
  const stream = optionalBoolean(body, "stream") ?? false;
  const streamOptions = optionalObject(body, "stream_options");
  const includeUsage = streamOptions ? optionalBoolean(streamOptions, "include_usage") ?? false : false;
  const n = optionalNumber(body, "n", { integer: true, min: 1 });
  if (n !== undefined && n !== 1) bad("n", "only n = 1 is supported");

  let maxTokens: number | undefined;
  for (const key of maxTokensKeys) {
    const v = optionalNumber(body, key, { integer: true, min: 1 });
    if (v === undefined) continue;
    if (v > limits.maxTokens) {
      throw new ApiError(400, `${key}: at most ${limits.maxTokens} tokens can be generated, asked for ${v}`, key);
    }
    maxTokens = v;
  }

  let stop: string[] = [];
  const s = body.stop;
  if (typeof s === "string") stop = [s];
  else if (Array.isArray(s)) {
    if (s.some((x) => typeof x !== "string")) bad("stop", "expected a string or an array of strings");
    stop = s as string[];
  } else if (s !== undefined && s !== null) bad("stop", `expected a string or an array of strings, got ${typeName(s)}`);
  stop = stop.filter((x) => x.length > 0);
  if (stop.length > MAX_STOP) bad("stop", `at most ${MAX_STOP} stop strings`);

  const sampling: SamplerOptions = {
    temperature: optionalNumber(body, "temperature", { min: 0, max: 2 }),
    topP: optionalNumber(body, "top_p", { min: 0, max: 1 }),
    topK: optionalNumber(body, "top_k", { integer: true, min: 0 }),
    minP: optionalNumber(body, "min_p", { min: 0, max: 1 }),
    presencePenalty: optionalNumber(body, "presence_penalty", { min: -2, max: 2 }),
    frequencyPenalty: optionalNumber(body, "frequency_penalty", { min: -2, max: 2 }),
    repeatPenalty: optionalNumber(body, "repeat_penalty", { min: 0, max: 100 }),
    seed: seedOf(body),
  };
  const bias = optionalObject(body, "logit_bias");
  if (bias) {
    const entries: Array<[number, number]> = [];
    for (const [k, v] of Object.entries(bias)) {
      if (!/^\d+$/.test(k)) bad("logit_bias", `keys must be token ids, got ${JSON.stringify(k)}`);
      if (typeof v !== "number" || !Number.isFinite(v) || v < -100 || v > 100) bad("logit_bias", `values must be numbers from -100 to 100`);
      entries.push([Number(k), v === -100 ? -Infinity : v]);
    }
    sampling.logitBias = new Map(entries);
  }

  const responseFormat = parseResponseFormat(body.response_format);
  const model = body.model;
  if (model !== undefined && model !== null && typeof model !== "string") bad("model", `expected a string, got ${typeName(model)}`);
  return {
    stream,
    includeUsage: stream && includeUsage,
    sampling,
    maxTokens,
    stop,
    logprobs: undefined,
    responseFormat,
    model: (model as string | undefined) ?? undefined,
  };
}

function seedOf(body: Body): number | undefined {
  const v = optionalNumber(body, "seed", { integer: true });
  // OpenAI seeds are any 64-bit integer; the sampler takes 32 bits.
  return v === undefined ? undefined : Number(BigInt.asUintN(32, BigInt(v)));
}

function parseResponseFormat(v: unknown): ResponseFormat | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) bad("response_format", `expected an object, got ${typeName(v)}`);
  const f = v as Body;
  if (f.type === "text") return { type: "text" };
  if (f.type === "json_object") return { type: "json_object" };
  if (f.type === "json_schema") {
    const js = f.json_schema;
    if (js === null || typeof js !== "object" || Array.isArray(js)) bad("response_format.json_schema", "expected an object with a schema");
    const spec = js as Body;
    if (spec.schema !== undefined && (spec.schema === null || typeof spec.schema !== "object" && typeof spec.schema !== "boolean")) {
      bad("response_format.json_schema.schema", "expected a JSON Schema object");
    }
    return { type: "json_schema", json_schema: { name: typeof spec.name === "string" ? spec.name : undefined, schema: spec.schema } };
  }
  return bad("response_format.type", `expected "text", "json_object" or "json_schema", got ${JSON.stringify(f.type)}`);
}

const ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

function parseMessages(v: unknown, limits: RequestLimits): ChatMessage[] {
  if (!Array.isArray(v)) bad("messages", `expected an array, got ${typeName(v)}`);
  const list = v as unknown[];
  if (list.length === 0) bad("messages", "at least one message is needed");
  if (list.length > limits.maxMessages) {
    throw new ApiError(400, `messages: at most ${limits.maxMessages} messages, got ${list.length}`, "messages");
  }
  return list.map((m, i): ChatMessage => {
    const at = `messages[${i}]`;
    if (m === null || typeof m !== "object" || Array.isArray(m)) bad(at, `expected an object, got ${typeName(m)}`);
    const msg = m as Body;
    if (typeof msg.role !== "string" || !ROLES.has(msg.role)) {
      bad(`${at}.role`, `expected one of system, developer, user, assistant, tool; got ${JSON.stringify(msg.role)}`);
    }
    const role = msg.role === "developer" ? "system" : msg.role as ChatMessage["role"];
    const content = msg.content;
    const out: ChatMessage = { role };
    if (typeof content === "string" || content === null || content === undefined) {
      out.content = content ?? (role === "assistant" ? null : "");
    } else if (Array.isArray(content)) {
      out.content = content.map((part, j) => {
        const p = part as Body;
        if (p === null || typeof p !== "object" || p.type !== "text" || typeof p.text !== "string") {
          const kind = p && typeof p === "object" ? JSON.stringify(p.type) : typeName(part);
          bad(`${at}.content[${j}]`, `only text parts are supported, got ${kind}`);
        }
        return { type: "text" as const, text: p.text as string };
      });
    } else bad(`${at}.content`, `expected a string, an array of parts or null, got ${typeName(content)}`);
    for (const key of ["reasoning_content", "name", "tool_call_id"] as const) {
      const x = msg[key];
      if (x === undefined || x === null) continue;
      if (typeof x !== "string") bad(`${at}.${key}`, `expected a string, got ${typeName(x)}`);
      out[key] = x;
    }
    if (msg.tool_calls !== undefined && msg.tool_calls !== null) {
      if (!Array.isArray(msg.tool_calls)) bad(`${at}.tool_calls`, `expected an array, got ${typeName(msg.tool_calls)}`);
      out.tool_calls = (msg.tool_calls as unknown[]).map((c, j) => {
        const call = c as Body;
        const fn = call?.function as Body | undefined;
        if (!fn || typeof fn !== "object" || typeof fn.name !== "string") {
          bad(`${at}.tool_calls[${j}].function`, "expected an object with a string name");
        }
        const args = fn!.arguments;
        if (args !== undefined && typeof args !== "string" && (args === null || typeof args !== "object")) {
          bad(`${at}.tool_calls[${j}].function.arguments`, "expected a JSON string");
        }
        return {
          id: typeof call.id === "string" ? call.id : undefined,
          type: "function" as const,
          function: { name: fn!.name as string, arguments: args as string | Record<string, unknown> | undefined },
        };
      });
    }
    return out;
  });
}

function parseTools(v: unknown): ChatTool[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) bad("tools", `expected an array, got ${typeName(v)}`);
  return (v as unknown[]).map((t, i) => {
    const tool = t as Body;
    const fn = tool?.function as Body | undefined;
    if (!tool || typeof tool !== "object" || (tool.type !== undefined && tool.type !== "function")) {
      bad(`tools[${i}].type`, `only function tools are supported`);
    }
    if (!fn || typeof fn !== "object" || typeof fn.name !== "string" || fn.name === "") {
      bad(`tools[${i}].function.name`, "expected a non-empty string");
    }
    if (fn!.parameters !== undefined && (fn!.parameters === null || typeof fn!.parameters !== "object" || Array.isArray(fn!.parameters))) {
      bad(`tools[${i}].function.parameters`, "expected a JSON Schema object");
    }
    if (fn!.description !== undefined && typeof fn!.description !== "string") {
      bad(`tools[${i}].function.description`, "expected a string");
    }
    return { ...tool, type: "function", function: fn } as ChatTool;
  });
}

/** Checks a `POST /v1/chat/completions` body. */
export function parseChatRequest(raw: unknown, limits: RequestLimits): ChatRequest {
  const body = requireObject(raw);
  const base = common(body, limits, ["max_tokens", "max_completion_tokens"]);
  const messages = parseMessages(body.messages, limits);
  let tools = parseTools(body.tools);
  let parseToolCalls = tools.length > 0;
  const choice = body.tool_choice;
  let forceToolCall = false;
  if (choice === "none") {
    tools = [];
    parseToolCalls = false;
  } else if (choice === "required") {
    if (tools.length === 0) bad("tool_choice", `"required" needs tools`);
    forceToolCall = true;
  } else if (choice !== undefined && choice !== null && choice !== "auto") {
    const named = (choice as Body)?.function as Body | undefined;
    if (typeof choice !== "object" || !named || typeof named.name !== "string") {
      bad("tool_choice", `expected "none", "auto", "required" or {type: "function", function: {name}}`);
    }
    tools = tools.filter((t) => t.function.name === named!.name);
    if (tools.length === 0) bad("tool_choice", `no tool named ${JSON.stringify(named!.name)} in tools`);
    forceToolCall = true;
  }
  const logprobs = optionalBoolean(body, "logprobs") ?? false;
  const top = optionalNumber(body, "top_logprobs", { integer: true, min: 0, max: MAX_TOP_LOGPROBS });
  if (top !== undefined && !logprobs) bad("top_logprobs", "needs logprobs: true");
  const kwargs = optionalObject(body, "chat_template_kwargs");
  let enableThinking = kwargs ? optionalBoolean(kwargs, "enable_thinking") : undefined;
  // llama.cpp's and vLLM's spellings of the same switch
  if (enableThinking === undefined && typeof body.enable_thinking === "boolean") enableThinking = body.enable_thinking;
  if (forceToolCall && base.responseFormat && base.responseFormat.type !== "text") {
    bad("tool_choice", "a required tool call and response_format cannot be combined");
  }
  return { ...base, messages, tools, parseToolCalls, forceToolCall, enableThinking, logprobs: logprobs ? top ?? 0 : undefined };
}

/** Checks a `POST /v1/completions` body. */
export function parseCompletionRequest(raw: unknown, limits: RequestLimits): CompletionRequest {
  const body = requireObject(raw);
  const base = common(body, limits, ["max_tokens"]);
  let prompt = body.prompt;
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === "string") prompt = prompt[0];
  if (Array.isArray(prompt)) {
    if (prompt.length === 0 || prompt.some((t) => typeof t !== "number" || !Number.isInteger(t) || t < 0)) {
      bad("prompt", "expected a string, one string in an array, or an array of token ids");
    }
  } else if (typeof prompt !== "string") bad("prompt", `expected a string, got ${typeName(prompt)}`);
  if (prompt === "") bad("prompt", "must not be empty");
  if (optionalBoolean(body, "echo")) bad("echo", "echo is not supported");
  if (body.suffix !== undefined && body.suffix !== null) bad("suffix", "suffix is not supported");
  const n = optionalNumber(body, "logprobs", { integer: true, min: 0, max: 5 });
  return { ...base, prompt: prompt as string | number[], logprobs: n };
}

// ---------------------------------------------------------------------------------------------
// Responses

/** One generated token's log-probability and its alternatives (natural log). */
export interface TokenLogprob {
  token: string;
  bytes: number[];
  logprob: number;
  top: Array<{ token: string; bytes: number[]; logprob: number }>;
}

export interface Usage {
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  reasoningTokens?: number;
}

export function usageObject(u: Usage) {
  return {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.promptTokens + u.completionTokens,
    prompt_tokens_details: { cached_tokens: u.cachedTokens },
    completion_tokens_details: { reasoning_tokens: u.reasoningTokens ?? 0 },
  };
}

export type FinishReason = "stop" | "length" | "tool_calls";

export function chatLogprobs(items: TokenLogprob[]) {
  return {
    content: items.map((t) => ({
      token: t.token,
      logprob: t.logprob,
      bytes: t.bytes,
      top_logprobs: t.top.map((a) => ({ token: a.token, logprob: a.logprob, bytes: a.bytes })),
    })),
    refusal: null,
  };
}

export function completionLogprobs(items: TokenLogprob[], startOffset = 0) {
  let offset = startOffset;
  const textOffset = items.map((t) => {
    const at = offset;
    offset += t.token.length;
    return at;
  });
  return {
    tokens: items.map((t) => t.token),
    token_logprobs: items.map((t) => t.logprob),
    top_logprobs: items.map((t) => Object.fromEntries(t.top.map((a) => [a.token, a.logprob]))),
    text_offset: textOffset,
  };
}

export interface ChatReply {
  content: string;
  reasoning: string;
  toolCalls: ToolCall[];
  finishReason: FinishReason;
  logprobs: TokenLogprob[] | undefined;
  usage: Usage;
}

/** `chat.completion` */
export function chatCompletion(id: string, created: number, model: string, reply: ChatReply) {
  const message: Record<string, unknown> = {
    role: "assistant",
    content: reply.toolCalls.length > 0 && reply.content === "" ? null : reply.content,
    refusal: null,
  };
  if (reply.reasoning) message.reasoning_content = reply.reasoning;
  if (reply.toolCalls.length > 0) message.tool_calls = reply.toolCalls;
  return {
    ...envelope("chat.completion", id, created, model),
    choices: [{
      index: 0,
      message,
      logprobs: reply.logprobs ? chatLogprobs(reply.logprobs) : null,
      finish_reason: reply.finishReason,
    }],
    usage: usageObject(reply.usage),
  };
}

/** What every response object starts with: id, object type, time, model, fingerprint. */
function envelope<T extends string>(object: T, id: string, created: number, model: string) {
  return { id, object, created, model, system_fingerprint: SYSTEM_FINGERPRINT };
}

/** `usage` of a streamed chunk: absent unless asked for, null on all but the last chunk. */
function chunkUsage(usage: Usage | null | undefined) {
  return usage === undefined ? {} : { usage: usage ? usageObject(usage) : null };
}

/** A `chat.completion.chunk` with one choice (delta) or none (the usage chunk). */
export function chatChunk(
  id: string,
  created: number,
  model: string,
  choice: { delta: Record<string, unknown>; logprobs?: TokenLogprob[]; finishReason?: FinishReason | null } | null,
  usage?: Usage | null,
) {
  const choices = choice
    ? [{
      index: 0,
      delta: choice.delta,
      logprobs: choice.logprobs?.length ? chatLogprobs(choice.logprobs) : null,
      finish_reason: choice.finishReason ?? null,
    }]
    : [];
  return { ...envelope("chat.completion.chunk", id, created, model), choices, ...chunkUsage(usage) };
}

/** `text_completion` (whole, or one streamed piece). */
export function textCompletion(
  id: string,
  created: number,
  model: string,
  choice: { text: string; logprobs?: TokenLogprob[]; offset?: number; finishReason: FinishReason | null } | null,
  usage?: Usage | null,
) {
  const choices = choice
    ? [{
      index: 0,
      text: choice.text,
      logprobs: choice.logprobs ? completionLogprobs(choice.logprobs, choice.offset) : null,
      finish_reason: choice.finishReason,
    }]
    : [];
  return { ...envelope("text_completion", id, created, model), choices, ...chunkUsage(usage) };
}

/** Identifies the backend in responses (OpenAI's `system_fingerprint`). */
export const SYSTEM_FINGERPRINT = "deltaq";

export function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
