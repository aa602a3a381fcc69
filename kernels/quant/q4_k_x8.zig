//! Q4_K weights repacked at load for one-token matrix × vector: eight rows interleaved, so one
//! 32-byte vector holds 4 quants of each of 8 rows and a `dotBytes` lane is one row. The scales
//! then apply lane-wise (one integer multiply per sub-block for 8 rows) instead of a broadcast and
//! a multiply per sub-block and row: the natural layout's dot is bound by instructions issued
//! (~85 per row and block), this one by memory bandwidth.
//!
//! A repacked tensor is `ne1 / 8` row groups; a row group is `ne0 / 256` `Group`s in column order,
//! and a `Group` is one 256-value block of 8 rows, the same 1152 bytes as 8 Q4_K blocks:
//!
//!   d, dmin: [8]f16               row r's block scales
//!   scales:  [3][8]u32            word k (little-endian) of row r's 12 packed scale bytes at [k][r]
//!   qs:      [4][8][8]u32         [g][v][r] = row r's qs[32g+4v .. 32g+4v+4] (Q4_K byte order):
//!                                 low nibbles values 64g+4v.., high nibbles 64g+32+4v..
//!
//! Dot product with Q8_K activations (natural order), lanes = rows, per block:
//!   isum = Σ_g sc[2g]·Σ_v dot(qs[g][v] & 15, x[64g+4v..]) + sc[2g+1]·Σ_v dot(qs[g][v] >> 4, x[64g+32+4v..])
//!   y += dx·(d·isum − dmin·Σ_j m[j]·(bsums[2j] + bsums[2j+1]))
//! — the integers of `q4_k.blockDot`, so results agree with it exactly up to float rounding.
const std = @import("std");
const common = @import("common.zig");
const kquants = @import("kquants.zig");
const q4_k = @import("q4_k.zig");
const q8_k = @import("q8_k.zig");

const U8x32 = common.U8x32;
const U32x8 = @Vector(8, u32);
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

pub const rows = 8;
/// The format this layout repacks.
pub const Natural = q4_k;

pub const Group = extern struct {
    d: [8]f16,
    dmin: [8]f16,
    scales: [3][8]u32,
    qs: [4][8][8]u32,
};

comptime {
    std.debug.assert(@sizeOf(Group) == rows * @sizeOf(q4_k.Block));
}

/// Repacks rows 8·rg .. 8·rg+7 of a natural Q4_K tensor (`row_bytes` apart, `nb` blocks each)
/// into the `nb` groups at `dst`.
pub fn repackRowGroup(src: [*]const u8, row_bytes: usize, nb: usize, rg: usize, dst: [*]Group) void {
    for (0..nb) |b| {
        const g = &dst[b];
        for (0..rows) |r| {
            const blk: *const q4_k.Block = @ptrCast(@alignCast(src + (rows * rg + r) * row_bytes + b * @sizeOf(q4_k.Block)));
            g.d[r] = blk.d;
            g.dmin[r] = blk.dmin;
            for (0..3) |k| g.scales[k][r] = std.mem.readInt(u32, blk.scales[4 * k ..][0..4], .little);
            for (0..4) |gi| for (0..8) |v| {
                g.qs[gi][v][r] = std.mem.readInt(u32, blk.qs[32 * gi + 4 * v ..][0..4], .little);
            };
        }
    }
}

/// Row r's block back in Q4_K form (for `getRow` and the tests).
pub fn block(g: *const Group, r: usize) q4_k.Block {
    var blk: q4_k.Block = undefined;
    blk.d = g.d[r];
    blk.dmin = g.dmin[r];
    for (0..3) |k| std.mem.writeInt(u32, blk.scales[4 * k ..][0..4], g.scales[k][r], .little);
    for (0..4) |gi| for (0..8) |v| {
        std.mem.writeInt(u32, blk.qs[32 * gi + 4 * v ..][0..4], g.qs[gi][v][r], .little);
    };
    return blk;
}

/// Lanes = rows: the eight 6-bit scales and mins, each as one i32 vector (`q4_k.scalesAndMins`
/// done for 8 rows at once on the packed words).
const ScalesAndMins = struct { sc: [8]I32x8, m: [8]I32x8 };

