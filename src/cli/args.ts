/**
 * Command-line flags: one table that drives parsing, validation and `--help`. A value-taking flag
 * always takes the next argument, so `-n -5` reaches validation (and a clear message) instead of
 * being mistaken for another flag.
 */
import { DeltaqError } from "../errors.ts";
import { CACHE_TYPES, type CacheType } from "../native/kernels.ts";

type Kind = "string" | "int" | "number" | "flag";

export interface FlagSpec {
  long: string;
  short?: string;
  /** Other spellings with one dash, as llama.cpp has them (e.g. "ctk" for -ctk). */
  aliases?: string[];
  kind: Kind;
  /** Shown in --help; the placeholder for the value comes first (e.g. "N  tokens to generate"). */
  help: string;
  /** For numbers: allowed range (inclusive). */
  min?: number;
  max?: number;
}

export const CACHE_TYPE_K: FlagSpec = {
  long: "cache-type-k",
  aliases: ["ctk"],
  kind: "string",
  help: "TYPE  KV cache type for K: f16 (default), q8_0, q4_0 (also -ctk)",
};
export const CACHE_TYPE_V: FlagSpec = {
  long: "cache-type-v",
  aliases: ["ctv"],
  kind: "string",
  help: "TYPE  KV cache type for V: f16 (default), q8_0, q4_0 (also -ctv)",
};

/** A cache type flag's value, checked. */
export function cacheTypeFlag(value: unknown, flag: string): CacheType | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string" && value in CACHE_TYPES) return value as CacheType;
  throw new DeltaqError(`${flag} must be one of ${Object.keys(CACHE_TYPES).join(", ")}, got ${JSON.stringify(value)}`);
}

export const FLAGS: FlagSpec[] = [
  { long: "model", short: "m", kind: "string", help: "FILE  the GGUF model to run" },
  { long: "hf", kind: "string", help: "REPO[:QUANT]  download a GGUF from Hugging Face (e.g. unsloth/Qwen3.5-4B-GGUF:Q4_K_M)" },
  { long: "prompt", short: "p", kind: "string", help: "TEXT  the prompt; `-p -` reads it from stdin" },
  { long: "file", short: "f", kind: "string", help: "FILE  read the prompt from a file" },
  { long: "system", kind: "string", help: "TEXT  system message (chat mode)" },
  { long: "n-predict", short: "n", kind: "int", min: -1, help: "N  tokens to generate (-1: until the model stops; default -1)" },
  { long: "temp", kind: "number", min: 0, max: 100, help: "T  sampling temperature, 0 = greedy (default 0.8)" },
  { long: "top-k", kind: "int", min: 0, help: "K  keep the K most likely tokens, 0 = off (default 40)" },
  { long: "top-p", kind: "number", min: 0, max: 1, help: "P  nucleus sampling threshold, 1 = off (default 0.95)" },
  { long: "min-p", kind: "number", min: 0, max: 1, help: "P  drop tokens below P × the top probability (default 0.05)" },
  { long: "repeat-penalty", kind: "number", min: 0, max: 100, help: "X  penalty for repeating recent tokens, 1 = off (default 1)" },
  { long: "presence-penalty", kind: "number", min: -100, max: 100, help: "X  presence penalty (default 0)" },
  { long: "frequency-penalty", kind: "number", min: -100, max: 100, help: "X  frequency penalty (default 0)" },
  { long: "seed", kind: "int", min: 0, max: 0xffffffff, help: "N  random seed (default: random)" },
  { long: "threads", short: "t", kind: "int", min: 1, max: 64, help: "N  worker threads (default: physical performance cores)" },
  {
    long: "ctx",
    short: "c",
    kind: "int",
    min: 0,
    max: 1 << 24,
    help: "N  context length in tokens (default 4096; 0 = the model's trained context); memory grows with the tokens held",
  },
  CACHE_TYPE_K,
  CACHE_TYPE_V,
  { long: "stop", kind: "string", help: "TEXT  stop generating at this text (repeatable)" },
  { long: "chat", kind: "flag", help: "render the prompt with the model's chat template (default when it has one)" },
  { long: "raw", kind: "flag", help: "no template: feed the prompt as is, print only the continuation" },
  { long: "think", kind: "flag", help: "let the model think before answering (Qwen3.5 default)" },
  { long: "no-think", kind: "flag", help: "answer without thinking" },
  { long: "show-thinking", kind: "flag", help: "print the thinking too (dimmed on a terminal, else on stderr)" },
  { long: "interactive", short: "i", kind: "flag", help: "multi-turn chat in the terminal" },
  { long: "json", kind: "flag", help: "print one JSON object: text, thinking, token counts, timings" },
  { long: "special", kind: "flag", help: "in --raw mode, parse control-token texts like <|im_start|> in the prompt" },
  { long: "help", short: "h", kind: "flag", help: "show this help" },
  { long: "version", kind: "flag", help: "show the version" },
];

