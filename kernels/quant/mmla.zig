//! The GEMM tiles' integer products at the arm64 i8mm level (`enabled`): the int8 matrix
//! multiply-accumulate of the i8mm extension in its unsigned × signed form, `usmmla` (the form of
//! `smmla` that reads its first operand unsigned, as `usdot` is `sdot`'s), on 16-byte vectors:
//!
//!   usmmla(acc: i32×4, a: u8×16, b: i8×16) → i32×4    acc[2h+j] += Σ_{k<8} a[8h+k]·b[8j+k]
//!
//! a holds 8 bytes of each of two weight rows (h = 0, 1), b the same 8 positions of two tokens
//! (j = 0, 1): one instruction gives a 2×2 corner of the tile, 32 multiply-adds where `usdot`
//! gives 16. It only pays where two tokens share the weight bytes (and two rows the activation
//! bytes), so the one-token kernels stay on `sdot`/`usdot`; every GEMM tile shape at this level
//! goes through here (a lone row or token is paired with its neighbour or itself and the spare
//! half of the result dropped) so the panel needs one layout only.
//!
//! Layouts, for one 256-value super-block of eight sub-blocks i (a K-quant's 32-value sub-blocks,
//! or eight block32 blocks):
//!
//!   words (every level; `common.transposeWords` of the natural order): 32-byte vector v (v < 8)
//!     holds values 4v..4v+3 of every sub-block, sub-block i in bytes 4i..4i+3.
//!   paired words (this level's tile activations, `pairWords`): bytes 64c + 8i .. 64c + 8i + 7
//!     (c < 4) hold values 8c..8c+7 of sub-block i: vectors 2c and 2c+1 of `words` with their
//!     4-byte words zipped. One 16-byte load of a token gives sub-blocks 2m, 2m+1 of pair c.
//!   row pairs (this level's panels: `vals` of a `kquants.Pair` / `block32.Pair`, 512 bytes for
//!     rows 2p, 2p+1): bytes 128c + 16i + 8h .. + 7 hold row h's values 8c..8c+7 of sub-block i,
//!     i.e. operand (c, i) = [row 2p's 8 bytes | row 2p+1's 8 bytes], ready for `usmmla`.
//!     (Everywhere else `vals[v]` is row 2p's vector v then row 2p+1's; `rowVector` and
//!     `setRowVector` read and write one row's vector v in whichever layout the level uses.)
//!
//! For a row pair and a token pair, operand (c, i) of the rows against
//! [token 0's bytes 64c + 8i.. | token 1's] adds sub-block i's 8 products for each (row, token)
//! into accumulator i; over c = 0..3 that is all 32 values of sub-block i (or, for the formats
//! with a scale per 16 values, c = 0..1 and 2..3 are the two halves). `sums` then transposes the
//! eight i32×4 accumulators (lane = row·2 + token) into the i32×8 per (row, token) with lane =
//! sub-block that the tiles' float code reads, the same integers `dotBytes` would have summed, so
//! the results are the same bits as at every other level.
//!
//! llama.cpp's aarch64 repacked GEMMs (`ggml_gemm_q4_0_4x8_q8_0` and others in
//! ggml-cpu/arch/arm/repack.cpp) use the same 8-byte interleave, with four rows and four tokens.
const std = @import("std");
const common = @import("common.zig");

const U8x32 = common.U8x32;
const U8x64 = common.U8x64;
const I32x8 = common.I32x8;
const I8x16 = @Vector(16, i8);
const I32x4 = @Vector(4, i32);

/// Whether the GEMM tiles use `usmmla` and the layouts above (arm64 with i8mm).
pub const enabled = common.has_i8mm;

extern fn @"llvm.aarch64.neon.usmmla.v4i32.v16i8"(acc: I32x4, a: I8x16, b: I8x16) callconv(common.intrinsic) I32x4;

inline fn usmmla(acc: I32x4, a: I8x16, b: I8x16) I32x4 {
    if (comptime !enabled) @compileError("usmmla needs the i8mm extension");
    return @"llvm.aarch64.neon.usmmla.v4i32.v16i8"(acc, a, b);
}