inline fn scalesAndMins(g: *const Group) ScalesAndMins {
    const w = q4_k.scaleWords(U32x8, g.scales[0], g.scales[1], g.scales[2]);
    var out: ScalesAndMins = undefined;
    const byte: U32x8 = @splat(0xff);
    inline for (0..8) |j| {
        const shift: U32x8 = @splat(8 * (j % 4));
        out.sc[j] = @bitCast((w.sc[j / 4] >> shift) & byte);
        out.m[j] = @bitCast((w.m[j / 4] >> shift) & byte);
    }
    return out;
}

/// Dot products of the 8 rows of a row group (`nb` groups from `groups`) with one Q8_K row,
/// prefetching what lies `ahead` bytes past each group it reads.
pub fn dotRowGroup(groups: [*]const Group, act: q8_k.Row, nb: usize, ahead: usize) [rows]f32 {
    return dotRowGroupTokens(1, groups, .{act}, nb, ahead)[0];
}

/// `dotRowGroup` for T activation rows in one pass over the weights: each group's nibbles and
/// scales are unpacked once and serve every token. Each token's products are computed by the
/// same operations in the same order as `dotRowGroup` would for it alone, so they are the same
/// bits: a sequence's logits do not depend on what else is decoded with it.
pub fn dotRowGroupTokens(comptime T: usize, groups: [*]const Group, acts: [T]q8_k.Row, nb: usize, ahead: usize) [T][rows]f32 {
    @setEvalBranchQuota(20000); // the unrolled loops below
    var acc: [T]F32x8 = @splat(@splat(0));
    const nibble: U8x32 = @splat(15);
    for (0..nb) |b| {
        const g = &groups[b];
        common.prefetchSpan(@as([*]const u8, @ptrCast(g)) + ahead, @sizeOf(Group));
        const sm = scalesAndMins(g);
        var isum: [T]I32x8 = @splat(@splat(0));
        inline for (0..4) |gi| {
            var lo: [T]I32x8 = @splat(@splat(0));
            var hi: [T]I32x8 = @splat(@splat(0));
            inline for (0..8) |v| {
                const w: U8x32 = @bitCast(@as(U32x8, g.qs[gi][v]));
                const w_lo = w & nibble;
                const w_hi = w >> @splat(4);
                inline for (0..T) |t| {
                    const x = acts[t].qs + b * 256;
                    lo[t] = common.dotBytes(lo[t], w_lo, broadcastWord(x + 64 * gi + 4 * v));
                    hi[t] = common.dotBytes(hi[t], w_hi, broadcastWord(x + 64 * gi + 32 + 4 * v));
                }
            }
            inline for (0..T) |t| isum[t] +%= lo[t] *% sm.sc[2 * gi] +% hi[t] *% sm.sc[2 * gi + 1];
        }
        const d: F32x8 = @floatCast(@as(@Vector(8, f16), g.d));
        const dmin: F32x8 = @floatCast(@as(@Vector(8, f16), g.dmin));
        inline for (0..T) |t| {
            const act = acts[t];
            var imin: I32x8 = @splat(0);
            inline for (0..8) |j| {
                const s: i32 = @as(i32, act.bsums[b * 16 + 2 * j]) + act.bsums[b * 16 + 2 * j + 1];
                imin +%= sm.m[j] *% @as(I32x8, @splat(s));
            }
            const dx: F32x8 = @splat(act.d[b]);
            acc[t] = common.mulAdd(F32x8, @floatFromInt(isum[t]), d * dx, acc[t]);
            acc[t] = common.mulAdd(F32x8, @floatFromInt(imin), -dmin * dx, acc[t]);
        }
    }
    var out: [T][rows]f32 = undefined;
    inline for (0..T) |t| out[t] = acc[t];
    return out;
}

/// Four activation bytes repeated across a 32-byte vector (one `vpbroadcastd`).
inline fn broadcastWord(p: [*]const i8) common.I8x32 {
    const word = std.mem.readInt(u32, @as(*const [4]u8, @ptrCast(p)), .little);
    return @bitCast(@as(U32x8, @splat(word)));
}