export type ParsedFlags = {
  [key: string]: string | number | boolean | string[] | undefined;
};

/** Parses `args` against `specs`; returns values by long name (camelCase) and positionals. */
export function parseFlags(args: string[], specs: FlagSpec[] = FLAGS): { flags: ParsedFlags; positionals: string[] } {
  const byLong = new Map(specs.map((s) => [s.long, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s]));
  const byAlias = new Map(specs.flatMap((s) => (s.aliases ?? []).map((a) => [a, s] as const)));
  const flags: ParsedFlags = {};
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    let spec: FlagSpec | undefined;
    let inline: string | undefined;
    let shown: string;
    const alias = arg.startsWith("-") && !arg.startsWith("--") ? arg.slice(1).split("=")[0] : "";
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      if (eq >= 0) inline = arg.slice(eq + 1);
      spec = byLong.get(name);
      if (!spec) throw new DeltaqError(`unknown option --${name} (see --help)`);
      shown = `--${spec.long}`;
    } else if (byAlias.has(alias)) {
      spec = byAlias.get(alias)!;
      if (arg.includes("=")) inline = arg.slice(arg.indexOf("=") + 1);
      shown = `-${alias}`;
    } else if (arg.startsWith("-") && arg.length > 1 && !/^-\d/.test(arg)) {
      spec = byShort.get(arg.slice(1, 2));
      if (!spec) throw new DeltaqError(`unknown option ${arg} (see --help)`);
      if (arg.length > 2) inline = arg.slice(2).replace(/^=/, "");
      shown = `-${spec.short}`;
    } else {
      positionals.push(arg);
      continue;
    }
    const name = camel(spec.long);
    if (spec.kind === "flag") {
      if (inline !== undefined) throw new DeltaqError(`${shown} takes no value`);
      flags[name] = true;
      continue;
    }
    let value = inline;
    if (value === undefined) {
      if (i + 1 >= args.length) throw new DeltaqError(`${shown} needs a value`);
      value = args[++i];
    }
    if (spec.kind === "string") {
      if (spec.long === "stop") flags[name] = [...(flags[name] as string[] ?? []), value];
      else flags[name] = value;
      continue;
    }
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n)) throw new DeltaqError(`${shown} needs a number, got ${JSON.stringify(value)}`);
    if (spec.kind === "int" && !Number.isInteger(n)) throw new DeltaqError(`${shown} needs a whole number, got ${value}`);
    if (spec.min !== undefined && n < spec.min) throw new DeltaqError(`${shown} must be at least ${spec.min}, got ${value}`);
    if (spec.max !== undefined && n > spec.max) throw new DeltaqError(`${shown} must be at most ${spec.max}, got ${value}`);
    flags[name] = n;
  }
  return { flags, positionals };
}

function camel(s: string): string {
  return s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The options part of --help, from the table. */
export function flagHelp(specs: FlagSpec[] = FLAGS): string {
  const rows = specs.map((s) => {
    const [placeholder, ...rest] = s.kind === "flag" ? ["", s.help] : s.help.split(/ {2}/);
    const names = `${s.short ? `-${s.short}, ` : "    "}--${s.long}${placeholder ? ` ${placeholder}` : ""}`;
    return [names, rest.join("  ")];
  });
  const width = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([a, b]) => `  ${a.padEnd(width)}  ${b}`).join("\n");
}
