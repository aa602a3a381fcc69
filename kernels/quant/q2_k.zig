//! Q2_K weights: 256 values in 84 bytes.
//!
//!   scales: [16]u8    per 16 values: a 4-bit scale (low nibble) and a 4-bit min (high nibble)
//!   qs: [64]u8        2-bit quants: bits 2j, 2j+1 of qs[32n+l] belong to value 128n+32j+l
//!   d: f16, dmin: f16 block scales of the scales and of the mins
//!
//! With c = 4n+j the 32-value chunk, l < 32, q = (qs[32n+l] >> 2j) & 3, k = 2c + l/16:
//!   value(32c+l) = d·(scales[k] & 15)·q − dmin·(scales[k] >> 4)
//!
//! Dot products against Q8_K (as llama.cpp's `ggml_vec_dot_q2_K_q8_K`), per block:
//!   dx·d·Σ_k sc[k]·Σ q·q8  −  dx·dmin·Σ_k m[k]·bsums[k]
const std = @import("std");
const common = @import("common.zig");
const kquants = @import("kquants.zig");

const U8x32 = common.U8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    scales: [16]u8,
    qs: [64]u8,
    d: f16,
    dmin: f16,
};

pub const block_values = 256;

comptime {
    std.debug.assert(@sizeOf(Block) == 84);
}

/// The GEMM tile multiplies quants already scaled (q·sc ≤ 45): integer sums with one scale
/// fewer per sub-block, the same integers.
pub const scheme: kquants.Scheme = .{ .scale_values = 256, .mins = .per16 };

/// The 2-bit quants of chunk c (values 32c..32c+31).
inline fn quants(blk: *const Block, comptime c: usize) U8x32 {
    const bits: U8x32 = blk.qs[32 * (c / 4) ..][0..32].*;
    return (bits >> @splat(2 * (c % 4))) & @as(U8x32, @splat(3));
}

pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    const dmin: f32 = blk.dmin;
    for (0..8) |c| for (0..32) |l| {
        const q: u8 = (blk.qs[32 * (c / 4) + l] >> @intCast(2 * (c % 4))) & 3;
        const sm = blk.scales[2 * c + l / 16];
        out[32 * c + l] = d * @as(f32, @floatFromInt(sm & 15)) * @as(f32, @floatFromInt(q)) - dmin * @as(f32, @floatFromInt(sm >> 4));
    };
}

pub fn dequantize(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    const dmin: f32 = blk.dmin;
    inline for (0..8) |c| {
        const q: [32]u8 = quants(blk, c);
        inline for (0..4) |i| {
            const sm = blk.scales[2 * c + i / 2];
            const scale: F32x8 = @splat(d * @as(f32, @floatFromInt(sm & 15)));
            const min: F32x8 = @splat(dmin * @as(f32, @floatFromInt(sm >> 4)));
            const v: @Vector(8, u8) = q[8 * i ..][0..8].*;
            out[32 * c + 8 * i ..][0..8].* = scale * @as(F32x8, @floatFromInt(v)) - min;
        }
    }
}

/// One block's contribution to a dot product with Q8_K activations, as 8 partial sums.
pub inline fn blockDot(blk: *const Block, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
    const packed_sm: @Vector(16, u8) = blk.scales;
    var chunks: [8]U8x32 = undefined;
    inline for (0..8) |c| chunks[c] = quants(blk, c);
    const isum = kquants.scale16Dot(chunks, packed_sm & @as(@Vector(16, u8), @splat(15)), xq);
    const imin = common.mulAddWords(packed_sm >> @splat(4), bsums);
    const d: F32x8 = @splat(@as(f32, blk.d) * dx);
    const dmin: F32x8 = @splat(@as(f32, blk.dmin) * dx);
    return @as(F32x8, @floatFromInt(isum)) * d - @as(F32x8, @floatFromInt(imin)) * dmin;
}

/// The same scheme value by value in plain integers: the reference for `blockDot` and `unpack`.
pub fn blockDotRef(blk: *const Block, xq: [*]const i8, bsums: [*]const i16, dx: f32) f32 {
    var isum: i64 = 0;
    var imin: i64 = 0;
    for (0..16) |k| {
        var s: i64 = 0;
        for (0..16) |l| {
            const pos = 16 * k + l;
            const c = pos / 32;
            const q: i64 = (blk.qs[32 * (c / 4) + pos % 32] >> @intCast(2 * (c % 4))) & 3;
            s += q * xq[pos];
        }
        isum += s * (blk.scales[k] & 15);
        imin += @as(i64, blk.scales[k] >> 4) * bsums[k];
    }
    return dx * (@as(f32, blk.d) * @as(f32, @floatFromInt(isum)) - @as(f32, blk.dmin) * @as(f32, @floatFromInt(imin)));
}

/// Shuffle mask: element 0 in lanes 0-15, element 1 in lanes 16-31.
const halves = blk: {
    var m: [32]i32 = undefined;
    for (&m, 0..) |*e, l| e.* = if (l < 16) 0 else 1;
    break :blk m;
};

/// Unpacks a block for the GEMM tile (`scheme`): quants times their scales.
pub fn unpack(blk: *const Block, out: *kquants.Unpacked) void {
    const sm: [16]u8 = blk.scales;
    var chunks: [8]U8x32 = undefined;
    inline for (0..8) |c| {
        // Values 0-15 of chunk c take scale 2c, values 16-31 scale 2c+1.
        const pair = @Vector(2, u8){ sm[2 * c] & 15, sm[2 * c + 1] & 15 };
        const sc = @shuffle(u8, pair, undefined, halves);
        chunks[c] = quants(blk, c) * sc;
    }
    out.vals = kquants.interleaveVals(chunks);
    // Sub-block i of the tile is chunk i: mins 2i (values 0-15) and 2i+1 (16-31).
    const m: @Vector(16, f32) = @floatFromInt(@as(@Vector(16, u8), sm) >> @splat(4));
    const even = [8]i32{ 0, 2, 4, 6, 8, 10, 12, 14 };
    const odd = [8]i32{ 1, 3, 5, 7, 9, 11, 13, 15 };
    out.scales_lo = @splat(1);
    out.scales_hi = @splat(1);
    out.d = @splat(@as(f32, blk.d));
    const neg_dmin: F32x8 = @splat(-@as(f32, blk.dmin));
    out.mins = neg_dmin * @shuffle(f32, m, undefined, even);
    out.mins_hi = neg_dmin * @shuffle(f32, m, undefined, odd);
}

/// A random but valid block: any bytes, with small positive scales.
pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(0.0005 + rand.float(f32) * 0.002);
    blk.dmin = @floatCast(0.0005 + rand.float(f32) * 0.002);
    return blk;
}

test "Q2_K dequantization, block dot and unpacking agree with the references" {
    try kquants.checkFormat(@This(), 16);
}
