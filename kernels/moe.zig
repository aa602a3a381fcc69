//! Mixture-of-experts FFN pieces around the expert matmuls (`matmul.matmulExperts`), as
//! llama.cpp's `build_moe_ffn` computes them for Qwen3.5 MoE (shared/spec/qwen35moe.md §4):
//!
//!   route    p = softmax(router logits) over all experts; ids = the k largest p, descending;
//!            weights w_i = p[ids_i] / max(Σ_j p[ids_j], 2^-14)
//!   group    the (token, slot) pairs of a batch sorted by expert, so each chosen expert's rows
//!            are read once for all of its tokens (llama.cpp's `mul_mat_id`)
//!   combine  out[t] = Σ_i w[t][i]·y[t][i] + sigmoid(g[t])·shared[t]   (slot order, as llama.cpp adds)
//!
//! Layouts: logits [n_tokens][n_expert] f32; ids [n_tokens][k] i32 and weights [n_tokens][k] f32,
//! slot 0 the most probable expert; expert outputs y [n_tokens][k][dim], rows `y_stride` apart.
const std = @import("std");
const simd = @import("simd.zig");
const pool_mod = @import("pool.zig");
const matmul = @import("matmul.zig");

/// llama.cpp clamps the sum of the selected probabilities to the smallest normal f16.
const min_weight_sum: f32 = 6.103515625e-5;

/// Routes every token: see the file comment. `k` ≤ `n_expert`.
pub fn route(logits: [*]const f32, n_tokens: usize, n_expert: usize, k: usize, ids: [*]i32, weights: [*]f32) void {
    for (0..n_tokens) |t| routeToken(logits[t * n_expert ..][0..n_expert], ids[t * k ..][0..k], weights[t * k ..][0..k]);
}

fn routeToken(z: []const f32, ids: []i32, w: []f32) void {
    // softmax over all experts (max-subtracted, as ggml_soft_max)
    var max: f32 = -std.math.inf(f32);
    for (z) |v| max = @max(max, v);
    var sum: f32 = 0;
    for (z) |v| sum += simd.expScalar(v - max);
    const inv = 1 / sum;
    // top k by repeated selection: k is small (8 of 256 at the real shapes). Ties go to the lower
    // index; the synthetic models are built so that the k-th and (k+1)-th logits never tie.
    var taken_sum: f32 = 0;
    for (ids, w, 0..) |*id, *wi, i| {
        var best: usize = 0;
        var best_z: f32 = -std.math.inf(f32);
        var found = false;
        for (z, 0..) |v, e| {
            if (isTaken(ids[0..i], e)) continue;
            if (!found or v > best_z) {
                best = e;
                best_z = v;
                found = true;
            }
        }
        id.* = @intCast(best);
        wi.* = simd.expScalar(best_z - max) * inv;
        taken_sum += wi.*;
    }
    const norm = @max(taken_sum, min_weight_sum);
    for (w) |*wi| wi.* /= norm;
}

fn isTaken(ids: []const i32, e: usize) bool {
    for (ids) |id| if (id == @as(i32, @intCast(e))) return true;
    return false;
}

