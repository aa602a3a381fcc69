//! Causal softmax attention over an F16 KV cache, with grouped-query heads.
//!
//! Cache layout: K and V each `[position][n_head_kv · head_dim]` f16, row-major; positions are
//! absolute (0 = first token of the session). Query head h reads KV head h / (n_head / n_head_kv).
//! Queries are f32 at `q + t·q_tok_stride + h·q_head_stride` (strided so the query half of
//! attn_q's per-head [query | gate] output is read in place); output is `[t][h][head_dim]` f32.
const std = @import("std");
const simd = @import("simd.zig");
const pool_mod = @import("pool.zig");
const root = @import("root.zig");

pub const Shape = struct {
    q_tok_stride: usize,
    q_head_stride: usize,
    n_tokens: usize,
    /// Position of the first query token; token t attends to cache rows 0..pos+t.
    pos: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    scale: f32,
};

const H8 = @Vector(8, f16);

/// Converts rows of k and v to f16 and writes them at cache rows pos..pos+n_tokens.
pub fn store(k: [*]const f32, v: [*]const f32, n_tokens: usize, kv_dim: usize, k_cache: [*]f16, v_cache: [*]f16, pos: usize) void {
    toHalf(k, k_cache + pos * kv_dim, n_tokens * kv_dim);
    toHalf(v, v_cache + pos * kv_dim, n_tokens * kv_dim);
}

fn toHalf(src: [*]const f32, dst: [*]f16, n: usize) void {
    var i: usize = 0;
    while (i + 8 <= n) : (i += 8) dst[i..][0..8].* = @as(H8, @floatCast(simd.load(src + i)));
    while (i < n) : (i += 1) dst[i] = @floatCast(src[i]);
}

fn toSingle(src: [*]const f16, dst: [*]f32, n: usize) void {
    var i: usize = 0;
    while (i + 8 <= n) : (i += 8) simd.store(dst + i, @as(simd.V, @floatCast(@as(H8, src[i..][0..8].*))));
    while (i < n) : (i += 1) dst[i] = @floatCast(src[i]);
}

/// Largest head dim and GQA group the per-worker stack buffers hold.
const max_head_dim = 512;
const max_group = 16;

pub fn attend(ctx: *root.Context, s: Shape, q: [*]const f32, k_cache: [*]const f16, v_cache: [*]const f16, out: [*]f32) error{Failed}!void {
    if (s.head_dim > max_head_dim or s.head_dim % 8 != 0) return root.fail("head dim {d} must be a multiple of 8 up to {d}", .{ s.head_dim, max_head_dim });
    const group = s.n_head / s.n_head_kv;
    if (group > max_group) return root.fail("{d} query heads per KV head exceeds {d}", .{ group, max_group });
    const n_keys_max = s.pos + s.n_tokens;
    const n_workers = ctx.pool.n_spawned + 1;
    const per_worker = group * n_keys_max;
    const scratch = try ctx.scratchBytes(n_workers * per_worker * @sizeOf(f32));
    const Job = struct {
        s: Shape,
        group: usize,
        q: [*]const f32,
        kc: [*]const f16,
        vc: [*]const f16,
        out: [*]f32,
        scores: [*]f32,
        per_worker: usize,
        chunks: *pool_mod.Chunks,

        fn run(j: *const @This(), worker: usize, _: usize) void {
            const scores = j.scores + worker * j.per_worker;
            while (j.chunks.take()) |range| for (range.begin..range.end) |item| j.one(item / j.s.n_head_kv, item % j.s.n_head_kv, scores);
        }

        /// All query heads of KV head `kvh` for token `t`: each K and V row is converted once
        /// and used by the whole group.
        fn one(j: *const @This(), t: usize, kvh: usize, scores: [*]f32) void {
            const sh = j.s;
            const d = sh.head_dim;
            const kv_dim = sh.n_head_kv * d;
            const n_keys = sh.pos + t + 1;
            var row: [max_head_dim]f32 align(32) = undefined;
            for (0..n_keys) |p| {
                toSingle(j.kc + p * kv_dim + kvh * d, &row, d);
                for (0..j.group) |g| {
                    const h = kvh * j.group + g;
                    const qh = j.q + t * sh.q_tok_stride + h * sh.q_head_stride;
                    scores[g * n_keys + p] = simd.dot(qh, &row, d) * sh.scale;
                }
            }
            for (0..j.group) |g| softmax(scores + g * n_keys, n_keys);
            var acc: [max_group * max_head_dim]f32 align(32) = undefined;
            @memset(acc[0 .. j.group * d], 0);
            for (0..n_keys) |p| {
                toSingle(j.vc + p * kv_dim + kvh * d, &row, d);
                for (0..j.group) |g| {
                    const w: simd.V = @splat(scores[g * n_keys + p]);
                    const a = acc[g * d ..];
                    var i: usize = 0;
                    while (i < d) : (i += simd.lanes) simd.store(a.ptr + i, @mulAdd(simd.V, simd.load(@as([*]const f32, &row) + i), w, simd.load(a.ptr + i)));
                }
            }
            for (0..j.group) |g| {
                const h = kvh * j.group + g;
                @memcpy((j.out + (t * sh.n_head + h) * d)[0..d], acc[g * d ..][0..d]);
            }
        }
    };
    var chunks = pool_mod.Chunks.init(s.n_tokens * s.n_head_kv, 1);
    const scores: [*]f32 = @ptrCast(@alignCast(scratch.ptr));
    ctx.pool.run(Job, &.{ .s = s, .group = group, .q = q, .kc = k_cache, .vc = v_cache, .out = out, .scores = scores, .per_worker = per_worker, .chunks = &chunks }, Job.run);
}

