/**
 * The llama.cpp reference ("oracle"): a thin Deno FFI binding to the pinned llama.cpp build
 * (./install.ts), used by parity tests, tokenizer tests and benchmarks to know what the right
 * answer is. Not part of deltaq's inference path.
 *
 * Configuration the reference runs with (llama.cpp defaults unless an option says otherwise):
 * - CPU backend only: `ggml_backend_load_all_from_path(<bins dir>)` picks the best
 *   libggml-cpu-<arch>.so for this CPU (haswell on an AVX2+FMA+F16C machine without AVX-512).
 *   Extra buffer types (weight repacks, AMX) are on unless `extraBufferTypes: false`.
 * - KV cache in F16 (`type_k` = `type_v` = GGML_TYPE_F16, the context default) unless
 *   `cacheTypeK`/`cacheTypeV` say Q8_0 or Q4_0; recurrent (Gated DeltaNet) state in F32.
 * - `flash_attn_type` = AUTO by default, which llama.cpp resolves to *enabled* on the CPU backend
 *   (its probe finds the CPU supports FLASH_ATTN_EXT); `flashAttention: false` forces the plain
 *   softmax path, `true` forces it on.
 * - one sequence (`n_seq_max` = 1), `n_ubatch` = `n_batch` = `batchSize`, and the context length
 *   rounded up to a multiple of 256 by llama.cpp (`nCtx` reports the real value).
 * - matmul activations are quantized to the weight type's dot partner (see the spec §4).
 *
 * Logging: llama.cpp's log goes through a callback that prints errors only (to stderr); set
 * `DELTAQ_LLAMA_LOG=all` (or call `setLlamaLog("all")`) to see everything, `none` for silence.
 */
import { DeltaqError } from "../errors.ts";
import { performanceCores } from "../native/kernels.ts";
import { CStruct } from "./cstruct.ts";
import { LIBGGML, LIBLLAMA, locateLlama } from "./install.ts";
import { isFile } from "../util/fs.ts";
import { readGgufHeader } from "../gguf/read.ts";
import { GGML_TYPES } from "../gguf/types.ts";
import { logitsOutput } from "../util/logits.ts";

// ---- struct layouts (llama.h of llama.cpp v0.4.0, as shipped in @node-llama-cpp/linux-x64@3.21.1).
// The offsets these produce are checked against offsetof() from the real header in
// tests/oracle/struct_layout_test.ts.

export const MODEL_PARAMS = new CStruct(
  "llama_model_params",
  [
    ["devices", "pointer"],
    ["tensor_buft_overrides", "pointer"],
    ["n_gpu_layers", "i32"],
    ["split_mode", "i32"],
    ["load_mode", "i32"],
    ["lazy_mode", "i32"],
    ["main_gpu", "i32"],
    ["tensor_split", "pointer"],
    ["progress_callback", "pointer"],
    ["progress_callback_user_data", "pointer"],
    ["kv_overrides", "pointer"],
    ["vocab_only", "bool"],
    ["check_tensors", "bool"],
    ["use_extra_bufts", "bool"],
    ["no_host", "bool"],
    ["no_alloc", "bool"],
    ["load_mtp", "bool"],
  ] as const,
);

export const CONTEXT_PARAMS = new CStruct(
  "llama_context_params",
  [
    ["n_ctx", "u32"],
    ["n_batch", "u32"],
    ["n_ubatch", "u32"],
    ["n_seq_max", "u32"],
    ["n_rs_seq", "u32"],
    ["n_outputs_max", "u32"],
    ["n_outputs_max_per_seq", "u32"],
    ["n_threads", "i32"],
    ["n_threads_batch", "i32"],
    ["ctx_type", "i32"],
    ["rope_scaling_type", "i32"],
    ["pooling_type", "i32"],
    ["attention_type", "i32"],
    ["flash_attn_type", "i32"],
    ["rope_freq_base", "f32"],
    ["rope_freq_scale", "f32"],
    ["yarn_ext_factor", "f32"],
    ["yarn_attn_factor", "f32"],
    ["yarn_beta_fast", "f32"],
    ["yarn_beta_slow", "f32"],
    ["yarn_orig_ctx", "u32"],
    ["defrag_thold", "f32"],
    ["cb_eval", "pointer"],
    ["cb_eval_user_data", "pointer"],
    ["type_k", "i32"],
    ["type_v", "i32"],
    ["abort_callback", "pointer"],
    ["abort_callback_data", "pointer"],
    ["embeddings", "bool"],
    ["offload_kqv", "bool"],
    ["no_perf", "bool"],
    ["op_offload", "bool"],
    ["swa_full", "bool"],
    ["kv_unified", "bool"],
    ["samplers", "pointer"],
    ["n_samplers", "usize"],
    ["ctx_other", "pointer"],
  ] as const,
);

