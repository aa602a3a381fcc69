/**
 * The benchmark models: a synthetic model with exactly Qwen3.5-4B's shapes, quantized by the
 * pinned llama.cpp to Q4_K_M (the default, ≈ 2.7 GB) or any file type `llama_model_quantize` makes
 * (`--type`), each cached in `.cache/bench/` (git-ignored).
 *
 * The file name carries a hash of the generator's sources and the llama.cpp version, so a change
 * to either builds a new file. Building writes the F16 model (≈ 8.4 GB) under a temporary name,
 * quantizes it (llama.cpp writes its output atomically) and deletes the F16 file; a failure or
 * Ctrl-C leaves no half-written model behind.
 */
import { fileURLToPath } from "node:url";
import { DeltaqError } from "../errors.ts";
import { generatorVersion, PRESETS, writeSyntheticQwen35 } from "../model/synth.ts";
import { LLAMA_PACKAGE_VERSION } from "../oracle/install.ts";
import { ProgressBar } from "./progress.ts";
import { isFile } from "../util/fs.ts";

const PRESET = "qwen35-4b";
export const DEFAULT_BENCH_TYPE = "Q4_K_M";
const SEED = 1;
/** F16 intermediate (8.4 GB) + quantized result (2.7 GB) + headroom. */
const DISK_NEEDED = 12e9;

const repoRoot = new URL("../../", import.meta.url);

function fromUrl(u: URL): string {
  return fileURLToPath(u);
}

export const BENCH_CACHE = fromUrl(new URL(".cache/bench/", repoRoot));

/** Where the cached benchmark model of a file type is (or will be). */
export function benchModelPath(type: string = DEFAULT_BENCH_TYPE): string {
  return `${BENCH_CACHE}${PRESET}-s${SEED}-${generatorVersion()}-llama${LLAMA_PACKAGE_VERSION}-${type}.gguf`;
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
 * The path of the cached 4B benchmark model in file type `type` (a key of llama.cpp's
 * `LLAMA_FTYPE`, see `checkBenchType`), building it when missing (several minutes; `log` receives
 * one line per stage).
 */
export async function ensureBenchModel(log: (line: string) => void, type: string = DEFAULT_BENCH_TYPE): Promise<string> {
  const quant = await checkBenchType(type);
  const path = benchModelPath(quant);
  if (isFile(path)) return path;
  Deno.mkdirSync(BENCH_CACHE, { recursive: true });
  removeLeftovers();
  const free = freeBytes(BENCH_CACHE);
  if (free !== undefined && free < DISK_NEEDED) {
    throw new DeltaqError(
      `building the benchmark model needs about ${
        (DISK_NEEDED / 1e9).toFixed(0)
      } GB free in ${BENCH_CACHE} ` +
        `(the F16 model before quantization is 8.4 GB); only ${(free / 1e9).toFixed(1)} GB are free`,
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
    log(`building the benchmark model (once): synthetic ${PRESET} in F16, then ${quant} with llama.cpp`);
    const bar = new ProgressBar(`${PRESET} F16`);
    const t0 = performance.now();
    await writeSyntheticQwen35(
      floatPath,
      { shape: PRESETS[PRESET], type: "f16", seed: SEED, name: `deltaq synthetic ${PRESET}` },
      (written, total) => bar.update(written, total),
    );
    bar.finish();
    log(
      `wrote the F16 model in ${
        ((performance.now() - t0) / 1000).toFixed(0)
      } s; quantizing to ${quant} (several minutes)…`,
    );
    const t1 = performance.now();
    // Imported here: the oracle installs the pinned llama.cpp on first use.
    const { quantize } = await import("../oracle/llama.ts");
    // The quantizer is one blocking native call, during which a signal listener could not run:
    // let Ctrl-C end the process at once; the next build removes what it left (removeLeftovers).
    Deno.removeSignalListener("SIGINT", onInterrupt);
    listening = false;
    quantize(floatPath, path, quant as Parameters<typeof quantize>[2]);
    log(
      `quantized in ${((performance.now() - t1) / 1000).toFixed(0)} s: ${path} (${
        (Deno.statSync(path).size / 1e9).toFixed(2)
      } GB)`,
    );
  } finally {
    cleanUp();
    if (listening) Deno.removeSignalListener("SIGINT", onInterrupt);
  }
  // Earlier builds of the same type (other generator or llama.cpp versions); other types stay.
  removeOutdated(path, new RegExp(`^qwen35-4b-s\\d+-[0-9a-f]{8}-llama[\\d.]+-${quant}\\.gguf$`), log);
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