/// In-place softmax of n values.
fn softmax(x: [*]f32, n: usize) void {
    const L = simd.lanes;
    var mx: f32 = -std.math.inf(f32);
    for (0..n) |i| mx = @max(mx, x[i]);
    const mv: simd.V = @splat(mx);
    var total_v: simd.V = @splat(0);
    var i: usize = 0;
    while (i + L <= n) : (i += L) {
        const e = simd.exp(simd.load(x + i) - mv);
        simd.store(x + i, e);
        total_v += e;
    }
    var total = simd.sum(total_v);
    while (i < n) : (i += 1) {
        x[i] = @exp(x[i] - mx);
        total += x[i];
    }
    simd.scale(x, x, 1.0 / total, n);
}

test "attention matches a scalar reference (GQA, causal, continuing positions)" {
    var ctx = root.Context{ .pool = undefined };
    try ctx.pool.init(2);
    defer ctx.pool.deinit();
    // KV cache of 5 positions, 2 KV heads of 16 dims, 4 query heads; 2 new tokens at pos 3.
    const d = 16;
    const n_kv = 2;
    const n_head = 4;
    const kv_dim = n_kv * d;
    var kc: [5 * kv_dim]f16 = undefined;
    var vc: [5 * kv_dim]f16 = undefined;
    for (0..5 * kv_dim) |i| {
        kc[i] = @floatCast(@sin(@as(f32, @floatFromInt(i)) * 0.37));
        vc[i] = @floatCast(@cos(@as(f32, @floatFromInt(i)) * 0.11));
    }
    // queries strided: each head occupies 2·d (query then an unused gate half)
    var q: [2 * n_head * 2 * d]f32 = undefined;
    for (&q, 0..) |*v, i| v.* = @sin(@as(f32, @floatFromInt(i)) * 0.05);
    const s = Shape{ .q_tok_stride = n_head * 2 * d, .q_head_stride = 2 * d, .n_tokens = 2, .pos = 3, .n_head = n_head, .n_head_kv = n_kv, .head_dim = d, .scale = 0.25 };
    var out: [2 * n_head * d]f32 = undefined;
    try attend(&ctx, s, &q, &kc, &vc, &out);
    for (0..2) |t| for (0..n_head) |h| {
        const kvh = h / (n_head / n_kv);
        const n_keys = 3 + t + 1;
        var sc: [5]f64 = undefined;
        var mx: f64 = -1e30;
        for (0..n_keys) |p| {
            var acc: f64 = 0;
            for (0..d) |i| acc += @as(f64, q[t * s.q_tok_stride + h * s.q_head_stride + i]) * @as(f64, kc[p * kv_dim + kvh * d + i]);
            sc[p] = acc * 0.25;
            mx = @max(mx, sc[p]);
        }
        var total: f64 = 0;
        for (0..n_keys) |p| {
            sc[p] = @exp(sc[p] - mx);
            total += sc[p];
        }
        for (0..d) |i| {
            var o: f64 = 0;
            for (0..n_keys) |p| o += sc[p] / total * @as(f64, vc[p * kv_dim + kvh * d + i]);
            try std.testing.expectApproxEqAbs(@as(f32, @floatCast(o)), out[(t * n_head + h) * d + i], 1e-5);
        }
    };
}
