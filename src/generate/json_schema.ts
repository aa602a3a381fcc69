/**
 * A byte-level pushdown automaton for JSON that follows a JSON Schema: fed the output one byte at a
 * time, it says whether the bytes so far can still become a valid document. `./constraint.ts` runs
 * it over the token vocabulary to mask the tokens that cannot continue the output.
 *
 * Supported schema keywords (anything else that constrains values is refused up front, so that
 * what is generated always validates): `type` (one or a list), `properties`, `required`,
 * `additionalProperties` (false, true or a schema; generation keeps to the declared properties when
 * there are any), `items`, `prefixItems`, `minItems`, `maxItems`, `enum`, `const`, `anyOf`,
 * `oneOf` (as anyOf: the alternatives are assumed disjoint), `allOf` with one member, `$ref` to
 * `#`, `#/$defs/…` and `#/definitions/…`, `minLength`, `maxLength`, `minimum`, `maximum`,
 * `exclusiveMinimum`, `exclusiveMaximum` (numbers are then written without an exponent), and the
 * annotations (`title`, `description`, `default`, `examples`, `format`, `$schema`, `$id`,
 * `$comment`, `strict`, `nullable`, `deprecated`, `readOnly`, `writeOnly`).
 *
 * Whitespace between tokens is what compact and pretty-printed JSON use, as llama.cpp's JSON
 * grammar allows it: nothing, one space, or one newline and up to MAX_INDENT spaces or tabs (and
 * up to LEADING_WHITESPACE bytes of any whitespace before the document), so a model cannot stall
 * in an endless run of blank lines. Strings must be valid UTF-8 and escapes
 * valid JSON escapes.
 *
 * @module
 */
import { DeltaqError } from "../errors.ts";

/** The compiled form of a schema node. */
type Node =
  | { kind: "any" }
  | { kind: "object"; props: Map<string, Node>; keyBytes: string[]; required: Set<string>; extra: Node | null }
  | { kind: "array"; items: Node; prefix: Node[]; min: number; max: number }
  | { kind: "string"; min: number; max: number }
  | { kind: "number"; integer: boolean; bounds: Bounds | null }
  | { kind: "literal"; texts: string[] }
  | { kind: "anyOf"; options: Node[] }
  | { kind: "never" };

interface Bounds {
  min: number;
  max: number;
  minExclusive: boolean;
  maxExclusive: boolean;
}

const ANY: Node = { kind: "any" };
/** Indentation after a newline: at most this many spaces or tabs. */
const MAX_INDENT = 20;
/** Whitespace bytes allowed before the document. */
const LEADING_WHITESPACE = 4;

const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "format",
  "$schema",
  "$id",
  "$comment",
  "$defs",
  "definitions",
  "strict",
  "nullable",
  "deprecated",
  "readOnly",
  "writeOnly",
  "name",
]);
const HANDLED = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "enum",
  "const",
  "anyOf",
  "oneOf",
  "allOf",
  "$ref",
  "minLength",
  "maxLength",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
]);

/** A JSON Schema the automaton cannot enforce, or not a schema at all. */
export class SchemaError extends DeltaqError {}

/** JSON text as a "binary string": one char per UTF-8 byte (what the automaton compares with). */
function byteString(text: string): string {
  return String.fromCharCode(...new TextEncoder().encode(text));
}

