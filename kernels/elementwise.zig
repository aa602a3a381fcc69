//! Element-wise operations on contiguous f32 rows: residual add, SwiGLU, sigmoid output gate.
const std = @import("std");
const simd = @import("simd.zig");
const pool_mod = @import("pool.zig");

/// Below this many values an op runs on the calling thread (waking workers costs more).
const min_parallel = 32 * 1024;

/// a[i] += b[i]
pub fn add(pool: *pool_mod.Pool, a: [*]f32, b: [*]const f32, n: usize) void {
    const Job = struct {
        a: [*]f32,
        b: [*]const f32,
        pub fn range(j: *const @This(), begin: usize, end: usize) void {
            addRange(j.a + begin, j.b + begin, end - begin);
        }
    };
    pool_mod.forRange(pool, n, 64, min_parallel, Job, &.{ .a = a, .b = b });
}

fn addRange(a: [*]f32, b: [*]const f32, n: usize) void {
    var i: usize = 0;
    while (i + simd.lanes <= n) : (i += simd.lanes) simd.store(a + i, simd.load(a + i) + simd.load(b + i));
    while (i < n) : (i += 1) a[i] += b[i];
}

/// out[i] = silu(gate[i]) · up[i]
pub fn swiglu(pool: *pool_mod.Pool, gate: [*]const f32, up: [*]const f32, out: [*]f32, n: usize) void {
    const Job = struct {
        gate: [*]const f32,
        up: [*]const f32,
        out: [*]f32,
        pub fn range(j: *const @This(), begin: usize, end: usize) void {
            swigluRange(j.gate + begin, j.up + begin, j.out + begin, end - begin);
        }
    };
    pool_mod.forRange(pool, n, 64, min_parallel, Job, &.{ .gate = gate, .up = up, .out = out });
}

fn swigluRange(gate: [*]const f32, up: [*]const f32, out: [*]f32, n: usize) void {
    var i: usize = 0;
    while (i + simd.lanes <= n) : (i += simd.lanes) simd.store(out + i, simd.silu(simd.load(gate + i)) * simd.load(up + i));
    while (i < n) : (i += 1) out[i] = simd.siluScalar(gate[i]) * up[i];
}

/// x[r][i] *= sigmoid(gate[r][i]) for n_rows rows of dim values with their own strides.
pub fn sigmoidGate(pool: *pool_mod.Pool, x: [*]f32, gate: [*]const f32, n_rows: usize, dim: usize, x_stride: usize, gate_stride: usize) void {
    const Job = struct {
        x: [*]f32,
        gate: [*]const f32,
        dim: usize,
        x_stride: usize,
        gate_stride: usize,
        pub fn range(j: *const @This(), begin: usize, end: usize) void {
            sigmoidGateRows(j.x + begin * j.x_stride, j.gate + begin * j.gate_stride, end - begin, j.dim, j.x_stride, j.gate_stride);
        }
    };
    pool_mod.forRange(pool, n_rows, 1, min_parallel / @max(dim, 1), Job, &.{ .x = x, .gate = gate, .dim = dim, .x_stride = x_stride, .gate_stride = gate_stride });
}

fn sigmoidGateRows(x: [*]f32, gate: [*]const f32, n_rows: usize, dim: usize, x_stride: usize, gate_stride: usize) void {
    for (0..n_rows) |r| {
        const xr = x + r * x_stride;
        const gr = gate + r * gate_stride;
        var i: usize = 0;
        while (i + simd.lanes <= dim) : (i += simd.lanes) simd.store(xr + i, simd.load(xr + i) * simd.sigmoid(simd.load(gr + i)));
        while (i < dim) : (i += 1) xr[i] *= simd.sigmoidScalar(gr[i]);
    }
}

test "element-wise ops match scalar formulas" {
    var pool: pool_mod.Pool = undefined;
    try pool.init(1);
    defer pool.deinit();
    var a: [19]f32 = undefined;
    var b: [19]f32 = undefined;
    for (0..19) |i| {
        a[i] = @as(f32, @floatFromInt(i)) * 0.5 - 4;
        b[i] = @as(f32, @floatFromInt(i % 5)) - 2;
    }
    var s = a;
    add(&pool, &s, &b, 19);
    for (0..19) |i| try std.testing.expectEqual(a[i] + b[i], s[i]);
    var out: [19]f32 = undefined;
    swiglu(&pool, &a, &b, &out, 19);
    for (0..19) |i| try std.testing.expectApproxEqAbs(a[i] / (1 + @exp(-a[i])) * b[i], out[i], 1e-5);
    var x = a;
    sigmoidGate(&pool, &x, &b, 1, 19, 19, 19);
    for (0..19) |i| try std.testing.expectApproxEqAbs(a[i] / (1 + @exp(-b[i])), x[i], 1e-5);
}
