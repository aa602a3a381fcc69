//! Q8_K: the int8 form activations take before a dot product with Q4_K, Q5_K or Q6_K weights,
//! reproducing llama.cpp's CPU backend (`quantize_row_q8_K_ref`) so results match it closely.
//!
//! Per block of 256 values with amax = max |x|:
//!   iscale = 127/amax,  d = 1/iscale,  q = roundEven(x·iscale) ∈ [-127, 127],  x ≈ d·q
//! (llama.cpp uses the signed element of largest magnitude, giving d and q of the opposite sign
//! when that element is positive; d·q is bit-identical either way.) All-zero blocks get d = 0.
//!
//! ggml stores `{f32 d; i8 qs[256]; i16 bsums[16]}` per block; deltaq stores one token's row as
//! separate arrays instead so every 32-byte load of `qs` is aligned and contiguous:
//!
//!   qs:     [k]i8         the quantized values
//!   bsums:  [k/16]i16     Σ of each 16 consecutive q (folds weight offsets into one multiply)
//!   d:      [k/256]f32    block scale
//!   sums32: [k/32]f32     d·Σ of each 32 consecutive q (the float min term of Q4_K/Q5_K GEMM)
//!
//! GEMM tiles read `qs` interleaved (`interleave`, layout in `kquants`); bsums, d and sums32 keep
//! their order.
const std = @import("std");
const common = @import("common.zig");

const F32x8 = common.F32x8;
pub const block_values = 256;

pub const Row = struct {
    qs: [*]i8,
    bsums: [*]i16,
    d: [*]f32,
    sums32: [*]f32,

    /// Bytes one row of `k` values occupies in scratch memory (a multiple of 64).
    pub fn bytes(k: usize) usize {
        return std.mem.alignForward(usize, k + k / 16 * 2 + k / 256 * 4 + k / 32 * 4, 64);
    }

    /// Row `t` of a scratch area holding rows of `k` values, `bytes(k)` apart.
    pub fn at(base: [*]align(64) u8, k: usize, t: usize) Row {
        const p = base + t * bytes(k);
        return .{
            .qs = @ptrCast(p),
            .bsums = @ptrCast(@alignCast(p + k)),
            .d = @ptrCast(@alignCast(p + k + k / 16 * 2)),
            .sums32 = @ptrCast(@alignCast(p + k + k / 16 * 2 + k / 256 * 4)),
        };
    }
};

/// Quantizes `k` floats (a multiple of 256) into `row`.
pub fn quantize(x: [*]const f32, k: usize, row: Row) void {
    for (0..k / block_values) |b| {
        const src = x + b * block_values;
        var vmax: F32x8 = @splat(0);
        inline for (0..32) |i| vmax = @max(vmax, @abs(@as(F32x8, src[8 * i ..][0..8].*)));
        const amax = @reduce(.Max, vmax);
        const iscale: f32 = if (amax == 0) 0 else 127.0 / amax;
        row.d[b] = if (amax == 0) 0 else 1.0 / iscale;
        const scale: F32x8 = @splat(iscale);
        inline for (0..16) |g| {
            const lo: @Vector(8, i32) = @intFromFloat(common.roundEven(@as(F32x8, src[16 * g ..][0..8].*) * scale));
            const hi: @Vector(8, i32) = @intFromFloat(common.roundEven(@as(F32x8, src[16 * g + 8 ..][0..8].*) * scale));
            row.qs[b * block_values + 16 * g ..][0..8].* = @as(@Vector(8, i8), @intCast(lo));
            row.qs[b * block_values + 16 * g + 8 ..][0..8].* = @as(@Vector(8, i8), @intCast(hi));
            row.bsums[b * 16 + g] = @intCast(@reduce(.Add, lo + hi));
        }
        for (0..8) |j| {
            const s: i32 = @as(i32, row.bsums[b * 16 + 2 * j]) + row.bsums[b * 16 + 2 * j + 1];
            row.sums32[b * 8 + j] = row.d[b] * @as(f32, @floatFromInt(s));
        }
    }
}

/// Reorders each block's `qs` in place for the GEMM tiles: vector v of a block holds values
/// 4v..4v+3 of each of its eight 32-value chunks (`kquants.Unpacked` describes the layout).
pub fn interleave(row: Row, k: usize) void {
    for (0..k / block_values) |b| {
        const qs: *[8]common.U8x32 = @ptrCast(@alignCast(row.qs + b * block_values));
        qs.* = common.transposeWords(qs.*);
    }
}

/// llama.cpp's `quantize_row_q8_K_ref`, written out for the tests: one block, signed-max variant.
pub fn quantizeBlockRef(x: *const [256]f32, qs: *[256]i8, bsums: *[16]i16) f32 {
    var max: f32 = 0;
    var amax: f32 = 0;
    for (x) |v| if (@abs(v) > amax) {
        amax = @abs(v);
        max = v;
    };
    if (amax == 0) {
        qs.* = @splat(0);
        bsums.* = @splat(0);
        return 0;
    }
    const iscale = -127.0 / max;
    for (x, qs) |v, *q| q.* = @intFromFloat(@min(127, common.roundEvenScalar(iscale * v)));
    for (0..16) |g| {
        var s: i32 = 0;
        for (qs[16 * g ..][0..16]) |q| s += q;
        bsums[g] = @intCast(s);
    }
    return 1.0 / iscale;
}

test "Q8_K quantization reproduces llama.cpp's d·q exactly" {
    var prng = common.testRng(7);
    const rand = prng.random();
    const k = 4 * 256;
    var x: [k]f32 = undefined;
    var buf: [Row.bytes(k)]u8 align(64) = undefined;
    for (0..50) |iter| {
        for (&x, 0..) |*v, i| v.* = (rand.float(f32) - 0.5) * @as(f32, if (i % 97 == 0) 40 else 3);
        if (iter % 5 == 0) @memset(x[256..512], 0); // an all-zero block
        if (iter % 7 == 0) x[300] = -x[301]; // ties of opposite sign
        const row = Row.at(&buf, k, 0);
        quantize(&x, k, row);
        for (0..k / 256) |b| {
            var qs: [256]i8 = undefined;
            var bsums: [16]i16 = undefined;
            const d = quantizeBlockRef(x[b * 256 ..][0..256], &qs, &bsums);
            for (0..256) |i| {
                const want = d * @as(f32, @floatFromInt(qs[i]));
                const got = row.d[b] * @as(f32, @floatFromInt(row.qs[b * 256 + i]));
                try std.testing.expectEqual(want, got);
            }
            for (0..16) |g| try std.testing.expectEqual(d * @as(f32, @floatFromInt(bsums[g])), row.d[b] * @as(f32, @floatFromInt(row.bsums[b * 16 + g])));
            for (0..8) |j| {
                const s = @as(i32, bsums[2 * j]) + bsums[2 * j + 1];
                try std.testing.expectEqual(d * @as(f32, @floatFromInt(s)), row.sums32[b * 8 + j]);
            }
        }
    }
}
