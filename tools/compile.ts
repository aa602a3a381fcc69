/**
 * `deno task compile [--output PATH]`: one executable with the CLI and a portable (x86-64-v3)
 * kernel library embedded, runnable where neither Deno nor Zig is installed.
 *
 * `deno compile` needs Deno's runtime (`denort`) for the target; it downloads it from
 * dl.deno.land unless `DENORT_BIN` points to a local copy (unzip
 * denort-x86_64-unknown-linux-gnu.zip of the same Deno version). Without either, this fails with
 * a message saying so, and nothing is left half-written.
 */
import { DeltaqError } from "../src/errors.ts";
import { build, PORTABLE_PREFIX } from "../src/native/build.ts";
import { isFile } from "../src/util/fs.ts";

const root = decodeURIComponent(new URL("..", import.meta.url).pathname);

function parseOutput(args: string[]): string {
  const at = args.indexOf("--output");
  if (at >= 0) {
    if (!args[at + 1]) throw new DeltaqError("--output needs a path");
    return args[at + 1];
  }
  if (args.some((a) => a !== "--output")) {
    if (args.includes("--help") || args.includes("-h")) return "";
    throw new DeltaqError(`unknown argument ${args[0]} (usage: deno task compile [--output PATH])`);
  }
  return "dist/deltaq";
}

async function main(args: string[]): Promise<number> {
  const output = parseOutput(args);
  if (output === "") {
    console.log("usage: deno task compile [--output PATH]   (default dist/deltaq; DENORT_BIN=/path/to/denort to build offline)");
    return 0;
  }
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined) {
    if (!isFile(denort)) {
      throw new DeltaqError(`DENORT_BIN=${denort}: no such file (it must be the denort executable of Deno ${Deno.version.deno})`);
    }
  }
  console.error(`deltaq: building the portable kernel library (x86-64-v3) into ${PORTABLE_PREFIX}/`);
  // glibc 2.28 (2018) as the floor, so the binary runs on older distributions too
  build({ cpu: "x86_64_v3", target: "x86_64-linux-gnu.2.28", prefix: PORTABLE_PREFIX, quiet: true });

  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["compile", "-A", "--include", `${PORTABLE_PREFIX}/lib/libdeltaq.so`, "--output", output, "cli.ts"],
    cwd: root,
    stdout: "inherit",
    stderr: "piped",
  });
  const out = await cmd.output();
  const text = new TextDecoder().decode(out.stderr);
  if (out.success) {
    console.error(`deltaq: wrote ${output}`);
    return 0;
  }
  if (/dl\.deno\.land|dns error|error sending request/.test(text)) {
    throw new DeltaqError(
      `deno compile could not download Deno's runtime (denort ${Deno.version.deno}) from dl.deno.land. ` +
        `On a machine without internet, download denort-x86_64-unknown-linux-gnu.zip for Deno ${Deno.version.deno} elsewhere, ` +
        `unzip it here and run: DENORT_BIN=/path/to/denort deno task compile`,
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
