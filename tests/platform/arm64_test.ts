/**
 * arm64 Linux, emulated by qemu-user with `-cpu max` (NEON, dotprod, i8mm): the Linux arm64 Deno
 * loads the aarch64 kernel library cross-built here.
 *
 * - Parity: a subset of tests/parity/parity_test.ts runs there against llama.cpp's arm64 build
 *   (npm `@node-llama-cpp/linux-arm64`, the same release as the x86 reference), at the best level (i8mm).
 * - Same bits as x86: at every arm64 level (NEON, +sdot, +usdot and the usmmla GEMM tiles) the
 *   logits equal the x86-64 build's at the x86_64_v3 level, where the arithmetic is the same:
 *   integer dot products, then the same float operations in the same order, fused multiply-adds
 *   on both (the x86 baseline level has no FMA, so it rounds differently).
 *
 * Skipped, with the reason, where qemu or the arm64 libraries are not installed (.ci/run installs
 * them). Slow under emulation (minutes), so the subset is small.
 */
import assert from "node:assert/strict";
import { ensurePlatformLibrary } from "../../src/native/build.ts";
import { installLlama } from "../../src/oracle/install.ts";
import { testModel, type TestModelSpec } from "../models.ts";
import { arm64Unavailable, runArm64Deno } from "./arm64.ts";

const reason = arm64Unavailable();
if (reason) console.warn(`arm64_test: SKIPPED: ${reason}`);

const ARM64 = { os: "linux", arch: "aarch64" } as const;
const ARM64_LEVELS = ["baseline", "dotprod", "i8mm"];

/** The parity tests that run under emulation (see tests/run.ts for the per-level x86 subset). */
// The plain files only: "tiny F32, KV cache q8_0/q8_0, …" would match a looser filter and take
// minutes more under emulation.
const PARITY_FILTER = "/parity with llama.cpp: tiny (F32|Q4_K_M), \\d+ positions/";
const PARITY_SPECS: TestModelSpec[] = [{ preset: "tiny" }, { preset: "tiny", quant: "Q4_K_M" }];

/** Models whose logits are compared bit for bit: float, Q8_0 and K-quant matmuls, one-token and GEMM paths. */
const PROBE_SPECS: TestModelSpec[] = [
  { preset: "tiny" },
  { preset: "tiny", quant: "Q8_0" },
  { preset: "tiny", quant: "Q4_K_M" },
  { preset: "tiny-b", quant: "Q6_K" },
];

function decode(out: Deno.CommandOutput): string {
  return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
}

Deno.test({
  name: "arm64 Linux under qemu: parity with llama.cpp's arm64 build (tiny F32, Q4_K_M)",
  ignore: reason !== undefined,
  async fn() {
    ensurePlatformLibrary(ARM64, { quiet: true });
    const llama = installLlama("aarch64");
    for (const spec of PARITY_SPECS) await testModel(spec); // made here, natively, not under emulation
    // --no-check: the x86 run of the suite type-checks these files; under emulation that alone
    // takes minutes.
    const out = await runArm64Deno([
      "test",
      "-A",
      "--no-check",
      "tests/parity/parity_test.ts",
      "--filter",
      PARITY_FILTER,
    ], {
      DELTAQ_LLAMA_DIR: llama,
    });
    const text = decode(out);
    assert.ok(out.success, text);
    assert.match(text, new RegExp(`ok \\| ${PARITY_SPECS.length} passed \\| 0 failed`), text);
  },
});

Deno.test({
  name: "arm64 Linux under qemu: logits at every arm64 level are the x86-64 build's (x86_64_v3) bit for bit",
  ignore: reason !== undefined,
  async fn() {
    ensurePlatformLibrary(ARM64, { quiet: true });
    const models = await Promise.all(PROBE_SPECS.map((s) => testModel(s)));
    const dir = Deno.makeTempDirSync({ prefix: "deltaq-arm64-" });
    try {
      const probeArgs = (tag: string) => models.flatMap((m, i) => [m, `${dir}/${tag}-${i}.f32`]);
      const x86 = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "tests/platform/logits_probe.ts", ...probeArgs("x86")],
        cwd: new URL("../../", import.meta.url),
        env: { DELTAQ_CPU: "x86_64_v3" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(x86.success, decode(x86));
      for (const level of ARM64_LEVELS) {
        const out = await runArm64Deno(["run", "-A", "tests/platform/logits_probe.ts", ...probeArgs(level)], {
          DELTAQ_CPU: level,
        });
        assert.ok(out.success, `${level}: ${decode(out)}`);
        for (let i = 0; i < models.length; i++) {
          const want = new Float32Array(Deno.readFileSync(`${dir}/x86-${i}.f32`).buffer);
          const got = new Float32Array(Deno.readFileSync(`${dir}/${level}-${i}.f32`).buffer);
          assert.equal(got.length, want.length);
          let differ = 0, first = -1;
          for (let j = 0; j < want.length; j++) {
            if (Object.is(want[j], got[j])) continue;
            differ++;
            if (first < 0) first = j;
          }
          assert.equal(
            differ,
            0,
            `${
              models[i]
            } at arm64 level ${level}: ${differ} of ${want.length} logits differ from x86_64_v3 (first at ${first}: ${
              got[first]
            } vs ${want[first]})`,
          );
        }
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
