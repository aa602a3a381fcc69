//! What the formats multiplied against Q8_K activations (Q2_K … Q6_K, IQ4_XS) share: the
//! matrix-vector loop, the GEMM tile, and the test harness every format runs.
//!
//! A format file provides `Block`, `dequantizeRef` (the spec's formula, scalar), `dequantize`
//! (SIMD), `blockDot` (SIMD, one block against Q8_K activations), `blockDotRef` (the same scheme
//! in scalar integers), `unpack` (to `Unpacked`), `scheme` and `randomBlock`.
//!
//! Matrix × vector (one token) calls `blockDot` directly on the weight bytes. For several tokens,
//! each format unpacks a weight block once into `Unpacked` — unsigned quant values plus per-lane
//! float multipliers — and the tile multiplies R unpacked rows by T activation rows, so one
//! unpacked weight chunk feeds T tokens and one activation chunk feeds R rows.
//!
//! Tiles work on "interleaved" blocks: the 256 values are eight sub-blocks of 32 (i = 0..7, one
//! scale each in Q4_K/Q5_K/IQ4_XS, two scales of 16 in Q2_K/Q3_K/Q6_K) and 32-byte vector v holds values
//! 4v..4v+3 of every sub-block, sub-block i in bytes 4i..4i+3 (`common.transposeWords` of the
//! natural order). The activations are interleaved alike (`q8_k.interleave`). Then a
//! `common.dotBytes` lane sums products of one sub-block only: its scale is one lane-wise
//! integer multiply after the sums instead of a multiply per 32 values before them. Vectors 0-3 /
//! 4-7 cover the first / second 16 values of each sub-block. A format's `Scheme` says how its
//! values, scales and mins map onto this. For one block, row r and token t, lanes i, with the
//! quants stored as unsigned `vals` = quant + offset:
//!
//!   one scale per 32 values (Q4_K, Q5_K: offset 0, mins per 32; IQ4_XS: offset 128, no mins):
//!     y[t][r] += d·dx·Σ_i scales_lo[i]·(Σ_{v<8} lane_i(vals[v]·x[v]) − offset·(bsums[2i] + bsums[2i+1]))
//!              + Σ_i mins[i]·sums32[i]
//!   one scale per 16 values (Q6_K: offset 32; Q3_K: offset 4):
//!     y[t][r] += d·dx·Σ_i scales_lo[i]·(Σ_{v<4} lane_i(vals[v]·x[v]) − offset·bsums[2i])
//!              + d·dx·Σ_i scales_hi[i]·(Σ_{v≥4} lane_i(vals[v]·x[v]) − offset·bsums[2i+1])
//!   no scale below d (Q2_K: its 4-bit scales multiplied into the 2-bit quants, ≤ 45; mins per 16):
//!     y[t][r] += d·dx·Σ_i Σ_{v<8} lane_i(vals[v]·x[v])
//!              + Σ_i (mins[i]·dx·bsums[2i] + mins_hi[i]·dx·bsums[2i+1])
//!
//! Everything inside d·dx·(…) is integer, as in llama.cpp's dot products (the offset terms start the
//! accumulators); the tile multiplies each lane's sum by its scale in f32, which gives exactly the
//! integer product converted to f32 (see `Pair`). Rounding the scale into d instead would be as
//! accurate, but the synthetic parity models amplify any change of rounding order (an int8
//! activation rounding that flips), and these sums stay closest to the reference's.
//!
//! The tile reads unpacked blocks from a `Panel`, which stores rows in pairs so that AVX-512
//! multiplies two rows per instruction, and at the arm64 i8mm level one `usmmla` multiplies two
//! rows by two tokens (`mmla.zig`: there `vals` and the activations take its 8-byte interleave).
const std = @import("std");
const common = @import("common.zig");
const mmla = @import("mmla.zig");
const q8_k = @import("q8_k.zig");

const U8x32 = common.U8x32;
const I8x32 = common.I8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;
const U8x64 = common.U8x64;
const I8x64 = common.I8x64;
const I32x16 = common.I32x16;
const F32x16 = common.F32x16;