/** Compiles a JSON Schema (an object, or `true`) into the automaton's nodes. */
export function compileSchema(schema: unknown): Node {
  const root = schema;
  const compiled = new Map<unknown, Node>();

  const resolve = (ref: string, path: string): unknown => {
    if (ref === "#") return root;
    const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(ref);
    const defs = m ? (root as Record<string, Record<string, unknown>>)?.[m[1]] : undefined;
    const name = m?.[2].replace(/~1/g, "/").replace(/~0/g, "~");
    if (!defs || name === undefined || !Object.hasOwn(defs, name)) {
      throw new SchemaError(`${path}: $ref ${JSON.stringify(ref)} does not point into #/$defs or #/definitions`);
    }
    return defs[name];
  };

  const compile = (s: unknown, path: string): Node => {
    if (s === true || (s !== null && typeof s === "object" && !Array.isArray(s) && Object.keys(s).length === 0)) return ANY;
    if (s === false) return { kind: "never" };
    if (s === null || typeof s !== "object" || Array.isArray(s)) throw new SchemaError(`${path}: a schema must be an object or a boolean`);
    const known = compiled.get(s);
    if (known) return known;
    // A placeholder first, filled in below, so recursive $refs point at it.
    const node = { kind: "any" } as Node;
    compiled.set(s, node);
    Object.assign(node, build(s as Record<string, unknown>, path));
    return node;
  };

  const build = (s: Record<string, unknown>, path: string): Node => {
    for (const key of Object.keys(s)) {
      if (!HANDLED.has(key) && !ANNOTATIONS.has(key)) {
        throw new SchemaError(`${path}: the keyword ${JSON.stringify(key)} is not supported in constrained output`);
      }
    }
    if (s.$ref !== undefined) {
      if (typeof s.$ref !== "string") throw new SchemaError(`${path}: $ref must be a string`);
      const others = Object.keys(s).filter((k) => HANDLED.has(k) && k !== "$ref");
      if (others.length > 0) throw new SchemaError(`${path}: $ref next to ${others.join(", ")} is not supported`);
      return compile(resolve(s.$ref, path), s.$ref);
    }
    if (s.allOf !== undefined) {
      if (!Array.isArray(s.allOf) || s.allOf.length !== 1) throw new SchemaError(`${path}: allOf is supported with one member only`);
      return compile(s.allOf[0], `${path}/allOf/0`);
    }
    for (const key of ["anyOf", "oneOf"] as const) {
      if (s[key] === undefined) continue;
      const list = s[key];
      if (!Array.isArray(list) || list.length === 0) throw new SchemaError(`${path}: ${key} must be a non-empty array`);
      const rest = Object.keys(s).filter((k) => HANDLED.has(k) && k !== key);
      if (rest.length > 0) throw new SchemaError(`${path}: ${key} next to ${rest.join(", ")} is not supported`);
      return { kind: "anyOf", options: list.map((x, i) => compile(x, `${path}/${key}/${i}`)) };
    }
    if (s.const !== undefined || s.enum !== undefined) {
      const values = s.const !== undefined ? [s.const] : s.enum;
      if (!Array.isArray(values) || values.length === 0) throw new SchemaError(`${path}: enum must be a non-empty array`);
      return { kind: "literal", texts: [...new Set(values.map((v) => byteString(JSON.stringify(v))))] };
    }
    const types = s.type === undefined ? undefined : Array.isArray(s.type) ? s.type : [s.type];
    const alternatives: Node[] = [];
    const want = (t: string) => types === undefined || types.includes(t);
    if (types !== undefined) {
      for (const t of types) {
        if (!["object", "array", "string", "number", "integer", "boolean", "null"].includes(t as string)) {
          throw new SchemaError(`${path}: unknown type ${JSON.stringify(t)}`);
        }
      }
    }
    const has = (...keys: string[]) => keys.some((k) => s[k] !== undefined);
    if (types === undefined && !has("properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")) {
      return ANY;
    }
    if (want("object") && (types !== undefined || has("properties", "required", "additionalProperties"))) {
      alternatives.push(objectNode(s, path));
    }
    if (want("array") && (types !== undefined || has("items", "prefixItems", "minItems", "maxItems"))) {
      alternatives.push(arrayNode(s, path));
    }
    if (want("string") && (types !== undefined || has("minLength", "maxLength"))) {
      const min = count(s.minLength, 0, path, "minLength");
      const max = count(s.maxLength, Infinity, path, "maxLength");
      alternatives.push({ kind: "string", min, max });
    }
    const numeric = has("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum");
    if (want("number") || (types?.includes("integer"))) {
      if (types === undefined ? numeric : true) {
        alternatives.push({ kind: "number", integer: !want("number"), bounds: numeric ? bounds(s, path) : null });
      }
    }
    if (types?.includes("boolean")) alternatives.push({ kind: "literal", texts: ["true", "false"] });
    if (types?.includes("null")) alternatives.push({ kind: "literal", texts: ["null"] });
    if (alternatives.length === 0) return { kind: "never" };
    return alternatives.length === 1 ? alternatives[0] : { kind: "anyOf", options: alternatives };
  };

  const objectNode = (s: Record<string, unknown>, path: string): Node => {
    const propsIn = s.properties ?? {};
    if (propsIn === null || typeof propsIn !== "object" || Array.isArray(propsIn)) throw new SchemaError(`${path}: properties must be an object`);
    const props = new Map<string, Node>();
    for (const [k, v] of Object.entries(propsIn)) props.set(k, compile(v, `${path}/properties/${k}`));
    const required = new Set<string>();
    if (s.required !== undefined) {
      if (!Array.isArray(s.required) || s.required.some((r) => typeof r !== "string")) throw new SchemaError(`${path}: required must be an array of strings`);
      for (const r of s.required as string[]) {
        if (!props.has(r)) {
          if (s.additionalProperties === false) throw new SchemaError(`${path}: required property ${JSON.stringify(r)} is not allowed by additionalProperties false`);
          props.set(r, s.additionalProperties === undefined || s.additionalProperties === true ? ANY : compile(s.additionalProperties, `${path}/additionalProperties`));
        }
        required.add(r);
      }
    }
    // With declared properties, generation keeps to them (a subset of what the schema allows).
    const extra = props.size > 0 || s.additionalProperties === false
      ? null
      : s.additionalProperties === undefined || s.additionalProperties === true
      ? ANY
      : compile(s.additionalProperties, `${path}/additionalProperties`);
    const keyBytes = [...props.keys()].map((k) => byteString(JSON.stringify(k)).slice(1, -1));
    return { kind: "object", props, keyBytes, required, extra };
  };

  const arrayNode = (s: Record<string, unknown>, path: string): Node => {
    const prefix = s.prefixItems === undefined ? [] : Array.isArray(s.prefixItems)
      ? s.prefixItems.map((x, i) => compile(x, `${path}/prefixItems/${i}`))
      : (() => {
        throw new SchemaError(`${path}: prefixItems must be an array`);
      })();
    const items = s.items === undefined ? ANY : compile(s.items, `${path}/items`);
    const min = count(s.minItems, 0, path, "minItems");
    const max = count(s.maxItems, Infinity, path, "maxItems");
    if (min > max) throw new SchemaError(`${path}: minItems is larger than maxItems`);
    return { kind: "array", items, prefix, min, max };
  };

  return compile(schema, "#");
}

