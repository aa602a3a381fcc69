//! What the K-quants (Q4_K, Q5_K, Q6_K) share: the matrix-vector loop, the GEMM tile against
//! Q8_K activations, and the test harness every format runs.
//!
//! A format file provides `Block`, `dequantizeRef` (the spec's formula, scalar), `dequantize`
//! (SIMD), `blockDot` (SIMD, one block against Q8_K activations), `blockDotRef` (the same scheme
//! in scalar integers), `unpack` (to `Unpacked`), `offsets` and `randomBlock`.
//!
//! Matrix × vector (one token) calls `blockDot` directly on the weight bytes. For several tokens,
//! each format unpacks a weight block once into `Unpacked` — unsigned quant values plus ready-made
//! multiplier vectors — and the tile multiplies R unpacked rows by T activation rows, so one
//! unpacked weight chunk feeds T tokens and one activation chunk feeds R rows. For one block, row
//! r and token t:
//!
//!   y[t][r] += dx·( d·Σ_c Σ_lanes scales[c]·(vals[c]·x_c)  +  Σ_k offsets[k]·bsums[k] )
//!            + Σ_j mins[j]·(dx·Σ x over the 32 values j)
//!
//! where the integer part uses `mulAddBytes` (u8 × i8 pairs → i16) then `mulAddWords` (× scale →
//! i32). Q6_K's constant −32 goes into `offsets` (integer, same scale d); Q4_K/Q5_K's mins have
//! their own scale dmin and go into the float `mins` term against the activation's `sums32`.
const std = @import("std");
const common = @import("common.zig");
const q8_k = @import("q8_k.zig");

const U8x32 = common.U8x32;
const I8x32 = common.I8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

/// One weight block of 256 values, unpacked. `vals[c]` holds values 32c..32c+31 (at most 63 so
/// `mulAddBytes` cannot saturate); `scales[c]` multiplies the 16 pair sums of chunk c (lanes 0-7
/// cover values 0-15 of the chunk, lanes 8-15 values 16-31).
pub const Unpacked = struct {
    vals: [8]U8x32,
    scales: [8]I16x16,
    /// Multipliers of the 16 activation bsums, in units of d (Q6_K: −32·scale; else 0).
    offsets: I16x16,
    /// The block scale d, broadcast.
    d: F32x8,
    /// Multipliers of the activation's 8 sums32, in float (Q4_K/Q5_K: −dmin·m; else 0).
    mins: F32x8,
};

pub const Offsets = enum { integer, float_mins };

/// Dot products of R weight rows (`nb` blocks each) with one Q8_K activation row, prefetching
/// what lies `ahead` bytes past each block it reads.
pub inline fn dotRows(comptime F: type, comptime R: usize, rows: [R][*]const F.Block, act: q8_k.Row, nb: usize, ahead: usize) [R]f32 {
    var acc: [R]F32x8 = @splat(@splat(0));
    for (0..nb) |b| {
        const bsums: I16x16 = act.bsums[b * 16 ..][0..16].*;
        inline for (0..R) |r| {
            common.prefetchSpan(@as([*]const u8, @ptrCast(&rows[r][b])) + ahead, @sizeOf(F.Block));
            acc[r] += F.blockDot(&rows[r][b], act.qs + b * 256, bsums, act.d[b]);
        }
    }
    var out: [R]f32 = undefined;
    inline for (0..R) |r| out[r] = common.sum(acc[r]);
    return out;
}

