/**
 * Runtime limits of the public API: bad token ids and context overflow are DeltaqErrors that leave
 * the session exactly as it was; disposing is idempotent; a disposed model or session refuses to
 * work instead of touching freed memory; bad load options and corrupt snapshots are errors too.
 */
import assert from "node:assert/strict";
import { DeltaqError, loadModel } from "../../mod.ts";
import { basePaths } from "./bases.ts";

const paths = await basePaths();
const CONTEXT = 16;

async function micro() {
  return await loadModel(paths.micro, { threads: 1, contextLength: CONTEXT });
}

function isDeltaqError(fragment: string | RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof DeltaqError, `expected a DeltaqError, got ${e instanceof Error ? e.stack : e}`);
    if (typeof fragment === "string") {
      assert.ok(e.message.includes(fragment), `${e.message} lacks ${fragment}`);
    } else assert.match(e.message, fragment);
    return true;
  };
}

Deno.test("eval rejects token ids outside the vocabulary and the session stays usable", async () => {
  const model = await micro();
  try {
    const V = model.info.nVocab;
    const session = model.createSession();
    const first = session.eval([1, 2]);
    const bad: unknown[] = [
      -1,
      V,
      V + 1,
      1.5,
      NaN,
      Infinity,
      -Infinity,
      2 ** 31,
      2 ** 53,
      -0.5,
      "3",
      1n,
      null,
      undefined,
      {},
    ];
    for (const id of bad) {
      assert.throws(
        () => session.eval([3, id as number]),
        isDeltaqError("outside the vocabulary"),
        String(id),
      );
      assert.equal(session.position, 2, `a rejected batch (${String(id)}) must not move the session`);
    }
    assert.throws(() => session.eval([]), isDeltaqError("at least one token"));
    assert.throws(() => session.eval(new Int32Array([0, -7])), isDeltaqError("token id -7 (at index 1)"));
    // The state is as if the bad calls never happened: continuing matches a fresh session.
    const next = session.eval([3]);
    const fresh = model.createSession();
    assert.deepEqual(fresh.eval([1, 2]), first);
    assert.deepEqual(fresh.eval([3]), next);
    assert.deepEqual(Array.from(session.tokens), [1, 2, 3]);
    // Every valid id works, including the last.
    assert.equal(model.createSession().eval([0, V - 1]).length, V);
  } finally {
    model.dispose();
  }
});

Deno.test("context overflow is an error before any work, and the session continues", async () => {
  const model = await micro();
  try {
    const session = model.createSession();
    const ids = Array.from({ length: CONTEXT }, (_, i) => (i * 37) % model.info.nVocab);
    session.eval(ids.slice(0, 10));
    assert.throws(
      () => session.eval(ids.slice(10).concat([1])),
      isDeltaqError(`7 tokens at position 10 would pass the context length ${CONTEXT}`),
    );
    assert.throws(
      () => session.eval(new Array(100_000).fill(0)),
      isDeltaqError("would pass the context length"),
    );
    assert.equal(session.position, 10);
    const last = session.eval(ids.slice(10)); // exactly fills the context
    assert.equal(session.position, CONTEXT);
    assert.throws(
      () => session.eval([0]),
      isDeltaqError(`1 tokens at position ${CONTEXT} would pass the context length ${CONTEXT}`),
    );
    assert.deepEqual(model.createSession().eval(ids), last, "the failed calls changed nothing");
    session.reset();
    assert.equal(session.position, 0);
    assert.deepEqual(session.eval(ids), last, "usable again after reset");
  } finally {
    model.dispose();
  }
});

Deno.test("dispose twice is harmless; disposed sessions and models refuse work", async () => {
  const model = await micro();
  const a = model.createSession();
  const b = model.createSession();
  a.eval([1]);
  a.dispose();
  a.dispose();
  assert.throws(() => a.eval([1]), isDeltaqError("this session was disposed"));
  assert.throws(() => a.reset(), isDeltaqError("this session was disposed"));
  assert.throws(() => a.snapshot(), isDeltaqError("this session was disposed"));
  // Other sessions are unaffected by one being disposed.
  const logits = b.eval([1]);
  assert.equal(logits.length, model.info.nVocab);
  const snapshot = b.snapshot();

  model.dispose();
  model.dispose();
  assert.throws(() => model.createSession(), isDeltaqError("this model was disposed"));
  // A session of a disposed model (created before the dispose) refuses too.
  assert.throws(() => b.eval([1]), isDeltaqError(/this (session|model) was disposed/));
  assert.throws(() => b.restore(snapshot), isDeltaqError(/this (session|model) was disposed/));
  b.dispose(); // after the model: still harmless
});

Deno.test("a session stays usable after its model's other session is disposed mid-use", async () => {
  const model = await micro();
  try {
    const keep = model.createSession();
    for (let i = 0; i < 20; i++) {
      const s = model.createSession();
      s.eval([i]);
      s.dispose();
    }
    assert.deepEqual(keep.eval([5]), model.createSession().eval([5]));
  } finally {
    model.dispose();
  }
});

