//! Q8_0 weights, and the Q8_0 / Q8_1 activations every format with 32-value blocks is multiplied
//! with (`block32.zig`).
//!
//! Weights: 32 values in 34 bytes, `{f16 d; i8 qs[32]}`, value = d·q. As a `block32` format its
//! quants are stored unsigned, u = q + 128 (`q ^ 0x80`).
//!
//! Activations are quantized per 32 values the way llama.cpp's x86 `quantize_row_q8_0` and
//! `quantize_row_q8_1` do (the two agree on d and q):
//!   amax = max |x|,  d = f16(amax/127),  q = roundEven(x·127/amax)
//! (the quants use the unrounded 127/amax; the dot uses the f16-rounded d). Q8_1 — the partner of
//! Q4_1 and Q5_1 — adds s = f16((amax/127)·Σq), again from the unrounded amax/127. A token's row
//! is stored as separate arrays so the quants are contiguous and 32-byte aligned, padded with zero
//! blocks to a multiple of 256 values (`padded`) for the GEMM tiles' super-blocks:
//!   qs:   [kp]i8
//!   d:    [kp/32]f32   the f16 value, widened
//!   sums: [kp/32]i32   Σq of each block (the formats' offsets fold in through it)
//!   s:    [kp/32]f32   Q8_1's s, widened
//! GEMM tiles read `qs` interleaved per 256 values (`interleave`, layout in `block32`).
const std = @import("std");
const common = @import("common.zig");
const block32 = @import("block32.zig");

const U8x32 = common.U8x32;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    qs: [32]i8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 34);
}

pub const block_values = 32;

// ---------------------------------------------------------------------------------------------
// The weight format, for block32.

pub const offset = 128;
pub const has_min = false;
pub const max_quant = 255;

pub inline fn quants(blk: *const Block) U8x32 {
    const q: U8x32 = @bitCast(blk.qs);
    return q ^ @as(U8x32, @splat(0x80));
}

pub fn quantsRef(blk: *const Block, out: *[32]u8) void {
    for (out, blk.qs) |*o, q| o.* = @intCast(@as(i16, q) + 128);
}

pub inline fn scale(blk: *const Block) f32 {
    return blk.d;
}

pub fn dequantizeRef(blk: *const Block, out: *[32]f32) void {
    for (out, blk.qs) |*o, q| o.* = @as(f32, blk.d) * @as(f32, @floatFromInt(q));
}

pub fn dequantize(blk: *const Block, out: *[32]f32) void {
    block32.dequantize(@This(), blk, out);
}

/// Eight blocks of a row repacked (`block32`'s "Repacked rows"), 272 bytes like the blocks:
///   d:  [8]f16        block i's scale
///   qs: [8][8]u32     [v][i] = block i's quants 4v..4v+3, stored + 128: interleaved vector v
pub const Super = extern struct {
    d: [8]f16,
    qs: [8][8]u32,
};

comptime {
    std.debug.assert(@sizeOf(Super) == 8 * @sizeOf(Block));
}

pub fn repackSuper(blocks: *const [8]Block) Super {
    var sup: Super = undefined;
    var chunks: [8]U8x32 = undefined;
    for (blocks, 0..) |*blk, i| {
        sup.d[i] = blk.d;
        chunks[i] = quants(blk);
    }
    const vals = common.transposeWords(chunks);
    for (0..8) |v| sup.qs[v] = @bitCast(vals[v]);
    return sup;
}

pub fn blockOf(sup: *const Super, i: usize) Block {
    var chunks: [8]U8x32 = undefined;
    for (0..8) |v| chunks[v] = @bitCast(@as(@Vector(8, u32), sup.qs[v]));
    const natural: [8][32]u8 = @bitCast(common.transposeWords(chunks));
    var blk: Block = .{ .d = sup.d[i], .qs = undefined };
    for (&blk.qs, natural[i]) |*q, u| q.* = @bitCast(u ^ 0x80);
    return blk;
}

pub inline fn superQuants(sup: *const Super) [8]U8x32 {
    var out: [8]U8x32 = undefined;
    inline for (0..8) |v| out[v] = @bitCast(@as(@Vector(8, u32), sup.qs[v]));
    return out;
}

pub inline fn superScales(sup: *const Super) F32x8 {
    return @floatCast(@as(@Vector(8, f16), sup.d));
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(0.001 + rand.float(f32) * 0.01);
    return blk;
}

