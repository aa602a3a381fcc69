/**
 * deltaq — local Qwen3.5 inference for Deno, with Zig kernels.
 *
 * ```ts
 * import { loadModel } from "./mod.ts";
 * const model = await loadModel("Qwen3.5-4B-Q4_K_M.gguf", { threads: 2 });
 * const session = model.createSession();
 * const logits = session.eval([9707, 11, 1879]); // next-token logits after these ids
 * model.dispose();
 * ```
 *
 * @module
 */
import { type LoadOptions, Model } from "./src/model/model.ts";

export { DeltaqError } from "./src/errors.ts";
export type { LoadOptions, ModelInfo } from "./src/model/model.ts";
export { Model } from "./src/model/model.ts";
export type { EvalOptions, Session } from "./src/model/session.ts";

/** Loads a Qwen3.5 GGUF model (memory-mapped; the kernel library is built on first use). */
export function loadModel(path: string, opts: LoadOptions = {}): Promise<Model> {
  try {
    return Promise.resolve(Model.load(path, opts));
  } catch (e) {
    return Promise.reject(e);
  }
}
