//! What the formats with 32-value blocks share — Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4 —
//! against Q8_0 / Q8_1 activations (`q8_0.Row`): the one-token dot, the GEMM tile, the test
//! harness every format runs.
//!
//! Each block is a scale d (and for Q4_1/Q5_1 an offset m) over 32 small integers. A format file
//! gives them as unsigned bytes u = q + `offset`, so value(i) = d·(u[i] − offset) [+ m]:
//!
//!   Block, block_values = 32
//!   offset: comptime_int     8 (Q4_0), 16 (Q5_0), 128 (Q8_0, IQ4_NL), 12 (MXFP4), 0 (Q4_1, Q5_1)
//!   has_min: bool            value = d·u + m; the partner is Q8_1 (Q4_1, Q5_1)
//!   max_quant: comptime_int  the largest u; above 128 the AVX2 form of `dotBytes` could saturate
//!   quants(blk) U8x32        the 32 u in value order (SIMD)
//!   quantsRef(blk, *[32]u8)  the same, scalar, straight from the layout (the reference)
//!   scale(blk) f32, min(blk) f32 (has_min only), randomBlock(rand)
//!   dequantizeRef (the spec's formula) and dequantize (calls `dequantize` here)
//!
//! Per block the dot product with activations x ≈ d_x·q_x is
//!   d_w·d_x·(Σ u·q_x − offset·Σq_x)  [+ m·s_x]
//! with the bracket in integers — exactly llama.cpp's signed sums — and offset·Σq_x (the
//! activation keeps Σq per block) as the start of the integer sum. Unsigned weights let one
//! `vpdpbusd` multiply 32 values, where signed ones need the sign trick's two extra instructions.
//!
//! GEMM tiles work on super-blocks of 8 blocks (256 values) interleaved as the K-quants' are
//! (`kquants.zig`): 32-byte vector v holds values 4v..4v+3 of each block, block i in bytes
//! 4i..4i+3, so a `dotBytes` lane sums one block and the scales apply lane-wise, one float
//! multiply-add per 8 blocks, row and token:
//!   facc[i] += (d_w[i]·d_x[i])·(Σ_v lane_i(u[v]·q_x[v]) − offset·Σq_x[i])  [+ m[i]·s_x[i]]
//! Rows are unpacked into a per-worker `Panel` that keeps rows in pairs (one 64-byte `vpdpbusd`
//! multiplies two rows, as in kquants); activations are interleaved once per matmul
//! (`q8_0.interleave`). Rows whose length is not a multiple of 256 end in zero blocks. At the
//! arm64 i8mm level one `usmmla` multiplies two rows by two tokens instead: the panel's `vals`
//! and the tiles' activations then take `mmla.zig`'s 8-byte interleave (layouts there).
const std = @import("std");
const common = @import("common.zig");
const mmla = @import("mmla.zig");
const q8_0 = @import("q8_0.zig");

const U8x32 = common.U8x32;
const I8x32 = common.I8x32;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;
const U8x64 = common.U8x64;
const F32x16 = common.F32x16;

pub const block_values = 32;

pub fn dequantize(comptime F: type, blk: *const F.Block, out: *[32]f32) void {
    const u: [32]u8 = F.quants(blk);
    const d: F32x8 = @splat(F.scale(blk));
    const off: F32x8 = @splat(F.offset);
    inline for (0..4) |i| {
        const q: @Vector(8, u8) = u[8 * i ..][0..8].*;
        const v = d * (@as(F32x8, @floatFromInt(q)) - off);
        out[8 * i ..][0..8].* = if (F.has_min) v + @as(F32x8, @splat(F.min(blk))) else v;
    }
}

/// Σ u·q_x over a block plus `start`, without saturation for the format's quants.
inline fn dotQuants(comptime F: type, start: I32x8, u: U8x32, x: I8x32) I32x8 {
    return if (F.max_quant <= 128) common.dotBytes(start, u, x) else common.dotBytesWide(start, u, x);
}

/// −offset·Σq_x in lane 0: the start of one block's integer sum.
inline fn offsetStart(comptime F: type, sum: i32) I32x8 {
    var v: I32x8 = @splat(0);
    if (F.offset != 0) v[0] = -F.offset * sum;
    return v;
}

