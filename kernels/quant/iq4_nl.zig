//! IQ4_NL weights: 32 values in 18 bytes, 4-bit codes into a non-linear table.
//!
//!   d: f16          block scale
//!   qs: [16]u8      codes: byte j holds value j's (low nibble) and value j+16's (high nibble)
//!
//!   value(j) = d·values[qs[j] & 15],  value(j+16) = d·values[qs[j] >> 4]
//!
//! `values` is the table IQ4_XS uses (`iq4_xs.values`, llama.cpp's `kvalues_iq4nl`). Multiplied
//! with Q8_0 activations (`block32`: table entries + 128 as unsigned quants).
const std = @import("std");
const common = @import("common.zig");
const block32 = @import("block32.zig");
const q4_0 = @import("q4_0.zig");
const iq4_xs = @import("iq4_xs.zig");

const U8x32 = common.U8x32;

/// The 16 values a code stands for.
pub const values = iq4_xs.values;

/// `values` + 128 (the unsigned quants), as the bytes `common.lookup16` takes.
const unsigned_values: @Vector(16, i8) = blk: {
    var t: [16]u8 = undefined;
    for (&t, values) |*u, v| u.* = @intCast(@as(i16, v) + 128);
    break :blk @bitCast(t);
};

/// The same 18 bytes as Q4_0: d, then the codes packed as Q4_0 packs its nibbles.
pub const Block = q4_0.Block;

pub const block_values = 32;
pub const offset = 128;
pub const has_min = false;
pub const max_quant = 241;

pub inline fn quants(blk: *const Block) U8x32 {
    return @bitCast(common.lookup16(unsigned_values, q4_0.nibbles(blk.qs)));
}

pub fn quantsRef(blk: *const Block, out: *[32]u8) void {
    for (0..16) |j| {
        out[j] = @intCast(@as(i16, values[blk.qs[j] & 15]) + 128);
        out[j + 16] = @intCast(@as(i16, values[blk.qs[j] >> 4]) + 128);
    }
}

pub const scale = q4_0.scale;

pub fn dequantizeRef(blk: *const Block, out: *[32]f32) void {
    const d: f32 = blk.d;
    for (0..16) |j| {
        out[j] = d * @as(f32, @floatFromInt(values[blk.qs[j] & 15]));
        out[j + 16] = d * @as(f32, @floatFromInt(values[blk.qs[j] >> 4]));
    }
}

pub fn dequantize(blk: *const Block, out: *[32]f32) void {
    block32.dequantize(@This(), blk, out);
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast((rand.float(f32) - 0.3) * 0.001);
    return blk;
}

test "IQ4_NL against the block32 references" {
    try block32.checkFormat(@This(), 20);
}
