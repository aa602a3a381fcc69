/**
 * Loading copies the Q4_K matrices into the kernels' 8-row layout and gives back the mapped
 * originals' pages, so a model occupies about its file's size, not file + copies. (That the copies
 * compute the same products is the parity tests' job: every Q4_K_M model they load is repacked.)
 */
import assert from "node:assert/strict";
import { loadModel } from "../../mod.ts";
import { testModel } from "../models.ts";

const Q4_K = 12;
const PAGE = 4096;

/** Resident bytes of this process's mapping of `path`, from /proc/self/smaps. */
function mappedRss(path: string): number {
  const smaps = Deno.readTextFileSync("/proc/self/smaps");
  const at = smaps.indexOf(path);
  assert.ok(at >= 0, `${path} is not mapped`);
  const rss = smaps.slice(at).match(/\nRss:\s+(\d+) kB/);
  assert.ok(rss, "no Rss line after the mapping");
  return Number(rss[1]) * 1024;
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
