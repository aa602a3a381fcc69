//! Q4_1 weights: 32 values in 20 bytes.
//!
//!   d: f16, m: f16  block scale and offset
//!   qs: [16]u8      4-bit quants: byte j holds value j (low nibble) and value j+16 (high nibble)
//!
//!   value(j) = d·(qs[j] & 15) + m,  value(j+16) = d·(qs[j] >> 4) + m        j < 16
//!
//! Multiplied with Q8_1 activations (`block32`: the nibbles unsigned, m against the activation's s).
const std = @import("std");
const common = @import("common.zig");
const block32 = @import("block32.zig");
const q4_0 = @import("q4_0.zig");

const U8x32 = common.U8x32;

pub const Block = extern struct {
    d: f16,
    m: f16,
    qs: [16]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 20);
}

pub const block_values = 32;
pub const offset = 0;
pub const has_min = true;
pub const max_quant = 15;

pub inline fn quants(blk: *const Block) U8x32 {
    return q4_0.nibbles(blk.qs);
}

pub fn quantsRef(blk: *const Block, out: *[32]u8) void {
    for (0..16) |j| {
        out[j] = blk.qs[j] & 15;
        out[j + 16] = blk.qs[j] >> 4;
    }
}

pub inline fn scale(blk: *const Block) f32 {
    return blk.d;
}

pub inline fn min(blk: *const Block) f32 {
    return blk.m;
}

pub fn dequantizeRef(blk: *const Block, out: *[32]f32) void {
    const d: f32 = blk.d;
    const m: f32 = blk.m;
    for (0..16) |j| {
        out[j] = @as(f32, @floatFromInt(blk.qs[j] & 15)) * d + m;
        out[j + 16] = @as(f32, @floatFromInt(blk.qs[j] >> 4)) * d + m;
    }
}

pub fn dequantize(blk: *const Block, out: *[32]f32) void {
    block32.dequantize(@This(), blk, out);
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(rand.float(f32) * 0.01);
    blk.m = @floatCast(-rand.float(f32) * 0.08);
    return blk;
}

test "Q4_1 against the block32 references" {
    try block32.checkFormat(@This(), 41);
}
