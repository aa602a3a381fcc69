/**
 * JSON parsing that remembers what `JSON.parse` forgets and Python keeps: the order of an object's
 * keys as written (JavaScript lists integer-like keys first: `{"b":1,"10":2}` comes back as `10, b`),
 * whether a number was written as a float (`1.0` stays a float in Python and prints `1.0`), and the
 * exact digits of integers past 2^53. Chat templates are Python programs as far as the model is
 * concerned (transformers renders them with jinja2 after `json.loads`), so a request whose tool
 * definitions or tool-call arguments go through a template is parsed with this.
 *
 * The result is ordinary JavaScript values (usable like `JSON.parse`'s); each object and array that
 * needs it carries the extra facts under a non-enumerable symbol, read by `jsonSource`. Copies
 * made with spread or `structuredClone` drop them and fall back to JavaScript's view.
 *
 * @module
 */

/** What a parsed container remembers about its source text (see `jsonSource`). */
export interface JsonSource {
  /** Keys in the order they first appeared (objects only; absent when JavaScript's order is the same). */
  keys?: string[];
  /**
   * Members whose number literal JavaScript cannot tell apart: `"float"` for a float literal with an
   * integral value (`1.0`, `1e3`), or the literal's digits for an integer beyond 2^53.
   */
  numbers?: Map<string | number, "float" | string>;
}

const SOURCE = Symbol("deltaq.jsonSource");

/** The source facts of a container returned by `parseJson` (undefined for anything else). */
export function jsonSource(value: unknown): JsonSource | undefined {
  return value !== null && typeof value === "object" ? (value as { [SOURCE]?: JsonSource })[SOURCE] : undefined;
}

/** A JSON syntax error, with the offset in the text where it was found. */
export class JsonSyntaxError extends SyntaxError {
  constructor(message: string, readonly offset: number) {
    super(`${message} at offset ${offset}`);
  }
}

export interface ParseJsonOptions {
  /** Deepest nesting of arrays and objects accepted (default 512); deeper input is a syntax error. */
  maxDepth?: number;
}

/** Parses strict JSON (RFC 8259) like `JSON.parse`, remembering key order and number literal kinds. */
export function parseJson(text: string, options: ParseJsonOptions = {}): unknown {
  const maxDepth = options.maxDepth ?? 512;
  let i = 0;
  const fail = (what: string): never => {
    throw new JsonSyntaxError(i >= text.length ? "unexpected end of JSON" : `${what}`, i);
  };
  const skipSpace = () => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else return;
    }
  };
  const remember = (container: object, source: JsonSource) => {
    Object.defineProperty(container, SOURCE, { value: source, enumerable: false });
  };

  const parseString = (): string => {
    const start = i; // at the opening quote
    i++;
    let simple = true;
    for (;;) {
      const c = text.charCodeAt(i);
      if (Number.isNaN(c)) fail("unterminated string");
      if (c === 0x22) break;
      if (c < 0x20) fail("control character in string");
      if (c === 0x5c) {
        simple = false;
        i += 2;
        continue;
      }
      i++;
    }
    i++;
    const raw = text.slice(start, i);
    if (simple) return raw.slice(1, -1);
    try {
      return JSON.parse(raw);
    } catch {
      i = start;
      return fail("invalid escape in string");
    }
  };

  /** A number literal: its value, and a note when JavaScript's value hides what Python sees. */
  const parseNumber = (): { value: number; note?: "float" | string } => {
    const start = i;
    if (text[i] === "-") i++;
    if (text[i] === "0") i++;
    else if (text[i] >= "1" && text[i] <= "9") while (text[i] >= "0" && text[i] <= "9") i++;
    else fail("invalid number");
    let float = false;
    if (text[i] === ".") {
      float = true;
      i++;
      if (!(text[i] >= "0" && text[i] <= "9")) fail("invalid number");
      while (text[i] >= "0" && text[i] <= "9") i++;
    }
    if (text[i] === "e" || text[i] === "E") {
      float = true;
      i++;
      if (text[i] === "+" || text[i] === "-") i++;
      if (!(text[i] >= "0" && text[i] <= "9")) fail("invalid number");
      while (text[i] >= "0" && text[i] <= "9") i++;
    }
    const literal = text.slice(start, i);
    const value = Number(literal);
    if (float) return Number.isInteger(value) ? { value, note: "float" } : { value };
    return Number.isSafeInteger(value) ? { value } : { value, note: literal.replace(/^-0$/, "0") };
  };

  const parseValue = (depth: number): unknown => {
    skipSpace();
    const c = text[i];
    if (c === "{") {
      if (depth >= maxDepth) fail(`nesting deeper than ${maxDepth}`);
      i++;
      const out: Record<string, unknown> = {};
      const keys: string[] = [];
      let numbers: JsonSource["numbers"];
      skipSpace();
      if (text[i] === "}") {
        i++;
        return out;
      }
      for (;;) {
        skipSpace();
        if (text[i] !== '"') fail("expected a string key");
        const key = parseString();
        skipSpace();
        if (text[i] !== ":") fail("expected ':'");
        i++;
        skipSpace();
        let value: unknown;
        if (text[i] === "-" || (text[i] >= "0" && text[i] <= "9")) {
          const n = parseNumber();
          value = n.value;
          if (n.note !== undefined) (numbers ??= new Map()).set(key, n.note);
          else numbers?.delete(key);
        } else {
          value = parseValue(depth + 1);
          numbers?.delete(key);
        }
        if (!Object.hasOwn(out, key)) keys.push(key);
        // defineProperty: a "__proto__" key is data, as with JSON.parse
        Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
        skipSpace();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          break;
        }
        fail("expected ',' or '}'");
      }
      const jsOrder = Object.keys(out);
      const reordered = keys.some((k, n) => jsOrder[n] !== k);
      if (reordered || numbers?.size) remember(out, { keys: reordered ? keys : undefined, numbers });
      return out;
    }
    if (c === "[") {
      if (depth >= maxDepth) fail(`nesting deeper than ${maxDepth}`);
      i++;
      const out: unknown[] = [];
      let numbers: JsonSource["numbers"];
      skipSpace();
      if (text[i] === "]") {
        i++;
        return out;
      }
      for (;;) {
        skipSpace();
        if (text[i] === "-" || (text[i] >= "0" && text[i] <= "9")) {
          const n = parseNumber();
          if (n.note !== undefined) (numbers ??= new Map()).set(out.length, n.note);
          out.push(n.value);
        } else {
          out.push(parseValue(depth + 1));
        }
        skipSpace();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          break;
        }
        fail("expected ',' or ']'");
      }
      if (numbers) remember(out, { numbers });
      return out;
    }
    if (c === '"') return parseString();
    if (c === "-" || (c >= "0" && c <= "9")) return parseNumber().value;
    if (text.startsWith("true", i)) {
      i += 4;
      return true;
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return false;
    }
    if (text.startsWith("null", i)) {
      i += 4;
      return null;
    }
    return fail(`unexpected character ${JSON.stringify(c)}`);
  };

  const value = parseValue(0);
  skipSpace();
  if (i < text.length) fail("unexpected text after the JSON value");
  return value;
}
