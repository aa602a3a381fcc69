/**
 * Finds the pinned llama.cpp build that deltaq's parity tests, tokenizer tests and benchmarks compare
 * against, installing it from npm when it is missing.
 *
 * The build is the prebuilt CPU package `@node-llama-cpp/linux-x64@3.21.1` (llama.cpp release
 * v0.4.0): `bins/linux-x64/` holds libllama.v0.4.0.so, libggml*.so and one libggml-cpu-<arch>.so per
 * x86 feature level. On arm64 Linux (the suite runs a parity subset there under qemu) it is the same
 * release's `@node-llama-cpp/linux-arm64`, `bins/linux-arm64/`. Order: `DELTAQ_LLAMA_DIR` (a bins
 * directory) → `.cache/llama/` (`.cache/llama-arm64/`) in this checkout (git-ignored) → `npm install`
 * there. Whatever is used must come from package version 3.21.1: the FFI struct layouts in ./llama.ts
 * are written for exactly that build.
 */
import { fileURLToPath } from "node:url";
import { DeltaqError } from "../errors.ts";
import { isDirectory, isFile } from "../util/fs.ts";

export type LlamaArch = "x86_64" | "aarch64";

/** The npm package's name part for an architecture (`linux-x64`, `linux-arm64`). */
function npmPlatform(arch: LlamaArch): string {
  return arch === "x86_64" ? "linux-x64" : "linux-arm64";
}

/** The reference package for an architecture. */
export function llamaPackage(arch: LlamaArch): string {
  return `@node-llama-cpp/${npmPlatform(arch)}`;
}

/** The package this machine's reference comes from. */
export const LLAMA_PACKAGE = llamaPackage(Deno.build.arch === "aarch64" ? "aarch64" : "x86_64");
export const LLAMA_PACKAGE_VERSION = "3.21.1";
/** The library file inside the package's bins directory. */
export const LIBLLAMA = "libllama.v0.4.0.so";
/** The library that exports `ggml_backend_load_all_from_path` (checked with `nm -D`). */
export const LIBGGML = "libggml.v0.4.0.so";

const repoRoot = new URL("../../", import.meta.url);
const cacheRoot = new URL(".cache/", repoRoot);
/** Where the package is installed for an architecture (x86-64 keeps the original `.cache/llama`). */
function installPrefix(arch: LlamaArch): URL {
  return new URL(arch === "x86_64" ? "llama/" : "llama-arm64/", cacheRoot);
}

function fromUrl(u: URL): string {
  return fileURLToPath(u).replace(/[/\\]$/, "");
}

/** `<prefix>/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64` (or linux-arm64) */
function binsDirUnder(prefix: string, arch: LlamaArch): string {
  return `${prefix}/node_modules/${llamaPackage(arch)}/bins/${npmPlatform(arch)}`;
}

/**
 * The directory holding libllama and the ggml backends, ready to dlopen. Installs the package into
 * `<repo>/.cache/llama` on first use (one line on stderr says so).
 */
export function locateLlama(): string {
  if (Deno.build.os !== "linux" || (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64")) {
    throw new DeltaqError(
      `the llama.cpp reference is only available on Linux, x86_64 or arm64 (this is ${Deno.build.os} ${Deno.build.arch})`,
    );
  }
  const override = Deno.env.get("DELTAQ_LLAMA_DIR");
  if (override) {
    const dir = override.replace(/\/$/, "");
    const problem = checkBinsDir(dir);
    if (problem) throw new DeltaqError(`DELTAQ_LLAMA_DIR=${override}: ${problem}`);
    return dir;
  }
  return installLlama(Deno.build.arch);
}

/**
 * The bins directory of the reference for an architecture in this checkout, installing it with npm
 * when missing (also for the other architecture: the x86-64 suite installs the arm64 build that
 * its qemu runs load).
 */
export function installLlama(arch: LlamaArch): string {
  const dir = binsDirUnder(fromUrl(installPrefix(arch)), arch);
  if (checkBinsDir(dir) === undefined) return dir;
  install(arch);
  const problem = checkBinsDir(dir);
  if (problem) {
    throw new DeltaqError(`after installing ${llamaPackage(arch)}@${LLAMA_PACKAGE_VERSION}: ${problem}`);
  }
  return dir;
}

/** Undefined when `dir` is a usable bins directory of the pinned version, else what is wrong. */
export function checkBinsDir(dir: string): string | undefined {
  if (!isFile(`${dir}/${LIBLLAMA}`)) return `${dir}/${LIBLLAMA} does not exist`;
  if (!isFile(`${dir}/${LIBGGML}`)) return `${dir}/${LIBGGML} does not exist`;
  // bins/linux-x64 (linux-arm64) sits two levels below the package root.
  const manifest = `${dir}/../../package.json`;
  let version: unknown;
  try {
    version = JSON.parse(Deno.readTextFileSync(manifest)).version;
  } catch (e) {
    return `cannot read the package version from ${manifest}: ${(e as Error).message}`;
  }
  if (version !== LLAMA_PACKAGE_VERSION) {
    return `${manifest} is version ${version}, deltaq's reference needs ${LLAMA_PACKAGE_VERSION}`;
  }
  return undefined;
}

/**
 * `npm install` into a private prefix, then renames it into place, so that an interrupted or
 * concurrent install never leaves a half-populated `.cache/llama` behind.
 */
function install(arch: LlamaArch): void {
  const target = fromUrl(installPrefix(arch));
  const staging = `${target}.tmp-${Deno.pid}`;
  const spec = `${llamaPackage(arch)}@${LLAMA_PACKAGE_VERSION}`;
  console.error(`deltaq: installing the llama.cpp reference (${spec}) into ${target}…`);
  Deno.mkdirSync(staging, { recursive: true });
  let out: Deno.CommandOutput;
  try {
    out = new Deno.Command("npm", {
      args: [
        "install",
        "--prefix",
        staging,
        "--no-save",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        // the package declares its CPU: installing the other architecture's needs saying so
        `--cpu=${arch === "x86_64" ? "x64" : "arm64"}`,
        "--os=linux",
        spec,
      ],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
  } catch (e) {
    Deno.removeSync(staging, { recursive: true });
    throw new DeltaqError(
      `cannot install the llama.cpp reference: npm is not available (${(e as Error).message}). ` +
        `Install Node.js/npm, or set DELTAQ_LLAMA_DIR to the bins/${npmPlatform(arch)} directory of ${spec}`,
    );
  }
  if (!out.success) {
    Deno.removeSync(staging, { recursive: true });
    const text = new TextDecoder().decode(out.stderr).trim();
    throw new DeltaqError(`npm install ${spec} failed:\n${text}`);
  }
  // A stale or wrong-version install is replaced; if another process finished first, keep theirs.
  if (isDirectory(target) && checkBinsDir(binsDirUnder(target, arch)) !== undefined) {
    Deno.removeSync(target, { recursive: true });
  }
  try {
    Deno.renameSync(staging, target);
  } catch (e) {
    Deno.removeSync(staging, { recursive: true });
    if (checkBinsDir(binsDirUnder(target, arch)) !== undefined) throw e;
  }
}

if (import.meta.main) {
  try {
    console.log(locateLlama());
  } catch (e) {
    console.error(e instanceof DeltaqError ? e.message : e);
    Deno.exit(1);
  }
}