export const QUANTIZE_PARAMS = new CStruct(
  "llama_model_quantize_params",
  [
    ["nthread", "i32"],
    ["ftype", "i32"],
    ["output_tensor_type", "i32"],
    ["token_embedding_type", "i32"],
    ["allow_requantize", "bool"],
    ["quantize_output_tensor", "bool"],
    ["only_copy", "bool"],
    ["pure", "bool"],
    ["keep_split", "bool"],
    ["dry_run", "bool"],
    ["imatrix", "pointer"],
    ["kv_overrides", "pointer"],
    ["tt_overrides", "pointer"],
    ["prune_layers", "pointer"],
    ["max_buf_size", "usize"],
  ] as const,
);

export const BATCH = new CStruct(
  "llama_batch",
  [
    ["n_tokens", "i32"],
    ["token", "pointer"],
    ["embd", "pointer"],
    ["pos", "pointer"],
    ["n_seq_id", "pointer"],
    ["seq_id", "pointer"],
    ["logits", "pointer"],
  ] as const,
);

/** `enum llama_ftype`: the file types `llama_model_quantize` makes (llama.h of the pinned build). */
export const LLAMA_FTYPE = {
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q8_0: 7,
  Q5_0: 8,
  Q5_1: 9,
  Q2_K: 10,
  Q3_K_S: 11,
  Q3_K_M: 12,
  Q3_K_L: 13,
  Q4_K_S: 14,
  Q4_K_M: 15,
  Q5_K_S: 16,
  Q5_K_M: 17,
  Q6_K: 18,
  IQ2_XXS: 19,
  IQ2_XS: 20,
  Q2_K_S: 21,
  IQ3_XS: 22,
  IQ3_XXS: 23,
  IQ1_S: 24,
  IQ4_NL: 25,
  IQ3_S: 26,
  IQ3_M: 27,
  IQ2_S: 28,
  IQ2_M: 29,
  IQ4_XS: 30,
  IQ1_M: 31,
  BF16: 32,
  MXFP4_MOE: 38,
} as const;
/**
 * File types whose mix contains tensor types llama.cpp refuses to make without an importance
 * matrix (`tensor_requires_imatrix` in llama-quant.cpp: IQ1_*, IQ2_*, IQ3_XXS, and Q2_K inside
 * Q2_K_S); `quantize` gives these a synthetic one unless told otherwise.
 */
export const NEEDS_IMATRIX: ReadonlySet<string> = new Set([
  "IQ2_XXS",
  "IQ2_XS",
  "IQ2_S",
  "IQ2_M",
  "IQ3_XS",
  "IQ3_XXS",
  "IQ1_S",
  "IQ1_M",
  "Q2_K_S",
]);
export type QuantizeType = keyof typeof LLAMA_FTYPE;

const LLAMA_FLASH_ATTN_TYPE = { AUTO: -1, DISABLED: 0, ENABLED: 1 } as const;
/** GGML type ids of the KV cache types llama.cpp's `-ctk/-ctv` take that deltaq also has. */
const LLAMA_CACHE_TYPES = { f16: 1, q8_0: 8, q4_0: 2 } as const;
export type LlamaCacheType = keyof typeof LLAMA_CACHE_TYPES;
const GGML_LOG_LEVEL_ERROR = 4;
const GGML_LOG_LEVEL_CONT = 5;

