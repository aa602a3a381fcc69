//! IQ2_S weights: 256 values in 82 bytes (2.56 bits per value).
//!
//!   d: f16          block scale
//!   qs: [32]u8      low 8 bits of the grid index of each 8 values (group g = 4c + l)
//!   signs: [32]u8   one sign bit per value: bit j of signs[g] negates value 8g + j
//!   qh: [8]u8       bits 2l, 2l+1 of qh[c] = index bits 8-9 of group 4c + l
//!   scales: [8]u8   sub-block c: low nibble s for values 32c..32c+15, high nibble for +16..+31
//!
//!   value(8g + j) = d·(0.5 + s)·0.25 · ±byte j of iq2s_grid[qs[g] | ((qh[c] >> 2l) & 3) << 8]
//!
//! Decoded for `iquants` as d/8 · (2·s + 1) · q, one scale per 16 values.
const std = @import("std");
const common = @import("common.zig");
const iquants = @import("iquants.zig");
const kquants = @import("kquants.zig");
const iq2_xs = @import("iq2_xs.zig");

const grid = &iquants.grids.iq2s;
const I16x16 = common.I16x16;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    qs: [32]u8,
    signs: [32]u8,
    qh: [8]u8,
    scales: [8]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 82);
}

pub const scheme = iquants.scheme16;
/// What matmul and the tests call (`iquants.Kernels`).
pub const kernels = iquants.Kernels(@This());

inline fn index(blk: *const Block, g: usize) u16 {
    return @as(u16, blk.qs[g]) | (@as(u16, (blk.qh[g / 4] >> @intCast(2 * (g % 4))) & 3) << 8);
}

/// ggml's formula, one value at a time.
pub fn dequantizeRef(blk: *const Block, out: *[256]f32) void {
    const d: f32 = blk.d;
    for (0..32) |g| {
        const s = (blk.scales[g / 4] >> @intCast(4 * (g % 4 / 2))) & 15;
        const db = d * (0.5 + @as(f32, @floatFromInt(s))) * 0.25;
        const entry: [8]u8 = @bitCast(grid[index(blk, g)]);
        for (0..8) |j| {
            const negative = (blk.signs[g] >> @intCast(j)) & 1 != 0;
            out[8 * g + j] = db * @as(f32, @floatFromInt(entry[j])) * @as(f32, if (negative) -1 else 1);
        }
    }
}

pub inline fn decode(blk: *const Block) iquants.Decoded {
    var dec: iquants.Decoded = undefined;
    var idx: [32]u16 = undefined;
    iquants.spillIndices(32, @as(@Vector(32, u16), @as(@Vector(32, u8), blk.qs)) | iquants.highBits(32, 4, 2, blk.qh), &idx);
    inline for (0..8) |c| {
        dec.q[c] = iquants.applySigns(iquants.gridBytes8(grid, idx[4 * c ..][0..4].*), std.mem.readInt(u32, blk.signs[4 * c ..][0..4], .little));
    }
    dec.scales = iq2_xs.scales16(blk.scales);
    dec.d = @as(f32, blk.d) * 0.125;
    return dec;
}

pub fn setD(blk: *Block, d: f16) void {
    blk.d = d;
}

test "IQ2_S dequantization, block dot and unpacking agree with the references" {
    try iquants.checkFormat(@This(), 25);
}
