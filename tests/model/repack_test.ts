/**
 * Loading copies the Q4_K matrices into the kernels' 8-row layout and gives back the mapped
 * originals' pages, so a model occupies about its file's size, not file + copies. (That the copies
 * compute the same products is the parity tests' job: every Q4_K_M model they load is repacked.)
 */
import assert from "node:assert/strict";
import { loadModel } from "../../mod.ts";
import { freeMappings, loadWeights } from "../../src/model/weights.ts";
import { allocate, Context, repackBytes } from "../../src/native/kernels.ts";
import { testModel } from "../models.ts";

const Q4_K = 12;
const PAGE = 4096;

/**
 * Resident bytes of this process's mapping of `path`, from /proc/self/smaps: the sum over its
 * pieces, since repacking turns each original's pages into a hole of their own.
 */
function mappedRss(path: string): number {
  let total = 0, pieces = 0, inFile = false;
  for (const line of Deno.readTextFileSync("/proc/self/smaps").split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      inFile = line.endsWith(path);
      pieces += inFile ? 1 : 0;
    } else if (inFile) {
      const rss = /^Rss:\s+(\d+) kB/.exec(line);
      if (rss) total += Number(rss[1]) * 1024;
    }
  }
  assert.ok(pieces > 0, `${path} is not mapped`);
  return total;
}

Deno.test("loading repacks Q4_K matrices and releases their mapped pages", async () => {
  const path = await testModel({ preset: "tiny", quant: "Q4_K_M" });
  const fileSize = Deno.statSync(path).size;
  const model = await loadModel(path, { threads: 1 });
  try {
    let repackable = 0, tensors = 0;
    for (const t of model.weights.gguf.tensors) {
      const rows = t.shape.slice(1).reduce((a, b) => a * b, 1);
      if (t.type !== Q4_K || t.name === "token_embd.weight" || rows % 8 !== 0) continue;
      repackable += (t.shape[0] / 256) * 144 * rows;
      tensors++;
    }
    assert.ok(repackable > fileSize / 3, `only ${repackable} of ${fileSize} bytes are repackable Q4_K`);
    // Each tensor may keep its partial first and last page.
    const bound = fileSize - repackable + 2 * PAGE * tensors;
    const rss = mappedRss(path);
    assert.ok(rss <= bound, `the mapping keeps ${rss} bytes resident; at most ${bound} expected`);

    const session = model.createSession();
    const logits = session.eval([1, 2, 3]);
    assert.ok(logits.every(Number.isFinite));
    assert.ok(mappedRss(path) <= bound, "evaluating read the released pages again");
  } finally {
    model.dispose();
  }
});

Deno.test("repacking gives up the mapped original: its id is freed", async () => {
  const path = await testModel({ preset: "tiny", quant: "Q4_K_M" });
  const w = loadWeights(path);
  const ctx = new Context(1);
  try {
    const layer = w.layers.find((l) => l.ffn.kind === "dense" && repackBytes(l.ffn.gate) > 0);
    assert.ok(layer?.ffn.kind === "dense", "the tiny Q4_K_M model has no repackable ffn_gate");
    const original = layer.ffn.gate;
    const buffer = allocate(repackBytes(original));
    const copy = ctx.repack(original, buffer, 0);
    assert.equal(repackBytes(copy), 0, "a repacked copy cannot be repacked again");
    assert.equal(repackBytes(original), 0, "the original's id is still valid");
    assert.throws(() => ctx.repack(original, buffer, 0), /was freed or never existed/);
    buffer.free();
  } finally {
    ctx.free();
    freeMappings(w);
  }
});
