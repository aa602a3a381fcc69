/**
 * One benchmark run of one engine, in a process of its own (peak RSS is per process), started by
 * `cli.ts bench` (./bench.ts). Both engines follow the same protocol, with the same prompt token
 * ids, thread count, context length and batch size:
 *
 * 1. load: the model file to a ready context (library open included; both map the file and
 *    repack Q4_K matrices into interleaved copies — deltaq releasing the mapped originals);
 * 2. time to first token: on a fresh sequence (deltaq: a new session; llama.cpp: cleared memory),
 *    evaluate a short prompt and pick the first token greedily. It runs right after load, without
 *    warm-up, as a user would see it;
 * 3. decode: from there, `tg` tokens one at a time, greedy (argmax);
 * 4. prompt processing: a fresh sequence, `pp` tokens in batches of 512, last logits only;
 * 5. peak RSS: VmHWM of this process;
 * 6. with `--profile` (deltaq only), steps 4 and 3 again with kernel timing on, untimed otherwise.
 *
 *   deno run -A src/cli/bench_worker.ts --engine deltaq|llama.cpp --model FILE --threads N
 *     --pp N --tg N --ttft-tokens N [--profile]
 *
 * With `--depths D1,D2,…` (`bench --depth`, like llama-bench's `-d`) the run measures at each
 * depth instead, in one process, after a short warm-up, in ascending order: fill the sequence to
 * the depth in batches of 512 (untimed, continuing from the previous depth), save the sequence
 * state (deltaq: a
 * checkpoint of the recurrent state, the KV rows below stay; llama.cpp: `llama_state_seq_get_data`,
 * as llama-bench does), time `pp` prompt tokens, restore, time `tg` decoded tokens, restore. Both
 * engines use the same KV cache types (`--cache-type-k/-v`); llama.cpp runs with flash attention.
 * deltaq then also decodes `tg` pairs of tokens, one at the depth and one on a second, new
 * sequence, alternately (then restores the first and closes the second): the two figures come
 * from the same seconds of the machine's life, so their ratio (decode at depth ÷ at depth 0) does
 * not depend on how busy the machine's memory was minutes earlier, when depth 0 was measured on
 * its own. Peak RSS leaves the second sequence out: the peak is read before the paired decode,
 * which frees its memory after and restarts the kernel's peak (/proc/self/clear_refs).
 * Peak RSS is then the process's peak at the deepest depth.
 *
 * Prints one JSON line (`EngineRun`, or `DepthRun`) on stdout; failures print one line on stderr
 * and exit 1.
 */
import { parseArgs } from "node:util";
import { DeltaqError } from "../errors.ts";
import { GGML_TYPES } from "../gguf/types.ts";
import { Model } from "../model/model.ts";
import { cpuLevels } from "../native/ffi.ts";
import type { CacheType, ProfileEntry } from "../native/kernels.ts";
import { cacheTypeFlag } from "./args.ts";
import { LLAMA_PACKAGE, LLAMA_PACKAGE_VERSION } from "../oracle/install.ts";
import { argmax, LlamaReference, llamaSystemInfo } from "../oracle/llama.ts";

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

/** VmHWM (peak resident set) of this process in KiB, from /proc/self/status. */
export function peakRssKiB(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/self/status"));
  if (!m) throw new DeltaqError("cannot read VmHWM from /proc/self/status");
  return Number(m[1]);
}

export const ENGINES = ["deltaq", "llama.cpp"] as const;
export type Engine = (typeof ENGINES)[number];

export interface WorkerOptions {
  engine: Engine;
  model: string;
  threads: number;
  pp: number;
  tg: number;
  ttftTokens: number;
  profile: boolean;
  /** Measure at these depths (see the header) instead of the standard protocol. */
  depths?: number[];
  cacheTypeK?: CacheType;
  cacheTypeV?: CacheType;
}

/** Prompt processing and decode at one depth. */
export interface DepthPoint {
  depth: number;
  pp: Phase;
  tg: Phase;
  /** deltaq: decode alternating token by token between this depth (`deep`) and depth 0 (`shallow`). */
  paired?: { deep: Phase; shallow: Phase };
}

