/**
 * `deno task test`: builds the kernel library, runs the Zig kernel tests (safety-checked) and the
 * Deno test suite, and ends with one line `N passed, M failed` over both.
 *
 * The kernel tests run at every CPU level this machine can execute (kernels/levels.zig), and,
 * where the emulators are installed (.ci/run installs them), for arm64 Linux under qemu-user at
 * every arm64 level and for Windows under Wine. The Deno suite runs at the best level; a parity
 * subset runs again at each other level this CPU can execute (`DELTAQ_CPU`).
 *
 * Extra arguments go to `deno test` (e.g. a path or `--filter parity`) and leave out the
 * emulated and per-level runs.
 */
import { ensureLibrary, findZig } from "../src/native/build.ts";
import { cpuLevels } from "../src/native/ffi.ts";
import { onPath } from "./platform/tools.ts";

const decoder = new TextDecoder();

/** The parity tests that run again at every other CPU level: one float and three quantized files. */
export const LEVEL_PARITY = [
  "tests/parity/parity_test.ts",
  "tests/parity/nodes_test.ts",
  "--filter",
  "/: tiny (F32|F16|Q8_0|Q4_K_M|Q6_K)[ ,]/",
];

interface Counts {
  passed: number;
  failed: number;
  skipped?: number;
}

