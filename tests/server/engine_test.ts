/**
 * The serving engine on a synthetic model: greedy replies equal the library's, aborts and the
 * token limit end jobs as documented, logprobs are a distribution, bad jobs are refused at submit.
 */
import assert from "node:assert/strict";
import { loadModel, type Model } from "../../mod.ts";
import { Engine, type EngineRequest, type EngineToken, logprobsOf } from "../../src/server/engine.ts";
import { testModel } from "../models.ts";

async function withEngine(fn: (m: Model, e: Engine) => Promise<void>, opts = {}): Promise<void> {
  const model = await loadModel(await testModel({ preset: "tiny" }), { threads: 2, contextLength: 512 });
  const engine = new Engine(model, opts);
  try {
    await fn(model, engine);
  } finally {
    engine.close();
    model.dispose();
  }
}

async function drain(r: EngineRequest): Promise<EngineToken[]> {
  const out: EngineToken[] = [];
  for await (const t of r) out.push(t);
  return out;
}

Deno.test("engine: a greedy reply equals the library's generate", () =>
  withEngine(async (model, engine) => {
    const prompt = model.tokenize("Once upon a time there was");
    const lib = await model.generate(prompt, { temperature: 0, maxTokens: 16 }).result;
    const req = engine.submit({ prompt, sampling: { temperature: 0 }, maxTokens: 16 });
    const tokens = await drain(req);
    const r = await req.result;
    const libIds = lib.stopReason === "eog" ? lib.tokens.slice(0, -1) : lib.tokens;
    assert.deepEqual(tokens.map((t) => t.id), libIds);
    assert.equal(r.usage.promptTokens, prompt.length);
    assert.equal(r.usage.completionTokens, tokens.length);
    assert.equal(r.finishReason, lib.stopReason === "eog" ? "eog" : "length");
  }));

Deno.test("engine: abort ends a job within one token; a queued aborted job never runs", () =>
  withEngine(async (model, engine) => {
    const prompt = model.tokenize("The river runs past the old mill");
    const ac = new AbortController();
    const req = engine.submit({ prompt, sampling: { temperature: 0.9, seed: 3 }, signal: ac.signal });
    const queued = new AbortController();
    const second = engine.submit({ prompt, signal: queued.signal });
    queued.abort();
    let n = 0;
    for await (const _ of req) if (++n === 3) ac.abort();
    const r = await req.result;
    assert.equal(r.finishReason, "abort");
    assert.ok(r.usage.completionTokens <= 4, `${r.usage.completionTokens} tokens after abort at 3`);
    const s = await second.result;
    assert.equal(s.finishReason, "abort");
    assert.equal(s.usage.completionTokens, 0);
  }));

Deno.test("engine: logprobs form a distribution and name the chosen token", () =>
  withEngine(async (model, engine) => {
    const req = engine.submit({
      prompt: model.tokenize("Hello"),
      sampling: { temperature: 0 },
      maxTokens: 4,
      logprobs: 5,
    });
    const tokens = await drain(req);
    assert.ok(tokens.length > 0);
    for (const t of tokens) {
      assert.equal(t.topLogprobs!.length, 5);
      assert.equal(t.topLogprobs![0].id, t.id); // greedy: the chosen token is the most likely
      assert.ok(Math.abs(t.topLogprobs![0].logprob - t.logprob!) < 1e-9);
      for (let i = 1; i < 5; i++) assert.ok(t.topLogprobs![i].logprob <= t.topLogprobs![i - 1].logprob);
    }
    const lp = logprobsOf(new Float32Array([0, Math.log(3), -Infinity]), 1, 2);
    assert.ok(Math.abs(lp.logprob - Math.log(0.75)) < 1e-6);
    assert.deepEqual(lp.topLogprobs.map((t) => t.id), [1, 0]);
  }));

Deno.test("engine: a constraint's mask decides every sampled token", () =>
  withEngine(async (model, engine) => {
    const allowed = [5, 17, 99];
    const seen: number[] = [];
    const constraint = {
      mask(l: Float32Array) {
        for (let i = 0; i < l.length; i++) if (!allowed.includes(i)) l[i] = -Infinity;
      },
      accept(t: number) {
        seen.push(t);
      },
    };
    const req = engine.submit({
      prompt: model.tokenize("Pick"),
      sampling: { temperature: 1, seed: 9 },
      maxTokens: 12,
      constraint,
    });
    const ids = (await drain(req)).map((t) => t.id);
    assert.equal(ids.length, 12);
    assert.ok(ids.every((t) => allowed.includes(t)), ids.join(","));
    assert.deepEqual(seen, ids);
  }));

Deno.test("engine: impossible jobs are refused at submit", () =>
  withEngine(async (_model, engine) => {
    assert.throws(() => engine.submit({ prompt: [] }), /empty/);
    assert.throws(() => engine.submit({ prompt: [1, 1e9] }), /outside the vocabulary/);
    assert.throws(() => engine.submit({ prompt: new Array(600).fill(1) }), /context length/);
    assert.throws(() => engine.submit({ prompt: [1], maxTokens: -1 }), /maxTokens/);
    assert.throws(() => engine.submit({ prompt: [1], logprobs: 21 }), /logprobs/);
    engine.close();
    assert.throws(() => engine.submit({ prompt: [1] }), /closed/);
    await Promise.resolve();
  }));