/// One weight block of 256 values, unpacked for the tile (layout above).
pub const Unpacked = struct {
    /// Interleaved unsigned quants (quant + the scheme's offset), at most `Scheme.max_val`.
    vals: [8]U8x32,
    /// Lane i: the integer scale of sub-block i's values 0-15 and 16-31; equal when the scheme
    /// has one scale per 32 values, where only `scales_lo` is read.
    scales_lo: I32x8,
    scales_hi: I32x8,
    /// The block scale d, broadcast.
    d: F32x8,
    /// Lane i: −dmin·m for sub-block i (mins per 32), or for its values 0-15 (mins per 16); zero
    /// when the scheme has no mins.
    mins: F32x8,
    /// Lane i: −dmin·m for sub-block i's values 16-31 (mins per 16); else zero.
    mins_hi: F32x8,
};

/// How a format's block maps onto `Unpacked` and the tile's sums (the formulas above).
pub const Scheme = struct {
    /// Values per integer scale: 32 (`scales_lo` only), 16 (`scales_lo`, `scales_hi`), or 256:
    /// none below the block's d (the format multiplied its scales into `vals`).
    scale_values: u16,
    /// What `vals` adds to each quant to make it unsigned; the tile starts each integer sum at
    /// −offset·Σx (from the activation's bsums).
    offset: i32 = 0,
    mins: enum { none, per32, per16 } = .none,
    /// The largest `vals` entry. Above 63 the AVX2 multiply-add (without VNNI) could saturate, so
    /// the tile uses `common.dotBytesWide` there.
    max_val: u8 = 63,

    pub const q4_k: Scheme = .{ .scale_values = 32, .mins = .per32 };
    pub const q6_k: Scheme = .{ .scale_values = 16, .offset = 32 };

    fn groups(comptime s: Scheme) usize {
        return if (s.scale_values == 16) 2 else 1;
    }
};

/// Unpacked.vals from the eight 32-value chunks in natural order.
pub fn interleaveVals(chunks: [8]U8x32) [8]U8x32 {
    return common.transposeWords(chunks);
}

/// Σ_k scales[k]·(Σ of the 16 products q·x of values 16k..16k+15) over one block, as 8 partial
/// sums: chunk c (values 32c..32c+31, quants ≤ 63) takes scales 2c and 2c+1. The one-token dot of
/// the formats with a scale per 16 values (Q2_K, Q3_K, Q6_K).
pub inline fn scale16Dot(chunks: [8]U8x32, scales: @Vector(16, i16), xq: [*]const i8) I32x8 {
    const s: [16]i16 = scales;
    const halves = [2]@Vector(32, u8){ common.duplicateWords(s[0..8].*), common.duplicateWords(s[8..16].*) };
    // Two sums: the fused multiply-add has a 4-cycle latency the other row's chain cannot hide.
    var isum: [2]I32x8 = @splat(@splat(0));
    inline for (0..8) |c| {
        const p = common.mulAddBytes(chunks[c], xq[32 * c ..][0..32].*);
        isum[c % 2] = common.dotWords(isum[c % 2], p, common.broadcastWords(halves[c / 4], (2 * c) % 8, (2 * c + 1) % 8));
    }
    return isum[0] +% isum[1];
}

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

/// `dotRows` for T activation rows in one pass over the weights, for formats that can prepare a
/// block once for several dots (`F.prepare`, `F.preparedDot`). Each token's products come from the
/// same operations in the same order as `dotRows` for it alone: the same bits.
pub inline fn dotRowsTokens(comptime F: type, comptime R: usize, comptime T: usize, rows: [R][*]const F.Block, acts: [T]q8_k.Row, nb: usize, ahead: usize) [T][R]f32 {
    var acc: [T][R]F32x8 = @splat(@splat(@splat(0)));
    for (0..nb) |b| {
        var bsums: [T]I16x16 = undefined;
        inline for (0..T) |t| bsums[t] = acts[t].bsums[b * 16 ..][0..16].*;
        inline for (0..R) |r| {
            common.prefetchSpan(@as([*]const u8, @ptrCast(&rows[r][b])) + ahead, @sizeOf(F.Block));
            const p = F.prepare(&rows[r][b]);
            inline for (0..T) |t| acc[t][r] += F.preparedDot(&p, acts[t].qs + b * 256, bsums[t], acts[t].d[b]);
        }
    }
    var out: [T][R]f32 = undefined;
    inline for (0..T) |t| inline for (0..R) |r| {
        out[t][r] = common.sum(acc[t][r]);
    };
    return out;
}

