//! Q4_K weights: 256 values in 144 bytes.
//!
//!   d: f16, dmin: f16   block scales
//!   scales: [12]u8      eight 6-bit scales sc[j] and eight 6-bit mins m[j] (see `scalesAndMins`)
//!   qs: [128]u8         4-bit quants: byte 32g+l holds value 64g+l (low nibble) and 64g+32+l (high)
//!
//!   value(64g+l)    = d·sc[2g]·(qs[32g+l] & 15) − dmin·m[2g]
//!   value(64g+32+l) = d·sc[2g+1]·(qs[32g+l] >> 4) − dmin·m[2g+1]        g < 4, l < 32
//!
//! Dot products run against Q8_K activations (x ≈ dx·q8): per block
//!   dx·d·Σ_j sc[j]·Σ q4·q8  −  dx·dmin·Σ_j m[j]·(Σ q8 over sub-block j)
//! with the second sum taken from the activation's precomputed bsums.
const std = @import("std");
const common = @import("common.zig");
const kquants = @import("kquants.zig");
const q8_k = @import("q8_k.zig");

const U8x32 = common.U8x32;
const I8x32 = common.I8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    dmin: f16,
    scales: [12]u8,
    qs: [128]u8,
};

pub const block_values = 256;

comptime {
    std.debug.assert(@sizeOf(Block) == 144);
}

/// Sub-block j's scale and min, straight from the packing rule (the reference).
pub fn scaleMinRef(j: usize, s: *const [12]u8) struct { sc: u8, m: u8 } {
    if (j < 4) return .{ .sc = s[j] & 63, .m = s[j + 4] & 63 };
    return .{ .sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4), .m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4) };
}

/// All eight scales and mins at once (Q5_K packs them the same way), from `scaleWords`.
pub inline fn scalesAndMins(s: *const [12]u8) struct { sc: @Vector(8, u8), m: @Vector(8, u8) } {
    const a = std.mem.readInt(u32, s[0..4], .little);
    const b = std.mem.readInt(u32, s[4..8], .little);
    const c = std.mem.readInt(u32, s[8..12], .little);
    const w = scaleWords(u32, a, b, c);
    return .{ .sc = @bitCast([2]u32{ w.sc[0], w.sc[1] }), .m = @bitCast([2]u32{ w.m[0], w.m[1] }) };
}

/// The packing rule on the 12 scale bytes read as little-endian words a, b, c — of one block
/// (`u32`) or of several side by side (`@Vector(n, u32)`, as repacked Q4_K keeps them):
/// sc[0..4] = a & 63, m[0..4] = b & 63, sc[4..8] = low nibbles of c plus a's top two bits,
/// m[4..8] = high nibbles of c plus b's top two bits; one value per byte of each result word.
pub inline fn scaleWords(comptime W: type, a: W, b: W, c: W) struct { sc: [2]W, m: [2]W } {
    const low6 = common.rep(W, 0x3f3f3f3f);
    const low4 = common.rep(W, 0x0f0f0f0f);
    const top2 = common.rep(W, 0x30303030);
    return .{
        .sc = .{ a & low6, (c & low4) | ((a >> common.rep(W, 2)) & top2) },
        .m = .{ b & low6, ((c >> common.rep(W, 4)) & low4) | ((b >> common.rep(W, 2)) & top2) },
    };
}

/// [m0, m0, m1, m1, …, m7, m7] as i16: multiplies the activation's 16 bsums pairwise.
pub inline fn pairUp(m: @Vector(8, u8)) I16x16 {
    const wide: @Vector(8, i16) = m;
    return @shuffle(i16, wide, undefined, [16]i32{ 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7 });
}

pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    const dmin: f32 = blk.dmin;
    for (0..4) |g| for (0..32) |l| {
        const lo = scaleMinRef(2 * g, &blk.scales);
        const hi = scaleMinRef(2 * g + 1, &blk.scales);
        const q = blk.qs[32 * g + l];
        out[64 * g + l] = d * @as(f32, @floatFromInt(lo.sc)) * @as(f32, @floatFromInt(q & 15)) - dmin * @as(f32, @floatFromInt(lo.m));
        out[64 * g + 32 + l] = d * @as(f32, @floatFromInt(hi.sc)) * @as(f32, @floatFromInt(q >> 4)) - dmin * @as(f32, @floatFromInt(hi.m));
    };
}