Deno.test("a session created after a used one is disposed starts from a clean state", async () => {
  // The model recycles a disposed session's recurrent-state memory for the next session.
  const model = await micro();
  try {
    const first = model.createSession();
    const want = first.eval([5, 7]);
    first.dispose();
    const used = model.createSession();
    used.eval([1, 2, 3, 4]);
    used.dispose();
    assert.deepEqual(model.createSession().eval([5, 7]), want);
  } finally {
    model.dispose();
  }
});

Deno.test("generation rejects bad prompts, and a disposed model refuses every entry point", async () => {
  const model = await micro();
  const V = model.info.nVocab;
  const bad: [number[], string][] = [
    [[V + 5], `token id ${V + 5} (at index 0) is outside the vocabulary`],
    [[1.5], "token id 1.5 (at index 0) is outside the vocabulary"],
    [
      new Array(CONTEXT + 4).fill(1),
      `the prompt has ${CONTEXT + 4} tokens, more than the context length ${CONTEXT}`,
    ],
    [[], "the prompt is empty"],
  ];
  for (const [prompt, fragment] of bad) {
    await assert.rejects(
      async () => await model.generate(prompt, { maxTokens: 2 }).result,
      isDeltaqError(fragment),
    );
  }
  model.dispose();
  const calls: [string, () => unknown][] = [
    ["tokenize", () => model.tokenize("hi")],
    ["detokenize", () => model.detokenize([1])],
    ["generate", () => model.generate("hi")],
    ["chat", () => model.chat([{ role: "user", content: "hi" }])],
    ["renderChat", () => model.renderChat([{ role: "user", content: "hi" }])],
    ["createSession", () => model.createSession()],
  ];
  for (const [name, call] of calls) assert.throws(call, isDeltaqError("this model was disposed"), name);
});

Deno.test("corrupt snapshots are rejected and leave the session as it was", async () => {
  const model = await micro();
  try {
    const source = model.createSession();
    source.eval([1, 2, 3]);
    const good = source.snapshot();
    const target = model.createSession();
    target.eval([7]);
    const corrupt: [string, Uint8Array, string][] = [
      ["empty", new Uint8Array(), "too short"],
      ["truncated", good.slice(0, good.length - 1), "size does not match"],
      ["longer", new Uint8Array([...good, 0]), "size does not match"],
      ["bad magic", Object.assign(good.slice(), { 0: 0 }), "not a deltaq session snapshot"],
      ["bad version", Object.assign(good.slice(), { 4: 9 }), "unsupported snapshot version 9"],
      ["other model", Object.assign(good.slice(), { 8: good[8] ^ 1 }), "different model"],
      [
        "position past the context",
        Object.assign(good.slice(), { 13: 1 }),
        "exceed this session's context length",
      ],
    ];
    for (const [name, bytes, fragment] of corrupt) {
      assert.throws(() => target.restore(bytes), isDeltaqError(fragment), name);
      assert.equal(target.position, 1, name);
    }
    target.restore(good);
    assert.deepEqual(target.eval([4]), source.eval([4]));
  } finally {
    model.dispose();
  }
});

Deno.test("bad load options are DeltaqErrors, and failed loads leak nothing", async () => {
  const bad: [Record<string, unknown>, string][] = [
    [{ threads: 0 }, "threads must be an integer from 1 to 64"],
    [{ threads: 1.5 }, "threads must be an integer from 1 to 64"],
    [{ threads: 65 }, "threads must be an integer from 1 to 64"],
    [{ threads: NaN }, "threads must be an integer from 1 to 64"],
    [{ contextLength: 0 }, "contextLength must be a positive integer"],
    [{ contextLength: -5 }, "contextLength must be a positive integer"],
    [{ contextLength: 2.5 }, "contextLength must be a positive integer"],
    [{ contextLength: 1e9 }, "exceeds the model's trained context 256"],
    [{ batchSize: 0 }, "batchSize must be a positive integer"],
    [{ batchSize: Infinity }, "batchSize must be a positive integer"],
  ];
  // More failed loads than the library has contexts (64): a leak would exhaust them.
  for (let round = 0; round < 7; round++) {
    for (const [opts, fragment] of bad) {
      await assert.rejects(
        () => loadModel(paths.micro, { threads: 1, ...opts }),
        isDeltaqError(fragment),
        JSON.stringify(opts),
      );
    }
  }
  const model = await micro();
  assert.equal(model.createSession().eval([1]).length, model.info.nVocab);
  model.dispose();
});

Deno.test("loading and disposing many times reuses native resources", async () => {
  // 80 > the 64 native contexts: each dispose must give its context and regions back.
  for (let i = 0; i < 80; i++) {
    const model = await micro();
    model.createSession().eval([i % 10]);
    model.dispose();
  }
});
