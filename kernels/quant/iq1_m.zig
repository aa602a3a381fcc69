//! IQ1_M weights: 256 values in 56 bytes (1.75 bits per value).
//!
//!   qs: [16·2]u8    low 8 bits of the grid index of each 8 values (group g = 4c + l)
//!   qh: [16]u8      per group pair (qh[2c + p] for groups 4c + 2p, 4c + 2p + 1): the low nibble
//!                   holds the first group's index bits 8-10 (bits 0-2) and its shift sign (bit 3),
//!                   the high nibble the second group's
//!   scales: [8]u8   as four little-endian u16 words w_0..w_3: sub-block c uses w_{c/2} >> 6·(c%2):
//!                   bits 0-2 = scale s of values 32c..32c+15, bits 3-5 = of +16..+31; the block's
//!                   f16 scale d is the four top nibbles, w_0's lowest
//!
//!   value(8g + j) = d·(2·s + 1) · (byte j of iq1s_grid[index] + δ_g),   δ_g = ±1/8
//!
//! with grid bytes in {-1, 0, 1}. Decoded for `iquants` as d/8 · (2·s + 1) · (8·grid ± 1), one
//! scale per 16 values.
const std = @import("std");
const common = @import("common.zig");
const iquants = @import("iquants.zig");
const kquants = @import("kquants.zig");
const iq1_s = @import("iq1_s.zig");

const grid = &iquants.grids.iq1s;
const I8x32 = common.I8x32;
const I16x16 = common.I16x16;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    qs: [32]u8,
    qh: [16]u8,
    scales: [8]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 56);
}

pub const scheme = iquants.scheme16;
/// What matmul and the tests call (`iquants.Kernels`).
pub const kernels = iquants.Kernels(@This());

inline fn scaleWord(blk: *const Block, i: usize) u16 {
    return std.mem.readInt(u16, blk.scales[2 * i ..][0..2], .little);
}

pub inline fn blockD(blk: *const Block) f16 {
    const bits = (scaleWord(blk, 0) >> 12) | ((scaleWord(blk, 1) >> 8) & 0x00f0) | ((scaleWord(blk, 2) >> 4) & 0x0f00) | (scaleWord(blk, 3) & 0xf000);
    return @bitCast(bits);
}

/// Group g's grid index and whether its shift is negative.
inline fn group(blk: *const Block, g: usize) struct { index: u16, negative: bool } {
    const nibble = blk.qh[g / 2] >> @intCast(4 * (g % 2));
    return .{ .index = @as(u16, blk.qs[g]) | (@as(u16, nibble & 7) << 8), .negative = nibble & 8 != 0 };
}

/// ggml's formula, one value at a time.
pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blockD(blk);
    for (0..32) |g| {
        const c = g / 4;
        const w = scaleWord(blk, c / 2) >> @intCast(6 * (c % 2) + 3 * (g % 4 / 2));
        const dl = d * @as(f32, @floatFromInt(2 * (w & 7) + 1));
        const grp = group(blk, g);
        const delta: f32 = if (grp.negative) -0.125 else 0.125;
        const entry: [8]i8 = @bitCast(grid[grp.index]);
        for (0..8) |j| out[8 * g + j] = dl * (@as(f32, @floatFromInt(entry[j])) + delta);
    }
}

pub inline fn decode(blk: *const Block) iquants.Decoded {
    var dec: iquants.Decoded = undefined;
    var idx: [32]u16 = undefined;
    iquants.spillIndices(32, @as(@Vector(32, u16), @as(@Vector(32, u8), blk.qs)) | (iquants.highBits(32, 2, 4, blk.qh) & @as(@Vector(32, u16), @splat(0x700))), &idx);
    inline for (0..8) |c| {
        // Shift sign bits 3 and 7 of qh[2c], qh[2c+1]: 8 copies of ±1 per group.
        var delta: @Vector(4, u64) = undefined;
        inline for (0..4) |l| delta[l] = if (blk.qh[2 * c + l / 2] & (@as(u8, 8) << (4 * (l % 2))) != 0) 0xffff_ffff_ffff_ffff else 0x0101_0101_0101_0101;
        dec.q[c] = iq1_s.shiftedGrid(idx[4 * c ..][0..4].*, @bitCast(delta));
    }
    // Word w_{c/2} >> 6·(c%2): bits 0-2 scale the first 16 values, bits 3-5 the second.
    const words: @Vector(4, u16) = .{ scaleWord(blk, 0), scaleWord(blk, 1), scaleWord(blk, 2), scaleWord(blk, 3) };
    const spread = @shuffle(u16, words, undefined, [16]i32{ 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3 });
    const shifts = @Vector(16, u4){ 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9 };
    const s: I16x16 = @bitCast((spread >> shifts) & @as(@Vector(16, u16), @splat(7)));
    dec.scales = s * @as(I16x16, @splat(2)) + @as(I16x16, @splat(1));
    dec.d = @as(f32, blockD(blk)) * 0.125;
    return dec;
}

pub fn setD(blk: *Block, d: f16) void {
    const bits: u16 = @bitCast(d);
    inline for (0..4) |i| {
        const w = (scaleWord(blk, i) & 0x0fff) | (((bits >> (4 * i)) & 15) << 12);
        std.mem.writeInt(u16, blk.scales[2 * i ..][0..2], w, .little);
    }
}

test "IQ1_M dequantization, block dot and unpacking agree with the references" {
    try iquants.checkFormat(@This(), 27);
    var prng = common.testRng(5);
    var blk = kernels.randomBlock(prng.random());
    setD(&blk, 0.00123);
    try std.testing.expectEqual(@as(f16, 0.00123), blockD(&blk));
}
