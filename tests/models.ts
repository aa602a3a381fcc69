/**
 * Synthetic test models, built on first use and cached in `.cache/test-models/` (git-ignored).
 * File names carry a hash of the generator's sources, so a change to the generator rebuilds them.
 * Quantized variants are made by the pinned llama.cpp itself (`quantize`), with a synthetic
 * importance matrix for the file types that need one (IQ1_*, IQ2_*, IQ3_XXS) and optionally in one
 * type throughout (`pure`) or with per-tensor types (`tensorTypes`).
 */
import {
  generatorVersion,
  PRESETS,
  type Qwen35Shape,
  type SynthType,
  writeSyntheticQwen35,
} from "../src/model/synth.ts";
import { quantize, type QuantizeOptions, type QuantizeType } from "../src/oracle/llama.ts";
import { isFile } from "../src/util/fs.ts";
import { fnv1a } from "../src/util/hash.ts";

const CACHE = decodeURIComponent(new URL("../.cache/test-models/", import.meta.url).pathname);

export interface TestModelSpec {
  preset: keyof typeof PRESETS | string;
  /** Stored float type of the generated file. */
  type?: SynthType;
  /** Quantize the F32 file with llama.cpp to this type. */
  quant?: QuantizeType;
  /** How llama.cpp quantizes (importance matrix, pure, per-tensor types); see `QuantizeOptions`. */
  quantOptions?: Omit<QuantizeOptions, "threads">;
  seed?: number;
  /** Shape overrides on top of the preset. */
  shape?: Partial<Qwen35Shape>;
  vocabFile?: string;
  chatTemplate?: string;
}

/** The path of a cached synthetic model, generating (and quantizing) it when missing. */
export async function testModel(spec: TestModelSpec): Promise<string> {
  Deno.mkdirSync(CACHE, { recursive: true });
  const seed = spec.seed ?? 1;
  const type = spec.type ?? "f32";
  const extra = JSON.stringify([spec.shape ?? {}, spec.vocabFile ?? "", spec.chatTemplate ?? ""]);
  const base = `${CACHE}${spec.preset}-s${seed}-${generatorVersion()}-${fnv1a(extra).toString(16)}`;
  const floatPath = `${base}-${type}.gguf`;
  if (!isFile(floatPath)) {
    const shape = { ...PRESETS[spec.preset], ...spec.shape };
    // Under a name of this process's own, then renamed: test files running in parallel may make
    // the same model at the same time.
    const mine = `${floatPath}.${Deno.pid}.tmp`;
    await writeSyntheticQwen35(mine, {
      shape,
      type,
      seed,
      vocabFile: spec.vocabFile,
      chatTemplate: spec.chatTemplate,
    });
    Deno.renameSync(mine, floatPath);
  }
  if (!spec.quant) return floatPath;
  const options = spec.quantOptions ?? {};
  const how = Object.keys(options).length ? `-${fnv1a(JSON.stringify(options)).toString(16)}` : "";
  const quantPath = `${base}-${type}-${spec.quant}${how}.gguf`;
  if (!isFile(quantPath)) quantize(floatPath, quantPath, spec.quant, { ...options, threads: 2 });
  return quantPath;
}
