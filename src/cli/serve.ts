/**
 * `deltaq serve`: loads a model and serves the OpenAI API until Ctrl-C / SIGTERM.
 */
import { DeltaqError } from "../errors.ts";
import { serve } from "../server/server.ts";
import { flagHelp, parseFlags } from "./args.ts";
import { loadWithStatus, modelPath } from "./run.ts";

const SERVE_FLAGS = [
  { long: "model", short: "m", kind: "string" as const, help: "FILE  the GGUF model to serve" },
  { long: "hf", kind: "string" as const, help: "REPO[:QUANT]  download a GGUF from Hugging Face first" },
  { long: "host", kind: "string" as const, help: "ADDR  address to listen on (default 127.0.0.1: this machine only)" },
  { long: "port", kind: "int" as const, min: 0, max: 65535, help: "N  port (default 8080)" },
  { long: "api-key", kind: "string" as const, help: "KEY  require Authorization: Bearer KEY (all routes but /health)" },
  { long: "parallel", kind: "int" as const, min: 1, max: 64, help: "N  requests decoded together (default 1); more wait in a queue" },
  { long: "ctx", short: "c", kind: "int" as const, min: 16, max: 1 << 24, help: "N  context length per sequence in tokens (default 4096)" },
  { long: "cache-mib", kind: "int" as const, min: 0, max: 1 << 24, help: "N  prompt-cache budget in MiB (default: sized to the machine; 0 = off)" },
  { long: "cors", kind: "string" as const, help: "ORIGIN  allow browser requests from ORIGIN (* for any)" },
  { long: "alias", short: "a", kind: "string" as const, help: "NAME  the model id clients see (default: the file name)" },
  { long: "threads", short: "t", kind: "int" as const, min: 1, max: 64, help: "N  worker threads (default: physical performance cores)" },
  { long: "help", short: "h", kind: "flag" as const, help: "show this help" },
];

export const SERVE_HELP = `usage: deno run -A cli.ts serve -m MODEL.gguf [options]

An OpenAI-compatible server: POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
GET /health, GET /metrics. Point any OpenAI client at http://HOST:PORT/v1.

options:
${flagHelp(SERVE_FLAGS)}
`;

export async function runServe(args: string[]): Promise<number> {
  const { flags, positionals } = parseFlags(args, SERVE_FLAGS);
  if (flags.help) {
    console.log(SERVE_HELP);
    return 0;
  }
  if (positionals.length > 0) throw new DeltaqError(`unexpected argument ${JSON.stringify(positionals[0])} (see serve --help)`);
  const stop = new AbortController();
  const path = await modelPath(flags, stop.signal);
  const model = loadWithStatus(path, flags);
  try {
    const server = serve(model, {
      host: flags.host as string | undefined,
      port: (flags.port as number | undefined) ?? 8080,
      apiKey: flags.apiKey as string | undefined,
      parallel: flags.parallel as number | undefined,
      cacheMiB: flags.cacheMib as number | undefined,
      cors: flags.cors as string | undefined,
      modelName: flags.alias as string | undefined,
      onListen: ({ hostname, port }) => {
        const shown = hostname.includes(":") ? `[${hostname}]` : hostname;
        console.error(`deltaq: serving ${path} at http://${shown}:${port}/v1 (Ctrl-C to stop)`);
      },
    });
    const onSignal = () => {
      console.error("deltaq: stopping");
      server.close();
    };
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    try {
      await server.finished;
    } finally {
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    }
    return 0;
  } finally {
    model.dispose();
  }
}