/// The GEMM panel: the unpacked blocks of a group of rows, stored by row pairs. Every 32-byte
/// field of `Unpacked` appears twice in a `Pair`, row 2p's then row 2p+1's, so one 64-byte vector
/// holds both rows: the 64-byte tile (`has_vnni512`) multiplies two rows per `vpdpbusd` against
/// an activation chunk broadcast to both halves, and the 32-byte tile reads one half. At the
/// i8mm level (`mmla.enabled`) `vals` holds the two rows' 8-byte chunks side by side instead, one
/// `usmmla` operand per 16 bytes (`mmla.zig`, "row pairs"); the other fields are as above. Scales
/// are stored as floats: Σ·scale in f32 is the exact integer product (< 2^24 for Q4_K/Q5_K; Q6_K
/// rounds it as converting the integer product would), one `vmulps` instead of a two-uop
/// `vpmulld`.
pub const Pair = struct {
    vals: [8]U8x64,
    scales_lo: F32x16,
    scales_hi: F32x16,
    d: F32x16,
    mins: F32x16,
    mins_hi: F32x16,
};

pub const Panel = struct {
    pairs: [*]Pair,
    /// Blocks per row.
    nb: usize,

    pub fn bytes(n_rows: usize, nb: usize) usize {
        return (n_rows + 1) / 2 * nb * @sizeOf(Pair);
    }

    inline fn pair(p: Panel, row: usize, b: usize) *Pair {
        return &p.pairs[row / 2 * p.nb + b];
    }

    pub inline fn setVals(p: Panel, row: usize, b: usize, comptime v: usize, x: U8x32) void {
        mmla.setRowVector(&p.pair(row, b).vals, row % 2, v, x);
    }

    pub inline fn setScales(p: Panel, row: usize, b: usize, lo: I32x8, hi: I32x8) void {
        const pr = p.pair(row, b);
        halfOf(F32x8, &pr.scales_lo, row % 2).* = @floatFromInt(lo);
        halfOf(F32x8, &pr.scales_hi, row % 2).* = @floatFromInt(hi);
    }

    pub inline fn setD(p: Panel, row: usize, b: usize, d: F32x8, mins: F32x8, mins_hi: F32x8) void {
        const pr = p.pair(row, b);
        halfOf(F32x8, &pr.d, row % 2).* = d;
        halfOf(F32x8, &pr.mins, row % 2).* = mins;
        halfOf(F32x8, &pr.mins_hi, row % 2).* = mins_hi;
    }

    /// Stores row `row`'s block b.
    pub inline fn store(p: Panel, row: usize, b: usize, u: *const Unpacked) void {
        inline for (0..8) |v| p.setVals(row, b, v, u.vals[v]);
        p.setScales(row, b, u.scales_lo, u.scales_hi);
        p.setD(row, b, u.d, u.mins, u.mins_hi);
    }

    /// Row `row`'s block b as stored (scales back to integers).
    pub fn load(p: Panel, row: usize, b: usize) Unpacked {
        const pr = p.pair(row, b);
        var u: Unpacked = undefined;
        inline for (0..8) |v| u.vals[v] = mmla.rowVector(&pr.vals, row % 2, v);
        u.scales_lo = @intFromFloat(halfOf(F32x8, &pr.scales_lo, row % 2).*);
        u.scales_hi = @intFromFloat(halfOf(F32x8, &pr.scales_hi, row % 2).*);
        u.d = halfOf(F32x8, &pr.d, row % 2).*;
        u.mins = halfOf(F32x8, &pr.mins, row % 2).*;
        u.mins_hi = halfOf(F32x8, &pr.mins_hi, row % 2).*;
        return u;
    }
};

/// Half h of a 64-byte field.
inline fn halfOf(comptime H: type, whole: anytype, h: usize) *H {
    return &@as(*[2]H, @ptrCast(whole))[h];
}

/// Half h of a 64-byte field, read-only.
inline fn halfConst(comptime H: type, whole: anytype, h: usize) H {
    return @as(*const [2]H, @ptrCast(whole))[h];
}

