//! Small `@Vector` helpers shared by the kernels. Zig 0.16+ does not auto-vectorise loops, so hot
//! loops are written over these 8-lane (AVX2) vectors explicitly.
const std = @import("std");
const builtin = @import("builtin");

/// Whether the CPU fuses multiply-add: x86 from the x86_64_v3 level (FMA3) on, every arm64 CPU.
pub const has_fma = switch (builtin.cpu.arch) {
    .x86_64 => std.Target.x86.featureSetHas(builtin.cpu.features, .fma),
    .aarch64 => true,
    else => false,
};

/// a·b + c, fused where the CPU has FMA. Use this, not `@mulAdd`, in kernels: without FMA (the
/// baseline x86-64 level) `@mulAdd` becomes one call to the software `fmaf` per lane, many times
/// slower than the multiply and add that llama.cpp's SSE builds also compute (rounding twice).
pub inline fn mulAdd(comptime T: type, a: T, b: T, c: T) T {
    if (comptime has_fma) return @mulAdd(T, a, b, c);
    return a * b + c;
}

pub const lanes = 8;
pub const V = @Vector(lanes, f32);

pub inline fn load(p: [*]const f32) V {
    return p[0..lanes].*;
}

pub inline fn store(p: [*]f32, v: V) void {
    p[0..lanes].* = v;
}

/// n-lane forms of `load` and `store`, for kernels that pick their width (8 or 16) per shape.
pub inline fn loadN(comptime n: usize, p: [*]const f32) @Vector(n, f32) {
    return p[0..n].*;
}

pub inline fn storeN(comptime n: usize, p: [*]f32, v: @Vector(n, f32)) void {
    p[0..n].* = v;
}

pub inline fn sum(v: V) f32 {
    return @reduce(.Add, v);
}

/// Σ a[i]·b[i] over n values (any n).
pub fn dot(a: [*]const f32, b: [*]const f32, n: usize) f32 {
    var acc0: V = @splat(0);
    var acc1: V = @splat(0);
    var i: usize = 0;
    while (i + 2 * lanes <= n) : (i += 2 * lanes) {
        acc0 = mulAdd(V, load(a + i), load(b + i), acc0);
        acc1 = mulAdd(V, load(a + i + lanes), load(b + i + lanes), acc1);
    }
    while (i + lanes <= n) : (i += lanes) acc0 = mulAdd(V, load(a + i), load(b + i), acc0);
    var s = sum(acc0 + acc1);
    while (i < n) : (i += 1) s += a[i] * b[i];
    return s;
}

/// Σ a[i]² over n values.
pub fn sumSquares(a: [*]const f32, n: usize) f32 {
    return dot(a, a, n);
}

/// y[i] = x[i]·s (x and y may alias).
pub fn scale(x: [*]const f32, y: [*]f32, s: f32, n: usize) void {
    const sv: V = @splat(s);
    var i: usize = 0;
    while (i + lanes <= n) : (i += lanes) store(y + i, load(x + i) * sv);
    while (i < n) : (i += 1) y[i] = x[i] * s;
}

/// Lane-wise e^x for any f32 vector width, within ~2 ulp of the exact value. `@exp` on a vector
/// becomes one libm call per lane (LLVM has no vector exp), which made SiLU the slowest part of
/// some layers; this is range reduction x = n·ln2 + r (|r| ≤ ln2/2, ln2 split in two parts so
/// n·ln2 is exact) and a degree-7 Taylor polynomial for e^r, scaled by 2^n through the exponent
/// bits. Below -87.3 the result is 0, above 88.7 it is +inf; NaN stays NaN.
pub inline fn expv(comptime n: usize, x: @Vector(n, f32)) @Vector(n, f32) {
    const F = @Vector(n, f32);
    const I = @Vector(n, i32);
    const lo: F = @splat(-87.3);
    const hi: F = @splat(88.7);
    const xc = @min(@max(x, lo), hi);
    // Round to nearest by the 1.5·2^23 trick (|x·log2 e| < 2^22): `@round` needs SSE4.1, and
    // would be a libm call per lane at the baseline level.
    const magic: F = @splat(12582912.0);
    const k = (xc * @as(F, @splat(1.44269504088896341)) + magic) - magic;
    const r = mulAdd(F, k, @splat(-1.428606765330187045e-06), mulAdd(F, k, @splat(-0.693145751953125), xc));
    var p: F = @splat(1.0 / 5040.0);
    p = mulAdd(F, p, r, @splat(1.0 / 720.0));
    p = mulAdd(F, p, r, @splat(1.0 / 120.0));
    p = mulAdd(F, p, r, @splat(1.0 / 24.0));
    p = mulAdd(F, p, r, @splat(1.0 / 6.0));
    p = mulAdd(F, p, r, @splat(0.5));
    p = mulAdd(F, p, r, @splat(1.0));
    p = mulAdd(F, p, r, @splat(1.0));
    const scaled: F = @bitCast(@as(I, @bitCast(p)) +% (@as(I, @intFromFloat(k)) << @splat(23)));
    const zero: F = @splat(0);
    const inf: F = @splat(std.math.inf(f32));
    const result = @select(f32, x < lo, zero, @select(f32, x > hi, inf, scaled));
    return @select(f32, x != x, x, result);
}

