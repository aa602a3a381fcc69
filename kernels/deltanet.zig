//! The Gated DeltaNet recurrence (Qwen3.5 linear-attention layers), token by token.
//!
//! Inputs per token t (f32):
//!   qkv[t] (`qkv_stride` apart) = [q: Hk×D | k: Hk×D | v: Hv×D], the conv+SiLU output with the q
//!          and k heads already L2-normalised (q is scaled by 1/sqrt(D) here);
//!   beta[t][j], alpha[t][j] (`gate_stride` apart): raw projections for V head j;
//!   ssm_a[j] (= −exp(A_log), ≤ 0) and dt_bias[j].
//! State: `state[j][i][m]`, one D×D f32 matrix per V head (i = key dim, m = value dim, m contiguous).
//! Output: out[t][j·D + m].
//!
//! Per V head j, with q, k from Q/K head j % Hk (the converter tiles V heads that way):
//!   g = ssm_a[j]·softplus(alpha + dt_bias[j]);  b = sigmoid(beta)
//!   S ← exp(g)·S;  d = b·(v − Sᵀk);  S ← S + k dᵀ;  o = Sᵀq / sqrt(D)
//! Columns of S are independent, so the kernel walks a head's state in 128×16 column blocks and
//! carries each block through every token of the batch while it sits in L1: per token, one pass
//! reads (decay·S)ᵀk, a second updates S and reads Sᵀq. The state is thus read from memory and
//! written back once per call, whatever the batch size. Heads are split across workers.
const std = @import("std");
const simd = @import("simd.zig");
const pool_mod = @import("pool.zig");
const root = @import("root.zig");

pub const Shape = struct {
    n_tokens: usize,
    n_k_heads: usize,
    n_v_heads: usize,
    head_dim: usize,
};

pub fn softplus(x: f32) f32 {
    return if (x > 20) x else simd.logScalar(1 + simd.expScalar(x));
}

pub fn run(ctx: *root.Context, s: Shape, qkv: [*]const f32, qkv_stride: usize, beta: [*]const f32, alpha: [*]const f32, gate_stride: usize, ssm_a: [*]const f32, dt_bias: [*]const f32, state: [*]f32, out: [*]f32) void {
    const Job = struct {
        s: Shape,
        qkv: [*]const f32,
        qkv_stride: usize,
        beta: [*]const f32,
        alpha: [*]const f32,
        gate_stride: usize,
        ssm_a: [*]const f32,
        dt_bias: [*]const f32,
        state: [*]f32,
        out: [*]f32,
        /// Heads one at a time, so a worker that is not scheduled holds up one head, not a share;
        /// each head's state and output are its own, so the result does not depend on who ran it.
        heads: *pool_mod.Chunks,

        fn work(j: *const @This(), _: usize, _: usize) void {
            while (j.heads.take()) |r| for (r.begin..r.end) |h| j.head(h);
        }

        fn head(j: *const @This(), h: usize) void {
            const d = j.s.head_dim;
            var c: usize = 0;
            while (c + 16 <= d) : (c += 16) j.columns(16, h, c);
            while (c + 8 <= d) : (c += 8) j.columns(8, h, c);
        }

        /// All tokens for value columns [c, c+W) of head h's state. Columns of S evolve
        /// independently (kv[m], d[m] and the update of column m only read column m), so a
        /// 128×W block is carried through the whole batch while it sits in L1.
        fn columns(j: *const @This(), comptime W: usize, h: usize, c: usize) void {
            const Vec = @Vector(W, f32);
            const d = j.s.head_dim;
            const kh = h % j.s.n_k_heads;
            const S = j.state + h * d * d + c;
            const q_scale = 1.0 / @sqrt(@as(f32, @floatFromInt(d)));
            for (0..j.s.n_tokens) |t| {
                const row = j.qkv + t * j.qkv_stride;
                const q = row + kh * d;
                const k = row + (j.s.n_k_heads + kh) * d;
                const v: Vec = (row + 2 * j.s.n_k_heads * d + h * d + c)[0..W].*;
                const g = j.ssm_a[h] * softplus(j.alpha[t * j.gate_stride + h] + j.dt_bias[h]);
                const decay: Vec = @splat(simd.expScalar(g));
                const b: Vec = @splat(simd.sigmoidScalar(j.beta[t * j.gate_stride + h]));
                // pass 1: kv = (decay·S)ᵀk, four accumulators to hide FMA latency
                var kv: [4]Vec = @splat(@splat(0));
                var i: usize = 0;
                while (i < d) : (i += 4) {
                    inline for (0..4) |u| kv[u] = simd.mulAdd(Vec, (S + (i + u) * d)[0..W].*, @splat(k[i + u]), kv[u]);
                }
                const delta = b * (v - decay * ((kv[0] + kv[1]) + (kv[2] + kv[3])));
                // pass 2: S ← decay·S + k·deltaᵀ, o = Sᵀq / sqrt(d)
                var o: [4]Vec = @splat(@splat(0));
                i = 0;
                while (i < d) : (i += 4) {
                    inline for (0..4) |u| {
                        const p = (S + (i + u) * d)[0..W];
                        const updated = simd.mulAdd(Vec, @splat(k[i + u]), delta, p.* * decay);
                        p.* = updated;
                        o[u] = simd.mulAdd(Vec, updated, @splat(q[i + u] * q_scale), o[u]);
                    }
                }
                (j.out + t * j.s.n_v_heads * d + h * d + c)[0..W].* = (o[0] + o[1]) + (o[2] + o[3]);
            }
        }
    };
    var heads = pool_mod.Chunks.init(s.n_v_heads, 1);
    ctx.pool.run(Job, &.{ .s = s, .qkv = qkv, .qkv_stride = qkv_stride, .beta = beta, .alpha = alpha, .gate_stride = gate_stride, .ssm_a = ssm_a, .dt_bias = dt_bias, .state = state, .out = out, .heads = &heads }, Job.work);
}

