/**
 * The benchmark models: synthetic models with the exact shapes of a real one, quantized by the
 * pinned llama.cpp to Q4_K_M (the default) or any file type `llama_model_quantize` makes
 * (`--type`), cached in `.cache/bench/` (git-ignored). `4b` (the default) has
 * Qwen3.5-4B's shapes (≈ 2.7 GB); `35b-a3b` has Qwen3.5-35B-A3B's widths (256 experts, 8 used
 * plus a shared one) but only 8 of its 40 layers (≈ 4.7 GB): llama.cpp needs about twice the file
 * in resident memory, and the whole model (≈ 20 GB) would not fit a 24 GiB machine twice, let
 * alone beside other work.
 *
 * The file name carries a hash of the generator's sources and the llama.cpp version, so a change
 * to either builds a new file. Building writes the F16 model under a temporary name, quantizes it
 * (llama.cpp writes its output atomically) and deletes the F16 file; a failure or Ctrl-C leaves
 * no half-written model behind.
 */
import { fileURLToPath } from "node:url";
import { DeltaqError } from "../errors.ts";
import { generatorVersion, PRESETS, type Qwen35Shape, writeSyntheticQwen35 } from "../model/synth.ts";
import { LLAMA_PACKAGE_VERSION } from "../oracle/install.ts";
import { ProgressBar } from "./progress.ts";
import { isFile } from "../util/fs.ts";

export interface BenchPreset {
  /** The synthetic shape (src/model/synth.ts PRESETS). */
  synth: string;
  /** Layers built when fewer than the real model's (the table says so). */
  layers?: number;
  /** What the table calls the model. */
  description: string;
  /** Disk space the build needs: F16 intermediate + quantized result + headroom. */
  diskNeeded: number;
}

export const BENCH_PRESETS: Record<string, BenchPreset> = {
  "4b": {
    synth: "qwen35-4b",
    description: "synthetic Qwen3.5-4B shapes (qwen35-4b preset)",
    diskNeeded: 12e9, // 8.4 GB F16, 2.7 GB Q4_K_M
  },
  "35b-a3b": {
    synth: "qwen35-35b-a3b",
    layers: 8,
    description: "synthetic Qwen3.5-35B-A3B shapes (qwen35-35b-a3b preset: 256 experts, 8 used + 1 shared)",
    diskNeeded: 22e9, // 15.5 GB F16, 4.7 GB Q4_K_M
  },
};
export const DEFAULT_BENCH_PRESET = "4b";

/** The file type a benchmark model is built in unless `--type` says otherwise. */
export const DEFAULT_BENCH_TYPE = "Q4_K_M";
const SEED = 1;

function presetOf(name: string): BenchPreset {
  const p = BENCH_PRESETS[name];
  if (!p) throw new DeltaqError(`unknown bench preset ${JSON.stringify(name)}; use one of ${Object.keys(BENCH_PRESETS).join(", ")}`);
  return p;
}

function shapeOf(p: BenchPreset): Qwen35Shape {
  return p.layers ? { ...PRESETS[p.synth], layers: p.layers } : PRESETS[p.synth];
}

/** How the report names a preset's model, with the layer count when it is reduced. */
export function benchModelDescription(name: string, type: string = DEFAULT_BENCH_TYPE): string {
  const p = presetOf(name);
  const full = PRESETS[p.synth].layers;
  return `${p.description}, ${type} by llama.cpp${p.layers && p.layers < full ? `; layers reduced to ${p.layers} of ${full}` : ""}`;
}

const repoRoot = new URL("../../", import.meta.url);

function fromUrl(u: URL): string {
  return fileURLToPath(u);
}

export const BENCH_CACHE = fromUrl(new URL(".cache/bench/", repoRoot));

/** Where the cached benchmark model of a preset in a file type is (or will be). */
export function benchModelPath(name = DEFAULT_BENCH_PRESET, type: string = DEFAULT_BENCH_TYPE): string {
  const p = presetOf(name);
  const layers = p.layers ? `-l${p.layers}` : "";
  return `${BENCH_CACHE}${p.synth}${layers}-s${SEED}-${generatorVersion()}-llama${LLAMA_PACKAGE_VERSION}-${type}.gguf`;
}

/**
 * The file types a benchmark model can be built in (llama.cpp's quantize presets and F16/BF16),
 * or a DeltaqError naming them for an unknown one. Imported lazily: the oracle is test and
 * benchmark machinery.
 */
export async function checkBenchType(type: string): Promise<string> {
  const { LLAMA_FTYPE } = await import("../oracle/llama.ts");
  const known = Object.keys(LLAMA_FTYPE);
  const match = known.find((k) => k.toLowerCase() === type.toLowerCase());
  if (!match) throw new DeltaqError(`unknown benchmark model type ${JSON.stringify(type)}; use one of ${known.join(", ")}`);
  return match;
}

