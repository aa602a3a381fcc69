//! Float weights: F32, F16 (IEEE half) and BF16 (the upper 16 bits of an f32), any row length.
//!
//! llama.cpp's CPU backend multiplies F16 weights with activations rounded to F16 and BF16
//! weights with activations rounded to BF16, accumulating in f32; F32 weights use f32
//! activations. deltaq rounds the activations the same way but keeps them as f32 values (the
//! rounding is exact to undo), so every float kernel below computes f32 FMAs of widened weights.
const std = @import("std");
const common = @import("common.zig");

const F32x8 = common.F32x8;

/// BF16 values are handled as their bit patterns.
pub const Bf16 = u16;

/// Widens 8 weights to f32.
pub inline fn load8(comptime T: type, p: [*]const T) F32x8 {
    return switch (T) {
        f32 => p[0..8].*,
        f16 => @floatCast(@as(common.F16x8, p[0..8].*)),
        Bf16 => @bitCast(@as(@Vector(8, u32), @as(common.U16x8, p[0..8].*)) << @splat(16)),
        else => @compileError("not a float weight type"),
    };
}

pub inline fn toF32(comptime T: type, v: T) f32 {
    return switch (T) {
        f32 => v,
        f16 => v,
        Bf16 => @bitCast(@as(u32, v) << 16),
        else => @compileError("not a float weight type"),
    };
}

/// f32 → BF16 bits, rounding to nearest even; NaNs stay NaN (ggml's `fp32_to_bf16`).
pub fn toBf16(x: f32) Bf16 {
    const u: u32 = @bitCast(x);
    if (u & 0x7fff_ffff > 0x7f80_0000) return @truncate((u >> 16) | 64);
    return @truncate((u +% (0x7fff + ((u >> 16) & 1))) >> 16);
}

/// x rounded to the precision of T, as f32 (the activation rounding described above).
pub fn roundTo(comptime T: type, x: f32) f32 {
    return switch (T) {
        f32 => x,
        f16 => @as(f16, @floatCast(x)),
        Bf16 => toF32(Bf16, toBf16(x)),
        else => @compileError("not a float weight type"),
    };
}

/// Rounds n activations to T's precision (`roundTo`) into out.
pub fn roundRow(comptime T: type, x: [*]const f32, out: [*]f32, n: usize) void {
    var i: usize = 0;
    if (T == f16) while (i + 8 <= n) : (i += 8) {
        const h: common.F16x8 = @floatCast(@as(F32x8, x[i..][0..8].*));
        out[i..][0..8].* = @as(F32x8, @floatCast(h));
    };
    while (i < n) : (i += 1) out[i] = roundTo(T, x[i]);
}

pub fn getRow(comptime T: type, row: [*]const T, out: [*]f32, n: usize) void {
    var i: usize = 0;
    while (i + 8 <= n) : (i += 8) out[i..][0..8].* = load8(T, row + i);
    while (i < n) : (i += 1) out[i] = toF32(T, row[i]);
}

/// Dot products of R weight rows of n values with one f32 activation row, prefetching `ahead`
/// bytes past what each row reads.
pub inline fn dotRows(comptime T: type, comptime R: usize, rows: [R][*]const T, x: [*]const f32, n: usize, ahead: usize) [R]f32 {
    var acc: [R][2]F32x8 = @splat(@splat(@splat(0)));
    var i: usize = 0;
    while (i + 16 <= n) : (i += 16) {
        const x0: F32x8 = x[i..][0..8].*;
        const x1: F32x8 = x[i + 8 ..][0..8].*;
        inline for (0..R) |r| {
            common.prefetchSpan(@as([*]const u8, @ptrCast(rows[r] + i)) + ahead, 16 * @sizeOf(T));
            acc[r][0] = common.mulAdd(F32x8, load8(T, rows[r] + i), x0, acc[r][0]);
            acc[r][1] = common.mulAdd(F32x8, load8(T, rows[r] + i + 8), x1, acc[r][1]);
        }
    }
    var out: [R]f32 = undefined;
    inline for (0..R) |r| {
        var s = common.sum(acc[r][0] + acc[r][1]);
        for (i..n) |j| s += toF32(T, rows[r][j]) * x[j];
        out[r] = s;
    }
    return out;
}