function count(v: unknown, fallback: number, path: string, key: string): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new SchemaError(`${path}: ${key} must be a non-negative integer`);
  return v;
}

function bounds(s: Record<string, unknown>, path: string): Bounds {
  const num = (k: string) => {
    const v = s[k];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v)) throw new SchemaError(`${path}: ${k} must be a number`);
    return v;
  };
  const b: Bounds = { min: -Infinity, max: Infinity, minExclusive: false, maxExclusive: false };
  const min = num("minimum"), max = num("maximum"), xmin = num("exclusiveMinimum"), xmax = num("exclusiveMaximum");
  if (min !== undefined) b.min = min;
  if (xmin !== undefined && xmin >= b.min) [b.min, b.minExclusive] = [xmin, true];
  if (max !== undefined) b.max = max;
  if (xmax !== undefined && xmax <= b.max) [b.max, b.maxExclusive] = [xmax, true];
  if (b.min > b.max || (b.min === b.max && (b.minExclusive || b.maxExclusive))) throw new SchemaError(`${path}: no number satisfies the bounds`);
  return b;
}

// ---------------------------------------------------------------------------------------------
// The automaton. A state is a stack of frames (a linked list, shared between states: frames are
// immutable). Feeding a byte gives zero states (rejected), one, or several (anyOf alternatives
// still open).

/** One level of the stack. `parent` is what continues once this value is complete. */
export interface Stack {
  readonly frame: Frame;
  readonly parent: Stack | null;
}

