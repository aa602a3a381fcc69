/**
 * Finds or builds libdeltaq.
 *
 * Order: `DELTAQ_LIB` (a path to use as is) → the library embedded in a `deno compile` binary →
 * this checkout's build for the running Deno's OS and architecture, `zig-out/<os>-<arch>/`
 * (`lib/libdeltaq.so` on Linux, `lib/libdeltaq.dylib` on macOS, `bin/deltaq.dll` on Windows),
 * rebuilt with Zig when missing or stale. A stamp next to it records the target, the CPU levels
 * and a content hash of `kernels/` and `build.zig`, so a checkout shared between an x86-64 and an
 * arm64 Deno (or a kernel change) never loads a library built for something else. The library
 * holds the kernels for every CPU level of its architecture (kernels/levels.zig); ./ffi.ts picks
 * one at load. Zig is `zig` on PATH if it is 0.17.x, else `python3 -m ziglang`.
 *
 * Run directly (`deno task build [--target T] [--test]`) to build now (T: a Deno target such as
 * aarch64-apple-darwin, or os-arch as in zig-out/), or run the Zig tests.
 */
import { fileURLToPath } from "node:url";
import { DeltaqError } from "../errors.ts";
import { isFile } from "../util/fs.ts";
import { fnv1a } from "../util/hash.ts";

export const ZIG_VERSION = "0.17.0";
const root = new URL("../../", import.meta.url);

/** An OS and architecture deltaq builds for, in Deno's names. */
/** Zig's -Doptimize for the library: ReleaseFast (the default), ReleaseSafe or Debug. */
export type LibraryOptimize = "fast" | "safe" | "debug";

export interface Platform {
  os: "linux" | "darwin" | "windows";
  arch: "x86_64" | "aarch64";
}

/** The platform of the running Deno. */
export function hostPlatform(): Platform {
  const { os, arch } = Deno.build;
  if ((os !== "linux" && os !== "darwin" && os !== "windows") || (arch !== "x86_64" && arch !== "aarch64")) {
    throw new DeltaqError(
      `deltaq's kernels build for Linux, macOS and Windows on x86-64 and arm64, not ${os} on ${arch}`,
    );
  }
  return { os, arch };
}

/**
 * Zig's target for a platform. Linux names glibc explicitly (plain `x86_64-linux` means musl,
 * which Deno cannot load) at version 2.28 (2018), so a build runs on older distributions too.
 */
export function zigTarget(p: Platform): string {
  if (p.os === "linux") return `${p.arch}-linux-gnu.2.28`;
  if (p.os === "darwin") return `${p.arch}-macos`;
  return `${p.arch}-windows-gnu`;
}

/** The build's directory for a platform, relative to the checkout. */
export function buildPrefix(p: Platform): string {
  return `zig-out/${p.os}-${p.arch}`;
}

/** Where Zig installs the library under a prefix: its name differs per OS. */
export function libraryFile(p: Platform): string {
  if (p.os === "windows") return "bin/deltaq.dll";
  return p.os === "darwin" ? "lib/libdeltaq.dylib" : "lib/libdeltaq.so";
}

/** The library's path in this checkout for a platform (the running one by default). */
export function libraryPath(p: Platform = hostPlatform(), prefix = buildPrefix(p)): string {
  return fileURLToPath(new URL(`${prefix}/${libraryFile(p)}`, root));
}

/**
 * True when this code runs from inside a `deno compile` binary, whose modules live in a virtual
 * file system rooted at `<tmp>/deno-compile-<binary name>/` (backslashes on Windows).
 */
export function isCompiledBinary(url: string = import.meta.url): boolean {
  return /[/\\]deno-compile-[^/\\]+[/\\]/.test(url);
}

/** The path of a usable library, building it if needed. */
export function ensureLibrary(): string {
  const override = Deno.env.get("DELTAQ_LIB");
  if (override) {
    if (!isFile(override)) throw new DeltaqError(`DELTAQ_LIB points to ${override}, which is not a file`);
    return override;
  }
  const platform = hostPlatform();
  const path = libraryPath(platform);
  // Embedded with `deno compile --include`; Deno extracts it when it is dlopen'ed.
  if (isCompiledBinary()) return path;
  return ensurePlatformLibrary(platform);
}

/**
 * The library for a platform in this checkout, built (cross-compiled) when missing or stale (its
 * stamp names another target, level, mode or source); for `deno task compile` and the tests. By
 * default every level, ReleaseFast, under the platform's prefix; `level`, `optimize` and `prefix`
 * build a variant beside it (one level for a cross-build check, a safety-checked Debug build for the fuzzer).
 */
