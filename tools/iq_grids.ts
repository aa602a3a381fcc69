/**
 * `deno run -A tools/iq_grids.ts [--check]`: reads the lookup tables of ggml's grid-based IQ types
 * (IQ1_S/IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) out of the pinned libggml and writes them
 * to kernels/quant/iq_grids.zig; `--check` only compares the committed file with what the library
 * gives and exits 1 on any difference.
 *
 * The tables are not parsed from llama.cpp's source: each entry is observed through ggml's own
 * dequantizer (`dequantize_row_<type>` exported by libggml-base). A crafted block with scale 1,
 * the smallest sub-block scale and no signs dequantizes to a known multiple of the grid entries
 * its indices select, so every entry is read back exactly (all values are small integers times a
 * power of two). The sign table (ksigns_iq2xs: 7 sign bits plus their parity) is read the same
 * way through IQ2_XXS's sign indices.
 */
import { DeltaqError } from "../src/errors.ts";
import { locateLlama } from "../src/oracle/install.ts";

const OUT = new URL("../kernels/quant/iq_grids.zig", import.meta.url);
const F16_ONE = 0x3c00;

const symbols = Object.fromEntries(
  ["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s"].map((t) => [
    `dequantize_row_${t}`,
    { parameters: ["buffer", "buffer", "i64"], result: "void" },
  ]),
) as Record<string, { parameters: ["buffer", "buffer", "i64"]; result: "void" }>;

function openGgmlBase() {
  const path = `${locateLlama()}/libggml-base.so`;
  try {
    return Deno.dlopen(path, symbols).symbols;
  } catch (e) {
    throw new DeltaqError(`cannot load ${path}: ${(e as Error).message}`);
  }
}

/** Dequantizes one 256-value block of `type` through ggml. */
function dequantize(ggml: ReturnType<typeof openGgmlBase>, type: string, block: Uint8Array): Float32Array {
  const out = new Float32Array(256);
  ggml[`dequantize_row_${type}`](block, out, 256n);
  return out;
}

/** Value v·scale as an exact integer, or an error naming what was not. */
function exact(v: number, scale: number, what: string): number {
  const x = v * scale;
  if (!Number.isInteger(x)) throw new DeltaqError(`${what}: ${v} is not a multiple of 1/${scale}`);
  return x;
}

interface Tables {
  ksigns: number[];
  iq2xxs: bigint[];
  iq2xs: bigint[];
  iq2s: bigint[];
  iq3xxs: number[];
  iq3s: number[];
  iq1s: bigint[];
}

/** Bytes (as signed or unsigned 8-bit values) packed little-endian into one integer. */
function pack(values: number[]): bigint {
  let x = 0n;
  values.forEach((v, i) => x |= BigInt(v & 0xff) << BigInt(8 * i));
  return x;
}

