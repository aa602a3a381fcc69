/**
 * Loading copies the Q4_K matrices into the kernels' 8-row layout (IQ3_S ones into 4-bit value
 * codes) and gives back the mapped originals' pages, so a model occupies about its file's size,
 * not file + copies. (That the copies compute the same products is the parity tests' job: every
 * Q4_K_M and IQ3_S model they load is repacked.)
 */
import assert from "node:assert/strict";
import { loadModel } from "../../mod.ts";
import { freeMappings, loadWeights } from "../../src/model/weights.ts";
import { allocate, Context, repackBytes } from "../../src/native/kernels.ts";
import { testModel } from "../models.ts";

const PAGE = 4096;
/**
 * The repackable types: GGML id, file type of a test model full of them, bytes per block in the
 * file and as repacked (IQ3_S's 4-bit codes take more).
 */
const REPACKED = [
  { name: "Q4_K", id: 12, quant: "Q4_K_M", blockBytes: 144, repackedBytes: 144 },
  { name: "IQ3_S", id: 21, quant: "IQ3_S", blockBytes: 110, repackedBytes: 134 },
] as const;

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

for (const type of REPACKED) {
  Deno.test(`loading repacks ${type.name} matrices and releases their mapped pages`, async () => {
    const path = await testModel({ preset: "tiny", quant: type.quant });
    const fileSize = Deno.statSync(path).size;
    const model = await loadModel(path, { threads: 1 });
    try {
      let repackable = 0, tensors = 0;
      for (const t of model.weights.gguf.tensors) {
        const rows = t.shape.slice(1).reduce((a, b) => a * b, 1);
        if (t.type !== type.id || t.name === "token_embd.weight" || rows % 8 !== 0) continue;
        repackable += (t.shape[0] / 256) * type.blockBytes * rows;
        tensors++;
      }
      assert.ok(repackable > fileSize / 3, `only ${repackable} of ${fileSize} bytes are repackable ${type.name}`);
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
}

Deno.test("repacking gives up the mapped original: its id is freed", async () => {
  for (const type of REPACKED) {
    const path = await testModel({ preset: "tiny", quant: type.quant });
    const w = loadWeights(path);
    const ctx = new Context(1);
    try {
      const i = w.layers.findIndex((l) => l.ffn.kind === "dense" && repackBytes(l.ffn.gate) > 0);
      const layer = w.layers[i];
      assert.ok(layer?.ffn.kind === "dense", `the tiny ${type.quant} model has no repackable ffn_gate`);
      const original = layer.ffn.gate;
      const [cols, rows] = w.gguf.tensors.find((t) => t.name === `blk.${i}.ffn_gate.weight`)!.shape;
      assert.equal(repackBytes(original), (cols / 256) * type.repackedBytes * rows);
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
  }
});
