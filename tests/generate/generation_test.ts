/**
 * Generation on a synthetic model: seeded sampling is reproducible, multi-turn chat evaluates only
 * what changed (and gives the same tokens as evaluating everything afresh), snapshots restore
 * exactly, and abort / stop strings / token limits end generation as documented.
 */
import assert from "node:assert/strict";
import { loadModel, type Model } from "../../mod.ts";
import type { ChatMessage } from "../../src/chat/template.ts";
import { testModel } from "../models.ts";

const QWEN_TEMPLATE = Deno.readTextFileSync(new URL("../chat/qwen3.5-4b.chat_template.jinja", import.meta.url));

async function withModel(fn: (m: Model) => void | Promise<void>, template = true): Promise<void> {
  const path = await testModel({ preset: "tiny", chatTemplate: template ? QWEN_TEMPLATE : undefined });
  const model = await loadModel(path, { threads: 2, contextLength: 512 });
  try {
    await fn(model);
  } finally {
    model.dispose();
  }
}

async function collect(gen: AsyncIterable<{ text: string; thinking: boolean }>): Promise<string> {
  let s = "";
  for await (const c of gen) s += c.text;
  return s;
}

Deno.test("a seeded sampled generation is reproducible", () =>
  withModel(async (model) => {
    const run = (seed: number) => model.generate("Once upon a time", { temperature: 0.9, seed, maxTokens: 24 }).result;
    const a = await run(42), b = await run(42), c = await run(7);
    assert.deepEqual(a.tokens, b.tokens);
    assert.equal(a.text, b.text);
    assert.equal(a.tokens.length, 24);
    assert.notDeepEqual(a.tokens, c.tokens);
  }));

Deno.test("multi-turn chat evaluates only the new part and matches a fresh evaluation", () =>
  withModel(async (model) => {
    const session = model.createSession();
    const messages: ChatMessage[] = [{ role: "user", content: "What is the capital of France?" }];
    const opts = { temperature: 0, maxTokens: 12 };
    const r1 = await model.chat(messages, { ...opts, session }).result;
    assert.equal(r1.promptTokensEvaluated, r1.promptTokens);
    messages.push({ role: "assistant", content: r1.text, reasoning_content: r1.thinking });
    messages.push({ role: "user", content: "And of Italy?" });

    const r2 = await model.chat(messages, { ...opts, session }).result;
    // the first turn's history (system-free: just the user message) is never evaluated again
    const history1 = model.renderChat(messages.slice(0, 1)).historyTokens!;
    assert.ok(history1 > 0);
    assert.ok(r2.promptTokens - r2.promptTokensEvaluated >= history1, `reused ${r2.promptTokens - r2.promptTokensEvaluated} of ${r2.promptTokens}`);
    assert.ok(r2.promptTokensEvaluated < r2.promptTokens);

    const fresh = await model.chat(messages, opts).result;
    assert.equal(fresh.promptTokensEvaluated, fresh.promptTokens);
    assert.deepEqual(r2.tokens, fresh.tokens);

    // a third turn on the same session, again against a fresh evaluation
    messages.push({ role: "assistant", content: r2.text, reasoning_content: r2.thinking });
    messages.push({ role: "user", content: "Thanks!" });
    const r3 = await model.chat(messages, { ...opts, session }).result;
    assert.ok(r3.promptTokensEvaluated < r3.promptTokens - history1);
    assert.deepEqual(r3.tokens, (await model.chat(messages, opts).result).tokens);
    session.dispose();
  }));

Deno.test("a session snapshot saved to a file continues exactly like the original", () =>
  withModel(async (model) => {
    const prompt = model.tokenize("The river runs past the old mill");
    const a = model.createSession();
    a.eval(prompt);
    const file = Deno.makeTempFileSync({ suffix: ".dqsnap" });
    try {
      await a.saveSnapshot(file);
      const b = model.createSession();
      await b.loadSnapshot(file);
      assert.equal(b.position, prompt.length);
      assert.deepEqual(Array.from(b.tokens), prompt);
      const next = [5, 6, 7];
      assert.deepEqual(a.eval(next), b.eval(next));
      // a corrupted snapshot is refused with a clear error and leaves the session usable
      const bytes = Deno.readFileSync(file);
      bytes[8] ^= 0xff;
      assert.throws(() => b.restore(bytes), /different model/);
      assert.equal(b.eval([1]).length, model.info.nVocab);
    } finally {
      Deno.removeSync(file);
    }
  }));

Deno.test("abort, stop strings and token limits end generation", () =>
  withModel(async (model) => {
    const full = await model.generate("The quick brown fox", { temperature: 0, maxTokens: 30 }).result;
    assert.equal(full.stopReason, "length");
    assert.equal(full.generatedTokens, 30);

    // a stop string taken from the middle of the greedy output cuts the text right before it
    const stop = full.text.slice(Math.floor(full.text.length / 2), Math.floor(full.text.length / 2) + 3);
    const cut = await model.generate("The quick brown fox", { temperature: 0, maxTokens: 30, stop: [stop] }).result;
    assert.equal(cut.stopReason, "stop");
    assert.equal(cut.text, full.text.slice(0, full.text.indexOf(stop)));

    const controller = new AbortController();
    const gen = model.generate("The quick brown fox", { temperature: 0, maxTokens: 30, signal: controller.signal });
    for await (const _ of gen) controller.abort();
    const aborted = await gen.result;
    assert.equal(aborted.stopReason, "abort");
    assert.ok(aborted.generatedTokens < 30);

    const text = await collect(model.generate("The quick brown fox", { temperature: 0, maxTokens: 30 }));
    assert.equal(text, full.text);
  }));

Deno.test("generation stops at the end of the context", async () => {
  const path = await testModel({ preset: "tiny" });
  const model = await loadModel(path, { threads: 2, contextLength: 16 });
  try {
    const r = await model.generate(model.tokenize("one two three"), { temperature: 0 }).result;
    assert.equal(r.stopReason, "context");
    assert.equal(r.promptTokens + r.generatedTokens, 16 + 1); // the last sampled token is not evaluated
    await assert.rejects(model.generate(new Array(17).fill(1)).result, /more than the context length 16/);
  } finally {
    model.dispose();
  }
});

Deno.test("eval writes into a caller's array when given one, and refuses a wrong size up front", () =>
  withModel((model) => {
    const fresh = model.createSession(), reused = model.createSession();
    try {
      const V = model.config.nVocab;
      const out = new Float32Array(V);
      assert.deepEqual(reused.eval([1, 2, 3], { out }), fresh.eval([1, 2, 3]));
      for (const t of [4, 5]) {
        const expected = fresh.eval([t]);
        assert.equal(reused.eval([t], { out }), out);
        assert.deepEqual(out, expected);
      }
      assert.throws(() => reused.eval([6, 7], { out, allLogits: true }), /holds \d+ floats; \d+ are needed/);
      assert.equal(reused.position, 5, "a refused eval changed the session");
    } finally {
      fresh.dispose();
      reused.dispose();
    }
  }));