function readTables(): Tables {
  const ggml = openGgmlBase();

  // IQ2_XXS: {f16 d; u16 qs[32]}; per 32 values two u32: 4 grid indices (bytes), then 4×7 sign
  // bits and a 4-bit scale s (db = d·(0.5 + s)·0.25 = 1/8 for s = 0).
  const iq2xxs: bigint[] = [];
  for (let first = 0; first < 256; first += 32) {
    const blk = new Uint8Array(66);
    const v = new DataView(blk.buffer);
    v.setUint16(0, F16_ONE, true);
    for (let i = 0; i < 32; i++) blk[2 + 8 * (i >> 2) + (i & 3)] = first + i;
    const y = dequantize(ggml, "iq2_xxs", blk);
    for (let i = 0; i < 32; i++) {
      iq2xxs.push(pack(Array.from(y.subarray(8 * i, 8 * i + 8), (x) => exact(x, 8, "iq2xxs"))));
    }
  }
  // ksigns: sign index k on group 0 of sub-block k/4... (4 indices per 32 values, 7 bits each).
  const ksigns: number[] = [];
  for (let first = 0; first < 128; first += 32) {
    const blk = new Uint8Array(66);
    const v = new DataView(blk.buffer);
    v.setUint16(0, F16_ONE, true);
    for (let ib = 0; ib < 8; ib++) {
      let bits = 0;
      for (let l = 0; l < 4; l++) bits |= (first + 4 * ib + l) << (7 * l);
      v.setUint32(2 + 8 * ib + 4, bits >>> 0, true); // grid index 0 everywhere: all values positive
    }
    const y = dequantize(ggml, "iq2_xxs", blk);
    for (let g = 0; g < 32; g++) {
      let byte = 0;
      for (let j = 0; j < 8; j++) if (y[8 * g + j] < 0) byte |= 1 << j;
      ksigns.push(byte);
    }
  }

  // IQ2_XS: {f16 d; u16 qs[32]; u8 scales[8]}; qs = 9-bit grid index | 7-bit sign index << 9.
  const iq2xs: bigint[] = [];
  for (let first = 0; first < 512; first += 32) {
    const blk = new Uint8Array(74);
    const v = new DataView(blk.buffer);
    v.setUint16(0, F16_ONE, true);
    for (let i = 0; i < 32; i++) v.setUint16(2 + 2 * i, first + i, true);
    const y = dequantize(ggml, "iq2_xs", blk);
    for (let i = 0; i < 32; i++) iq2xs.push(pack(Array.from(y.subarray(8 * i, 8 * i + 8), (x) => exact(x, 8, "iq2xs"))));
  }

  // IQ2_S: {f16 d; u8 qs[32] (grid low 8 bits); u8 signs[32]; u8 qh[8] (2 high bits per group); u8 scales[8]}.
  const iq2s: bigint[] = [];
  for (let first = 0; first < 1024; first += 32) {
    const blk = new Uint8Array(82);
    new DataView(blk.buffer).setUint16(0, F16_ONE, true);
    for (let i = 0; i < 32; i++) {
      const index = first + i;
      blk[2 + i] = index & 255;
      blk[2 + 64 + (i >> 2)] |= (index >> 8) << (2 * (i & 3));
    }
    const y = dequantize(ggml, "iq2_s", blk);
    for (let i = 0; i < 32; i++) iq2s.push(pack(Array.from(y.subarray(8 * i, 8 * i + 8), (x) => exact(x, 8, "iq2s"))));
  }

  // IQ3_XXS: {f16 d; u8 qs[64] (grid indices, 4 values each); u32 scales_and_signs[8]}; db = d/4 for scale 0.
  const iq3xxs: number[] = [];
  for (let first = 0; first < 256; first += 64) {
    const blk = new Uint8Array(98);
    new DataView(blk.buffer).setUint16(0, F16_ONE, true);
    for (let i = 0; i < 64; i++) blk[2 + i] = first + i;
    const y = dequantize(ggml, "iq3_xxs", blk);
    for (let i = 0; i < 64; i++) {
      iq3xxs.push(Number(pack(Array.from(y.subarray(4 * i, 4 * i + 4), (x) => exact(x, 4, "iq3xxs")))));
    }
  }

  // IQ3_S: {f16 d; u8 qs[64]; u8 qh[8]; u8 signs[32]; u8 scales[4]}; index = qs | (qh bit << 8); db = d for scale 0.
  const iq3s: number[] = [];
  for (let first = 0; first < 512; first += 64) {
    const blk = new Uint8Array(110);
    new DataView(blk.buffer).setUint16(0, F16_ONE, true);
    for (let i = 0; i < 64; i++) {
      const index = first + i;
      blk[2 + i] = index & 255;
      blk[2 + 64 + (i >> 3)] |= (index >> 8) << (i & 7);
    }
    const y = dequantize(ggml, "iq3_s", blk);
    for (let i = 0; i < 64; i++) {
      iq3s.push(Number(pack(Array.from(y.subarray(4 * i, 4 * i + 4), (x) => exact(x, 1, "iq3s")))));
    }
  }

  // IQ1_S: {f16 d; u8 qs[32]; u16 qh[8]}; index = qs | 3 bits of qh << 8; y = d·(2s+1)·(grid + δ),
  // δ = +1/8 with qh's top bit clear: grid = y − 1/8.
  const iq1s: bigint[] = [];
  for (let first = 0; first < 2048; first += 32) {
    const blk = new Uint8Array(50);
    const v = new DataView(blk.buffer);
    v.setUint16(0, F16_ONE, true);
    for (let ib = 0; ib < 8; ib++) {
      let qh = 0;
      for (let l = 0; l < 4; l++) {
        const index = first + 4 * ib + l;
        blk[2 + 4 * ib + l] = index & 255;
        qh |= (index >> 8) << (3 * l);
      }
      v.setUint16(34 + 2 * ib, qh, true);
    }
    const y = dequantize(ggml, "iq1_s", blk);
    for (let i = 0; i < 32; i++) {
      iq1s.push(pack(Array.from(y.subarray(8 * i, 8 * i + 8), (x) => exact(x - 0.125, 1, "iq1s"))));
    }
  }
  return { ksigns, iq2xxs, iq2xs, iq2s, iq3xxs, iq3s, iq1s };
}

