/**
 * Node-by-node parity with llama.cpp: every operation of deltaq's forward pass, run on exactly
 * llama.cpp's inputs for it (teacher forcing, src/oracle/intermediates.ts), must reproduce
 * llama.cpp's result for the same graph node to float noise — on the two synthetic shapes and the
 * two mixture-of-experts shapes in every file type the logit parity test uses, for a 72-token
 * prompt in one call and for tokens fed one at a time. (The experts each token picks are not a
 * node llama.cpp reports as floats; a different pick shows as a mismatch of the expert nodes.)
 *
 * Why this exists next to the logit test: on quantized models the two engines' logits cannot
 * agree to better than the noise of activation quantization. A ~1e-7 float difference sooner or
 * later moves one activation across a rounding boundary of its Q8_0/Q8_K code, which changes that
 * matmul's output by ~1e-4 and flips more codes downstream, until the two engines' quantization
 * noise is uncorrelated; llama.cpp against itself (prompt vs token by token, or flash attention on
 * vs off) diverges just as much. Forcing the inputs removes that cascade, so here a wrong scale,
 * rounding mode, head mapping or RoPE angle shows up as what it is, 100× below where the logit
 * comparison could see it.
 *
 * Pass mark: max|Δ| ≤ 1e-5 · max|llama.cpp| for every node (measured: ≤ 5e-7). One exception,
 * llama.cpp's own: for a single token its CPU flash attention rounds the query to F16 and
 * accumulates V·softmax in an F16 vector (prompts of ≥ 64 tokens take an F32 path), so its decode
 * attention output (`attn_pregate`) is only F16-accurate: ≤ 5e-3 there (measured: ≤ 1.7e-3).
 */
import assert from "node:assert/strict";
import {
  compareCall,
  type Comparison,
  dumpLlama,
  dumpOurs,
  mergeCalls,
} from "../../src/oracle/intermediates.ts";
import type { QuantizeOptions } from "../../src/oracle/llama.ts";
import { testModel } from "../models.ts";
import { type FileType, MOE_SHAPES, MOE_TYPES, PRESET_TYPES, SHAPES } from "./cases.ts";

const PROMPT = 72;
const STEPS = 8;
const NODE_TOLERANCE = 1e-5;
const DECODE_ATTENTION_TOLERANCE = 5e-3;

/** The presets, and the grid-based IQ mixes (made with a synthetic importance matrix). */
const TYPES: FileType[] = [...PRESET_TYPES, "IQ3_S", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_M", "IQ1_S", "IQ1_M"];

function check(table: Comparison[], what: string, tolerance: (node: string) => number): void {
  assert.ok(table.length > 0, `${what}: no nodes compared`);
  let worst = table[0];
  for (const c of table) {
    assert.ok(!Number.isNaN(c.rel), `${what}: llama.cpp has no node ${c.name} of ${c.size} values`);
    assert.ok(
      c.rel <= tolerance(c.name),
      `${what}: ${c.name} differs by ${c.rel.toExponential(2)} of its largest value`,
    );
    if (c.rel / tolerance(c.name) > worst.rel / tolerance(worst.name)) worst = c;
  }
  if (Deno.env.get("PARITY_VERBOSE")) {
    console.log(
      `${what}: ${table.length} nodes, worst (relative to its mark) ${worst.name} ${
        worst.rel.toExponential(2)
      }`,
    );
  }
}

/** One node-by-node case: a cached test model of `type` (made with `quantOptions`). */
function nodeCase(type: FileType, shape: string, quantOptions?: QuantizeOptions, label: string = type): void {
  Deno.test(`node-by-node parity with llama.cpp: ${shape} ${label}, prompt and token by token`, async () => {
    const path = await testModel({ preset: shape, quant: type === "F32" ? undefined : type, quantOptions });
    const tokens = Array.from({ length: PROMPT }, (_, i) => (i * 7919 + 13) % 1000);

    const prompt = dumpLlama(path, [tokens]);
    const ours = dumpOurs(path, [tokens], prompt.calls);
    check(compareCall(ours.calls[0], prompt.calls[0]), `${shape} ${type} prompt`, () => NODE_TOLERANCE);

    const steps = tokens.slice(0, STEPS).map((t) => [t]);
    const stepwise = dumpLlama(path, steps);
    const oursStepwise = dumpOurs(path, steps, stepwise.calls);
    const table = mergeCalls(oursStepwise.calls.map((c, i) => compareCall(c, stepwise.calls[i])));
    check(
      table,
      `${shape} ${type} token by token`,
      (node) => node.startsWith("attn_pregate-") ? DECODE_ATTENTION_TOLERANCE : NODE_TOLERANCE,
    );
  });
}

for (const shape of SHAPES) {
  for (const type of TYPES) nodeCase(type, shape);
  nodeCase("MXFP4_MOE", shape, { pure: true }, "MXFP4 pure");
}

for (const shape of MOE_SHAPES) {
  for (const type of MOE_TYPES) nodeCase(type, shape);
}
