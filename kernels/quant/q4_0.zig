//! Q4_0 weights: 32 values in 18 bytes.
//!
//!   d: f16          block scale
//!   qs: [16]u8      4-bit quants: byte j holds value j (low nibble) and value j+16 (high nibble)
//!
//!   value(j) = d·((qs[j] & 15) − 8),  value(j+16) = d·((qs[j] >> 4) − 8)        j < 16
//!
//! Multiplied with Q8_0 activations (`block32`: the nibbles are the unsigned quants, offset 8).
//!
//! Quantization (for the KV cache: `attention.zig` stores K and V rows with `quantizeRow` and
//! reads them back with `widen`) is ggml's `quantize_row_q4_0_ref` (which the CPU backend's
//! `quantize_row_q4_0` calls), reproduced operation for operation so the codes are bit-identical:
//!   max = the first value of largest magnitude (sign kept),  d = max / −8,  id = 1/d (0 if d = 0)
//!   n = min(15, trunc(x·id + 8.5))
//! The largest-magnitude value maps to code 0 exactly and nothing rounds below it.
const std = @import("std");
const common = @import("common.zig");
const block32 = @import("block32.zig");

const U8x32 = common.U8x32;

/// Unaligned (`align(1)`): KV cache rows are packed blocks at any byte offset.
pub const Block = extern struct {
    d: f16 align(1),
    qs: [16]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 18);
}

pub const block_values = 32;
pub const block_bytes = 18;
pub const offset = 8;
pub const has_min = false;
pub const max_quant = 15;

/// The 32 nibbles in value order: low nibbles, then high nibbles.
pub inline fn nibbles(qs: [16]u8) U8x32 {
    const v: @Vector(16, u8) = qs;
    return std.simd.join(v & @as(@Vector(16, u8), @splat(15)), v >> @splat(4));
}