export function ensurePlatformLibrary(
  platform: Platform,
  opts: { quiet?: boolean; prefix?: string; level?: string; optimize?: LibraryOptimize } = {},
): string {
  const path = libraryPath(platform, opts.prefix);
  if (isFile(path) && readText(`${path}.stamp`) === buildStamp(platform, opts)) return path;
  build({ ...opts, quiet: opts.quiet ?? false, platform });
  return path;
}

/** What a library was built from: target, CPU levels (one, or all of the architecture's), mode, sources. */
export function buildStamp(p: Platform, opts: { optimize?: LibraryOptimize; level?: string } = {}): string {
  return `${zigTarget(p)} ${opts.level ?? "all-levels"} ${opts.optimize ?? "fast"} ${sourceHash()}`;
}

/**
 * Runs `zig build` in the checkout: the library for a platform (default the running one) into its
 * prefix, writing the stamp; or, with `test`, the kernel tests at every level this CPU runs.
 */
export function build(
  opts: {
    test?: boolean;
    quiet?: boolean;
    prefix?: string;
    optimize?: LibraryOptimize;
    platform?: Platform;
    level?: string;
  },
): void {
  const zig = findZig();
  const args = [...zig.slice(1), "build"];
  // The library goes under its platform's prefix unless told otherwise; tests run on the host.
  const platform = opts.platform ?? (opts.test ? undefined : hostPlatform());
  const prefix = opts.prefix ?? (platform ? buildPrefix(platform) : undefined);
  if (prefix) args.push("--prefix", prefix);
  if (platform) args.push(`-Dtarget=${zigTarget(platform)}`);
  if (opts.optimize) args.push(`-Doptimize=${opts.optimize}`);
  if (opts.level) args.push(`-Dlevel=${opts.level}`);
  if (opts.test) args.push("test", "--summary", "all");
  if (!opts.quiet) {
    const what = opts.test ? "running kernel tests" : "building the kernel library";
    console.error(`deltaq: ${what} (${zig[0]} ${args.join(" ")})…`);
  }
  const out = new Deno.Command(zig[0], { args, cwd: fileURLToPath(root), stdout: "piped", stderr: "piped" })
    .outputSync();
  const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new DeltaqError(`zig build${opts.test ? " test" : ""} failed:\n${text.trim()}`);
  }
  if (opts.test) {
    if (!opts.quiet) console.error(text.trim());
    return;
  }
  Deno.writeTextFileSync(`${libraryPath(platform, prefix)}.stamp`, buildStamp(platform!, opts));
}

let zigCommand: string[] | undefined;

/** The command that runs Zig 0.17, or a DeltaqError saying how to install it. */
export function findZig(): string[] {
  if (zigCommand) return zigCommand;
  for (const cmd of [["zig"], ["python3", "-m", "ziglang"]]) {
    try {
      const out = new Deno.Command(cmd[0], {
        args: [...cmd.slice(1), "version"],
        stdout: "piped",
        stderr: "null",
      })
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
  const files: string[] = [fileURLToPath(new URL("build.zig", root))];
  const walk = (dir: string) => {
    for (const e of [...Deno.readDirSync(dir)].sort((a, b) => a.name < b.name ? -1 : 1)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) walk(p);
      else if (e.name.endsWith(".zig")) files.push(p);
    }
  };
  walk(fileURLToPath(new URL("kernels", root)));
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

/** A platform from a Deno target (`aarch64-apple-darwin`) or an os-arch name (`darwin-aarch64`). */
export function parsePlatform(name: string): Platform {
  const [a, b] = name.split("-");
  const arch = name.startsWith("x86_64") ? "x86_64" : name.startsWith("aarch64") ? "aarch64" : b;
  const os = /linux/.test(name)
    ? "linux"
    : /darwin|apple|macos/.test(name)
    ? "darwin"
    : /windows/.test(name)
    ? "windows"
    : a;
  if ((os !== "linux" && os !== "darwin" && os !== "windows") || (arch !== "x86_64" && arch !== "aarch64")) {
    throw new DeltaqError(
      `unknown target ${name} (e.g. x86_64-unknown-linux-gnu, aarch64-apple-darwin, x86_64-pc-windows-msvc)`,
    );
  }
  return { os, arch };
}

if (import.meta.main) {
  const args = Deno.args;
  const targetAt = args.indexOf("--target");
  try {
    const platform = targetAt >= 0 ? parsePlatform(args[targetAt + 1] ?? "") : hostPlatform();
    build({ test: args.includes("--test"), platform: args.includes("--test") ? undefined : platform });
  } catch (e) {
    console.error(e instanceof DeltaqError ? e.message : e);
    Deno.exit(1);
  }
}
