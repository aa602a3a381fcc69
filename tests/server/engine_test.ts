/**
 * The serving engine on a synthetic model: greedy replies equal the library's; the prompt cache
 * resumes chats at their history checkpoints and long prompts at their periodic ones, with replies
 * equal token for token to uncached ones (also in another slot, and after eviction); parallel
 * slots decode together and each reply equals its reply alone; aborts and the token limit end jobs
 * as documented; logprobs are a distribution; bad jobs are refused at submit.
 */
import assert from "node:assert/strict";
import { loadModel, type Model } from "../../mod.ts";
import type { ChatMessage } from "../../src/chat/template.ts";
import {
  Engine,
  type EngineJob,
  type EngineOptions,
  type EngineRequest,
  type EngineToken,
  logprobsOf,
} from "../../src/server/engine.ts";
import { testModel } from "../models.ts";

const QWEN_TEMPLATE = Deno.readTextFileSync(
  new URL("../chat/qwen3.5-4b.chat_template.jinja", import.meta.url),
);

async function withEngine(
  fn: (m: Model, e: Engine) => Promise<void>,
  opts: EngineOptions = {},
): Promise<void> {
  // Q4_K_M: repacked Q4_K matrices, whose one-token and GEMM kernels round differently
  const path = await testModel({ preset: "tiny", chatTemplate: QWEN_TEMPLATE, quant: "Q4_K_M" });
  // one thread: these tests are about scheduling and state, and a 2-thread pool crawls on a busy machine
  const model = await loadModel(path, { threads: 1, contextLength: 1024 });
  const engine = new Engine(model, opts);
  try {
    await fn(model, engine);
  } finally {
    engine.close();
    model.dispose();
  }
}

/**
 * Runs a job; returns its token ids, its trace (each token with its log-probability, whose float
 * value shows any difference in the logits, not only one that flips a token) and its result.
 */
async function run(engine: Engine, job: EngineJob) {
  const req = engine.submit({ logprobs: 0, ...job });
  const tokens = await drain(req);
  return { ids: tokens.map((t) => t.id), trace: tokens.map((t) => `${t.id}:${t.logprob}`), result: await req.result };
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
    assert.throws(() => engine.submit({ prompt: new Array(1100).fill(1) }), /context length/);
    assert.throws(() => engine.submit({ prompt: [1], maxTokens: -1 }), /maxTokens/);
    assert.throws(() => engine.submit({ prompt: [1], logprobs: 21 }), /logprobs/);
    engine.close();
    assert.throws(() => engine.submit({ prompt: [1] }), /closed/);
    await Promise.resolve();
  }));

/** A chat as an agent would send it: the reply (thinking dropped by the template) goes back in. */
function nextTurn(model: Model, messages: ChatMessage[], reply: number[], user: string): ChatMessage[] {
  return [...messages, { role: "assistant", content: model.detokenize(reply, { special: false }) }, {
    role: "user",
    content: user,
  }];
}

Deno.test("engine: a chat's next turn resumes at its history checkpoint and replies exactly as uncached", () =>
  withEngine(async (model, engine) => {
    const uncached = new Engine(model, { cacheMiB: 0 });
    try {
      let messages: ChatMessage[] = [{ role: "system", content: "You are terse." }, {
        role: "user",
        content: "Name a river.",
      }];
      let previousHistory = 0;
      for (let turn = 0; turn < 3; turn++) {
        const { tokens, historyTokens } = model.renderChat(messages);
        const job = {
          prompt: tokens,
          checkpoints: [historyTokens!],
          sampling: { temperature: 0 },
          maxTokens: 10,
        };
        const cached = await run(engine, job);
        const fresh = await run(uncached, job);
        assert.deepEqual(cached.trace, fresh.trace, `turn ${turn + 1}: cached and uncached replies differ`);
        assert.equal(fresh.result.usage.cachedTokens, 0);
        // from turn 2 on, everything up to the previous turn's history end is restored
        assert.equal(cached.result.usage.cachedTokens, previousHistory, `turn ${turn + 1}`);
        assert.equal(cached.result.usage.promptTokens, tokens.length);
        previousHistory = historyTokens!;
        messages = nextTurn(model, messages, cached.ids, `And another, number ${turn + 2}?`);
      }
      const stats = engine.stats();
      assert.equal(stats.cache.entries, 3);
      assert.equal(stats.cache.hits, 2);
      assert.ok(stats.cache.bytes > 0 && stats.cache.bytes <= stats.cache.capacityBytes);
      assert.equal(stats.promptTokens - stats.cachedTokens, stats.evaluatedTokens);
    } finally {
      uncached.close();
    }
  }));

