//! Causal depthwise conv1d with SiLU, the first step of a Gated DeltaNet layer.
//!
//! Layouts (f32): input rows `x[t][c]` (`x_stride` apart), weights `w[c][j]` (`ssm_conv1d`,
//! K taps contiguous per channel, tap K-1 multiplies the current token), carried state
//! `state[j][c]` for j < K-1 = the previous K-1 inputs, oldest first (zeros at sequence start),
//! output `out[t][c]` contiguous. out[t][c] = silu(Σ_j w[c][j] · in[t-(K-1)+j][c]).
const std = @import("std");
const simd = @import("simd.zig");
const root = @import("root.zig");
const pool_mod = @import("pool.zig");

pub const max_taps = 16;

pub fn convSilu(ctx: *root.Context, x: [*]const f32, x_stride: usize, state: [*]f32, w: [*]const f32, k: usize, out: [*]f32, n_tokens: usize, channels: usize) void {
    std.debug.assert(k >= 2 and k <= max_taps);
    const Job = struct {
        x: [*]const f32,
        x_stride: usize,
        state: [*]f32,
        w: [*]const f32,
        k: usize,
        out: [*]f32,
        n_tokens: usize,
        channels: usize,
        pub fn range(j: *const @This(), begin: usize, end: usize) void {
            var c = begin;
            while (c + simd.lanes <= end) : (c += simd.lanes) convBlock(simd.lanes, j.x, j.x_stride, j.state, j.w, j.k, j.out, j.n_tokens, j.channels, c);
            while (c < end) : (c += 1) convBlock(1, j.x, j.x_stride, j.state, j.w, j.k, j.out, j.n_tokens, j.channels, c);
        }
    };
    const min_channels = 64 * 1024 / @max(n_tokens, 1);
    pool_mod.forRange(&ctx.pool, channels, simd.lanes, min_channels, Job, &.{ .x = x, .x_stride = x_stride, .state = state, .w = w, .k = k, .out = out, .n_tokens = n_tokens, .channels = channels });
}

/// One block of `width` channels starting at `c0`: taps and the sliding window stay in registers
/// across all tokens.
fn convBlock(comptime width: usize, x: [*]const f32, x_stride: usize, state: [*]f32, w: [*]const f32, k: usize, out: [*]f32, n_tokens: usize, channels: usize, c0: usize) void {
    const Vec = @Vector(width, f32);
    var taps: [max_taps]Vec = undefined;
    var window: [max_taps]Vec = undefined; // window[j] = input at t-(K-1)+j; window[K-1] = current
    for (0..k) |j| {
        var tap: [width]f32 = undefined;
        for (0..width) |l| tap[l] = w[(c0 + l) * k + j];
        taps[j] = tap;
    }
    for (0..k - 1) |j| window[j] = state[j * channels + c0 ..][0..width].*;
    for (0..n_tokens) |t| {
        window[k - 1] = x[t * x_stride + c0 ..][0..width].*;
        var acc: Vec = @splat(0);
        for (0..k) |j| acc = simd.mulAdd(Vec, taps[j], window[j], acc);
        const one: Vec = @splat(1);
        out[t * channels + c0 ..][0..width].* = acc / (one + simd.expv(width, -acc));
        for (0..k - 1) |j| window[j] = window[j + 1];
    }
    for (0..k - 1) |j| state[j * channels + c0 ..][0..width].* = window[j];
}

test "conv over a prompt equals the same tokens one at a time, and a scalar reference" {
    const C = 11;
    const K = 4;
    const T = 6;
    var w: [C * K]f32 = undefined;
    for (&w, 0..) |*v, i| v.* = @sin(@as(f32, @floatFromInt(i)) * 0.9);
    var x: [T * C]f32 = undefined;
    for (&x, 0..) |*v, i| v.* = @cos(@as(f32, @floatFromInt(i)) * 0.3);
    var ctx = root.Context{ .pool = undefined };
    try ctx.pool.init(2);
    defer ctx.pool.deinit();
    var state_a = @as([(K - 1) * C]f32, @splat(0));
    var out_a: [T * C]f32 = undefined;
    convSilu(&ctx, &x, C, &state_a, &w, K, &out_a, T, C);
    var state_b = @as([(K - 1) * C]f32, @splat(0));
    var out_b: [T * C]f32 = undefined;
    for (0..T) |t| convSilu(&ctx, x[t * C ..].ptr, C, &state_b, &w, K, out_b[t * C ..].ptr, 1, C);
    try std.testing.expectEqualSlices(f32, &out_a, &out_b);
    try std.testing.expectEqualSlices(f32, &state_a, &state_b);
    for (0..T) |t| for (0..C) |c| {
        var acc: f32 = 0;
        for (0..K) |j| {
            const src = @as(isize, @intCast(t)) - (K - 1) + @as(isize, @intCast(j));
            if (src >= 0) acc += w[c * K + j] * x[@as(usize, @intCast(src)) * C + c];
        }
        try std.testing.expectApproxEqAbs(acc / (1 + @exp(-acc)), out_a[t * C + c], 1e-5);
    };
    for (0..K - 1) |j| for (0..C) |c| try std.testing.expectEqual(x[(T - (K - 1) + j) * C + c], state_a[j * C + c]);
}