/// The (token, slot) pairs of a batch grouped by expert, for `matmul.matmulExperts`.
/// `buf` must hold `groupingBytes(n_tokens, k, n_expert)` bytes. With `input_per_slot` each pair
/// reads its own input row (t·k + i, the down projection), otherwise its token's (t, gate/up).
/// Fails when an id is outside [0, n_expert).
pub fn group(ids: [*]const i32, n_tokens: usize, k: usize, n_expert: usize, input_per_slot: bool, buf: []align(64) u8, rows: matmul.ExpertRows) error{BadExpert}!matmul.Experts {
    const pairs = n_tokens * k;
    const words: [*]u32 = @ptrCast(buf.ptr);
    const in_rows = words[0..pairs];
    const out_rows = words[pairs .. 2 * pairs];
    const count = words[2 * pairs ..][0 .. n_expert + 1];
    const used = words[2 * pairs + n_expert + 1 ..][0..n_expert];
    const start = words[2 * pairs + 2 * n_expert + 1 ..][0 .. n_expert + 1];
    @memset(count, 0);
    for (ids[0..pairs]) |id| {
        if (id < 0 or id >= n_expert) return error.BadExpert;
        count[@intCast(id)] += 1;
    }
    // count[e] becomes expert e's next free position; used/start list the experts with tokens
    var n_used: usize = 0;
    var at: u32 = 0;
    for (0..n_expert) |e| {
        const c = count[e];
        count[e] = at;
        if (c == 0) continue;
        used[n_used] = @intCast(e);
        start[n_used] = at;
        n_used += 1;
        at += c;
    }
    start[n_used] = at;
    for (0..pairs) |p| {
        const e: usize = @intCast(ids[p]);
        const pos = count[e];
        count[e] += 1;
        in_rows[pos] = @intCast(if (input_per_slot) p else p / k);
        out_rows[pos] = @intCast(p);
    }
    return .{ .rows = rows, .in_rows = in_rows.ptr, .out_rows = out_rows.ptr, .used = used.ptr, .start = start.ptr, .n_used = n_used };
}

pub fn groupingBytes(n_tokens: usize, k: usize, n_expert: usize) usize {
    return 4 * (2 * n_tokens * k + 3 * n_expert + 2);
}

/// out[t] = Σ_i w[t][i]·y[t][i] + sigmoid(gate[t])·shared[t], rows of `dim` values; y rows of
/// token t are t·k + i, `y_stride` apart. Sums in slot order, as llama.cpp's chain of adds.
pub fn combine(pool: *pool_mod.Pool, y: [*]const f32, y_stride: usize, weights: [*]const f32, n_tokens: usize, k: usize, dim: usize, shared: [*]const f32, gate: [*]const f32, out: [*]f32) void {
    const Job = struct {
        y: [*]const f32,
        y_stride: usize,
        weights: [*]const f32,
        k: usize,
        dim: usize,
        shared: [*]const f32,
        gate: [*]const f32,
        out: [*]f32,
        pub fn range(j: *const @This(), begin: usize, end: usize) void {
            for (begin..end) |t| combineToken(j.y + t * j.k * j.y_stride, j.y_stride, j.weights[t * j.k ..][0..j.k], j.dim, j.shared + t * j.dim, simd.sigmoidScalar(j.gate[t]), j.out + t * j.dim);
        }
    };
    const job = Job{ .y = y, .y_stride = y_stride, .weights = weights, .k = k, .dim = dim, .shared = shared, .gate = gate, .out = out };
    pool_mod.forRange(pool, n_tokens, 1, 8, Job, &job);
}

fn combineToken(y: [*]const f32, y_stride: usize, w: []const f32, dim: usize, shared: [*]const f32, g: f32, out: [*]f32) void {
    const gv: simd.V = @splat(g);
    var c: usize = 0;
    while (c + simd.lanes <= dim) : (c += simd.lanes) {
        var acc = simd.load(y + c) * @as(simd.V, @splat(w[0]));
        for (1..w.len) |i| acc += simd.load(y + i * y_stride + c) * @as(simd.V, @splat(w[i]));
        simd.store(out + c, acc + simd.load(shared + c) * gv);
    }
    while (c < dim) : (c += 1) out[c] = combineScalar(y + c, y_stride, w, shared[c], g);
}

/// The scalar reference of one output value (same operation order as the vector path).
fn combineScalar(y: [*]const f32, y_stride: usize, w: []const f32, shared: f32, g: f32) f32 {
    var acc = y[0] * w[0];
    for (1..w.len) |i| acc += y[i * y_stride] * w[i];
    return acc + shared * g;
}

// ---------------------------------------------------------------------------------------------