test "recurrence matches the spec's scalar formula, prompt and token by token" {
    var ctx = root.Context{ .pool = undefined };
    try ctx.pool.init(2);
    defer ctx.pool.deinit();
    const Hk = 2;
    const Hv = 4;
    const D = 24; // one 16-wide and one 8-wide column block
    const T = 5;
    const W = (2 * Hk + Hv) * D;
    var qkv: [T * W]f32 = undefined;
    for (&qkv, 0..) |*x, i| x.* = @sin(@as(f32, @floatFromInt(i)) * 0.173) * 0.3;
    var beta: [T * Hv]f32 = undefined;
    var alpha: [T * Hv]f32 = undefined;
    for (0..T * Hv) |i| {
        beta[i] = @cos(@as(f32, @floatFromInt(i))) * 2;
        alpha[i] = @sin(@as(f32, @floatFromInt(i)) * 0.5) * 3;
    }
    const ssm_a = [_]f32{ -0.5, -1.0, -0.1, -2.0 };
    const dt_bias = [_]f32{ 0.1, -0.2, 0.3, 0.0 };
    const shape = Shape{ .n_tokens = T, .n_k_heads = Hk, .n_v_heads = Hv, .head_dim = D };

    var state_a = @as([Hv * D * D]f32, @splat(0));
    var out_a: [T * Hv * D]f32 = undefined;
    run(&ctx, shape, &qkv, W, &beta, &alpha, Hv, &ssm_a, &dt_bias, &state_a, &out_a);

    var state_b = @as([Hv * D * D]f32, @splat(0));
    var out_b: [T * Hv * D]f32 = undefined;
    for (0..T) |t| {
        var one = shape;
        one.n_tokens = 1;
        run(&ctx, one, qkv[t * W ..].ptr, W, beta[t * Hv ..].ptr, alpha[t * Hv ..].ptr, Hv, &ssm_a, &dt_bias, &state_b, out_b[t * Hv * D ..].ptr);
    }
    try std.testing.expectEqualSlices(f32, &out_a, &out_b);

    // scalar reference in f64
    var S = @as([Hv * D * D]f64, @splat(0));
    for (0..T) |t| for (0..Hv) |j| {
        const kh = j % Hk;
        const row = qkv[t * W ..];
        const g = ssm_a[j] * softplus(alpha[t * Hv + j] + dt_bias[j]);
        const b = 1.0 / (1.0 + @exp(-@as(f64, beta[t * Hv + j])));
        const Sj = S[j * D * D ..];
        for (0..D * D) |x| Sj[x] *= @exp(@as(f64, g));
        var dlt: [D]f64 = undefined;
        for (0..D) |m| {
            var kv: f64 = 0;
            for (0..D) |i| kv += Sj[i * D + m] * row[(Hk + kh) * D + i];
            dlt[m] = b * (row[2 * Hk * D + j * D + m] - kv);
        }
        for (0..D) |i| for (0..D) |m| {
            Sj[i * D + m] += row[(Hk + kh) * D + i] * dlt[m];
        };
        for (0..D) |m| {
            var o: f64 = 0;
            for (0..D) |i| o += Sj[i * D + m] * row[kh * D + i] / @sqrt(@as(f64, D));
            try std.testing.expectApproxEqAbs(@as(f32, @floatCast(o)), out_a[t * Hv * D + j * D + m], 1e-5);
        }
    };
}
