//! Row normalisations.
//!
//!   RMS:   y = x / sqrt(mean(x²) + eps) · w          (w optional)
//!   L2:    y = x / max(‖x‖₂, eps) · w                 (DeltaNet q/k heads)
//!   gated: out = rmsnorm(o) · w · silu(z)            (DeltaNet output, per V head)
//!
//! Rows form a tokens × heads grid with separate strides (in f32 elements) for x and y, so one
//! call can normalise, say, the query half of every head of every token in place.
const std = @import("std");
const simd = @import("simd.zig");
const pool_mod = @import("pool.zig");

/// Fewer values than this are normalised on the calling thread.
const min_parallel = 64 * 1024;

pub const Grid = struct {
    n_tokens: usize,
    x_tok_stride: usize,
    y_tok_stride: usize,
    n_heads: usize,
    x_head_stride: usize,
    y_head_stride: usize,
    dim: usize,
};

pub const Mode = enum { rms, l2 };

/// The factor that normalises a row with this sum of squares.
pub fn normScale(sum_squares: f32, dim: usize, eps: f32, mode: Mode) f32 {
    return switch (mode) {
        .rms => 1.0 / @sqrt(sum_squares / @as(f32, @floatFromInt(dim)) + eps),
        .l2 => 1.0 / @max(@sqrt(sum_squares), eps),
    };
}

pub fn normRows(pool: *pool_mod.Pool, g: Grid, x: [*]const f32, y: [*]f32, w: ?[*]const f32, eps: f32, mode: Mode) void {
    const Job = struct {
        g: Grid,
        x: [*]const f32,
        y: [*]f32,
        w: ?[*]const f32,
        eps: f32,
        mode: Mode,
        pub fn range(j: *const @This(), begin: usize, end: usize) void {
            var part = j.g;
            part.n_tokens = end - begin;
            normTokens(part, j.x + begin * j.g.x_tok_stride, j.y + begin * j.g.y_tok_stride, j.w, j.eps, j.mode);
        }
    };
    const per_token = @max(1, g.n_heads * g.dim);
    pool_mod.forRange(pool, g.n_tokens, 1, min_parallel / per_token, Job, &.{ .g = g, .x = x, .y = y, .w = w, .eps = eps, .mode = mode });
}

fn normTokens(g: Grid, x: [*]const f32, y: [*]f32, w: ?[*]const f32, eps: f32, mode: Mode) void {
    for (0..g.n_tokens) |t| for (0..g.n_heads) |h| {
        const xr = x + t * g.x_tok_stride + h * g.x_head_stride;
        const yr = y + t * g.y_tok_stride + h * g.y_head_stride;
        const s = normScale(simd.sumSquares(xr, g.dim), g.dim, eps, mode);
        if (w) |weights| scaleMul(xr, weights, yr, s, g.dim) else simd.scale(xr, yr, s, g.dim);
    };
}

/// y[i] = x[i]·s·w[i] (x and y may alias).
fn scaleMul(x: [*]const f32, w: [*]const f32, y: [*]f32, s: f32, n: usize) void {
    const sv: simd.V = @splat(s);
    var i: usize = 0;
    while (i + simd.lanes <= n) : (i += simd.lanes) simd.store(y + i, simd.load(x + i) * sv * simd.load(w + i));
    while (i < n) : (i += 1) y[i] = x[i] * s * w[i];
}

pub fn gatedRows(pool: *pool_mod.Pool, o: [*]const f32, z: [*]const f32, w: [*]const f32, out: [*]f32, n_rows: usize, dim: usize, eps: f32) void {
    const Job = struct {
        o: [*]const f32,
        z: [*]const f32,
        w: [*]const f32,
        out: [*]f32,
        dim: usize,
        eps: f32,
        pub fn range(j: *const @This(), begin: usize, end: usize) void {
            const at = begin * j.dim;
            gatedRange(j.o + at, j.z + at, j.w, j.out + at, end - begin, j.dim, j.eps);
        }
    };
    pool_mod.forRange(pool, n_rows, 1, min_parallel / @max(dim, 1), Job, &.{ .o = o, .z = z, .w = w, .out = out, .dim = dim, .eps = eps });
}