// ---------------------------------------------------------------------------------------------
// Activations.

/// Row length padded to whole 256-value super-blocks.
pub fn padded(k: usize) usize {
    return std.mem.alignForward(usize, k, 256);
}

pub const Row = struct {
    qs: [*]i8,
    d: [*]f32,
    sums: [*]i32,
    s: [*]f32,

    pub fn bytes(k: usize) usize {
        const kp = padded(k);
        return std.mem.alignForward(usize, kp + kp / 32 * 12, 64);
    }

    pub fn at(base: [*]align(64) u8, k: usize, t: usize) Row {
        const kp = padded(k);
        const p = base + t * bytes(k);
        return .{
            .qs = @ptrCast(p),
            .d = @ptrCast(@alignCast(p + kp)),
            .sums = @ptrCast(@alignCast(p + kp + kp / 32 * 4)),
            .s = @ptrCast(@alignCast(p + kp + kp / 32 * 8)),
        };
    }
};

/// One block of 32 values into `qs`; returns the unrounded d = amax/127 and Σq.
inline fn quantizeBlock(x: [*]const f32, qs: [*]i8) struct { d: f32, sum: i32 } {
    var v: [4]F32x8 = undefined;
    inline for (0..4) |i| v[i] = x[8 * i ..][0..8].*;
    const amax = @reduce(.Max, @max(@max(@abs(v[0]), @abs(v[1])), @max(@abs(v[2]), @abs(v[3]))));
    const scale_x: F32x8 = @splat(if (amax != 0) 127.0 / amax else 0);
    var sum: @Vector(8, i32) = @splat(0);
    inline for (0..4) |i| {
        const q: @Vector(8, i32) = @intFromFloat(common.roundEven(v[i] * scale_x));
        sum += q;
        qs[8 * i ..][0..8].* = @as(@Vector(8, i8), @intCast(q));
    }
    return .{ .d = amax / 127.0, .sum = @reduce(.Add, sum) };
}

/// Quantizes `k` floats (a multiple of 32) into `row`, zeroing the padding.
pub fn quantize(x: [*]const f32, k: usize, row: Row) void {
    for (0..k / 32) |b| {
        const q = quantizeBlock(x + 32 * b, row.qs + 32 * b);
        row.d[b] = @as(f16, @floatCast(q.d));
        row.sums[b] = q.sum;
        row.s[b] = @as(f16, @floatCast(q.d * @as(f32, @floatFromInt(q.sum))));
    }
    const kp = padded(k);
    @memset(row.qs[k..kp], 0);
    for (k / 32..kp / 32) |b| {
        row.d[b] = 0;
        row.sums[b] = 0;
        row.s[b] = 0;
    }
}

/// `k / 32` blocks in ggml's own layout (`Block`, 34 bytes each, unaligned) from `k` floats, with
/// the same rounding as `quantize`: what llama.cpp writes into a Q8_0 KV cache (its `set_rows`
/// converts with the CPU backend's `quantize_row_q8_0`).
pub fn quantizeRow(x: [*]const f32, k: usize, out: [*]u8) void {
    for (0..k / 32) |b| {
        const blk = out + 34 * b;
        const q = quantizeBlock(x + 32 * b, @ptrCast(blk + 2));
        @as(*align(1) f16, @ptrCast(blk)).* = @floatCast(q.d);
    }
}

/// L consecutive values (L = 8 or 16) of a block in ggml's layout, starting at value `at` (a
/// multiple of L), as f32.
pub inline fn widen(comptime L: usize, blk: [*]const u8, at: usize) @Vector(L, f32) {
    return codes(L, blk, at) * @as(@Vector(L, f32), @splat(blockScale(blk)));
}

/// `widen` before the block's scale: the quants as f32 (callers widening several vectors of a
/// block convert its scale once).
pub inline fn codes(comptime L: usize, blk: [*]const u8, at: usize) @Vector(L, f32) {
    const q: @Vector(L, i8) = @bitCast((blk + 2 + at)[0..L].*);
    return @floatFromInt(q);
}

/// The scale d of a block in ggml's layout, at any alignment.
pub inline fn blockScale(blk: [*]const u8) f32 {
    return @as(*align(1) const f16, @ptrCast(blk)).*;
}

