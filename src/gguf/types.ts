/** GGUF container constants and the shapes of what the reader returns (see ../shared/spec §6). */

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types as stored in the file. */
export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** Bytes of one value of each fixed-size metadata type (strings and arrays have none). */
export const GGUF_SCALAR_SIZE: Partial<Record<GgufValueType, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

/**
 * Every GGML tensor type id llama.cpp defines: id → name, values per block and bytes per block, and
 * whether deltaq's kernels multiply with it (`computable`; matmul and row lookup, see
 * kernels/types.zig, which must agree — tests/model/types_test.ts checks). Files with any of these
 * types can be read and listed; only running a tensor of a type that is not computable is an error.
 */
export const GGML_TYPES: Record<number, { name: string; blockValues: number; blockBytes: number; computable?: true }> = {
  0: { name: "F32", blockValues: 1, blockBytes: 4, computable: true },
  1: { name: "F16", blockValues: 1, blockBytes: 2, computable: true },
  2: { name: "Q4_0", blockValues: 32, blockBytes: 18, computable: true },
  3: { name: "Q4_1", blockValues: 32, blockBytes: 20, computable: true },
  6: { name: "Q5_0", blockValues: 32, blockBytes: 22, computable: true },
  7: { name: "Q5_1", blockValues: 32, blockBytes: 24, computable: true },
  8: { name: "Q8_0", blockValues: 32, blockBytes: 34, computable: true },
  9: { name: "Q8_1", blockValues: 32, blockBytes: 36 },
  10: { name: "Q2_K", blockValues: 256, blockBytes: 84, computable: true },
  11: { name: "Q3_K", blockValues: 256, blockBytes: 110, computable: true },
  12: { name: "Q4_K", blockValues: 256, blockBytes: 144, computable: true },
  13: { name: "Q5_K", blockValues: 256, blockBytes: 176, computable: true },
  14: { name: "Q6_K", blockValues: 256, blockBytes: 210, computable: true },
  15: { name: "Q8_K", blockValues: 256, blockBytes: 292 },
  16: { name: "IQ2_XXS", blockValues: 256, blockBytes: 66, computable: true },
  17: { name: "IQ2_XS", blockValues: 256, blockBytes: 74, computable: true },
  18: { name: "IQ3_XXS", blockValues: 256, blockBytes: 98, computable: true },
  19: { name: "IQ1_S", blockValues: 256, blockBytes: 50, computable: true },
  20: { name: "IQ4_NL", blockValues: 32, blockBytes: 18, computable: true },
  21: { name: "IQ3_S", blockValues: 256, blockBytes: 110, computable: true },
  22: { name: "IQ2_S", blockValues: 256, blockBytes: 82, computable: true },
  23: { name: "IQ4_XS", blockValues: 256, blockBytes: 136, computable: true },
  24: { name: "I8", blockValues: 1, blockBytes: 1 },
  25: { name: "I16", blockValues: 1, blockBytes: 2 },
  26: { name: "I32", blockValues: 1, blockBytes: 4 },
  27: { name: "I64", blockValues: 1, blockBytes: 8 },
  28: { name: "F64", blockValues: 1, blockBytes: 8 },
  29: { name: "IQ1_M", blockValues: 256, blockBytes: 56, computable: true },
  30: { name: "BF16", blockValues: 1, blockBytes: 2, computable: true },
  34: { name: "TQ1_0", blockValues: 256, blockBytes: 54 },
  35: { name: "TQ2_0", blockValues: 256, blockBytes: 66 },
  39: { name: "MXFP4", blockValues: 32, blockBytes: 17, computable: true },
  40: { name: "NVFP4", blockValues: 64, blockBytes: 36 },
  41: { name: "Q1_0", blockValues: 128, blockBytes: 18 },
  42: { name: "Q2_0", blockValues: 64, blockBytes: 18 },
};

/**
 * Ids llama.cpp once used and has removed (ggml.c keeps them as zero-size placeholders, and its
 * GGUF reader rejects them): named in errors, but their tensors have no size to read.
 */
export const REMOVED_GGML_TYPES: Record<number, string> = {
  4: "Q4_2",
  5: "Q4_3",
  31: "Q4_0_4_4",
  32: "Q4_0_4_8",
  33: "Q4_0_8_8",
  36: "IQ4_NL_4_4",
  37: "IQ4_NL_4_8",
  38: "IQ4_NL_8_8",
};

/** Types deltaq's kernels can multiply with. */
export const COMPUTABLE_TYPES: ReadonlySet<number> = new Set(
  Object.entries(GGML_TYPES).filter(([, t]) => t.computable).map(([id]) => Number(id)),
);

/** The computable types' names, for messages. */
export function computableTypeNames(): string {
  return [...COMPUTABLE_TYPES].map((t) => ggmlTypeName(t)).join(", ");
}

export function ggmlTypeName(type: number): string {
  return GGML_TYPES[type]?.name ?? REMOVED_GGML_TYPES[type] ?? `type ${type}`;
}

/** Bytes of a tensor of this type and shape, or undefined if ne0 is not a whole number of blocks. */
export function tensorBytes(type: number, ne: readonly number[]): number | undefined {
  const t = GGML_TYPES[type];
  if (!t || ne.length === 0 || ne[0] % t.blockValues !== 0) return undefined;
  let n = ne[0] / t.blockValues * t.blockBytes;
  for (let i = 1; i < ne.length; i++) n *= ne[i];
  return n;
}

/** A metadata value: numbers (64-bit integers as bigint when beyond 2^53), strings, bools, arrays. */
export type GgufValue = number | bigint | string | boolean | GgufValue[] | GgufTypedArray;
/** Large numeric arrays (e.g. token scores and types) are returned as typed arrays. */
export type GgufTypedArray = Float32Array | Int32Array | Uint32Array | Uint8Array | Int8Array | Int16Array | Uint16Array;

export interface GgufTensorInfo {
  name: string;
  /** ne0 first (contiguous). */
  shape: number[];
  type: number;
  /** Offset from the start of the tensor data section. */
  offset: number;
  /** Offset from the start of the file. */
  fileOffset: number;
  byteLength: number;
}

export interface GgufFile {
  version: number;
  metadata: Map<string, GgufValue>;
  /** The stored value type of each key (arrays: `ARRAY` plus `arrayType`). */
  metadataTypes: Map<string, { type: GgufValueType; arrayType?: GgufValueType }>;
  tensors: GgufTensorInfo[];
  alignment: number;
  dataOffset: number;
  fileSize: number;
}
