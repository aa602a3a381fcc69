/**
 * Several sessions decoded in one forward pass give each exactly (bit for bit) the logits and state
 * of decoding it alone, also off the JS thread; a session resumed from another's recurrent state
 * and KV rows continues exactly like it.
 */
import assert from "node:assert/strict";
import { loadModel } from "../../mod.ts";
import { Session } from "../../src/model/session.ts";
import { testModel } from "../models.ts";

Deno.test("Session.decode: one pass for several sessions equals each session alone, bit for bit", async () => {
  // tiny-moe: the sessions' tokens meet in the same experts' matmuls, each still as a lone token
  for (const [preset, quant] of [["tiny", undefined], ["tiny", "Q4_K_M"], ["tiny-moe", undefined], ["tiny-moe", "Q4_K_M"]] as const) {
    const model = await loadModel(await testModel({ preset, quant }), {
      threads: 2,
      contextLength: 128,
    });
    try {
      const prompts = [[1, 2, 3, 4, 5], [7, 8, 9], [10, 11, 12, 13, 14, 15, 16], [20, 21], [30, 31, 32]];
      const next = (i: number, step: number) => (step * 13 + prompts[i][0] * 5) % 1000;
      const alone = prompts.map((p, i) => {
        const s = model.createSession();
        s.eval(p);
        return Array.from({ length: 4 }, (_, step) => s.eval([next(i, step)]).slice());
      });
      const sessions = prompts.map((p) => {
        const s = model.createSession();
        s.eval(p);
        return s;
      });
      for (let step = 0; step < 4; step++) {
        const tokens = prompts.map((_, i) => next(i, step));
        const logits = step % 2
          ? await Session.decodeAsync(sessions, tokens)
          : Session.decode(sessions, tokens);
        logits.forEach((l, i) =>
          assert.deepEqual(l, alone[i][step], `${preset} ${quant ?? "F32"}: session ${i}, step ${step}`)
        );
      }
      assert.deepEqual(sessions.map((s) => s.position), prompts.map((p) => p.length + 4));
      assert.throws(() => Session.decode([sessions[0], sessions[0]], [1, 2]), /same session twice/);
      assert.throws(() => Session.decode(sessions.slice(0, 2), [1]), /2 sessions, 1 tokens/);
      assert.throws(() => Session.decode([sessions[0]], [5000]), /outside the vocabulary/);
    } finally {
      model.dispose();
    }
  }
});

Deno.test("Session.resume from recurrent state and KV rows continues exactly like the original", async () => {
  const model = await loadModel(await testModel({ preset: "tiny" }), { threads: 1, contextLength: 128 });
  try {
    const prompt = Array.from({ length: 30 }, (_, i) => (i * 17 + 3) % 1000);
    const a = model.createSession();
    a.eval(prompt.slice(0, 20));
    const recurrent = a.recurrentState();
    const kv = [{ from: 0, bytes: a.kvRows(0, 12) }, { from: 12, bytes: a.kvRows(12, 20) }];
    const want = a.eval(prompt.slice(20)).slice();

    const b = model.createSession();
    b.eval([999, 998]); // garbage the resume must overwrite
    b.resume(prompt.slice(0, 20), recurrent, 0, kv);
    assert.equal(b.position, 20);
    assert.deepEqual(b.eval(prompt.slice(20)), want);

    // rows the session already holds can be kept: here the first 12
    const c = model.createSession();
    c.eval(prompt.slice(0, 12));
    c.resume(prompt.slice(0, 20), recurrent, 12, kv.slice(1));
    assert.deepEqual(c.eval(prompt.slice(20)), want);

    assert.throws(() => c.resume(prompt.slice(0, 20), recurrent, 0, kv.slice(1)), /do not continue row 0/);
    assert.throws(
      () => c.resume(prompt.slice(0, 20), recurrent, 0, kv.slice(0, 1)),
      /\[12, 20\) are missing/,
    );
    assert.throws(
      () => c.resume(prompt.slice(0, 20), recurrent.subarray(1), 0, kv),
      /recurrent state's size/,
    );
    assert.throws(() => a.kvRows(0, 31), /not within the 30 evaluated positions/);
  } finally {
    model.dispose();
  }
});
