//! IQ4_XS weights: 256 values in 136 bytes, 4-bit indices into a fixed non-linear table.
//!
//!   d: f16            block scale
//!   scales_h: u16     top 2 bits of the eight 6-bit sub-block scales: bits 2i, 2i+1 for sub-block i
//!   scales_l: [4]u8   low 4 bits: low nibble of scales_l[i/2] for even i, high nibble for odd i
//!   qs: [128]u8       sub-block i (values 32i..32i+31): qs[16i+l] holds the index of value 32i+l
//!                     (low nibble) and of value 32i+16+l (high nibble), l < 16
//!
//!   value(32i+l) = d·(ls[i] − 32)·values[index]
//!
//! Dot products against Q8_K (as llama.cpp's `ggml_vec_dot_iq4_xs_q8_K`), per block:
//!   dx·d·Σ_i (ls[i] − 32)·Σ values[index]·q8
//! the table values being signed bytes. The GEMM tile needs unsigned bytes: it stores
//! values[index] + 128 and subtracts 128·Σq8 (from the activation's bsums).
const std = @import("std");
const common = @import("common.zig");
const kquants = @import("kquants.zig");

const U8x32 = common.U8x32;
const I8x32 = common.I8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

/// The 16 levels of IQ4_NL and IQ4_XS (`kvalues_iq4nl` in ggml-common.h, transcribed).
pub const values = [16]i8{ -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 };

pub const Block = extern struct {
    d: f16,
    scales_h: u16,
    scales_l: [4]u8,
    qs: [128]u8,
};

pub const block_values = 256;

comptime {
    std.debug.assert(@sizeOf(Block) == 136);
}

pub const scheme: kquants.Scheme = .{ .scale_values = 32, .offset = 128, .max_val = 255 };

/// Sub-block i's scale with its +32 removed (the reference).
pub fn scaleRef(blk: *const Block, i: usize) i32 {
    const low = (blk.scales_l[i / 2] >> @intCast(4 * (i % 2))) & 15;
    const high = (blk.scales_h >> @intCast(2 * i)) & 3;
    return @as(i32, low) + 16 * @as(i32, high) - 32;
}

/// All eight scales (−32 applied), lane i = sub-block i.
pub inline fn scales(blk: *const Block) I32x8 {
    const low_bytes: @Vector(4, u8) = blk.scales_l;
    const low_pairs: @Vector(8, u8) = @shuffle(u8, low_bytes, undefined, [8]i32{ 0, 0, 1, 1, 2, 2, 3, 3 });
    const low = (@as(@Vector(8, u32), low_pairs) >> @as(@Vector(8, u32), .{ 0, 4, 0, 4, 0, 4, 0, 4 })) & @as(@Vector(8, u32), @splat(15));
    const high = (@as(@Vector(8, u32), @splat(blk.scales_h)) >> @as(@Vector(8, u32), .{ 0, 2, 4, 6, 8, 10, 12, 14 })) & @as(@Vector(8, u32), @splat(3));
    return @as(I32x8, @bitCast(low | (high << @splat(4)))) - @as(I32x8, @splat(32));
}

/// The table indices of sub-blocks 2p and 2p+1, each in value order.
inline fn indices(blk: *const Block, comptime p: usize) [2]U8x32 {
    const bits: U8x32 = blk.qs[32 * p ..][0..32].*;
    const low = bits & @as(U8x32, @splat(15));
    const high = bits >> @splat(4);
    // Bytes 0-15 of `bits` are sub-block 2p, bytes 16-31 sub-block 2p+1.
    const masks = comptime blk: {
        var m: [2][32]i32 = undefined;
        for (0..2) |h| for (0..16) |l| {
            m[h][l] = 16 * h + l;
            m[h][16 + l] = ~@as(i32, 16 * h + l);
        };
        break :blk m;
    };
    return .{ @shuffle(u8, low, high, masks[0]), @shuffle(u8, low, high, masks[1]) };
}

pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..8) |i| {
        const dl = d * @as(f32, @floatFromInt(scaleRef(blk, i)));
        for (0..16) |l| {
            const q = blk.qs[16 * i + l];
            out[32 * i + l] = dl * @as(f32, @floatFromInt(values[q & 15]));
            out[32 * i + 16 + l] = dl * @as(f32, @floatFromInt(values[q >> 4]));
        }
    }
}

pub fn dequantize(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    const s: [8]i32 = scales(blk);
    inline for (0..4) |p| {
        const idx = indices(blk, p);
        inline for (0..2) |h| {
            const w: [32]i8 = common.lookup16(values, idx[h]);
            const dl: F32x8 = @splat(d * @as(f32, @floatFromInt(s[2 * p + h])));
            inline for (0..4) |k| {
                const v: @Vector(8, i8) = w[8 * k ..][0..8].*;
                out[64 * p + 32 * h + 8 * k ..][0..8].* = dl * @as(F32x8, @floatFromInt(v));
            }
        }
    }
}

/// One block's contribution to a dot product with Q8_K activations, as 8 partial sums.
pub inline fn blockDot(blk: *const Block, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
    _ = bsums;
    const s: [8]i32 = scales(blk);
    var isum: [2]I32x8 = @splat(@splat(0));
    inline for (0..4) |p| {
        const idx = indices(blk, p);
        inline for (0..2) |h| {
            const w = common.lookup16(values, idx[h]);
            const x: I8x32 = xq[64 * p + 32 * h ..][0..32].*;
            // |w|·sign(x, w): table values are ≥ −127, so neither side is −128.
            const prod = common.mulAddBytes(@bitCast(common.applySign(w, w)), common.applySign(x, w));
            isum[h] = common.dotWords(isum[h], prod, @splat(@intCast(s[2 * p + h])));
        }
    }
    return @as(F32x8, @floatFromInt(isum[0] +% isum[1])) * @as(F32x8, @splat(@as(f32, blk.d) * dx));
}

/// The same sum value by value from the format's definition: the reference for `blockDot` and
/// `unpack`.
pub fn blockDotRef(blk: *const Block, xq: [*]const i8, bsums: [*]const i16, dx: f32) f32 {
    _ = bsums;
    var isum: i64 = 0;
    for (0..8) |i| {
        var s: i64 = 0;
        for (0..16) |l| {
            const q = blk.qs[16 * i + l];
            s += @as(i64, values[q & 15]) * xq[32 * i + l] + @as(i64, values[q >> 4]) * xq[32 * i + 16 + l];
        }
        isum += s * scaleRef(blk, i);
    }
    return dx * @as(f32, blk.d) * @as(f32, @floatFromInt(isum));
}

/// Unpacks a block for the GEMM tile (`scheme`): table values + 128 as unsigned bytes.
pub fn unpack(blk: *const Block, out: *kquants.Unpacked) void {
    var chunks: [8]U8x32 = undefined;
    inline for (0..4) |p| {
        const idx = indices(blk, p);
        inline for (0..2) |h| {
            // v + 128 as a byte is v with its top bit flipped.
            chunks[2 * p + h] = @as(U8x32, @bitCast(common.lookup16(values, idx[h]))) ^ @as(U8x32, @splat(0x80));
        }
    }
    out.vals = kquants.interleaveVals(chunks);
    out.scales_lo = scales(blk);
    out.scales_hi = out.scales_lo;
    out.d = @splat(@as(f32, blk.d));
    out.mins = @splat(0);
    out.mins_hi = @splat(0);
}

/// A random but valid block: any bytes, with a small positive scale.
pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(0.00002 + rand.float(f32) * 0.0001);
    return blk;
}

test "IQ4_XS scale unpacking matches the packing rule" {
    var prng = common.testRng(5);
    for (0..1000) |_| {
        var blk: Block = undefined;
        prng.random().bytes(std.mem.asBytes(&blk));
        const got: [8]i32 = scales(&blk);
        for (0..8) |i| try std.testing.expectEqual(scaleRef(&blk, i), got[i]);
    }
}

test "IQ4_XS dequantization, block dot and unpacking agree with the references" {
    try kquants.checkFormat(@This(), 17);
}
