/**
 * `deno task bench` / `deno run -A cli.ts bench [-m FILE]`: deltaq against the pinned llama.cpp on
 * the same model, thread count and prompt token ids. Every run is a process of its own
 * (./bench_worker.ts: load, time to first token, decode, prompt processing, peak RSS), engines
 * alternate run by run, and the table shows the median of each metric with its range and the
 * ratio deltaq ÷ llama.cpp. Decode is also shown as a fraction of what the machine's memory
 * bandwidth allows (measured by bench/bandwidth.zig, not assumed). `--profile` adds where deltaq's
 * time goes, per kind of work.
 *
 * Without -m the model is a synthetic one with Qwen3.5-4B's exact shapes in Q4_K_M, built once
 * (./bench_model.ts); `--preset 35b-a3b` takes Qwen3.5-35B-A3B's (mixture of experts, 8 layers). Speed depends on what else the machine is doing: the load average before and
 * after is printed with the table.
 */
import { fileURLToPath } from "node:url";
import { DeltaqError } from "../errors.ts";
import { readModelHeader } from "../gguf/split.ts";
import { Metadata } from "../gguf/read.ts";
import { ggmlTypeName, type GgufFile } from "../gguf/types.ts";
import { ensureLibrary, findZig, isCompiledBinary } from "../native/build.ts";
import { CACHE_TYPE_K, CACHE_TYPE_V, cacheTypeFlag, flagHelp, parseFlags } from "./args.ts";
import {
  BENCH_CACHE,
  BENCH_PRESETS,
  benchModelDescription,
  benchModelPath,
  checkBenchType,
  DEFAULT_BENCH_PRESET,
  DEFAULT_BENCH_TYPE,
  ensureBenchModel,
  removeLeftovers,
  removeOutdated,
} from "./bench_model.ts";
import type { DepthPoint, DepthRun, Engine, EngineRun, ProfileBreakdown } from "./bench_worker.ts";
import { readConfig } from "../model/config.ts";
import { contextMemory } from "../model/model.ts";
import { checkCacheTypes } from "../model/session.ts";
import { type CacheType, performanceCores } from "../native/kernels.ts";
import { isFile } from "../util/fs.ts";
import { fnv1a, hex32 } from "../util/hash.ts";

type Specs = NonNullable<Parameters<typeof parseFlags>[1]>;

const FLAGS: Specs = [
  {
    long: "model",
    short: "m",
    kind: "string",
    help: "FILE  model to measure (default: synthetic Qwen3.5-4B Q4_K_M, built once)",
  },
  {
    long: "preset",
    kind: "string",
    help: `NAME  synthetic benchmark model instead of -m: ${
      Object.keys(BENCH_PRESETS).join(" | ")
    } (default ${DEFAULT_BENCH_PRESET})`,
  },
  {
    long: "type",
    kind: "string",
    help:
      "T  without -m: the synthetic model in llama.cpp file type T (Q4_0, Q8_0, IQ4_XS, …; default Q4_K_M), built once",
  },
  {
    long: "threads",
    short: "t",
    kind: "int",
    min: 1,
    max: 64,
    help: "N  threads for both engines (default: physical performance cores)",
  },
  {
    long: "busy",
    kind: "int",
    min: 0,
    max: 64,
    help: "N  keep N cores busy during every run (one spinning process each), as on a machine in use",
  },
  {
    long: "pp",
    kind: "int",
    min: 1,
    max: 1 << 16,
    help: "N  prompt tokens for prompt processing (default 512)",
  },
  { long: "tg", kind: "int", min: 1, max: 1 << 16, help: "N  tokens to decode one at a time (default 128)" },
  {
    long: "ttft-tokens",
    kind: "int",
    min: 1,
    max: 1 << 16,
    help: "N  prompt tokens before the first token (default 16)",
  },
  {
    long: "reps",
    kind: "int",
    min: 1,
    max: 100,
    help: "N  runs per engine; the table shows medians (default 5)",
  },
  { long: "profile", kind: "flag", help: "also show where deltaq's time goes (one extra, untimed pass)" },
  {
    long: "depth",
    short: "d",
    kind: "string",
    help:
      "D1,D2,…  measure prompt processing and decode at these cache depths instead (like llama-bench -d), e.g. 0,4096,16384,32768",
  },
  CACHE_TYPE_K,
  CACHE_TYPE_V,
  { long: "no-reference", kind: "flag", help: "measure deltaq only (no llama.cpp)" },
  {
    long: "json",
    kind: "flag",
    help: "print one JSON object (every run, medians, machine) instead of the table",
  },
  { long: "help", short: "h", kind: "flag", help: "show this help" },
];