const testing = std.testing;

test "route: softmax top-k, renormalised, descending, ties to the lower index" {
    const z = [_]f32{ 0.5, 2.0, -1.0, 2.0, 1.5, 0.0, 3.0 };
    var ids: [3]i32 = undefined;
    var w: [3]f32 = undefined;
    route(&z, 1, z.len, 3, &ids, &w);
    try testing.expectEqualSlices(i32, &.{ 6, 1, 3 }, &ids);
    // renormalised weights are the softmax over the selected logits
    const e0 = @exp(@as(f64, 3.0)) + 2 * @exp(@as(f64, 2.0));
    try testing.expectApproxEqRel(@as(f32, @floatCast(@exp(@as(f64, 3.0)) / e0)), w[0], 1e-6);
    try testing.expectApproxEqRel(@as(f32, @floatCast(@exp(@as(f64, 2.0)) / e0)), w[1], 1e-6);
    try testing.expectEqual(w[1], w[2]);

    var one: [1]i32 = undefined;
    var w1: [1]f32 = undefined;
    route(&z, 1, z.len, 1, &one, &w1);
    try testing.expectEqual(@as(i32, 6), one[0]);
    try testing.expectEqual(@as(f32, 1), w1[0]);
}

test "group: pairs sorted by expert, rows of tokens or of slots" {
    // 3 tokens × 2 slots over 4 experts; expert 2 unused
    const ids = [_]i32{ 1, 3, 3, 0, 1, 3 };
    var buf: [256]u8 align(64) = undefined;
    const rows = matmul.ExpertRows{ .stride = 4, .first = 0, .count = 4 };
    const ex = try group(&ids, 3, 2, 4, false, &buf, rows);
    try testing.expectEqual(@as(usize, 3), ex.n_used);
    try testing.expectEqualSlices(u32, &.{ 0, 1, 3 }, ex.used[0..3]);
    try testing.expectEqualSlices(u32, &.{ 0, 1, 3, 6 }, ex.start[0..4]);
    try testing.expectEqualSlices(u32, &.{ 3, 0, 4, 1, 2, 5 }, ex.out_rows[0..6]);
    try testing.expectEqualSlices(u32, &.{ 1, 0, 2, 0, 1, 2 }, ex.in_rows[0..6]);
    const per_slot = try group(&ids, 3, 2, 4, true, &buf, rows);
    try testing.expectEqualSlices(u32, &.{ 3, 0, 4, 1, 2, 5 }, per_slot.in_rows[0..6]);
    const bad = [_]i32{ 0, 4 };
    try testing.expectError(error.BadExpert, group(&bad, 1, 2, 4, false, &buf, rows));
}

test "combine: vector path equals the scalar reference" {
    var pool: pool_mod.Pool = undefined;
    try pool.init(2);
    defer pool.deinit();
    var prng = std.Random.DefaultPrng.init(5);
    const rand = prng.random();
    const n = 3;
    const k = 3;
    const dim = 21; // a vector tail
    const stride = 24;
    var y: [n * k * stride]f32 = undefined;
    var shared: [n * dim]f32 = undefined;
    var w: [n * k]f32 = undefined;
    var g: [n]f32 = undefined;
    for (&y) |*v| v.* = rand.floatNorm(f32);
    for (&shared) |*v| v.* = rand.floatNorm(f32);
    for (&w) |*v| v.* = rand.float(f32);
    for (&g) |*v| v.* = rand.floatNorm(f32);
    var out: [n * dim]f32 = undefined;
    combine(&pool, &y, stride, &w, n, k, dim, &shared, &g, &out);
    for (0..n) |t| for (0..dim) |c| {
        const want = combineScalar(y[t * k * stride + c ..].ptr, stride, w[t * k ..][0..k], shared[t * dim + c], simd.sigmoidScalar(g[t]));
        try testing.expectEqual(want, out[t * dim + c]);
    };
}