/// Σ over the blocks of a row for R panel rows from `first` × T tokens; out[r][t] receives the
/// dot products. `acts[t]` is token t's interleaved Q8_K row.
pub fn tile(
    comptime R: usize,
    comptime T: usize,
    comptime scheme: Scheme,
    panel: Panel,
    first: usize,
    acts: [T]q8_k.Row,
    out: *[R][T]f32,
) void {
    if (comptime common.has_vnni512 and R % 2 == 0) {
        std.debug.assert(first % 2 == 0);
        return tilePairs(R / 2, T, scheme, panel, first / 2, acts, out);
    }
    tileRows(R, T, scheme, panel, first, acts, out, mmla.enabled);
}

/// `tile` on 32-byte vectors, one row per instruction, or with `via_mmla` (i8mm only) two rows
/// by two tokens per `usmmla`, then the same float code: the same bits either way. `via_mmla`
/// reads `acts` in `mmla`'s paired words, otherwise interleaved as `q8_k.interleave` leaves them.
fn tileRows(
    comptime R: usize,
    comptime T: usize,
    comptime scheme: Scheme,
    panel: Panel,
    first: usize,
    acts: [T]q8_k.Row,
    out: *[R][T]f32,
    comptime via_mmla: bool,
) void {
    @setEvalBranchQuota(10_000); // the unrolled loops of large tiles
    // Two scales per sub-block: vectors 0-3 then 4-7, each group scaled on its own, so one
    // integer accumulator per (row, token) stays live either way.
    const groups = comptime scheme.groups();
    const per_group = 8 / groups;
    const nb = panel.nb;
    var rows: [R][*]const Pair = undefined;
    var halves: [R]usize = undefined;
    inline for (0..R) |r| {
        rows[r] = panel.pairs + (first + r) / 2 * nb;
        halves[r] = (first + r) % 2;
    }
    var facc: [R][T]F32x8 = @splat(@splat(@splat(0)));
    for (0..nb) |b| {
        inline for (0..groups) |g| {
            var iacc: [R][T]I32x8 = undefined;
            inline for (0..T) |t| {
                const start = offsetSums(scheme, acts[t].bsums + b * 16, g);
                inline for (0..R) |r| iacc[r][t] = start;
            }
            if (via_mmla) {
                // Vector pairs c = v/2: group g's vectors per_group·g.. are pairs per_group·g/2..
                var pair_vals: [(R + 1) / 2]*const [8]U8x64 = undefined;
                inline for (0..(R + 1) / 2) |p| pair_vals[p] = &rows[2 * p][b].vals;
                var xs: [T][*]const i8 = undefined;
                inline for (0..T) |t| xs[t] = acts[t].qs + b * 256;
                mmla.addTileSums(R, T, per_group * g / 2, per_group * (g + 1) / 2, pair_vals, halves[0], xs, &iacc);
            } else inline for (per_group * g..per_group * (g + 1)) |v| {
                var x: [T]I8x32 = undefined;
                inline for (0..T) |t| x[t] = acts[t].qs[b * 256 + 32 * v ..][0..32].*;
                inline for (0..R) |r| {
                    const w = mmla.rowVector(&rows[r][b].vals, halves[r], v);
                    inline for (0..T) |t| iacc[r][t] = dot(scheme, iacc[r][t], w, x[t]);
                }
            }
            inline for (0..T) |t| {
                const dx: F32x8 = @splat(acts[t].d[b]);
                inline for (0..R) |r| {
                    const pr = &rows[r][b];
                    const sums: F32x8 = @floatFromInt(iacc[r][t]);
                    const scaled = if (scheme.scale_values == 256) sums else sums * halfConst(F32x8, if (g == 0) &pr.scales_lo else &pr.scales_hi, halves[r]);
                    facc[r][t] = common.mulAdd(F32x8, scaled, halfConst(F32x8, &pr.d, halves[r]) * dx, facc[r][t]);
                }
            }
        }
        switch (scheme.mins) {
            .none => {},
            .per32 => inline for (0..T) |t| {
                const sums32: F32x8 = acts[t].sums32[b * 8 ..][0..8].*;
                inline for (0..R) |r| facc[r][t] = common.mulAdd(F32x8, halfConst(F32x8, &rows[r][b].mins, halves[r]), sums32, facc[r][t]);
            },
            .per16 => inline for (0..T) |t| {
                const sums = sums16(acts[t], b);
                inline for (0..R) |r| {
                    const pr = &rows[r][b];
                    facc[r][t] = common.mulAdd(F32x8, halfConst(F32x8, &pr.mins, halves[r]), sums[0], facc[r][t]);
                    facc[r][t] = common.mulAdd(F32x8, halfConst(F32x8, &pr.mins_hi, halves[r]), sums[1], facc[r][t]);
                }
            },
        }
    }
    inline for (0..R) |r| inline for (0..T) |t| {
        out[r][t] = common.sum(facc[r][t]);
    };
}