/** One engine's run of the depth protocol. */
export interface DepthRun {
  engine: Engine;
  build: string;
  threads: number;
  contextLength: number;
  cacheTypeK: CacheType;
  cacheTypeV: CacheType;
  loadMs: number;
  points: DepthPoint[];
  /** Untimed: filling the sequence to each depth, in total. */
  fillMs: number;
  peakRssKiB: number;
}

/** A timed phase: `tokens` tokens in `ms` milliseconds. */
export interface Phase {
  tokens: number;
  ms: number;
  tokensPerSecond: number;
}

/** Milliseconds per token of one category, and its share of the phase's total. */
export interface ProfileRow {
  category: string;
  msPerToken: number;
  percent: number;
}

/** Where the time of a phase went, by kind of work (see `categorize`). */
export interface ProfileBreakdown {
  tokens: number;
  /** Wall time of the phase per token. */
  msPerToken: number;
  rows: ProfileRow[];
}

export interface EngineRun {
  engine: Engine;
  /** What exactly ran: deltaq's library target CPU, or the pinned llama.cpp package and its CPU features. */
  build: string;
  threads: number;
  contextLength: number;
  loadMs: number;
  ttft: Phase;
  tg: Phase;
  pp: Phase;
  peakRssKiB: number;
  profile?: { pp: ProfileBreakdown; tg: ProfileBreakdown };
}

/** What an engine must offer the protocol. */
interface Runner {
  /** Starts a new, empty sequence. */
  fresh(): void;
  /** Feeds tokens after the sequence's current position; returns the last logits. */
  eval(tokens: ArrayLike<number>): Float32Array;
  /** Remembers the sequence state here; `restore` returns to it (the depth protocol). */
  save(): void;
  restore(): void;
  dispose(): void;
}

/** Context length that holds every phase, a multiple of 256 (llama.cpp rounds up to that anyway). */
export function benchContextLength(o: { pp: number; tg: number; ttftTokens: number }): number {
  return Math.ceil(Math.max(o.pp, o.ttftTokens + o.tg) / 256) * 256;
}

const BATCH = 512;

function phase(tokens: number, ms: number): Phase {
  return { tokens, ms, tokensPerSecond: tokens / (ms / 1000) };
}

/** Runs the protocol in this process (`bench.ts` spawns this file instead, one process per run). */
export function runWorker(o: WorkerOptions): EngineRun {
  const contextLength = benchContextLength(o);
  const t0 = performance.now();
  const loaded = o.engine === "deltaq" ? loadDeltaq(o, contextLength) : loadLlama(o, contextLength);
  const loadMs = performance.now() - t0;
  const { runner, build, nVocab } = loaded;
  try {
    const prompt = benchPrompt(Math.max(o.pp, o.ttftTokens), nVocab);

    let t = performance.now();
    runner.fresh();
    let next = argmax(runner.eval(prompt.subarray(0, o.ttftTokens)));
    const ttftMs = performance.now() - t;

    t = performance.now();
    for (let i = 0; i < o.tg; i++) next = argmax(runner.eval([next]));
    const tgMs = performance.now() - t;

    runner.fresh();
    t = performance.now();
    runner.eval(prompt.subarray(0, o.pp));
    const ppMs = performance.now() - t;

    const run: EngineRun = {
      engine: o.engine,
      build,
      threads: o.threads,
      contextLength,
      loadMs,
      ttft: phase(o.ttftTokens, ttftMs),
      tg: phase(o.tg, tgMs),
      pp: phase(o.pp, ppMs),
      peakRssKiB: peakRssKiB(),
    };
    if (o.profile && loaded.profile) run.profile = loaded.profile(prompt, o);
    return run;
  } finally {
    runner.dispose();
  }
}

