/**
 * The CLI entry: dispatches sub-commands and turns user errors into one line on stderr and exit
 * code 1 (no stack traces for DeltaqError; anything else is a bug and keeps its trace).
 */
import { DeltaqError } from "../errors.ts";
import { runInfo } from "./info.ts";

export const VERSION = "0.1.0";

const HELP = `deltaq ${VERSION} — run Qwen3.5 GGUF models locally (Deno + Zig)

usage:
  deno run -A cli.ts info <model.gguf>     metadata, tensor table and layer schedule
  deno run -A cli.ts --help | --version
`;

// deno-lint-ignore require-await
export async function main(args: string[]): Promise<number> {
  try {
    if (args.length === 0 || args[0] === "--help" || args[0] === "-h") {
      console.log(HELP);
      return 0;
    }
    if (args[0] === "--version") {
      console.log(`deltaq ${VERSION}`);
      return 0;
    }
    if (args[0] === "info") {
      if (args.length !== 2) throw new DeltaqError("usage: deno run -A cli.ts info <model.gguf>");
      runInfo(args[1]);
      return 0;
    }
    throw new DeltaqError(`unknown command ${JSON.stringify(args[0])} (see --help)`);
  } catch (e) {
    if (e instanceof DeltaqError) {
      console.error(`deltaq: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
