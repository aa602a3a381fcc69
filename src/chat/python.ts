/**
 * Python's semantics for chat templates run by `@huggingface/jinja`. A chat template is trained on
 * what Python jinja2 printed (transformers' `apply_chat_template`), and the JavaScript engine prints
 * some values JavaScript's way. This module puts Python back where a template can tell:
 *
 * - values: JSON objects keep their key order (`{"b":1,"10":2}` iterates b, 10 as a Python dict
 *   does; JavaScript moves integer-like keys first), float literals stay floats (`1.0`), integers
 *   past 2^53 keep their digits — see `./json.ts`, whose facts `toRuntime` reads;
 * - `x | string`, `{{ x }}` and `a ~ b` print `None`, `True`/`False`, floats as Python's `repr`
 *   (`1e-07`, `1e+16`, `1.0`) and containers as Python's `repr` (`{'a': None}`);
 * - `x | tojson` is transformers' filter, `json.dumps(x, ensure_ascii=False, indent=None,
 *   separators=None, sort_keys=False)`, with Python's number formatting.
 *
 * The package exports no value classes and no hooks, so the classes are taken from values its
 * `Environment` creates, and `pythonInterpreter` overrides three of the interpreter's methods on the
 * instance (the package version is pinned; tests/chat/jinja2_test.ts checks the result against
 * jinja2 itself).
 *
 * @module
 */
import { Environment, Interpreter } from "npm:@huggingface/jinja@0.5.11";
import { jsonSource } from "./json.ts";

/** A value inside the Jinja runtime (the package's `RuntimeValue`). */
export interface RuntimeValue {
  type: string;
  // deno-lint-ignore no-explicit-any
  value: any;
}
// deno-lint-ignore no-explicit-any
type ValueClass = new (value?: any) => RuntimeValue;

const probe = new Environment();
let probes = 0;
const classOf = (sample: unknown) => probe.set(`probe${probes++}`, sample).constructor as ValueClass;

/** The runtime's value classes. */
export const Values = {
  String: classOf(""),
  Integer: classOf(1),
  Float: classOf(1.5),
  Boolean: classOf(true),
  Null: classOf(null),
  Undefined: classOf(undefined),
  Array: classOf([]),
  Object: classOf({}),
};

/** An integer whose digits a JavaScript number cannot hold (beyond 2^53). */
class ExactInteger extends Values.Integer {
  constructor(value: number, readonly digits: string) {
    super(value);
  }
}

/**
 * A JavaScript value as a runtime value, the way Python would hold it after `json.loads`: objects
 * from `parseJson` keep their written key order and number kinds, and a `Map` keeps its order.
 * Functions are left to the runtime's own conversion.
 */
export function toRuntime(value: unknown): RuntimeValue {
  switch (typeof value) {
    case "number":
      return Number.isInteger(value) ? new Values.Integer(value) : new Values.Float(value);
    case "string":
      return new Values.String(value);
    case "boolean":
      return new Values.Boolean(value);
    case "undefined":
      return new Values.Undefined();
    case "object": {
      if (value === null) return new Values.Null();
      const source = jsonSource(value);
      const member = (key: string | number, v: unknown) => {
        const note = source?.numbers?.get(key);
        if (note === undefined || typeof v !== "number") return toRuntime(v);
        return note === "float" ? new Values.Float(v) : new ExactInteger(v, note);
      };
      if (Array.isArray(value)) return new Values.Array(value.map((v, i) => member(i, v)));
      if (value instanceof Map) {
        return new Values.Object(new Map([...value].map(([k, v]) => [String(k), toRuntime(v)])));
      }
      const record = value as Record<string, unknown>;
      const keys = source?.keys ?? Object.keys(record);
      return new Values.Object(new Map(keys.map((k) => [k, member(k, record[k])])));
    }
    default: {
      const name = `probe${probes++}`;
      return probe.set(name, value) as RuntimeValue;
    }
  }
}

/** Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16. */
export function pythonFloat(x: number): string {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mantissa, exponentText] = x.toExponential().split("e");
  const exponent = Number(exponentText);
  if (exponent >= -4 && exponent < 16) {
    const fixed = String(x); // JavaScript prints fixed notation in this range, same digits
    return fixed.includes(".") ? fixed : `${fixed}.0`;
  }
  const sign = exponent < 0 ? "-" : "+";
  return `${mantissa}e${sign}${String(Math.abs(exponent)).padStart(2, "0")}`;
}

// Python's str.isprintable() is false for these categories (space excepted).
const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

/** Python's `repr(str)`. */
export function pythonStringRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    if (ch === quote || ch === "\\") out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch !== " " && NOT_PRINTABLE.test(ch)) {
      const cp = ch.codePointAt(0)!;
      const hex = cp.toString(16);
      out += cp < 0x100 ? `\\x${hex.padStart(2, "0")}` : cp < 0x10000 ? `\\u${hex.padStart(4, "0")}` : `\\U${hex.padStart(8, "0")}`;
    } else out += ch;
  }
  return out + quote;
}

function integerText(v: RuntimeValue): string {
  return v instanceof ExactInteger ? v.digits : String(v.value);
}

/** Python's `repr(x)` of a runtime value. */
export function pythonRepr(v: RuntimeValue): string {
  switch (v.type) {
    case "StringValue":
      return pythonStringRepr(v.value);
    case "ArrayValue":
      return `[${(v.value as RuntimeValue[]).map(pythonRepr).join(", ")}]`;
    case "TupleValue": {
      const items = (v.value as RuntimeValue[]).map(pythonRepr);
      return items.length === 1 ? `(${items[0]},)` : `(${items.join(", ")})`;
    }
    case "ObjectValue":
    case "KeywordArgumentsValue":
      return `{${
        [...(v.value as Map<string, RuntimeValue>)].map(([k, x]) => `${pythonStringRepr(k)}: ${pythonRepr(x)}`).join(", ")
      }}`;
    default:
      return pythonStr(v);
  }
}

/** Python's `str(x)` of a runtime value (what `{{ x }}` and `x | string` print). */
export function pythonStr(v: RuntimeValue): string {
  switch (v.type) {
    case "StringValue":
      return v.value;
    case "NullValue":
      return "None";
    case "UndefinedValue":
      return "";
    case "BooleanValue":
      return v.value ? "True" : "False";
    case "IntegerValue":
      return integerText(v);
    case "FloatValue":
      return pythonFloat(v.value);
    case "ArrayValue":
    case "TupleValue":
    case "ObjectValue":
    case "KeywordArgumentsValue":
      return pythonRepr(v);
    default:
      return String(v);
  }
}

export interface JsonDumpsOptions {
  ensureAscii?: boolean;
  indent?: number | string | null;
  separators?: [string, string] | null;
  sortKeys?: boolean;
}

/** Python's `json.dumps` of a runtime value (transformers' `tojson` defaults: ensure_ascii off). */
export function pythonJsonDumps(value: RuntimeValue, options: JsonDumpsOptions = {}): string {
  const indent = options.indent === null || options.indent === undefined
    ? undefined
    : typeof options.indent === "number" ? " ".repeat(Math.max(0, options.indent)) : options.indent;
  const [itemSeparator, keySeparator] = options.separators ?? (indent !== undefined ? [",", ": "] : [", ", ": "]);
  const string = (s: string) => {
    const json = JSON.stringify(s);
    return options.ensureAscii
      ? json.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
      : json;
  };
  const dump = (v: RuntimeValue, level: number): string => {
    switch (v.type) {
      case "NullValue":
        return "null";
      case "BooleanValue":
        return v.value ? "true" : "false";
      case "IntegerValue":
        return integerText(v);
      case "FloatValue": {
        const x = v.value as number;
        if (Number.isNaN(x)) return "NaN";
        if (!Number.isFinite(x)) return x > 0 ? "Infinity" : "-Infinity";
        return pythonFloat(x);
      }
      case "StringValue":
        return string(v.value);
      case "ArrayValue":
      case "TupleValue":
      case "ObjectValue":
      case "KeywordArgumentsValue": {
        const isObject = v.type === "ObjectValue" || v.type === "KeywordArgumentsValue";
        let items: string[];
        if (isObject) {
          let entries = [...(v.value as Map<string, RuntimeValue>)];
          if (options.sortKeys) entries = entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
          items = entries.map(([k, x]) => `${string(k)}${keySeparator}${dump(x, level + 1)}`);
        } else {
          items = (v.value as RuntimeValue[]).map((x) => dump(x, level + 1));
        }
        const [open, close] = isObject ? ["{", "}"] : ["[", "]"];
        if (items.length === 0) return open + close;
        if (indent === undefined) return open + items.join(itemSeparator) + close;
        const inner = "\n" + indent.repeat(level + 1);
        return open + inner + items.join(itemSeparator + inner) + "\n" + indent.repeat(level) + close;
      }
      default: {
        const typeName = v.type === "UndefinedValue" ? "Undefined" : v.type.replace(/Value$/, "");
        throw new Error(`Object of type ${typeName} is not JSON serializable`);
      }
    }
  };
  return dump(value, 0);
}

