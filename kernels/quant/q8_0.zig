//! Q8_0 weights and the Q8_0 activations they are multiplied with.
//!
//! Weights: 32 values in 34 bytes, `{f16 d; i8 qs[32]}`, value = d·q.
//!
//! Activations are quantized per 32 values the way llama.cpp's x86 `quantize_row_q8_0` does:
//!   amax = max |x|,  d = f16(amax/127),  q = roundEven(x·127/amax)
//! (the quants use the unrounded 127/amax; the dot uses the f16-rounded d). A token's row is
//! stored as separate arrays so the quants are contiguous and 32-byte aligned:
//!   qs: [k]i8,  d: [k/32]f32 (the f16 value, widened)
//!
//! Dot product per block: d_w·d_x·Σ q_w·q_x, the integer sum by the sign trick
//! (`common.dotSignedBytes`).
const std = @import("std");
const common = @import("common.zig");

const I8x32 = common.I8x32;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

pub const Block = extern struct {
    d: f16,
    qs: [32]i8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 34);
}

pub const block_values = 32;

pub const Row = struct {
    qs: [*]i8,
    d: [*]f32,

    pub fn bytes(k: usize) usize {
        return std.mem.alignForward(usize, k + k / 32 * 4, 64);
    }

    pub fn at(base: [*]align(64) u8, k: usize, t: usize) Row {
        const p = base + t * bytes(k);
        return .{ .qs = @ptrCast(p), .d = @ptrCast(@alignCast(p + k)) };
    }
};

pub fn quantize(x: [*]const f32, k: usize, row: Row) void {
    for (0..k / 32) |b| {
        var v: [4]F32x8 = undefined;
        inline for (0..4) |i| v[i] = x[32 * b + 8 * i ..][0..8].*;
        const amax = @reduce(.Max, @max(@max(@abs(v[0]), @abs(v[1])), @max(@abs(v[2]), @abs(v[3]))));
        const d: f16 = @floatCast(amax / 127.0);
        row.d[b] = d;
        const scale: F32x8 = @splat(if (amax != 0) 127.0 / amax else 0);
        inline for (0..4) |i| {
            const q: @Vector(8, i32) = @intFromFloat(common.roundEven(v[i] * scale));
            row.qs[32 * b + 8 * i ..][0..8].* = @as(@Vector(8, i8), @intCast(q));
        }
    }
}

/// `k / 32` blocks in ggml's own layout (`Block`, 34 bytes each, unaligned) from `k` floats, with
/// the same rounding as `quantize`: what llama.cpp writes into a Q8_0 KV cache (its `set_rows`
/// converts with the CPU backend's `quantize_row_q8_0`).
pub fn quantizeRow(x: [*]const f32, k: usize, out: [*]u8) void {
    for (0..k / 32) |b| {
        var v: [4]F32x8 = undefined;
        inline for (0..4) |i| v[i] = x[32 * b + 8 * i ..][0..8].*;
        const amax = @reduce(.Max, @max(@max(@abs(v[0]), @abs(v[1])), @max(@abs(v[2]), @abs(v[3]))));
        const blk = out + 34 * b;
        @as(*align(1) f16, @ptrCast(blk)).* = @floatCast(amax / 127.0);
        const scale: F32x8 = @splat(if (amax != 0) 127.0 / amax else 0);
        inline for (0..4) |i| {
            const q: @Vector(8, i32) = @intFromFloat(common.roundEven(v[i] * scale));
            (blk + 2 + 8 * i)[0..8].* = @bitCast(@as(@Vector(8, i8), @intCast(q)));
        }
    }
}

/// L consecutive values (L = 8 or 16) of a block in ggml's layout, starting at value `at` (a
/// multiple of L), as f32.
pub inline fn widen(comptime L: usize, blk: [*]const u8, at: usize) @Vector(L, f32) {
    const d: f32 = @as(*align(1) const f16, @ptrCast(blk)).*;
    const q: @Vector(L, i8) = @bitCast((blk + 2 + at)[0..L].*);
    return @as(@Vector(L, f32), @floatFromInt(q)) * @as(@Vector(L, f32), @splat(d));
}

/// llama.cpp's AVX2 `quantize_row_q8_0`, scalar, for the tests.
pub fn quantizeBlockRef(x: *const [32]f32, qs: *[32]i8) f16 {
    var amax: f32 = 0;
    for (x) |v| amax = @max(amax, @abs(v));
    const id: f32 = if (amax != 0) 127.0 / amax else 0;
    for (x, qs) |v, *q| q.* = @intFromFloat(common.roundEvenScalar(v * id));
    return @floatCast(amax / 127.0);
}

pub fn dequantizeRef(blk: *const Block, out: *[32]f32) void {
    for (out, blk.qs) |*o, q| o.* = @as(f32, blk.d) * @as(f32, @floatFromInt(q));
}

pub fn dequantize(blk: *const Block, out: *[32]f32) void {
    const d: F32x8 = @splat(@as(f32, blk.d));
    inline for (0..4) |i| {
        const q: @Vector(8, i8) = blk.qs[8 * i ..][0..8].*;
        out[8 * i ..][0..8].* = d * @as(F32x8, @floatFromInt(q));
    }
}

pub inline fn blockDot(blk: *const Block, xq: [*]const i8, dx: f32) F32x8 {
    const isum = common.dotSignedBytes(blk.qs, xq[0..32].*);
    return @as(F32x8, @floatFromInt(isum)) * @as(F32x8, @splat(@as(f32, blk.d) * dx));
}

