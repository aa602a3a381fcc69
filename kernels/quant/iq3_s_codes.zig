//! IQ3_S weights repacked at load into 4-bit value codes, for matrix × vector.
//!
//! An IQ3_S value is d·(1 + 2·s_c)·±m with m one of the 8 magnitudes {1, 3, …, 15} its grid entry
//! holds, so sign and magnitude fit a nibble. Decoding the file's layout costs 64 table lookups per
//! block (9-bit grid indices, 4 values each), which keeps a one-token matmul far below memory
//! bandwidth (llama.cpp's IQ3_S dot product is bound the same way); the nibbles decode with one
//! `vpshufb` per 32 values. The price is 134 bytes per block instead of 110.
//!
//!   codes: [128]u8   pair p (values 64p..64p+63): byte 32p + i holds value 64p + i in its low
//!                    nibble and value 64p + 32 + i in its high nibble;
//!                    nibble = k | negative << 3, value = ±(2k + 1)·d·(1 + 2·s_c)
//!   scales: [4]u8    IQ3_S's 4-bit scales s_c, sub-block c in nibble c%2 of scales[c/2]
//!   d: f16           IQ3_S's block scale
//!
//! Dot products against Q8_K follow `iquants` (the nibble table gives q + 64 directly); results
//! equal IQ3_S's own exactly, the integers being the same.
const std = @import("std");
const common = @import("common.zig");
const iquants = @import("iquants.zig");
const iq3_s = @import("iq3_s.zig");

const U8x32 = common.U8x32;
const I8x32 = common.I8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    codes: [128]u8,
    scales: [4]u8,
    d: f16,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 134);
}

pub const scheme = iquants.scheme32;
/// What matmul and the tests call (`iquants.Kernels`, with this file's `blockDot`).
pub const kernels = iquants.Kernels(@This());

/// Signed value of each nibble code, and the same plus `iquants.offset` (what the dot multiplies).
const values: @Vector(16, i8) = .{ 1, 3, 5, 7, 9, 11, 13, 15, -1, -3, -5, -7, -9, -11, -13, -15 };
const offset_values: @Vector(16, i8) = values + @as(@Vector(16, i8), @splat(iquants.offset));

/// The codes of IQ3_S block `src`.
pub fn encode(src: *const iq3_s.Block, dst: *Block) void {
    const dec = iq3_s.decode(src);
    inline for (0..4) |p| {
        dst.codes[32 * p ..][0..32].* = nibbles(dec.q[2 * p]) | (nibbles(dec.q[2 * p + 1]) << @splat(4));
    }
    dst.scales = src.scales;
    dst.d = src.d;
}

/// k | negative << 3 for values ±(2k + 1).
inline fn nibbles(q: I8x32) U8x32 {
    const negative: U8x32 = @bitCast(@select(i8, q < @as(I8x32, @splat(0)), @as(I8x32, @splat(8)), @as(I8x32, @splat(0))));
    const magnitude: U8x32 = @bitCast(@abs(q));
    return ((magnitude -% @as(U8x32, @splat(1))) >> @splat(1)) | negative;
}

/// The layout's formula, one value at a time.
pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..256) |i| {
        const c = i / 32;
        const s = (blk.scales[c / 2] >> @intCast(4 * (c % 2))) & 15;
        const db = d * @as(f32, @floatFromInt(1 + 2 * @as(u32, s)));
        const byte = blk.codes[32 * (i / 64) + i % 32];
        const code = if (i % 64 < 32) byte & 15 else byte >> 4;
        const magnitude: f32 = @floatFromInt(2 * @as(u32, code & 7) + 1);
        out[i] = db * magnitude * @as(f32, if (code & 8 != 0) -1 else 1);
    }
}

/// The 8 sub-block scales 2·s_c + 1.
inline fn chunkScales(blk: *const Block) @Vector(8, i16) {
    const b = blk.scales;
    const nibbles8: @Vector(8, u8) = .{ b[0], b[0], b[1], b[1], b[2], b[2], b[3], b[3] };
    const s = (nibbles8 >> @Vector(8, u3){ 0, 4, 0, 4, 0, 4, 0, 4 }) & @as(@Vector(8, u8), @splat(15));
    return @as(@Vector(8, i16), s) * @as(@Vector(8, i16), @splat(2)) + @as(@Vector(8, i16), @splat(1));
}

pub inline fn decode(blk: *const Block) iquants.Decoded {
    var dec: iquants.Decoded = undefined;
    inline for (0..4) |p| {
        const v: U8x32 = blk.codes[32 * p ..][0..32].*;
        dec.q[2 * p] = common.lookup16(values, v & @as(U8x32, @splat(15)));
        dec.q[2 * p + 1] = common.lookup16(values, v >> @splat(4));
    }
    dec.scales = iquants.scalesPer32(chunkScales(blk));
    dec.d = blk.d;
    return dec;
}

/// One block against Q8_K activations: `iquants.blockDotDecoded` with the table lookups fused in.
pub inline fn blockDot(blk: *const Block, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
    const sc = chunkScales(blk);
    const dup = common.duplicateWords(sc);
    var isum: [2]I32x8 = @splat(@splat(0));
    inline for (0..4) |p| {
        const v: U8x32 = blk.codes[32 * p ..][0..32].*;
        const lo: U8x32 = @bitCast(common.lookup16(offset_values, v & @as(U8x32, @splat(15))));
        const hi: U8x32 = @bitCast(common.lookup16(offset_values, v >> @splat(4)));
        isum[0] = common.dotWords(isum[0], common.mulAddBytes(lo, xq[64 * p ..][0..32].*), common.broadcastWord(dup, 2 * p));
        isum[1] = common.dotWords(isum[1], common.mulAddBytes(hi, xq[64 * p + 32 ..][0..32].*), common.broadcastWord(dup, 2 * p + 1));
    }
    const correction = common.mulAddWords(iquants.scalesPer32(sc), bsums) *% @as(I32x8, @splat(iquants.offset));
    return @as(F32x8, @floatFromInt(isum[0] +% isum[1] -% correction)) * @as(F32x8, @splat(@as(f32, blk.d) * dx));
}

pub fn setD(blk: *Block, d: f16) void {
    blk.d = d;
}

test "IQ3_S codes: dequantization, block dot and unpacking agree with the references" {
    try iquants.checkFormat(@This(), 28);
}

test "IQ3_S codes give the IQ3_S block's values and products exactly" {
    var prng = common.testRng(29);
    const rand = prng.random();
    const q8_k = @import("q8_k.zig");
    var x: [256]f32 = undefined;
    var act_buf: [q8_k.Row.bytes(256)]u8 align(64) = undefined;
    const act = q8_k.Row.at(&act_buf, 256, 0);
    for (0..200) |_| {
        const src = iq3_s.kernels.randomBlock(rand);
        var blk: Block = undefined;
        encode(&src, &blk);
        var want: [256]f32 = undefined;
        var got: [256]f32 = undefined;
        iq3_s.kernels.dequantize(&src, &want);
        kernels.dequantize(&blk, &got);
        try std.testing.expectEqualSlices(f32, &want, &got);
        for (&x) |*v| v.* = rand.floatNorm(f32);
        q8_k.quantize(&x, 256, act);
        const bsums: I16x16 = act.bsums[0..16].*;
        try std.testing.expectEqual(common.sum(iq3_s.kernels.blockDot(&src, act.qs, bsums, act.d[0])), common.sum(blockDot(&blk, act.qs, bsums, act.d[0])));
    }
}
