/**
 * `deno task synth`: writes a synthetic `qwen35` or `qwen35moe` GGUF (see src/model/synth.ts).
 */
import { parseArgs } from "node:util";
import { DeltaqError } from "../src/errors.ts";
import {
  checkShape,
  describeShape,
  type MoeShape,
  PRESETS,
  type Qwen35Shape,
  type SynthType,
  vocabFileSize,
  writeSyntheticQwen35,
} from "../src/model/synth.ts";

const HELP = `Usage: deno task synth --out FILE [options]

Writes a synthetic Qwen3.5 (qwen35, or qwen35moe with experts) GGUF with seeded, well-behaved
random weights.

  --out FILE            output path (written as FILE.partial, renamed when complete)
  --preset NAME         ${Object.keys(PRESETS).join(" | ")} (default tiny)
  --type T              f32 | f16 | bf16 storage of the matrices (default f32)
  --quantize Q          then quantize with the pinned llama.cpp to file type Q (llama-quantize's
                        names: Q8_0, Q4_K_M, Q3_K_M, IQ4_XS, IQ3_S, IQ2_XXS, IQ1_M, …); the IQ1/IQ2
                        and IQ3_XXS types get a synthetic importance matrix (all ones)
  --pure                with --quantize: every matrix in Q's base type (llama-quantize --pure)
  --seed N              PRNG seed (default 1); same seed and options give the same bytes
  --vocab FILE          copy the tokenizer.* keys of this GGUF (default: a synthetic byte-level BPE)
  --chat-template FILE  store this Jinja text as tokenizer.chat_template
  --name TEXT           general.name
  --quiet               no progress on stderr

Shape overrides (default: the preset's):
  --layers N  --embedding N  --ffn N  --heads N  --kv-heads N  --head-dim N
  --rope-dims N  --rope-base X  --ssm-k-heads N  --ssm-v-heads N  --ssm-head-dim N
  --conv-kernel N  --vocab-size N  --interval N  --recurrent-layers  --tied | --untied
  --mtp N  --context N  --eps X
Mixture of experts (qwen35moe; --experts turns a dense preset into one):
  --experts N  --experts-used N  --expert-ffn N  --shared-ffn N  --fused-gate-up | --split-gate-up

Presets:
${
  Object.entries(PRESETS).map(([k, s]) => `  ${k.padEnd(14)} ${describeShape(s, "f32").replace(/ F32$/, "")}`)
    .join("\n")
}
`;

/** Experts added to a dense preset by --experts (the rest as flags say). */
const DEFAULT_MOE: MoeShape = { experts: 8, expertsUsed: 2, expertFeedForward: 256, sharedFeedForward: 256, fusedGateUp: false };

const NUMERIC: [flag: string, key: keyof Qwen35Shape][] = [
  ["layers", "layers"],
  ["embedding", "embedding"],
  ["ffn", "feedForward"],
  ["heads", "headCount"],
  ["kv-heads", "headCountKv"],
  ["head-dim", "headDim"],
  ["rope-dims", "ropeDims"],
  ["rope-base", "ropeFreqBase"],
  ["ssm-k-heads", "ssmKHeads"],
  ["ssm-v-heads", "ssmVHeads"],
  ["ssm-head-dim", "ssmHeadDim"],
  ["conv-kernel", "convKernel"],
  ["vocab-size", "vocabSize"],
  ["interval", "fullAttentionInterval"],
  ["mtp", "mtpLayers"],
  ["context", "contextLength"],
  ["eps", "rmsEps"],
];

const MOE_NUMERIC: [flag: string, key: keyof MoeShape][] = [
  ["experts", "experts"],
  ["experts-used", "expertsUsed"],
  ["expert-ffn", "expertFeedForward"],
  ["shared-ffn", "sharedFeedForward"],
];

