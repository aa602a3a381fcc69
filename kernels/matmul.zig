//! Matrix × activations for every weight type, and embedding-row lookup.
//!
//!   matmul(ctx, w, x, x_stride, y, y_stride, n_tokens)   y[t][r] = Σ_c w[r][c] · x[t][c]
//!   getRow(w, r, out)                                     out[c]  = w[r][c] as f32
//!
//! `w` is `ne1` rows of `ne0` values (ne0 contiguous, GGUF order); x rows hold ne0 floats,
//! y rows ne1 floats. Work is split over the context's pool by rows of `w`.
const std = @import("std");
const types = @import("types.zig");
const simd = @import("simd.zig");
const pool_mod = @import("pool.zig");
const root = @import("root.zig");

const Weight = types.Weight;

pub fn matmul(ctx: *root.Context, w: *const Weight, x: [*]const f32, x_stride: usize, y: [*]f32, y_stride: usize, n_tokens: usize) error{Failed}!void {
    if (n_tokens == 0) return;
    switch (w.kind) {
        .f32 => {
            const Job = struct {
                w: *const Weight,
                x: [*]const f32,
                x_stride: usize,
                y: [*]f32,
                y_stride: usize,
                n_tokens: usize,
                fn run(j: *const @This(), worker: usize, n_workers: usize) void {
                    const s = pool_mod.share(j.w.ne1, 8, worker, n_workers);
                    const rows: [*]const f32 = j.w.f32s();
                    for (s.begin..s.end) |r| for (0..j.n_tokens) |t| {
                        j.y[t * j.y_stride + r] = simd.dot(rows + r * j.w.ne0, j.x + t * j.x_stride, j.w.ne0);
                    };
                }
            };
            ctx.pool.run(Job, &.{ .w = w, .x = x, .x_stride = x_stride, .y = y, .y_stride = y_stride, .n_tokens = n_tokens }, Job.run);
        },
        else => return error.Failed,
    }
}

pub fn getRow(w: *const Weight, r: usize, out: [*]f32) void {
    switch (w.kind) {
        .f32 => @memcpy(out[0..w.ne0], w.f32s()[r * w.ne0 ..][0..w.ne0]),
        else => unreachable,
    }
}
