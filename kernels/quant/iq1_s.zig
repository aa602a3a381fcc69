//! IQ1_S weights: 256 values in 50 bytes (1.56 bits per value).
//!
//!   d: f16          block scale
//!   qs: [32]u8      low 8 bits of the grid index of each 8 values (group g = 4c + l)
//!   qh: [8]u16      sub-block c (values 32c..32c+31): bits 3l..3l+2 = index bits 8-10 of group
//!                   4c + l, bits 12-14 = scale s_c, bit 15 = sign of the shift δ_c
//!
//!   value(8g + j) = d·(2·s_c + 1) · (byte j of iq1s_grid[index] + δ_c),   δ_c = ±1/8
//!
//! with grid bytes in {-1, 0, 1}. Decoded for `iquants` as d/8 · (2·s_c + 1) · (8·grid ± 1).
const std = @import("std");
const common = @import("common.zig");
const iquants = @import("iquants.zig");
const kquants = @import("kquants.zig");

const grid = &iquants.grids.iq1s;
const I8x32 = common.I8x32;
const I16x16 = common.I16x16;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    qs: [32]u8,
    qh: [8]u16,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 50);
}

pub const scheme = iquants.scheme32;
/// What matmul and the tests call (`iquants.Kernels`).
pub const kernels = iquants.Kernels(@This());

/// ggml's formula, one value at a time.
pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..8) |c| {
        const qh = blk.qh[c];
        const dl = d * @as(f32, @floatFromInt(2 * ((qh >> 12) & 7) + 1));
        const delta: f32 = if (qh & 0x8000 != 0) -0.125 else 0.125;
        for (0..4) |l| {
            const entry: [8]i8 = @bitCast(grid[@as(usize, blk.qs[4 * c + l]) | (@as(usize, (qh >> @intCast(3 * l)) & 7) << 8)]);
            for (0..8) |j| out[32 * c + 8 * l + j] = dl * (@as(f32, @floatFromInt(entry[j])) + delta);
        }
    }
}

/// 8·grid + δ for the four 8-value groups of a sub-block, δ = ±1.
pub inline fn shiftedGrid(idx: [4]u16, delta: I8x32) I8x32 {
    const g: I8x32 = @bitCast(iquants.gridBytes8(grid, idx));
    return g *% @as(I8x32, @splat(8)) +% delta;
}

pub inline fn decode(blk: *const Block) iquants.Decoded {
    var dec: iquants.Decoded = undefined;
    var s: @Vector(8, i16) = undefined;
    inline for (0..8) |c| {
        const qh = blk.qh[c];
        var idx: [4]u16 = undefined;
        inline for (0..4) |l| idx[l] = @as(u16, blk.qs[4 * c + l]) | (((qh >> (3 * l)) & 7) << 8);
        dec.q[c] = shiftedGrid(idx, @splat(if (qh & 0x8000 != 0) -1 else 1));
        s[c] = @intCast(2 * ((qh >> 12) & 7) + 1);
    }
    dec.scales = iquants.scalesPer32(s);
    dec.d = @as(f32, blk.d) * 0.125;
    return dec;
}

pub fn setD(blk: *Block, d: f16) void {
    blk.d = d;
}

test "IQ1_S dequantization, block dot and unpacking agree with the references" {
    try iquants.checkFormat(@This(), 26);
}
