//! Q5_K weights: 256 values in 176 bytes.
//!
//!   d: f16, dmin: f16   block scales
//!   scales: [12]u8      eight 6-bit scales and mins, packed as in Q4_K (`q4_k.scalesAndMins`)
//!   qh: [32]u8          fifth bits: bit 2g of qh[l] for value 64g+l, bit 2g+1 for 64g+32+l
//!   qs: [128]u8         low 4 bits, laid out as Q4_K's qs
//!
//!   value(64g+l)    = d·sc[2g]·((qs[32g+l] & 15) + 16·bit(qh[l], 2g)) − dmin·m[2g]
//!   value(64g+32+l) = d·sc[2g+1]·((qs[32g+l] >> 4) + 16·bit(qh[l], 2g+1)) − dmin·m[2g+1]
//!
//! Dot products against Q8_K follow Q4_K exactly, with 5-bit quants.
const std = @import("std");
const common = @import("common.zig");
const kquants = @import("kquants.zig");
const q4_k = @import("q4_k.zig");

const U8x32 = common.U8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    dmin: f16,
    scales: [12]u8,
    qh: [32]u8,
    qs: [128]u8,
};

pub const block_values = 256;

comptime {
    std.debug.assert(@sizeOf(Block) == 176);
}

pub const scheme = kquants.Scheme.q4_k;

/// The 5-bit quants of sub-blocks 2g (low nibbles) and 2g+1 (high nibbles).
inline fn quants(blk: *const Block, comptime g: usize) [2]U8x32 {
    const bits: U8x32 = blk.qs[32 * g ..][0..32].*;
    const qh: U8x32 = blk.qh;
    const one: U8x32 = @splat(1);
    const lo_high = ((qh >> @splat(2 * g)) & one) << @splat(4);
    const hi_high = ((qh >> @splat(2 * g + 1)) & one) << @splat(4);
    return .{ (bits & @as(U8x32, @splat(15))) | lo_high, (bits >> @splat(4)) | hi_high };
}

pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    const dmin: f32 = blk.dmin;
    for (0..4) |g| for (0..32) |l| {
        const lo = q4_k.scaleMinRef(2 * g, &blk.scales);
        const hi = q4_k.scaleMinRef(2 * g + 1, &blk.scales);
        const q = blk.qs[32 * g + l];
        const h = blk.qh[l];
        const q_lo: u8 = (q & 15) + (if ((h >> @intCast(2 * g)) & 1 != 0) @as(u8, 16) else 0);
        const q_hi: u8 = (q >> 4) + (if ((h >> @intCast(2 * g + 1)) & 1 != 0) @as(u8, 16) else 0);
        out[64 * g + l] = d * @as(f32, @floatFromInt(lo.sc)) * @as(f32, @floatFromInt(q_lo)) - dmin * @as(f32, @floatFromInt(lo.m));
        out[64 * g + 32 + l] = d * @as(f32, @floatFromInt(hi.sc)) * @as(f32, @floatFromInt(q_hi)) - dmin * @as(f32, @floatFromInt(hi.m));
    };
}

pub fn dequantize(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    const dmin: f32 = blk.dmin;
    const sm = q4_k.scalesAndMins(&blk.scales);
    inline for (0..4) |g| {
        const halves = quants(blk, g);
        inline for (0..2) |h| {
            const j = 2 * g + h;
            const scale: F32x8 = @splat(d * @as(f32, @floatFromInt(sm.sc[j])));
            const min: F32x8 = @splat(dmin * @as(f32, @floatFromInt(sm.m[j])));
            inline for (0..4) |i| {
                const q: @Vector(8, u8) = @as([32]u8, halves[h])[8 * i ..][0..8].*;
                out[32 * j + 8 * i ..][0..8].* = scale * @as(F32x8, @floatFromInt(q)) - min;
            }
        }
    }
}

pub inline fn blockDot(blk: *const Block, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
    const sm = q4_k.scalesAndMins(&blk.scales);
    const sc = common.duplicateWords(sm.sc);
    // Two sums: the fused multiply-add has a 4-cycle latency the other row's chain cannot hide.
    var isum: [2]I32x8 = @splat(@splat(0));
    inline for (0..4) |g| {
        const q = quants(blk, g);
        const lo = common.mulAddBytes(q[0], xq[64 * g ..][0..32].*);
        const hi = common.mulAddBytes(q[1], xq[64 * g + 32 ..][0..32].*);
        isum[0] = common.dotWords(isum[0], lo, common.broadcastWord(sc, 2 * g));
        isum[1] = common.dotWords(isum[1], hi, common.broadcastWord(sc, 2 * g + 1));
    }
    const imin = common.mulAddWords(q4_k.pairUp(sm.m), bsums);
    const d: F32x8 = @splat(@as(f32, blk.d) * dx);
    const dmin: F32x8 = @splat(@as(f32, blk.dmin) * dx);
    return @as(F32x8, @floatFromInt(isum[0] +% isum[1])) * d - @as(F32x8, @floatFromInt(imin)) * dmin;
}

pub fn blockDotRef(blk: *const Block, xq: [*]const i8, bsums: [*]const i16, dx: f32) f32 {
    var isum: i64 = 0;
    var imin: i64 = 0;
    for (0..8) |j| {
        const sm = q4_k.scaleMinRef(j, &blk.scales);
        var s: i64 = 0;
        for (0..32) |l| {
            const byte = blk.qs[32 * (j / 2) + l];
            const low: i64 = if (j % 2 == 0) byte & 15 else byte >> 4;
            const high: i64 = (blk.qh[l] >> @intCast(j)) & 1;
            s += (low + 16 * high) * xq[32 * j + l];
        }
        isum += s * sm.sc;
        imin += @as(i64, sm.m) * (@as(i64, bsums[2 * j]) + bsums[2 * j + 1]);
    }
    return dx * (@as(f32, blk.d) * @as(f32, @floatFromInt(isum)) - @as(f32, blk.dmin) * @as(f32, @floatFromInt(imin)));
}

pub fn unpack(blk: *const Block, out: *kquants.Unpacked) void {
    const sm = q4_k.scalesAndMins(&blk.scales);
    var chunks: [8]U8x32 = undefined;
    inline for (0..4) |g| {
        const q = quants(blk, g);
        chunks[2 * g] = q[0];
        chunks[2 * g + 1] = q[1];
    }
    q4_k.setUnpacked(blk.d, blk.dmin, sm.sc, sm.m, chunks, out);
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(0.0005 + rand.float(f32) * 0.002);
    blk.dmin = @floatCast(0.0005 + rand.float(f32) * 0.002);
    return blk;
}

test "Q5_K dequantization, block dot and unpacking agree with the references" {
    try kquants.checkFormat(@This(), 13);
}