/// `tile` for P row pairs from pair `first_pair`, on 64-byte vectors: the same sums in the same
/// order, two rows per instruction.
fn tilePairs(
    comptime P: usize,
    comptime T: usize,
    comptime scheme: Scheme,
    panel: Panel,
    first_pair: usize,
    acts: [T]q8_k.Row,
    out: *[2 * P][T]f32,
) void {
    const groups = comptime scheme.groups();
    const per_group = 8 / groups;
    const nb = panel.nb;
    var pairs: [P][*]const Pair = undefined;
    inline for (0..P) |p| pairs[p] = panel.pairs + (first_pair + p) * nb;
    var facc: [P][T]F32x16 = @splat(@splat(@splat(0)));
    for (0..nb) |b| {
        inline for (0..groups) |g| {
            var iacc: [P][T]I32x16 = undefined;
            inline for (0..T) |t| {
                const start = both(i32, offsetSums(scheme, acts[t].bsums + b * 16, g));
                inline for (0..P) |p| iacc[p][t] = start;
            }
            inline for (per_group * g..per_group * (g + 1)) |v| {
                var x: [T]I8x64 = undefined;
                inline for (0..T) |t| x[t] = both(i8, acts[t].qs[b * 256 + 32 * v ..][0..32].*);
                inline for (0..P) |p| {
                    const w = pairs[p][b].vals[v];
                    inline for (0..T) |t| iacc[p][t] = common.dotBytes64(iacc[p][t], w, x[t]);
                }
            }
            inline for (0..T) |t| {
                const dx: F32x16 = @splat(acts[t].d[b]);
                inline for (0..P) |p| {
                    const pr = &pairs[p][b];
                    const sums: F32x16 = @floatFromInt(iacc[p][t]);
                    const scaled = if (scheme.scale_values == 256) sums else sums * (if (g == 0) pr.scales_lo else pr.scales_hi);
                    facc[p][t] = common.mulAdd(F32x16, scaled, pr.d * dx, facc[p][t]);
                }
            }
        }
        switch (scheme.mins) {
            .none => {},
            .per32 => inline for (0..T) |t| {
                const sums32 = both(f32, acts[t].sums32[b * 8 ..][0..8].*);
                inline for (0..P) |p| facc[p][t] = common.mulAdd(F32x16, pairs[p][b].mins, sums32, facc[p][t]);
            },
            .per16 => inline for (0..T) |t| {
                const sums = sums16(acts[t], b);
                const lo = both(f32, sums[0]);
                const hi = both(f32, sums[1]);
                inline for (0..P) |p| {
                    facc[p][t] = common.mulAdd(F32x16, pairs[p][b].mins, lo, facc[p][t]);
                    facc[p][t] = common.mulAdd(F32x16, pairs[p][b].mins_hi, hi, facc[p][t]);
                }
            },
        }
    }
    inline for (0..P) |p| inline for (0..T) |t| {
        const lanes: [16]f32 = facc[p][t];
        out[2 * p][t] = common.sum(lanes[0..8].*);
        out[2 * p + 1][t] = common.sum(lanes[8..16].*);
    };
}

/// A 32-byte vector in both halves of a 64-byte one (`vbroadcasti64x4` from memory).
inline fn both(comptime E: type, v: @Vector(32 / @sizeOf(E), E)) @Vector(64 / @sizeOf(E), E) {
    return std.simd.join(v, v);
}

/// Lane i: bsums[2i + half] (the sum of x over sub-block i's values 16·half .. 16·half+15).
inline fn halfSums(bsums: [*]const i16, comptime half: usize) I32x8 {
    const all: I16x16 = bsums[0..16].*;
    const picked: @Vector(8, i16) = @shuffle(i16, all, undefined, [8]i32{ half, 2 + half, 4 + half, 6 + half, 8 + half, 10 + half, 12 + half, 14 + half });
    return picked;
}

