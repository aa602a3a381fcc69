// The sampler against llama.cpp's own samplers (the pinned libllama, through FFI): the same seed,
// settings and logits must pick the same token at every step, penalties carried across steps.
// No model is needed: llama.cpp's samplers work on a bare llama_token_data_array.
import assert from "node:assert/strict";
import { LIBLLAMA, locateLlama } from "../../src/oracle/install.ts";
import { Sampler, type SamplerOptions } from "../../src/generate/sampler.ts";

const symbols = {
  llama_sampler_init_dist: { parameters: ["u32"], result: "pointer" },
  llama_sampler_init_top_k: { parameters: ["i32"], result: "pointer" },
  llama_sampler_init_top_p: { parameters: ["f32", "usize"], result: "pointer" },
  llama_sampler_init_min_p: { parameters: ["f32", "usize"], result: "pointer" },
  llama_sampler_init_temp_ext: { parameters: ["f32", "f32", "f32"], result: "pointer" },
  llama_sampler_init_penalties: { parameters: ["i32", "i32", "f32", "f32", "f32"], result: "pointer" },
  llama_sampler_init_logit_bias: { parameters: ["i32", "i32", "buffer"], result: "pointer" },
  llama_sampler_apply: { parameters: ["pointer", "buffer"], result: "void" },
  llama_sampler_accept: { parameters: ["pointer", "i32"], result: "void" },
  llama_sampler_free: { parameters: ["pointer"], result: "void" },
} as const;

/**
 * common_sampler's default chain (logit bias, penalties, top-k, top-p, min-p, temperature, dist;
 * the disabled DRY/typical/top-n-σ/XTC left out) run over each step's logits in turn.
 */
function llamaCppTokens(
  lib: Deno.DynamicLibrary<typeof symbols>["symbols"],
  s: Sampler,
  bias: Array<[number, number]>,
  steps: Float32Array[],
): number[] {
  const vocab = s.vocabSize;
  const chain: Deno.PointerValue[] = [];
  if (bias.length > 0) {
    const entries = new DataView(new ArrayBuffer(8 * bias.length)); // llama_logit_bias {i32 token; f32 bias}
    bias.forEach(([id, b], i) => {
      entries.setInt32(8 * i, id, true);
      entries.setFloat32(8 * i + 4, b, true);
    });
    chain.push(lib.llama_sampler_init_logit_bias(vocab, bias.length, new Uint8Array(entries.buffer)));
  }
  chain.push(
    lib.llama_sampler_init_penalties(
      vocab,
      s.penaltyLastN,
      s.repeatPenalty,
      s.frequencyPenalty,
      s.presencePenalty,
    ),
  );
  chain.push(lib.llama_sampler_init_top_k(s.topK));
  chain.push(lib.llama_sampler_init_top_p(s.topP, 0n));
  chain.push(lib.llama_sampler_init_min_p(s.minP, 0n));
  chain.push(lib.llama_sampler_init_temp_ext(s.temperature, 0, 1));
  chain.push(lib.llama_sampler_init_dist(s.seed));
  // llama_token_data {i32 id; f32 logit; f32 p}[vocab]; llama_token_data_array {data*, size, i64 selected, bool sorted}
  const data = new ArrayBuffer(12 * vocab);
  const ids = new Int32Array(data);
  const floats = new Float32Array(data);
  const header = new DataView(new ArrayBuffer(32));
  const tokens: number[] = [];
  try {
    for (const logits of steps) {
      for (let i = 0; i < vocab; i++) {
        ids[3 * i] = i;
        floats[3 * i + 1] = logits[i];
        floats[3 * i + 2] = 0;
      }
      header.setBigUint64(0, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(data))), true);
      header.setBigUint64(8, BigInt(vocab), true);
      header.setBigInt64(16, -1n, true);
      header.setUint8(24, 0);
      const headerBytes = new Uint8Array(header.buffer);
      for (const sampler of chain) lib.llama_sampler_apply(sampler, headerBytes);
      const selected = Number(header.getBigInt64(16, true));
      // Samplers may point `data` elsewhere (top-p copies into its own buffer), so read through it.
      const view = new Deno.UnsafePointerView(Deno.UnsafePointer.create(header.getBigUint64(0, true))!);
      const token = view.getInt32(12 * selected);
      for (const sampler of chain) lib.llama_sampler_accept(sampler, token);
      tokens.push(token);
    }
  } finally {
    for (const sampler of chain) lib.llama_sampler_free(sampler);
  }
  return tokens;
}

/** Logits shaped like a model's: a broad background and a few dozen strong candidates. */
function makeSteps(vocab: number, count: number, flat: boolean, seed: number): Float32Array[] {
  let state = seed;
  const rand = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32 + 1e-12;
  const gauss = () => Math.sqrt(-2 * Math.log(rand())) * Math.cos(2 * Math.PI * rand());
  return Array.from({ length: count }, () => {
    const l = Float32Array.from({ length: vocab }, () => gauss() * 2 - 4);
    if (!flat) { for (let j = 0; j < 30; j++) l[Math.floor(rand() * 60)] += 6 + gauss() * 2; }
    return l;
  });
}

Deno.test("sampler picks the same tokens as llama.cpp's sampler chain, seed for seed", () => {
  const lib = Deno.dlopen(`${locateLlama()}/${LIBLLAMA}`, symbols);
  try {
    const configs: Array<{ name: string; vocab: number; flat?: boolean; options: SamplerOptions }> = [
      { name: "llama.cpp defaults", vocab: 248_320, options: {} },
      {
        name: "Qwen thinking preset",
        vocab: 50_000,
        options: { temperature: 0.6, topK: 20, topP: 0.95, minP: 0 },
      },
      {
        name: "top-p alone (unsorted, >256 needed)",
        vocab: 50_000,
        flat: true,
        options: { topK: 0, topP: 0.5, minP: 0, temperature: 1 },
      },
      { name: "top-p alone, peaked", vocab: 50_000, options: { topK: 0, topP: 0.9, minP: 0 } },
      { name: "min-p alone (unsorted)", vocab: 50_000, options: { topK: 0, topP: 1, minP: 0.05 } },
      {
        name: "no filters, hot",
        vocab: 50_000,
        flat: true,
        options: { topK: 0, topP: 1, minP: 0, temperature: 1.5 },
      },
      {
        name: "penalties and bias",
        vocab: 50_000,
        options: {
          repeatPenalty: 1.3,
          frequencyPenalty: 0.2,
          presencePenalty: 0.5,
          penaltyLastN: 16,
          topK: 20,
          topP: 0.8,
          minP: 0.02,
          temperature: 0.7,
          logitBias: { 3: -Infinity, 5: 2.5, 7: -1.25 },
        },
      },
    ];
    for (const { name, vocab, flat, options } of configs) {
      const steps = makeSteps(vocab, vocab > 100_000 ? 8 : 25, flat ?? false, vocab + 17);
      for (const seed of [1, 3735928559]) {
        const ours = new Sampler(vocab, { ...options, seed });
        const bias = Object.entries(options.logitBias ?? {}).map(([k, v]) =>
          [Number(k), v] as [number, number]
        );
        const expected = llamaCppTokens(lib.symbols, ours, bias, steps);
        const got = steps.map((l) => ours.sample(l));
        assert.deepEqual(got, expected, `${name}, seed ${seed}`);
        assert.ok(new Set(got).size > 3, `${name}: the steps should not all pick the same few tokens`);
      }
    }
  } finally {
    lib.close();
  }
});
