//! IQ3_S weights: 256 values in 110 bytes (3.44 bits per value).
//!
//!   d: f16          block scale
//!   qs: [64]u8      low 8 bits of 64 grid indices, each selecting 4 magnitudes in {1, 3, …, 15}
//!   qh: [8]u8       ninth index bits: bit k of qh[c] for qs[8c + k]
//!   signs: [32]u8   one sign bit per value: bit i of the word at signs[4c] negates value 32c + i
//!   scales: [4]u8   4-bit scales s, sub-block c (values 32c..32c+31) uses nibble c%2 of scales[c/2]
//!
//!   value(32c + 4k + j) = d·(1 + 2·s_c) · ±byte j of iq3s_grid[qs[8c+k] | bit(qh[c], k) << 8]
//!
//! Dot products run against Q8_K activations (`iquants`); q = ±magnitude, d as stored.
const std = @import("std");
const common = @import("common.zig");
const iquants = @import("iquants.zig");
const kquants = @import("kquants.zig");

const grid = &iquants.grids.iq3s;
const I16x16 = common.I16x16;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    qs: [64]u8,
    qh: [8]u8,
    signs: [32]u8,
    scales: [4]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 110);
}

pub const scheme = iquants.scheme32;
/// What matmul and the tests call (`iquants.Kernels`).
pub const kernels = iquants.Kernels(@This());

/// ggml's formula, one value at a time.
pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..8) |c| {
        const s = (blk.scales[c / 2] >> @intCast(4 * (c % 2))) & 15;
        const db = d * @as(f32, @floatFromInt(1 + 2 * @as(u32, s)));
        for (0..8) |k| {
            const index = @as(usize, blk.qs[8 * c + k]) | (@as(usize, (blk.qh[c] >> @intCast(k)) & 1) << 8);
            const entry: [4]u8 = @bitCast(grid[index]);
            for (0..4) |j| {
                const i = 4 * k + j;
                const negative = (blk.signs[4 * c + i / 8] >> @intCast(i % 8)) & 1 != 0;
                out[32 * c + i] = db * @as(f32, @floatFromInt(entry[j])) * @as(f32, if (negative) -1 else 1);
            }
        }
    }
}

pub inline fn decode(blk: *const Block) iquants.Decoded {
    var dec: iquants.Decoded = undefined;
    var idx: [64]u16 = undefined;
    iquants.spillIndices(64, @as(@Vector(64, u16), @as(@Vector(64, u8), blk.qs)) | iquants.highBits(64, 8, 1, blk.qh), &idx);
    inline for (0..8) |c| {
        dec.q[c] = iquants.applySigns(iquants.gridBytes4(grid, idx[8 * c ..][0..8].*), std.mem.readInt(u32, blk.signs[4 * c ..][0..4], .little));
    }
    const nibbles: @Vector(8, u8) = .{ blk.scales[0], blk.scales[0], blk.scales[1], blk.scales[1], blk.scales[2], blk.scales[2], blk.scales[3], blk.scales[3] };
    const s = (nibbles >> @Vector(8, u3){ 0, 4, 0, 4, 0, 4, 0, 4 }) & @as(@Vector(8, u8), @splat(15));
    dec.scales = iquants.scalesPer32(@as(@Vector(8, i16), s) * @as(@Vector(8, i16), @splat(2)) + @as(@Vector(8, i16), @splat(1)));
    dec.d = blk.d;
    return dec;
}

pub fn setD(blk: *Block, d: f16) void {
    blk.d = d;
}

test "IQ3_S dequantization, block dot and unpacking agree with the references" {
    try iquants.checkFormat(@This(), 21);
}