pub inline fn exp(x: V) V {
    return expv(lanes, x);
}

/// e^x for one value, by `expv`. Kernels use this, not `@exp`: `@exp` calls the C library's expf,
/// whose last bits differ between systems (glibc's x86-64 and arm64 builds disagree), and through
/// quantized activations one last bit can move a model's logits visibly. With it, and `logScalar`,
/// every platform computes the same bits.
pub fn expScalar(x: f32) f32 {
    return expv(1, .{x})[0];
}

/// ln x for x > 0 (normal, finite; other inputs are not needed by the kernels), within ~1 ulp:
/// x = m·2^e with m in [√½, √2), ln x = e·ln 2 + 2·atanh(s), s = (m−1)/(m+1), |s| < 0.172, by
/// its odd series to s^13 (error below 1e-9 relative), all in f64. Deterministic everywhere, like
/// `expScalar`, unlike the C library's logf.
pub fn logScalar(x: f32) f32 {
    const bits: u32 = @bitCast(x);
    var e: i32 = @as(i32, @intCast(bits >> 23)) - 127;
    var m: f64 = @as(f32, @bitCast((bits & 0x007f_ffff) | 0x3f80_0000));
    if (m > std.math.sqrt2) {
        m *= 0.5;
        e += 1;
    }
    const s = (m - 1) / (m + 1);
    const s2 = s * s;
    var p: f64 = 1.0 / 13.0;
    inline for (.{ 11.0, 9.0, 7.0, 5.0, 3.0, 1.0 }) |k| p = p * s2 + 1.0 / k;
    return @floatCast(@as(f64, @floatFromInt(e)) * std.math.ln2 + 2 * s * p);
}

pub inline fn sigmoid(x: V) V {
    const one: V = @splat(1);
    return one / (one + exp(-x));
}

pub inline fn silu(x: V) V {
    return x * sigmoid(x);
}

pub fn sigmoidScalar(x: f32) f32 {
    return 1.0 / (1.0 + expScalar(-x));
}

pub fn siluScalar(x: f32) f32 {
    return x * sigmoidScalar(x);
}

test "vector exp is within 2 ulp-ish of std exp over the useful range, and saturates" {
    var x: f32 = -87;
    var worst: f32 = 0;
    while (x < 88) : (x += 0.01373) {
        const got = exp(@splat(x))[0];
        const want = @exp(@as(f64, x));
        worst = @max(worst, @as(f32, @floatCast(@abs(got - want) / want)));
    }
    try std.testing.expect(worst < 3e-7);
    const edge = exp(.{ -100, 100, 0, std.math.nan(f32), -87.3, 1, -1, 88 });
    try std.testing.expectEqual(@as(f32, 0), edge[0]);
    try std.testing.expect(std.math.isInf(edge[1]));
    try std.testing.expectEqual(@as(f32, 1), edge[2]);
    try std.testing.expect(std.math.isNan(edge[3]));
}

test "expScalar and logScalar are within an ulp or two of f64 references" {
    var worst_exp: f64 = 0;
    var worst_log: f64 = 0;
    var x: f32 = -80;
    while (x < 80) : (x += 0.0137) {
        worst_exp = @max(worst_exp, @abs(expScalar(x) - @exp(@as(f64, x))) / @exp(@as(f64, x)));
        const y = @exp(x / 4);
        worst_log = @max(worst_log, @abs(logScalar(y) - @log(@as(f64, y))) / @max(1e-30, @abs(@log(@as(f64, y)))));
    }
    try std.testing.expect(worst_exp < 3e-7);
    // relative to |ln y|, which is small near y = 1: bounded by f32 rounding of the result
    try std.testing.expect(worst_log < 2e-7);
    try std.testing.expectEqual(@as(f32, 0), logScalar(1));
    try std.testing.expectApproxEqRel(@as(f32, std.math.ln2), logScalar(2), 1e-7);
}

test "dot matches a scalar sum for every tail length" {
    var a: [40]f32 = undefined;
    var b: [40]f32 = undefined;
    for (0..40) |i| {
        a[i] = @floatFromInt(i % 7);
        b[i] = @as(f32, @floatFromInt(i % 5)) - 2;
    }
    for (0..41) |n| {
        var want: f32 = 0;
        for (0..n) |i| want += a[i] * b[i];
        try std.testing.expectApproxEqAbs(want, dot(&a, &b, n), 1e-4);
    }
}
