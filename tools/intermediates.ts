/**
 * Compares the intermediate tensors of a forward pass in llama.cpp and deltaq node by node
 * (src/oracle/intermediates.ts), to find where the two engines compute something different.
 *
 *   deno run -A tools/intermediates.ts MODEL.gguf [--tokens 8] [--stepwise] [--forced]
 *                                                 [--layers N] [--all]
 *
 * Per node: max|Δ|/max|ref|, the share of bit-identical elements, and for matmul inputs how many
 * activation codes (Q8_0/Q8_K integers, or F16/BF16-rounded values) and block scales differ — what
 * llama.cpp's CPU backend actually multiplies. Free-running by default (on quantized models the
 * first differing code shows where float noise turned into a real difference); `--forced` runs
 * every deltaq command on llama.cpp's inputs, which isolates each operation's own error.
 * `--stepwise` feeds the tokens one `eval` at a time to both engines; `--layers N` prints only
 * layers < N (and the head); without `--all`, bit-identical nodes are only counted.
 */
import { parseArgs } from "node:util";
import { compareCall, dumpLlama, dumpOurs, mergeCalls } from "../src/oracle/intermediates.ts";
import { freeMappings, loadWeights } from "../src/model/weights.ts";

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      tokens: { type: "string", default: "8" },
      stepwise: { type: "boolean", default: false },
      forced: { type: "boolean", default: false },
      layers: { type: "string" },
      all: { type: "boolean", default: false },
    },
  });
  const path = positionals[0];
  if (!path) {
    console.error(
      "usage: deno run -A tools/intermediates.ts MODEL.gguf [--tokens 8] [--stepwise] [--forced] [--layers N] [--all]",
    );
    Deno.exit(1);
  }
  const n = Number(values.tokens);
  const maxLayer = values.layers === undefined ? Infinity : Number(values.layers);
  const w = loadWeights(path);
  const V = w.config.nVocab;
  freeMappings(w);
  const tokens = Array.from({ length: n }, (_, i) => (i * 7919 + 13) % V);
  const batches = values.stepwise ? tokens.map((t) => [t]) : [tokens];
  const theirs = dumpLlama(path, batches);
  const ours = dumpOurs(path, batches, values.forced ? theirs.calls : null);
  const table = mergeCalls(ours.calls.map((c, i) => compareCall(c, theirs.calls[i])));
  let identical = 0;
  for (const r of table) {
    if (Number(r.name.match(/-(\d+)$/)?.[1] ?? -1) >= maxLayer) continue;
    if (!values.all && r.identical === 1) {
      identical++;
      continue;
    }
    const rel = Number.isNaN(r.rel) ? "(no llama.cpp node)" : r.rel.toExponential(2);
    const d = r.inputDiffers;
    const flips = d
      ? `  input codes differing ${d.codes}/${d.of}${d.blocks ? `, scales ${d.scales}/${d.blocks}` : ""}`
      : "";
    console.log(
      `${r.name.padEnd(26)} ${String(r.size).padStart(7)}  max|Δ|/max|ref| ${rel.padStart(9)}  identical ${
        (100 * r.identical).toFixed(1).padStart(5)
      }%${flips}`,
    );
  }
  if (identical) console.log(`(${identical} bit-identical tensors not shown; --all shows them)`);
  if (values.forced) Deno.exit(0); // the logits are llama.cpp's, copied in
  let worst = 0;
  for (let i = 0; i < ours.logits.length; i += V) {
    let md = 0, mx = 0;
    for (let j = 0; j < V; j++) {
      md = Math.max(md, Math.abs(ours.logits[i + j] - theirs.logits[i + j]));
      mx = Math.max(mx, Math.abs(theirs.logits[i + j]));
    }
    worst = Math.max(worst, md / mx);
  }
  console.log(`logits: worst max|Δ|/max|logit| ${worst.toExponential(2)} over ${n} positions`);
}
