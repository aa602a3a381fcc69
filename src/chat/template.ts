/**
 * Chat templates: turns a conversation into the prompt text a model was trained on, by running the
 * GGUF's `tokenizer.chat_template` (Jinja) with `@huggingface/jinja`, or ChatML when the file has
 * no template.
 *
 * Template injection. A message may contain the text of a control token (`<|im_start|>`,
 * `<|im_end|>`…). The rendered prompt keeps it as text; what must not happen is that the tokenizer
 * then turns it into the control token. So `render` also reports which stretches of the prompt came
 * from message text and must not produce control tokens (`literalSpans`). It finds them without
 * changing what the template sees in any way that matters to a template: before rendering, every
 * occurrence of a protected token text inside message and tool strings is replaced by a one-character
 * placeholder (a private-use code point that appears nowhere in the template or the inputs); after
 * rendering, each placeholder is put back and its range recorded. A template that trims, splits on
 * `</think>`, checks `startswith('<tool_response>')` or serialises tools with `tojson` behaves as
 * with the original strings, because none of those operations look at control-token text. Pieces of
 * a token at the edge of a string (a name ending in `<|im_start|` that the template follows with
 * `>`) are protected the same way, so a token cannot be assembled across a message/template border.
 * Not protected: a whole string that is the middle of a token (`'<|' + role + '|>'` is how some
 * templates build their own tokens legitimately), and templates that search message text for
 * control-token text themselves (they would see the placeholder). This differs from llama.cpp,
 * which marks every string derived from the input inside its own Jinja engine; an engine-neutral
 * placeholder keeps us on a stock Jinja implementation.
 *
 * Contract with the tokenizer: tokenize `text` with special-token parsing on, except that a special
 * token whose text overlaps a literal span must not be matched there (the span is ordinary text,
 * byte-level BPE'd together with its neighbours as llama.cpp does with parse_special off).
 *
 * @module
 */
import { Environment, Template } from "npm:@huggingface/jinja@0.5.11";
import { DeltaqError } from "../errors.ts";
import { parseJson } from "./json.ts";
import { pythonInterpreter, type RuntimeValue, toRuntime, Values } from "./python.ts";

/** A text part of a multi-part message content (other part types pass through to the template). */
export interface ChatTextPart {
  type: "text";
  text: string;
}

/** A call the assistant made (OpenAI wire format). `arguments` may be an object or a JSON string. */
export interface ChatToolCall {
  id?: string;
  type?: "function";
  function: { name: string; arguments?: Record<string, unknown> | string };
}

/**
 * One turn of a conversation, in the OpenAI wire format that chat templates expect (hence the
 * snake_case fields). Unknown fields are passed through to the template untouched.
 */
export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool" | (string & Record<never, never>);
  content?: string | Array<ChatTextPart | Record<string, unknown>> | null;
  /** The thinking of an earlier assistant turn, kept apart from `content`. */
  reasoning_content?: string;
  tool_calls?: ChatToolCall[];
  tool_call_id?: string;
  name?: string;
  [field: string]: unknown;
}

/** A tool the model may call (OpenAI wire format; passed through to the template). */
export interface ChatTool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
  [field: string]: unknown;
}

export interface RenderOptions {
  /** Open an assistant turn at the end (default true): the prompt for generating a reply. */
  addGenerationPrompt?: boolean;
  /**
   * `enable_thinking` for templates that support it. Undefined leaves it undefined, which is the
   * template's default (Qwen3.5: thinking on). Qwen3.5 with `false` renders an empty
   * `<think>\n\n</think>\n\n` after the assistant header.
   */
  enableThinking?: boolean;
  tools?: ChatTool[];
  /**
   * Token texts that message content must never turn into: the tokenizer's control tokens (type 3
   * in GGUF, the ones llama.cpp's parse_special toggles). Leave out user-defined tokens such as
   * `<think>`: templates inspect those in message text (Qwen3.5 splits on `</think>`).
   */
  literalTokens?: readonly string[];
  /** More template variables (e.g. `date_string`, `reasoning_effort`). Not protected. */
  variables?: Record<string, unknown>;
  /** The time `strftime_now` formats (local time); default: now. */
  now?: Date;
}

