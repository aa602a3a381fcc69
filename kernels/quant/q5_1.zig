//! Q5_1 weights: 32 values in 24 bytes.
//!
//!   d: f16, m: f16  block scale and offset
//!   qh: [4]u8       fifth bits: bit j of the little-endian u32 belongs to value j
//!   qs: [16]u8      low 4 bits: byte j holds value j (low nibble) and value j+16 (high nibble)
//!
//!   value(j) = d·((qs[j] & 15) | bit_j << 4) + m,  value(j+16) = d·((qs[j] >> 4) | bit_{j+16} << 4) + m
//!
//! Multiplied with Q8_1 activations (`block32`: the 5-bit quants unsigned, m against the
//! activation's s).
const std = @import("std");
const common = @import("common.zig");
const block32 = @import("block32.zig");
const q4_0 = @import("q4_0.zig");
const q5_0 = @import("q5_0.zig");

const U8x32 = common.U8x32;

pub const Block = extern struct {
    d: f16,
    m: f16,
    qh: [4]u8,
    qs: [16]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 24);
}

pub const block_values = 32;
pub const offset = 0;
pub const has_min = true;
pub const max_quant = 31;

pub inline fn quants(blk: *const Block) U8x32 {
    return q4_0.nibbles(blk.qs) | q5_0.fifthBits(blk.qh);
}

pub fn quantsRef(blk: *const Block, out: *[32]u8) void {
    q5_0.quantsRef5(blk.qh, blk.qs, out);
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
    var u: [32]u8 = undefined;
    q5_0.quantsRef5(blk.qh, blk.qs, &u);
    for (out, u) |*o, q| o.* = @as(f32, @floatFromInt(q)) * d + m;
}

pub fn dequantize(blk: *const Block, out: *[32]f32) void {
    block32.dequantize(@This(), blk, out);
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(rand.float(f32) * 0.005);
    blk.m = @floatCast(-rand.float(f32) * 0.08);
    return blk;
}

test "Q5_1 against the block32 references" {
    try block32.checkFormat(@This(), 51);
}
