/**
 * Runs the llama.cpp reference in a process of its own, so that its peak RSS can be measured apart
 * from deltaq's: load a model, process a prompt of `pp` tokens, then decode `tg` tokens greedily,
 * and print one JSON line (`ReferenceBenchResult`) on stdout.
 *
 *   deno run -A src/oracle/bench_worker.ts --model m.gguf [--threads 2] [--pp 128] [--tg 32]
 *     [--batch 512] [--ctx 0] [--flash-attn auto|on|off] [--no-warmup]
 *
 * Prompt tokens are a fixed pseudo-random sequence (the same for every run and engine). Warm-up
 * (default on, like llama-bench) runs one batch and one decode step first and then resets.
 * `runReferenceBench()` spawns this file and parses its answer.
 */
import { parseArgs } from "node:util";
import { DeltaqError } from "../errors.ts";
import { argmax, LlamaReference } from "./llama.ts";
import { LLAMA_PACKAGE, LLAMA_PACKAGE_VERSION } from "./install.ts";

export interface ReferenceBenchOptions {
  model: string;
  threads?: number;
  /** Prompt tokens (default 128). */
  pp?: number;
  /** Generated tokens (default 32). */
  tg?: number;
  /** llama_decode batch size (default 512). */
  batch?: number;
  /** Context length; default pp + tg. */
  ctx?: number;
  flashAttention?: boolean;
  warmup?: boolean;
}

export interface ReferenceBenchResult {
  engine: string;
  model: string;
  threads: number;
  /** Model load plus context creation. */
  loadMs: number;
  pp: { tokens: number; ms: number; tokensPerSecond: number };
  tg: { tokens: number; ms: number; tokensPerSecond: number };
  /** VmHWM of the worker process at the end, in KiB. */
  peakRssKiB: number;
}

/** The benchmark prompt: `n` pseudo-random token ids below `nVocab`, identical on every call. */
export function benchPrompt(n: number, nVocab: number): Int32Array {
  const out = new Int32Array(n);
  let s = 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s % nVocab;
  }
  return out;
}

/** Runs the benchmark in this process (use `runReferenceBench` to get a separate process). */
export function benchHere(o: ReferenceBenchOptions): ReferenceBenchResult {
  const pp = o.pp ?? 128;
  const tg = o.tg ?? 32;
  const threads = o.threads ?? navigator.hardwareConcurrency;
  const ref = LlamaReference.load(o.model, {
    threads,
    contextLength: o.ctx || pp + tg,
    batchSize: o.batch ?? 512,
    flashAttention: o.flashAttention,
  });
  try {
    const prompt = benchPrompt(pp, ref.nVocab);
    if (o.warmup ?? true) {
      ref.eval(prompt.subarray(0, Math.min(pp, ref.batchSize)));
      ref.eval(prompt.subarray(0, 1));
      ref.reset();
    }
    let t = performance.now();
    let logits = ref.eval(prompt);
    const ppMs = performance.now() - t;
    t = performance.now();
    for (let i = 0; i < tg; i++) logits = ref.eval([argmax(logits)]);
    const tgMs = performance.now() - t;
    return {
      engine: `llama.cpp (${LLAMA_PACKAGE}@${LLAMA_PACKAGE_VERSION})`,
      model: o.model,
      threads,
      loadMs: ref.loadMs,
      pp: { tokens: pp, ms: ppMs, tokensPerSecond: pp / (ppMs / 1000) },
      tg: { tokens: tg, ms: tgMs, tokensPerSecond: tg / (tgMs / 1000) },
      peakRssKiB: peakRssKiB(),
    };
  } finally {
    ref.dispose();
  }
}

/** VmHWM (peak resident set) of this process in KiB, from /proc/self/status. */
export function peakRssKiB(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/self/status"));
  if (!m) throw new DeltaqError("cannot read VmHWM from /proc/self/status");
  return Number(m[1]);
}

/** Spawns this file in a fresh Deno process and returns what it measured. */
export async function runReferenceBench(o: ReferenceBenchOptions): Promise<ReferenceBenchResult> {
  const args = ["run", "-A", new URL(import.meta.url).pathname, "--model", o.model];
  if (o.threads !== undefined) args.push("--threads", String(o.threads));
  if (o.pp !== undefined) args.push("--pp", String(o.pp));
  if (o.tg !== undefined) args.push("--tg", String(o.tg));
  if (o.batch !== undefined) args.push("--batch", String(o.batch));
  if (o.ctx !== undefined) args.push("--ctx", String(o.ctx));
  if (o.flashAttention !== undefined) args.push("--flash-attn", o.flashAttention ? "on" : "off");
  if (o.warmup === false) args.push("--no-warmup");
  const out = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new DeltaqError(
      `llama.cpp benchmark worker failed on ${o.model}: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return JSON.parse(stdout.split("\n").at(-1)!);
}

if (import.meta.main) {
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: {
        model: { type: "string" },
        threads: { type: "string" },
        pp: { type: "string" },
        tg: { type: "string" },
        batch: { type: "string" },
        ctx: { type: "string" },
        "flash-attn": { type: "string" },
        "no-warmup": { type: "boolean" },
      },
    });
    if (!values.model) {
      throw new DeltaqError("usage: bench_worker.ts --model FILE [--threads N] [--pp N] [--tg N]");
    }
    const int = (name: string, v: string | undefined) => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) {
        throw new DeltaqError(`--${name} must be a non-negative integer, got ${v}`);
      }
      return n;
    };
    const fa = values["flash-attn"];
    if (fa !== undefined && !["on", "off", "auto"].includes(fa)) {
      throw new DeltaqError(`--flash-attn must be on, off or auto, got ${fa}`);
    }
    const result = benchHere({
      model: values.model,
      threads: int("threads", values.threads),
      pp: int("pp", values.pp),
      tg: int("tg", values.tg),
      batch: int("batch", values.batch),
      ctx: int("ctx", values.ctx),
      flashAttention: fa === "on" ? true : fa === "off" ? false : undefined,
      warmup: !values["no-warmup"],
    });
    console.log(JSON.stringify(result));
  } catch (e) {
    console.error(e instanceof DeltaqError ? e.message : e);
    Deno.exit(1);
  }
}
