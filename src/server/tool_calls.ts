/**
 * Tool calls in a Qwen3.5 reply. The chat template teaches the model this format:
 *
 *   <tool_call>
 *   <function=get_weather>
 *   <parameter=city>
 *   Paris
 *   </parameter>
 *   </function>
 *   </tool_call>
 *
 * `ToolCallParser` reads the answer text as it streams and splits it into content and OpenAI tool
 * calls, whose `arguments` is a JSON object string with each value typed by the tool's JSON schema
 * (a parameter declared as integer becomes a JSON number, an object is parsed as JSON…). A call
 * is held back until its block is complete, then released whole; a block that does not parse (an
 * unknown function, a missing close tag at the end of the reply) is released as plain content, so
 * malformed model output never becomes an error.
 *
 * @module
 */
import type { ChatTool } from "../chat/template.ts";
import { partialAtEnd } from "../generate/stream.ts";

/** A parsed call, in OpenAI's shape (`arguments` is a JSON string). */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** What a pushed piece of text turned into, in order. */
export type ToolCallEvent = { content: string } | { call: ToolCall };

const OPEN = "<tool_call>";
const CLOSE = "</tool_call>";

export class ToolCallParser {
  readonly #tools: Map<string, ChatTool>;
  #pending = ""; // text not yet released: a possible start of OPEN, or an open block
  #inCall = false;
  #afterCall = false;
  #calls = 0;

  constructor(tools: readonly ChatTool[]) {
    this.#tools = new Map(tools.filter((t) => t?.function?.name).map((t) => [t.function.name, t]));
  }

  /** How many calls were released so far. */
  get callCount(): number {
    return this.#calls;
  }

  push(text: string): ToolCallEvent[] {
    this.#pending += text;
    const out: ToolCallEvent[] = [];
    for (;;) {
      if (this.#afterCall) {
        // Whitespace after a call (the template puts a newline between calls) belongs to neither.
        this.#pending = this.#pending.trimStart();
        if (this.#pending === "") return out;
        this.#afterCall = false;
      }
      if (!this.#inCall) {
        const at = this.#pending.indexOf(OPEN);
        if (at < 0) {
          const keep = partialAtEnd(this.#pending, OPEN);
          const content = this.#pending.slice(0, this.#pending.length - keep);
          if (content) out.push({ content });
          this.#pending = this.#pending.slice(this.#pending.length - keep);
          return out;
        }
        if (at > 0) out.push({ content: this.#pending.slice(0, at) });
        this.#pending = this.#pending.slice(at);
        this.#inCall = true;
      }
      const end = this.#pending.indexOf(CLOSE);
      if (end < 0) return out;
      const block = this.#pending.slice(0, end + CLOSE.length);
      this.#pending = this.#pending.slice(end + CLOSE.length);
      this.#inCall = false;
      const call = this.#parse(block);
      if (call) {
        this.#calls++;
        this.#afterCall = true;
        out.push({ call });
      } else out.push({ content: block });
    }
  }

  /** Ends the reply: whatever is held back (an unfinished block) is content. */
  flush(): ToolCallEvent[] {
    const rest = this.#pending;
    this.#pending = "";
    this.#inCall = false;
    return rest ? [{ content: rest }] : [];
  }

  #parse(block: string): ToolCall | undefined {
    const inner = block.slice(OPEN.length, block.length - CLOSE.length).trim();
    const fn = /^<function=([^>\n]+)>\n?([\s\S]*?)\n?<\/function>$/.exec(inner);
    if (!fn) return undefined;
    const name = fn[1].trim();
    const tool = this.#tools.get(name);
    if (this.#tools.size > 0 && !tool) return undefined;
    const properties = (tool?.function.parameters?.properties ?? {}) as Record<string, unknown>;
    const args: Record<string, unknown> = {};
    const paramPattern = /<parameter=([^>\n]+)>\n?([\s\S]*?)\n?<\/parameter>/g;
    let last = 0;
    for (let m; (m = paramPattern.exec(fn[2])) !== null;) {
      if (fn[2].slice(last, m.index).trim() !== "") return undefined; // stray text between parameters
      const key = m[1].trim();
      Object.defineProperty(args, key, {
        value: typedValue(m[2], properties[key]),
        enumerable: true,
        writable: true,
        configurable: true,
      });
      last = m.index + m[0].length;
    }
    if (fn[2].slice(last).trim() !== "") return undefined;
    return {
      id: `call_${randomId()}`,
      type: "function",
      function: { name, arguments: stringifyInOrder(args, Object.keys(args)) },
    };
  }
}

/** JSON of an object with its keys in the given order (integer-like keys stay where they were). */
function stringifyInOrder(obj: Record<string, unknown>, keys: string[]): string {
  return `{${keys.map((k) => `${JSON.stringify(k)}: ${JSON.stringify(obj[k])}`).join(", ")}}`;
}

/** The value of a parameter's text as its schema types it; text when it does not fit. */
export function typedValue(text: string, schema: unknown): unknown {
  const types = schemaTypes(schema);
  const json = () => {
    try {
      return { ok: true, value: JSON.parse(text) as unknown };
    } catch {
      return { ok: false, value: undefined };
    }
  };
  const trimmed = text.trim();
  if (types.size === 0) {
    // No schema: JSON when the text is JSON (numbers, objects…), else the text.
    const j = json();
    return j.ok && typeof j.value !== "string" ? j.value : text;
  }
  if (types.has("null") && (trimmed === "null" || trimmed === "None")) return null;
  if ((types.has("integer") || types.has("number")) && /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(trimmed)) {
    const n = Number(trimmed);
    if (types.has("number") || Number.isInteger(n)) return n;
  }
  if (types.has("boolean")) {
    const lower = trimmed.toLowerCase();
    if (lower === "true" || lower === "false") return lower === "true";
  }
  if (types.has("object") || types.has("array")) {
    const j = json();
    if (j.ok && j.value !== null && typeof j.value === "object") {
      if (Array.isArray(j.value) ? types.has("array") : types.has("object")) return j.value;
    }
  }
  return text;
}

function schemaTypes(schema: unknown): Set<string> {
  const out = new Set<string>();
  const visit = (s: unknown) => {
    if (s === null || typeof s !== "object") return;
    const o = s as Record<string, unknown>;
    if (typeof o.type === "string") out.add(o.type);
    if (Array.isArray(o.type)) for (const t of o.type) if (typeof t === "string") out.add(t);
    for (const key of ["anyOf", "oneOf"]) if (Array.isArray(o[key])) (o[key] as unknown[]).forEach(visit);
    if (o.enum !== undefined && Array.isArray(o.enum)) {
      for (const v of o.enum) out.add(v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "number" ? "number" : typeof v);
    }
  };
  visit(schema);
  return out;
}

const ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return Array.from(bytes, (b) => ID_CHARS[b % ID_CHARS.length]).join("");
}
