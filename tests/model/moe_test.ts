/**
 * Mixture-of-experts (`qwen35moe`) models through every entry point a dense model has: the CLI's
 * greedy output equals llama.cpp's, chat and sampled generation are reproducible, a snapshot
 * continues exactly like the session it was taken from, `info` shows the expert layout, and
 * `bench` measures both engines. (Logit and node parity: tests/parity/; broken files:
 * tests/robustness/broken_files_test.ts.)
 */
import assert from "node:assert/strict";
import { loadModel } from "../../mod.ts";
import { formatInfo } from "../../src/cli/info.ts";
import { readGgufHeader } from "../../src/gguf/read.ts";
import { LlamaReference } from "../../src/oracle/llama.ts";
import { loadTokenizer } from "../../src/tokenizer/tokenizer.ts";
import { testModel } from "../models.ts";

const cli = new URL("../../cli.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

async function run(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", cli, ...args], stdout: "piped", stderr: "piped" })
    .output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test("qwen35moe: CLI greedy --raw output equals llama.cpp's greedy continuation", async () => {
  const path = await testModel({ preset: "tiny-moe" });
  const N = 32, PROMPT = "The quick brown fox jumps over the lazy dog, and then";
  const r = await run("-m", path, "-p", PROMPT, "--raw", "--temp", "0", "-n", String(N), "-t", "2", "--json");
  assert.equal(r.code, 0, r.stderr);
  const ours: number[] = JSON.parse(r.stdout).generatedIds;
  const ref = LlamaReference.load(path, { threads: 1, contextLength: 256 });
  try {
    const theirs = Array.from(ref.greedy(ref.tokenize(PROMPT, { addSpecial: false, parseSpecial: false }), N));
    const tok = loadTokenizer(path);
    const eog = theirs.findIndex((t) => tok.isEndOfGeneration(t));
    const expected = eog >= 0 ? theirs.slice(0, eog + 1) : theirs;
    assert.ok(expected.length >= 16, `llama.cpp stopped after ${expected.length} tokens`);
    assert.deepEqual(ours, expected);
  } finally {
    ref.dispose();
  }
});

Deno.test("qwen35moe: chat and sampling are reproducible, and a snapshot continues exactly", async () => {
  // Q4_K_M: the expert tensors are repacked at load, as in the benchmark model
  const path = await testModel({ preset: "tiny-moe-b", quant: "Q4_K_M" });
  const model = await loadModel(path, { threads: 2, contextLength: 512 });
  try {
    const messages = [{ role: "user" as const, content: "Name three rivers." }];
    const a = await model.chat(messages, { temperature: 0.8, seed: 3, maxTokens: 20 }).result;
    const b = await model.chat(messages, { temperature: 0.8, seed: 3, maxTokens: 20 }).result;
    assert.equal(a.tokens.length, 20);
    assert.deepEqual(a.tokens, b.tokens);

    const prompt = model.tokenize("The river runs past the old mill");
    const first = model.createSession();
    first.eval(prompt);
    const file = Deno.makeTempFileSync({ suffix: ".dqsnap" });
    try {
      await first.saveSnapshot(file);
      const second = model.createSession();
      await second.loadSnapshot(file);
      assert.deepEqual(Array.from(second.tokens), prompt);
      // the same logits, bit for bit, and the same greedy continuation
      const next = model.tokenize(", where the miller's daughter");
      assert.deepEqual(second.eval(next), first.eval(next));
      const opts = { temperature: 0, maxTokens: 12 };
      const x = await model.generate([1], { ...opts, session: first }).result;
      const y = await model.generate([1], { ...opts, session: second }).result;
      assert.deepEqual(y.tokens, x.tokens);
      assert.equal(second.position, first.position);
    } finally {
      Deno.removeSync(file);
    }
  } finally {
    model.dispose();
  }
});

Deno.test("qwen35moe: info shows the expert layout", async () => {
  const path = await testModel({ preset: "tiny-moe" });
  const text = formatInfo(path, readGgufHeader(path));
  assert.match(text, /experts \(every layer's FFN\): 6 routed, 2 used per token, FFN 256 each \(fused gate\/up/);
  assert.match(text, /shared expert: FFN 256, gated by sigmoid/);
  assert.match(text, /blk\.0\.ffn_gate_up_exps\.weight\s+F32\s+\[256, 512, 6\]/);
});

Deno.test("qwen35moe: bench measures both engines", async () => {
  const path = await testModel({ preset: "tiny-moe", quant: "Q4_K_M" });
  const r = await run("bench", "-m", path, "-t", "1", "--pp", "16", "--tg", "4", "--reps", "1", "--json");
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report.runs.map((x: { engine: string }) => x.engine), ["deltaq", "llama.cpp"]);
  for (const row of report.summary) assert.ok(row.deltaq.median > 0 && row.llama.median > 0, row.metric);
  // a token reads 2 of the 6 experts: far less than the file
  assert.ok(report.bandwidth.decodeWeightBytes < 0.7 * report.modelBytes);
});