/** Free bytes on the file system holding `dir`, or undefined when `df` cannot tell. */
function freeBytes(dir: string): number | undefined {
  try {
    const out = new Deno.Command("df", { args: ["-Pk", dir], stdout: "piped", stderr: "null" }).outputSync();
    const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
    const avail = Number(line.split(/\s+/)[3]);
    return out.success && Number.isFinite(avail) ? avail * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The path of a preset's cached benchmark model in file type `type` (a key of llama.cpp's
 * `LLAMA_FTYPE`, see `checkBenchType`), building it when missing (several minutes; `log`
 * receives one line per stage).
 */
export async function ensureBenchModel(
  log: (line: string) => void,
  name = DEFAULT_BENCH_PRESET,
  type: string = DEFAULT_BENCH_TYPE,
): Promise<string> {
  const preset = presetOf(name);
  const PRESET = preset.synth;
  const QUANT = await checkBenchType(type);
  const path = benchModelPath(name, QUANT);
  if (isFile(path)) return path;
  Deno.mkdirSync(BENCH_CACHE, { recursive: true });
  removeLeftovers();
  const free = freeBytes(BENCH_CACHE);
  if (free !== undefined && free < preset.diskNeeded) {
    throw new DeltaqError(
      `building the ${name} benchmark model needs about ${
        (preset.diskNeeded / 1e9).toFixed(0)
      } GB free in ${BENCH_CACHE} ` +
        `(for the F16 model before quantization); only ${(free / 1e9).toFixed(1)} GB are free`,
    );
  }
  // A name of its own per process, so two benchmarks started at once cannot write the same file.
  const floatPath = `${path}.f16-${Deno.pid}.tmp`;
  const cleanUp = () => {
    for (const p of [floatPath, `${floatPath}.partial`]) {
      try {
        Deno.removeSync(p);
      } catch { /* not there */ }
    }
  };
  const onInterrupt = () => {
    cleanUp();
    console.error("\ndeltaq bench: interrupted; removed the unfinished benchmark model");
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  let listening = true;
  try {
    const layers = preset.layers ? ` (${preset.layers} layers)` : "";
    log(`building the benchmark model (once): synthetic ${PRESET}${layers} in F16, then ${QUANT} with llama.cpp`);
    const bar = new ProgressBar(`${PRESET} F16`);
    const t0 = performance.now();
    await writeSyntheticQwen35(
      floatPath,
      { shape: shapeOf(preset), type: "f16", seed: SEED, name: `deltaq synthetic ${PRESET}${layers}` },
      (written, total) => bar.update(written, total),
    );
    bar.finish();
    log(
      `wrote the F16 model in ${
        ((performance.now() - t0) / 1000).toFixed(0)
      } s; quantizing to ${QUANT} (several minutes)…`,
    );
    const t1 = performance.now();
    // Imported here: the oracle installs the pinned llama.cpp on first use.
    const { quantize } = await import("../oracle/llama.ts");
    // The quantizer is one blocking native call, during which a signal listener could not run:
    // let Ctrl-C end the process at once; the next build removes what it left (removeLeftovers).
    Deno.removeSignalListener("SIGINT", onInterrupt);
    listening = false;
    quantize(floatPath, path, QUANT as Parameters<typeof quantize>[2]);
    log(
      `quantized in ${((performance.now() - t1) / 1000).toFixed(0)} s: ${path} (${
        (Deno.statSync(path).size / 1e9).toFixed(2)
      } GB)`,
    );
  } finally {
    cleanUp();
    if (listening) Deno.removeSignalListener("SIGINT", onInterrupt);
  }
  // Earlier builds of the same preset and type (other generator or llama.cpp versions); others stay.
  const stem = `${PRESET}${preset.layers ? `-l${preset.layers}` : ""}`.replace(/\W/g, "\\$&");
  removeOutdated(path, new RegExp(`^${stem}-s\\d+-[0-9a-f]{8}-llama[\\d.]+-${QUANT}\\.gguf$`), log);
  return path;
}

/** Deletes earlier builds (other generator or llama.cpp versions) that `current` replaces. */
export function removeOutdated(current: string, pattern: RegExp, log: (line: string) => void): void {
  const keep = current.slice(current.lastIndexOf("/") + 1);
  for (const e of Deno.readDirSync(BENCH_CACHE)) {
    if (!e.isFile || e.name === keep || !pattern.test(e.name)) continue;
    try {
      Deno.removeSync(`${BENCH_CACHE}${e.name}`);
      log(`removed the outdated ${e.name}`);
    } catch { /* removed by someone else */ }
  }
}

/**
 * Deletes temporary files of earlier benchmarks whose process is gone (e.g. killed while
 * quantizing): `….f16-PID.tmp[.partial]`, `….partial-PID`, `….PID.tmp`, `libdeltaq-PID.so` (or .dylib, .dll).
 */
export function removeLeftovers(): void {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(BENCH_CACHE)];
  } catch {
    return; // no cache yet
  }
  for (const e of entries) {
    const m = /\.f16-(\d+)\.tmp(?:\.partial)?$|\.partial-(\d+)$|\.(\d+)\.tmp$|^libdeltaq-(\d+)\.(?:so|dylib|dll)$/.exec(
      e.name,
    );
    const pid = Number(m?.slice(1).find((x) => x !== undefined));
    if (!m || !e.isFile || isProcessAlive(pid)) continue;
    try {
      Deno.removeSync(`${BENCH_CACHE}${e.name}`);
    } catch { /* removed by someone else */ }
  }
}

function isProcessAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}