const HELP = `usage: deno run -A cli.ts bench [-m MODEL.gguf] [options]     (deno task bench)

Measures deltaq against llama.cpp (the pinned build) on one model: prompt processing, decode,
time to first token, load time and peak RSS. Each run is a separate process; the engines
alternate, and the table shows medians with ratios deltaq ÷ llama.cpp. Decode is also shown
as a fraction of the memory-bandwidth bound (bandwidth measured on the spot).

With --depth D1,D2,… it measures prompt processing and decode at each cache depth instead
(like llama-bench -d): one process per engine fills the sequence depth by depth, saving and
restoring it around each measurement; llama.cpp runs with flash attention and both with the KV
cache types of -ctk/-ctv. The table adds deltaq's decode as a share of its own at depth 0 —
measured on its own, and paired: decoding alternately at the depth and at depth 0, token by
token, so a machine busier at one moment than another cannot tilt the share — and the peak RSS at
the deepest depth against file + KV cache + 15%. Deep runs take long (a 32,768-
token fill is minutes per engine); one run per engine unless --reps says more.

With --busy N, N processes each spin on one core during every measured run of both engines
(started before the run, stopped after it): users' machines are never idle, and a worker that
loses its core to another program must not stall the others.

Without -m, a synthetic model with Qwen3.5-4B's exact shapes, quantized to Q4_K_M by llama.cpp
(2.7 GB), is built once into .cache/bench/ (needs ~12 GB free while building; 5–10 minutes);
--type T builds and keeps one in any other llama.cpp file type (Q4_0, Q8_0, Q2_K, IQ4_XS, …).
--preset 35b-a3b builds one with Qwen3.5-35B-A3B's widths (256 experts, 8 used + 1 shared) and 8
of its 40 layers (4.7 GB; needs ~22 GB free while building, and ~10 GB of memory for llama.cpp).

options:
${flagHelp(FLAGS)}
`;

const WORKER = new URL("./bench_worker.ts", import.meta.url);
const BANDWIDTH_SOURCE = new URL("../../bench/bandwidth.zig", import.meta.url);

interface Settings {
  model: string;
  /** The benchmark preset the model comes from (when no -m was given). */
  preset: string;
  /** The benchmark model's file type when no model is given. */
  type: string;
  threads: number;
  /** `--busy`: processes spinning on one core each during every run. */
  busy: number;
  pp: number;
  tg: number;
  ttftTokens: number;
  reps: number;
  profile: boolean;
  reference: boolean;
  json: boolean;
  /** `--depth`: the depth protocol at these depths. */
  depths?: number[];
  cacheTypeK: CacheType;
  cacheTypeV: CacheType;
}

/** Median, min and max of one metric over the runs of one engine. */
export interface Stat {
  median: number;
  min: number;
  max: number;
}

interface Metric {
  key: string;
  name: string;
  unit: string;
  higherIsBetter: boolean;
  value: (r: EngineRun) => number;
  digits: number;
}

function metrics(s: Settings): Metric[] {
  return [
    {
      key: "ppTokensPerSecond",
      name: `prompt processing pp${s.pp}`,
      unit: "tok/s",
      higherIsBetter: true,
      value: (r) => r.pp.tokensPerSecond,
      digits: 2,
    },
    {
      key: "tgTokensPerSecond",
      name: `decode tg${s.tg}`,
      unit: "tok/s",
      higherIsBetter: true,
      value: (r) => r.tg.tokensPerSecond,
      digits: 2,
    },
    {
      key: "ttftMs",
      name: `time to first token (${s.ttftTokens}-token prompt)`,
      unit: "ms",
      higherIsBetter: false,
      value: (r) => r.ttft.ms,
      digits: 0,
    },
    {
      key: "loadPlusTtftMs",
      name: "load + time to first token",
      unit: "ms",
      higherIsBetter: false,
      value: (r) => r.loadMs + r.ttft.ms,
      digits: 0,
    },
    {
      key: "loadMs",
      name: "load time",
      unit: "ms",
      higherIsBetter: false,
      value: (r) => r.loadMs,
      digits: 0,
    },
    {
      key: "peakRssMiB",
      name: "peak RSS",
      unit: "MiB",
      higherIsBetter: false,
      value: (r) => r.peakRssKiB / 1024,
      digits: 0,
    },
  ];
}

export function stat(values: number[]): Stat {
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { median, min: v[0], max: v[v.length - 1] };
}

function readFlags(args: string[]): Settings | undefined {
  const { flags, positionals } = parseFlags(args, FLAGS);
  if (flags.help) {
    console.log(HELP);
    return undefined;
  }
  if (positionals.length > 0) {
    throw new DeltaqError(
      `unexpected argument ${JSON.stringify(positionals[0])} (the model goes after -m; see bench --help)`,
    );
  }
  const preset = flags.preset as string | undefined;
  if (flags.model !== undefined && (preset !== undefined || flags.type !== undefined)) {
    throw new DeltaqError(
      "bench takes either -m FILE or a synthetic model (--preset NAME, --type T), not both",
    );
  }
  if (preset !== undefined && !(preset in BENCH_PRESETS)) {
    throw new DeltaqError(`unknown --preset ${preset}; use one of ${Object.keys(BENCH_PRESETS).join(", ")}`);
  }
  const depths = flags.depth === undefined ? undefined : parseDepths(flags.depth as string);
  if (depths && flags.profile) {
    throw new DeltaqError("--profile measures the standard runs; it cannot be combined with --depth");
  }
  return {
    model: (flags.model as string | undefined) ?? "",
    preset: preset ?? DEFAULT_BENCH_PRESET,
    type: (flags.type as string | undefined) ?? DEFAULT_BENCH_TYPE,
    threads: (flags.threads as number | undefined) ?? performanceCores(),
    busy: (flags.busy as number | undefined) ?? 0,
    pp: (flags.pp as number | undefined) ?? 512,
    tg: (flags.tg as number | undefined) ?? 128,
    ttftTokens: (flags.ttftTokens as number | undefined) ?? 16,
    // a deep run fills tens of thousands of tokens per engine: one each unless asked
    reps: (flags.reps as number | undefined) ?? (depths ? 1 : 5),
    profile: flags.profile === true,
    reference: flags.noReference !== true,
    json: flags.json === true,
    depths,
    cacheTypeK: cacheTypeFlag(flags.cacheTypeK, "--cache-type-k") ?? "f16",
    cacheTypeV: cacheTypeFlag(flags.cacheTypeV, "--cache-type-v") ?? "f16",
  };
}

