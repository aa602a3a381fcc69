/**
 * Every platform Deno ships for gets a kernel library that builds, and the macOS and Windows ones
 * make no raw Linux system calls (everything OS-specific goes through kernels/os.zig, which uses
 * libSystem there and kernel32/ntdll on Windows). The libraries are cross-built with Zig into
 * zig-out/<os>-<arch>/, where `deno task compile --target …` embeds them from.
 *
 * The system-call check disassembles each library with llvm-objdump and counts system-call
 * instructions (x86-64 `syscall`/`sysenter`/`int 0x80`, arm64 `svc`); on the Linux libraries the
 * same count must be non-zero, which shows that the check can see them.
 */
import assert from "node:assert/strict";
import type { Platform } from "../../src/native/build.ts";
import { TARGETS } from "../../tools/compile.ts";
import { crossLibrary } from "./cross.ts";
import { findObjdump } from "./tools.ts";

/** System-call instructions in a library's code. */
function countSyscalls(objdump: string, library: string): number {
  const out = new Deno.Command(objdump, {
    args: ["-d", "--no-show-raw-insn", library],
    stdout: "piped",
    stderr: "piped",
  })
    .outputSync();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const text = new TextDecoder().decode(out.stdout);
  return [...text.matchAll(/^\s*[0-9a-f]+:\s+(syscall|sysenter|int\s+\$0x80|svc\s)/gm)].length;
}

const objdump = findObjdump();

for (const [target, platform] of Object.entries(TARGETS) as [string, Platform][]) {
  Deno.test({
    name: `cross-build for ${target}: the library builds${
      platform.os === "linux" ? "" : " (one CPU level) and makes no raw Linux system calls"
    }`,
    ignore: objdump === undefined,
    fn() {
      const library = crossLibrary(target, platform);
      const n = countSyscalls(objdump!, library);
      if (platform.os === "linux") {
        assert.ok(n > 0, `${library}: the check found no system calls in a Linux library`);
      } else assert.equal(n, 0, `${library} contains ${n} system-call instructions`);
    },
  });
}
if (objdump === undefined) console.warn("cross_test: SKIPPED: llvm-objdump not found (apt-get install llvm)");
