/**
 * deltaq — local Qwen3.5 inference for Deno, with Zig kernels.
 *
 * ```ts
 * import { loadModel } from "./mod.ts";
 *
 * const model = await loadModel("Qwen3.5-4B-Q4_K_M.gguf", { threads: 2 });
 *
 * // next-token logits
 * const session = model.createSession();
 * const logits = session.eval(model.tokenize("The capital of France is"));
 *
 * // a streamed chat reply (thinking and answer told apart)
 * const reply = model.chat([{ role: "user", content: "Hi!" }], { temperature: 0.7 });
 * for await (const chunk of reply) if (!chunk.thinking) console.log(chunk.text);
 * console.log((await reply.result).timings);
 *
 * model.dispose();
 * ```
 *
 * @module
 */
import { type LoadOptions, Model } from "./src/model/model.ts";

export { DeltaqError } from "./src/errors.ts";
export { type ChatOptions, type ContextMemory, type LoadOptions, Model, type ModelInfo } from "./src/model/model.ts";
export type { CacheType } from "./src/native/kernels.ts";
export type { EvalOptions, Session } from "./src/model/session.ts";
export type { LayerType, MoeConfig, Qwen35Config } from "./src/model/config.ts";
export type {
  GenerateOptions,
  Generation,
  GenerationChunk,
  GenerationResult,
  StopReason,
} from "./src/generate/generate.ts";
export type { SamplerOptions } from "./src/generate/sampler.ts";
export type { ChatMessage, ChatTool } from "./src/chat/template.ts";
export { loadTokenizer, type Tokenizer } from "./src/tokenizer/tokenizer.ts";
export {
  Engine,
  type EngineJob,
  type EngineOptions,
  type EngineRequest,
  type EngineResult,
  type EngineStats,
  type EngineToken,
  type EngineUsage,
  type FinishReason,
  type TokenConstraint,
  type TokenLogprob,
} from "./src/server/engine.ts";
export { serve, type ServeOptions, type ServerHandle } from "./src/server/server.ts";
export type { ResponseFormat } from "./src/generate/constraint.ts";

/**
 * Loads a Qwen3.5 GGUF model. The file is memory-mapped (weights are never copied into the JS
 * heap) and checked against the spec before use; the kernel library is built on first use if
 * needed. Rejects with a {@link DeltaqError} naming the file for anything wrong with it.
 *
 * @param path a `qwen35` GGUF file (F32, F16, BF16, Q8_0, Q4_K, Q5_K, Q6_K tensors in any mix)
 * @param opts threads (default: the physical performance cores), contextLength (default 4096), batchSize
 */
export function loadModel(path: string, opts: LoadOptions = {}): Promise<Model> {
  try {
    return Promise.resolve(Model.load(path, opts));
  } catch (e) {
    return Promise.reject(e);
  }
}