/** Context length for the depth protocol: the deepest depth plus a prompt chunk or the decoded tokens. */
export function depthContextLength(o: { depths: number[]; pp: number; tg: number }): number {
  return Math.ceil((Math.max(...o.depths) + Math.max(o.pp, o.tg + 1)) / 256) * 256;
}

/** The depth protocol (see the header). */
export function runDepthWorker(o: WorkerOptions & { depths: number[] }): DepthRun {
  const depths = [...o.depths].sort((a, b) => a - b);
  const contextLength = depthContextLength({ depths, pp: o.pp, tg: o.tg });
  const t0 = performance.now();
  const loaded = o.engine === "deltaq" ? loadDeltaq(o, contextLength) : loadLlama(o, contextLength);
  const loadMs = performance.now() - t0;
  const { runner, build, nVocab } = loaded;
  try {
    const prompt = benchPrompt(contextLength, nVocab);
    const points: DepthPoint[] = [];
    let peakKiB = 0;
    let fillMs = 0;
    let at = 0;
    // warm-up (as llama-bench does): a short prompt and a decoded token, so the first depth's
    // figures do not include first-use costs (page faults, encoding the decode command list)
    runner.fresh();
    runner.eval([argmax(runner.eval(prompt.subarray(0, 16)))]);
    runner.fresh();
    for (const depth of depths) {
      const f = performance.now();
      while (at < depth) {
        const n = Math.min(BATCH, depth - at);
        runner.eval(prompt.subarray(at, at + n));
        at += n;
      }
      fillMs += performance.now() - f;
      runner.save();

      let t = performance.now();
      runner.eval(prompt.subarray(depth, depth + o.pp));
      const ppMs = performance.now() - t;
      runner.restore();

      let next = prompt[depth];
      t = performance.now();
      for (let i = 0; i < o.tg; i++) next = argmax(runner.eval([next]));
      const tgMs = performance.now() - t;
      runner.restore();
      const point: DepthPoint = { depth, pp: phase(o.pp, ppMs), tg: phase(o.tg, tgMs) };

      if (loaded.secondSequence) {
        peakKiB = Math.max(peakKiB, peakRssKiB());
        const shallow = loaded.secondSequence();
        let deep = prompt[depth];
        let near = prompt[0];
        let deepMs = 0;
        let nearMs = 0;
        for (let i = 0; i < o.tg; i++) {
          t = performance.now();
          deep = argmax(runner.eval([deep]));
          const mid = performance.now();
          near = argmax(shallow.eval([near]));
          nearMs += performance.now() - mid;
          deepMs += mid - t;
        }
        runner.restore();
        shallow.dispose();
        Deno.writeTextFileSync("/proc/self/clear_refs", "5"); // VmHWM := VmRSS
        point.paired = { deep: phase(o.tg, deepMs), shallow: phase(o.tg, nearMs) };
      }
      points.push(point);
    }
    return {
      engine: o.engine,
      build,
      threads: o.threads,
      contextLength,
      cacheTypeK: o.cacheTypeK ?? "f16",
      cacheTypeV: o.cacheTypeV ?? "f16",
      loadMs,
      points,
      fillMs,
      peakRssKiB: Math.max(peakKiB, peakRssKiB()),
    };
  } finally {
    runner.dispose();
  }
}

type Loaded = {
  runner: Runner;
  /** A second, empty sequence on the same loaded model (deltaq), for the paired decode; its
   * `dispose` frees its memory. */
  secondSequence?: () => Runner;
  build: string;
  nVocab: number;
  profile?: (prompt: Int32Array, o: WorkerOptions) => { pp: ProfileBreakdown; tg: ProfileBreakdown };
};