const llamaSymbols = {
  llama_backend_init: { parameters: [], result: "void" },
  llama_log_set: { parameters: ["function", "pointer"], result: "void" },
  llama_print_system_info: { parameters: [], result: "pointer" },
  llama_model_default_params: { parameters: [], result: MODEL_PARAMS.ffiType },
  llama_context_default_params: { parameters: [], result: CONTEXT_PARAMS.ffiType },
  llama_model_quantize_default_params: { parameters: [], result: QUANTIZE_PARAMS.ffiType },
  llama_model_quantize: { parameters: ["buffer", "buffer", "buffer"], result: "u32" },
  llama_model_load_from_file: { parameters: ["buffer", MODEL_PARAMS.ffiType], result: "pointer" },
  llama_model_free: { parameters: ["pointer"], result: "void" },
  llama_model_get_vocab: { parameters: ["pointer"], result: "pointer" },
  llama_model_n_embd: { parameters: ["pointer"], result: "i32" },
  llama_vocab_n_tokens: { parameters: ["pointer"], result: "i32" },
  llama_init_from_model: { parameters: ["pointer", CONTEXT_PARAMS.ffiType], result: "pointer" },
  llama_free: { parameters: ["pointer"], result: "void" },
  llama_n_ctx: { parameters: ["pointer"], result: "u32" },
  llama_n_batch: { parameters: ["pointer"], result: "u32" },
  llama_n_ubatch: { parameters: ["pointer"], result: "u32" },
  llama_tokenize: {
    parameters: ["pointer", "buffer", "i32", "buffer", "i32", "bool", "bool"],
    result: "i32",
  },
  llama_token_to_piece: { parameters: ["pointer", "i32", "buffer", "i32", "i32", "bool"], result: "i32" },
  llama_detokenize: {
    parameters: ["pointer", "buffer", "i32", "buffer", "i32", "bool", "bool"],
    result: "i32",
  },
  llama_decode: { parameters: ["pointer", BATCH.ffiType], result: "i32" },
  llama_get_logits_ith: { parameters: ["pointer", "i32"], result: "pointer" },
  llama_get_memory: { parameters: ["pointer"], result: "pointer" },
  llama_memory_clear: { parameters: ["pointer", "bool"], result: "void" },
  llama_memory_seq_pos_max: { parameters: ["pointer", "i32"], result: "i32" },
  llama_state_seq_get_size: { parameters: ["pointer", "i32"], result: "usize" },
  llama_state_seq_get_data: { parameters: ["pointer", "buffer", "usize", "i32"], result: "usize" },
  llama_state_seq_set_data: { parameters: ["pointer", "buffer", "usize", "i32"], result: "usize" },
} as const satisfies Deno.ForeignLibraryInterface;

