/**
 * The native boundary under deliberately bad input: command lists with wrong lengths, unknown
 * opcodes, dead or foreign region ids, offsets and extents outside their region, weights that do
 * not fit, kernel sizes beyond what the kernels' buffers hold. Every case must come back as a
 * DeltaqError naming the problem (a crash would kill this test process), and the context must keep
 * working afterwards.
 */
import assert from "node:assert/strict";
import { DeltaqError } from "../../src/errors.ts";
import {
  allocate,
  CommandList,
  Context,
  GgmlType,
  mapFile,
  type Ref,
  type Region,
  registerWeight,
  repackBytes,
} from "../../src/native/kernels.ts";
import { basePaths } from "./bases.ts";

const paths = await basePaths();

const FLOATS = 16384; // 64 KiB buffer
const ctx = new Context(2);
const buf = allocate(FLOATS * 4);
const small = allocate(64); // 16 floats
const mapping = mapFile(paths.micro);
const freed = allocate(64);
freed.free();
const at = (offset: number, region: Region = buf): Ref => ({ region: region.id, offset });

// Weights on a buffer region (the kernels accept weights in any region).
const wRegion = allocate(4096);
const embed4x8 = registerWeight(wRegion, 0, GgmlType.F32, 8, 4, "embed"); // 4 rows of 8
const norm16 = registerWeight(wRegion, 256, GgmlType.F32, 16, 1, "norm");
const conv17 = registerWeight(wRegion, 512, GgmlType.F32, 17, 8, "conv K=17"); // 8 channels of 17 taps
const convF16 = registerWeight(wRegion, 1088, GgmlType.F16, 4, 8, "conv F16");
const heads2 = registerWeight(wRegion, 1152, GgmlType.F32, 2, 1, "per-head");
// 8 rows of one Q4_K block (144 bytes each): repackable.
const q4k8 = registerWeight(wRegion, 1280, GgmlType.Q4_K, 256, 8, "Q4_K 8 rows");
const q4k7 = registerWeight(wRegion, 1280, GgmlType.Q4_K, 256, 7, "Q4_K 7 rows");
const goneRegion = allocate(256);
const gone = registerWeight(goneRegion, 0, GgmlType.F32, 8, 1, "gone");
goneRegion.free();

function raw(words: number[]): CommandList {
  const list = new CommandList();
  list.words = new Uint32Array(words);
  list.length = words.length;
  return list;
}

interface Case {
  name: string;
  run: () => unknown;
  expect: string | RegExp;
}

const exec = (build: (c: CommandList) => CommandList) => () => ctx.exec(build(new CommandList()));
const geometry = (dim: number, nTokens = 1, nHeads = 1) => ({
  nTokens,
  xTokStride: dim * nHeads,
  yTokStride: dim * nHeads,
  nHeads,
  xHeadStride: dim,
  yHeadStride: dim,
  dim,
});

