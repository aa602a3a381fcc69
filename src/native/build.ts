/**
 * Finds or builds libdeltaq.
 *
 * Order: `DELTAQ_LIB` (a path to use as is) → the library embedded in a `deno compile` binary →
 * `zig-out/lib/libdeltaq.so` in this checkout, rebuilt with Zig when missing or when the kernel
 * sources changed since it was built (a content hash of `kernels/` and `build.zig` is stored next
 * to it). Zig is `zig` on PATH if it is 0.17.x, else `python3 -m ziglang`.
 *
 * Run directly (`deno task build [--cpu x86_64_v3] [--test]`) to build now, or run the Zig tests.
 */
import { DeltaqError } from "../errors.ts";
import { isFile } from "../util/fs.ts";
import { fnv1a } from "../util/hash.ts";

export const ZIG_VERSION = "0.17.0";
const root = new URL("../../", import.meta.url);
const libUrl = new URL("zig-out/lib/libdeltaq.so", root);
/** The portable (x86-64-v3) build that `deno task compile` embeds in the single binary. */
export const PORTABLE_PREFIX = "zig-out/portable";
const embeddedUrl = new URL(`${PORTABLE_PREFIX}/lib/libdeltaq.so`, root);

function fromUrl(u: URL): string {
  return decodeURIComponent(u.pathname);
}

/**
 * True when this code runs from inside a `deno compile` binary, whose modules live in a virtual
 * file system rooted at `<tmp>/deno-compile-<binary name>/`.
 */
export function isCompiledBinary(url: string = import.meta.url): boolean {
  return /\/deno-compile-[^/]+\//.test(url);
}

/** The CPU the library is built for: `DELTAQ_CPU` or `native`. */
export function targetCpu(): string {
  return Deno.env.get("DELTAQ_CPU") ?? "native";
}

/** The path of a usable library, building it if needed. */
export function ensureLibrary(): string {
  const override = Deno.env.get("DELTAQ_LIB");
  if (override) {
    if (!isFile(override)) throw new DeltaqError(`DELTAQ_LIB points to ${override}, which is not a file`);
    return override;
  }
  // Embedded with `deno compile --include`; Deno extracts it when it is dlopen'ed.
  if (isCompiledBinary()) return fromUrl(embeddedUrl);
  const path = fromUrl(libUrl);
  const stamp = `${path}.stamp`;
  const want = `${targetCpu()} ${sourceHash()}`;
  if (isFile(path) && readText(stamp) === want) return path;
  build({ cpu: targetCpu(), quiet: false });
  Deno.writeTextFileSync(stamp, want);
  return path;
}

/** Runs `zig build` (or `zig build test`) in the checkout. */
export function build(
  opts: { cpu: string; test?: boolean; quiet?: boolean; prefix?: string; optimize?: "fast" | "safe"; target?: string },
): void {
  const zig = findZig();
  const args = [...zig.slice(1), "build", `-Dcpu=${opts.cpu}`];
  if (opts.prefix) args.push("--prefix", opts.prefix);
  if (opts.target) args.push(`-Dtarget=${opts.target}`);
  if (opts.optimize) args.push(`-Doptimize=${opts.optimize}`);
  if (opts.test) args.push("test", "--summary", "all");
  if (!opts.quiet) {
    const what = opts.test ? "running kernel tests" : "building the kernel library";
    console.error(`deltaq: ${what} (${zig[0]} ${args.join(" ")})…`);
  }
  const out = new Deno.Command(zig[0], { args, cwd: fromUrl(root), stdout: "piped", stderr: "piped" }).outputSync();
  const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new DeltaqError(`zig build${opts.test ? " test" : ""} failed:\n${text.trim()}`);
  }
  if (opts.test && !opts.quiet) console.error(text.trim());
}

let zigCommand: string[] | undefined;

/** The command that runs Zig 0.17, or a DeltaqError saying how to install it. */
export function findZig(): string[] {
  if (zigCommand) return zigCommand;
  for (const cmd of [["zig"], ["python3", "-m", "ziglang"]]) {
    try {
      const out = new Deno.Command(cmd[0], { args: [...cmd.slice(1), "version"], stdout: "piped", stderr: "null" })
        .outputSync();
      const version = new TextDecoder().decode(out.stdout).trim();
      if (out.success && version.startsWith(ZIG_VERSION.slice(0, 5))) return (zigCommand = cmd);
    } catch {
      // not installed this way; try the next
    }
  }
  throw new DeltaqError(
    `Zig ${ZIG_VERSION} is needed to build deltaq's kernels and was not found ` +
      `(tried \`zig\` and \`python3 -m ziglang\`). Install it with: python3 -m pip install ziglang==${ZIG_VERSION}`,
  );
}

/** FNV-1a over the kernel sources and build script, in a stable order. */
export function sourceHash(): string {
  const files: string[] = [fromUrl(new URL("build.zig", root))];
  const walk = (dir: string) => {
    for (const e of [...Deno.readDirSync(dir)].sort((a, b) => a.name < b.name ? -1 : 1)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) walk(p);
      else if (e.name.endsWith(".zig")) files.push(p);
    }
  };
  walk(fromUrl(new URL("kernels", root)));
  let h = 0xcbf29ce484222325n;
  const mask = (1n << 64n) - 1n;
  for (const f of files) {
    // Hash 32-bit words per step: BigInt per byte would be slow on ~200 KB of source.
    const bytes = Deno.readFileSync(f);
    h = ((h ^ BigInt(fnv1a(bytes))) * 0x100000001b3n) & mask;
    h = ((h ^ BigInt(bytes.length)) * 0x100000001b3n) & mask;
  }
  return h.toString(16);
}

function readText(p: string): string | undefined {
  try {
    return Deno.readTextFileSync(p);
  } catch {
    return undefined;
  }
}

if (import.meta.main) {
  const args = Deno.args;
  const cpuAt = args.indexOf("--cpu");
  const cpu = cpuAt >= 0 ? args[cpuAt + 1] : targetCpu();
  try {
    build({ cpu, test: args.includes("--test") });
    if (!args.includes("--test")) Deno.writeTextFileSync(`${fromUrl(libUrl)}.stamp`, `${cpu} ${sourceHash()}`);
  } catch (e) {
    console.error(e instanceof DeltaqError ? e.message : e);
    Deno.exit(1);
  }
}