Deno.test("engine: long prompts get periodic checkpoints; a resumed prompt in another slot replies exactly", () =>
  withEngine(async (model, engine) => {
    const uncached = new Engine(model, { cacheMiB: 0 });
    try {
      const base = Array.from({ length: 230 }, (_, i) => (i * 31 + 7) % 1000);
      const first = await run(engine, { prompt: base, sampling: { temperature: 0 }, maxTokens: 6 });
      assert.equal(engine.stats().cache.entries, 3); // at 64, 128, 192
      // keep slot 0 busy so the next prompt lands in slot 1, whose KV rows come from the cache
      const busy = engine.submit({
        prompt: [5, 6, 7],
        sampling: { temperature: 0.7, seed: 1 },
        maxTokens: 40,
      });
      const edited = [...base.slice(0, 150), 11, 12, 13, 14];
      const resumed = await run(engine, { prompt: edited, sampling: { temperature: 0 }, maxTokens: 6 });
      assert.equal(resumed.result.usage.cachedTokens, 128);
      assert.deepEqual(
        resumed.trace,
        (await run(uncached, { prompt: edited, sampling: { temperature: 0 }, maxTokens: 6 })).trace,
      );
      assert.deepEqual(
        first.trace,
        (await run(uncached, { prompt: base, sampling: { temperature: 0 }, maxTokens: 6 })).trace,
      );
      await busy.result;
      // a prompt ending one token after a checkpoint resumes earlier (the last pass holds ≥ 2 tokens)
      const short = await run(engine, {
        prompt: base.slice(0, 129),
        sampling: { temperature: 0 },
        maxTokens: 4,
      });
      assert.equal(short.result.usage.cachedTokens, 64);
      assert.deepEqual(
        short.trace,
        (await run(uncached, { prompt: base.slice(0, 129), sampling: { temperature: 0 }, maxTokens: 4 })).trace,
      );
    } finally {
      uncached.close();
    }
  }, { parallel: 2, checkpointInterval: 64 }));

Deno.test("engine: a small cache evicts the least recently used checkpoints and stays within budget", () =>
  withEngine(async (model, engine) => {
    const prompts = [0, 1, 2].map((c) => Array.from({ length: 40 }, (_, i) => (c * 300 + i * 7) % 1000));
    for (const p of prompts) {
      await run(engine, { prompt: p, checkpoints: [30], sampling: { temperature: 0 }, maxTokens: 2 });
    }
    const stats = engine.stats();
    assert.ok(stats.cache.bytes <= stats.cache.capacityBytes);
    assert.ok(stats.cache.entries < 3, `${stats.cache.entries} checkpoints in a budget for fewer`);
    // the newest survives, the oldest went first
    assert.equal(
      (await run(engine, { prompt: prompts[2], sampling: { temperature: 0 }, maxTokens: 1 })).result.usage
        .cachedTokens,
      30,
    );
    assert.equal(
      (await run(engine, { prompt: prompts[0], sampling: { temperature: 0 }, maxTokens: 1 })).result.usage
        .cachedTokens,
      0,
    );
    void model;
  }, { cacheMiB: 0.5 }));

Deno.test("engine: parallel slots decode together and each reply equals the same job alone", () =>
  withEngine(async (model, engine) => {
    const alone = new Engine(model, { parallel: 1, cacheMiB: 0 });
    try {
      const jobs: EngineJob[] = [0, 1, 2, 3, 4].map((i) => ({
        prompt: model.tokenize(
          ["Once upon a time", "The river", "In the old mill there", "Hello", "Seven"][i],
        ),
        sampling: i % 2 ? { temperature: 0 } : { temperature: 0.9, seed: 10 + i },
        maxTokens: 14 + i,
      }));
      const together = await Promise.all(jobs.map((j) => run(engine, j))); // five jobs on four slots: one queues
      for (const [i, j] of jobs.entries()) {
        assert.deepEqual(together[i].trace, (await run(alone, j)).trace, `job ${i}`);
      }
      assert.ok(together[4].result.timings.queuedMs > together[0].result.timings.queuedMs);
    } finally {
      alone.close();
    }
  }, { parallel: 4 }));

Deno.test("engine: aborting one of several streams stops it within one token; the others are unaffected", () =>
  withEngine(async (model, engine) => {
    const job = (seed: number, signal?: AbortSignal): EngineJob => ({
      prompt: model.tokenize("The river runs"),
      sampling: { temperature: 1, seed },
      maxTokens: 20,
      signal,
    });
    const ac = new AbortController();
    const victim = engine.submit(job(1, ac.signal));
    const others = [2, 3].map((seed) => run(engine, job(seed)));
    let n = 0;
    for await (const _ of victim) if (++n === 2) ac.abort();
    const r = await victim.result;
    assert.equal(r.finishReason, "abort");
    assert.ok(r.usage.completionTokens <= 3, `${r.usage.completionTokens} tokens after an abort at 2`);
    const done = await Promise.all(others);
    const alone = new Engine(model, { cacheMiB: 0 });
    try {
      for (const [i, seed] of [2, 3].entries()) {
        assert.deepEqual(done[i].trace, (await run(alone, job(seed))).trace);
      }
    } finally {
      alone.close();
    }
  }, { parallel: 3 }));