const cases: Case[] = [
  // --- framing
  {
    name: "unknown opcode",
    run: () => ctx.exec(raw([99, 2])),
    expect: "command 0 (unknown op): unknown opcode 99",
  },
  { name: "opcode 0", run: () => ctx.exec(raw([0, 2])), expect: "unknown opcode 0" },
  { name: "truncated header", run: () => ctx.exec(raw([4])), expect: "command 0: truncated header" },
  { name: "length word below 2", run: () => ctx.exec(raw([4, 1, 0, 0])), expect: "command 0: bad length 1" },
  {
    name: "length word past the list",
    run: () => ctx.exec(raw([4, 9, buf.id, 0, buf.id, 0, 1])),
    expect: "command 0: bad length 9",
  },
  {
    name: "missing operands",
    run: () => ctx.exec(raw([4, 4, buf.id, 0])),
    expect: "command is missing operands",
  },
  {
    name: "extra operands",
    run: () => ctx.exec(raw([4, 8, buf.id, 0, buf.id, 0, 1, 7])),
    expect: "6 operand words, expected 5",
  },
  {
    name: "second command bad",
    run: exec((c) => c.add(at(0), at(8), 8).add(at(0), at(FLOATS), 1)),
    expect: "command 1 (add)",
  },
  {
    name: "list length beyond its buffer",
    run: () => ctx.exec(Object.assign(raw([4, 7, buf.id, 0, buf.id, 0, 1]), { length: 1000 })),
    expect: "command list length 1000 does not fit its 7-word buffer",
  },
  // --- regions
  {
    name: "region that never existed",
    run: exec((c) => c.add({ region: 1234, offset: 0 }, at(0), 1)),
    expect: "memory region 1234 was freed or never existed",
  },
  {
    name: "region id beyond the table",
    run: exec((c) => c.add({ region: 0xffff, offset: 0 }, at(0), 1)),
    expect: "invalid memory region id 65535",
  },
  {
    name: "freed region",
    run: exec((c) => c.add(at(0, freed), at(0), 1)),
    expect: `memory region ${freed.id} was freed or never existed`,
  },
  {
    name: "writing into a file mapping",
    run: exec((c) => c.add(at(0, mapping), at(0), 1)),
    expect: `region ${mapping.id} is a read-only mapping, not a buffer`,
  },
  // --- extents
  {
    name: "operand past the end",
    run: exec((c) => c.add(at(FLOATS - 4), at(0), 8)),
    expect: `operand [${FLOATS - 4}, ${FLOATS + 4}) lies outside region ${buf.id} of ${FLOATS} f32 elements`,
  },
  { name: "offset 2^32-1", run: exec((c) => c.add(at(0xffffffff), at(0), 1)), expect: "lies outside region" },
  {
    name: "count 2^32-1",
    run: exec((c) => c.swiglu(at(0), at(0), at(0), 0xffffffff)),
    expect: "lies outside region",
  },
  {
    name: "small region, big count",
    run: exec((c) => c.add(at(0, small), at(0), 17)),
    expect: "lies outside region",
  },
  {
    name: "strides whose span overflows",
    run: exec((c) =>
      c.norm(
        at(0),
        at(0),
        {
          nTokens: 0xffffffff,
          xTokStride: 0xffffffff,
          yTokStride: 1,
          nHeads: 0xffffffff,
          xHeadStride: 0xffffffff,
          yHeadStride: 1,
          dim: 8,
        },
        null,
        1e-6,
      )
    ),
    expect: "operand extent overflows",
  },
  {
    name: "rows past the end",
    run: exec((c) => c.sigmoidGate(at(0), at(0), 1000, 8, 1000, 8)),
    expect: "lies outside region",
  },
  // --- weights in commands
  {
    name: "weight that never existed",
    run: exec((c) => c.matmul(777, at(0), 8, at(64), 4, 1)),
    expect: "weight 777 was freed or never existed",
  },
  {
    name: "weight of a freed region",
    run: exec((c) => c.matmul(gone, at(0), 8, at(64), 4, 1)),
    expect: `weight ${gone} was freed or never existed`,
  },
  {
    name: "matmul input too short",
    run: exec((c) => c.matmul(embed4x8, at(FLOATS - 4), 8, at(0), 4, 1)),
    expect: "lies outside region",
  },
  {
    name: "matmul output too short",
    run: exec((c) => c.matmul(embed4x8, at(0), 8, at(FLOATS - 2), 4, 1)),
    expect: "lies outside region",
  },
  {
    name: "embed: negative token id",
    run: () => embedIds([0, -1]),
    expect: "token id -1 is outside the vocabulary (0..3)",
  },
  {
    name: "embed: token id = rows",
    run: () => embedIds([4]),
    expect: "token id 4 is outside the vocabulary (0..3)",
  },
  {
    name: "embed: token id 2^31-1",
    run: () => embedIds([0x7fffffff]),
    expect: "token id 2147483647 is outside the vocabulary",
  },
  {
    name: "embed: output too short",
    run: exec((c) => c.embed(embed4x8, at(0), 2, at(FLOATS - 12), 8)),
    expect: "lies outside region",
  },
  {
    name: "norm weight of the wrong size",
    run: exec((c) => c.norm(at(0), at(0), geometry(8), norm16, 1e-6)),
    expect: "norm weight must be F32 with 8 values",
  },
  {
    name: "norm mode 2",
    run: () => ctx.exec(raw([3, 16, buf.id, 0, buf.id, 0, 1, 8, 8, 1, 8, 8, 8, 0xffffffff, 0, 2])),
    expect: "unknown norm mode 2",
  },
  {
    name: "rope: odd rotary dims",
    run: exec((c) => c.rope(at(0), 1, 16, 1, 16, 3, at(64))),
    expect: "rotary dims 3 must be even and at most the head stride 16",
  },
  {
    name: "rope: rotary dims beyond the head",
    run: exec((c) => c.rope(at(0), 1, 64, 2, 16, 32, at(64))),
    expect: "rotary dims 32 must be even and at most the head stride 16",
  },
  {
    name: "kv_store past the cache",
    run: exec((c) => c.kvStore(at(0), at(0), 1, 16, at(0, small), at(0, small), 2, { k: "f16", v: "f16", headDim: 16 })),
    expect: "lies outside region",
  },
  {
    name: "attention: head dim beyond 512",
    run: exec((c) =>
      c.attention(at(0), 1024, 1024, at(0), at(0), at(4096), {
        nTokens: 1,
        pos: 0,
        nHead: 1,
        nHeadKv: 1,
        headDim: 1024,
        scale: 1,
      })
    ),
    expect: "head dim 1024 must be a multiple of 8 up to 512",
  },
  {
    name: "attention: head dim not a multiple of 8",
    run: exec((c) =>
      c.attention(at(0), 12, 12, at(0), at(0), at(4096), {
        nTokens: 1,
        pos: 0,
        nHead: 1,
        nHeadKv: 1,
        headDim: 12,
        scale: 1,
      })
    ),
    expect: "head dim 12 must be a multiple of 8",
  },
  {
    name: "attention: a Q8_0 cache with a head dim that is not whole blocks",
    run: exec((c) =>
      c.attention(at(0), 16, 16, at(0), at(0), at(4096), {
        nTokens: 1,
        pos: 0,
        nHead: 1,
        nHeadKv: 1,
        headDim: 16,
        scale: 1,
        kType: "q8_0",
      })
    ),
    expect: "a q8_0 K cache needs a head dim that is a multiple of 32, not 16",
  },
  {
    name: "attention: unknown cache type",
    run: () => {
      const list = new CommandList().attention(at(0), 16, 16, at(0), at(0), at(4096), {
        nTokens: 1,
        pos: 0,
        nHead: 1,
        nHeadKv: 1,
        headDim: 16,
        scale: 1,
      });
      list.words[list.length - 1] = 7; // V type: not a cache type
      ctx.exec(list);
    },
    expect: "unknown V cache type 7",
  },
  {
    name: "kv_store: Q4_0 rows that are not whole blocks",
    run: exec((c) => c.kvStore(at(0), at(0), 1, 16, at(0), at(0), 0, { k: "q4_0", v: "f16", headDim: 16 })),
    expect: "K cache type 2 cannot hold rows of 16 values",
  },
  {
    name: "attention: no KV heads",
    run: exec((c) =>
      c.attention(at(0), 8, 8, at(0), at(0), at(4096), {
        nTokens: 1,
        pos: 0,
        nHead: 1,
        nHeadKv: 0,
        headDim: 8,
        scale: 1,
      })
    ),
    expect: "1 query heads cannot share 0 KV heads",
  },
  {
    name: "attention: cache past the end",
    run: exec((c) =>
      c.attention(at(0), 8, 8, at(0, small), at(0, small), at(4096), {
        nTokens: 1,
        pos: 100,
        nHead: 1,
        nHeadKv: 1,
        headDim: 8,
        scale: 1,
      })
    ),
    expect: "lies outside region",
  },
  {
    name: "conv1d: 17 taps (the kernel holds 16)",
    run: exec((c) => c.conv1dSilu(at(0), at(1024), conv17, at(2048), 1, 8, 8)),
    expect: "conv weight must be F32 {K, 8} with 2 <= K <= 16",
  },
  {
    name: "conv1d: F16 weights",
    run: exec((c) => c.conv1dSilu(at(0), at(1024), convF16, at(2048), 1, 8, 8)),
    expect: "conv weight must be F32",
  },
  {
    name: "conv1d: channels that do not match the weight",
    run: exec((c) => c.conv1dSilu(at(0), at(1024), conv17, at(2048), 1, 9, 9)),
    expect: "conv weight must be F32 {K, 9}",
  },
  {
    name: "deltanet: head dim 12",
    run: exec((c) => deltanet(c, 12)),
    expect: "DeltaNet head dim 12 must be a multiple of 8 up to 256",
  },
  {
    name: "deltanet: head dim 512",
    run: exec((c) => deltanet(c, 512)),
    expect: "DeltaNet head dim 512 must be a multiple of 8 up to 256",
  },
  {
    name: "deltanet: ssm_a of the wrong size",
    run: exec((c) => deltanet(c, 8, 4)),
    expect: "ssm_a must be F32 with 4 values",
  },
  {
    name: "deltanet: state past the end",
    run: exec((c) =>
      c.deltanet(at(0), 32, at(64), at(96), 2, heads2, heads2, at(FLOATS - 64), at(128), {
        nTokens: 1,
        nKHeads: 1,
        nVHeads: 2,
        headDim: 8,
      })
    ),
    expect: "lies outside region",
  },
  {
    name: "gated norm: weight of the wrong size",
    run: exec((c) => c.gatedNorm(at(0), at(64), norm16, at(128), 2, 8, 1e-6)),
    expect: "gated norm weight must be F32 with 8 values",
  },
  // --- checks on the TypeScript side of the boundary
  {
    name: "operand 2^32",
    run: exec((c) => c.add(at(2 ** 32), at(0), 1)),
    expect: "operand 4294967296 is not a 32-bit unsigned integer",
  },
  {
    name: "negative operand",
    run: exec((c) => c.add(at(0), at(0), -1)),
    expect: "operand -1 is not a 32-bit unsigned integer",
  },
  {
    name: "NaN operand",
    run: exec((c) => c.add(at(NaN), at(0), 1)),
    expect: "operand NaN is not a 32-bit unsigned integer",
  },
  {
    name: "exec on a freed context",
    run: () => {
      const c = new Context(1);
      c.free();
      c.free();
      c.exec(new CommandList().add(at(0), at(0), 1));
    },
    expect: "this model was disposed",
  },
  // --- weight registration
  {
    name: "weight past the end of its region",
    run: () => registerWeight(small, 0, GgmlType.F32, 8, 4),
    expect: "tensor (offset 0, size 128) extends past the end of its region (64 bytes)",
  },
  {
    name: "weight offset past the region",
    run: () => registerWeight(small, 1 << 40, GgmlType.F32, 1, 1),
    expect: "extends past the end of its region",
  },
  {
    name: "weight at an unaligned offset",
    run: () => registerWeight(wRegion, 2, GgmlType.F32, 8, 1),
    expect: "tensor offset 2 is not 4-byte aligned",
  },
  {
    name: "weight of an unsupported type",
    run: () => registerWeight(wRegion, 0, 9, 32, 1), // Q8_1: an activation format, never a weight
    expect: "tensor type 9 is not supported",
  },
  {
    name: "weight of an unknown type",
    run: () => registerWeight(wRegion, 0, 0xffffffff, 32, 1),
    expect: "tensor type 4294967295 is not supported",
  },
  {
    name: "weight row not a whole number of blocks",
    run: () => registerWeight(wRegion, 0, GgmlType.Q8_0, 33, 1),
    expect: "row of 33 values is not a whole number of q8_0 blocks",
  },
  {
    name: "empty weight",
    run: () => registerWeight(wRegion, 0, GgmlType.F32, 0, 4),
    expect: "empty tensor (0 x 4)",
  },
  {
    name: "weight whose size overflows",
    run: () => registerWeight(wRegion, 0, GgmlType.F32, 0xffffffff, 0xffffffff),
    expect: /tensor size overflows|extends past the end/,
  },
  {
    name: "weight on a freed region",
    run: () => registerWeight(freed, 0, GgmlType.F32, 1, 1),
    expect: "was freed or never existed",
  },
  {
    name: "weight shape beyond u32",
    run: () => registerWeight(wRegion, 0, GgmlType.F32, 8, 2 ** 32),
    expect: "shape 8 × 4294967296 is out of range",
  },
  {
    name: "weight at a NaN offset",
    run: () => registerWeight(wRegion, NaN, GgmlType.F32, 8, 1),
    expect: "offset NaN",
  },
  // --- allocation and mapping
  { name: "negative allocation", run: () => allocate(-1), expect: "cannot allocate -1 bytes" },
  { name: "NaN allocation", run: () => allocate(NaN), expect: "cannot allocate NaN bytes" },
  {
    name: "allocation larger than memory",
    run: () => allocate(2 ** 50),
    expect: /allocating 1125899906842624 bytes: cannot allocate/,
  },
  {
    name: "mapping a missing file",
    run: () => mapFile("/nonexistent/model.gguf"),
    expect: "/nonexistent/model.gguf: cannot open",
  },
  { name: "mapping an empty file", run: () => mapFile(emptyFile()), expect: "the file is empty" },
  {
    name: "repacking a matrix of a type without a repacked layout",
    run: () => ctx.repack(embed4x8, buf, 0),
    expect: "cannot be repacked (only Q4_K, Q3_K, Q2_K and IQ4_XS in whole row groups of 8 or 16, Q4_0 and Q8_0 with rows of a multiple of 256 values, and IQ3_S)",
  },
  {
    name: "repacking Q4_K rows that are not whole groups of 8",
    run: () => ctx.repack(q4k7, buf, 0),
    expect: "cannot be repacked",
  },
  { name: "repacking into a file mapping", run: () => ctx.repack(q4k8, mapping, 0), expect: "needs a buffer region" },
  { name: "repacking to an unaligned offset", run: () => ctx.repack(q4k8, buf, 32), expect: "not 64-byte aligned" },
  {
    name: "repacking past the end of the buffer",
    run: () => ctx.repack(q4k8, small, 0),
    expect: "extends past the end of its region",
  },
  { name: "repacking a freed weight", run: () => ctx.repack(gone, buf, 0), expect: "was freed or never existed" },
];

