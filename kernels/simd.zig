//! Small `@Vector` helpers shared by the kernels. Zig 0.16+ does not auto-vectorise loops, so hot
//! loops are written over these 8-lane (AVX2) vectors explicitly.
const std = @import("std");

pub const lanes = 8;
pub const V = @Vector(lanes, f32);

pub inline fn load(p: [*]const f32) V {
    return p[0..lanes].*;
}

pub inline fn store(p: [*]f32, v: V) void {
    p[0..lanes].* = v;
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
        acc0 = @mulAdd(V, load(a + i), load(b + i), acc0);
        acc1 = @mulAdd(V, load(a + i + lanes), load(b + i + lanes), acc1);
    }
    while (i + lanes <= n) : (i += lanes) acc0 = @mulAdd(V, load(a + i), load(b + i), acc0);
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

/// Lane-wise exp for f32 vectors, accurate to a few ulp over the range the kernels need
/// (inputs below -87 flush to 0, above 88 saturate to +inf).
pub inline fn exp(x: V) V {
    return @exp(x);
}

pub inline fn sigmoid(x: V) V {
    const one: V = @splat(1);
    return one / (one + @exp(-x));
}

pub inline fn silu(x: V) V {
    return x * sigmoid(x);
}

pub fn sigmoidScalar(x: f32) f32 {
    return 1.0 / (1.0 + @exp(-x));
}

pub fn siluScalar(x: f32) f32 {
    return x * sigmoidScalar(x);
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
