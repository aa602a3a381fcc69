/**
 * Writes a model's logits for a fixed token sequence (a 24-token prompt in one call, then 4
 * tokens one at a time) as raw little-endian f32 to OUT, so that runs on different CPUs, levels
 * (`DELTAQ_CPU`) or platforms can be compared bit for bit.
 *
 *   deno run -A tests/platform/logits_probe.ts MODEL OUT [MODEL OUT …]
 */
import { loadModel } from "../../mod.ts";

export const PROMPT = 24;
export const STEPS = 4;

if (import.meta.main) {
  for (let i = 0; i + 1 < Deno.args.length; i += 2) {
    const model = await loadModel(Deno.args[i], { threads: 2, contextLength: 64 });
    try {
      const V = model.info.nVocab;
      const tokens = Array.from({ length: PROMPT + STEPS }, (_, t) => (t * 7919 + 13) % V);
      const session = model.createSession();
      const out = new Float32Array((PROMPT + STEPS) * V);
      out.set(session.eval(tokens.slice(0, PROMPT), { allLogits: true }));
      for (let t = PROMPT; t < PROMPT + STEPS; t++) out.set(session.eval([tokens[t]]), t * V);
      Deno.writeFileSync(Deno.args[i + 1], new Uint8Array(out.buffer));
    } finally {
      model.dispose();
    }
  }
}
