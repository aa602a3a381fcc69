/** The kernel libraries the cross-build checks use (tests/platform/cross_test.ts). */
import { fileURLToPath } from "node:url";
import { ensurePlatformLibrary, type Platform } from "../../src/native/build.ts";

/**
 * The library a target's cross-build check uses. Linux targets: the whole library, every level
 * (the suite runs them). macOS and Windows: one CPU level each, into .cache/cross/: what differs by
 * OS (kernels/os.zig, the C ABI's calling conventions) is the same at every level, and every
 * level's own code is compiled for the same architecture by the Linux builds and kernel tests (and
 * the Windows kernel tests under Wine compile its best level), so building all levels again for
 * each OS would only add minutes of compiling to every CI run.
 */
export function crossLibrary(target: string, platform: Platform): string {
  if (platform.os === "linux") return ensurePlatformLibrary(platform, { quiet: true });
  const level = platform.arch === "aarch64" ? "i8mm" : platform.os === "windows" ? "baseline" : "x86_64_v3";
  const prefix = fileURLToPath(new URL(`../../.cache/cross/${target}-${level}`, import.meta.url));
  return ensurePlatformLibrary(platform, { quiet: true, level, prefix });
}
