//! Q3_K weights: 256 values in 110 bytes.
//!
//!   hmask: [32]u8     high bits: bit c of hmask[l] belongs to value 32c+l
//!   qs: [64]u8        low 2 bits: bits 2j, 2j+1 of qs[32n+l] belong to value 128n+32j+l
//!   scales: [12]u8    sixteen 6-bit scales, stored +32 (packing: `scaleRef`)
//!   d: f16            block scale
//!
//! With c = 4n+j the 32-value chunk, l < 32, q2 = (qs[32n+l] >> 2j) & 3, h = bit c of hmask[l]:
//!   value(32c+l) = d·(sc[2c + l/16] − 32)·(q2 + 4h − 4)
//! so chunk c uses scales 2c and 2c+1, as in Q6_K.
//!
//! Dot products against Q8_K use the unsigned 3-bit quants q3 = q2 + 4h and fold the −4 in through
//! the activation bsums, all in integers (what llama.cpp's `ggml_vec_dot_q3_K_q8_K` sums):
//!   dx·d·Σ_k s[k]·(Σ q3·q8 − 4·bsums[k]),  s[k] = sc[k] − 32
const std = @import("std");
const common = @import("common.zig");
const kquants = @import("kquants.zig");

const U8x32 = common.U8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    hmask: [32]u8,
    qs: [64]u8,
    scales: [12]u8,
    d: f16,
};

pub const block_values = 256;

comptime {
    std.debug.assert(@sizeOf(Block) == 110);
}

pub const scheme: kquants.Scheme = .{ .scale_values = 16, .offset = 4 };

/// Scale k (0..15) with its +32 removed, from the packing rule: the low 4 bits are a nibble of
/// bytes 0-7 (low nibbles for k < 8, high for k ≥ 8), the top 2 bits come from bytes 8-11.
pub fn scaleRef(k: usize, s: *const [12]u8) i8 {
    const low = if (k < 8) s[k] & 15 else s[k - 8] >> 4;
    const high = (s[8 + k % 4] >> @intCast(2 * (k / 4))) & 3;
    return @as(i8, @intCast(low | high << 4)) - 32;
}

/// All sixteen scales (−32 applied) at once, on the packed bytes read as three little-endian words.
pub inline fn scales(s: *const [12]u8) @Vector(16, i8) {
    const a = std.mem.readInt(u32, s[0..4], .little);
    const b = std.mem.readInt(u32, s[4..8], .little);
    const c = std.mem.readInt(u32, s[8..12], .little);
    const unsigned: @Vector(16, u8) = @bitCast(scaleWords(u32, a, b, c));
    return @bitCast(unsigned -% @as(@Vector(16, u8), @splat(32)));
}

/// The packing rule on the 12 scale bytes read as little-endian words a, b, c — of one block
/// (`u32`) or of several side by side (`@Vector(n, u32)`, as repacked Q3_K keeps them): word q of
/// the result holds scales 4q..4q+3 (stored +32), one per byte.
pub inline fn scaleWords(comptime W: type, a: W, b: W, c: W) [4]W {
    const low4 = common.rep(W, 0x0f0f0f0f);
    const low2 = common.rep(W, 0x03030303);
    return .{
        (a & low4) | ((c & low2) << common.rep(W, 4)),
        (b & low4) | (((c >> common.rep(W, 2)) & low2) << common.rep(W, 4)),
        ((a >> common.rep(W, 4)) & low4) | (((c >> common.rep(W, 4)) & low2) << common.rep(W, 4)),
        ((b >> common.rep(W, 4)) & low4) | (((c >> common.rep(W, 6)) & low2) << common.rep(W, 4)),
    };
}

/// The unsigned 3-bit quants q2 + 4h of chunk c (values 32c..32c+31).
inline fn quants(blk: *const Block, comptime c: usize) U8x32 {
    const bits: U8x32 = blk.qs[32 * (c / 4) ..][0..32].*;
    const hmask: U8x32 = blk.hmask;
    const low = (bits >> @splat(2 * (c % 4))) & @as(U8x32, @splat(3));
    const high = if (c >= 2) (hmask >> @splat(c - 2)) & @as(U8x32, @splat(4)) else (hmask << @splat(2 - c)) & @as(U8x32, @splat(4));
    return low | high;
}

pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..8) |c| for (0..32) |l| {
        const q2: i32 = (blk.qs[32 * (c / 4) + l] >> @intCast(2 * (c % 4))) & 3;
        const h: i32 = (blk.hmask[l] >> @intCast(c)) & 1;
        const s: f32 = @floatFromInt(scaleRef(2 * c + l / 16, &blk.scales));
        out[32 * c + l] = d * s * @as(f32, @floatFromInt(q2 + 4 * h - 4));
    };
}

pub fn dequantize(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    const s: [16]i8 = scales(&blk.scales);
    inline for (0..8) |c| {
        const q: [32]u8 = quants(blk, c);
        inline for (0..4) |i| {
            const scale: F32x8 = @splat(d * @as(f32, @floatFromInt(s[2 * c + i / 2])));
            const v: @Vector(8, i16) = @as(@Vector(8, u8), q[8 * i ..][0..8].*);
            out[32 * c + 8 * i ..][0..8].* = scale * @as(F32x8, @floatFromInt(v - @as(@Vector(8, i16), @splat(4))));
        }
    }
}

/// One block's contribution to a dot product with Q8_K activations, as 8 partial sums.
pub inline fn blockDot(blk: *const Block, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
    const s: I16x16 = scales(&blk.scales);
    var chunks: [8]U8x32 = undefined;
    inline for (0..8) |c| chunks[c] = quants(blk, c);
    const total = kquants.scale16Dot(chunks, s, xq) -% (common.mulAddWords(s, bsums) << @splat(2));
    return @as(F32x8, @floatFromInt(total)) * @as(F32x8, @splat(@as(f32, blk.d) * dx));
}

/// The same sum value by value from the format's definition: the reference for `blockDot` and
/// `unpack`.
pub fn blockDotRef(blk: *const Block, xq: [*]const i8, bsums: [*]const i16, dx: f32) f32 {
    _ = bsums;
    var isum: i64 = 0;
    for (0..8) |c| for (0..32) |l| {
        const q2: i64 = (blk.qs[32 * (c / 4) + l] >> @intCast(2 * (c % 4))) & 3;
        const h: i64 = (blk.hmask[l] >> @intCast(c)) & 1;
        isum += @as(i64, scaleRef(2 * c + l / 16, &blk.scales)) * (q2 + 4 * h - 4) * xq[32 * c + l];
    };
    return dx * @as(f32, blk.d) * @as(f32, @floatFromInt(isum));
}

/// Unpacks a block for the GEMM tile (`scheme`).
pub fn unpack(blk: *const Block, out: *kquants.Unpacked) void {
    var chunks: [8]U8x32 = undefined;
    inline for (0..8) |c| chunks[c] = quants(blk, c);
    out.vals = kquants.interleaveVals(chunks);
    // Sub-block i of the tile is chunk i: scales 2i (values 0-15) and 2i+1 (values 16-31).
    const s: @Vector(16, i32) = scales(&blk.scales);
    out.scales_lo = @shuffle(i32, s, undefined, [8]i32{ 0, 2, 4, 6, 8, 10, 12, 14 });
    out.scales_hi = @shuffle(i32, s, undefined, [8]i32{ 1, 3, 5, 7, 9, 11, 13, 15 });
    out.d = @splat(@as(f32, blk.d));
    out.mins = @splat(0);
    out.mins_hi = @splat(0);
}

/// A random but valid block: any bytes, with a small positive scale.
pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(0.0001 + rand.float(f32) * 0.0005);
    return blk;
}

test "Q3_K scale unpacking matches the packing rule" {
    var prng = common.testRng(4);
    for (0..1000) |_| {
        var s: [12]u8 = undefined;
        prng.random().bytes(&s);
        const got: [16]i8 = scales(&s);
        for (0..16) |k| try std.testing.expectEqual(scaleRef(k, &s), got[k]);
    }
}

test "Q3_K dequantization, block dot and unpacking agree with the references" {
    try kquants.checkFormat(@This(), 15);
}