/// Where group g's integer sums start: −offset·Σx over the values the group covers, lane-wise.
inline fn offsetSums(comptime scheme: Scheme, bsums: [*]const i16, comptime g: usize) I32x8 {
    if (scheme.offset == 0) return @splat(0);
    const sums = if (scheme.scale_values == 16) halfSums(bsums, g) else halfSums(bsums, 0) + halfSums(bsums, 1);
    return sums * @as(I32x8, @splat(-scheme.offset));
}

/// Lanes i: dx·bsums[2i] and dx·bsums[2i+1], the activation side of per-16 mins.
inline fn sums16(act: q8_k.Row, b: usize) [2]F32x8 {
    const dx: F32x8 = @splat(act.d[b]);
    return .{ @as(F32x8, @floatFromInt(halfSums(act.bsums + b * 16, 0))) * dx, @as(F32x8, @floatFromInt(halfSums(act.bsums + b * 16, 1))) * dx };
}

/// The tile's byte dot product: `vals` above 63 need the non-saturating form without VNNI.
inline fn dot(comptime scheme: Scheme, acc: I32x8, w: U8x32, x: I8x32) I32x8 {
    return if (scheme.max_val > 63) common.dotBytesWide(acc, w, x) else common.dotBytes(acc, w, x);
}

/// The same sums computed one value at a time from the interleaved layouts: the reference
/// `tile` is tested against.
pub fn tileRef(scheme: Scheme, row: []const Unpacked, act: q8_k.Row) f32 {
    var total: f64 = 0;
    for (row, 0..) |w, b| {
        const lo: [8]i32 = w.scales_lo;
        const hi: [8]i32 = w.scales_hi;
        const mins: [8]f32 = w.mins;
        const mins_hi: [8]f32 = w.mins_hi;
        const d: [8]f32 = w.d;
        var block: i64 = 0;
        for (0..8) |i| for (0..2) |half| {
            var isum: i64 = 0;
            for (16 * half..16 * half + 16) |pos| {
                const v = pos / 4;
                const vals: [32]u8 = w.vals[v];
                isum += @as(i64, vals[4 * i + pos % 4]) * act.qs[b * 256 + 32 * v + 4 * i + pos % 4];
            }
            const scale: i64 = switch (scheme.scale_values) {
                256 => 1,
                32 => lo[i],
                else => if (half == 0) lo[i] else hi[i],
            };
            const bsum: i64 = act.bsums[b * 16 + 2 * i + half];
            isum -= scheme.offset * bsum;
            block += scale * isum;
            if (scheme.mins == .per16) total += @as(f64, if (half == 0) mins[i] else mins_hi[i]) * act.d[b] * @as(f64, @floatFromInt(bsum));
        };
        total += @as(f64, d[0]) * act.d[b] * @as(f64, @floatFromInt(block));
        if (scheme.mins == .per32) for (0..8) |i| {
            total += @as(f64, mins[i]) * act.sums32[b * 8 + i];
        };
    }
    return @floatCast(total);
}

/// Random unpacked blocks with values up to `max_val`, for tests.
pub fn randomUnpacked(rand: std.Random, max_val: u8, out: []Unpacked) void {
    for (out) |*u| {
        for (&u.vals) |*v| {
            var a: [32]u8 = undefined;
            for (&a) |*e| e.* = rand.uintAtMost(u8, max_val);
            v.* = a;
        }
        var lo: [8]i32 = undefined;
        var hi: [8]i32 = undefined;
        var m: [8]f32 = undefined;
        var m_hi: [8]f32 = undefined;
        for (0..8) |i| {
            lo[i] = rand.intRangeAtMost(i32, -128, 127);
            hi[i] = rand.intRangeAtMost(i32, -128, 127);
            m[i] = -rand.float(f32) * 0.01;
            m_hi[i] = -rand.float(f32) * 0.01;
        }
        u.scales_lo = lo;
        u.scales_hi = hi;
        u.d = @splat(rand.float(f32) * 0.01);
        u.mins = m;
        u.mins_hi = m_hi;
    }
}

