//! Q6_K weights: 256 values in 210 bytes (d last).
//!
//!   ql: [128]u8      low 4 bits
//!   qh: [64]u8       high 2 bits
//!   scales: [16]i8   one scale per 16 values
//!   d: f16           block scale
//!
//! For half n ∈ {0, 1} (ql += 64n, qh += 32n, scales += 8n, values += 128n) and l < 32:
//!   value(l)      = d·scales[l/16]·((ql[l] & 15      | ((qh[l] >> 0) & 3) << 4) − 32)
//!   value(l + 32) = d·scales[l/16 + 2]·((ql[l+32] & 15 | ((qh[l] >> 2) & 3) << 4) − 32)
//!   value(l + 64) = d·scales[l/16 + 4]·((ql[l] >> 4    | ((qh[l] >> 4) & 3) << 4) − 32)
//!   value(l + 96) = d·scales[l/16 + 6]·((ql[l+32] >> 4 | ((qh[l] >> 6) & 3) << 4) − 32)
//!
//! So 32-value chunk c = 4n + i uses scales 2c and 2c+1. Dot products against Q8_K use the
//! unsigned 6-bit quants and fold the −32 in through the activation bsums, all in integers:
//!   dx·d·Σ_k scales[k]·(Σ q6·q8 − 32·bsums[k])
const std = @import("std");
const common = @import("common.zig");
const kquants = @import("kquants.zig");

const U8x32 = common.U8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    ql: [128]u8,
    qh: [64]u8,
    scales: [16]i8,
    d: f16,
};

pub const block_values = 256;

comptime {
    std.debug.assert(@sizeOf(Block) == 210);
}

pub const scheme = kquants.Scheme.q6_k;

/// The unsigned 6-bit quants of chunk c (values 32c..32c+31).
inline fn quants(blk: *const Block, comptime c: usize) U8x32 {
    const n = c / 4;
    const i = c % 4;
    const ql: U8x32 = blk.ql[64 * n + 32 * (i % 2) ..][0..32].*;
    const qh: U8x32 = blk.qh[32 * n ..][0..32].*;
    const low = if (i < 2) ql & @as(U8x32, @splat(15)) else ql >> @splat(4);
    return low | (((qh >> @splat(2 * i)) & @as(U8x32, @splat(3))) << @splat(4));
}

/// The 16 scales widened to i16.
inline fn scales16(blk: *const Block) I16x16 {
    const s: @Vector(16, i8) = blk.scales;
    return s;
}

pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..2) |n| for (0..32) |l| {
        const ql = blk.ql[64 * n ..];
        const qh = blk.qh[32 * n + l];
        const sc = blk.scales[8 * n ..];
        const is = l / 16;
        const q1 = @as(i32, (ql[l] & 15) | ((qh & 3) << 4)) - 32;
        const q2 = @as(i32, (ql[l + 32] & 15) | (((qh >> 2) & 3) << 4)) - 32;
        const q3 = @as(i32, (ql[l] >> 4) | (((qh >> 4) & 3) << 4)) - 32;
        const q4 = @as(i32, (ql[l + 32] >> 4) | (((qh >> 6) & 3) << 4)) - 32;
        const y = out[128 * n ..];
        y[l] = d * @as(f32, @floatFromInt(sc[is])) * @as(f32, @floatFromInt(q1));
        y[l + 32] = d * @as(f32, @floatFromInt(sc[is + 2])) * @as(f32, @floatFromInt(q2));
        y[l + 64] = d * @as(f32, @floatFromInt(sc[is + 4])) * @as(f32, @floatFromInt(q3));
        y[l + 96] = d * @as(f32, @floatFromInt(sc[is + 6])) * @as(f32, @floatFromInt(q4));
    };
}

pub fn dequantize(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    inline for (0..8) |c| {
        const q: [32]u8 = quants(blk, c);
        inline for (0..4) |i| {
            const scale: F32x8 = @splat(d * @as(f32, @floatFromInt(blk.scales[2 * c + i / 2])));
            const v: @Vector(8, i16) = @as(@Vector(8, u8), q[8 * i ..][0..8].*);
            out[32 * c + 8 * i ..][0..8].* = scale * @as(F32x8, @floatFromInt(v - @as(@Vector(8, i16), @splat(32))));
        }
    }
}

pub inline fn blockDot(blk: *const Block, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
    const p = prepare(blk);
    return preparedDot(&p, xq, bsums, dx);
}

/// A block unpacked for `preparedDot`: several tokens' dots against one block (a decode step of
/// several sequences, `kquants.dotRowsTokens`) unpack it once.
pub const Prepared = struct { chunks: [8]U8x32, s: I16x16, d: f32 };

pub inline fn prepare(blk: *const Block) Prepared {
    var p: Prepared = .{ .chunks = undefined, .s = scales16(blk), .d = blk.d };
    inline for (0..8) |c| p.chunks[c] = quants(blk, c);
    return p;
}

/// `blockDot` of a prepared block: the same operations, so the same bits.
pub inline fn preparedDot(p: *const Prepared, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
    const total = kquants.scale16Dot(p.chunks, p.s, xq) -% (common.mulAddWords(p.s, bsums) << @splat(5));
    return @as(F32x8, @floatFromInt(total)) * @as(F32x8, @splat(p.d * dx));
}

pub fn blockDotRef(blk: *const Block, xq: [*]const i8, bsums: [*]const i16, dx: f32) f32 {
    var isum: i64 = 0;
    for (0..8) |c| {
        const n = c / 4;
        const i = c % 4;
        for (0..32) |l| {
            const ql = blk.ql[64 * n + 32 * (i % 2) + l];
            const low: i64 = if (i < 2) ql & 15 else ql >> 4;
            const high: i64 = (blk.qh[32 * n + l] >> @intCast(2 * i)) & 3;
            isum += (low | high << 4) * xq[32 * c + l] * blk.scales[2 * c + l / 16];
        }
    }
    for (0..16) |k| isum -= 32 * @as(i64, blk.scales[k]) * bsums[k];
    return dx * @as(f32, blk.d) * @as(f32, @floatFromInt(isum));
}

pub fn unpack(blk: *const Block, out: *kquants.Unpacked) void {
    var chunks: [8]U8x32 = undefined;
    inline for (0..8) |c| chunks[c] = quants(blk, c);
    out.vals = kquants.interleaveVals(chunks);
    // Sub-block i of the tile is chunk i: scales 2i (values 0-15) and 2i+1 (values 16-31).
    const s: @Vector(16, i32) = @as(@Vector(16, i8), blk.scales);
    out.scales_lo = @shuffle(i32, s, undefined, [8]i32{ 0, 2, 4, 6, 8, 10, 12, 14 });
    out.scales_hi = @shuffle(i32, s, undefined, [8]i32{ 1, 3, 5, 7, 9, 11, 13, 15 });
    out.d = @splat(@as(f32, blk.d));
    out.mins = @splat(0);
    out.mins_hi = @splat(0);
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(0.0001 + rand.float(f32) * 0.0005);
    return blk;
}

test "Q6_K dequantization, block dot and unpacking agree with the references" {
    try kquants.checkFormat(@This(), 14);
}