type Frame =
  | { t: "value"; node: Node; ws: number } // before a value
  | { t: "object"; node: Extract<Node, { kind: "object" }>; phase: ObjectPhase; seen: string; key: string; ws: number }
  | { t: "array"; node: Extract<Node, { kind: "array" }>; n: number; phase: ArrayPhase; ws: number }
  | { t: "string"; min: number; max: number; len: number; esc: number; utf8: number; utf8Low: number; utf8High: number }
  | { t: "number"; node: Extract<Node, { kind: "number" }>; phase: NumberPhase; text: string }
  | { t: "literal"; texts: string[]; pos: number }
  | { t: "done"; ws: number };

const enum ObjectPhase {
  Open, // after '{': whitespace, a key or '}'
  Key, // inside a key's quotes
  Colon, // after a key: whitespace or ':'
  Value, // after ':': the value (a child frame)
  Next, // after a value: whitespace, ',' or '}'
  Comma, // after ',': whitespace or a key
}
const enum ArrayPhase {
  Open, // after '[': whitespace, a value or ']'
  Next, // after a value: whitespace, ',' or ']'
  Comma, // after ',': whitespace or a value
}
const enum NumberPhase {
  Minus, // after '-'
  Zero, // integer part is "0"
  Int, // in the integer part
  Dot, // after '.'
  Frac, // in the fraction
  Exp, // after 'e'
  ExpSign, // after 'e+' / 'e-'
  ExpDigits, // in the exponent
}

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

/**
 * The whitespace counter after `byte`, or -1 when no more whitespace may come here. Counter 0:
 * none yet; 1: one space (nothing more); 2 + k: a newline and k spaces or tabs.
 */
function moreWhitespace(ws: number, byte: number): number {
  if (ws === 0) return byte === 0x20 ? 1 : byte === 0x0a ? 2 : -1;
  if (ws >= 2 && ws - 2 < MAX_INDENT && (byte === 0x20 || byte === 0x09)) return ws + 1;
  return -1;
}
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;

/** The start state for a compiled schema: whitespace, then one value, then whitespace. */
export function startState(node: Node): Stack[] {
  return [{ frame: { t: "value", node, ws: 0 }, parent: { frame: { t: "done", ws: 0 }, parent: null } }];
}

/** The states after feeding `byte` to `state` (empty: the byte cannot come next). */
export function step(state: Stack, byte: number): Stack[] {
  const f = state.frame;
  const parent = state.parent;
  switch (f.t) {
    case "done":
      return isWs(byte) && moreWhitespace(f.ws, byte) >= 0 ? [{ frame: { t: "done", ws: moreWhitespace(f.ws, byte) }, parent }] : [];
    case "value": {
      if (isWs(byte)) {
        // Before the document any few whitespace bytes (a model's answer often starts after a
        // blank line); between tokens inside it, the compact/pretty rule.
        const ws = parent!.frame.t === "done" ? (f.ws < LEADING_WHITESPACE ? f.ws + 1 : -1) : moreWhitespace(f.ws, byte);
        return ws >= 0 ? [{ frame: { ...f, ws }, parent }] : [];
      }
      return startValue(f.node, byte, parent!);
    }
    case "string":
      return stepString(f, byte, parent!);
    case "number":
      return stepNumber(f, byte, parent!);
    case "literal": {
      const texts = f.texts.filter((t) => t.length > f.pos && t.charCodeAt(f.pos) === byte);
      const out: Stack[] = [];
      if (texts.length > 0) out.push({ frame: { t: "literal", texts, pos: f.pos + 1 }, parent });
      // A complete literal (a number in an enum may have longer siblings) ends before this byte.
      if (f.texts.some((t) => t.length === f.pos)) out.push(...feedAll(complete(parent!), byte));
      return out;
    }
    case "object":
      return stepObject(f, byte, parent!);
    case "array":
      return stepArray(f, byte, parent!);
  }
}

function feedAll(states: Stack[], byte: number): Stack[] {
  const out: Stack[] = [];
  for (const s of states) out.push(...step(s, byte));
  return out;
}

