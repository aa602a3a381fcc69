//! Q2_K weights repacked at load for one-token matrix × vector, 16 rows interleaved (the scheme
//! is `interleaved.zig`'s). A `Group` is one 256-value block of 16 rows:
//!
//!   qs:     [16][16]u32   [w][r] = row r's qs[4w .. 4w+4]       (2-bit quants of 16 values)
//!   scales: [4][16]u32    [q][r] = row r's scales[4q .. 4q+4]   (scale, min of sub-blocks 4q ..)
//!   d:      [16]f16, dmin: [16]f16
//!
//! Dot product with Q8_K activations (natural order), lanes = rows, for sub-block k (values
//! 16k .. 16k+15; chunk c = k/2 = 4n+j; u = 4·(k%2) + i):
//!   isum_k = Σ_{i<4} dot((qs[8n+u] >> 2j) & 3, x[32c+4u ..])          (fits 16 bits: ≤ 16·3·127)
//!   y += dx·(d·Σ_k sc_k·isum_k − dmin·Σ_k m_k·bsums[k])
//! with sc_k·isum_k one `vpdpwssd` per sub-block (lanes [isum_k, 0] · [sc_k, 0]) and the mins one
//! per two sub-blocks (lanes [m_k, m_k+1] · [bsums[k], bsums[k+1]]): the integers of
//! `q2_k.blockDot`, so results agree with it up to float rounding.
const std = @import("std");
const common = @import("common.zig");
const il = @import("interleaved.zig");
const q2_k = @import("q2_k.zig");
const q8_k = @import("q8_k.zig");

pub const rows = il.rows;
pub const Natural = q2_k;

const U32s = il.U32s;
const I32s = il.I32s;
const F32s = il.F32s;

pub const Group = extern struct {
    qs: [16][rows]u32,
    scales: [4][rows]u32,
    d: [rows]f16,
    dmin: [rows]f16,
};

comptime {
    std.debug.assert(@sizeOf(Group) == rows * @sizeOf(q2_k.Block));
}

/// Repacks rows 16·rg .. 16·rg+15 of a natural Q2_K tensor (`row_bytes` apart, `nb` blocks each)
/// into the `nb` groups at `dst`.
pub fn repackRowGroup(src: [*]const u8, row_bytes: usize, nb: usize, rg: usize, dst: [*]Group) void {
    for (0..nb) |b| for (0..rows) |r| {
        const blk: *const q2_k.Block = @ptrCast(@alignCast(src + (rows * rg + r) * row_bytes + b * @sizeOf(q2_k.Block)));
        il.gather(16, &dst[b].qs, r, &blk.qs);
        il.gather(4, &dst[b].scales, r, &blk.scales);
        dst[b].d[r] = blk.d;
        dst[b].dmin[r] = blk.dmin;
    };
}

/// Row r's block back in Q2_K form (for `getRow`, the GEMM's unpacking and the tests).
pub fn block(g: *const Group, r: usize) q2_k.Block {
    var blk: q2_k.Block = undefined;
    il.scatter(16, &g.qs, r, &blk.qs);
    il.scatter(4, &g.scales, r, &blk.scales);
    blk.d = g.d[r];
    blk.dmin = g.dmin[r];
    return blk;
}

/// Dot products of the 16 rows of a row group (`nb` groups from `groups`) with one Q8_K row,
/// prefetching what lies `ahead` bytes past each group it reads.
pub fn dotRowGroup(groups: [*]const Group, act: q8_k.Row, nb: usize, ahead: usize) [rows]f32 {
    @setEvalBranchQuota(10_000); // the unrolled sub-block loops
    var acc: F32s = @splat(0);
    const low4: U32s = @splat(0x000f000f);
    for (0..nb) |b| {
        const g = &groups[b];
        common.prefetchSpan(@as([*]const u8, @ptrCast(g)) + ahead, @sizeOf(Group));
        const x = act.qs + b * 256;
        var isum: I32s = @splat(0);
        var imin: I32s = @splat(0);
        inline for (0..8) |p| {
            // Scale bytes k = 2p, 2p+1 into the low bytes of a lane's two words.
            const sm: U32s = g.scales[p / 2];
            const pair = (il.pickByte(sm, 2 * (p % 2)) | (il.pickByte(sm, 2 * (p % 2) + 1) << @splat(16)));
            const bsums = std.mem.readInt(u32, @ptrCast(act.bsums + b * 16 + 2 * p), .little);
            imin = common.dotWordsLanes(rows, imin, @bitCast((pair >> @splat(4)) & low4), @bitCast(@as(U32s, @splat(bsums))));
            inline for (0..2) |h| {
                const k = 2 * p + h;
                const c = k / 2;
                var part: I32s = @splat(0);
                inline for (0..4) |i| {
                    const u = 4 * h + i;
                    const bits: U32s = g.qs[8 * (c / 4) + u];
                    const q = (bits >> @splat(2 * (c % 4))) & @as(U32s, @splat(0x03030303));
                    part = common.dotBytesLanes(rows, part, @bitCast(q), il.broadcastWord(x + 32 * c + 4 * u));
                }
                const sc = (if (h == 0) pair else pair >> @splat(16)) & @as(U32s, @splat(0x0f));
                isum = common.dotWordsLanes(rows, isum, @bitCast(part), @bitCast(sc));
            }
        }
        const dx: F32s = @splat(act.d[b]);
        const d: F32s = @floatCast(@as(@Vector(rows, f16), g.d));
        const dmin: F32s = @floatCast(@as(@Vector(rows, f16), g.dmin));
        acc = common.mulAdd(F32s, @floatFromInt(isum), d * dx, acc);
        acc = common.mulAdd(F32s, @floatFromInt(imin), -dmin * dx, acc);
    }
    return acc;
}

test "Q2_K x16: repacking round-trips and the row-group dot matches blockDotRef" {
    try il.check(@This(), 19);
}
