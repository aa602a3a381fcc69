//! MXFP4 weights (OCP microscaling FP4): 32 values in 17 bytes.
//!
//!   e: u8           shared scale, E8M0: 2^(e − 127)
//!   qs: [16]u8      E2M1 codes: byte j holds value j's (low nibble) and value j+16's (high nibble)
//!
//!   value(j) = 2^(e−127)·fp4(qs[j] & 15),  value(j+16) = 2^(e−127)·fp4(qs[j] >> 4)
//!
//! As llama.cpp does, the E2M1 values are kept doubled as integers (`values`, its `kvalues_mxfp4`:
//! 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives, ×2) and the scale halved: d = 2^(e−128).
//! Multiplied with Q8_0 activations (`block32`: table entries + 12 as unsigned quants).
const std = @import("std");
const common = @import("common.zig");
const block32 = @import("block32.zig");
const q4_0 = @import("q4_0.zig");

const U8x32 = common.U8x32;

/// Twice the E2M1 value of each code.
pub const values = [16]i8{ 0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12 };

/// `values` + 12, the unsigned quants.
const unsigned_values: @Vector(16, i8) = blk: {
    var t: [16]i8 = undefined;
    for (&t, values) |*u, v| u.* = v + 12;
    break :blk t;
};

pub const Block = extern struct {
    e: u8,
    qs: [16]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 17);
}

pub const block_values = 32;
pub const offset = 12;
pub const has_min = false;
pub const max_quant = 24;

pub inline fn quants(blk: *const Block) U8x32 {
    return @bitCast(common.lookup16(unsigned_values, q4_0.nibbles(blk.qs)));
}

pub fn quantsRef(blk: *const Block, out: *[32]u8) void {
    for (0..16) |j| {
        out[j] = @intCast(@as(i16, values[blk.qs[j] & 15]) + 12);
        out[j + 16] = @intCast(@as(i16, values[blk.qs[j] >> 4]) + 12);
    }
}

/// 2^(e − 128) as an f32, built from its bits (e = 0 and 1 are subnormal): llama.cpp's
/// `ggml_e8m0_to_fp32_half`.
pub inline fn scale(blk: *const Block) f32 {
    const e: u32 = blk.e;
    const bits: u32 = if (e < 2) @as(u32, 0x00200000) << @intCast(e) else (e - 1) << 23;
    return @bitCast(bits);
}

pub fn dequantizeRef(blk: *const Block, out: *[32]f32) void {
    const d = std.math.ldexp(@as(f32, 1), @as(i32, blk.e) - 128);
    for (0..16) |j| {
        out[j] = @as(f32, @floatFromInt(values[blk.qs[j] & 15])) * d;
        out[j + 16] = @as(f32, @floatFromInt(values[blk.qs[j] >> 4])) * d;
    }
}

pub fn dequantize(blk: *const Block, out: *[32]f32) void {
    block32.dequantize(@This(), blk, out);
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.e = rand.intRangeAtMost(u8, 115, 124);
    return blk;
}

test "MXFP4 scales: every exponent against 2^(e−128)" {
    for (0..255) |e| {
        const blk = Block{ .e = @intCast(e), .qs = @splat(0) };
        try std.testing.expectEqual(std.math.ldexp(@as(f32, 1), @as(i32, @intCast(e)) - 128), scale(&blk));
    }
}

test "MXFP4 against the block32 references" {
    try block32.checkFormat(@This(), 39);
}
