/**
 * Builds every kernel library the full suite will use besides what the Zig kernel tests compile:
 * the host's, the ReleaseSafe one the fuzzer loads, the arm64 Linux one (when qemu can run it) and
 * each target's cross-build (when llvm-objdump can check it). tests/run.ts runs this beside the
 * Zig kernel tests so that both cores compile all the time; inside the Deno suite these builds
 * would run one by one on one core. A failure is left for the test that needs the library to
 * report (it builds again and fails with Zig's message).
 *
 *   deno run -A tests/prebuild.ts
 */
import { ensureLibrary, ensurePlatformLibrary, type Platform } from "../src/native/build.ts";
import { TARGETS } from "../tools/compile.ts";
import { arm64Unavailable } from "./platform/arm64.ts";
import { crossLibrary } from "./platform/cross.ts";
import { findObjdump } from "./platform/tools.ts";
import { safeLibrary } from "./robustness/fuzz.ts";

export function prebuild(): void {
  const steps: [string, () => unknown][] = [["host", ensureLibrary], ["ReleaseSafe (fuzz)", safeLibrary]];
  if (!arm64Unavailable()) {
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
      console.error(`prebuild ${name}: ${first} (the test that needs this library will say more)`);
    }
  }
}

if (import.meta.main) prebuild();