/** A half-open range `[start, end)` of UTF-16 code units in `RenderedPrompt.text`. */
export interface TextSpan {
  start: number;
  end: number;
}

export interface RenderedPrompt {
  text: string;
  /** Stretches of `text` that came from message or tool strings and contain (part of) a protected
   * token text; sorted, non-overlapping. Empty when no input contains any. */
  literalSpans: TextSpan[];
}

/**
 * llama.cpp's ChatML (`llm_chat_apply_template` "chatml"), used when a GGUF has no template. Thinking
 * and tool calls are not rendered: there is no convention for them in plain ChatML.
 */
export const CHATML_TEMPLATE =
  "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

export interface ChatTemplateOptions {
  /** Where the template came from, for error messages, e.g. `model.gguf: tokenizer.chat_template`. */
  origin?: string;
  /** Texts of the BOS/EOS tokens, given to the template as `bos_token`/`eos_token`. */
  bosToken?: string;
  eosToken?: string;
}

/** A compiled chat template. Compile once per model; `render` is cheap and has no side effects. */
export class ChatTemplate {
  readonly source: string;
  /** True when there was no template and ChatML is used. */
  readonly isFallback: boolean;
  readonly origin: string;
  readonly #compiled: Template;
  readonly #bosToken: string;
  readonly #eosToken: string;

  constructor(source: string | undefined, options: ChatTemplateOptions = {}) {
    this.isFallback = source === undefined || source.trim() === "";
    this.source = this.isFallback ? CHATML_TEMPLATE : source!;
    this.origin = options.origin ?? "chat template";
    this.#bosToken = options.bosToken ?? "";
    this.#eosToken = options.eosToken ?? "";
    try {
      this.#compiled = new Template(this.source);
    } catch (e) {
      throw new DeltaqError(`${this.origin}: cannot parse the Jinja template: ${errorText(e)}`, { cause: e });
    }
  }

  render(messages: readonly ChatMessage[], options: RenderOptions = {}): RenderedPrompt {
    if (!Array.isArray(messages)) throw new DeltaqError(`${this.origin}: messages must be an array`);
    // Inputs become runtime values here, the way Python holds them (see ./python.ts).
    let messageValues = toRuntime(messages.map((m, i) => normalizeMessage(m, i, this.isFallback, this.origin)));
    let toolValues = toRuntime(options.tools && options.tools.length > 0 ? options.tools : undefined);
    const variables = Object.entries(options.variables ?? {}).map(([k, v]) => [k, toRuntime(v)] as const);
    const guard = new LiteralGuard(options.literalTokens ?? [], [
      new Values.String(this.source),
      messageValues,
      toolValues,
      ...variables.map(([, v]) => v),
    ]);
    if (guard.active) {
      messageValues = guard.protect(messageValues);
      toolValues = guard.protect(toolValues);
    }

    let raw: string;
    try {
      raw = this.#run({
        ...Object.fromEntries(variables),
        messages: messageValues,
        tools: toolValues,
        add_generation_prompt: toRuntime(options.addGenerationPrompt ?? true),
        enable_thinking: toRuntime(options.enableThinking),
        bos_token: toRuntime(this.#bosToken),
        eos_token: toRuntime(this.#eosToken),
      }, options.now);
    } catch (e) {
      if (e instanceof TemplateRaised) {
        throw new DeltaqError(`${this.origin}: the template rejected the conversation: ${e.message}`);
      }
      throw new DeltaqError(`${this.origin}: rendering failed: ${errorText(e)}`, { cause: e });
    }
    return guard.active ? guard.restore(raw) : { text: raw, literalSpans: [] };
  }

  #run(variables: Record<string, RuntimeValue>, now: Date | undefined): string {
    // Our own globals rather than Template.render's: theirs cannot be overridden, and we want
    // raise_exception to be recognisable and strftime_now to be testable and locale-independent.
    const env = new Environment();
    env.set("true", true);
    env.set("false", false);
    env.set("none", null);
    env.set("True", true);
    env.set("False", false);
    env.set("None", null);
    env.set("range", range);
    env.set("raise_exception", (message: unknown) => {
      throw new TemplateRaised(String(message));
    });
    env.set("strftime_now", (format: unknown) => strftime(now ?? new Date(), String(format)));
    for (const [name, value] of Object.entries(variables)) {
      if (value.type !== "UndefinedValue") env.setVariable(name, value as Parameters<Environment["setVariable"]>[1]);
    }
    const result = pythonInterpreter(env).run(this.#compiled.parsed);
    return String(result.value);
  }
}