/** The parent once its child value is complete. */
function complete(parent: Stack): Stack[] {
  const f = parent.frame;
  if (f.t === "object") {
    // A free key's string completes into the colon; a value into what follows it.
    const phase = f.phase === ObjectPhase.Key ? ObjectPhase.Colon : ObjectPhase.Next;
    return [{ frame: { ...f, phase, ws: 0 }, parent: parent.parent }];
  }
  if (f.t === "array") return [{ frame: { ...f, n: f.n + 1, phase: ArrayPhase.Next, ws: 0 }, parent: parent.parent }];
  if (f.t === "done") return [parent];
  throw new Error(`json automaton: a ${f.t} frame has no child`);
}

function startValue(node: Node, byte: number, parent: Stack): Stack[] {
  switch (node.kind) {
    case "never":
      return [];
    case "anyOf":
      return node.options.flatMap((o) => startValue(o, byte, parent));
    case "any":
      return startValue(ANY_VALUE, byte, parent);
    case "object":
      return byte === 0x7b ? [{ frame: { t: "object", node, phase: ObjectPhase.Open, seen: "", key: "", ws: 0 }, parent }] : [];
    case "array":
      return byte === 0x5b ? [{ frame: { t: "array", node, n: 0, phase: ArrayPhase.Open, ws: 0 }, parent }] : [];
    case "string":
      return byte === 0x22 ? [{ frame: newString(node.min, node.max), parent }] : [];
    case "number": {
      const frame = { t: "number" as const, node, phase: NumberPhase.Minus, text: "" };
      if (byte === 0x2d) return viable(frame, "-") ? [{ frame: { ...frame, text: "-" }, parent }] : [];
      if (!isDigit(byte)) return [];
      const text = String.fromCharCode(byte);
      const next = { ...frame, phase: byte === 0x30 ? NumberPhase.Zero : NumberPhase.Int, text };
      return viable(next, text) ? [{ frame: next, parent }] : [];
    }
    case "literal": {
      const texts = node.texts.filter((t) => t.charCodeAt(0) === byte);
      return texts.length > 0 ? [{ frame: { t: "literal", texts, pos: 1 }, parent }] : [];
    }
  }
}

/** Any JSON value: every kind at once. */
const ANY_VALUE: Node = {
  kind: "anyOf",
  options: [
    { kind: "object", props: new Map(), keyBytes: [], required: new Set(), extra: ANY },
    { kind: "array", items: ANY, prefix: [], min: 0, max: Infinity },
    { kind: "string", min: 0, max: Infinity },
    { kind: "number", integer: false, bounds: null },
    { kind: "literal", texts: ["true", "false", "null"] },
  ],
};

function newString(min: number, max: number): Frame {
  return { t: "string", min, max, len: 0, esc: 0, utf8: 0, utf8Low: 0x80, utf8High: 0xbf };
}

function stepString(f: Extract<Frame, { t: "string" }>, byte: number, parent: Stack): Stack[] {
  const same = (changes: Partial<typeof f>): Stack[] => [{ frame: { ...f, ...changes }, parent }];
  if (f.utf8 > 0) {
    if (byte < f.utf8Low || byte > f.utf8High) return [];
    return same({ utf8: f.utf8 - 1, utf8Low: 0x80, utf8High: 0xbf });
  }
  if (f.esc === 1) {
    if (byte === 0x75) return same({ esc: 2 }); // \u then 4 hex digits
    return '"\\/bfnrt'.includes(String.fromCharCode(byte)) ? same({ esc: 0 }) : [];
  }
  if (f.esc >= 2) {
    const hex = isDigit(byte) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66);
    if (!hex) return [];
    return same({ esc: f.esc === 5 ? 0 : f.esc + 1 });
  }
  if (byte === 0x22) return f.len >= f.min ? complete(parent) : [];
  if (byte < 0x20) return [];
  // A new character starts here.
  if (f.len >= f.max) return [];
  if (byte === 0x5c) return same({ esc: 1, len: f.len + 1 });
  if (byte < 0x80) return f.max === Infinity && f.min === 0 ? [{ frame: f, parent }] : same({ len: f.len + 1 });
  // UTF-8 lead bytes, with the second-byte ranges that exclude overlong forms and surrogates.
  if (byte >= 0xc2 && byte <= 0xdf) return same({ utf8: 1, len: f.len + 1 });
  if (byte === 0xe0) return same({ utf8: 2, utf8Low: 0xa0, len: f.len + 1 });
  if (byte === 0xed) return same({ utf8: 2, utf8High: 0x9f, len: f.len + 1 });
  if (byte >= 0xe1 && byte <= 0xef) return same({ utf8: 2, len: f.len + 1 });
  if (byte === 0xf0) return same({ utf8: 3, utf8Low: 0x90, len: f.len + 1 });
  if (byte >= 0xf1 && byte <= 0xf3) return same({ utf8: 3, len: f.len + 1 });
  if (byte === 0xf4) return same({ utf8: 3, utf8High: 0x8f, len: f.len + 1 });
  return [];
}

