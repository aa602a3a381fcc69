//! IQ2_XS weights: 256 values in 74 bytes (2.31 bits per value).
//!
//!   d: f16          block scale
//!   qs: [32]u16     per 8 values (group g = 4c + l of sub-block c): bits 0-8 = grid index
//!                   (8 magnitudes in {8, 25, 43}), bits 9-15 = sign index (`ksigns`)
//!   scales: [8]u8   sub-block c: low nibble s for values 32c..32c+15, high nibble for +16..+31
//!
//!   value(8g + j) = d·(0.5 + s)·0.25 · ±byte j of iq2xs_grid[qs[g] & 511]
//!
//! Decoded for `iquants` as d/8 · (2·s + 1) · q, one scale per 16 values.
const std = @import("std");
const common = @import("common.zig");
const iquants = @import("iquants.zig");
const kquants = @import("kquants.zig");

const grid = &iquants.grids.iq2xs;
const I16x16 = common.I16x16;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    qs: [32]u16,
    scales: [8]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 74);
}

pub const scheme = iquants.scheme16;
/// What matmul and the tests call (`iquants.Kernels`).
pub const kernels = iquants.Kernels(@This());

/// ggml's formula, one value at a time.
pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..32) |g| {
        const s = (blk.scales[g / 4] >> @intCast(4 * (g % 4 / 2))) & 15;
        const db = d * (0.5 + @as(f32, @floatFromInt(s))) * 0.25;
        const entry: [8]u8 = @bitCast(grid[blk.qs[g] & 511]);
        const signs = iquants.grids.ksigns[blk.qs[g] >> 9];
        for (0..8) |j| {
            const negative = (signs >> @intCast(j)) & 1 != 0;
            out[8 * g + j] = db * @as(f32, @floatFromInt(entry[j])) * @as(f32, if (negative) -1 else 1);
        }
    }
}

/// The 16 scales (2·s + 1) from the 8 scale bytes, lower nibble first.
pub inline fn scales16(bytes: [8]u8) I16x16 {
    const b: @Vector(8, u8) = bytes;
    const wide = @shuffle(u8, b, undefined, [16]i32{ 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7 });
    const shifts = @Vector(16, u3){ 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4 };
    const s: I16x16 = (wide >> shifts) & @as(@Vector(16, u8), @splat(15));
    return s * @as(I16x16, @splat(2)) + @as(I16x16, @splat(1));
}

pub inline fn decode(blk: *const Block) iquants.Decoded {
    var dec: iquants.Decoded = undefined;
    inline for (0..8) |c| {
        const q = blk.qs[4 * c ..][0..4];
        const idx: [4]u16 = .{ q[0] & 511, q[1] & 511, q[2] & 511, q[3] & 511 };
        const signs = @as(u32, q[0] >> 9) | @as(u32, q[1] >> 9) << 7 | @as(u32, q[2] >> 9) << 14 | @as(u32, q[3] >> 9) << 21;
        dec.q[c] = iquants.applySigns(iquants.gridBytes8(grid, idx), iquants.ksignWord(signs));
    }
    dec.scales = scales16(blk.scales);
    dec.d = @as(f32, blk.d) * 0.125;
    return dec;
}

pub fn setD(blk: *Block, d: f16) void {
    blk.d = d;
}

test "IQ2_XS dequantization, block dot and unpacking agree with the references" {
    try iquants.checkFormat(@This(), 24);
}