/// Σ over the `nb` blocks of a row for R weight rows × T tokens; out[r][t] receives the dot
/// products. `panel[r]` points at row r's unpacked blocks, `acts[t]` at token t's Q8_K row.
pub fn tile(
    comptime R: usize,
    comptime T: usize,
    comptime offsets: Offsets,
    panel: [R][*]const Unpacked,
    acts: [T]q8_k.Row,
    nb: usize,
    out: *[R][T]f32,
) void {
    var facc: [R][T]F32x8 = @splat(@splat(@splat(0)));
    for (0..nb) |b| {
        var iacc: [R][T]I32x8 = @splat(@splat(@splat(0)));
        inline for (0..8) |c| {
            var x: [T]I8x32 = undefined;
            inline for (0..T) |t| x[t] = acts[t].qs[b * 256 + 32 * c ..][0..32].*;
            inline for (0..R) |r| {
                const w = &panel[r][b];
                inline for (0..T) |t| iacc[r][t] +%= common.mulAddWords(common.mulAddBytes(w.vals[c], x[t]), w.scales[c]);
            }
        }
        inline for (0..T) |t| {
            const dx: F32x8 = @splat(acts[t].d[b]);
            const bsums: I16x16 = if (offsets == .integer) acts[t].bsums[b * 16 ..][0..16].* else undefined;
            const sums32: F32x8 = if (offsets == .float_mins) acts[t].sums32[b * 8 ..][0..8].* else undefined;
            inline for (0..R) |r| {
                const w = &panel[r][b];
                var i = iacc[r][t];
                if (offsets == .integer) i +%= common.mulAddWords(w.offsets, bsums);
                facc[r][t] = @mulAdd(F32x8, @floatFromInt(i), w.d * dx, facc[r][t]);
                if (offsets == .float_mins) facc[r][t] = @mulAdd(F32x8, w.mins, sums32, facc[r][t]);
            }
        }
    }
    inline for (0..R) |r| inline for (0..T) |t| {
        out[r][t] = common.sum(facc[r][t]);
    };
}

/// The same sums computed one lane at a time: the reference `tile` is tested against.
pub fn tileRef(offsets: Offsets, row: []const Unpacked, act: q8_k.Row) f32 {
    var total: f32 = 0;
    for (row, 0..) |w, b| {
        var isum: i64 = 0;
        for (0..8) |c| {
            const vals: [32]u8 = w.vals[c];
            const scales: [16]i16 = w.scales[c];
            for (0..32) |i| isum += @as(i64, vals[i]) * act.qs[b * 256 + 32 * c + i] * scales[i / 2];
        }
        const offs: [16]i16 = w.offsets;
        if (offsets == .integer) for (0..16) |k| {
            isum += @as(i64, offs[k]) * act.bsums[b * 16 + k];
        };
        const d: [8]f32 = w.d;
        total += d[0] * act.d[b] * @as(f32, @floatFromInt(isum));
        const mins: [8]f32 = w.mins;
        if (offsets == .float_mins) for (0..8) |j| {
            total += mins[j] * act.sums32[b * 8 + j];
        };
    }
    return total;
}

/// Random unpacked blocks within the formats' value ranges, for tests.
pub fn randomUnpacked(rand: std.Random, out: []Unpacked) void {
    for (out) |*u| {
        for (&u.vals) |*v| {
            var a: [32]u8 = undefined;
            for (&a) |*e| e.* = rand.uintLessThan(u8, 64);
            v.* = a;
        }
        for (&u.scales) |*s| {
            var a: [16]i16 = undefined;
            for (&a) |*e| e.* = rand.intRangeAtMost(i16, -128, 127);
            s.* = a;
        }
        var o: [16]i16 = undefined;
        for (&o) |*e| e.* = -32 * rand.intRangeAtMost(i16, -128, 127);
        u.offsets = o;
        u.d = @splat(rand.float(f32) * 0.01);
        var m: [8]f32 = undefined;
        for (&m) |*e| e.* = -rand.float(f32) * 0.01;
        u.mins = m;
    }
}

