/**
 * `deno task test`: builds the kernel library, runs the Zig kernel tests (ReleaseSafe) and the
 * Deno test suite, and ends with one line `N passed, M failed` over both.
 *
 * Extra arguments go to `deno test` (e.g. a path or `--filter parity`).
 */
import { ensureLibrary, findZig, targetCpu } from "../src/native/build.ts";

const decoder = new TextDecoder();

async function zigTests(): Promise<{ passed: number; failed: number }> {
  const zig = findZig();
  const args = [...zig.slice(1), "build", "test", `-Dcpu=${targetCpu()}`, "--summary", "all"];
  const out = await new Deno.Command(zig[0], { args, cwd: new URL("..", import.meta.url), stdout: "piped", stderr: "piped" })
    .output();
  const text = decoder.decode(out.stderr) + decoder.decode(out.stdout);
  const all = /(\d+)\/(\d+) tests passed/.exec(text);
  const some = /(\d+) passed; (\d+) failed/.exec(text);
  if (out.success && all) {
    console.log(`zig kernel tests: ${all[1]}/${all[2]} passed`);
    return { passed: +all[1], failed: +all[2] - +all[1] };
  }
  console.log(text);
  if (some) return { passed: +some[1], failed: +some[2] };
  return { passed: 0, failed: 1 };
}

async function denoTests(extra: string[]): Promise<{ passed: number; failed: number }> {
  const args = ["test", "-A", ...(extra.length ? extra : ["tests/"])];
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: new URL("..", import.meta.url),
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let text = "";
  const reader = child.stdout.getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    await Deno.stdout.write(value);
    text += decoder.decode(value, { stream: true });
  }
  const status = await child.status;
  // deno prints e.g. "ok | 12 passed | 0 failed (3s)" or "FAILED | 10 passed | 2 failed (...)"
  // deno-lint-ignore no-control-regex
  const plain = text.replace(/\x1b\[[0-9;]*m/g, "");
  const m = /(\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed/.exec(plain);
  if (!m) return { passed: 0, failed: status.success ? 0 : 1 };
  return { passed: +m[1], failed: +m[3] };
}

if (import.meta.main) {
  ensureLibrary();
  const zig = await zigTests();
  const deno = await denoTests(Deno.args);
  const passed = zig.passed + deno.passed;
  const failed = zig.failed + deno.failed;
  console.log(`${passed} passed, ${failed} failed`);
  Deno.exit(failed === 0 ? 0 : 1);
}