/**
 * Whether the number being written can still end inside its bounds. Without an exponent, the
 * magnitudes reachable from a prefix are: after "-", any; from "0", [0, 1); from digits P, stopping
 * or adding a fraction or k more digits, [P·10^k, (P+1)·10^k) for k ≥ 0; from "P.F",
 * [P.F, P.F + 10^-|F|).
 */
function viable(f: Extract<Frame, { t: "number" }>, text: string): boolean {
  const b = f.node.bounds;
  if (!b) return true;
  const negative = text.startsWith("-");
  const [intPart, frac] = (negative ? text.slice(1) : text).split(".");
  const magnitudes: Array<[number, number]> = [];
  if (intPart === "") magnitudes.push([0, Infinity]);
  else if (frac === undefined && intPart === "0") magnitudes.push([0, 1]);
  else if (frac === undefined) {
    const p = Number(intPart);
    for (let k = 0; k < 25; k++) magnitudes.push([p * 10 ** k, (p + 1) * 10 ** k]);
    magnitudes.push([p * 1e25, Infinity]);
  } else {
    const lo = Number(`${intPart}.${frac}0`);
    magnitudes.push([lo, lo + 10 ** -Math.max(frac.length, 0)]);
  }
  return magnitudes.some(([lo, hi]) => {
    // the values: [lo, hi) for a positive number, (-hi, -lo] for a negative one; the end at lo is reached
    const [from, to, reached] = negative ? [-hi, -lo, -lo] : [lo, hi, lo];
    return withinBounds(b, reached) || Math.max(from, b.min) < Math.min(to, b.max);
  });
}

function withinBounds(b: Bounds, v: number): boolean {
  return (v > b.min || (v === b.min && !b.minExclusive)) && (v < b.max || (v === b.max && !b.maxExclusive));
}

/** Whether a finished number text satisfies the bounds. */
function inBounds(node: Extract<Node, { kind: "number" }>, text: string): boolean {
  return node.bounds === null || withinBounds(node.bounds, Number(text));
}

function stepNumber(f: Extract<Frame, { t: "number" }>, byte: number, parent: Stack): Stack[] {
  const go = (phase: NumberPhase): Stack[] => {
    const text = f.text + String.fromCharCode(byte);
    const next = { ...f, phase, text };
    return viable(next, text) ? [{ frame: next, parent }] : [];
  };
  const ends = () => inBounds(f.node, f.text) ? feedAll(complete(parent), byte) : [];
  const noExp = f.node.integer || f.node.bounds !== null;
  switch (f.phase) {
    case NumberPhase.Minus:
      if (byte === 0x30) return go(NumberPhase.Zero);
      return isDigit(byte) ? go(NumberPhase.Int) : [];
    case NumberPhase.Zero:
    case NumberPhase.Int:
      if (isDigit(byte) && f.phase === NumberPhase.Int) return go(NumberPhase.Int);
      if (byte === 0x2e && !f.node.integer) return go(NumberPhase.Dot);
      if ((byte === 0x65 || byte === 0x45) && !noExp) return go(NumberPhase.Exp);
      return ends();
    case NumberPhase.Dot:
      return isDigit(byte) ? go(NumberPhase.Frac) : [];
    case NumberPhase.Frac:
      if (isDigit(byte)) return go(NumberPhase.Frac);
      if ((byte === 0x65 || byte === 0x45) && !noExp) return go(NumberPhase.Exp);
      return ends();
    case NumberPhase.Exp:
      if (byte === 0x2b || byte === 0x2d) return go(NumberPhase.ExpSign);
      return isDigit(byte) ? go(NumberPhase.ExpDigits) : [];
    case NumberPhase.ExpSign:
      return isDigit(byte) ? go(NumberPhase.ExpDigits) : [];
    case NumberPhase.ExpDigits:
      return isDigit(byte) ? go(NumberPhase.ExpDigits) : ends();
  }
}

