/**
 * Synthetic qwen35 models as files: the tensor table the model loader expects (src/model/config.ts),
 * metadata stored with the types llama.cpp reads them as, a usable tokenizer, weight statistics
 * that match the recipe, and determinism (same seed → same bytes, another seed → other weights).
 * llama.cpp's view of these files is checked in llama_test.ts.
 */
import assert from "node:assert/strict";
import { Metadata, readGgufHeader } from "../../src/gguf/read.ts";
import { type GgufFile, GgufValueType } from "../../src/gguf/types.ts";
import { readConfig } from "../../src/model/config.ts";
import {
  bytesToUnicode,
  copiedVocab,
  isFullAttention,
  PRESETS,
  type Qwen35Shape,
  syntheticVocab,
  type SynthType,
  writeSyntheticQwen35,
} from "../../src/model/synth.ts";
import type { TypedValue } from "../../src/gguf/write.ts";
import { fixture } from "../fixtures.ts";

const dir = Deno.makeTempDirSync({ prefix: "deltaq-synth-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

async function write(name: string, shape: Qwen35Shape, type: SynthType, seed: number) {
  const path = `${dir}/${name}.gguf`;
  await writeSyntheticQwen35(path, { shape, type, seed });
  return { path, gguf: readGgufHeader(path), bytes: Deno.readFileSync(path) };
}

function tensorF32(g: GgufFile, bytes: Uint8Array, name: string): Float32Array {
  const t = g.tensors.find((t) => t.name === name);
  assert.ok(t, `tensor ${name} present`);
  assert.equal(t.type, 0, `${name} is F32`);
  return new Float32Array(bytes.slice(t.fileOffset, t.fileOffset + t.byteLength).buffer);
}

const T = GgufValueType;

Deno.test("tiny: metadata keys carry the types llama.cpp's loader demands", async () => {
  const { gguf } = await write("meta", PRESETS.tiny, "f32", 1);
  const type = (k: string) => gguf.metadataTypes.get(k);
  for (
    const k of [
      "context_length",
      "embedding_length",
      "block_count",
      "feed_forward_length",
      "attention.head_count",
      "attention.head_count_kv",
      "attention.key_length",
      "attention.value_length",
      "rope.dimension_count",
      "ssm.conv_kernel",
      "ssm.state_size",
      "ssm.group_count",
      "ssm.time_step_rank",
      "ssm.inner_size",
      "full_attention_interval",
    ]
  ) assert.equal(type(`qwen35.${k}`)?.type, T.UINT32, k);
  assert.equal(type("qwen35.attention.layer_norm_rms_epsilon")?.type, T.FLOAT32);
  assert.equal(type("qwen35.rope.freq_base")?.type, T.FLOAT32);
  assert.deepEqual(type("qwen35.rope.dimension_sections"), { type: T.ARRAY, arrayType: T.INT32 });
  assert.equal(gguf.metadata.get("general.architecture"), "qwen35");
  assert.equal(gguf.metadata.get("qwen35.rope.freq_base"), 1e7);
  assert.equal(Math.fround(1e-6), gguf.metadata.get("qwen35.attention.layer_norm_rms_epsilon"));
  // the sections sum to n_rot/2 like the real [11, 11, 10, 0]
  const sections = Array.from(gguf.metadata.get("qwen35.rope.dimension_sections") as Int32Array);
  assert.equal(sections.length, 4);
  assert.equal(sections.reduce((a, b) => a + b), PRESETS.tiny.ropeDims / 2);
  assert.deepEqual(type("tokenizer.ggml.tokens"), { type: T.ARRAY, arrayType: T.STRING });
  assert.deepEqual(type("tokenizer.ggml.token_type"), { type: T.ARRAY, arrayType: T.INT32 });
  assert.deepEqual(type("tokenizer.ggml.merges"), { type: T.ARRAY, arrayType: T.STRING });
  for (const k of ["eos_token_id", "bos_token_id", "padding_token_id"]) {
    assert.equal(type(`tokenizer.ggml.${k}`)?.type, T.UINT32);
  }
  assert.equal(type("tokenizer.ggml.add_bos_token")?.type, T.BOOL);
});

Deno.test("every preset and variant has exactly the tensors the model loader expects", async () => {
  const variants: [string, Qwen35Shape, SynthType][] = [
    ["tiny", PRESETS.tiny, "f32"],
    ["tiny-b", PRESETS["tiny-b"], "f16"],
    ["tiny-bf16-mtp", { ...PRESETS.tiny, mtpLayers: 1, explicitRecurrentLayers: true }, "bf16"],
  ];
  for (const [name, shape, type] of variants) {
    const { path, gguf } = await write(name, shape, type, 2);
    const cfg = readConfig(new Metadata(gguf, path), gguf.tensors, path); // throws on any missing or misshapen tensor
    assert.equal(cfg.nLayer, shape.layers, name);
    assert.equal(cfg.nLayerStored, shape.layers + shape.mtpLayers, name);
    assert.equal(cfg.nVocab, shape.vocabSize, name);
    assert.equal(cfg.tiedEmbeddings, shape.tiedOutput, name);
    assert.deepEqual(
      cfg.layerTypes,
      Array.from({ length: shape.layers }, (_, i) => isFullAttention(shape, i) ? "attention" : "deltanet"),
      name,
    );
    const matrixType = { f32: 0, f16: 1, bf16: 30 }[type];
    for (const t of gguf.tensors) {
      const f32 = t.shape.length === 1 || t.name.endsWith("ssm_conv1d.weight");
      assert.equal(t.type, f32 ? 0 : matrixType, `${name}: ${t.name} type`);
      assert.equal(t.offset % gguf.alignment, 0);
    }
    // Nothing beyond what llama.cpp's loader creates: it rejects files with unused tensors.
    const trunk = shape.layers * 5 + 3 - (shape.tiedOutput ? 1 : 0);
    const perLayer = Array.from({ length: shape.layers }, (_, i): number => isFullAttention(shape, i) ? 6 : 9)
      .reduce((a, b) => a + b, 0);
    const mtp = shape.mtpLayers * (5 + 6 + 4);
    assert.equal(gguf.tensors.length, trunk + perLayer + mtp, `${name}: tensor count`);
    if (shape.mtpLayers) {
      const b = `blk.${shape.layers}.`;
      for (
        const n of [
          "nextn.eh_proj.weight",
          "nextn.enorm.weight",
          "nextn.hnorm.weight",
          "nextn.shared_head_norm.weight",
          "attn_q.weight",
        ]
      ) {
        assert.ok(gguf.tensors.some((t) => t.name === b + n), `${name}: ${b + n}`);
      }
      assert.equal(gguf.metadata.get("qwen35.nextn_predict_layers"), 1);
      assert.equal(
        gguf.tensors.find((t) => t.name === `${b}nextn.eh_proj.weight`)!.shape.join(),
        `${2 * shape.embedding},${shape.embedding}`,
      );
    }
    if (shape.explicitRecurrentLayers) {
      const flags = Array.from(gguf.metadata.get("qwen35.attention.recurrent_layers") as ArrayLike<unknown>)
        .map(Boolean);
      assert.equal(flags.length, shape.layers + shape.mtpLayers, "one flag per stored block");
      assert.deepEqual(flags, flags.map((_, i) => !isFullAttention(shape, i)));
    }
  }
});

Deno.test("same seed gives the same bytes; another seed changes every tensor but not the header", async () => {
  const a = await write("seed7a", PRESETS.tiny, "f16", 7);
  const b = await write("seed7b", PRESETS.tiny, "f16", 7);
  const c = await write("seed8", PRESETS.tiny, "f16", 8);
  assert.deepEqual(a.bytes, b.bytes);
  assert.equal(a.bytes.length, c.bytes.length);
  assert.deepEqual(a.bytes.subarray(0, a.gguf.dataOffset), c.bytes.subarray(0, c.gguf.dataOffset));
  for (const t of a.gguf.tensors) {
    const x = a.bytes.subarray(t.fileOffset, t.fileOffset + t.byteLength);
    const y = c.bytes.subarray(t.fileOffset, t.fileOffset + t.byteLength);
    let same = 0;
    for (let i = 0; i < x.length; i++) if (x[i] === y[i]) same++;
    assert.ok(same < x.length * 0.6, `${t.name}: ${same}/${x.length} bytes unchanged by the seed`);
  }
});

Deno.test("F16 and BF16 files hold the F32 file's values rounded", async () => {
  const f32 = await write("r32", PRESETS["tiny-b"], "f32", 5);
  const f16 = await write("r16", PRESETS["tiny-b"], "f16", 5);
  const bf16 = await write("rbf16", PRESETS["tiny-b"], "bf16", 5);
  for (const name of ["token_embd.weight", "blk.0.attn_qkv.weight", "blk.3.attn_q.weight", "output.weight"]) {
    const t32 = f32.gguf.tensors.find((t) => t.name === name)!;
    const want = new Float32Array(f32.bytes.slice(t32.fileOffset, t32.fileOffset + t32.byteLength).buffer);
    const t16 = f16.gguf.tensors.find((t) => t.name === name)!;
    const half = new Float16Array(f16.bytes.slice(t16.fileOffset, t16.fileOffset + t16.byteLength).buffer);
    assert.deepEqual(half, Float16Array.from(want), `${name} F16`);
    const tb = bf16.gguf.tensors.find((t) => t.name === name)!;
    const bits = new Uint16Array(bf16.bytes.slice(tb.fileOffset, tb.fileOffset + tb.byteLength).buffer);
    for (let i = 0; i < want.length; i += 97) {
      const back = new Float32Array(new Uint32Array([bits[i] << 16]).buffer)[0];
      assert.ok(Math.abs(back - want[i]) <= Math.abs(want[i]) * 2 ** -8, `${name}[${i}] BF16`);
    }
  }
});

Deno.test("weights follow the recipe: scales, norms, negative ssm_a, k rows and conv taps ≈ q's", async () => {
  const shape = PRESETS.tiny;
  const { gguf, bytes } = await write("stats", shape, "f32", 3);
  const rms = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length);
  const E = shape.embedding;
  const embd = tensorF32(gguf, bytes, "token_embd.weight");
  assert.ok(Math.abs(rms(embd) * Math.sqrt(E) - 1) < 0.02, `token_embd RMS ${rms(embd)} ≈ 1/sqrt(E)`);
  for (const name of ["blk.0.attn_norm.weight", "blk.0.ssm_norm.weight", "blk.2.attn_q_norm.weight"]) {
    const v = tensorF32(gguf, bytes, name);
    assert.ok(v.every((x) => x >= 0.9 && x <= 1.1), `${name} within 1 ± 0.1`);
  }
  const outNorm = tensorF32(gguf, bytes, "output_norm.weight"); // tied: carries the logit spread
  assert.ok(outNorm.every((x) => x >= 1.35 && x <= 1.65)); // LOGIT_SPREAD 1.5 ± 10%
  const a = tensorF32(gguf, bytes, "blk.0.ssm_a");
  assert.ok(
    a.every((x) => x <= -Math.exp(-1.5) && x >= -Math.exp(0.5)),
    `ssm_a = -exp(A_log), A_log in [-1.5, 0.5]: ${a}`,
  );
  const dt = tensorF32(gguf, bytes, "blk.1.ssm_dt.bias");
  assert.ok(dt.every((x) => x >= -2 && x <= 0));

  const keyDim = shape.ssmKHeads * shape.ssmHeadDim;
  const qkv = tensorF32(gguf, bytes, "blk.0.attn_qkv.weight");
  const row = (m: Float32Array, n: number, r: number) => m.subarray(r * n, (r + 1) * n);
  const cos = (x: Float32Array, y: Float32Array) => {
    let xy = 0, xx = 0, yy = 0;
    for (let i = 0; i < x.length; i++) [xy, xx, yy] = [xy + x[i] * y[i], xx + x[i] * x[i], yy + y[i] * y[i]];
    return xy / Math.sqrt(xx * yy);
  };
  for (let r = 0; r < keyDim; r += 7) {
    assert.ok(cos(row(qkv, E, r), row(qkv, E, keyDim + r)) > 0.99, `k row ${r} follows q row`);
    assert.ok(Math.abs(cos(row(qkv, E, r), row(qkv, E, 2 * keyDim + r))) < 0.3, `v row ${r} is independent`);
  }
  const conv = tensorF32(gguf, bytes, "blk.0.ssm_conv1d.weight");
  const K = shape.convKernel;
  for (let c = 0; c < keyDim; c += 5) {
    const q = row(conv, K, c), k = row(conv, K, keyDim + c);
    assert.ok(q[K - 1] >= 0.6 && q[K - 1] <= 1.0, "current-token tap dominates");
    for (let j = 0; j < K; j++) {
      assert.ok(Math.abs(q[j] - k[j]) <= 0.03 + 1e-6, `conv tap ${c},${j}: k follows q`);
    }
  }
});

Deno.test("mixture of experts: qwen35moe keys and tensors; fused and split gate/up hold the same values", async () => {
  for (const preset of ["tiny-moe", "tiny-moe-b"] as const) {
    const shape = PRESETS[preset], m = shape.moe!;
    const { path, gguf } = await write(preset, shape, "f32", 4);
    assert.equal(gguf.metadata.get("general.architecture"), "qwen35moe");
    for (const [k, v] of Object.entries({
      expert_count: m.experts,
      expert_used_count: m.expertsUsed,
      expert_feed_forward_length: m.expertFeedForward,
      expert_shared_feed_forward_length: m.sharedFeedForward,
    })) {
      assert.equal(gguf.metadata.get(`qwen35moe.${k}`), v, k);
      assert.equal(gguf.metadataTypes.get(`qwen35moe.${k}`)?.type, T.UINT32, k);
    }
    assert.equal(gguf.metadata.get("qwen35moe.feed_forward_length"), shape.feedForward || undefined);
    const cfg = readConfig(new Metadata(gguf, path), gguf.tensors, path); // every tensor present and shaped
    assert.deepEqual(cfg.moe?.fusedGateUp, new Array(shape.layers).fill(m.fusedGateUp));
    // exactly what llama.cpp's qwen35moe loader creates: 3 + per layer 2 norms, the mixer's 6
    // or 9, router, down experts, 4 shared-expert tensors and 1 or 2 gate/up experts
    const perLayer = Array.from({ length: shape.layers }, (_, i) =>
      2 + (isFullAttention(shape, i) ? 6 : 9) + 1 + 1 + 4 + (m.fusedGateUp ? 1 : 2)
    ).reduce((a, b) => a + b, 0);
    assert.equal(gguf.tensors.length, 3 - (shape.tiedOutput ? 1 : 0) + perLayer, `${preset}: tensor count`);
    assert.equal(gguf.tensors.find((t) => t.name === "blk.0.ffn_gate_inp.weight")!.type, 0, "router is F32");
    assert.ok(!gguf.tensors.some((t) => /ffn_(gate|up|down)\.weight$/.test(t.name)), "no dense FFN");
  }
  // the same model with the other gate/up layout: fused rows e·2F.. are gate rows e·F.., then up rows
  const split = await write("moe-split", { ...PRESETS["tiny-moe"], moe: { ...PRESETS["tiny-moe"].moe!, fusedGateUp: false } }, "f32", 4);
  const fused = await write("tiny-moe", PRESETS["tiny-moe"], "f32", 4);
  const E = PRESETS["tiny-moe"].embedding, F = PRESETS["tiny-moe"].moe!.expertFeedForward;
  const gateUp = tensorF32(fused.gguf, fused.bytes, "blk.1.ffn_gate_up_exps.weight");
  const gate = tensorF32(split.gguf, split.bytes, "blk.1.ffn_gate_exps.weight");
  const up = tensorF32(split.gguf, split.bytes, "blk.1.ffn_up_exps.weight");
  for (const e of [0, 5]) {
    assert.deepEqual(gateUp.subarray(2 * e * F * E, (2 * e + 1) * F * E), gate.subarray(e * F * E, (e + 1) * F * E));
    assert.deepEqual(gateUp.subarray((2 * e + 1) * F * E, (2 * e + 2) * F * E), up.subarray(e * F * E, (e + 1) * F * E));
  }
});

Deno.test("mixture of experts: the router's k-th and (k+1)-th choices are never close", async () => {
  // The router is built so that engines differing by rounding noise pick the same experts
  // (synth.ts, "Routing without near-ties"): measured on deltaq's own router logits for a prompt.
  const { dumpOurs } = await import("../../src/oracle/intermediates.ts");
  for (const preset of ["tiny-moe", "tiny-moe-b"] as const) {
    const shape = PRESETS[preset], k = shape.moe!.expertsUsed;
    const { path } = await write(`${preset}-route`, shape, "f32", 1);
    const tokens = Array.from({ length: 72 }, (_, i) => (i * 7919 + 13) % shape.vocabSize);
    const [call] = dumpOurs(path, [tokens], null).calls;
    let gap = Infinity, layers = 0;
    const chosen = new Set<number>();
    for (const t of call.filter((t) => t.name.startsWith("ffn_moe_logits-"))) {
      layers++;
      const X = t.values.length / tokens.length;
      for (let p = 0; p < tokens.length; p++) {
        const z = Array.from(t.values.subarray(p * X, (p + 1) * X), (v, e) => [v, e]).sort((a, b) => b[0] - a[0]);
        gap = Math.min(gap, z[k - 1][0] - z[k][0]);
        for (const [, e] of z.slice(0, k)) chosen.add(e);
      }
    }
    assert.equal(layers, shape.layers);
    // rounding noise between engines is ~1e-6 (F32) to ~1e-2 (quantized) of a logit
    assert.ok(gap > 1, `${preset}: smallest gap ${gap}`);
    assert.equal(chosen.size, shape.moe!.experts, `${preset}: every expert is chosen by some token`);
  }
});

Deno.test("synthetic vocab: byte symbols, learned merges, Qwen specials, unused padding", () => {
  const size = 1000;
  const vocab = syntheticVocab(size);
  const value = (k: string) => (vocab.get(k) as TypedValue).value;
  const tokens = value("tokenizer.ggml.tokens") as string[];
  const types = value("tokenizer.ggml.token_type") as Int32Array;
  const merges = value("tokenizer.ggml.merges") as string[];
  assert.equal(vocab.get("tokenizer.ggml.model"), "gpt2");
  assert.equal(vocab.get("tokenizer.ggml.pre"), "qwen35");
  assert.equal(tokens.length, size);
  assert.equal(types.length, size);
  assert.equal(new Set(tokens).size, size, "token texts are unique (llama.cpp asserts this)");
  const ids = new Map(tokens.map((t, i) => [t, i]));
  for (const sym of bytesToUnicode()) {
    assert.equal(types[ids.get(sym)!], 1, "every byte symbol is a normal token");
  }
  assert.ok(merges.length >= 400, `${merges.length} merges learned`);
  for (const m of merges) {
    const [x, y] = m.split(" ");
    assert.ok(
      ids.has(x) && ids.has(y) && ids.has(x + y),
      `merge "${m}" joins known tokens into a known token`,
    );
  }
  const eos = value("tokenizer.ggml.eos_token_id") as number;
  assert.equal(tokens[eos], "<|im_end|>");
  assert.equal(tokens[value("tokenizer.ggml.padding_token_id") as number], "<|endoftext|>");
  for (
    const [text, type] of [["<|im_start|>", 3], ["<|im_end|>", 3], ["<|endoftext|>", 3], ["<think>", 4], [
      "</think>",
      4,
    ]] as const
  ) {
    assert.equal(types[ids.get(text)!], type, text);
  }
  const pads = tokens.map((t, i) => [t, i] as const).filter(([t]) => t.startsWith("[PAD"));
  assert.ok(pads.length > 0 && pads.every(([t, i]) => t === `[PAD${i}]` && types[i] === 5));
  assert.throws(() => syntheticVocab(200), /at least 261 tokens/);
});

const vocabFixture = fixture("ggml-vocab-qwen35.gguf");
Deno.test({
  name: "a copied vocab keeps every tokenizer key and its type, padded to the model's rows",
  ignore: vocabFixture.skip !== undefined,
  fn() {
    const path = vocabFixture.path!;
    const source = readGgufHeader(path);
    const n = (source.metadata.get("tokenizer.ggml.tokens") as string[]).length;
    const copied = copiedVocab(path, n + 100);
    const keys = [...source.metadata.keys()].filter((k) => k.startsWith("tokenizer."));
    assert.deepEqual([...copied.keys()].sort(), keys.sort());
    for (const k of keys) {
      const v = copied.get(k) as TypedValue;
      const t = source.metadataTypes.get(k)!;
      assert.equal(v.type, t.type, k);
      assert.equal(v.arrayType, t.arrayType, k);
    }
    const tokens = (copied.get("tokenizer.ggml.tokens") as TypedValue).value as string[];
    const types = (copied.get("tokenizer.ggml.token_type") as TypedValue).value as Int32Array;
    assert.equal(tokens.length, n + 100);
    assert.equal(types.length, n + 100);
    assert.deepEqual(tokens.slice(0, n), source.metadata.get("tokenizer.ggml.tokens"));
    assert.equal(tokens[n + 3], `[PAD${n + 3}]`);
    assert.equal(types[n + 3], 5);
    assert.throws(() => copiedVocab(path, n - 1), /more than the model's vocab size/);
  },
});
if (vocabFixture.skip) console.warn(`synth_test: copied-vocab test skipped: ${vocabFixture.skip}`);