/// One super-block's activations from `words` to paired words (layout above).
pub fn pairWords(words: *[8]U8x32) void {
    const W = @Vector(8, u32);
    inline for (0..4) |c| {
        const a: W = @bitCast(words[2 * c]);
        const b: W = @bitCast(words[2 * c + 1]);
        words[2 * c] = @bitCast(@shuffle(u32, a, b, [8]i32{ 0, ~@as(i32, 0), 1, ~@as(i32, 1), 2, ~@as(i32, 2), 3, ~@as(i32, 3) }));
        words[2 * c + 1] = @bitCast(@shuffle(u32, a, b, [8]i32{ 4, ~@as(i32, 4), 5, ~@as(i32, 5), 6, ~@as(i32, 6), 7, ~@as(i32, 7) }));
    }
}

/// `pairWords` on each of a row's `n_super` super-blocks (`qs` 32-byte aligned, in `words`).
pub fn pairWordsRow(qs: [*]i8, n_super: usize) void {
    for (0..n_super) |s| pairWords(@ptrCast(@alignCast(qs + 256 * s)));
}

/// The index of row h's word i of vector v among the 128 words of a row pair's `vals` (row pairs).
inline fn wordIndex(h: usize, comptime v: usize, i: usize) usize {
    return 32 * (v / 2) + 4 * i + 2 * h + v % 2;
}

/// Row h's vector v (`words` layout) of a row pair's `vals`.
pub inline fn rowVector(vals: *const [8]U8x64, h: usize, comptime v: usize) U8x32 {
    if (comptime !enabled) return @as(*const [2]U8x32, @ptrCast(&vals[v]))[h];
    const all: *const [128]u32 = @ptrCast(vals);
    var w: [8]u32 = undefined;
    for (&w, 0..) |*word, i| word.* = all[wordIndex(h, v, i)];
    return @bitCast(w);
}

/// Stores row h's vector v (`words` layout) into a row pair's `vals`.
pub inline fn setRowVector(vals: *[8]U8x64, h: usize, comptime v: usize, x: U8x32) void {
    if (comptime !enabled) {
        @as(*[2]U8x32, @ptrCast(&vals[v]))[h] = x;
        return;
    }
    const all: *[128]u32 = @ptrCast(vals);
    const w: [8]u32 = @bitCast(x);
    for (w, 0..) |word, i| all[wordIndex(h, v, i)] = word;
}

/// The integer sums of one row pair (`vals`, row pairs) × two tokens (x0, x1: a super-block's
/// 256 paired-word bytes each) over the values of pairs c0..c1-1: out[h][j] lane i is
/// Σ row h × token j over those values of sub-block i.
pub inline fn sums(comptime c0: usize, comptime c1: usize, vals: *const [8]U8x64, x0: [*]const i8, x1: [*]const i8) [2][2]I32x8 {
    const operands: *const [32]I8x16 = @ptrCast(vals);
    var acc: [8]I32x4 = @splat(@splat(0));
    inline for (c0..c1) |c| inline for (0..4) |m| {
        // Sub-blocks 2m and 2m+1 of both tokens; a 64-bit zip pairs the tokens per sub-block.
        const a: @Vector(2, u64) = @bitCast(x0[64 * c + 16 * m ..][0..16].*);
        const b: @Vector(2, u64) = @bitCast(x1[64 * c + 16 * m ..][0..16].*);
        const lo: I8x16 = @bitCast(@shuffle(u64, a, b, [2]i32{ 0, ~@as(i32, 0) }));
        const hi: I8x16 = @bitCast(@shuffle(u64, a, b, [2]i32{ 1, ~@as(i32, 1) }));
        acc[2 * m] = usmmla(acc[2 * m], operands[8 * c + 2 * m], lo);
        acc[2 * m + 1] = usmmla(acc[2 * m + 1], operands[8 * c + 2 * m + 1], hi);
    };
    return transpose(acc);
}

