/**
 * The CLI entry: dispatches sub-commands and turns user errors into one line on stderr and exit
 * code 1 (no stack traces for DeltaqError; anything else is a bug and keeps its trace).
 */
import { DeltaqError } from "../errors.ts";
import { cacheTypeFlag, FLAGS, flagHelp, parseFlags } from "./args.ts";

const INFO_FLAGS = FLAGS.filter((f) => ["ctx", "cache-type-k", "cache-type-v", "help"].includes(f.long));
import { runInfo } from "./info.ts";
import { runGenerate } from "./run.ts";

export const VERSION = "0.1.0";

export const HELP = `deltaq ${VERSION} — run Qwen3.5 GGUF models locally (Deno + Zig kernels)

usage:
  deno run -A cli.ts -m MODEL.gguf -p "prompt"     answer a prompt (chat template when the model has one)
  deno run -A cli.ts -m MODEL.gguf -i              chat in the terminal
  deno run -A cli.ts --hf user/repo[:QUANT] -p …   download from Hugging Face first
  deno run -A cli.ts info MODEL.gguf                metadata, tensors, layer schedule, memory per context
  deno run -A cli.ts bench -m MODEL.gguf            speed against llama.cpp (see bench --help)
  deno run -A cli.ts serve -m MODEL.gguf            OpenAI-compatible server (see serve --help)

Without -m or --hf, Qwen3.5-4B Q4_K_M is downloaded once into the Hugging Face cache.

options:
${flagHelp()}
`;

export async function main(args: string[]): Promise<number> {
  try {
    if (args[0] === "info") {
      const usage = "usage: deno run -A cli.ts info MODEL.gguf [-c N] [-ctk TYPE] [-ctv TYPE]   (memory for that context and cache types)";
      const { flags, positionals } = parseFlags(args.slice(1), INFO_FLAGS);
      if (flags.help) {
        console.log(usage);
        return 0;
      }
      if (positionals.length !== 1) throw new DeltaqError(usage);
      const ctx = flags.ctx as number | undefined;
      runInfo(positionals[0], {
        contextLength: ctx || undefined,
        cacheTypeK: cacheTypeFlag(flags.cacheTypeK, "--cache-type-k"),
        cacheTypeV: cacheTypeFlag(flags.cacheTypeV, "--cache-type-v"),
      });
      return 0;
    }
    if (args[0] === "serve") {
      const { runServe } = await import("./serve.ts");
      return await runServe(args.slice(1));
    }
    if (args[0] === "bench") {
      const { runBench } = await import("./bench.ts");
      return await runBench(args.slice(1));
    }
    const { flags, positionals } = parseFlags(args);
    if (flags.help || args.length === 0) {
      console.log(HELP);
      return 0;
    }
    if (flags.version) {
      console.log(`deltaq ${VERSION}`);
      return 0;
    }
    if (positionals.length > 0) {
      throw new DeltaqError(`unexpected argument ${JSON.stringify(positionals[0])} (the prompt goes after -p; see --help)`);
    }
    return await runGenerate(flags);
  } catch (e) {
    if (e instanceof DeltaqError) {
      console.error(`deltaq: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