/** The template's own `raise_exception('…')`. */
class TemplateRaised extends Error {}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function normalizeMessage(
  m: ChatMessage,
  index: number,
  chatml: boolean,
  origin: string,
): Record<string, unknown> {
  if (m === null || typeof m !== "object" || typeof m.role !== "string") {
    throw new DeltaqError(`${origin}: message ${index} must be an object with a string role`);
  }
  const out: Record<string, unknown> = { ...m };
  if (chatml) {
    // ChatML has only role and text; multi-part content becomes its text parts joined.
    out.content = contentText(m.content);
    return out;
  }
  if (Array.isArray(m.tool_calls)) {
    // Templates iterate `arguments|items`; OpenAI clients send arguments as a JSON string, which
    // Python servers `json.loads` into a dict (key order and number kinds kept: see ./json.ts).
    out.tool_calls = m.tool_calls.map((call) => {
      const args = call?.function?.arguments;
      if (typeof args !== "string") return call;
      let parsed: unknown;
      try {
        parsed = parseJson(args);
      } catch {
        return call;
      }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return call;
      return { ...call, function: { ...call.function, arguments: parsed } };
    });
  }
  return out;
}

function contentText(content: ChatMessage["content"]): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content.map((part) => (typeof part?.text === "string" ? part.text : "")).join("");
}

function range(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error("range() step must not be zero");
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/** Python's `datetime.strftime` in the C locale, for the directives chat templates use. */
export function strftime(date: Date, format: string): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  const dayOfYear = Math.round(
    (Date.UTC(date.getFullYear(), date.getMonth(), date.getDate()) - Date.UTC(date.getFullYear(), 0, 1)) /
      86_400_000,
  ) + 1;
  return format.replace(/%[a-zA-Z%]/g, (directive) => {
    switch (directive[1]) {
      case "Y":
        return String(date.getFullYear());
      case "y":
        return pad(date.getFullYear() % 100);
      case "m":
        return pad(date.getMonth() + 1);
      case "d":
        return pad(date.getDate());
      case "e":
        return String(date.getDate()).padStart(2, " ");
      case "b":
        return MONTHS[date.getMonth()].slice(0, 3);
      case "B":
        return MONTHS[date.getMonth()];
      case "a":
        return DAYS[date.getDay()].slice(0, 3);
      case "A":
        return DAYS[date.getDay()];
      case "j":
        return pad(dayOfYear, 3);
      case "H":
        return pad(date.getHours());
      case "I":
        return pad(((date.getHours() + 11) % 12) + 1);
      case "p":
        return date.getHours() < 12 ? "AM" : "PM";
      case "M":
        return pad(date.getMinutes());
      case "S":
        return pad(date.getSeconds());
      case "%":
        return "%";
      default:
        return directive;
    }
  });
}

const PRIVATE_USE_FIRST = 0xe000;
const PRIVATE_USE_LAST = 0xf8ff;

/**
 * Replaces protected token text inside input strings by placeholder characters before rendering
 * and puts it back afterwards, recording where (see the module comment).
 */
class LiteralGuard {
  readonly active: boolean;
  readonly #tokens: string[];
  readonly #fullToken: RegExp | undefined;
  readonly #prefixes = new Set<string>(); // proper prefixes of tokens
  readonly #suffixes = new Set<string>(); // proper suffixes of tokens
  readonly #longest: number;
  readonly #used = new Set<number>(); // private-use code points that occur anywhere already
  #nextCandidate = PRIVATE_USE_FIRST;
  readonly #placeholderOf = new Map<string, string>(); // protected text → placeholder
  readonly #textOf = new Map<string, string>(); // placeholder → protected text