/// Dot products of R weight rows (`nb` blocks each) with one activation row in natural order,
/// prefetching what lies `ahead` bytes past each block it reads.
pub inline fn dotRows(comptime F: type, comptime R: usize, rows: [R][*]const F.Block, act: q8_0.Row, nb: usize, ahead: usize) [R]f32 {
    var acc: [R]F32x8 = @splat(@splat(0));
    var mins: [R]f32 = @splat(0);
    for (0..nb) |b| {
        const x: I8x32 = act.qs[32 * b ..][0..32].*;
        const start = offsetStart(F, act.sums[b]);
        inline for (0..R) |r| {
            const blk = &rows[r][b];
            common.prefetchSpan(@as([*]const u8, @ptrCast(blk)) + ahead, @sizeOf(F.Block));
            const isum = dotQuants(F, start, F.quants(blk), x);
            acc[r] = common.mulAdd(F32x8, @floatFromInt(isum), @splat(F.scale(blk) * act.d[b]), acc[r]);
            if (F.has_min) mins[r] += F.min(blk) * act.s[b];
        }
    }
    var out: [R]f32 = undefined;
    inline for (0..R) |r| out[r] = common.sum(acc[r]) + mins[r];
    return out;
}

/// One block against activation block b, in scalar integers from `quantsRef`: the reference.
pub fn blockDotRef(comptime F: type, blk: *const F.Block, act: q8_0.Row, b: usize) f32 {
    var u: [32]u8 = undefined;
    F.quantsRef(blk, &u);
    var isum: i32 = 0;
    for (0..32) |i| isum += (@as(i32, u[i]) - F.offset) * act.qs[32 * b + i];
    const dot = F.scale(blk) * act.d[b] * @as(f32, @floatFromInt(isum));
    return if (F.has_min) dot + F.min(blk) * act.s[b] else dot;
}

// ---------------------------------------------------------------------------------------------
// GEMM: panels of unpacked super-blocks, tiles of rows × tokens.

/// One super-block (8 blocks) of two rows: each 32-byte field twice, row 2p's then row 2p+1's.
pub const Pair = struct {
    /// Interleaved quants u (layout above); at the i8mm level the two rows' 8-byte chunks side by
    /// side instead (`mmla.zig`, "row pairs"). Read and written through `mmla.rowVector` /
    /// `mmla.setRowVector` one row at a time, or whole by the 64-byte and usmmla tiles.
    vals: [8]U8x64,
    /// Lane i: block i's scale d (zero for padding blocks).
    d: F32x16,
    /// Lane i: block i's m (has_min formats; zero otherwise).
    m: F32x16,
};