// The interpreter's internals that are overridden or called (private in the package's typings).
interface Node {
  type: string;
  // deno-lint-ignore no-explicit-any
  [field: string]: any;
}
interface Internals {
  evaluate(node: Node, env: Environment): RuntimeValue;
  evaluateArguments(args: Node[], env: Environment): [RuntimeValue[], Map<string, RuntimeValue>];
  applyFilter(operand: RuntimeValue, filter: Node, env: Environment): RuntimeValue;
  evaluateBlock(statements: Node[], env: Environment): RuntimeValue;
  evaluateBinaryExpression(node: Node, env: Environment): RuntimeValue;
}

/** Statements that print nothing even when they evaluate to None (`{% set %}`, macros, comments…). */
const SILENT_STATEMENTS = new Set(["Set", "Macro", "Comment", "CallStatement", "FilterStatement", "If", "For"]);

/** An interpreter that prints, concatenates and serialises values as Python jinja2 does. */
export function pythonInterpreter(env: Environment): Interpreter {
  const interpreter = new Interpreter(env);
  const self = interpreter as unknown as Internals;
  const applyFilter = self.applyFilter.bind(self);
  const binary = self.evaluateBinaryExpression.bind(self);

  self.applyFilter = (operand, filter, scope) => {
    const name = filter.type === "Identifier"
      ? filter.value
      : filter.type === "CallExpression" && filter.callee?.type === "Identifier"
      ? filter.callee.value
      : undefined;
    if (name === "string" && filter.type === "Identifier") return new Values.String(pythonStr(operand));
    if (name === "tojson") {
      const [args, kwargs] = filter.type === "CallExpression"
        ? self.evaluateArguments(filter.args, scope)
        : [[], new Map<string, RuntimeValue>()];
      // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
      const arg = (i: number, key: string) => kwargs.get(key) ?? args[i];
      const separators = arg(2, "separators");
      return new Values.String(pythonJsonDumps(operand, {
        ensureAscii: arg(0, "ensure_ascii")?.value === true,
        indent: arg(1, "indent")?.value ?? null,
        separators: Array.isArray(separators?.value)
          ? (separators.value as RuntimeValue[]).map((s) => String(s.value)) as [string, string]
          : null,
        sortKeys: arg(3, "sort_keys")?.value === true,
      }));
    }
    return applyFilter(operand, filter, scope);
  };

  self.evaluateBlock = (statements, scope) => {
    let out = "";
    for (const statement of statements) {
      const v = self.evaluate(statement, scope);
      if (v.type === "UndefinedValue") continue;
      if (v.type === "NullValue" && SILENT_STATEMENTS.has(statement.type)) continue;
      out += pythonStr(v);
    }
    return new Values.String(out);
  };

  self.evaluateBinaryExpression = (node, scope) => {
    if (node.operator?.value !== "~") return binary(node, scope);
    const left = self.evaluate(node.left, scope);
    const right = self.evaluate(node.right, scope);
    return new Values.String(pythonStr(left) + pythonStr(right));
  };
  return interpreter;
}