Deno.test("native: repackBytes is the matrix size for repackable weights and 0 otherwise", () => {
  assert.equal(repackBytes(q4k8), 8 * 144);
  assert.equal(repackBytes(q4k7), 0);
  assert.equal(repackBytes(embed4x8), 0);
  assert.equal(repackBytes(gone), 0);
});

function embedIds(ids: number[]) {
  const tokens = allocate(64);
  try {
    tokens.i32(0, ids.length).set(ids);
    ctx.exec(new CommandList().embed(embed4x8, at(0, tokens), ids.length, at(0), 8));
  } finally {
    tokens.free();
  }
}

function deltanet(c: CommandList, headDim: number, nVHeads = 2) {
  return c.deltanet(
    at(0),
    3 * headDim * nVHeads,
    at(8192),
    at(8192),
    nVHeads,
    heads2,
    heads2,
    at(9000),
    at(12000),
    {
      nTokens: 1,
      nKHeads: 1,
      nVHeads,
      headDim,
    },
  );
}

function emptyFile(): string {
  const p = Deno.makeTempFileSync({ suffix: ".gguf" });
  globalThis.addEventListener("unload", () => Deno.removeSync(p));
  return p;
}

for (const c of cases) {
  Deno.test(`native: ${c.name}`, () => {
    assert.throws(c.run, (e: unknown) => {
      assert.ok(e instanceof DeltaqError, `expected a DeltaqError, got ${e instanceof Error ? e.stack : e}`);
      if (typeof c.expect === "string") {
        assert.ok(
          e.message.includes(c.expect),
          `${JSON.stringify(e.message)} lacks ${JSON.stringify(c.expect)}`,
        );
      } else assert.match(e.message, c.expect);
      return true;
    });
  });
}

Deno.test("native: the context still computes correctly after every failure", () => {
  const a = buf.f32(0, 8), b = buf.f32(8, 8);
  for (let i = 0; i < 8; i++) [a[i], b[i]] = [i, 10 * i];
  ctx.exec(new CommandList().add(at(0), at(8), 8));
  assert.deepEqual(Array.from(buf.f32(0, 8)), [0, 11, 22, 33, 44, 55, 66, 77]);
  const rows = wRegion.f32(0, 32);
  for (let i = 0; i < 32; i++) rows[i] = i;
  const tokens = allocate(16);
  tokens.i32(0, 2).set([3, 1]);
  ctx.exec(new CommandList().embed(embed4x8, at(0, tokens), 2, at(100), 8));
  assert.deepEqual(Array.from(buf.f32(100, 16)), [
    24,
    25,
    26,
    27,
    28,
    29,
    30,
    31,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
  ]);
  tokens.free();
});