// Both engines' code is imported (statically, above) before the load timer starts; neither
// opens its native library before `load`.
function loadDeltaq(o: WorkerOptions, contextLength: number): Loaded {
  const model = Model.load(o.model, {
    threads: o.threads,
    contextLength,
    batchSize: BATCH,
    cacheTypeK: o.cacheTypeK,
    cacheTypeV: o.cacheTypeV,
  });
  const logits = new Float32Array(model.config.nVocab); // reused by one-token evals, as generate does
  /** A sequence on the model; `dispose` ends the model (`main`) or just this sequence. */
  const sequence = (main: boolean): Runner => {
    let session = model.createSession();
    return {
      fresh() {
        session.dispose();
        session = model.createSession();
      },
      eval: (tokens) => session.eval(tokens, tokens.length === 1 ? { out: logits } : {}),
      // KV rows below a position never change, so the recurrent state is all a return needs
      save: () => session.checkpoint(),
      restore: () => session.rollback(),
      dispose() {
        if (main) return model.dispose();
        session.dispose();
        model.freeIdleMemory(); // else its recurrent state stays, kept for a next session
      },
    };
  };
  const runner = sequence(true);
  const profile = (prompt: Int32Array, w: WorkerOptions) => {
    runner.fresh();
    model.startProfile();
    let t = performance.now();
    runner.eval(prompt.subarray(0, w.pp));
    let wall = performance.now() - t;
    const pp = categorize(model.stopProfile(), w.pp, wall);

    runner.fresh();
    let next = argmax(runner.eval(prompt.subarray(0, w.ttftTokens)));
    model.startProfile();
    t = performance.now();
    for (let i = 0; i < w.tg; i++) next = argmax(runner.eval([next]));
    wall = performance.now() - t;
    const tg = categorize(model.stopProfile(), w.tg, wall);
    return { pp, tg };
  };
  return {
    runner,
    secondSequence: () => sequence(false),
    build: `deltaq (kernels: ${cpuLevels().selected} level of ${cpuLevels().all.join(", ")})`,
    nVocab: model.config.nVocab,
    profile,
  };
}

function loadLlama(o: WorkerOptions, contextLength: number): Loaded {
  const depth = o.depths !== undefined;
  const ref = LlamaReference.load(o.model, {
    threads: o.threads,
    contextLength,
    batchSize: BATCH,
    cacheTypeK: o.cacheTypeK ?? "f16",
    cacheTypeV: o.cacheTypeV ?? "f16",
    // the depth table compares against flash attention (llama.cpp's CPU default too)
    ...(depth ? { flashAttention: true } : {}),
  });
  const logits = new Float32Array(ref.nVocab); // reused by one-token evals, as for deltaq
  let saved: ReturnType<LlamaReference["saveState"]> | undefined;
  const runner: Runner = {
    fresh: () => ref.reset(),
    eval: (tokens) => ref.eval(tokens, tokens.length === 1 ? { out: logits } : {}),
    save: () => saved = ref.saveState(),
    restore: () => ref.restoreState(saved!),
    dispose: () => ref.dispose(),
  };
  const features = llamaSystemInfo().split("|").map((s) => s.trim()).filter((s) => / = 1$/.test(s))
    .map((s) => s.replace(/ = 1$/, "").replace(/^CPU : /, ""));
  return {
    runner,
    build: `${LLAMA_PACKAGE}@${LLAMA_PACKAGE_VERSION} (${features.join(" ")})`,
    nVocab: ref.nVocab,
  };
}

/** Profile categories in display order. Matmuls by weight type come first, then the rest. */
const OP_CATEGORY: Record<string, string> = {
  attention: "attention (scores, kv store, rope, gate)",
  kv_store: "attention (scores, kv store, rope, gate)",
  rope: "attention (scores, kv store, rope, gate)",
  sigmoid_gate: "attention (scores, kv store, rope, gate)",
  deltanet: "DeltaNet (recurrence, conv1d, gated norm)",
  conv1d: "DeltaNet (recurrence, conv1d, gated norm)",
  gated_norm: "DeltaNet (recurrence, conv1d, gated norm)",
  norm: "RMS norms",
  add: "element-wise (add, swiglu)",
  swiglu: "element-wise (add, swiglu)",
  embed: "token embedding",
  moe_route: "expert routing and weighted sum",
  moe_combine: "expert routing and weighted sum",
};
export const FFI_CATEGORY = "FFI + dispatch (exec wall − kernels)";
export const JS_CATEGORY = "JS command encoding";
export const REST_CATEGORY = "rest of eval (logits copy, argmax)";