const ggmlSymbols = {
  ggml_backend_load_all_from_path: { parameters: ["buffer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

type Llama = Deno.DynamicLibrary<typeof llamaSymbols>["symbols"];

/** What llama.cpp's log callback lets through. */
export type LlamaLogMode = "none" | "errors" | "all";

let logMode: LlamaLogMode = parseLogMode(Deno.env.get("DELTAQ_LLAMA_LOG"));
/** The last error-level messages, attached to DeltaqErrors when a llama.cpp call fails. */
const recentErrors: string[] = [];

function parseLogMode(v: string | undefined): LlamaLogMode {
  return v === "all" || v === "none" ? v : "errors";
}

/** Chooses which llama.cpp log messages reach stderr from now on. */
export function setLlamaLog(mode: LlamaLogMode): void {
  logMode = mode;
}

/** `ggml_log_callback`: void (*)(enum ggml_log_level level, const char * text, void * user_data) */
const LOG_CALLBACK = { parameters: ["i32", "pointer", "pointer"], result: "void" } as const;

let opened: { llama: Llama; dir: string; logCallback: Deno.UnsafeCallback<typeof LOG_CALLBACK> } | undefined;

/**
 * Opens the pinned libllama (installing it on first use), loads the CPU backends from the same
 * directory and routes logging through `logMode`. Idempotent.
 */
export function openLlama(): { llama: Llama; dir: string } {
  if (opened) return opened;
  const dir = locateLlama();
  let llamaLib: Deno.DynamicLibrary<typeof llamaSymbols>;
  let ggmlLib: Deno.DynamicLibrary<typeof ggmlSymbols>;
  try {
    // libllama finds libggml*.so next to itself through its $ORIGIN runpath; opening libggml by
    // path afterwards returns that same already-loaded instance.
    llamaLib = Deno.dlopen(`${dir}/${LIBLLAMA}`, llamaSymbols);
    ggmlLib = Deno.dlopen(`${dir}/${LIBGGML}`, ggmlSymbols);
  } catch (e) {
    throw new DeltaqError(`cannot load the llama.cpp reference from ${dir}: ${(e as Error).message}`);
  }
  const llama = llamaLib.symbols;

  let lastLevel = 0;
  let pending = "";
  const logCallback = new Deno.UnsafeCallback(
    LOG_CALLBACK,
    (level: number, text: Deno.PointerValue) => {
      if (level !== GGML_LOG_LEVEL_CONT) lastLevel = level;
      const msg = text === null ? "" : Deno.UnsafePointerView.getCString(text);
      if (lastLevel === GGML_LOG_LEVEL_ERROR) {
        pending += msg;
        if (pending.endsWith("\n")) {
          recentErrors.push(pending.trimEnd());
          if (recentErrors.length > 8) recentErrors.shift();
          pending = "";
        }
      }
      if (logMode === "all" || (logMode === "errors" && lastLevel === GGML_LOG_LEVEL_ERROR)) {
        Deno.stderr.writeSync(new TextEncoder().encode(msg));
      }
    },
  );
  llama.llama_log_set(logCallback.pointer, null);
  // Load the CPU backend before llama_backend_init, which would otherwise search the directory of
  // the deno executable and the working directory.
  ggmlLib.symbols.ggml_backend_load_all_from_path(cString(dir));
  llama.llama_backend_init();
  opened = { llama, dir, logCallback };
  return opened;
}

/** llama.cpp's one-line description of the CPU features its backend was built with. */
export function llamaSystemInfo(): string {
  const { llama } = openLlama();
  const p = llama.llama_print_system_info();
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

/** The default parameter structs, as llama.cpp returns them (copies the caller may patch). */
export function defaultParams(): { model: Uint8Array; context: Uint8Array; quantize: Uint8Array } {
  const { llama } = openLlama();
  return {
    model: new Uint8Array(llama.llama_model_default_params()),
    context: new Uint8Array(llama.llama_context_default_params()),
    quantize: new Uint8Array(llama.llama_model_quantize_default_params()),
  };
}

function cString(s: string): Uint8Array {
  return new TextEncoder().encode(`${s}\0`);
}

function takeErrors(): string {
  const text = recentErrors.join("\n");
  recentErrors.length = 0;
  return text ? `: ${text}` : "";
}

/** Options of `quantize`. */
export interface QuantizeOptions {
  /** Quantizer threads (default: llama.cpp's, all hardware threads). */
  threads?: number;
  /**
   * Give llama.cpp an importance matrix (`llama_model_quantize_params.imatrix`). Default: only for
   * the file types that cannot be made without one (NEEDS_IMATRIX). Note that llama.cpp's tensor-type
   * mix depends on whether there is one (e.g. IQ3_XXS keeps attn_v in IQ3_XXS with it, IQ3_S
   * without; Q4_0 and Q5_0 move early ffn_down to Q4_1/Q5_1 with it).
   *
   * The matrix is synthetic: 1 for every input column of every matrix. An importance matrix holds
   * the mean square of each input column over calibration text; deltaq's synthetic models feed
   * every matrix an RMS-normalised input whose norm weights are 1 ± 0.1 (src/model/synth.ts), so
   * all columns matter about equally, which is what ones say. The quantizers then weight each value
   * by its own magnitude only, as they do without a matrix.
   */
  imatrix?: boolean;
  /**
   * Every quantizable tensor (token embedding and output included) in the file type's base type,
   * e.g. IQ2_XXS everywhere for "IQ2_XXS" (llama-quantize's `--pure`). Tensors whose rows are not
   * whole blocks still fall back to llama.cpp's replacement type.
   */
  pure?: boolean;
  /**
   * Tensor-type overrides, llama-quantize's `--tensor-type`: `[regex, type]` pairs tried in order
   * on each quantizable tensor's name (first match wins, `std::regex_search`); the type is a GGML
   * type id or name ("IQ3_S", "Q8_0", ...).
   */
  tensorTypes?: readonly (readonly [pattern: string, type: number | string])[];
}

/** `struct llama_model_imatrix_data { const char *name; const float *data; size_t size; }` */
const IMATRIX_ENTRY_BYTES = 24;
/** `struct llama_model_tensor_override { const char *pattern; enum ggml_type type; }` */
const TENSOR_OVERRIDE_BYTES = 16;

/** A GGML type id from an id or a name in GGML_TYPES. */
function ggmlTypeId(type: number | string): number {
  if (typeof type === "number") return type;
  for (const [id, t] of Object.entries(GGML_TYPES)) if (t.name === type) return Number(id);
  throw new DeltaqError(`unknown GGML type ${type}`);
}

/**
 * Quantizes a GGUF with llama.cpp's `llama_model_quantize` (its default tensor-type mix for the
 * given file type, unless `options` change it). Writes `outPath` atomically: a temporary name in
 * the same directory is renamed into place only when llama.cpp reports success.
 */
export function quantize(
  inPath: string,
  outPath: string,
  type: QuantizeType,
  options: QuantizeOptions = {},
): void {
  if (!(type in LLAMA_FTYPE)) {
    throw new DeltaqError(
      `unknown quantization type ${type}; use one of ${Object.keys(LLAMA_FTYPE).join(", ")}`,
    );
  }
  if (!isFile(inPath)) throw new DeltaqError(`cannot quantize ${inPath}: no such file`);
  const { llama } = openLlama();
  const params = new Uint8Array(llama.llama_model_quantize_default_params());
  QUANTIZE_PARAMS.set(params, "nthread", options.threads ?? 0);
  QUANTIZE_PARAMS.set(params, "ftype", LLAMA_FTYPE[type]);
  QUANTIZE_PARAMS.set(params, "pure", options.pure ?? false);
  // Everything the structs point at must stay reachable until llama_model_quantize returns.
  const keepAlive: ArrayBufferView[] = [];
  const pointerTo = (a: ArrayBufferView) => {
    keepAlive.push(a);
    return addr(a);
  };
  if (options.imatrix ?? NEEDS_IMATRIX.has(type)) {
    const matrices = readGgufHeader(inPath).tensors.filter((t) => t.shape.length >= 2);
    const table = new DataView(new ArrayBuffer((matrices.length + 1) * IMATRIX_ENTRY_BYTES));
    matrices.forEach((t, i) => {
      const columns = t.shape[0] * (t.shape[2] ?? 1); // llama.cpp: ne0 · ne2 (one slice per expert)
      table.setBigUint64(i * IMATRIX_ENTRY_BYTES, pointerTo(cString(t.name)), true);
      table.setBigUint64(i * IMATRIX_ENTRY_BYTES + 8, pointerTo(new Float32Array(columns).fill(1)), true);
      table.setBigUint64(i * IMATRIX_ENTRY_BYTES + 16, BigInt(columns), true);
    }); // the zeroed last entry (name = NULL) ends the table
    QUANTIZE_PARAMS.set(params, "imatrix", pointerTo(new Uint8Array(table.buffer)));
  }
  if (options.tensorTypes?.length) {
    const list = options.tensorTypes;
    const table = new DataView(new ArrayBuffer((list.length + 1) * TENSOR_OVERRIDE_BYTES));
    list.forEach(([pattern, t], i) => {
      table.setBigUint64(i * TENSOR_OVERRIDE_BYTES, pointerTo(cString(pattern)), true);
      table.setInt32(i * TENSOR_OVERRIDE_BYTES + 8, ggmlTypeId(t), true);
    });
    QUANTIZE_PARAMS.set(params, "tt_overrides", pointerTo(new Uint8Array(table.buffer)));
  }
  const tmpPath = `${outPath}.partial-${Deno.pid}`;
  recentErrors.length = 0;
  let status: number;
  try {
    status = llama.llama_model_quantize(cString(inPath), cString(tmpPath), params);
  } catch (e) {
    removeIfPresent(tmpPath);
    throw e;
  }
  keepAlive.length = 0;
  if (status !== 0) {
    removeIfPresent(tmpPath);
    throw new DeltaqError(
      `llama.cpp failed to quantize ${inPath} to ${type} (status ${status})${takeErrors()}`,
    );
  }
  Deno.renameSync(tmpPath, outPath);
}

function removeIfPresent(p: string): void {
  try {
    Deno.removeSync(p);
  } catch {
    // nothing was written
  }
}

/** Options of `LlamaReference.load`. */
export interface LlamaLoadOptions {
  /**
   * Threads for prompt and decode (default: the physical performance cores, as deltaq). ggml's
   * workers spin at barriers, so when other work competes for the cores (another engine's thread
   * pool, a build) more threads can be 100× slower: use 1 in tests, pass it explicitly in benchmarks.
   */
  threads?: number;
  /** Context length in tokens (default 4096; llama.cpp rounds it up to a multiple of 256). */
  contextLength?: number;
  /** Largest number of tokens handed to one `llama_decode` (n_batch = n_ubatch; default 512). */
  batchSize?: number;
  /** Load only the vocabulary (tokenizer use); `eval` is then unavailable. */
  vocabOnly?: boolean;
  /**
   * `use_extra_bufts` (default true, llama.cpp's): lets the CPU backend move weights into its
   * extra buffer types, the Q4_K/Q4_0 repacks and, on CPUs with AMX, the AMX buffer. The AMX
   * buffer multiplies F16 weights by *unrounded* f32 activations for the matrices whose shapes its
   * kernels take, and by F16-rounded ones elsewhere, so with it on llama.cpp's F16 numerics depend
   * on the CPU. The node-by-node reference turns it off.
   */
  extraBufferTypes?: boolean;
  /** Force flash attention on or off; default lets llama.cpp decide (AUTO → on, on the CPU). */
  flashAttention?: boolean;
  /**
   * KV cache types (`type_k`/`type_v`, llama.cpp's `-ctk/-ctv`): "f16" (the default), "q8_0" or
   * "q4_0". llama.cpp needs flash attention for a quantized V cache.
   */
  cacheTypeK?: LlamaCacheType;
  cacheTypeV?: LlamaCacheType;
  /**
   * The context's `cb_eval`: a C function `bool (ggml_tensor *t, bool ask, void *user_data)`
   * (e.g. a `Deno.UnsafeCallback` pointer) that the graph scheduler calls for every node, first
   * with ask = true (return true to see the tensor), then with ask = false once it is computed.
   * For inspecting intermediate tensors (tools/intermediates.ts); null user data.
   */
  evalCallback?: Deno.PointerObject;
}

/** One model (and, unless vocab-only, one single-sequence context) in the pinned llama.cpp. */
export class LlamaReference {
  /** Vocabulary size (rows of the logits). */
  readonly nVocab: number;
  /** Embedding width; 0 for a vocab-only load. */
  readonly nEmbd: number;
  /** The context length llama.cpp actually allocated (0 when vocab-only). */
  readonly nCtx: number;
  /** The batch size eval splits prompts into (0 when vocab-only). */
  readonly batchSize: number;
  /** Wall time of model load plus context creation, in milliseconds. */
  readonly loadMs: number;
  #llama: Llama;
  #model: Deno.PointerValue;
  #vocab: Deno.PointerValue;
  #ctx: Deno.PointerValue;
  #nPast = 0;

  private constructor(
    llama: Llama,
    model: Deno.PointerValue,
    ctx: Deno.PointerValue,
    loadMs: number,
  ) {
    this.#llama = llama;
    this.#model = model;
    this.#ctx = ctx;
    this.#vocab = llama.llama_model_get_vocab(model);
    this.nVocab = llama.llama_vocab_n_tokens(this.#vocab);
    this.nEmbd = llama.llama_model_n_embd(model);
    this.nCtx = ctx === null ? 0 : llama.llama_n_ctx(ctx);
    this.batchSize = ctx === null ? 0 : llama.llama_n_batch(ctx);
    this.loadMs = loadMs;
  }

  /** Loads `path` with llama.cpp. */
  static load(path: string, options: LlamaLoadOptions = {}): LlamaReference {
    if (!isFile(path)) throw new DeltaqError(`cannot load ${path}: no such file`);
    const { llama } = openLlama();
    const t0 = performance.now();
    const mp = new Uint8Array(llama.llama_model_default_params());
    MODEL_PARAMS.set(mp, "vocab_only", options.vocabOnly ?? false);
    MODEL_PARAMS.set(mp, "use_extra_bufts", options.extraBufferTypes ?? true);
    recentErrors.length = 0;
    const model = llama.llama_model_load_from_file(cString(path), mp);
    if (model === null) throw new DeltaqError(`llama.cpp cannot load ${path}${takeErrors()}`);
    if (options.vocabOnly) return new LlamaReference(llama, model, null, performance.now() - t0);

    // deltaq's default, so that the two engines compare like with like
    const threads = options.threads ?? performanceCores();
    const batchSize = options.batchSize ?? 512;
    const cp = new Uint8Array(llama.llama_context_default_params());
    CONTEXT_PARAMS.set(cp, "n_ctx", options.contextLength ?? 4096);
    CONTEXT_PARAMS.set(cp, "n_batch", batchSize);
    CONTEXT_PARAMS.set(cp, "n_ubatch", batchSize);
    CONTEXT_PARAMS.set(cp, "n_seq_max", 1);
    CONTEXT_PARAMS.set(cp, "n_threads", threads);
    CONTEXT_PARAMS.set(cp, "n_threads_batch", threads);
    const fa = options.flashAttention;
    CONTEXT_PARAMS.set(
      cp,
      "flash_attn_type",
      fa === undefined
        ? LLAMA_FLASH_ATTN_TYPE.AUTO
        : fa
        ? LLAMA_FLASH_ATTN_TYPE.ENABLED
        : LLAMA_FLASH_ATTN_TYPE.DISABLED,
    );
    CONTEXT_PARAMS.set(cp, "type_k", LLAMA_CACHE_TYPES[options.cacheTypeK ?? "f16"]);
    CONTEXT_PARAMS.set(cp, "type_v", LLAMA_CACHE_TYPES[options.cacheTypeV ?? "f16"]);
    if (options.evalCallback) {
      CONTEXT_PARAMS.set(cp, "cb_eval", BigInt(Deno.UnsafePointer.value(options.evalCallback)));
    }
    const ctx = llama.llama_init_from_model(model, cp);
    if (ctx === null) {
      const why = takeErrors();
      llama.llama_model_free(model);
      throw new DeltaqError(`llama.cpp cannot create a context for ${path}${why}`);
    }
    return new LlamaReference(llama, model, ctx, performance.now() - t0);
  }

  /** Number of positions already in the context (the next token's position). */
  get position(): number {
    return this.#nPast;
  }

  /** Tokenizes UTF-8 text with the model's vocabulary. */
  tokenize(text: string, options: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Int32Array {
    const bytes = new TextEncoder().encode(text);
    let out = new Int32Array(bytes.length + 8);
    for (;;) {
      const n = this.#llama.llama_tokenize(
        this.#vocab,
        bytes,
        bytes.length,
        out,
        out.length,
        options.addSpecial ?? false,
        options.parseSpecial ?? false,
      );
      if (n >= 0) return out.slice(0, n);
      if (n === -0x80000000) throw new DeltaqError("llama.cpp: tokenization result overflows int32");
      out = new Int32Array(-n);
    }
  }

  /** The bytes of one token (a piece may be part of a UTF-8 sequence). */
  tokenToPiece(token: number, options: { special?: boolean } = {}): Uint8Array {
    let buf = new Uint8Array(64);
    for (;;) {
      const n = this.#llama.llama_token_to_piece(
        this.#vocab,
        token,
        buf,
        buf.length,
        0,
        options.special ?? true,
      );
      if (n >= 0) return buf.slice(0, n);
      buf = new Uint8Array(-n);
    }
  }

  /** Tokens back to text (llama.cpp's detokenizer, special tokens rendered unless told not to). */
  detokenize(
    tokens: ArrayLike<number>,
    options: { removeSpecial?: boolean; unparseSpecial?: boolean } = {},
  ): string {
    const ids = Int32Array.from(tokens);
    let buf = new Uint8Array(ids.length * 8 + 16);
    for (;;) {
      const n = this.#llama.llama_detokenize(
        this.#vocab,
        ids,
        ids.length,
        buf,
        buf.length,
        options.removeSpecial ?? false,
        options.unparseSpecial ?? true,
      );
      if (n >= 0) return new TextDecoder().decode(buf.subarray(0, n));
      buf = new Uint8Array(-n);
    }
  }

  /**
   * Feeds `tokens` after what the context already holds and returns logits: the last position's
   * (`nVocab` floats) or, with `allLogits`, every fed position's (row-major, `tokens.length` rows).
   * Prompts longer than `batchSize` are split into several `llama_decode` calls.
   */
  eval(tokens: ArrayLike<number>, options: { allLogits?: boolean; out?: Float32Array } = {}): Float32Array {
    const ctx = this.#requireContext();
    const n = tokens.length;
    if (n === 0) throw new DeltaqError("eval needs at least one token");
    if (this.#nPast + n > this.nCtx) {
      throw new DeltaqError(
        `eval of ${n} tokens at position ${this.#nPast} exceeds the context length ${this.nCtx}`,
      );
    }
    for (let i = 0; i < n; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t >= this.nVocab) {
        throw new DeltaqError(`token ${t} at index ${i} is outside the vocabulary (0..${this.nVocab - 1})`);
      }
    }
    const all = options.allLogits ?? false;
    const out = logitsOutput(options.out, (all ? n : 1) * this.nVocab);
    const cap = Math.min(n, this.batchSize);
    const tok = new Int32Array(cap);
    const pos = new Int32Array(cap);
    const nSeqId = new Int32Array(cap).fill(1);
    const seq0 = new Int32Array(1); // every token belongs to sequence 0
    const seqIds = new BigUint64Array(cap).fill(
      BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(seq0))),
    );
    const wantLogits = new Int8Array(cap);
    const batch = BATCH.alloc();
    BATCH.set(batch, "token", addr(tok));
    BATCH.set(batch, "pos", addr(pos));
    BATCH.set(batch, "n_seq_id", addr(nSeqId));
    BATCH.set(batch, "seq_id", addr(seqIds));
    BATCH.set(batch, "logits", addr(wantLogits));
    for (let start = 0; start < n; start += cap) {
      const m = Math.min(cap, n - start);
      const last = start + m === n;
      for (let i = 0; i < m; i++) {
        tok[i] = tokens[start + i];
        pos[i] = this.#nPast + i;
        wantLogits[i] = all || (last && i === m - 1) ? 1 : 0;
      }
      BATCH.set(batch, "n_tokens", m);
      recentErrors.length = 0;
      const status = this.#llama.llama_decode(ctx, batch);
      if (status !== 0) {
        // On failure llama.cpp may keep some processed ubatches; resynchronise our position.
        this.#nPast = this.#llama.llama_memory_seq_pos_max(this.#llama.llama_get_memory(ctx), 0) + 1;
        throw new DeltaqError(`llama_decode failed with status ${status}${takeErrors()}`);
      }
      this.#nPast += m;
      if (all) {
        for (let i = 0; i < m; i++) this.#copyLogits(ctx, i, out, (start + i) * this.nVocab);
      } else if (last) {
        this.#copyLogits(ctx, m - 1, out, 0);
      }
    }
    return out;
  }

  /**
   * The sequence's whole state (KV cache and recurrent state) as bytes, for `restoreState`; what
   * llama-bench does to measure at a depth several times without refilling it.
   */
  saveState(): { position: number; bytes: Uint8Array } {
    const ctx = this.#requireContext();
    const size = Number(this.#llama.llama_state_seq_get_size(ctx, 0));
    const bytes = new Uint8Array(size);
    const got = Number(this.#llama.llama_state_seq_get_data(ctx, bytes, BigInt(size), 0));
    if (got !== size) throw new DeltaqError(`llama.cpp saved ${got} of ${size} bytes of sequence state`);
    return { position: this.#nPast, bytes };
  }

  /** Puts the sequence back to a `saveState` result. */
  restoreState(state: { position: number; bytes: Uint8Array }): void {
    const ctx = this.#requireContext();
    this.#llama.llama_memory_clear(this.#llama.llama_get_memory(ctx), true);
    const got = Number(this.#llama.llama_state_seq_set_data(ctx, state.bytes, BigInt(state.bytes.length), 0));
    if (got === 0) throw new DeltaqError(`llama.cpp could not restore the sequence state${takeErrors()}`);
    this.#nPast = state.position;
  }

  /** Forgets everything fed so far (KV cache and recurrent state); the next eval starts at 0. */
  reset(): void {
    const ctx = this.#requireContext();
    this.#llama.llama_memory_clear(this.#llama.llama_get_memory(ctx), true);
    this.#nPast = 0;
  }

  /** Resets, feeds the prompt, then greedily extends it by `n` tokens (argmax, lowest id on ties). */
  greedy(promptTokens: ArrayLike<number>, n: number): Int32Array {
    this.reset();
    const out = new Int32Array(n);
    let logits = this.eval(promptTokens);
    for (let i = 0; i < n; i++) {
      out[i] = argmax(logits);
      if (i + 1 < n) logits = this.eval([out[i]]);
    }
    return out;
  }

  /** Frees the context and model. The object is unusable afterwards. */
  dispose(): void {
    if (this.#ctx !== null) this.#llama.llama_free(this.#ctx);
    if (this.#model !== null) this.#llama.llama_model_free(this.#model);
    this.#ctx = null;
    this.#model = null;
    this.#vocab = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #requireContext(): NonNullable<Deno.PointerValue> {
    if (this.#ctx === null) {
      throw new DeltaqError(
        this.#model === null
          ? "this LlamaReference was disposed"
          : "model was loaded vocab-only; it cannot eval",
      );
    }
    return this.#ctx;
  }

  #copyLogits(ctx: NonNullable<Deno.PointerValue>, i: number, out: Float32Array, at: number): void {
    const p = this.#llama.llama_get_logits_ith(ctx, i);
    if (p === null) throw new DeltaqError(`llama.cpp returned no logits for batch row ${i}`);
    out.set(new Float32Array(Deno.UnsafePointerView.getArrayBuffer(p, this.nVocab * 4)), at);
  }
}

function addr(a: ArrayBufferView): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(a as unknown as BufferSource)));
}

/** Index of the largest value (the first one on ties). */
export function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}