test "K-quant GEMM tiles (64-byte, usmmla) match the lane-by-lane reference, and the one-row-per-vector tile bit for bit, for several shapes and offsets" {
    var prng = common.testRng(11);
    const rand = prng.random();
    const nb = 3;
    const k = nb * 256;
    const n_rows = 5;
    const n_tok = 4;
    var rows: [n_rows][nb]Unpacked = undefined;
    var pairs: [Panel.bytes(n_rows, nb) / @sizeOf(Pair)]Pair = undefined;
    const panel = Panel{ .pairs = &pairs, .nb = nb };
    var act_buf: [n_tok * q8_k.Row.bytes(k)]u8 align(64) = undefined;
    var x: [k]f32 = undefined;
    var acts: [n_tok]q8_k.Row = undefined;
    // What `tile` reads: at the i8mm level the same rows in `mmla`'s paired words.
    var tile_act_buf: [n_tok * q8_k.Row.bytes(k)]u8 align(64) = undefined;
    var tile_acts: [n_tok]q8_k.Row = undefined;
    for (0..n_tok) |t| {
        for (&x) |*v| v.* = rand.floatNorm(f32);
        acts[t] = q8_k.Row.at(&act_buf, k, t);
        q8_k.quantize(&x, k, acts[t]);
        q8_k.interleave(acts[t], k);
        tile_acts[t] = q8_k.Row.at(&tile_act_buf, k, t);
        q8_k.quantize(&x, k, tile_acts[t]);
        q8_k.interleave(tile_acts[t], k);
        if (mmla.enabled) mmla.pairWordsRow(tile_acts[t].qs, nb);
    }
    const schemes = [_]Scheme{
        Scheme.q4_k,
        Scheme.q6_k,
        .{ .scale_values = 16, .offset = 4 },
        .{ .scale_values = 256, .mins = .per16 },
        .{ .scale_values = 32, .offset = 128, .max_val = 241 },
    };
    inline for (schemes) |scheme| {
        for (&rows) |*p| randomUnpacked(rand, scheme.max_val, p);
        for (0..n_rows) |r| for (0..nb) |b| panel.store(r, b, &rows[r][b]);
        for (0..n_rows) |r| for (0..nb) |b| {
            try std.testing.expectEqualSlices(u8, std.mem.asBytes(&rows[r][b]), std.mem.asBytes(&panel.load(r, b)));
        };
        inline for (.{ .{ 1, 1, 3 }, .{ 2, 3, 2 }, .{ 4, 4, 0 }, .{ 1, 4, 4 } }) |shape| {
            const R = shape[0];
            const T = shape[1];
            const first = shape[2];
            var out: [R][T]f32 = undefined;
            tile(R, T, scheme, panel, first, tile_acts[0..T].*, &out);
            var out_rows: [R][T]f32 = undefined;
            tileRows(R, T, scheme, panel, first, acts[0..T].*, &out_rows, false);
            for (0..R) |r| for (0..T) |t| {
                const want = tileRef(scheme, &rows[first + r], acts[t]);
                try std.testing.expectApproxEqAbs(want, out[r][t], 1e-4 * @max(1, @abs(want)));
                // Both vector widths (and usmmla) give the same integer sums, scaled in the same order.
                try std.testing.expectEqual(out_rows[r][t], out[r][t]);
            };
        }
    }
}

/// Checks a K-quant format file against its references on random blocks: the SIMD dequantizer
/// exactly, the integer dot scheme against the float dot of dequantized values, `blockDot` and
/// `dotRows` against `blockDotRef`, and `unpack` through `tileRef` on interleaved activations.
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
    var tiled_buf: [q8_k.Row.bytes(k)]u8 align(64) = act_buf;
    const tiled = q8_k.Row.at(&tiled_buf, k, 0);
    q8_k.interleave(tiled, k);

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
        const via_tile = tileRef(F.scheme, &unpacked, tiled);
        try std.testing.expectApproxEqAbs(want_row, via_tile, 1e-5 * @max(1, @abs(want_row)));
    }
    const together = dotRows(F, 3, .{ &rows[0], &rows[1], &rows[2] }, act, nb, 0);
    for (rows, 0..) |row, r| {
        var want: f32 = 0;
        for (&row, 0..) |*blk, b| want += F.blockDotRef(blk, act.qs + b * 256, act.bsums + b * 16, act.d[b]);
        try std.testing.expectApproxEqAbs(want, together[r], 1e-5 * @max(1, @abs(want)));
    }
}
