//! NeoX-style rotary embedding on the first `n_rot` dims of each head. The angles come from
//! TypeScript (src/model/rope.ts owns the frequency schedule): for token t the table holds
//! cos θ_j then sin θ_j for j < n_rot/2. Pairs are (v[j], v[j + n_rot/2]); dims ≥ n_rot pass.
const std = @import("std");
const simd = @import("simd.zig");

pub fn neox(x: [*]f32, n_tokens: usize, tok_stride: usize, n_heads: usize, head_stride: usize, n_rot: usize, table: [*]const f32) void {
    const half = n_rot / 2;
    for (0..n_tokens) |t| {
        const cos = table + t * n_rot;
        const sin = cos + half;
        for (0..n_heads) |h| {
            const a = x + t * tok_stride + h * head_stride;
            const b = a + half;
            var j: usize = 0;
            while (j + simd.lanes <= half) : (j += simd.lanes) {
                const av = simd.load(a + j);
                const bv = simd.load(b + j);
                const c = simd.load(cos + j);
                const s = simd.load(sin + j);
                simd.store(a + j, av * c - bv * s);
                simd.store(b + j, av * s + bv * c);
            }
            while (j < half) : (j += 1) {
                const av = a[j];
                const bv = b[j];
                a[j] = av * cos[j] - bv * sin[j];
                b[j] = av * sin[j] + bv * cos[j];
            }
        }
    }
}

test "rotation matches the scalar formula and leaves the tail alone" {
    const n_rot = 20;
    const dim = 32;
    var x: [2 * dim]f32 = undefined;
    for (&x, 0..) |*v, i| v.* = @as(f32, @floatFromInt(i)) * 0.1 - 1;
    var table: [2 * n_rot]f32 = undefined;
    for (0..2) |t| for (0..n_rot / 2) |j| {
        const theta = @as(f32, @floatFromInt(t + 3)) * std.math.pow(f32, 10000, -2.0 * @as(f32, @floatFromInt(j)) / n_rot);
        table[t * n_rot + j] = @cos(theta);
        table[t * n_rot + n_rot / 2 + j] = @sin(theta);
    };
    var y = x;
    neox(&y, 2, dim, 1, dim, n_rot, &table);
    for (0..2) |t| {
        for (0..n_rot / 2) |j| {
            const c = table[t * n_rot + j];
            const s = table[t * n_rot + n_rot / 2 + j];
            const a = x[t * dim + j];
            const b = x[t * dim + j + n_rot / 2];
            try std.testing.expectApproxEqAbs(a * c - b * s, y[t * dim + j], 1e-6);
            try std.testing.expectApproxEqAbs(a * s + b * c, y[t * dim + j + n_rot / 2], 1e-6);
        }
        for (n_rot..dim) |i| try std.testing.expectEqual(x[t * dim + i], y[t * dim + i]);
    }
}
