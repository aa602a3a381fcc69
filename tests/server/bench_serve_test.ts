/**
 * `deno task bench-serve` as a user runs it, on a tiny model with the Qwen3.5 chat template and a
 * few short turns: every table is printed, and from turn 2 on every client's request processed
 * only the tokens new since its previous history checkpoint (the target), over real HTTP.
 * Nothing here asserts a speed.
 */
import assert from "node:assert/strict";
import { testModel } from "../models.ts";

const QWEN_TEMPLATE = Deno.readTextFileSync(
  new URL("../chat/qwen3.5-4b.chat_template.jinja", import.meta.url),
);
const tool = new URL("../../tools/bench_serve.ts", import.meta.url).pathname;

Deno.test("bench-serve: per-turn tables, and from turn 2 only the tokens new since the last checkpoint", async () => {
  const model = await testModel({ preset: "tiny", chatTemplate: QWEN_TEMPLATE, quant: "Q4_K_M" });
  const args = ["-m", model, "-t", "1", "-c", "4096", "--turns", "3", "-n", "2", "--max-tokens", "4"];
  args.push("--decode-tokens", "8", "--tool-tokens", "20", "--cache-mib", "64");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", tool, ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const tables = stdout.split(/\n(?=one client|2 clients|decode throughput)/);
  assert.equal(tables.length, 4, stdout);
  for (const table of tables.slice(1, 3)) {
    const rows = table.split("\n").filter((l) => /^\s+\d+\s/.test(l)).map((l) => l.trim().split(/\s+/));
    assert.deepEqual(rows.map((r) => r[0]), ["1", "2", "3"], table);
    assert.equal(rows[0][7], "—");
    // every turn streamed visible text, so its first token was timed
    for (const r of rows) assert.match(r[1], /^\d+$/, `turn ${r[0]}: no time to first token\n${table}`);
    for (const r of rows.slice(1)) {
      const [prompt, cached, processed, target] = r.slice(3, 7).map(Number);
      assert.ok(cached > 0 && prompt === cached + processed, table);
      assert.equal(
        processed,
        target,
        `turn ${r[0]}: processed ${processed}, new since the checkpoint ${target}\n${table}`,
      );
      assert.equal(r[7], "yes");
    }
  }
  assert.match(stdout, /1 stream: +[\d.]+ tokens\/s/);
  assert.match(stdout, /2 streams: +[\d.]+ tokens\/s aggregate/);
  assert.match(stdout, /prompt cache: \d+ checkpoints/);
});