function missingRequired(f: Extract<Frame, { t: "object" }>): boolean {
  for (const r of f.node.required) if (!f.seen.includes(`\u0000${r}\u0000`)) return true;
  return false;
}

function stepObject(f: Extract<Frame, { t: "object" }>, byte: number, parent: Stack): Stack[] {
  const with_ = (changes: Partial<typeof f>): Stack[] => [{ frame: { ...f, ...changes }, parent }];
  const node = f.node;
  const openKey = (): Stack[] => {
    if (node.extra) {
      // A free key: any string, completing into the Colon phase (see complete()).
      const self: Stack = { frame: { ...f, phase: ObjectPhase.Key, ws: 0 }, parent };
      return [{ frame: newString(0, Infinity), parent: self }];
    }
    return hasKeyWithPrefix(f, "") ? with_({ phase: ObjectPhase.Key, key: "", ws: 0 }) : [];
  };
  switch (f.phase) {
    case ObjectPhase.Open:
    case ObjectPhase.Comma:
      if (isWs(byte)) return moreWhitespace(f.ws, byte) >= 0 ? with_({ ws: moreWhitespace(f.ws, byte) }) : [];
      if (byte === 0x22) return openKey();
      if (byte === 0x7d && f.phase === ObjectPhase.Open && !missingRequired(f)) return complete(parent);
      return [];
    case ObjectPhase.Key: {
      if (node.extra) throw new Error("json automaton: an object frame waiting for its key was fed directly");
      if (byte === 0x22) {
        return node.keyBytes.includes(f.key) && !f.seen.includes(`\u0000${keyName(f)}\u0000`)
          ? with_({ phase: ObjectPhase.Colon, ws: 0 })
          : [];
      }
      const key = f.key + String.fromCharCode(byte);
      return hasKeyWithPrefix(f, key) ? with_({ key }) : [];
    }
    case ObjectPhase.Colon:
      if (isWs(byte)) return moreWhitespace(f.ws, byte) >= 0 ? with_({ ws: moreWhitespace(f.ws, byte) }) : [];
      if (byte !== 0x3a) return [];
      {
        const name = node.extra ? "" : keyName(f);
        const child = node.extra ? node.extra : node.props.get(name)!;
        const self: Stack = { frame: { ...f, phase: ObjectPhase.Value, seen: name ? `${f.seen}\u0000${name}\u0000` : f.seen, ws: 0 }, parent };
        return [{ frame: { t: "value", node: child, ws: 0 }, parent: self }];
      }
    case ObjectPhase.Value:
      throw new Error("json automaton: an object frame waiting for its value was fed directly");
    case ObjectPhase.Next:
      if (isWs(byte)) return moreWhitespace(f.ws, byte) >= 0 ? with_({ ws: moreWhitespace(f.ws, byte) }) : [];
      if (byte === 0x2c) {
        const more = node.extra !== null || hasKeyWithPrefix(f, "");
        return more ? with_({ phase: ObjectPhase.Comma, ws: 0 }) : [];
      }
      if (byte === 0x7d && !missingRequired(f)) return complete(parent);
      return [];
  }
}

/** The property name whose JSON-escaped bytes are the key read so far. */
function keyName(f: Extract<Frame, { t: "object" }>): string {
  const i = f.node.keyBytes.indexOf(f.key);
  return i < 0 ? "" : [...f.node.props.keys()][i];
}

