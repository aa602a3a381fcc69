/**
 * `cli.ts --raw --temp 0` on a synthetic F32 model continues the prompt with exactly the tokens
 * llama.cpp's greedy decoding picks.
 */
import assert from "node:assert/strict";
import { LlamaReference } from "../../src/oracle/llama.ts";
import { loadTokenizer } from "../../src/tokenizer/tokenizer.ts";
import { testModel } from "../models.ts";

const N = 40;
const PROMPT = "The quick brown fox jumps over the lazy dog, and then";

Deno.test(`CLI greedy --raw output equals llama.cpp's greedy continuation (${N} tokens)`, async () => {
  const path = await testModel({ preset: "tiny-b" });
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", "-m", path, "-p", PROMPT, "--raw", "--temp", "0", "-n", String(N), "-t", "2", "--json"],
    cwd: new URL("../../", import.meta.url),
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const result = JSON.parse(new TextDecoder().decode(out.stdout));
  const ours: number[] = result.generatedIds;

  const ref = LlamaReference.load(path, { threads: 1, contextLength: 256 });
  try {
    const prompt = ref.tokenize(PROMPT, { addSpecial: false, parseSpecial: false });
    assert.deepEqual(Array.from(prompt), loadTokenizer(path).tokenize(PROMPT));
    assert.equal(result.tokens.prompt, prompt.length);
    const theirs = Array.from(ref.greedy(prompt, N));
    // both stop at an end-of-generation token; compare up to it
    const tok = loadTokenizer(path);
    const eog = theirs.findIndex((t) => tok.isEndOfGeneration(t));
    const expected = eog >= 0 ? theirs.slice(0, eog + 1) : theirs;
    assert.ok(expected.length >= 32, `llama.cpp stopped after ${expected.length} tokens; pick a prompt that runs longer`);
    assert.deepEqual(ours, expected);
  } finally {
    ref.dispose();
  }
});