/// Reorders each 256-value super-block's `qs` in place for the GEMM tiles: vector v holds values
/// 4v..4v+3 of each of its eight blocks (`block32` describes the layout).
pub fn interleave(row: Row, k: usize) void {
    for (0..padded(k) / 256) |s| {
        const qs: *[8]U8x32 = @ptrCast(@alignCast(row.qs + s * 256));
        qs.* = common.transposeWords(qs.*);
    }
}

/// llama.cpp's AVX2 `quantize_row_q8_1`, scalar, for the tests: d, q and s of one block (Q8_0's
/// d and q are the same).
pub fn quantizeBlockRef(x: *const [32]f32, qs: *[32]i8) struct { d: f16, s: f16 } {
    var amax: f32 = 0;
    for (x) |v| amax = @max(amax, @abs(v));
    const d = amax / 127.0;
    const id: f32 = if (amax != 0) 127.0 / amax else 0;
    var sum: i32 = 0;
    for (x, qs) |v, *q| {
        q.* = @intFromFloat(common.roundEvenScalar(v * id));
        sum += q.*;
    }
    return .{ .d = @floatCast(d), .s = @floatCast(d * @as(f32, @floatFromInt(sum))) };
}

test "Q8_0 / Q8_1 activation quantization matches llama.cpp's AVX2 rounding" {
    var prng = common.testRng(8);
    const rand = prng.random();
    const k = 9 * 32; // padded to 512
    var x: [k]f32 = undefined;
    var buf: [Row.bytes(k)]u8 align(64) = undefined;
    @memset(&buf, 0xAA);
    for (0..50) |iter| {
        for (&x) |*v| v.* = rand.floatNorm(f32) * 2;
        if (iter % 3 == 0) @memset(x[64..96], 0);
        // exact halves after scaling: amax 127 makes the multiplier 1
        if (iter % 4 == 0) {
            for (x[0..32], 0..) |*v, i| v.* = @as(f32, @floatFromInt(i)) - 15.5;
            x[31] = 127;
        }
        const row = Row.at(&buf, k, 0);
        quantize(&x, k, row);
        for (0..k / 32) |b| {
            var qs: [32]i8 = undefined;
            const want = quantizeBlockRef(x[32 * b ..][0..32], &qs);
            try std.testing.expectEqual(@as(f32, want.d), row.d[b]);
            try std.testing.expectEqual(@as(f32, want.s), row.s[b]);
            try std.testing.expectEqualSlices(i8, &qs, row.qs[32 * b ..][0..32]);
            var sum: i32 = 0;
            for (qs) |q| sum += q;
            try std.testing.expectEqual(sum, row.sums[b]);
        }
        for (row.qs[k..padded(k)]) |q| try std.testing.expectEqual(@as(i8, 0), q);
        for (k / 32..padded(k) / 32) |b| {
            try std.testing.expectEqual(@as(f32, 0), row.d[b]);
            try std.testing.expectEqual(@as(i32, 0), row.sums[b]);
        }
    }
}

test "Q8_0 weights against the block32 references" {
    try block32.checkFormat(@This(), 9);
    try block32.checkSuper(@This(), 10);
}

test "Q8_0 rows in ggml's block layout match the split-array quantizer, and widen reads them back" {
    var prng = common.testRng(10);
    const rand = prng.random();
    const k = 4 * 32;
    var x: [k]f32 = undefined;
    var blocks: [4 * 34]u8 = undefined;
    var buf: [Row.bytes(k)]u8 align(64) = undefined;
    for (0..20) |iter| {
        for (&x) |*v| v.* = rand.floatNorm(f32);
        if (iter % 4 == 0) @memset(x[32..64], 0);
        quantizeRow(&x, k, &blocks);
        const row = Row.at(&buf, k, 0);
        quantize(&x, k, row);
        for (0..k / 32) |b| {
            const blk: *align(1) const Block = @ptrCast(&blocks[34 * b]);
            try std.testing.expectEqual(row.d[b], @as(f32, blk.d));
            try std.testing.expectEqualSlices(i8, row.qs[32 * b ..][0..32], &blk.qs);
            var ref: [32]f32 = undefined;
            for (0..32) |i| ref[i] = @as(f32, blk.d) * @as(f32, @floatFromInt(blk.qs[i]));
            inline for (.{ 8, 16 }) |L| {
                var at: usize = 0;
                while (at < 32) : (at += L) {
                    const got: [L]f32 = widen(L, @ptrCast(&blocks[34 * b]), at);
                    try std.testing.expectEqualSlices(f32, ref[at..][0..L], &got);
                }
            }
        }
    }
}