function hasKeyWithPrefix(f: Extract<Frame, { t: "object" }>, prefix: string): boolean {
  const names = [...f.node.props.keys()];
  return f.node.keyBytes.some((k, i) => k.startsWith(prefix) && !f.seen.includes(`\u0000${names[i]}\u0000`));
}

function stepArray(f: Extract<Frame, { t: "array" }>, byte: number, parent: Stack): Stack[] {
  const node = f.node;
  const with_ = (changes: Partial<typeof f>): Stack[] => [{ frame: { ...f, ...changes }, parent }];
  const itemNode = f.n < node.prefix.length ? node.prefix[f.n] : node.items;
  switch (f.phase) {
    case ArrayPhase.Open:
    case ArrayPhase.Comma: {
      if (isWs(byte)) return moreWhitespace(f.ws, byte) >= 0 ? with_({ ws: moreWhitespace(f.ws, byte) }) : [];
      if (byte === 0x5d && f.phase === ArrayPhase.Open && node.min === 0) return complete(parent);
      if (f.n >= node.max) return [];
      const self: Stack = { frame: f, parent };
      return startValue(itemNode, byte, self);
    }
    case ArrayPhase.Next:
      if (isWs(byte)) return moreWhitespace(f.ws, byte) >= 0 ? with_({ ws: moreWhitespace(f.ws, byte) }) : [];
      if (byte === 0x2c && f.n < node.max) return with_({ phase: ArrayPhase.Comma, ws: 0 });
      if (byte === 0x5d && f.n >= node.min) return complete(parent);
      return [];
  }
}

/** Whether the output may end in this state (the document is complete). */
export function canEnd(state: Stack): boolean {
  const f = state.frame;
  if (f.t === "done") return true;
  const atTop = state.parent?.frame.t === "done";
  if (!atTop) return false;
  if (f.t === "number") {
    return (f.phase === NumberPhase.Zero || f.phase === NumberPhase.Int || f.phase === NumberPhase.Frac ||
      f.phase === NumberPhase.ExpDigits) && inBounds(f.node, f.text);
  }
  if (f.t === "literal") return f.texts.some((t) => t.length === f.pos);
  return false;
}

/**
 * Inside a string, between characters: how many more characters it may take (the mask's fast
 * path); undefined in any other state.
 */
export function stringRoom(state: Stack): number | undefined {
  const f = state.frame;
  return f.t === "string" && f.esc === 0 && f.utf8 === 0 ? f.max - f.len : undefined;
}

/** A string identifying the state (equal strings: equal futures), for caching masks. */
export function stateKey(state: Stack): string {
  let key = "";
  for (let s: Stack | null = state; s; s = s.parent) key += frameKey(s.frame) + "|";
  return key;
}

const nodeIds = new WeakMap<object, number>();
let nextNodeId = 1;
function nodeId(node: object): number {
  let id = nodeIds.get(node);
  if (id === undefined) nodeIds.set(node, id = nextNodeId++);
  return id;
}

function frameKey(f: Frame): string {
  switch (f.t) {
    case "done":
      return `d${f.ws}`;
    case "value":
      return `v${nodeId(f.node)},${f.ws}`;
    case "string":
      return `s${f.min},${f.max},${f.len},${f.esc},${f.utf8},${f.utf8Low},${f.utf8High}`;
    case "number":
      return `n${nodeId(f.node)},${f.phase},${f.node.bounds ? f.text : ""}`;
    case "literal":
      return `l${f.pos},${f.texts.join("\u0001")}`;
    case "object":
      return `o${nodeId(f.node)},${f.phase},${f.seen},${f.key},${f.ws}`;
    case "array": {
      // Past the prefix items and minItems, with no maxItems, the count no longer changes the future.
      const n = f.node.max === Infinity ? Math.min(f.n, Math.max(f.node.prefix.length, f.node.min)) : f.n;
      return `a${nodeId(f.node)},${n},${f.phase},${f.ws}`;
    }
  }
}