function hex(x: number | bigint, digits: number): string {
  return `0x${x.toString(16).padStart(digits, "0")}`;
}

function table(name: string, type: string, values: (number | bigint)[], digits: number, perLine: number, doc: string): string {
  const lines: string[] = [];
  for (let i = 0; i < values.length; i += perLine) {
    lines.push(`    ${values.slice(i, i + perLine).map((v) => hex(v, digits)).join(", ")},`);
  }
  return `/// ${doc}\npub const ${name} = [${values.length}]${type}{\n${lines.join("\n")}\n};\n`;
}

function render(t: Tables): string {
  return `//! Lookup tables of ggml's grid-based IQ quantization types, as data.
//!
//! GENERATED by \`deno run -A tools/iq_grids.ts\` from the pinned llama.cpp build's libggml-base
//! (@node-llama-cpp/linux-x64@3.21.1): every entry was read back through ggml's own
//! \`dequantize_row_*\` on crafted blocks (see the tool). Do not edit; \`tools/iq_grids.ts --check\`
//! (run by the test suite) compares this file with the library.
//!
//! A grid entry packs its values little-endian, value j in byte j, as ggml's tables do: 8 unsigned
//! magnitudes per u64 (iq2*), 4 per u32 (iq3*), 8 signed values in {-1, 0, 1} per u64 (iq1s).

${table("ksigns", "u8", t.ksigns, 2, 16, "Sign bytes for 7-bit sign indices: bit j set = value j negative; bit 7 is the parity of bits 0-6.")}
${table("iq2xxs", "u64", t.iq2xxs, 16, 4, "IQ2_XXS: 256 entries of 8 magnitudes in {8, 25, 43}.")}
${table("iq2xs", "u64", t.iq2xs, 16, 4, "IQ2_XS: 512 entries of 8 magnitudes in {8, 25, 43}.")}
${table("iq2s", "u64", t.iq2s, 16, 4, "IQ2_S: 1024 entries of 8 magnitudes in {8, 25, 43}.")}
${table("iq3xxs", "u32", t.iq3xxs, 8, 8, "IQ3_XXS: 256 entries of 4 magnitudes in {4, 12, …, 62}.")}
${table("iq3s", "u32", t.iq3s, 8, 8, "IQ3_S: 512 entries of 4 magnitudes in {1, 3, …, 15}.")}
${table("iq1s", "u64", t.iq1s, 16, 4, "IQ1_S and IQ1_M: 2048 entries of 8 values in {-1, 0, 1} (two's complement bytes).")}`;
}

if (import.meta.main) {
  const text = render(readTables());
  if (Deno.args.includes("--check")) {
    const committed = Deno.readTextFileSync(OUT);
    if (committed !== text) {
      console.error(`${OUT.pathname} differs from the tables in the pinned libggml; regenerate with tools/iq_grids.ts`);
      Deno.exit(1);
    }
    console.log("iq_grids.zig matches the pinned libggml");
  } else {
    Deno.writeTextFileSync(OUT, text);
    console.log(`wrote ${OUT.pathname}`);
  }
}

export { readTables, render };
