//! IQ3_XXS weights: 256 values in 98 bytes (3.06 bits per value).
//!
//!   d: f16          block scale
//!   qs: [64]u8      64 grid indices, each selecting 4 magnitudes in {4, 12, …, 62}
//!   sas: [32]u8     per sub-block c (values 32c..32c+31) the little-endian word w_c at sas[4c]:
//!                   bits 7l..7l+6 = sign index of values 32c+8l..32c+8l+7 (`ksigns`),
//!                   bits 28-31 = scale s_c
//!
//!   value(32c + 4k + j) = d·(0.5 + s_c)·0.5 · ±byte j of iq3xxs_grid[qs[8c+k]]
//!
//! Decoded for `iquants` as d/4 · (2·s_c + 1) · q.
const std = @import("std");
const common = @import("common.zig");
const iquants = @import("iquants.zig");
const kquants = @import("kquants.zig");

const grid = &iquants.grids.iq3xxs;
const I16x16 = common.I16x16;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    qs: [64]u8,
    sas: [32]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 98);
}

pub const scheme = iquants.scheme32;
/// What matmul and the tests call (`iquants.Kernels`).
pub const kernels = iquants.Kernels(@This());

/// ggml's formula, one value at a time.
pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..8) |c| {
        const w = std.mem.readInt(u32, blk.sas[4 * c ..][0..4], .little);
        const db = d * (0.5 + @as(f32, @floatFromInt(w >> 28))) * 0.5;
        for (0..8) |k| {
            const entry: [4]u8 = @bitCast(grid[blk.qs[8 * c + k]]);
            for (0..4) |j| {
                const i = 4 * k + j;
                const signs = iquants.grids.ksigns[(w >> @intCast(7 * (i / 8))) & 127];
                const negative = (signs >> @intCast(i % 8)) & 1 != 0;
                out[32 * c + i] = db * @as(f32, @floatFromInt(entry[j])) * @as(f32, if (negative) -1 else 1);
            }
        }
    }
}

pub inline fn decode(blk: *const Block) iquants.Decoded {
    var dec: iquants.Decoded = undefined;
    var s: @Vector(8, i16) = undefined;
    inline for (0..8) |c| {
        const w = std.mem.readInt(u32, blk.sas[4 * c ..][0..4], .little);
        var idx: [8]u16 = undefined;
        inline for (0..8) |k| idx[k] = blk.qs[8 * c + k];
        dec.q[c] = iquants.applySigns(iquants.gridBytes4(grid, idx), iquants.ksignWord(w));
        s[c] = @intCast(2 * (w >> 28) + 1);
    }
    dec.scales = iquants.scalesPer32(s);
    dec.d = @as(f32, blk.d) * 0.25;
    return dec;
}

pub fn setD(blk: *Block, d: f16) void {
    blk.d = d;
}

test "IQ3_XXS dequantization, block dot and unpacking agree with the references" {
    try iquants.checkFormat(@This(), 22);
}
