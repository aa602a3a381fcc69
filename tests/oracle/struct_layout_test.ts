/**
 * The FFI struct layouts in src/oracle/llama.ts against the real llama.h of the pinned build.
 *
 * The expected offsets were printed once with offsetof() by a C program compiled against the
 * llama.cpp v0.4.0 headers (`zig cc -I include -I ggml/include`) and linked to the shipped
 * libllama.v0.4.0.so; the default values were printed by the same program from
 * llama_*_default_params(). Reading those defaults through our offsets checks the layout against
 * the binary itself, not just against our own arithmetic.
 */
import assert from "node:assert/strict";
import {
  BATCH,
  CONTEXT_PARAMS,
  defaultParams,
  MODEL_PARAMS,
  QUANTIZE_PARAMS,
} from "../../src/oracle/llama.ts";

Deno.test("struct sizes match sizeof() from llama.h", () => {
  assert.equal(MODEL_PARAMS.size, 80);
  assert.equal(CONTEXT_PARAMS.size, 160);
  assert.equal(QUANTIZE_PARAMS.size, 64);
  assert.equal(BATCH.size, 56);
});

Deno.test("llama_model_params offsets match offsetof()", () => {
  assert.deepEqual(MODEL_PARAMS.offsets, {
    devices: 0,
    tensor_buft_overrides: 8,
    n_gpu_layers: 16,
    split_mode: 20,
    load_mode: 24,
    lazy_mode: 28,
    main_gpu: 32,
    tensor_split: 40,
    progress_callback: 48,
    progress_callback_user_data: 56,
    kv_overrides: 64,
    vocab_only: 72,
    check_tensors: 73,
    use_extra_bufts: 74,
    no_host: 75,
    no_alloc: 76,
    load_mtp: 77,
  });
});

Deno.test("llama_context_params offsets match offsetof()", () => {
  const o = CONTEXT_PARAMS.offsets;
  const expected: Partial<Record<keyof typeof o, number>> = {
    n_ctx: 0,
    n_batch: 4,
    n_ubatch: 8,
    n_seq_max: 12,
    n_rs_seq: 16,
    n_outputs_max: 20,
    n_outputs_max_per_seq: 24,
    n_threads: 28,
    n_threads_batch: 32,
    ctx_type: 36,
    rope_scaling_type: 40,
    pooling_type: 44,
    attention_type: 48,
    flash_attn_type: 52,
    rope_freq_base: 56,
    yarn_orig_ctx: 80,
    defrag_thold: 84,
    cb_eval: 88,
    cb_eval_user_data: 96,
    type_k: 104,
    type_v: 108,
    abort_callback: 112,
    abort_callback_data: 120,
    embeddings: 128,
    offload_kqv: 129,
    no_perf: 130,
    op_offload: 131,
    swa_full: 132,
    kv_unified: 133,
    samplers: 136,
    n_samplers: 144,
    ctx_other: 152,
  };
  for (const [field, offset] of Object.entries(expected)) {
    assert.equal(o[field as keyof typeof o], offset, field);
  }
});

Deno.test("llama_model_quantize_params and llama_batch offsets match offsetof()", () => {
  assert.deepEqual(QUANTIZE_PARAMS.offsets, {
    nthread: 0,
    ftype: 4,
    output_tensor_type: 8,
    token_embedding_type: 12,
    allow_requantize: 16,
    quantize_output_tensor: 17,
    only_copy: 18,
    pure: 19,
    keep_split: 20,
    dry_run: 21,
    imatrix: 24,
    kv_overrides: 32,
    tt_overrides: 40,
    prune_layers: 48,
    max_buf_size: 56,
  });
  assert.deepEqual(BATCH.offsets, {
    n_tokens: 0,
    token: 8,
    embd: 16,
    pos: 24,
    n_seq_id: 32,
    seq_id: 40,
    logits: 48,
  });
});

Deno.test("defaults read through these offsets match what the C program printed", () => {
  const { model, context, quantize } = defaultParams();
  const m = (f: Parameters<typeof MODEL_PARAMS.get>[1]) => MODEL_PARAMS.get(model, f);
  assert.equal(m("n_gpu_layers"), -1);
  assert.equal(m("split_mode"), 1);
  assert.equal(m("load_mode"), -1);
  assert.equal(m("lazy_mode"), 1);
  assert.equal(m("vocab_only"), false);
  assert.equal(m("use_extra_bufts"), true);
  assert.equal(m("load_mtp"), false);

  const c = (f: Parameters<typeof CONTEXT_PARAMS.get>[1]) => CONTEXT_PARAMS.get(context, f);
  assert.equal(c("n_ctx"), 512);
  assert.equal(c("n_batch"), 2048);
  assert.equal(c("n_ubatch"), 512);
  assert.equal(c("n_seq_max"), 1);
  assert.equal(c("n_outputs_max_per_seq"), 1);
  assert.equal(c("n_threads"), 4);
  assert.equal(c("flash_attn_type"), -1); // AUTO
  assert.equal(c("rope_scaling_type"), -1);
  assert.equal(c("yarn_ext_factor"), -1);
  assert.equal(c("defrag_thold"), -1);
  assert.equal(c("type_k"), 1); // GGML_TYPE_F16
  assert.equal(c("type_v"), 1);
  assert.equal(c("offload_kqv"), true);
  assert.equal(c("no_perf"), true);
  assert.equal(c("swa_full"), true);
  assert.equal(c("kv_unified"), false);
  assert.equal(c("n_samplers"), 0n);

  const q = (f: Parameters<typeof QUANTIZE_PARAMS.get>[1]) => QUANTIZE_PARAMS.get(quantize, f);
  assert.equal(q("nthread"), 0);
  assert.equal(q("ftype"), 7); // LLAMA_FTYPE_MOSTLY_Q8_0
  assert.equal(q("output_tensor_type"), 43); // GGML_TYPE_COUNT = "not set"
  assert.equal(q("quantize_output_tensor"), true);
  assert.equal(q("pure"), false);
  assert.equal(q("max_buf_size"), 8n << 30n);
});
