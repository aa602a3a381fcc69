/**
 * arm64 Linux under qemu-user, for the platform tests: the Linux arm64 Deno (npm
 * `@deno/linux-arm64-glibc`, the same version as the running Deno), installed once into
 * `.cache/deno-arm64/`, run by `qemu-aarch64 -cpu max` (NEON with dotprod and i8mm) against
 * Debian's arm64 glibc (`libc6-arm64-cross`, `libgcc-s1-arm64-cross`, `libstdc++6-arm64-cross`).
 */
import { fileURLToPath } from "node:url";
import { isFile } from "../../src/util/fs.ts";
import { onPath } from "./tools.ts";

const SYSROOT = "/usr/aarch64-linux-gnu";
const root = fileURLToPath(new URL("../../", import.meta.url));
const prefix = `${root}.cache/deno-arm64`;
const PACKAGE = "@deno/linux-arm64-glibc";

/** Why arm64 cannot be emulated here, or undefined when it can. */
export function arm64Unavailable(): string | undefined {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return "emulating arm64 is set up for x86-64 Linux hosts";
  }
  if (!onPath("qemu-aarch64")) return "qemu-aarch64 is not installed (apt-get install qemu-user)";
  for (
    const [lib, pkg] of [["libc.so.6", "libc6-arm64-cross"], ["libgcc_s.so.1", "libgcc-s1-arm64-cross"], [
      "libstdc++.so.6",
      "libstdc++6-arm64-cross",
    ]]
  ) {
    if (!isFile(`${SYSROOT}/lib/${lib}`)) return `${SYSROOT}/lib/${lib} is missing (apt-get install ${pkg})`;
  }
  return undefined;
}

/** The arm64 Deno binary, installed with npm on first use (staged, then renamed into place). */
export function arm64Deno(): string {
  const bin = (dir: string) => `${dir}/node_modules/${PACKAGE}/deno`;
  const version = Deno.version.deno;
  const stamp = `${prefix}/version`;
  if (isFile(bin(prefix)) && readText(stamp) === version) return bin(prefix);
  const staging = `${prefix}.tmp-${Deno.pid}`;
  Deno.mkdirSync(staging, { recursive: true });
  // --force: npm refuses a package for another CPU otherwise (its --cpu/--libc flags do not cover
  // this package's libc field).
  const out = new Deno.Command("npm", {
    args: [
      "install",
      "--prefix",
      staging,
      "--no-save",
      "--no-audit",
      "--no-fund",
      "--force",
      `${PACKAGE}@${version}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!out.success || !isFile(bin(staging))) {
    Deno.removeSync(staging, { recursive: true });
    throw new Error(`npm install ${PACKAGE}@${version} failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
  Deno.writeTextFileSync(`${staging}/version`, version);
  try {
    Deno.removeSync(prefix, { recursive: true });
  } catch { /* not there yet */ }
  Deno.renameSync(staging, prefix);
  return bin(prefix);
}

/** Runs the arm64 Deno under qemu-user in the checkout, with its own module cache. */
export async function runArm64Deno(
  args: string[],
  env: Record<string, string> = {},
): Promise<Deno.CommandOutput> {
  return await new Deno.Command("qemu-aarch64", {
    args: ["-L", SYSROOT, arm64Deno(), ...args],
    cwd: root,
    env: { QEMU_CPU: "max", DENO_DIR: `${prefix}/deno-dir`, NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
}

function readText(p: string): string | undefined {
  try {
    return Deno.readTextFileSync(p);
  } catch {
    return undefined;
  }
}