/** ", 1 core kept busy by another process" for the runs line, or nothing. */
function busyNote(busy: number): string {
  return busy > 0 ? `, ${busy} core${busy > 1 ? "s" : ""} kept busy by other processes` : "";
}

/** `--depth 0,4096,16384`: distinct depths, ascending. */
export function parseDepths(text: string): number[] {
  const depths = text.split(",").map((d) => d.trim());
  const values = depths.map((d) => Number(d));
  if (
    depths.some((d, i) => d === "" || !Number.isInteger(values[i]) || values[i] < 0 || values[i] > 1 << 20)
  ) {
    throw new DeltaqError(
      `--depth needs a comma-separated list of token counts from 0 to ${1 << 20}, got ${
        JSON.stringify(text)
      }`,
    );
  }
  return [...new Set(values)].sort((a, b) => a - b);
}

/** Status line on stderr, redrawn in place; only on a terminal. */
class Status {
  readonly #tty = Deno.stderr.isTerminal();
  readonly #start = performance.now();
  #drawn = false;
  show(text: string): void {
    if (!this.#tty) return;
    const s = Math.round((performance.now() - this.#start) / 1000);
    const elapsed = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    Deno.stderr.writeSync(new TextEncoder().encode(`\r\x1b[K${text} (${elapsed} elapsed)`));
    this.#drawn = true;
  }
  clear(): void {
    if (this.#tty && this.#drawn) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
    this.#drawn = false;
  }
}

export async function runBench(args: string[]): Promise<number> {
  const s = readFlags(args);
  if (!s) return 0;
  if (isCompiledBinary()) {
    throw new DeltaqError(
      "bench runs from a deltaq checkout (deno run -A cli.ts bench), not from a compiled binary",
    );
  }
  const status = new Status();
  const log = (line: string) => {
    status.clear();
    console.error(`deltaq bench: ${line}`);
  };
  removeLeftovers();
  if (!s.model) {
    s.type = await checkBenchType(s.type);
    s.model = await ensureBenchModel(log, s.preset, s.type);
  }
  const header = readModelHeader(s.model); // a clear error for a missing or broken file, before any run

  // Everything a run would otherwise do once first (build the kernels, install llama.cpp) happens
  // here, outside the timings.
  status.show("building the kernel library if needed");
  // Every deltaq run uses this copy: the library in zig-out/ may be rebuilt meanwhile.
  const built = ensureLibrary();
  const library = `${BENCH_CACHE}libdeltaq-${Deno.pid}${built.slice(built.lastIndexOf("."))}`;
  Deno.mkdirSync(BENCH_CACHE, { recursive: true });
  Deno.copyFileSync(built, library);
  try {
    if (s.depths) return await measureDepths(s, header, library, status);
    return await measure(s, header, library, status, log);
  } finally {
    Deno.removeSync(library);
  }
}

async function measure(
  s: Settings,
  header: GgufFile & { parts: string[] },
  library: string,
  status: Status,
  log: (l: string) => void,
): Promise<number> {
  const loadBefore = loadAverage();
  if (s.reference) {
    status.show("installing llama.cpp if needed");
    const { locateLlama } = await import("../oracle/install.ts");
    locateLlama();
  }
  status.show("reading the model into the page cache");
  for (const part of header.parts) readThrough(part);
  // Measured before and after the runs; the better of the two is the machine's ceiling (another
  // process reading memory at the same time can only lower a measurement).
  status.show("measuring memory bandwidth");
  const bandwidthBefore = await measureBandwidth(s.threads, log);

  const engines: Engine[] = s.reference ? ["deltaq", "llama.cpp"] : ["deltaq"];
  const runs: EngineRun[] = [];
  const total = s.reps * engines.length;
  for (let rep = 0; rep < s.reps; rep++) {
    for (const engine of engines) {
      status.show(`run ${runs.length + 1}/${total}: ${engine}, repetition ${rep + 1}/${s.reps}`);
      const profile = s.profile && engine === "deltaq" && rep === s.reps - 1;
      runs.push(await spawnWorker(engine, s, profile, library));
    }
  }
  status.show("measuring memory bandwidth again");
  const bandwidthAfter = await measureBandwidth(s.threads, log);
  status.clear();
  const loadAfter = loadAverage();

  const gbPerSecond = bandwidthBefore.gbPerSecond.map((g, i) => Math.max(g, bandwidthAfter.gbPerSecond[i]));
  const weightBytes = decodeWeightBytes(header);
  const bw = gbPerSecond[Math.min(s.threads, gbPerSecond.length) - 1];
  const report = {
    ...reportBase(s, header, loadBefore, loadAfter),
    ttftTokens: s.ttftTokens,
    bandwidth: {
      bytes: bandwidthBefore.bytes,
      gbPerSecond,
      before: bandwidthBefore.gbPerSecond,
      after: bandwidthAfter.gbPerSecond,
      decodeWeightBytes: weightBytes,
      decodeBoundTokensPerSecond: (bw * 1e9) / weightBytes,
    },
    summary: summarize(runs, s),
    profile: runs.find((r) => r.profile)?.profile,
    runs,
  };
  if (runs.length > 0 && report.profile === undefined && s.profile) {
    throw new DeltaqError("the profiling run returned no profile");
  }
  console.log(s.json ? JSON.stringify(report, null, 2) : formatReport(report, s));
  return 0;
}

/**
 * Spins on one core until killed; also stops by itself once its parent is gone (its parent id
 * changes), so a bench killed outright leaves nothing running.
 */
const SPIN = "const parent = Deno.ppid; for (;;) { const until = Date.now() + 100; " +
  "while (Date.now() < until); if (Deno.ppid !== parent) Deno.exit(0); }";

/** `--busy N`: N spinning processes until `stop`; Ctrl-C stops them before the bench exits. */
export function startBusy(n: number): { stop(): Promise<void> } {
  const procs = Array.from(
    { length: n },
    () =>
      new Deno.Command(Deno.execPath(), {
        args: ["eval", SPIN],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn(),
  );
  const kill = () => {
    for (const p of procs) {
      try {
        p.kill("SIGKILL");
      } catch { /* already gone */ }
    }
  };
  const onInterrupt = () => {
    kill();
    Deno.exit(130);
  };
  if (n > 0) Deno.addSignalListener("SIGINT", onInterrupt);
  return {
    async stop() {
      if (n > 0) Deno.removeSignalListener("SIGINT", onInterrupt);
      kill();
      await Promise.all(procs.map((p) => p.status));
    },
  };
}

async function spawnWorker<R = EngineRun>(
  engine: Engine,
  s: Settings,
  profile: boolean,
  library: string,
): Promise<R> {
  const args = [
    "run",
    "-A",
    fileURLToPath(WORKER),
    "--engine",
    engine,
    "--model",
    s.model,
    "--threads",
    String(s.threads),
    "--pp",
    String(s.pp),
    "--tg",
    String(s.tg),
    "--ttft-tokens",
    String(s.ttftTokens),
  ];
  if (profile) args.push("--profile");
  if (s.depths) args.push("--depths", s.depths.join(","));
  args.push("--cache-type-k", s.cacheTypeK, "--cache-type-v", s.cacheTypeV);
  const env = { DELTAQ_LIB: library };
  const busy = startBusy(s.busy);
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(Deno.execPath(), { args, env, stdout: "piped", stderr: "piped" }).output();
  } finally {
    await busy.stop();
  }
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  if (!out.success) {
    throw new DeltaqError(`the ${engine} run on ${s.model} failed: ${stderr || `exit code ${out.code}`}`);
  }
  try {
    return JSON.parse(stdout.split("\n").at(-1)!) as R;
  } catch {
    throw new DeltaqError(`the ${engine} run on ${s.model} printed no result: ${stdout}\n${stderr}`);
  }
}

export interface SummaryRow {
  metric: string;
  name: string;
  unit: string;
  higherIsBetter: boolean;
  deltaq: Stat;
  llama?: Stat;
  /** deltaq median ÷ llama.cpp median. */
  ratio?: number;
}

function summarize(runs: EngineRun[], s: Settings): SummaryRow[] {
  const of = (engine: Engine) => runs.filter((r) => r.engine === engine);
  return metrics(s).map((m) => {
    const deltaq = stat(of("deltaq").map(m.value));
    const llamaRuns = of("llama.cpp");
    const llama = llamaRuns.length ? stat(llamaRuns.map(m.value)) : undefined;
    return {
      metric: m.key,
      name: m.name,
      unit: m.unit,
      higherIsBetter: m.higherIsBetter,
      deltaq,
      llama,
      ratio: llama ? deltaq.median / llama.median : undefined,
    };
  });
}

/** What every report states first: the file, the settings and the machine they ran on. */
function reportBase(
  s: Settings,
  header: GgufFile,
  loadAverageBefore: ReturnType<typeof loadAverage>,
  loadAverageAfter: ReturnType<typeof loadAverage>,
) {
  return {
    model: s.model,
    modelBytes: header.fileSize,
    modelTypes: typeSummary(header),
    threads: s.threads,
    busy: s.busy,
    pp: s.pp,
    tg: s.tg,
    reps: s.reps,
    machine: { ...machine(), loadAverageBefore, loadAverageAfter },
    deltaqSource: sourceState(),
  };
}

// ---- memory bandwidth

/** Builds bench/bandwidth.zig once per source and CPU target into .cache/bench/, runs it. */
async function measureBandwidth(
  threads: number,
  log: (l: string) => void,
): Promise<{ bytes: number; gbPerSecond: number[] }> {
  const cpu = "native";
  const exe = `${BENCH_CACHE}bandwidth-${hex32(fnv1a(Deno.readFileSync(BANDWIDTH_SOURCE)))}-${cpu}`;
  if (!isFile(exe)) {
    Deno.mkdirSync(BENCH_CACHE, { recursive: true });
    log("building the memory-bandwidth probe (once)…");
    const zig = findZig();
    const tmp = `${exe}.${Deno.pid}.tmp`;
    const out = await new Deno.Command(zig[0], {
      args: [
        ...zig.slice(1),
        "build-exe",
        fileURLToPath(BANDWIDTH_SOURCE),
        "-OReleaseFast",
        `-mcpu=${cpu}`,
        "-fstrip",
        `-femit-bin=${tmp}`,
      ],
      cwd: BENCH_CACHE,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new DeltaqError(
        `building bench/bandwidth.zig failed:\n${new TextDecoder().decode(out.stderr).trim()}`,
      );
    }
    Deno.renameSync(tmp, exe);
    removeOutdated(exe, new RegExp(`^bandwidth-[0-9a-f]{8}-${cpu.replace(/\W/g, "\\$&")}$`), () => {});
  }
  const out = await new Deno.Command(exe, {
    args: [String(threads), "1024"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new DeltaqError(
      `the memory-bandwidth probe failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return JSON.parse(text);
}

/**
 * Bytes of weights a decode step streams: every tensor of the trunk, the LM head included, except
 * the token embedding when the LM head is a separate `output.weight` (then only one embedding row
 * is read per token) and blocks beyond `block_count` (MTP heads the forward pass does not run).
 * Of a routed-expert tensor (`*_exps`), only the share of the experts a token uses.
 */
export function decodeWeightBytes(
  h: { metadata: Map<string, unknown>; tensors: { name: string; byteLength: number }[] },
): number {
  const arch = String(h.metadata.get("general.architecture") ?? "");
  const blocks = Number(h.metadata.get(`${arch}.block_count`) ?? Infinity);
  const untied = h.tensors.some((t) => t.name === "output.weight");
  const experts = Number(h.metadata.get(`${arch}.expert_count`) ?? 0);
  const used = h.metadata.get(`${arch}.expert_used_count`);
  // per-layer counts: their mean
  const usedCount = typeof used === "number"
    ? used
    : ArrayBuffer.isView(used) || Array.isArray(used)
    ? Array.from(used as ArrayLike<number>).reduce((a, b) => a + Number(b), 0) /
      (used as ArrayLike<number>).length
    : 0;
  let bytes = 0;
  for (const t of h.tensors) {
    if (untied && t.name === "token_embd.weight") continue;
    const blk = /^blk\.(\d+)\./.exec(t.name);
    if (blk && Number(blk[1]) >= blocks) continue;
    bytes += /_exps\.weight$/.test(t.name) && experts > 0 ? t.byteLength * usedCount / experts : t.byteLength;
  }
  return bytes;
}

/** `Q4_K 61%, Q6_K 28%, …` by bytes. */
function typeSummary(h: { tensors: { type: number; byteLength: number }[] }): string {
  const by = new Map<string, number>();
  let all = 0;
  for (const t of h.tensors) {
    const name = ggmlTypeName(t.type);
    by.set(name, (by.get(name) ?? 0) + t.byteLength);
    all += t.byteLength;
  }
  return [...by].sort((a, b) => b[1] - a[1]).filter(([, n]) => n / all >= 0.005).map(([k, n]) =>
    `${k} ${Math.round((100 * n) / all)}%`
  )
    .join(", ");
}

// ---- machine

function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

function machine(): {
  cpu: string;
  logicalCpus: number;
  simd: string;
  memory: string;
  os: string;
  deno: string;
} {
  let cpu = "unknown CPU", simd = "", memory = "";
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    cpu = /^model name\s*:\s*(.+)$/m.exec(info)?.[1].trim() ?? cpu;
    const flags = new Set((/^flags\s*:\s*(.+)$/m.exec(info)?.[1] ?? "").split(/\s+/));
    simd = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni"].filter((
      f,
    ) => flags.has(f)).join(" ");
  } catch { /* not Linux */ }
  try {
    const kib = Number(/^MemTotal:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/meminfo"))?.[1]);
    if (kib) memory = `${(kib / 1024 / 1024).toFixed(1)} GiB`;
  } catch { /* not Linux */ }
  return {
    cpu,
    logicalCpus: navigator.hardwareConcurrency,
    simd,
    memory,
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
  };
}

/**
 * Reads a file once, so that it sits in the page cache before the first run: otherwise the first
 * run (always deltaq's) would also wait for the disk, and the runs after it would not.
 */
function readThrough(path: string): void {
  const file = Deno.openSync(path, { read: true });
  try {
    const buf = new Uint8Array(16 << 20);
    while (file.readSync(buf) !== null) { /* discard */ }
  } finally {
    file.close();
  }
}

/**
 * The commit the measured deltaq comes from, and which of its source files differ from it (a
 * benchmark of a work tree with uncommitted kernel changes is not the commit's).
 */
function sourceState(): string {
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const git = (...args: string[]) => {
    const out = new Deno.Command("git", { args: ["-C", root, ...args], stdout: "piped", stderr: "null" })
      .outputSync();
    return out.success ? new TextDecoder().decode(out.stdout).trimEnd() : undefined;
  };
  try {
    const commit = git("rev-parse", "--short", "HEAD");
    if (!commit) return "not a git checkout";
    const changed = (git("status", "--porcelain", "--", "kernels", "src", "build.zig") ?? "").split("\n")
      .filter(Boolean).map((l) => l.slice(3));
    if (changed.length === 0) return `commit ${commit}`;
    const shown = changed.slice(0, 4).join(", ") +
      (changed.length > 4 ? `, … (${changed.length} files)` : "");
    return `commit ${commit} + uncommitted changes to ${shown}`;
  } catch {
    return "unknown (git not found)";
  }
}

// ---- output

type Report = {
  model: string;
  modelBytes: number;
  modelTypes: string;
  threads: number;
  busy: number;
  reps: number;
  machine: ReturnType<typeof machine> & { loadAverageBefore: string; loadAverageAfter: string };
  deltaqSource: string;
  bandwidth: {
    bytes: number;
    /** Per thread count 1…threads, the better of `before` and `after`. */
    gbPerSecond: number[];
    before: number[];
    after: number[];
    decodeWeightBytes: number;
    decodeBoundTokensPerSecond: number;
  };
  summary: SummaryRow[];
  profile?: { pp: ProfileBreakdown; tg: ProfileBreakdown };
  runs: EngineRun[];
};

function table(rows: string[][], rightAligned: (col: number) => boolean): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  return rows.map((r) =>
    r.map((cell, c) => rightAligned(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c])).join("  ")
      .trimEnd()
  )
    .join("\n");
}

function fmt(x: number, digits: number): string {
  return x.toFixed(digits);
}

function cell(st: Stat, digits: number, reps: number): string {
  return reps > 1
    ? `${fmt(st.median, digits)} (${fmt(st.min, digits)}–${fmt(st.max, digits)})`
    : fmt(st.median, digits);
}

export function formatReport(r: Report, s: Settings): string {
  const out: string[] = [];
  const m = r.machine;
  const hasRef = r.summary[0]?.llama !== undefined;
  const preset = Object.keys(BENCH_PRESETS).find((p) => r.model === benchModelPath(p, s.type));
  const name = preset ? benchModelDescription(preset, s.type) : r.model;
  out.push(`model:    ${name} — ${(r.modelBytes / 1e9).toFixed(2)} GB (${r.modelTypes})`);
  out.push(
    `machine:  ${m.cpu}, ${m.logicalCpus} logical CPUs, ${m.memory}, ${m.simd}; ${m.os}; Deno ${m.deno}`,
  );
  const bws = r.bandwidth.gbPerSecond.map((g, i) => `${g.toFixed(1)} GB/s (${i + 1} thread${i ? "s" : ""})`)
    .join(", ");
  const list = (g: number[]) => g.map((x) => x.toFixed(1)).join("/");
  out.push(
    `memory:   read bandwidth ${bws}, bench/bandwidth.zig, best of before (${list(r.bandwidth.before)}) ` +
      `and after (${list(r.bandwidth.after)}) the runs`,
  );
  const engines = [
    ...new Set(
      r.runs.map((x) => `${x.engine}: ${x.build}${x.engine === "deltaq" ? `, ${r.deltaqSource}` : ""}`),
    ),
  ];
  out.push(`engines:  ${engines.join("\n          ")}`);
  out.push(
    `runs:     ${s.threads} thread${s.threads > 1 ? "s" : ""} each${busyNote(s.busy)}, ${r.reps} run${
      r.reps > 1 ? "s" : ""
    } per engine, ` +
      `${hasRef ? "alternating, " : ""}one process per run; ${
        r.reps > 1 ? "median (min–max)" : "single run"
      }`,
  );
  out.push(`load avg: ${m.loadAverageBefore} before, ${m.loadAverageAfter} after (1, 5, 15 min)`);
  out.push("");

  const head = hasRef
    ? ["metric", "deltaq", "llama.cpp", "deltaq ÷ llama.cpp", "better"]
    : ["metric", "deltaq"];
  const rows = [head];
  for (const row of r.summary) {
    const digits = metrics(s).find((x) => x.key === row.metric)!.digits;
    const cells = [`${row.name} (${row.unit})`, cell(row.deltaq, digits, r.reps)];
    if (hasRef) {
      cells.push(
        cell(row.llama!, digits, r.reps),
        `${row.ratio!.toFixed(2)}×`,
        row.higherIsBetter ? "higher" : "lower",
      );
    }
    rows.push(cells);
  }
  const bound = r.bandwidth.decodeBoundTokensPerSecond;
  const tg = r.summary.find((x) => x.metric === "tgTokensPerSecond")!;
  const pct = (x: number) => `${((100 * x) / bound).toFixed(0)}%`;
  const boundRow = [`decode ÷ bandwidth bound (${bound.toFixed(2)} tok/s)`, pct(tg.deltaq.median)];
  if (hasRef) boundRow.push(pct(tg.llama!.median), "", "higher");
  rows.push(boundRow);
  out.push(table(rows, (c) => c > 0 && c < 4));
  out.push(
    `bandwidth bound: ${
      (r.bandwidth.decodeWeightBytes / 1e9).toFixed(2)
    } GB of weights read per decoded token at ` +
      `${r.bandwidth.gbPerSecond[Math.min(s.threads, r.bandwidth.gbPerSecond.length) - 1].toFixed(1)} GB/s`,
  );

  if (r.profile) {
    out.push("");
    out.push(
      `deltaq profile (one extra pass with kernel timing on; ms per token and share of the phase's wall time)`,
    );
    const { pp, tg: dec } = r.profile;
    const categories = [...new Set([...pp.rows, ...dec.rows].map((x) => x.category))];
    const find = (b: ProfileBreakdown, c: string) => b.rows.find((x) => x.category === c);
    const prow = (b: ProfileBreakdown, c: string) => {
      const x = find(b, c);
      return x ? [x.msPerToken.toFixed(3), `${x.percent.toFixed(1)}%`] : ["", ""];
    };
    const prows = [["", `prompt pp${pp.tokens}`, "", `decode tg${dec.tokens}`, ""], [
      "category",
      "ms/tok",
      "share",
      "ms/tok",
      "share",
    ]];
    for (const c of categories) prows.push([c, ...prow(pp, c), ...prow(dec, c)]);
    prows.push(["total (wall)", pp.msPerToken.toFixed(3), "100%", dec.msPerToken.toFixed(3), "100%"]);
    // The same process's timed phases: a large difference means the machine was busier during one
    // of them, and the shares are those of a slowed-down pass.
    const timed = r.runs.find((x) => x.profile)!;
    prows.push([
      "timed run, same process (wall)",
      (timed.pp.ms / timed.pp.tokens).toFixed(3),
      "",
      (timed.tg.ms / timed.tg.tokens).toFixed(3),
      "",
    ]);
    out.push(table(prows, (c) => c > 0));
  }
  return out.join("\n");
}

// ---- depth

/** One engine's median figures at one depth. */
export interface DepthRow {
  depth: number;
  deltaq: { pp: Stat; tg: Stat };
  llama?: { pp: Stat; tg: Stat };
  ppRatio?: number;
  tgRatio?: number;
  /** deltaq's decode at this depth ÷ at depth 0 (when 0 was measured). */
  tgOfDepth0?: number;
  /** The same from the paired decode (`DepthPoint.paired`), median over runs. */
  tgPairedOfDepth0?: Stat;
}

async function measureDepths(
  s: Settings,
  header: GgufFile,
  library: string,
  status: Status,
): Promise<number> {
  const depths = s.depths!;
  const cfg = readConfig(new Metadata(header, s.model), header.tensors, s.model);
  const types = { k: s.cacheTypeK, v: s.cacheTypeV };
  checkCacheTypes(cfg, types);
  const loadBefore = loadAverage();
  if (s.reference) {
    status.show("installing llama.cpp if needed");
    const { locateLlama } = await import("../oracle/install.ts");
    locateLlama();
  }
  status.show("reading the model into the page cache");
  readThrough(s.model);
  const engines: Engine[] = s.reference ? ["deltaq", "llama.cpp"] : ["deltaq"];
  const runs: DepthRun[] = [];
  const total = s.reps * engines.length;
  for (let rep = 0; rep < s.reps; rep++) {
    for (const engine of engines) {
      status.show(
        `run ${runs.length + 1}/${total}: ${engine} at depths ${
          depths.join(", ")
        } (the deepest fill takes long)`,
      );
      runs.push(await spawnWorker<DepthRun>(engine, s, false, library));
    }
  }
  status.clear();
  const loadAfter = loadAverage();
  const of = (engine: Engine) => runs.filter((r) => r.engine === engine);
  const point = (r: DepthRun, depth: number) => r.points.find((p) => p.depth === depth)!;
  const stats = (engine: Engine, depth: number) => {
    const rs = of(engine);
    if (rs.length === 0) return undefined;
    return {
      pp: stat(rs.map((r) => point(r, depth).pp.tokensPerSecond)),
      tg: stat(rs.map((r) => point(r, depth).tg.tokensPerSecond)),
    };
  };
  const base = depths.includes(0) ? stats("deltaq", 0)!.tg.median : undefined;
  const rows: DepthRow[] = depths.map((depth) => {
    const deltaq = stats("deltaq", depth)!;
    const llama = stats("llama.cpp", depth);
    return {
      depth,
      deltaq,
      llama,
      ppRatio: llama ? deltaq.pp.median / llama.pp.median : undefined,
      tgRatio: llama ? deltaq.tg.median / llama.tg.median : undefined,
      tgOfDepth0: base ? deltaq.tg.median / base : undefined,
      tgPairedOfDepth0: pairedShare(of("deltaq").map((r) => point(r, depth).paired)),
    };
  });
  // Memory: the deepest sequence held (depth + the prompt chunk), against file + cache + 15%.
  const held = Math.max(...depths) + Math.max(s.pp, s.tg);
  const kvBytes = contextMemory(cfg, held, types).kvCacheBytes;
  const rss = (engine: Engine) => {
    const rs = of(engine);
    return rs.length ? stat(rs.map((r) => r.peakRssKiB * 1024)) : undefined;
  };
  const report = {
    ...reportBase(s, header, loadBefore, loadAfter),
    cacheTypeK: s.cacheTypeK,
    cacheTypeV: s.cacheTypeV,
    depths,
    rows,
    memory: {
      tokensHeld: held,
      kvCacheBytes: kvBytes,
      budgetBytes: (header.fileSize + kvBytes) * 1.15,
      deltaqPeakRssBytes: rss("deltaq"),
      llamaPeakRssBytes: rss("llama.cpp"),
    },
    runs,
  };
  console.log(s.json ? JSON.stringify(report, null, 2) : formatDepthReport(report));
  return 0;
}

/** Decode at the depth ÷ at depth 0 from each run's paired tokens (runs without them left out). */
function pairedShare(pairs: DepthPoint["paired"][]): Stat | undefined {
  const shares = pairs.filter((p) => p !== undefined).map((p) =>
    p.deep.tokensPerSecond / p.shallow.tokensPerSecond
  );
  return shares.length ? stat(shares) : undefined;
}

type DepthReport = {
  model: string;
  modelBytes: number;
  modelTypes: string;
  threads: number;
  busy: number;
  pp: number;
  tg: number;
  reps: number;
  cacheTypeK: CacheType;
  cacheTypeV: CacheType;
  depths: number[];
  machine: ReturnType<typeof machine> & { loadAverageBefore: string; loadAverageAfter: string };
  deltaqSource: string;
  rows: DepthRow[];
  memory: {
    tokensHeld: number;
    kvCacheBytes: number;
    budgetBytes: number;
    deltaqPeakRssBytes?: Stat;
    llamaPeakRssBytes?: Stat;
  };
  runs: DepthRun[];
};

export function formatDepthReport(r: DepthReport): string {
  const out: string[] = [];
  const m = r.machine;
  const hasRef = r.rows[0]?.llama !== undefined;
  const name = r.model === benchModelPath()
    ? "synthetic Qwen3.5-4B shapes (qwen35-4b preset), Q4_K_M by llama.cpp"
    : r.model;
  const mib = (b: number) => `${Math.round(b / 2 ** 20).toLocaleString("en-US")} MiB`;
  out.push(`model:    ${name} — ${(r.modelBytes / 1e9).toFixed(2)} GB (${r.modelTypes})`);
  out.push(
    `machine:  ${m.cpu}, ${m.logicalCpus} logical CPUs, ${m.memory}, ${m.simd}; ${m.os}; Deno ${m.deno}`,
  );
  const engines = [
    ...new Set(
      r.runs.map((x) => `${x.engine}: ${x.build}${x.engine === "deltaq" ? `, ${r.deltaqSource}` : ""}`),
    ),
  ];
  out.push(`engines:  ${engines.join("\n          ")}`);
  out.push(
    `runs:     ${r.threads} thread${r.threads > 1 ? "s" : ""} each${
      busyNote(r.busy)
    }, KV cache ${r.cacheTypeK}/${r.cacheTypeV} (K/V)` +
      `${
        hasRef ? ", llama.cpp with flash attention" : ""
      }; each depth filled in batches of 512, the sequence state saved and ` +
      `restored around pp${r.pp} and tg${r.tg} (as llama-bench -d); ${r.reps} run${
        r.reps > 1 ? "s" : ""
      } per engine, one process ` +
      `per run${r.reps > 1 ? ", median (min–max)" : ""}`,
  );
  out.push(`load avg: ${m.loadAverageBefore} before, ${m.loadAverageAfter} after (1, 5, 15 min)`);
  out.push("");
  const c = (st: Stat) => cell(st, 2, r.reps);
  const ratio = (x?: number) => x === undefined ? "" : `${x.toFixed(2)}×`;
  const head = hasRef
    ? [
      "depth",
      `pp${r.pp} deltaq`,
      "llama.cpp",
      "ratio",
      `tg${r.tg} deltaq`,
      "llama.cpp",
      "ratio",
      "deltaq tg ÷ depth 0",
      "paired",
    ]
    : ["depth", `pp${r.pp} deltaq`, `tg${r.tg} deltaq`, "tg ÷ depth 0", "paired"];
  const rows = [head];
  // the paired share to a tenth (the default): it is steady enough for that, and goals are set in
  // whole percent; the separately measured share in whole percent
  const percent = (x: number, digits = 1) => `${(100 * x).toFixed(digits)}%`;
  for (const row of r.rows) {
    const of0 = row.tgOfDepth0 === undefined ? "" : percent(row.tgOfDepth0, 0);
    const paired = row.tgPairedOfDepth0 === undefined
      ? ""
      : r.reps > 1
      ? `${percent(row.tgPairedOfDepth0.median)} (${percent(row.tgPairedOfDepth0.min)}–${
        percent(row.tgPairedOfDepth0.max)
      })`
      : percent(row.tgPairedOfDepth0.median);
    rows.push(
      hasRef
        ? [
          String(row.depth),
          c(row.deltaq.pp),
          c(row.llama!.pp),
          ratio(row.ppRatio),
          c(row.deltaq.tg),
          c(row.llama!.tg),
          ratio(row.tgRatio),
          of0,
          paired,
        ]
        : [String(row.depth), c(row.deltaq.pp), c(row.deltaq.tg), of0, paired],
    );
  }
  out.push(`tokens per second${r.reps > 1 ? ", median (min–max)" : ""}`);
  out.push(table(rows, () => true));
  out.push(
    `paired: deltaq's tg${r.tg} at the depth ÷ at depth 0, the two decoded alternately token by token (same seconds, same machine state)`,
  );
  const mem = r.memory;
  const deepest = Math.max(...r.depths);
  if (mem.deltaqPeakRssBytes) {
    const peak = mem.deltaqPeakRssBytes.median;
    out.push(
      `peak RSS, deltaq, after depth ${deepest.toLocaleString("en-US")}: ${mib(peak)} against file ${
        mib(r.modelBytes)
      } + KV cache ` +
        `${mib(mem.kvCacheBytes)} (${
          mem.tokensHeld.toLocaleString("en-US")
        } tokens, ${r.cacheTypeK}/${r.cacheTypeV}) + 15% = ` +
        `${mib(mem.budgetBytes)}: ${peak <= mem.budgetBytes ? "within" : "OVER"} (${
          ((100 * peak) / (r.modelBytes + mem.kvCacheBytes)).toFixed(0)
        }% of file + cache)`,
    );
  }
  if (mem.llamaPeakRssBytes) {
    out.push(
      `peak RSS, llama.cpp: ${
        mib(mem.llamaPeakRssBytes.median)
      } (includes the saved copy of its sequence state that llama-bench -d also keeps)`,
    );
  }
  return out.join("\n");
}
