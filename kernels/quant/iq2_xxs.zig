//! IQ2_XXS weights: 256 values in 66 bytes (2.06 bits per value).
//!
//!   d: f16          block scale
//!   qs: [32]u16     per sub-block c (values 32c..32c+31) two little-endian words at qs[4c]:
//!                   a_c: bytes l = grid indices of values 32c+8l..32c+8l+7 (8 magnitudes each,
//!                        in {8, 25, 43});
//!                   b_c: bits 7l..7l+6 = their sign index (`ksigns`), bits 28-31 = scale s_c
//!
//!   value(32c + 8l + j) = d·(0.5 + s_c)·0.25 · ±byte j of iq2xxs_grid[byte l of a_c]
//!
//! Decoded for `iquants` as d/8 · (2·s_c + 1) · q.
const std = @import("std");
const common = @import("common.zig");
const iquants = @import("iquants.zig");
const kquants = @import("kquants.zig");

const grid = &iquants.grids.iq2xxs;
const I16x16 = common.I16x16;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    qs: [32]u16,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 66);
}

pub const scheme = iquants.scheme32;
/// What matmul and the tests call (`iquants.Kernels`).
pub const kernels = iquants.Kernels(@This());

/// The two words of sub-block c.
inline fn words(blk: *const Block, c: usize) [2]u32 {
    const q = blk.qs[4 * c ..][0..4];
    return .{ @as(u32, q[0]) | @as(u32, q[1]) << 16, @as(u32, q[2]) | @as(u32, q[3]) << 16 };
}

/// ggml's formula, one value at a time.
pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..8) |c| {
        const w = words(blk, c);
        const db = d * (0.5 + @as(f32, @floatFromInt(w[1] >> 28))) * 0.25;
        for (0..4) |l| {
            const entry: [8]u8 = @bitCast(grid[(w[0] >> @intCast(8 * l)) & 255]);
            const signs = iquants.grids.ksigns[(w[1] >> @intCast(7 * l)) & 127];
            for (0..8) |j| {
                const negative = (signs >> @intCast(j)) & 1 != 0;
                out[32 * c + 8 * l + j] = db * @as(f32, @floatFromInt(entry[j])) * @as(f32, if (negative) -1 else 1);
            }
        }
    }
}

pub inline fn decode(blk: *const Block) iquants.Decoded {
    var dec: iquants.Decoded = undefined;
    var s: @Vector(8, i16) = undefined;
    inline for (0..8) |c| {
        const w = words(blk, c);
        const idx: [4]u16 = .{ @truncate(w[0] & 255), @truncate((w[0] >> 8) & 255), @truncate((w[0] >> 16) & 255), @truncate(w[0] >> 24) };
        dec.q[c] = iquants.applySigns(iquants.gridBytes8(grid, idx), iquants.ksignWord(w[1]));
        s[c] = @intCast(2 * (w[1] >> 28) + 1);
    }
    dec.scales = iquants.scalesPer32(s);
    dec.d = @as(f32, blk.d) * 0.125;
    return dec;
}

pub fn setD(blk: *Block, d: f16) void {
    blk.d = d;
}

test "IQ2_XXS dequantization, block dot and unpacking agree with the references" {
    try iquants.checkFormat(@This(), 23);
}