async function zigTests(full: boolean): Promise<Counts> {
  const zig = findZig();
  const steps = ["test"];
  const flags: string[] = [];
  const skipped: string[] = [];
  if (full && Deno.build.os === "linux" && Deno.build.arch === "x86_64") {
    if (onPath("qemu-aarch64")) {
      steps.push("test-arm64");
      flags.push("-fqemu");
    } else skipped.push("arm64 under qemu (qemu-aarch64 not installed: apt-get install qemu-user)");
    if (onPath("wine")) {
      steps.push("test-windows");
      flags.push("-fwine");
    } else skipped.push("Windows under Wine (wine not installed: apt-get install wine wine64)");
  }
  const args = [...zig.slice(1), "build", ...steps, ...flags, "--summary", "all"];
  const out = await new Deno.Command(zig[0], {
    args,
    cwd: new URL("..", import.meta.url),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = decoder.decode(out.stderr) + decoder.decode(out.stdout);
  for (const s of skipped) console.log(`zig kernel tests: SKIPPED ${s}`);
  // One line per test binary: "run test test-x86_64-linux-baseline 38 pass (38 total) 1s"
  for (const m of text.matchAll(/run test (test-\S+ \d+ pass[^\n]*)/g)) {
    console.log(`zig kernel tests: ${m[1].trim()}`);
  }
  // "603/609 tests passed (6 skipped)", the parenthesis possibly in another colour
  const all = /(\d+)\/(\d+) tests passed[^\n(]*(?:\((\d+) skipped)?/.exec(text);
  const some = /(\d+) passed; (\d+) failed/.exec(text);
  if (out.success && all) {
    const skipped = +(all[3] ?? 0);
    // a test of one CPU feature (say i8mm's usmmla) skips itself at the levels without it
    const note = skipped > 0 ? `, ${skipped} skipped (CPU-feature tests at levels without the feature)` : "";
    console.log(`zig kernel tests: ${all[1]}/${all[2]} passed${note}`);
    return { passed: +all[1], failed: +all[2] - +all[1] - skipped, skipped };
  }
  console.log(text);
  if (some) return { passed: +some[1], failed: +some[2] };
  return { passed: 0, failed: 1 };
}

/**
 * Runs `deno test -A <extra or tests/>`. Its output streams to ours, or with `buffered` is held
 * and printed in one piece when the run ends (so two runs at once do not interleave their lines).
 */
async function denoTests(extra: string[], env: Record<string, string> = {}, buffered = false): Promise<Counts> {
  const args = ["test", "-A", ...(extra.length ? extra : ["tests/"])];
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: new URL("..", import.meta.url),
    env,
    stdout: "piped",
    stderr: buffered ? "piped" : "inherit",
  }).spawn();
  const stderr = buffered ? new Response(child.stderr).text() : Promise.resolve("");
  let text = "";
  const reader = child.stdout.getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    if (!buffered) await Deno.stdout.write(value);
    text += decoder.decode(value, { stream: true });
  }
  const status = await child.status;
  if (buffered) {
    await Deno.stdout.write(new TextEncoder().encode(text));
    await Deno.stderr.write(new TextEncoder().encode(await stderr));
  }
  // deno prints e.g. "ok | 12 passed | 0 failed (3s)" or "FAILED | 10 passed | 2 failed (...)"
  // deno-lint-ignore no-control-regex
  const plain = text.replace(/\x1b\[[0-9;]*m/g, "");
  // The last such line is deno's summary; earlier ones can be output quoted by a failing test
  // (a test that runs deno itself), which once made a failed run count as passed.
  const m = [...plain.matchAll(/(\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed/g)].at(-1);
  if (!m) return { passed: 0, failed: status.success ? 0 : 1 };
  return { passed: +m[1], failed: Math.max(+m[3], status.success ? 0 : 1) };
}

/**
 * Seconds each of the slowest test files took in one sequential run with cached test models (Ice
 * Lake host, 2 cores, 2026-12-08); every other file counts as SHORT_FILE. Rough weights are enough:
 * they only balance the two halves of the suite.
 */
const FILE_SECONDS: Record<string, number> = {
  "tests/platform/arm64_test.ts": 116,
  "tests/parity/nodes_test.ts": 77,
  "tests/parity/parity_test.ts": 34,
  "tests/robustness/fuzz_test.ts": 20,
  "tests/tokenizer/parity_test.ts": 11,
  "tests/platform/cross_test.ts": 8,
  "tests/cli/bench_test.ts": 7,
  "tests/server/server_test.ts": 6,
};
const SHORT_FILE = 5;

/** The suite's test files, split into two lists of about equal running time (longest first). */
export function splitSuite(files: string[]): [string[], string[]] {
  const cost = (f: string) => FILE_SECONDS[f] ?? SHORT_FILE;
  const halves: [string[], string[]] = [[], []];
  const totals = [0, 0];
  for (const f of [...files].sort((a, b) => cost(b) - cost(a) || a.localeCompare(b))) {
    const i = totals[0] <= totals[1] ? 0 : 1;
    halves[i].push(f);
    totals[i] += cost(f);
  }
  return halves;
}

function suiteFiles(dir = "tests"): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(new URL(`../${dir}`, import.meta.url))) {
    if (e.isDirectory) out.push(...suiteFiles(`${dir}/${e.name}`));
    else if (e.name.endsWith("_test.ts")) out.push(`${dir}/${e.name}`);
  }
  return out.sort();
}

/**
 * The whole Deno suite as two `deno test` processes at once, one per core: one process runs its
 * files one after another, and most of them use one core (llama.cpp's reference runs on one
 * thread; tokenizer, server and GGUF tests are single-threaded TypeScript). Processes, not
 * `deno test --parallel`, whose workers share one address space and so one kernel library, whose
 * region and context tables are not meant for two callers at once.
 */
export async function denoSuite(): Promise<Counts> {
  const [first, second] = splitSuite(suiteFiles());
  const results = await Promise.all([denoTests(first), denoTests(second, {}, true)]);
  return { passed: results[0].passed + results[1].passed, failed: results[0].failed + results[1].failed };
}

/**
 * Builds the kernel libraries the full suite needs (tests/prebuild.ts) in a second process while
 * the Zig kernel tests compile: together they keep both cores busy, where the Deno suite would
 * build them one by one on one core.
 */
async function prebuildWhile<T>(work: Promise<T>): Promise<T> {
  const prebuild = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tests/prebuild.ts"],
    cwd: new URL("..", import.meta.url),
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  const [result] = await Promise.all([work, prebuild]);
  return result;
}

if (import.meta.main) {
  const full = Deno.args.length === 0;
  if (!full) ensureLibrary();
  const results = [
    full ? await prebuildWhile(zigTests(true)) : await zigTests(false),
    full ? await denoSuite() : await denoTests(Deno.args),
  ];
  if (full) {
    const levels = cpuLevels();
    for (const level of levels.runnable.filter((l) => l !== levels.selected)) {
      console.log(`\nparity subset at CPU level ${level} (DELTAQ_CPU=${level}):`);
      results.push(await denoTests(LEVEL_PARITY, { DELTAQ_CPU: level }));
    }
  }
  const passed = results.reduce((s, r) => s + r.passed, 0);
  const failed = results.reduce((s, r) => s + r.failed, 0);
  const skipped = results.reduce((s, r) => s + (r.skipped ?? 0), 0);
  if (skipped > 0) console.log(`${skipped} skipped (not counted as passed)`);
  console.log(`${passed} passed, ${failed} failed`);
  Deno.exit(failed === 0 ? 0 : 1);
}