/// R weight rows × T activation rows of n values: each widened weight vector serves T tokens.
pub fn tile(comptime W: type, comptime R: usize, comptime T: usize, rows: [R][*]const W, xs: [T][*]const f32, n: usize, out: *[R][T]f32) void {
    var acc: [R][T]F32x8 = @splat(@splat(@splat(0)));
    var i: usize = 0;
    while (i + 8 <= n) : (i += 8) {
        var x: [T]F32x8 = undefined;
        inline for (0..T) |t| x[t] = xs[t][i..][0..8].*;
        inline for (0..R) |r| {
            const w = load8(W, rows[r] + i);
            inline for (0..T) |t| acc[r][t] = common.mulAdd(F32x8, w, x[t], acc[r][t]);
        }
    }
    inline for (0..R) |r| inline for (0..T) |t| {
        var s = common.sum(acc[r][t]);
        for (i..n) |j| s += toF32(W, rows[r][j]) * xs[t][j];
        out[r][t] = s;
    };
}

test "BF16 rounding is round-to-nearest-even and keeps NaN" {
    try std.testing.expectEqual(@as(Bf16, 0x3f80), toBf16(1.0));
    try std.testing.expectEqual(@as(Bf16, 0x3f80), toBf16(@bitCast(@as(u32, 0x3f80_8000)))); // tie → even
    try std.testing.expectEqual(@as(Bf16, 0x3f82), toBf16(@bitCast(@as(u32, 0x3f81_8000)))); // tie → even
    try std.testing.expectEqual(@as(Bf16, 0x3f81), toBf16(@bitCast(@as(u32, 0x3f80_8001))));
    try std.testing.expect(std.math.isNan(toF32(Bf16, toBf16(std.math.nan(f32)))));
}

test "float kernels match scalar sums for every weight type and tail length" {
    var prng = common.testRng(21);
    const rand = prng.random();
    inline for (.{ f32, f16, Bf16 }) |W| {
        for ([_]usize{ 1, 7, 8, 23, 64, 77 }) |n| {
            var w: [3][80]W = undefined;
            var x: [2][80]f32 = undefined;
            for (&w) |*row| for (row) |*v| {
                const f = rand.floatNorm(f32);
                v.* = if (W == Bf16) toBf16(f) else @floatCast(f);
            };
            for (&x) |*row| for (row) |*v| {
                v.* = roundTo(W, rand.floatNorm(f32));
            };
            var want: [3][2]f64 = undefined;
            for (0..3) |r| for (0..2) |t| {
                var s: f64 = 0;
                for (0..n) |j| s += @as(f64, toF32(W, w[r][j])) * x[t][j];
                want[r][t] = s;
            };
            const rows = [3][*]const W{ &w[0], &w[1], &w[2] };
            const got = dotRows(W, 3, rows, &x[1], n, 0);
            var out: [3][2]f32 = undefined;
            tile(W, 3, 2, rows, .{ &x[0], &x[1] }, n, &out);
            for (0..3) |r| {
                try std.testing.expectApproxEqAbs(want[r][1], got[r], 1e-4);
                for (0..2) |t| try std.testing.expectApproxEqAbs(want[r][t], out[r][t], 1e-4);
            }
            var row: [80]f32 = undefined;
            getRow(W, rows[2], &row, n);
            for (0..n) |j| try std.testing.expectEqual(toF32(W, w[2][j]), row[j]);
            var raw: [80]f32 = undefined;
            for (&raw) |*v| v.* = rand.floatNorm(f32);
            var rounded: [80]f32 = undefined;
            roundRow(W, &raw, &rounded, n);
            for (0..n) |j| {
                try std.testing.expectEqual(roundTo(W, raw[j]), rounded[j]);
                if (W != f32) try std.testing.expectApproxEqRel(raw[j], rounded[j], if (W == f16) 1e-3 else 8e-3);
            }
        }
    }
}
