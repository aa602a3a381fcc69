/**
 * The valid models the robustness tests break: synthetic qwen35 files small enough (~50–100 KB)
 * that thousands of mutated copies parse and load in seconds, in the layouts the loader
 * distinguishes (tied and untied LM head, interval and explicit layer schedule, an MTP block,
 * F32 and F16 matrices, a mixture-of-experts FFN). Cached by tests/models.ts.
 */
import type { Qwen35Shape } from "../../src/model/synth.ts";
import { testModel, type TestModelSpec } from "../models.ts";

/** One DeltaNet layer then one attention layer, every width at its minimum. */
export const MICRO: Partial<Qwen35Shape> = {
  embedding: 32,
  layers: 2,
  feedForward: 32,
  headCount: 2,
  headCountKv: 1,
  headDim: 16,
  ropeDims: 8,
  ssmKHeads: 1,
  ssmVHeads: 2,
  ssmHeadDim: 8,
  convKernel: 4,
  vocabSize: 300,
  fullAttentionInterval: 2,
  explicitRecurrentLayers: false,
  tiedOutput: true,
  mtpLayers: 0,
  contextLength: 256,
};

export const BASES: Record<string, TestModelSpec> = {
  micro: { preset: "tiny", type: "f32", shape: MICRO },
  /** D D A with explicit recurrent_layers flags, an untied head and an MTP block after the trunk. */
  "micro-b": {
    preset: "tiny",
    type: "f32",
    shape: {
      ...MICRO,
      layers: 3,
      fullAttentionInterval: 3,
      explicitRecurrentLayers: true,
      tiedOutput: false,
      mtpLayers: 1,
    },
  },
  "micro-f16": { preset: "tiny", type: "f16", shape: MICRO },
  /** Mixture of experts (qwen35moe): 3 experts, 2 used, separate gate and up experts. */
  "micro-moe": {
    preset: "tiny",
    type: "f32",
    shape: {
      ...MICRO,
      feedForward: 0,
      moe: { experts: 3, expertsUsed: 2, expertFeedForward: 32, sharedFeedForward: 32, fusedGateUp: false },
    },
  },
};

export type BaseName = keyof typeof BASES;

/** Paths of the base models, generated on first use. */
export async function basePaths(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, spec] of Object.entries(BASES)) out[name] = await testModel(spec);
  return out;
}