/// out[h][j] lane i = acc[i][2h + j]: two 4×4 transposes of 32-bit lanes.
inline fn transpose(acc: [8]I32x4) [2][2]I32x8 {
    var quarter: [2][4]I32x4 = undefined;
    inline for (0..2) |q| {
        const a = acc[4 * q ..][0..4];
        const lo01 = @shuffle(i32, a[0], a[1], [4]i32{ 0, ~@as(i32, 0), 1, ~@as(i32, 1) });
        const hi01 = @shuffle(i32, a[0], a[1], [4]i32{ 2, ~@as(i32, 2), 3, ~@as(i32, 3) });
        const lo23 = @shuffle(i32, a[2], a[3], [4]i32{ 0, ~@as(i32, 0), 1, ~@as(i32, 1) });
        const hi23 = @shuffle(i32, a[2], a[3], [4]i32{ 2, ~@as(i32, 2), 3, ~@as(i32, 3) });
        quarter[q][0] = @shuffle(i32, lo01, lo23, [4]i32{ 0, 1, ~@as(i32, 0), ~@as(i32, 1) });
        quarter[q][1] = @shuffle(i32, lo01, lo23, [4]i32{ 2, 3, ~@as(i32, 2), ~@as(i32, 3) });
        quarter[q][2] = @shuffle(i32, hi01, hi23, [4]i32{ 0, 1, ~@as(i32, 0), ~@as(i32, 1) });
        quarter[q][3] = @shuffle(i32, hi01, hi23, [4]i32{ 2, 3, ~@as(i32, 2), ~@as(i32, 3) });
    }
    var out: [2][2]I32x8 = undefined;
    inline for (0..4) |k| out[k / 2][k % 2] = std.simd.join(quarter[0][k], quarter[1][k]);
    return out;
}

/// Adds the sums of pairs c0..c1-1 for R panel rows × T tokens to iacc[r][t]. `pairs[p]` is the
/// `vals` of the row pair holding tile rows 2p, 2p+1, shifted by `h0` (the first row's half of
/// its pair, 1 only for a lone odd row: R == 1); `xs[t]` is token t's super-block (paired
/// words). A row or token without a partner runs against its neighbour or itself.
pub inline fn addTileSums(
    comptime R: usize,
    comptime T: usize,
    comptime c0: usize,
    comptime c1: usize,
    pairs: [(R + 1) / 2]*const [8]U8x64,
    h0: usize,
    xs: [T][*]const i8,
    iacc: *[R][T]I32x8,
) void {
    std.debug.assert(h0 == 0 or R == 1);
    inline for (0..(R + 1) / 2) |p| inline for (0..(T + 1) / 2) |q| {
        const s = sums(c0, c1, pairs[p], xs[2 * q], xs[@min(2 * q + 1, T - 1)]);
        inline for (0..2) |h| inline for (0..2) |j| {
            const r = 2 * p + h;
            const t = 2 * q + j;
            if (r < R and t < T) iacc[r][t] +%= if (R == 1) s[h0][j] else s[h][j];
        };
    };
}

test "usmmla sums match byte-by-byte products, and the row-pair layout round-trips" {
    if (!enabled) return error.SkipZigTest;
    var prng = common.testRng(31);
    const rand = prng.random();
    for (0..50) |_| {
        var rows: [2][8]U8x32 = undefined;
        var vals: [8]U8x64 = undefined;
        for (0..2) |h| inline for (0..8) |v| {
            var bytes: [32]u8 = undefined;
            rand.bytes(&bytes);
            rows[h][v] = bytes;
            setRowVector(&vals, h, v, bytes);
        };
        for (0..2) |h| inline for (0..8) |v| {
            try std.testing.expectEqual(rows[h][v], rowVector(&vals, h, v));
        };
        var toks: [2][8]U8x32 = undefined;
        var paired: [2][8]U8x32 align(32) = undefined;
        for (0..2) |j| {
            for (&toks[j]) |*v| {
                var bytes: [32]u8 = undefined;
                rand.bytes(&bytes);
                v.* = bytes;
            }
            paired[j] = toks[j];
            pairWords(&paired[j]);
        }
        inline for (.{ .{ 0, 4 }, .{ 0, 2 }, .{ 2, 4 } }) |range| {
            const got = sums(range[0], range[1], &vals, @ptrCast(&paired[0]), @ptrCast(&paired[1]));
            for (0..2) |h| for (0..2) |j| {
                var want: I32x8 = @splat(0);
                inline for (2 * range[0]..2 * range[1]) |v| want = common.dotBytesRef(want, rows[h][v], @bitCast(toks[j][v]));
                try std.testing.expectEqual(want, got[h][j]);
            };
        }
    }
}