test "K-quant GEMM tile matches the lane-by-lane reference for several tile shapes" {
    var prng = common.testRng(11);
    const rand = prng.random();
    const nb = 3;
    const k = nb * 256;
    const n_rows = 4;
    const n_tok = 4;
    var panel: [n_rows][nb]Unpacked = undefined;
    for (&panel) |*p| randomUnpacked(rand, p);
    var act_buf: [n_tok * q8_k.Row.bytes(k)]u8 align(64) = undefined;
    var x: [k]f32 = undefined;
    var acts: [n_tok]q8_k.Row = undefined;
    for (0..n_tok) |t| {
        for (&x) |*v| v.* = rand.floatNorm(f32);
        acts[t] = q8_k.Row.at(&act_buf, k, t);
        q8_k.quantize(&x, k, acts[t]);
    }
    inline for (.{ .integer, .float_mins }) |offsets| {
        inline for (.{ .{ 1, 1 }, .{ 2, 3 }, .{ 4, 4 } }) |shape| {
            const R = shape[0];
            const T = shape[1];
            var rows: [R][*]const Unpacked = undefined;
            for (0..R) |r| rows[r] = &panel[r];
            var out: [R][T]f32 = undefined;
            tile(R, T, offsets, rows, acts[0..T].*, nb, &out);
            for (0..R) |r| for (0..T) |t| {
                const want = tileRef(offsets, &panel[r], acts[t]);
                try std.testing.expectApproxEqAbs(want, out[r][t], 1e-4 * @max(1, @abs(want)));
            };
        }
    }
}

/// Checks a K-quant format file against its references on random blocks: the SIMD dequantizer
/// exactly, the integer dot scheme against the float dot of dequantized values, `blockDot` and
/// `dotRows` against `blockDotRef`, and `unpack` through `tileRef`.
pub fn checkFormat(comptime F: type, seed: u64) !void {
    var prng = common.testRng(seed);
    const rand = prng.random();
    const nb = 4;
    const k = nb * 256;
    var rows: [3][nb]F.Block = undefined;
    for (&rows) |*row| for (row) |*blk| {
        blk.* = F.randomBlock(rand);
    };
    var x: [k]f32 = undefined;
    for (&x, 0..) |*v, i| v.* = rand.floatNorm(f32) * @as(f32, if (i % 61 == 0) 8 else 1);
    var act_buf: [q8_k.Row.bytes(k)]u8 align(64) = undefined;
    const act = q8_k.Row.at(&act_buf, k, 0);
    q8_k.quantize(&x, k, act);

    for (rows) |row| {
        var want_row: f32 = 0;
        var unpacked: [nb]Unpacked = undefined;
        for (&row, 0..) |*blk, b| {
            var ref: [256]f32 = undefined;
            var simd: [256]f32 = undefined;
            F.dequantizeRef(blk, &ref);
            F.dequantize(blk, &simd);
            try std.testing.expectEqualSlices(f32, &ref, &simd);

            // The integer scheme computes Σ w·(dx·q8) exactly up to float rounding.
            var float_dot: f64 = 0;
            for (0..256) |i| float_dot += @as(f64, ref[i]) * act.d[b] * @as(f64, @floatFromInt(act.qs[b * 256 + i]));
            const want = F.blockDotRef(blk, act.qs + b * 256, act.bsums + b * 16, act.d[b]);
            try std.testing.expectApproxEqAbs(float_dot, want, 1e-4 * @max(1, @abs(float_dot)));

            const got = common.sum(F.blockDot(blk, act.qs + b * 256, act.bsums[b * 16 ..][0..16].*, act.d[b]));
            try std.testing.expectApproxEqAbs(want, got, 1e-5 * @max(1, @abs(want)));
            F.unpack(blk, &unpacked[b]);
            want_row += want;
        }
        const via_tile = tileRef(F.offsets, &unpacked, act);
        try std.testing.expectApproxEqAbs(want_row, via_tile, 1e-5 * @max(1, @abs(want_row)));
    }
    const together = dotRows(F, 3, .{ &rows[0], &rows[1], &rows[2] }, act, nb, 0);
    for (rows, 0..) |row, r| {
        var want: f32 = 0;
        for (&row, 0..) |*blk, b| want += F.blockDotRef(blk, act.qs + b * 256, act.bsums + b * 16, act.d[b]);
        try std.testing.expectApproxEqAbs(want, together[r], 1e-5 * @max(1, @abs(want)));
    }
}