pub const Panel = struct {
    pairs: [*]Pair,
    /// Super-blocks per row.
    ns: usize,

    pub fn bytes(n_rows: usize, k: usize) usize {
        return (n_rows + 1) / 2 * (q8_0.padded(k) / 256) * @sizeOf(Pair);
    }

    inline fn pair(p: Panel, row: usize, s: usize) *Pair {
        return &p.pairs[row / 2 * p.ns + s];
    }

    /// Unpacks one weight row (`nb` blocks) into panel row `row`.
    pub fn unpackRow(p: Panel, comptime F: type, blocks: [*]const F.Block, nb: usize, row: usize) void {
        for (0..p.ns) |s| {
            var chunks: [8]U8x32 = @splat(@splat(0));
            var d: [8]f32 = @splat(0);
            var m: [8]f32 = @splat(0);
            const n = @min(8, nb - 8 * s);
            for (0..n) |i| {
                const blk = &blocks[8 * s + i];
                chunks[i] = F.quants(blk);
                d[i] = F.scale(blk);
                if (F.has_min) m[i] = F.min(blk);
            }
            p.storeSuper(row, s, common.transposeWords(chunks), d, m);
        }
    }

    /// Unpacks one repacked weight row (`p.ns` super-blocks, see "Repacked rows") into panel row
    /// `row`: its quants are already interleaved.
    pub fn unpackSuperRow(p: Panel, comptime F: type, supers: [*]const F.Super, row: usize) void {
        for (0..p.ns) |s| {
            const sup = &supers[s];
            p.storeSuper(row, s, F.superQuants(sup), F.superScales(sup), if (F.has_min) F.superMins(sup) else @splat(0));
        }
    }

    inline fn storeSuper(p: Panel, row: usize, s: usize, vals: [8]U8x32, d: F32x8, m: F32x8) void {
        const pr = p.pair(row, s);
        const h = row % 2;
        inline for (0..8) |v| mmla.setRowVector(&pr.vals, h, v, vals[v]);
        halfOf(F32x8, &pr.d, h).* = d;
        halfOf(F32x8, &pr.m, h).* = m;
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

/// Σ over a row for R panel rows from `first` × T tokens (interleaved activation rows, in
/// `mmla`'s paired words at the i8mm level); out[r][t] receives the dot products.
pub fn tile(comptime F: type, comptime R: usize, comptime T: usize, panel: Panel, first: usize, acts: [T]q8_0.Row, out: *[R][T]f32) void {
    if (comptime common.has_vnni512 and R % 2 == 0) {
        std.debug.assert(first % 2 == 0);
        return tileWidth(F, 2, R / 2, T, panel, first, acts, out, false);
    }
    tileWidth(F, 1, R, T, panel, first, acts, out, mmla.enabled);
}

/// `tile` on vectors of L rows (L = 1: 32-byte vectors, one row each; L = 2: 64-byte vectors,
/// a row pair each), G = R / L groups, or with `via_mmla` (i8mm, L = 1) two rows by two tokens
/// per `usmmla` on activations in paired words: the same sums in the same order every way.
fn tileWidth(comptime F: type, comptime L: usize, comptime G: usize, comptime T: usize, panel: Panel, first: usize, acts: [T]q8_0.Row, out: *[G * L][T]f32, comptime via_mmla: bool) void {
    @setEvalBranchQuota(10_000);
    const IL = @Vector(8 * L, i32);
    const FL = @Vector(8 * L, f32);
    const UL = @Vector(32 * L, u8);
    var pairs: [G][*]const Pair = undefined;
    var halves: [G]usize = undefined;
    inline for (0..G) |g| {
        const row = first + g * L;
        pairs[g] = panel.pairs + row / 2 * panel.ns;
        halves[g] = row % 2;
    }
    var facc: [G][T]FL = @splat(@splat(@splat(0)));
    for (0..panel.ns) |s| {
        var iacc: [G][T]IL = undefined;
        inline for (0..T) |t| {
            const sums: I32x8 = acts[t].sums[8 * s ..][0..8].*;
            const start = repeat(L, i32, sums *% @as(I32x8, @splat(-F.offset)));
            inline for (0..G) |g| iacc[g][t] = start;
        }
        if (via_mmla) {
            if (L != 1) @compileError("the usmmla tile pairs rows itself");
            var pair_vals: [(G + 1) / 2]*const [8]U8x64 = undefined;
            inline for (0..(G + 1) / 2) |p| pair_vals[p] = &pairs[2 * p][s].vals;
            var xs: [T][*]const i8 = undefined;
            inline for (0..T) |t| xs[t] = acts[t].qs + 256 * s;
            mmla.addTileSums(G, T, 0, 4, pair_vals, halves[0], xs, &iacc);
        } else inline for (0..8) |v| {
            var x: [T]@Vector(32 * L, i8) = undefined;
            inline for (0..T) |t| x[t] = repeat(L, i8, acts[t].qs[256 * s + 32 * v ..][0..32].*);
            inline for (0..G) |g| {
                const w: UL = if (L == 2) pairs[g][s].vals[v] else mmla.rowVector(&pairs[g][s].vals, halves[g], v);
                inline for (0..T) |t| iacc[g][t] = if (L == 2)
                    common.dotBytes64(iacc[g][t], w, x[t])
                else
                    dotQuants(F, iacc[g][t], w, x[t]);
            }
        }
        inline for (0..T) |t| {
            const dx = repeat(L, f32, acts[t].d[8 * s ..][0..8].*);
            const sx = if (F.has_min) repeat(L, f32, acts[t].s[8 * s ..][0..8].*) else undefined;
            inline for (0..G) |g| {
                const pr = &pairs[g][s];
                const dw: FL = if (L == 2) pr.d else halfConst(F32x8, &pr.d, halves[g]);
                facc[g][t] = common.mulAdd(FL, @floatFromInt(iacc[g][t]), dw * dx, facc[g][t]);
                if (F.has_min) {
                    const m: FL = if (L == 2) pr.m else halfConst(F32x8, &pr.m, halves[g]);
                    facc[g][t] = common.mulAdd(FL, m, sx, facc[g][t]);
                }
            }
        }
    }
    inline for (0..G) |g| inline for (0..T) |t| {
        const lanes: [8 * L]f32 = facc[g][t];
        inline for (0..L) |l| out[g * L + l][t] = common.sum(lanes[8 * l ..][0..8].*);
    };
}

/// A 32-byte vector as itself (L = 1) or in both halves of a 64-byte one (L = 2).
inline fn repeat(comptime L: usize, comptime E: type, v: @Vector(32 / @sizeOf(E), E)) @Vector(32 * L / @sizeOf(E), E) {
    return if (L == 2) std.simd.join(v, v) else v;
}

// ---------------------------------------------------------------------------------------------
// Repacked rows: one-token dots on eight blocks at a time.
//
// The natural layout's one-token dot spends ~13 instructions per block and row (unpacking, one
// vpdpbusd, then a scale conversion, broadcast and multiply-add for 32 values), which at 4.5 bits
// per value keeps it from streaming weights as fast as memory delivers them. Formats that provide
// a `Super` can be repacked at load, row by row (any row count): each run of eight blocks becomes
// one super-block with the blocks' quants interleaved as the GEMM tiles want them and their scales
// side by side, the same bytes rearranged. A super-block then takes eight `dotBytes` against the
// interleaved activation and one lane-wise scale for all eight blocks, as in the tile above.
// Rows must be whole super-blocks (ne0 a multiple of 256). A format with a `Super` provides
//   Super                                  8 blocks' bytes, rearranged (same size)
//   repackSuper(blocks: *const [8]Block) Super,  blockOf(sup, i) Block (the way back)
//   superQuants(sup) [8]U8x32              the interleaved unsigned quants u
//   superScales(sup) F32x8, superMins(sup) F32x8 (has_min)  lane i: block i's d, m

/// Dot products of R repacked rows (`ns` super-blocks each) with one interleaved activation row.
pub inline fn dotRowsSuper(comptime F: type, comptime R: usize, rows: [R][*]const F.Super, act: q8_0.Row, ns: usize, ahead: usize) [R]f32 {
    var acc: [R]F32x8 = @splat(@splat(0));
    for (0..ns) |s| {
        var x: [8]I8x32 = undefined;
        inline for (0..8) |v| x[v] = act.qs[256 * s + 32 * v ..][0..32].*;
        const sums: I32x8 = act.sums[8 * s ..][0..8].*;
        const start = sums *% @as(I32x8, @splat(-F.offset));
        const dx: F32x8 = act.d[8 * s ..][0..8].*;
        inline for (0..R) |r| {
            const sup = &rows[r][s];
            common.prefetchSpan(@as([*]const u8, @ptrCast(sup)) + ahead, @sizeOf(F.Super));
            const u = F.superQuants(sup);
            // Two chains: a vpdpbusd waits for the previous one's result.
            var iacc: [2]I32x8 = .{ start, @splat(0) };
            inline for (0..8) |v| iacc[v % 2] = dotQuants(F, iacc[v % 2], u[v], x[v]);
            acc[r] = common.mulAdd(F32x8, @floatFromInt(iacc[0] +% iacc[1]), F.superScales(sup) * dx, acc[r]);
            if (F.has_min) acc[r] = common.mulAdd(F32x8, F.superMins(sup), act.s[8 * s ..][0..8].*, acc[r]);
        }
    }
    var out: [R]f32 = undefined;
    inline for (0..R) |r| out[r] = common.sum(acc[r]);
    return out;
}

/// Repacks one row of `ns` super-blocks.
pub fn repackRow(comptime F: type, blocks: [*]const F.Block, ns: usize, dst: [*]F.Super) void {
    for (0..ns) |s| dst[s] = F.repackSuper(blocks[8 * s ..][0..8]);
}

/// Dequantizes one repacked row.
pub fn dequantizeSuperRow(comptime F: type, supers: [*]const F.Super, ns: usize, out: [*]f32) void {
    for (0..ns) |s| for (0..8) |i| {
        const blk = F.blockOf(&supers[s], i);
        F.dequantize(&blk, out[256 * s + 32 * i ..][0..32]);
    };
}

/// Checks a format's `Super` against its blocks: the round trip, the interleaved quants and
/// scales against the natural ones, and `dotRowsSuper` against `blockDotRef`.
pub fn checkSuper(comptime F: type, seed: u64) !void {
    var prng = common.testRng(seed);
    const rand = prng.random();
    const ns = 2;
    const nb = 8 * ns;
    const k = nb * 32;
    var rows: [3][nb]F.Block = undefined;
    var supers: [3][ns]F.Super = undefined;
    for (&rows, &supers) |*row, *sup| {
        for (row) |*blk| blk.* = F.randomBlock(rand);
        repackRow(F, row, ns, sup);
    }
    var x: [k]f32 = undefined;
    for (&x) |*v| v.* = rand.floatNorm(f32);
    var natural_buf: [q8_0.Row.bytes(k)]u8 align(64) = undefined;
    var tiled_buf: [q8_0.Row.bytes(k)]u8 align(64) = undefined;
    const natural = q8_0.Row.at(&natural_buf, k, 0);
    const tiled = q8_0.Row.at(&tiled_buf, k, 0);
    q8_0.quantize(&x, k, natural);
    q8_0.quantize(&x, k, tiled);
    q8_0.interleave(tiled, k);
    for (0..3) |r| {
        var want: f32 = 0;
        for (0..ns) |s| {
            var chunks: [8]U8x32 = undefined;
            const d: [8]f32 = F.superScales(&supers[r][s]);
            for (0..8) |i| {
                const blk = &rows[r][8 * s + i];
                try std.testing.expectEqualSlices(u8, std.mem.asBytes(blk), std.mem.asBytes(&F.blockOf(&supers[r][s], i)));
                chunks[i] = F.quants(blk);
                try std.testing.expectEqual(F.scale(blk), d[i]);
                if (F.has_min) try std.testing.expectEqual(F.min(blk), @as([8]f32, F.superMins(&supers[r][s]))[i]);
                want += blockDotRef(F, blk, natural, 8 * s + i);
            }
            const want_vals: [8][32]u8 = @bitCast(common.transposeWords(chunks));
            const got_vals: [8][32]u8 = @bitCast(F.superQuants(&supers[r][s]));
            try std.testing.expectEqual(want_vals, got_vals);
        }
        const got = dotRowsSuper(F, 1, .{&supers[r]}, tiled, ns, 0)[0];
        try std.testing.expectApproxEqAbs(want, got, 1e-5 * @max(1, @abs(want)));
        var deq: [k]f32 = undefined;
        var ref: [32]f32 = undefined;
        dequantizeSuperRow(F, &supers[r], ns, &deq);
        for (0..nb) |b| {
            F.dequantizeRef(&rows[r][b], &ref);
            try std.testing.expectEqualSlices(f32, &ref, deq[32 * b ..][0..32]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// Checks a format file against its references on random blocks: `quants` against `quantsRef`,
/// the SIMD dequantizer exactly against `dequantizeRef` and against the u-form, `blockDotRef`
/// against the float dot of dequantized values, `dotRows` against `blockDotRef`, and the panel
/// tile (several shapes, padding included) against the same sums.
pub fn checkFormat(comptime F: type, seed: u64) !void {
    var prng = common.testRng(seed);
    const rand = prng.random();
    const nb = 11; // two super-blocks, the second padded
    const k = nb * 32;
    const n_rows = 6;
    const n_tok = 4;
    var rows: [n_rows][nb]F.Block = undefined;
    for (&rows) |*row| for (row) |*blk| {
        blk.* = F.randomBlock(rand);
    };
    var act_buf: [n_tok * q8_0.Row.bytes(k)]u8 align(64) = undefined;
    var tiled_buf: [n_tok * q8_0.Row.bytes(k)]u8 align(64) = undefined;
    var paired_buf: [n_tok * q8_0.Row.bytes(k)]u8 align(64) = undefined;
    var acts: [n_tok]q8_0.Row = undefined;
    var tiled: [n_tok]q8_0.Row = undefined;
    // What `tile` reads: at the i8mm level `tiled` in `mmla`'s paired words.
    var tile_acts: [n_tok]q8_0.Row = undefined;
    var x: [k]f32 = undefined;
    for (0..n_tok) |t| {
        for (&x, 0..) |*v, i| v.* = rand.floatNorm(f32) * @as(f32, if (i % 61 == 0) 8 else 1);
        acts[t] = q8_0.Row.at(&act_buf, k, t);
        q8_0.quantize(&x, k, acts[t]);
        tiled[t] = q8_0.Row.at(&tiled_buf, k, t);
        q8_0.quantize(&x, k, tiled[t]);
        q8_0.interleave(tiled[t], k);
        tile_acts[t] = q8_0.Row.at(&paired_buf, k, t);
        q8_0.quantize(&x, k, tile_acts[t]);
        q8_0.interleave(tile_acts[t], k);
        if (mmla.enabled) mmla.pairWordsRow(tile_acts[t].qs, q8_0.padded(k) / 256);
    }

    var want: [n_rows][n_tok]f32 = undefined;
    for (&rows, 0..) |*row, r| for (0..n_tok) |t| {
        var sum: f32 = 0;
        for (row, 0..) |*blk, b| {
            var u: [32]u8 = undefined;
            F.quantsRef(blk, &u);
            try std.testing.expectEqual(@as(U8x32, u), F.quants(blk));
            try std.testing.expect(std.mem.max(u8, &u) <= F.max_quant);
            var ref: [32]f32 = undefined;
            var simd: [32]f32 = undefined;
            F.dequantizeRef(blk, &ref);
            F.dequantize(blk, &simd);
            try std.testing.expectEqualSlices(f32, &ref, &simd);
            var float_dot: f64 = 0;
            for (0..32) |i| {
                const via_u = F.scale(blk) * (@as(f32, @floatFromInt(u[i])) - F.offset) + if (F.has_min) F.min(blk) else 0;
                try std.testing.expectEqual(ref[i], via_u);
                float_dot += @as(f64, ref[i]) * acts[t].d[b] * @as(f64, @floatFromInt(acts[t].qs[32 * b + i]));
            }
            const one = blockDotRef(F, blk, acts[t], b);
            // Q8_1's s is Σq·d rounded to f16: the min term may differ from the float dot by that.
            const s_err = if (F.has_min) @abs(F.min(blk) * acts[t].s[b]) * 1e-3 else 0;
            try std.testing.expectApproxEqAbs(float_dot, one, 1e-4 * @max(1, @abs(float_dot)) + s_err);
            sum += one;
        }
        want[r][t] = sum;
    };
    for (0..n_tok) |t| {
        const got = dotRows(F, 3, .{ &rows[0], &rows[1], &rows[2] }, acts[t], nb, 0);
        for (0..3) |r| try std.testing.expectApproxEqAbs(want[r][t], got[r], 1e-5 * @max(1, @abs(want[r][t])));
    }

    var pairs: [Panel.bytes(n_rows, k) / @sizeOf(Pair)]Pair = undefined;
    const panel = Panel{ .pairs = &pairs, .ns = q8_0.padded(k) / 256 };
    for (0..n_rows) |r| panel.unpackRow(F, &rows[r], nb, r);
    inline for (.{ .{ 1, 1, 3 }, .{ 2, 3, 2 }, .{ 4, 4, 0 }, .{ 4, 4, 2 }, .{ 1, 4, 5 } }) |shape| {
        const R = shape[0];
        const T = shape[1];
        const first = shape[2];
        var out: [R][T]f32 = undefined;
        tile(F, R, T, panel, first, tile_acts[0..T].*, &out);
        var narrow: [R][T]f32 = undefined;
        tileWidth(F, 1, R, T, panel, first, tiled[0..T].*, &narrow, false);
        for (0..R) |r| for (0..T) |t| {
            const w = want[first + r][t];
            try std.testing.expectApproxEqAbs(w, out[r][t], 1e-5 * @max(1, @abs(w)));
            // One row per vector, two (64-byte vectors), or 2×2 per usmmla: the same bits.
            try std.testing.expectEqual(narrow[r][t], out[r][t]);
        };
    }
}