pub inline fn quants(blk: *const Block) U8x32 {
    return nibbles(blk.qs);
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

pub fn dequantizeRef(blk: *const Block, out: *[32]f32) void {
    const d: f32 = blk.d;
    for (0..16) |j| {
        const x0: i32 = @as(i32, blk.qs[j] & 15) - 8;
        const x1: i32 = @as(i32, blk.qs[j] >> 4) - 8;
        out[j] = @as(f32, @floatFromInt(x0)) * d;
        out[j + 16] = @as(f32, @floatFromInt(x1)) * d;
    }
}

pub fn dequantize(blk: *const Block, out: *[32]f32) void {
    block32.dequantize(@This(), blk, out);
}

/// Eight blocks of a row repacked (`block32`'s "Repacked rows"), 144 bytes like the blocks:
///   d:  [8]f16        block i's scale
///   qs: [4][8]u32     [c][i] = block i's qs[4c..4c+4]: low nibbles are its values 4c..4c+3,
///                     high nibbles 16+4c..; so word c's low nibbles are interleaved vector c, its
///                     high nibbles vector 4+c
pub const Super = extern struct {
    d: [8]f16,
    qs: [4][8]u32,
};

comptime {
    std.debug.assert(@sizeOf(Super) == 8 * @sizeOf(Block));
}

pub fn repackSuper(blocks: *const [8]Block) Super {
    var sup: Super = undefined;
    for (blocks, 0..) |*blk, i| {
        sup.d[i] = blk.d;
        for (0..4) |c| sup.qs[c][i] = std.mem.readInt(u32, blk.qs[4 * c ..][0..4], .little);
    }
    return sup;
}

pub fn blockOf(sup: *const Super, i: usize) Block {
    var blk: Block = .{ .d = sup.d[i], .qs = undefined };
    for (0..4) |c| std.mem.writeInt(u32, blk.qs[4 * c ..][0..4], sup.qs[c][i], .little);
    return blk;
}

/// The nibbles of the four words, split into the eight interleaved vectors.
pub inline fn superNibbles(qs: *const [4][8]u32) [8]U8x32 {
    const low: @Vector(8, u32) = @splat(0x0f0f0f0f);
    var out: [8]U8x32 = undefined;
    inline for (0..4) |c| {
        const w: @Vector(8, u32) = qs[c];
        out[c] = @bitCast(w & low);
        out[4 + c] = @bitCast((w >> @splat(4)) & low);
    }
    return out;
}

pub inline fn superQuants(sup: *const Super) [8]U8x32 {
    return superNibbles(&sup.qs);
}

pub inline fn superScales(sup: *const Super) common.F32x8 {
    return @floatCast(@as(@Vector(8, f16), sup.d));
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast((rand.float(f32) - 0.3) * 0.01);
    return blk;
}

test "Q4_0 against the block32 references" {
    try block32.checkFormat(@This(), 40);
    try block32.checkSuper(@This(), 41);
}

// ---------------------------------------------------------------------------------------------
// Quantization (KV cache).

/// One block of 32 values, ggml's reference rounding.
pub fn quantizeBlock(x: *const [32]f32, out: *Block) void {
    var amax: f32 = 0;
    var max: f32 = 0;
    for (x) |v| {
        if (amax < @abs(v)) {
            amax = @abs(v);
            max = v;
        }
    }
    const d = max / -8.0;
    const id: f32 = if (d != 0) 1.0 / d else 0;
    out.d = @floatCast(d);
    for (0..16) |j| {
        const lo = code(x[j] * id);
        const hi = code(x[j + 16] * id);
        out.qs[j] = lo | (hi << 4);
    }
}

/// min(15, (int8_t)(v + 8.5f)) as ggml writes it: the add in f32, then truncation toward zero.
inline fn code(v: f32) u8 {
    const t: i32 = @intFromFloat(@trunc(v + 8.5));
    return @intCast(@min(15, @max(0, t)));
}

/// `k / 32` blocks from `k` floats (k a multiple of 32).
pub fn quantizeRow(x: [*]const f32, k: usize, out: [*]u8) void {
    const blocks: [*]align(1) Block = @ptrCast(out);
    for (0..k / 32) |b| quantizeBlock(x[32 * b ..][0..32], &blocks[b]);
}

/// L consecutive values (L = 8 or 16) of the block starting at value `at` (a multiple of L), as
/// f32: the low nibbles of bytes at % 16 … hold values below 16, the high nibbles those above.
pub inline fn widen(comptime L: usize, blk: [*]const u8, at: usize) @Vector(L, f32) {
    return codes(L, blk, at) * @as(@Vector(L, f32), @splat(blockScale(blk)));
}

/// `widen` before the block's scale: the values q − 8 as f32 (callers widening several vectors of
/// a block convert its scale once).
pub inline fn codes(comptime L: usize, blk: [*]const u8, at: usize) @Vector(L, f32) {
    const bytes: @Vector(L, u8) = (blk + 2 + at % 16)[0..L].*;
    const halves = if (at < 16) bytes & @as(@Vector(L, u8), @splat(0x0f)) else bytes >> @splat(4);
    return @floatFromInt(@as(@Vector(L, i32), halves) - @as(@Vector(L, i32), @splat(8)));
}

/// The scale d of a block, at any alignment.
pub inline fn blockScale(blk: [*]const u8) f32 {
    return @as(*align(1) const f16, @ptrCast(blk)).*;
}

test "Q4_0 quantization keeps ggml's rounding and widening matches the reference" {
    var prng = std.Random.DefaultPrng.init(40);
    const rand = prng.random();
    var x: [32]f32 = undefined;
    for (0..200) |iter| {
        for (&x) |*v| v.* = rand.floatNorm(f32) * 3;
        if (iter % 5 == 0) @memset(&x, 0);
        if (iter % 7 == 1) x[9] = -x[3] - 20; // a negative extreme
        if (iter % 11 == 2) {
            // ties: two values of equal magnitude and opposite sign, the first one wins
            for (&x) |*v| v.* *= 0.1;
            x[4] = 10;
            x[20] = -10;
        }
        var blk: Block = undefined;
        quantizeBlock(&x, &blk);
        // the scalar definition, written out again
        var amax: f32 = 0;
        var max: f32 = 0;
        for (x) |v| {
            if (amax < @abs(v)) {
                amax = @abs(v);
                max = v;
            }
        }
        const d = max / -8.0;
        const id: f32 = if (d != 0) 1.0 / d else 0;
        try std.testing.expectEqual(@as(f16, @floatCast(d)), blk.d);
        for (0..32) |i| {
            const v = x[i] * id + 8.5;
            const want: u8 = @intCast(@min(15, @as(i32, @intFromFloat(@trunc(v)))));
            const got = if (i < 16) blk.qs[i] & 0x0f else blk.qs[i - 16] >> 4;
            try std.testing.expectEqual(want, got);
        }
        var ref: [32]f32 = undefined;
        dequantizeRef(&blk, &ref);
        const bytes: [*]const u8 = @ptrCast(&blk);
        inline for (.{ 8, 16 }) |L| {
            var at: usize = 0;
            while (at < 32) : (at += L) {
                const got: [L]f32 = widen(L, bytes, at);
                try std.testing.expectEqualSlices(f32, ref[at..][0..L], &got);
            }
        }
        if (iter % 11 == 2) try std.testing.expectEqual(@as(f32, 10), -8 * @as(f32, blk.d));
    }
}
