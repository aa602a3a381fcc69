/**
 * Structured-output benchmark: what masking the vocabulary costs per sampled token, next to a
 * decode step. For each schema, generations driven by random logits (seeded) run under
 * `jsonConstraint` until the document ends; every `mask` call is timed.
 *
 *   deno run -A bench/constraint.ts [--vocab path.gguf] [--runs 5]
 *
 * Default vocabulary: the real 248,320-row Qwen3.5 one (shared fixture qwen35-real-vocab.gguf).
 * Prints the one-time index build, then per schema the number of masks and their median, p90, p99
 * and maximum in ms, and the share of masks served from the per-state cache.
 */
import { parseArgs } from "node:util";
import { jsonConstraint, prepareConstraints } from "../src/generate/constraint.ts";
import { loadTokenizer } from "../src/tokenizer/tokenizer.ts";
import { fixture } from "../tests/fixtures.ts";

const { values } = parseArgs({ options: { vocab: { type: "string" }, runs: { type: "string", default: "5" } } });
const realVocab = fixture("qwen35-real-vocab.gguf");
if (!values.vocab && realVocab.skip) throw new Error(`${realVocab.skip}; pass --vocab FILE`);
const vocabPath = values.vocab ?? realVocab.path!;
const runs = Number(values.runs);

const SCHEMAS: Record<string, unknown> = {
  json_object: undefined,
  person: {
    type: "object",
    properties: {
      name: { type: "string" },
      age: { type: "integer", minimum: 0, maximum: 150 },
      email: { type: "string", format: "email" },
      tags: { type: "array", items: { type: "string", maxLength: 12 }, maxItems: 4 },
      address: {
        type: "object",
        properties: { city: { type: "string" }, zip: { type: ["string", "null"] } },
        required: ["city", "zip"],
      },
    },
    required: ["name", "age", "tags", "address"],
    additionalProperties: false,
  },
  enum_heavy: {
    type: "array",
    items: { enum: ["red", "green", "blue", 1, 2, 3, null, true] },
    minItems: 3,
    maxItems: 12,
  },
};

let t = performance.now();
const tokenizer = loadTokenizer(vocabPath);
console.log(`vocabulary: ${vocabPath} (${tokenizer.vocabSize} tokens), loaded in ${(performance.now() - t).toFixed(0)} ms`);
t = performance.now();
prepareConstraints(tokenizer);
console.log(`index build (once per tokenizer): ${(performance.now() - t).toFixed(0)} ms`);

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const logits = new Float32Array(tokenizer.vocabSize);
const eog = tokenizer.endOfGenerationIds;
console.log("\nschema        masks  median ms  p90 ms  p99 ms  max ms  tokens/doc");
for (const [name, schema] of Object.entries(SCHEMAS)) {
  const times: number[] = [];
  let tokens = 0;
  for (let run = 0; run < runs; run++) {
    const constraint = jsonConstraint(tokenizer, schema);
    let x = 0x9e3779b9 ^ (run + 1);
    for (let step = 0; step < 600; step++) {
      for (let j = 0; j < logits.length; j++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        logits[j] = (x >>> 0) / 2 ** 30;
      }
      const t0 = performance.now();
      constraint.mask(logits);
      times.push(performance.now() - t0);
      if (eog.some((id) => logits[id] > -Infinity) && step > 0) break; // the document may end: stop here
      let best = 0;
      for (let j = 1; j < logits.length; j++) if (logits[j] > logits[best]) best = j;
      constraint.accept(best);
      tokens++;
    }
  }
  times.sort((a, b) => a - b);
  const f = (v: number) => v.toFixed(2).padStart(7);
  console.log(
    `${name.padEnd(12)} ${String(times.length).padStart(6)}  ${f(quantile(times, 0.5))}   ${f(quantile(times, 0.9))} ${f(quantile(times, 0.99))} ${f(times.at(-1)!)}  ${(tokens / runs).toFixed(0).padStart(10)}`,
  );
}