pub fn blockDotRef(blk: *const Block, xq: [*]const i8, dx: f32) f32 {
    var isum: i32 = 0;
    for (0..32) |i| isum += @as(i32, blk.qs[i]) * xq[i];
    return @as(f32, blk.d) * dx * @as(f32, @floatFromInt(isum));
}

/// Dot products of R weight rows (`nb` blocks each) with one activation row.
pub inline fn dotRows(comptime R: usize, rows: [R][*]const Block, act: Row, nb: usize, ahead: usize) [R]f32 {
    var acc: [R]F32x8 = @splat(@splat(0));
    for (0..nb) |b| {
        inline for (0..R) |r| {
            common.prefetchSpan(@as([*]const u8, @ptrCast(&rows[r][b])) + ahead, @sizeOf(Block));
            acc[r] += blockDot(&rows[r][b], act.qs + 32 * b, act.d[b]);
        }
    }
    var out: [R]f32 = undefined;
    inline for (0..R) |r| out[r] = common.sum(acc[r]);
    return out;
}

/// R weight rows × T activation rows: the weights (`common.signedWeights`) and their scale are prepared
/// and serve T tokens.
pub fn tile(comptime R: usize, comptime T: usize, rows: [R][*]const Block, acts: [T]Row, nb: usize, out: *[R][T]f32) void {
    var facc: [R][T]F32x8 = @splat(@splat(@splat(0)));
    for (0..nb) |b| {
        var x: [T]I8x32 = undefined;
        inline for (0..T) |t| x[t] = acts[t].qs[32 * b ..][0..32].*;
        inline for (0..R) |r| {
            const blk = &rows[r][b];
            const w = common.signedWeights(blk.qs);
            const dw: f32 = blk.d;
            inline for (0..T) |t| {
                const isum = common.dotSigned(@splat(0), w, x[t]);
                facc[r][t] = common.mulAdd(F32x8, @floatFromInt(isum), @splat(dw * acts[t].d[b]), facc[r][t]);
            }
        }
    }
    inline for (0..R) |r| inline for (0..T) |t| {
        out[r][t] = common.sum(facc[r][t]);
    };
}

pub fn randomBlock(rand: std.Random) Block {
    var blk: Block = undefined;
    rand.bytes(std.mem.asBytes(&blk));
    blk.d = @floatCast(0.001 + rand.float(f32) * 0.01);
    return blk;
}

test "Q8_0 activation quantization matches llama.cpp's AVX2 rounding" {
    var prng = common.testRng(8);
    const rand = prng.random();
    const k = 8 * 32;
    var x: [k]f32 = undefined;
    var buf: [Row.bytes(k)]u8 align(64) = undefined;
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
            const d = quantizeBlockRef(x[32 * b ..][0..32], &qs);
            try std.testing.expectEqual(@as(f32, d), row.d[b]);
            try std.testing.expectEqualSlices(i8, &qs, row.qs[32 * b ..][0..32]);
        }
    }
}

test "Q8_0 dequantization, block dot, row dots and tiles agree with the references" {
    var prng = common.testRng(9);
    const rand = prng.random();
    const nb = 5;
    const k = nb * 32;
    var rows: [3][nb]Block = undefined;
    for (&rows) |*row| for (row) |*blk| {
        blk.* = randomBlock(rand);
    };
    rows[1][2].qs[7] = -128; // never produced by llama.cpp's quantizer, but still computed right
    var buf: [3 * Row.bytes(k)]u8 align(64) = undefined;
    var acts: [3]Row = undefined;
    var x: [k]f32 = undefined;
    for (0..3) |t| {
        for (&x) |*v| v.* = rand.floatNorm(f32);
        acts[t] = Row.at(&buf, k, t);
        quantize(&x, k, acts[t]);
    }
    var want: [3][3]f32 = undefined;
    for (0..3) |r| for (0..3) |t| {
        var s: f32 = 0;
        var float_dot: f64 = 0;
        for (0..nb) |b| {
            var ref: [32]f32 = undefined;
            var simd: [32]f32 = undefined;
            dequantizeRef(&rows[r][b], &ref);
            dequantize(&rows[r][b], &simd);
            try std.testing.expectEqualSlices(f32, &ref, &simd);
            for (0..32) |i| float_dot += @as(f64, ref[i]) * acts[t].d[b] * @as(f64, @floatFromInt(acts[t].qs[32 * b + i]));
            const one = blockDotRef(&rows[r][b], acts[t].qs + 32 * b, acts[t].d[b]);
            try std.testing.expectApproxEqAbs(one, common.sum(blockDot(&rows[r][b], acts[t].qs + 32 * b, acts[t].d[b])), 1e-6 * @max(1, @abs(one)));
            s += one;
        }
        try std.testing.expectApproxEqAbs(float_dot, s, 1e-5 * @max(1, @abs(float_dot)));
        want[r][t] = s;
    };
    const by_rows = dotRows(3, .{ &rows[0], &rows[1], &rows[2] }, acts[1], nb, 0);
    for (0..3) |r| try std.testing.expectApproxEqAbs(want[r][1], by_rows[r], 1e-5 * @max(1, @abs(want[r][1])));
    var out: [3][2]f32 = undefined;
    tile(3, 2, .{ &rows[0], &rows[1], &rows[2] }, .{ acts[0], acts[1] }, nb, &out);
    for (0..3) |r| for (0..2) |t| {
        try std.testing.expectApproxEqAbs(want[r][t], out[r][t], 1e-5 * @max(1, @abs(want[r][t])));
    };
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
