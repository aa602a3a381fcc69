/**
 * The session's KV cache: quantized cache types, memory that grows with the tokens held (and is
 * given back on reset), the trained context as `contextLength: "max"`, and snapshots that record
 * the cache type (old F16 snapshots still load; mismatched types are refused clearly).
 */
import assert from "node:assert/strict";
import { DeltaqError, loadModel } from "../../mod.ts";
import { COMMIT_GRANULE } from "../../src/native/kernels.ts";
import { testModel } from "../models.ts";

const tiny = () => testModel({ preset: "tiny" });

Deno.test("a session's KV memory grows in granules with its tokens and is released on reset", async () => {
  // tiny: 2 attention layers, K and V rows of 2 KV heads × 64 dims: 256 bytes each in F16
  const model = await loadModel(await tiny(), { threads: 1, contextLength: "max" });
  try {
    assert.equal(model.info.contextLength, model.config.nCtxTrain);
    const s = model.createSession();
    const empty = s.memoryBytes;
    s.eval([1, 2, 3]);
    const layers = model.config.layerTypes.filter((t) => t === "attention").length;
    assert.equal(s.memoryBytes - empty, 2 * layers * COMMIT_GRANULE, "one granule for each K and V");
    // the full-context reservation is only address space
    const full = model.contextMemory();
    assert.equal(full.kvCacheBytes, model.config.nCtxTrain * 2 * layers * 256);
    s.reset();
    assert.equal(s.memoryBytes, empty);
    assert.equal(s.eval([1, 2, 3]).length, model.info.nVocab);
  } finally {
    model.dispose();
  }
});

Deno.test("Q8_0 and Q4_0 caches: snapshots record the type; F16 version-1 snapshots still load", async () => {
  const path = await tiny();
  const f16 = await loadModel(path, { threads: 1, contextLength: 128 });
  const q8 = await loadModel(path, { threads: 1, contextLength: 128, cacheTypeK: "q8_0", cacheTypeV: "q8_0" });
  try {
    assert.equal(q8.info.cacheTypeK, "q8_0");
    const prompt = [5, 9, 13, 200, 7];
    const a = q8.createSession();
    a.eval(prompt);
    const snap = a.snapshot();
    const b = q8.createSession();
    b.restore(snap);
    assert.deepEqual(a.eval([3]), b.eval([3]));
    // a session with another cache type refuses it, naming both
    const c = q8.createSession({ cacheTypeK: "q4_0", cacheTypeV: "q4_0" });
    assert.throws(() => c.restore(snap), (e) => e instanceof DeltaqError && /q8_0\/q8_0 KV cache .* q4_0\/q4_0/.test(e.message));
    // quantized caches store less per token
    assert.ok(q8.contextMemory().kvCacheBytes < f16.contextMemory().kvCacheBytes * 0.6);

    // a version-1 snapshot (F16 cache, 4 header words) of the same state loads into an F16 session
    const s = f16.createSession();
    s.eval(prompt);
    const v2 = s.snapshot();
    const v1 = new Uint8Array(v2.length - 8);
    v1.set(v2.subarray(0, 16));
    v1.set(v2.subarray(24), 16);
    new DataView(v1.buffer).setUint32(4, 1, true);
    const old = f16.createSession();
    old.restore(v1);
    assert.deepEqual(Array.from(old.tokens), prompt);
    assert.deepEqual(old.eval([3]), s.eval([3]));
    assert.throws(() => q8.createSession().restore(v1), /f16\/f16 KV cache/);
  } finally {
    f16.dispose();
    q8.dispose();
  }
});

Deno.test("cache types a model cannot hold, and context lengths, are clear errors", async () => {
  const micro = await testModel({ preset: "tiny", shape: { headDim: 16, ropeDims: 8 } });
  await assert.rejects(
    () => loadModel(micro, { threads: 1, cacheTypeK: "q8_0" }),
    /a q8_0 K cache needs a head dim that is a multiple of 32; this model's is 16/,
  );
  await assert.rejects(() => loadModel(micro, { threads: 1, cacheTypeV: "q5_0" as never }), /unknown V cache type "q5_0"/);
  await assert.rejects(() => loadModel(micro, { threads: 1, contextLength: "all" as never }), /contextLength must be a positive integer or "max"/);
});

Deno.test("freeIdleMemory drops the state a closed session left for reuse; later sessions are unaffected", async () => {
  const model = await loadModel(await tiny(), { threads: 1, contextLength: 128 });
  try {
    const prompt = [5, 9, 13, 200, 7];
    const first = model.createSession();
    const expected = first.eval(prompt).slice();
    const second = model.createSession(); // a second state, beyond the one the model keeps
    first.dispose();
    model.freeIdleMemory();
    model.freeIdleMemory(); // nothing left to free: harmless
    assert.deepEqual(second.eval(prompt), expected);
    second.dispose();
    model.freeIdleMemory();
    const third = model.createSession(); // allocates its own, zeroed state
    assert.deepEqual(third.eval(prompt), expected);
  } finally {
    model.dispose();
  }
});