/** A numeric flag's value, or undefined when absent. */
function numberFlag(values: Record<string, unknown>, flag: string): number | undefined {
  const raw = values[flag] as string | undefined;
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n)) throw new DeltaqError(`--${flag} must be a number, not ${raw}`);
  return n;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      help: { type: "boolean", short: "h" },
      out: { type: "string", short: "o" },
      preset: { type: "string", default: "tiny" },
      type: { type: "string", default: "f32" },
      quantize: { type: "string" },
      pure: { type: "boolean" },
      seed: { type: "string", default: "1" },
      vocab: { type: "string" },
      "chat-template": { type: "string" },
      name: { type: "string" },
      quiet: { type: "boolean" },
      "recurrent-layers": { type: "boolean" },
      tied: { type: "boolean" },
      untied: { type: "boolean" },
      "fused-gate-up": { type: "boolean" },
      "split-gate-up": { type: "boolean" },
      ...Object.fromEntries(MOE_NUMERIC.map(([flag]) => [flag, { type: "string" as const }])),
      ...Object.fromEntries(NUMERIC.map(([flag]) => [flag, { type: "string" as const }])),
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const out = values.out as string | undefined;
  if (!out) throw new DeltaqError("missing --out FILE (see --help)");
  const preset = PRESETS[values.preset as string];
  if (!preset) {
    throw new DeltaqError(`unknown preset ${values.preset}; use one of ${Object.keys(PRESETS).join(", ")}`);
  }
  const type = values.type as SynthType;
  if (!["f32", "f16", "bf16"].includes(type)) {
    throw new DeltaqError(`--type must be f32, f16 or bf16, not ${type}`);
  }
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed)) throw new DeltaqError(`--seed must be an integer, not ${values.seed}`);

  const shape: Qwen35Shape = { ...preset };
  const flags = values as Record<string, unknown>;
  for (const [flag, key] of NUMERIC) {
    const n = numberFlag(flags, flag);
    if (n !== undefined) (shape as unknown as Record<string, number>)[key] = n;
  }
  if (values["fused-gate-up"] && values["split-gate-up"]) throw new DeltaqError("--fused-gate-up and --split-gate-up contradict each other");
  const moeAsked = MOE_NUMERIC.some(([flag]) => flags[flag] !== undefined) || values["fused-gate-up"] || values["split-gate-up"];
  if (moeAsked) {
    if (!shape.moe && flags.experts === undefined) throw new DeltaqError(`preset ${values.preset} has no experts: give --experts N`);
    const moe: MoeShape = { ...(shape.moe ?? DEFAULT_MOE), fusedGateUp: shape.moe?.fusedGateUp ?? false };
    for (const [flag, key] of MOE_NUMERIC) {
      const n = numberFlag(flags, flag);
      if (n !== undefined) (moe as unknown as Record<string, number>)[key] = n;
    }
    if (values["fused-gate-up"]) moe.fusedGateUp = true;
    if (values["split-gate-up"]) moe.fusedGateUp = false;
    shape.moe = moe;
  }
  if (values["recurrent-layers"]) shape.explicitRecurrentLayers = true;
  if (values.tied && values.untied) throw new DeltaqError("--tied and --untied contradict each other");
  if (values.tied) shape.tiedOutput = true;
  if (values.untied) shape.tiedOutput = false;

  const vocabFile = values.vocab as string | undefined;
  if (vocabFile) {
    const n = vocabFileSize(vocabFile);
    if ((values as Record<string, unknown>)["vocab-size"] === undefined && n > shape.vocabSize) {
      shape.vocabSize = n;
    }
  }
  checkShape(shape);
  let chatTemplate: string | undefined;
  const templatePath = values["chat-template"] as string | undefined;
  if (templatePath) {
    try {
      chatTemplate = Deno.readTextFileSync(templatePath);
    } catch (e) {
      throw new DeltaqError(`cannot read --chat-template ${templatePath}: ${(e as Error).message}`);
    }
  }
  const quantizeTo = values.quantize as string | undefined;
  const quiet = values.quiet ?? false;
  const log = (s: string) => quiet || console.error(s);

  // Imported only when asked for: the oracle installs the pinned llama.cpp on first use.
  const oracle = quantizeTo ? await import("../src/oracle/llama.ts") : undefined;
  if (oracle && !(quantizeTo! in oracle.LLAMA_FTYPE)) {
    throw new DeltaqError(
      `--quantize must be one of ${Object.keys(oracle.LLAMA_FTYPE).join(", ")}, not ${quantizeTo}`,
    );
  }

  log(`synth: ${values.preset} — ${describeShape(shape, type)}, seed ${seed}`);
  const floatPath = oracle ? `${out}.${type}.tmp` : out;
  // The writer removes its .partial file when it fails, but Ctrl-C ends the process first.
  const onInterrupt = () => {
    for (const p of [`${floatPath}.partial`, ...(oracle ? [floatPath] : [])]) {
      try {
        Deno.removeSync(p);
      } catch { /* not there */ }
    }
    console.error("\nsynth: interrupted; removed the unfinished file");
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    const t0 = performance.now();
    let lastReport = t0;
    const size = await writeSyntheticQwen35(
      floatPath,
      {
        shape,
        type,
        seed,
        vocabFile,
        chatTemplate,
        name: values.name as string | undefined ?? `deltaq synthetic ${values.preset}`,
      },
      (written, total) => {
        const now = performance.now();
        if (quiet || total < 256 << 20 || now - lastReport < 1000) return;
        lastReport = now;
        const rate = written / ((now - t0) / 1000);
        Deno.stderr.writeSync(new TextEncoder().encode(
          `\rsynth: ${gb(written)} / ${gb(total)} GB (${(100 * written / total).toFixed(0)}%), ${
            (rate / 1e6).toFixed(0)
          } MB/s   `,
        ));
      },
    );
    if (!quiet && size >= 256 << 20) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
    log(`synth: wrote ${floatPath} (${gb(size)} GB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    if (oracle) {
      const t1 = performance.now();
      try {
        oracle.quantize(floatPath, out, quantizeTo as keyof typeof oracle.LLAMA_FTYPE, {
          pure: values.pure ?? false,
        });
      } finally {
        await Deno.remove(floatPath).catch(() => {});
      }
      log(
        `synth: quantized to ${quantizeTo}: ${out} (${gb(Deno.statSync(out).size)} GB) in ${
          ((performance.now() - t1) / 1000).toFixed(1)
        } s`,
      );
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
}

function gb(bytes: number): string {
  return (bytes / 1e9).toFixed(bytes < 1e9 ? 3 : 2);
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    if (
      e instanceof DeltaqError ||
      (e instanceof TypeError && (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS"))
    ) {
      console.error(`synth: ${(e as Error).message}`);
      Deno.exit(1);
    }
    throw e;
  }
}