  constructor(tokens: readonly string[], scanned: RuntimeValue[]) {
    this.#tokens = [...new Set(tokens.filter((t) => typeof t === "string" && t.length > 0))]
      .sort((a, b) => b.length - a.length);
    this.#longest = this.#tokens[0]?.length ?? 0;
    this.active = this.#tokens.length > 0;
    if (!this.active) return;
    this.#fullToken = new RegExp(this.#tokens.map(escapeRegExp).join("|"), "g");
    for (const t of this.#tokens) {
      for (let k = 1; k < t.length; k++) {
        this.#prefixes.add(t.slice(0, k));
        this.#suffixes.add(t.slice(t.length - k));
      }
    }
    for (const v of scanned) this.#collectUsed(v);
  }

  /** A copy of `value` with protected text replaced (strings, object keys, nested). */
  protect(value: RuntimeValue): RuntimeValue {
    switch (value.type) {
      case "StringValue":
        return new Values.String(this.#protectString(value.value));
      case "ArrayValue":
        return new Values.Array((value.value as RuntimeValue[]).map((v) => this.protect(v)));
      case "ObjectValue": {
        const entries = [...(value.value as Map<string, RuntimeValue>)];
        return new Values.Object(new Map(entries.map(([k, v]) => [this.#protectString(k), this.protect(v)])));
      }
      default:
        return value;
    }
  }

  restore(rendered: string): RenderedPrompt {
    let text = "";
    const spans: TextSpan[] = [];
    let last = 0;
    for (let i = 0; i < rendered.length; i++) {
      const original = this.#textOf.get(rendered[i]);
      if (original === undefined) continue;
      text += rendered.slice(last, i);
      const start = text.length;
      text += original;
      const previous = spans[spans.length - 1];
      if (previous && previous.end === start) previous.end = text.length;
      else spans.push({ start, end: text.length });
      last = i + 1;
    }
    text += rendered.slice(last);
    return { text, literalSpans: spans };
  }

  #protectString(s: string): string {
    let out = s.replace(this.#fullToken!, (token) => this.#placeholder(token));
    // A token piece at either end of the string (ignoring surrounding whitespace, which templates
    // often trim) could join template text into a whole token.
    const body = out.trimEnd();
    for (let k = Math.min(this.#longest - 1, body.length); k >= 1; k--) {
      const tail = body.slice(body.length - k);
      if (this.#prefixes.has(tail)) {
        out = body.slice(0, body.length - k) + this.#placeholder(tail) + out.slice(body.length);
        break;
      }
    }
    const lead = out.length - out.trimStart().length;
    for (let k = Math.min(this.#longest - 1, out.length - lead); k >= 1; k--) {
      const head = out.slice(lead, lead + k);
      if (this.#suffixes.has(head)) {
        out = out.slice(0, lead) + this.#placeholder(head) + out.slice(lead + k);
        break;
      }
    }
    return out;
  }

  #placeholder(text: string): string {
    let p = this.#placeholderOf.get(text);
    if (p !== undefined) return p;
    while (this.#used.has(this.#nextCandidate)) this.#nextCandidate++;
    if (this.#nextCandidate > PRIVATE_USE_LAST) {
      throw new DeltaqError(
        "chat template: the messages use too many private-use characters to protect token text",
      );
    }
    p = String.fromCharCode(this.#nextCandidate++);
    this.#placeholderOf.set(text, p);
    this.#textOf.set(p, text);
    return p;
  }

  #collectUsed(value: RuntimeValue | string): void {
    if (typeof value === "string") {
      for (let i = 0; i < value.length; i++) {
        const c = value.charCodeAt(i);
        if (c >= PRIVATE_USE_FIRST && c <= PRIVATE_USE_LAST) this.#used.add(c);
      }
    } else if (value.type === "StringValue") {
      this.#collectUsed(value.value as string);
    } else if (value.type === "ArrayValue") {
      for (const v of value.value as RuntimeValue[]) this.#collectUsed(v);
    } else if (value.type === "ObjectValue") {
      for (const [k, v] of value.value as Map<string, RuntimeValue>) {
        this.#collectUsed(k);
        this.#collectUsed(v);
      }
    }
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
