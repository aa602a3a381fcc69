//! Q5_0 weights: 32 values in 22 bytes.
//!
//!   d: f16          block scale
//!   qh: [4]u8       fifth bits: bit j of the little-endian u32 belongs to value j
//!   qs: [16]u8      low 4 bits: byte j holds value j (low nibble) and value j+16 (high nibble)
//!
//!   value(j) = d·(((qs[j] & 15) | bit_j << 4) − 16),  value(j+16) = d·((qs[j] >> 4 | bit_{j+16} << 4) − 16)
//!
//! Multiplied with Q8_0 activations (`block32`: the 5-bit quants unsigned, offset 16).
const std = @import("std");
const common = @import("common.zig");
const block32 = @import("block32.zig");
const q4_0 = @import("q4_0.zig");

const U8x32 = common.U8x32;

pub const Block = extern struct {
    d: f16,
    qh: [4]u8,
    qs: [16]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 22);
}

pub const block_values = 32;
pub const offset = 16;
pub const has_min = false;
pub const max_quant = 31;

/// 16 where bit j of the 32 bits `qh` is set, in byte j (shared with Q5_1).
pub inline fn fifthBits(qh: [4]u8) U8x32 {
    const spread: U8x32 = @shuffle(u8, @as(@Vector(4, u8), qh), undefined, blk: {
        var m: [32]i32 = undefined;
        for (&m, 0..) |*e, i| e.* = @intCast(i / 8);
        break :blk m;
    });
    const bit: U8x32 = comptime blk: {
        var m: [32]u8 = undefined;
        for (&m, 0..) |*e, i| e.* = @as(u8, 1) << @intCast(i % 8);
        break :blk m;
    };
    return @select(u8, spread & bit != @as(U8x32, @splat(0)), @as(U8x32, @splat(16)), @as(U8x32, @splat(0)));
}

/// Scalar form of the 5-bit quants (shared with Q5_1).
pub fn quantsRef5(qh: [4]u8, qs: [16]u8, out: *[32]u8) void {
    const h = std.mem.readInt(u32, &qh, .little);
    for (0..16) |j| {
        const h0: u8 = @intCast(((h >> @intCast(j)) << 4) & 0x10);
        const h1: u8 = @intCast((h >> @intCast(j + 12)) & 0x10);
        out[j] = (qs[j] & 15) | h0;
        out[j + 16] = (qs[j] >> 4) | h1;
    }
}

pub inline fn quants(blk: *const Block) U8x32 {
    return q4_0.nibbles(blk.qs) | fifthBits(blk.qh);
}

pub fn quantsRef(blk: *const Block, out: *[32]u8) void {
    quantsRef5(blk.qh, blk.qs, out);
}

pub inline fn scale(blk: *const Block) f32 {
    return blk.d;
}

pub fn dequantizeRef(blk: *const Block, out: *[32]f32) void {
    const d: f32 = blk.d;
    var u: [32]u8 = undefined;
    quantsRef5(blk.qh, blk.qs, &u);
    for (out, u) |*o, q| o.* = @as(f32, @floatFromInt(@as(i32, q) - 16)) * d;
}

pub fn dequantize(blk: *const Block, out: *[32]f32) void {
    block32.dequantize(@This(), blk, out);
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast((rand.float(f32) - 0.3) * 0.01);
    return blk;
}

test "Q5_0 against the block32 references" {
    try block32.checkFormat(@This(), 50);
}
