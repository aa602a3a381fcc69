/**
 * Installs and builds what the full suite will use besides what the Zig kernel tests compile:
 * first the downloads (llama.cpp for this machine, and its arm64 build and the arm64 Deno when qemu
 * can run them), which on a fresh machine proceed while Zig compiles its build runner (~3 minutes
 * of one core before any kernel compiles); then the kernel libraries: the host's, the Debug
 * one the fuzzer loads, the arm64 Linux one (when qemu can run it) and each target's cross-build
 * (when llvm-objdump can check it). tests/run.ts runs this beside the Zig kernel tests so that both
 * cores work all the time; inside the Deno suite these steps would run one by one, and test files
 * running in parallel would race to do them. A failure is left for the test that needs the step
 * to report (it tries again and fails with the full message).
 *
 *   deno run -A tests/prebuild.ts
 */
import { ensureLibrary, ensurePlatformLibrary, type Platform } from "../src/native/build.ts";
import { TARGETS } from "../tools/compile.ts";
import { installLlama, locateLlama } from "../src/oracle/install.ts";
import { arm64Deno, arm64Unavailable } from "./platform/arm64.ts";
import { crossLibrary } from "./platform/cross.ts";
import { findObjdump } from "./platform/tools.ts";
import { safeLibrary } from "./robustness/fuzz.ts";

export function prebuild(): void {
  const arm64 = arm64Unavailable() === undefined;
  const steps: [string, () => unknown][] = [["llama.cpp", locateLlama]];
  if (arm64) steps.push(["llama.cpp arm64", () => installLlama("aarch64")], ["arm64 Deno", arm64Deno]);
  steps.push(["host", ensureLibrary], ["Debug (fuzz)", safeLibrary]);
  if (arm64) {
    steps.push([
      "aarch64-linux",
      () => ensurePlatformLibrary({ os: "linux", arch: "aarch64" }, { quiet: true }),
    ]);
  }
  if (findObjdump()) {
    for (const [target, platform] of Object.entries(TARGETS) as [string, Platform][]) {
      steps.push([target, () => crossLibrary(target, platform)]);
    }
  }
  for (const [name, step] of steps) {
    try {
      step();
    } catch (e) {
      const first = e instanceof Error ? e.message.split("\n")[0] : String(e);
      console.error(`prebuild ${name}: ${first} (the test that needs it will say more)`);
    }
  }
}

if (import.meta.main) prebuild();