/**
 * Groups a profile into kinds of work: matmul by weight type (LM head apart), attention, DeltaNet,
 * norms, element-wise, embedding, other kernels; then FFI and dispatch overhead (native call wall
 * time not spent in kernels), JS command encoding, and the rest of the phase's wall time.
 */
export function categorize(
  p: { entries: ProfileEntry[]; execMs: number; jsMs: number },
  tokens: number,
  wallMs: number,
): ProfileBreakdown {
  const ms = new Map<string, number>();
  const add = (k: string, v: number) => ms.set(k, (ms.get(k) ?? 0) + v);
  let kernels = 0;
  for (const e of p.entries) {
    if (e.op === "label") continue; // a no-op that sets the profile label: dispatch cost
    kernels += e.ms;
    const type = GGML_TYPES[e.weightType]?.name ?? `type ${e.weightType}`;
    if (e.op === "matmul") add(e.label === "lm_head" ? `LM head matmul ${type}` : `matmul ${type}`, e.ms);
    else if (e.op === "matmul_experts") add(`matmul ${type} (experts)`, e.ms);
    else add(OP_CATEGORY[e.op] ?? `other kernels (${e.op})`, e.ms);
  }
  const byTime = [...ms].sort((a, b) => b[1] - a[1]);
  const ordered = [
    ...byTime.filter(([k]) => k.startsWith("matmul ")),
    ...byTime.filter(([k]) => k.startsWith("LM head ")),
    ...byTime.filter(([k]) => !k.startsWith("matmul ") && !k.startsWith("LM head ")),
    [FFI_CATEGORY, p.execMs - kernels] as [string, number],
    [JS_CATEGORY, p.jsMs] as [string, number],
    [REST_CATEGORY, wallMs - p.execMs - p.jsMs] as [string, number],
  ];
  return {
    tokens,
    msPerToken: wallMs / tokens,
    rows: ordered.map(([category, v]) => ({ category, msPerToken: v / tokens, percent: (100 * v) / wallMs })),
  };
}

if (import.meta.main) {
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: {
        engine: { type: "string" },
        model: { type: "string" },
        threads: { type: "string" },
        pp: { type: "string" },
        tg: { type: "string" },
        "ttft-tokens": { type: "string" },
        profile: { type: "boolean" },
        depths: { type: "string" },
        "cache-type-k": { type: "string" },
        "cache-type-v": { type: "string" },
      },
    });
    const count = (name: string, v: string | undefined, min: number) => {
      const n = Number(v);
      if (v === undefined || !Number.isInteger(n) || n < min) {
        throw new DeltaqError(`bench worker: --${name} must be an integer ≥ ${min}, got ${v}`);
      }
      return n;
    };
    const engine = values.engine as Engine;
    if (!ENGINES.includes(engine)) {
      throw new DeltaqError(`bench worker: --engine must be ${ENGINES.join(" or ")}`);
    }
    if (!values.model) throw new DeltaqError("bench worker: --model FILE is missing");
    const options: WorkerOptions = {
      engine,
      model: values.model,
      threads: count("threads", values.threads, 1),
      pp: count("pp", values.pp, 1),
      tg: count("tg", values.tg, 1),
      ttftTokens: count("ttft-tokens", values["ttft-tokens"], 1),
      profile: values.profile ?? false,
      cacheTypeK: cacheTypeFlag(values["cache-type-k"], "--cache-type-k"),
      cacheTypeV: cacheTypeFlag(values["cache-type-v"], "--cache-type-v"),
    };
    if (values.depths !== undefined) {
      const depths = values.depths.split(",").map((d) => count("depths", d, 0));
      console.log(JSON.stringify(runDepthWorker({ ...options, depths })));
    } else {
      console.log(JSON.stringify(runWorker(options)));
    }
  } catch (e) {
    console.error(e instanceof DeltaqError ? e.message : e);
    Deno.exit(1);
  }
}