fn gatedRange(o: [*]const f32, z: [*]const f32, w: [*]const f32, out: [*]f32, n_rows: usize, dim: usize, eps: f32) void {
    for (0..n_rows) |r| {
        const orow = o + r * dim;
        const zrow = z + r * dim;
        const dst = out + r * dim;
        const s = normScale(simd.sumSquares(orow, dim), dim, eps, .rms);
        const sv: simd.V = @splat(s);
        var i: usize = 0;
        while (i + simd.lanes <= dim) : (i += simd.lanes)
            simd.store(dst + i, simd.load(orow + i) * sv * simd.load(w + i) * simd.silu(simd.load(zrow + i)));
        while (i < dim) : (i += 1) dst[i] = orow[i] * s * w[i] * simd.siluScalar(zrow[i]);
    }
}

test "rms and l2 norms of strided head rows match a scalar reference" {
    var pool: pool_mod.Pool = undefined;
    try pool.init(1);
    defer pool.deinit();
    // 2 tokens × 3 heads of 12 values, heads 20 apart, tokens 64 apart; normalised in place.
    var x: [128]f32 = undefined;
    for (&x, 0..) |*v, i| v.* = @sin(@as(f32, @floatFromInt(i)) * 0.7) * 3;
    var w: [12]f32 = undefined;
    for (&w, 0..) |*v, i| v.* = 0.5 + @as(f32, @floatFromInt(i)) * 0.1;
    for ([_]Mode{ .rms, .l2 }) |mode| {
        var y = x;
        const g = Grid{ .n_tokens = 2, .x_tok_stride = 64, .y_tok_stride = 64, .n_heads = 3, .x_head_stride = 20, .y_head_stride = 20, .dim = 12 };
        normRows(&pool, g, &y, &y, &w, 1e-6, mode);
        for (0..2) |t| for (0..3) |h| {
            const base = t * 64 + h * 20;
            var ss: f64 = 0;
            for (0..12) |i| ss += @as(f64, x[base + i]) * x[base + i];
            const s: f64 = if (mode == .rms) 1.0 / @sqrt(ss / 12 + 1e-6) else 1.0 / @max(@sqrt(ss), 1e-6);
            for (0..12) |i| try std.testing.expectApproxEqAbs(@as(f32, @floatCast(x[base + i] * s * w[i])), y[base + i], 1e-5);
            // untouched gap after the head
            if (h < 2) for (12..20) |i| try std.testing.expectEqual(x[base + i], y[base + i]);
        };
    }
}

test "gated norm multiplies by silu(z)" {
    var pool: pool_mod.Pool = undefined;
    try pool.init(1);
    defer pool.deinit();
    var o: [2 * 10]f32 = undefined;
    var z: [2 * 10]f32 = undefined;
    var w: [10]f32 = undefined;
    for (0..20) |i| {
        o[i] = @cos(@as(f32, @floatFromInt(i)));
        z[i] = @as(f32, @floatFromInt(i)) * 0.3 - 2;
    }
    for (&w, 0..) |*v, i| v.* = 1 + @as(f32, @floatFromInt(i)) * 0.01;
    var out: [20]f32 = undefined;
    gatedRows(&pool, &o, &z, &w, &out, 2, 10, 1e-6);
    for (0..2) |r| {
        var ss: f32 = 0;
        for (0..10) |i| ss += o[r * 10 + i] * o[r * 10 + i];
        const s = 1.0 / @sqrt(ss / 10 + 1e-6);
        for (0..10) |i| {
            const zi = z[r * 10 + i];
            const want = o[r * 10 + i] * s * w[i] * zi / (1 + @exp(-zi));
            try std.testing.expectApproxEqAbs(want, out[r * 10 + i], 1e-5);
        }
    }
}
