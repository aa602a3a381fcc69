/**
 * `deno task compile [--target T] [--output PATH]`: one executable with the CLI and the kernel
 * library for its platform embedded, runnable where neither Deno nor Zig is installed. T is one
 * of Deno's five compile targets (default: the running Deno's platform); the library is
 * cross-built with Zig for it and carries the kernels for every CPU level of its architecture
 * (picked at load), so the binary is fast on a new CPU and still runs on an old one.
 *
 * `deno compile` needs Deno's runtime (`denort`) for the target; it downloads it from
 * dl.deno.land unless `DENORT_BIN` points to a local copy (unzip denort-<target>.zip of the same
 * Deno version). Without either, this fails with a message saying so, and nothing is left
 * half-written.
 */
import { fileURLToPath } from "node:url";
import { DeltaqError } from "../src/errors.ts";
import {
  buildPrefix,
  ensurePlatformLibrary,
  hostPlatform,
  libraryFile,
  type Platform,
} from "../src/native/build.ts";
import { isFile } from "../src/util/fs.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

/** Deno's compile targets and the platforms they run on. */
export const TARGETS: Record<string, Platform> = {
  "x86_64-unknown-linux-gnu": { os: "linux", arch: "x86_64" },
  "aarch64-unknown-linux-gnu": { os: "linux", arch: "aarch64" },
  "x86_64-apple-darwin": { os: "darwin", arch: "x86_64" },
  "aarch64-apple-darwin": { os: "darwin", arch: "aarch64" },
  "x86_64-pc-windows-msvc": { os: "windows", arch: "x86_64" },
};

/** The Deno target of a platform. */
export function denoTarget(p: Platform): string {
  return Object.entries(TARGETS).find(([, t]) => t.os === p.os && t.arch === p.arch)![0];
}

const USAGE = `usage: deno task compile [--target T] [--output PATH]
  --target T     one of ${Object.keys(TARGETS).join(", ")}
                 (default: this machine's, ${denoTarget(hostPlatform())})
  --output PATH  the executable to write (default dist/deltaq, or dist/deltaq-<target>
                 for another platform; Deno adds .exe for Windows)
  DENORT_BIN=/path/to/denort builds without downloading Deno's runtime`;

interface Options {
  target: string;
  output: string;
}

function parseArgs(args: string[]): Options | undefined {
  let target = denoTarget(hostPlatform());
  let output: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--help" || a === "-h") return undefined;
    if (a === "--target" || a === "--output") {
      const v = args[++i];
      if (!v) throw new DeltaqError(`${a} needs a value\n${USAGE}`);
      if (a === "--target") target = v;
      else output = v;
    } else {
      throw new DeltaqError(`unknown argument ${a}\n${USAGE}`);
    }
  }
  if (!TARGETS[target]) {
    throw new DeltaqError(`unknown target ${target}; one of ${Object.keys(TARGETS).join(", ")}`);
  }
  const host = target === denoTarget(hostPlatform());
  return { target, output: output ?? (host ? "dist/deltaq" : `dist/deltaq-${target}`) };
}

async function main(args: string[]): Promise<number> {
  const opts = parseArgs(args);
  if (!opts) {
    console.log(USAGE);
    return 0;
  }
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined && !isFile(denort)) {
    throw new DeltaqError(
      `DENORT_BIN=${denort}: no such file (it must be the denort executable of Deno ${Deno.version.deno})`,
    );
  }
  const platform = TARGETS[opts.target];
  const library = `${buildPrefix(platform)}/${libraryFile(platform)}`;
  console.error(`deltaq: kernel library for ${opts.target}: ${library}`);
  ensurePlatformLibrary(platform);

  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["compile", "-A", "--target", opts.target, "--include", library, "--output", opts.output, "cli.ts"],
    cwd: root,
    stdout: "inherit",
    stderr: "piped",
  });
  const out = await cmd.output();
  const text = new TextDecoder().decode(out.stderr);
  if (out.success) {
    console.error(`deltaq: wrote ${opts.output}`);
    return 0;
  }
  if (/dl\.deno\.land|dns error|error sending request/.test(text)) {
    throw new DeltaqError(
      `deno compile could not download Deno's runtime (denort ${Deno.version.deno}) from dl.deno.land. ` +
        `On a machine without internet, download denort-${opts.target}.zip for Deno ${Deno.version.deno} elsewhere, ` +
        `unzip it here and run: DENORT_BIN=/path/to/denort deno task compile --target ${opts.target}`,
    );
  }
  // deno-lint-ignore no-control-regex
  throw new DeltaqError(`deno compile failed:\n${text.replace(/\x1b\[[0-9;]*m/g, "").trim()}`);
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (!(e instanceof DeltaqError)) throw e;
    console.error(`deltaq: ${e.message}`);
    Deno.exit(1);
  }
}
