//! Q3_K weights repacked at load for one-token matrix × vector, 16 rows interleaved (the scheme
//! is `interleaved.zig`'s). A `Group` is one 256-value block of 16 rows:
//!
//!   qs:     [16][16]u32   [w][r] = row r's qs[4w .. 4w+4]       (2 low bits of 16 values)
//!   hmask:  [8][16]u32    [u][r] = row r's hmask[4u .. 4u+4]    (high bits)
//!   scales: [3][16]u32    [k][r] = word k of row r's 12 packed scale bytes
//!   d:      [16]f16       row r's block scale
//!
//! Dot product with Q8_K activations (natural order), lanes = rows, for sub-block k (values
//! 16k .. 16k+15; chunk c = k/2 = 4n+j; u = 4·(k%2) + i):
//!   isum_k = −4·bsums[k] + Σ_{i<4} dot((qs[8n+u] >> 2j) & 3 | bit c of hmask[u] << 2, x[32c+4u ..])
//!   y += dx·d·Σ_k s_k·isum_k,   s_k = sc[k] − 32
//! where each isum_k fits 16 bits (|isum_k| ≤ 16·4·127), so one `vpdpwssd` multiplies it by s_k
//! and accumulates. These are the integers of `q3_k.blockDot`: results agree with it up to float
//! rounding.
const std = @import("std");
const common = @import("common.zig");
const il = @import("interleaved.zig");
const q3_k = @import("q3_k.zig");
const q8_k = @import("q8_k.zig");

pub const rows = il.rows;
pub const Natural = q3_k;

const U32s = il.U32s;
const I32s = il.I32s;
const F32s = il.F32s;

pub const Group = extern struct {
    qs: [16][rows]u32,
    hmask: [8][rows]u32,
    scales: [3][rows]u32,
    d: [rows]f16,
};

comptime {
    std.debug.assert(@sizeOf(Group) == rows * @sizeOf(q3_k.Block));
}

/// Repacks rows 16·rg .. 16·rg+15 of a natural Q3_K tensor (`row_bytes` apart, `nb` blocks each)
/// into the `nb` groups at `dst`.
pub fn repackRowGroup(src: [*]const u8, row_bytes: usize, nb: usize, rg: usize, dst: [*]Group) void {
    for (0..nb) |b| for (0..rows) |r| {
        const blk: *const q3_k.Block = @ptrCast(@alignCast(src + (rows * rg + r) * row_bytes + b * @sizeOf(q3_k.Block)));
        il.gather(16, &dst[b].qs, r, &blk.qs);
        il.gather(8, &dst[b].hmask, r, &blk.hmask);
        il.gather(3, &dst[b].scales, r, &blk.scales);
        dst[b].d[r] = blk.d;
    };
}

/// Row r's block back in Q3_K form (for `getRow`, the GEMM's unpacking and the tests).
pub fn block(g: *const Group, r: usize) q3_k.Block {
    var blk: q3_k.Block = undefined;
    il.scatter(16, &g.qs, r, &blk.qs);
    il.scatter(8, &g.hmask, r, &blk.hmask);
    il.scatter(3, &g.scales, r, &blk.scales);
    blk.d = g.d[r];
    return blk;
}

/// Lanes = rows: the sixteen scales s_k (−32 applied) as 16-bit words, each lane [s_k, 0]: the
/// form in which one `dotWordsLanes` multiplies a lane's 16-bit sum by its scale.
inline fn scales(g: *const Group) [16]il.Words {
    const w = q3_k.scaleWords(U32s, g.scales[0], g.scales[1], g.scales[2]);
    const minus32 = comptime blk: {
        var v: [2 * rows]i16 = undefined;
        for (0..rows) |r| v[2 * r .. 2 * r + 2].* = .{ 32, 0 };
        break :blk v;
    };
    var out: [16]il.Words = undefined;
    inline for (0..16) |k| out[k] = @as(il.Words, @bitCast(il.pickByte(w[k / 4], k % 4))) -% minus32;
    return out;
}

/// The unsigned 3-bit quants q2 + 4h of 4 values of every row: chunk c's values 4u .. 4u+3.
inline fn quants(g: *const Group, comptime c: usize, comptime u: usize) U32s {
    const bits: U32s = g.qs[8 * (c / 4) + u];
    const low = (bits >> @splat(2 * (c % 4))) & @as(U32s, @splat(0x03030303));
    const h: U32s = g.hmask[u];
    const high = if (c >= 2) (h >> @splat(c - 2)) else (h << @splat(2 - c));
    return low | (high & @as(U32s, @splat(0x04040404)));
}

/// Dot products of the 16 rows of a row group (`nb` groups from `groups`) with one Q8_K row,
/// prefetching what lies `ahead` bytes past each group it reads.
pub fn dotRowGroup(groups: [*]const Group, act: q8_k.Row, nb: usize, ahead: usize) [rows]f32 {
    @setEvalBranchQuota(10_000); // the unrolled sub-block loops
    var acc: F32s = @splat(0);
    for (0..nb) |b| {
        const g = &groups[b];
        common.prefetchSpan(@as([*]const u8, @ptrCast(g)) + ahead, @sizeOf(Group));
        const x = act.qs + b * 256;
        const s = scales(g);
        // The −4 offsets of the 16 sub-blocks, once per block rather than per sub-block.
        const offsets: [16]i32 = @as(@Vector(16, i32), act.bsums[b * 16 ..][0..16].*) * @as(@Vector(16, i32), @splat(-4));
        var isum: I32s = @splat(0);
        inline for (0..16) |k| {
            const c = k / 2;
            var part: I32s = @splat(offsets[k]);
            inline for (0..4) |i| {
                const u = 4 * (k % 2) + i;
                part = common.dotBytesLanes(rows, part, @bitCast(quants(g, c, u)), il.broadcastWord(x + 32 * c + 4 * u));
            }
            isum = common.dotWordsLanes(rows, isum, @bitCast(part), s[k]);
        }
        const d: F32s = @floatCast(@as(@Vector(rows, f16), g.d));
        acc = common.mulAdd(F32s, @floatFromInt(isum), d * @as(F32s, @splat(act.d[b])), acc);
    }
    return acc;
}

test "Q3_K x16: repacking round-trips and the row-group dot matches blockDotRef" {
    try il.check(@This(), 18);
}