/// Unpacks a group's 8 rows for the GEMM tile, as `q4_k.unpack` would: row r to panel row
/// first_row + r (an even row), block b.
pub fn unpackGroup(g: *const Group, panel: kquants.Panel, first_row: usize, b: usize) void {
    const nibble: U32x8 = @splat(0x0f0f0f0f);
    inline for (0..8) |v| {
        var halves: [8]U8x32 = undefined;
        inline for (0..4) |gi| {
            const w: U32x8 = g.qs[gi][v];
            halves[2 * gi] = @bitCast(w & nibble);
            halves[2 * gi + 1] = @bitCast((w >> @splat(4)) & nibble);
        }
        // Word r of halves[i] is sub-block i, values 4v.., of row r: the transpose gives row r's
        // interleaved vector v.
        const per_row = common.transposeWords(halves);
        inline for (0..rows) |r| panel.setVals(first_row + r, b, v, per_row[r]);
    }
    const sm = scalesAndMins(g);
    const d: F32x8 = @floatCast(@as(@Vector(8, f16), g.d));
    const dmin: F32x8 = @floatCast(@as(@Vector(8, f16), g.dmin));
    inline for (0..rows) |r| {
        var sc: I32x8 = undefined;
        var m: F32x8 = undefined;
        inline for (0..8) |j| {
            sc[j] = sm.sc[j][r];
            m[j] = @floatFromInt(sm.m[j][r]);
        }
        panel.setScales(first_row + r, b, sc, sc);
        panel.setD(first_row + r, b, @splat(d[r]), @as(F32x8, @splat(-dmin[r])) * m, @splat(0));
    }
}

test "Q4_K x8: repacking round-trips, the row-group dot matches blockDotRef, unpacking matches q4_k.unpack" {
    var prng = common.testRng(17);
    const rand = prng.random();
    const nb = 3;
    const n_rows = 16;
    var natural: [n_rows][nb]q4_k.Block = undefined;
    for (&natural) |*row| for (row) |*blk| {
        blk.* = q4_k.randomBlock(rand);
    };
    const row_bytes = nb * @sizeOf(q4_k.Block);
    var packed_groups: [n_rows / rows][nb]Group align(64) = undefined;
    for (0..n_rows / rows) |rg| repackRowGroup(@ptrCast(&natural), row_bytes, nb, rg, &packed_groups[rg]);

    const k = nb * 256;
    var x: [k]f32 = undefined;
    for (&x) |*v| v.* = rand.floatNorm(f32);
    var act_buf: [q8_k.Row.bytes(k)]u8 align(64) = undefined;
    const act = q8_k.Row.at(&act_buf, k, 0);
    q8_k.quantize(&x, k, act);
    var act2_buf: [q8_k.Row.bytes(k)]u8 align(64) = undefined;
    const act2 = q8_k.Row.at(&act2_buf, k, 0);
    for (&x) |*v| v.* = rand.floatNorm(f32) * 3;
    q8_k.quantize(&x, k, act2);

    for (0..n_rows / rows) |rg| {
        const got = dotRowGroup(&packed_groups[rg], act, nb, 0);
        // several tokens in one pass: each token's products are the lone token's, bit for bit
        const many = dotRowGroupTokens(3, &packed_groups[rg], .{ act2, act, act2 }, nb, 0);
        try std.testing.expectEqualSlices(f32, &got, &many[1]);
        try std.testing.expectEqualSlices(f32, &dotRowGroup(&packed_groups[rg], act2, nb, 0), &many[2]);
        for (0..rows) |r| {
            const row = &natural[rows * rg + r];
            var want: f32 = 0;
            for (row, 0..) |*blk, b| {
                want += q4_k.blockDotRef(blk, act.qs + b * 256, act.bsums + b * 16, act.d[b]);
                try std.testing.expectEqualSlices(u8, std.mem.asBytes(blk), std.mem.asBytes(&block(&packed_groups[rg][b], r)));
            }
            try std.testing.expectApproxEqAbs(want, got[r], 1e-5 * @max(1, @abs(want)));
        }
        for (0..nb) |b| {
            var pairs: [rows / 2]kquants.Pair = undefined;
            const panel = kquants.Panel{ .pairs = &pairs, .nb = 1 };
            unpackGroup(&packed_groups[rg][b], panel, 0, 0);
            for (0..rows) |r| {
                var want: kquants.Unpacked = undefined;
                q4_k.unpack(&natural[rows * rg + r][b], &want);
                try std.testing.expectEqualSlices(u8, std.mem.asBytes(&want), std.mem.asBytes(&panel.load(r, 0)));
            }
        }
    }
}
