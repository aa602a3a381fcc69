/** The files both parity suites (logits: parity_test.ts; nodes: nodes_test.ts) compare on. */
import type { QuantizeType } from "../../src/oracle/llama.ts";

export type FileType = "F32" | QuantizeType;

/** llama.cpp's presets (each its own mix of types tensor by tensor) that both suites run on SHAPES. */
export const PRESET_TYPES: FileType[] = [
  "F32",
  "F16",
  "BF16",
  "Q8_0",
  "Q4_K_M",
  "Q5_K_M",
  "Q6_K",
  "Q2_K",
  "Q3_K_S",
  "Q3_K_M",
  "Q3_K_L",
  "IQ4_XS",
  "Q4_0",
  "Q5_0",
  "IQ4_NL",
  "Q4_1",
  "Q5_1",
];
export const SHAPES = ["tiny", "tiny-b"] as const;
/** Mixture-of-experts shapes and the file types llama.cpp converts them to. */
export const MOE_SHAPES = ["tiny-moe", "tiny-moe-b"] as const;
export const MOE_TYPES: FileType[] = ["F32", "Q8_0", "Q4_K_M", "Q6_K", "MXFP4_MOE"];
