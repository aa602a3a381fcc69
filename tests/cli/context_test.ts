/**
 * The CLI's context options: `-c 0` (the trained context), `-ctk/-ctv` (llama.cpp's spellings),
 * the memory a context needs in `info` and `--json`, and a chat that outgrows its context going
 * on by dropping its oldest turns instead of failing every later turn.
 */
import assert from "node:assert/strict";
import { testModel } from "../models.ts";

const TEMPLATE = Deno.readTextFileSync(new URL("../chat/qwen3.5-4b.chat_template.jinja", import.meta.url));

async function cli(args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    cwd: new URL("../../", import.meta.url),
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("-c 0, -ctk/-ctv and --json's memory; info reports memory per context and cache type", async () => {
  const path = await testModel({ preset: "tiny" });
  const r = await cli(["-m", path, "-p", "hello", "--raw", "-n", "3", "--temp", "0", "-c", "0", "-ctk", "q8_0", "-ctv=q4_0", "--json", "-t", "1"]);
  assert.equal(r.code, 0, r.stderr);
  const json = JSON.parse(r.stdout);
  assert.equal(json.memory.contextLength, 4096); // tiny's trained context
  assert.equal(json.memory.cacheTypeK, "q8_0");
  assert.equal(json.memory.cacheTypeV, "q4_0");
  // 2 attention layers × 4096 positions × (Q8_0 row 4·34 + Q4_0 row 4·18 bytes)
  assert.equal(json.memory.kvCacheBytes, 2 * 4096 * (4 * 34 + 4 * 18));

  const bad = await cli(["-m", path, "-p", "x", "-ctk", "q3_k"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--cache-type-k must be one of f16, q8_0, q4_0, got "q3_k"/);

  const info = await cli(["info", path, "-c", "1000", "-ctk", "q8_0", "-ctv", "q8_0"]);
  assert.equal(info.code, 0, info.stderr);
  assert.match(info.stdout, /memory per session at a full context/);
  assert.match(info.stdout, /1,000 +\d/);
  assert.match(info.stdout, /4,096 \(trained\)/);
  assert.match(info.stdout, /KV q8_0/);
});

Deno.test("a chat that outgrows its context drops its oldest turns and goes on", async () => {
  const path = await testModel({ preset: "tiny", chatTemplate: TEMPLATE });
  const turns = ["Tell me about rivers and the sea.", "And about mountains?", "What about deserts and snow?", "Thanks, and forests?"];
  const r = await cli(["-m", path, "-i", "-c", "160", "-n", "20", "--temp", "0", "--no-think", "-t", "1"], turns.join("\n") + "\n");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /the conversation has outgrown the context/);
  assert.match(r.stderr, /dropped the \d+ oldest turns?; re-processing \d+ tokens/);
  assert.doesNotMatch(r.stderr, /more than the context length|would pass the context length/);
});