pub fn dequantize(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    const dmin: f32 = blk.dmin;
    const sm = scalesAndMins(&blk.scales);
    inline for (0..4) |g| {
        const bits: U8x32 = blk.qs[32 * g ..][0..32].*;
        const halves = [2]U8x32{ bits & @as(U8x32, @splat(15)), bits >> @splat(4) };
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

/// One block's contribution to a dot product with Q8_K activations (quants `xq`, bsums, scale
/// dx), as 8 partial sums.
pub inline fn blockDot(blk: *const Block, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
    const sm = scalesAndMins(&blk.scales);
    const sc = common.duplicateWords(sm.sc);
    // Two sums: the fused multiply-add has a 4-cycle latency the other row's chain cannot hide.
    var isum: [2]I32x8 = @splat(@splat(0));
    inline for (0..4) |g| {
        const bits: U8x32 = blk.qs[32 * g ..][0..32].*;
        const lo = common.mulAddBytes(bits & @as(U8x32, @splat(15)), xq[64 * g ..][0..32].*);
        const hi = common.mulAddBytes(bits >> @splat(4), xq[64 * g + 32 ..][0..32].*);
        isum[0] = common.dotWords(isum[0], lo, common.broadcastWord(sc, 2 * g));
        isum[1] = common.dotWords(isum[1], hi, common.broadcastWord(sc, 2 * g + 1));
    }
    const imin = common.mulAddWords(pairUp(sm.m), bsums);
    const d: F32x8 = @splat(@as(f32, blk.d) * dx);
    const dmin: F32x8 = @splat(@as(f32, blk.dmin) * dx);
    return @as(F32x8, @floatFromInt(isum[0] +% isum[1])) * d - @as(F32x8, @floatFromInt(imin)) * dmin;
}

/// The same scheme in plain integer arithmetic: the reference for `blockDot` and `unpack`.
pub fn blockDotRef(blk: *const Block, xq: [*]const i8, bsums: [*]const i16, dx: f32) f32 {
    var isum: i64 = 0;
    var imin: i64 = 0;
    for (0..8) |j| {
        const sm = scaleMinRef(j, &blk.scales);
        var s: i64 = 0;
        for (0..32) |l| {
            const byte = blk.qs[32 * (j / 2) + l];
            const q: i64 = if (j % 2 == 0) byte & 15 else byte >> 4;
            s += q * xq[32 * j + l];
        }
        isum += s * sm.sc;
        imin += @as(i64, sm.m) * (@as(i64, bsums[2 * j]) + bsums[2 * j + 1]);
    }
    return dx * (@as(f32, blk.d) * @as(f32, @floatFromInt(isum)) - @as(f32, blk.dmin) * @as(f32, @floatFromInt(imin)));
}

/// Unpacks a block for the GEMM tile (`scheme`).
pub fn unpack(blk: *const Block, out: *kquants.Unpacked) void {
    const sm = scalesAndMins(&blk.scales);
    var chunks: [8]U8x32 = undefined;
    inline for (0..4) |g| {
        const bits: U8x32 = blk.qs[32 * g ..][0..32].*;
        chunks[2 * g] = bits & @as(U8x32, @splat(15));
        chunks[2 * g + 1] = bits >> @splat(4);
    }
    setUnpacked(blk.d, blk.dmin, sm.sc, sm.m, chunks, out);
}

/// The rest of unpacking, shared with Q5_K: interleave the quants, widen the scales, mins to floats.
pub inline fn setUnpacked(d: f16, dmin: f16, sc: @Vector(8, u8), m: @Vector(8, u8), chunks: [8]U8x32, out: *kquants.Unpacked) void {
    out.vals = kquants.interleaveVals(chunks);
    out.scales_lo = @as(I32x8, sc);
    out.scales_hi = out.scales_lo;
    out.d = @splat(@as(f32, d));
    out.mins = @as(F32x8, @splat(-@as(f32, dmin))) * @as(F32x8, @floatFromInt(m));
    out.mins_hi = @splat(0);
}

pub const scheme = kquants.Scheme.q4_k;

/// A random but valid block: any bytes, with small positive scales.
pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(0.0005 + rand.float(f32) * 0.002);
    blk.dmin = @floatCast(0.0005 + rand.float(f32) * 0.002);
    return blk;
}

test "Q4_K scale packing matches the rule" {
    var prng = common.testRng(3);
    for (0..1000) |_| {
        var s: [12]u8 = undefined;
        prng.random().bytes(&s);
        const sm = scalesAndMins(&s);
        const sc: [8]u8 = sm.sc;
        const m: [8]u8 = sm.m;
        for (0..8) |j| {
            const want = scaleMinRef(j, &s);
            try std.testing.expectEqual(want.sc, sc[j]);
            try std.testing.expectEqual(want.m, m[j]);
        }
    }
}

test "Q4_K dequantization, block dot and unpacking agree with the references" {
    try kquants.checkFormat(@This(), 12);
}
