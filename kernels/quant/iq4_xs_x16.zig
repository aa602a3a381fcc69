//! IQ4_XS weights repacked at load for one-token matrix × vector, 16 rows interleaved (the scheme
//! is `interleaved.zig`'s). A `Group` is one 256-value block of 16 rows:
//!
//!   qs:       [32][16]u32  [w][r] = row r's qs[4w .. 4w+4]: table indices of sub-block i = w/4,
//!                          values 32i+4(w%4).. (low nibbles) and 32i+16+4(w%4).. (high nibbles)
//!   scales_l: [1][16]u32   row r's 4 scales_l bytes
//!   scales_h: [16]u16, d: [16]f16
//!
//! Dot product with Q8_K activations (natural order), lanes = rows, per sub-block i: the table
//! values + 128 as unsigned bytes (one in-lane shuffle per 64 indices), so
//!   isum_i = −128·(bsums[2i] + bsums[2i+1]) + Σ dot(values[idx] + 128, x)
//!   y += dx·d·Σ_i (ls_i − 32)·isum_i
//! — the integers of `iq4_xs.blockDot`, so results agree with it up to float rounding.
const std = @import("std");
const common = @import("common.zig");
const il = @import("interleaved.zig");
const iq4_xs = @import("iq4_xs.zig");
const q8_k = @import("q8_k.zig");

pub const rows = il.rows;
pub const Natural = iq4_xs;

const U32s = il.U32s;
const I32s = il.I32s;
const F32s = il.F32s;

pub const Group = extern struct {
    qs: [32][rows]u32,
    scales_l: [1][rows]u32,
    scales_h: [rows]u16,
    d: [rows]f16,
};

comptime {
    std.debug.assert(@sizeOf(Group) == rows * @sizeOf(iq4_xs.Block));
}

/// Repacks rows 16·rg .. 16·rg+15 of a natural IQ4_XS tensor (`row_bytes` apart, `nb` blocks
/// each) into the `nb` groups at `dst`.
pub fn repackRowGroup(src: [*]const u8, row_bytes: usize, nb: usize, rg: usize, dst: [*]Group) void {
    for (0..nb) |b| for (0..rows) |r| {
        const blk: *const iq4_xs.Block = @ptrCast(@alignCast(src + (rows * rg + r) * row_bytes + b * @sizeOf(iq4_xs.Block)));
        il.gather(32, &dst[b].qs, r, &blk.qs);
        il.gather(1, &dst[b].scales_l, r, &blk.scales_l);
        dst[b].scales_h[r] = blk.scales_h;
        dst[b].d[r] = blk.d;
    };
}

/// Row r's block back in IQ4_XS form (for `getRow`, the GEMM's unpacking and the tests).
pub fn block(g: *const Group, r: usize) iq4_xs.Block {
    var blk: iq4_xs.Block = undefined;
    il.scatter(32, &g.qs, r, &blk.qs);
    il.scatter(1, &g.scales_l, r, &blk.scales_l);
    blk.scales_h = g.scales_h[r];
    blk.d = g.d[r];
    return blk;
}

/// The table values + 128 (as bytes: the values with their top bit flipped).
const offset_values = blk: {
    var t: [16]i8 = undefined;
    for (&t, iq4_xs.values) |*o, v| o.* = @bitCast(@as(u8, @bitCast(v)) ^ 0x80);
    break :blk t;
};

/// Dot products of the 16 rows of a row group (`nb` groups from `groups`) with one Q8_K row,
/// prefetching what lies `ahead` bytes past each group it reads.
pub fn dotRowGroup(groups: [*]const Group, act: q8_k.Row, nb: usize, ahead: usize) [rows]f32 {
    @setEvalBranchQuota(10_000); // the unrolled sub-block loops
    var acc: F32s = @splat(0);
    const nibble: U32s = @splat(0x0f0f0f0f);
    for (0..nb) |b| {
        const g = &groups[b];
        common.prefetchSpan(@as([*]const u8, @ptrCast(g)) + ahead, @sizeOf(Group));
        const x = act.qs + b * 256;
        // −128·Σx over each 32-value sub-block, once per block.
        const bs: @Vector(16, i32) = act.bsums[b * 16 ..][0..16].*;
        const even = @shuffle(i32, bs, undefined, [8]i32{ 0, 2, 4, 6, 8, 10, 12, 14 });
        const odd = @shuffle(i32, bs, undefined, [8]i32{ 1, 3, 5, 7, 9, 11, 13, 15 });
        const offsets: [8]i32 = (even + odd) * @as(@Vector(8, i32), @splat(-128));
        const sl: U32s = g.scales_l[0];
        const sh: U32s = g.scales_h;
        var isum: I32s = @splat(0);
        inline for (0..8) |i| {
            var part: I32s = @splat(offsets[i]);
            inline for (0..4) |t| {
                const v: U32s = g.qs[4 * i + t];
                const lo = common.lookup16Wide(offset_values, @bitCast(v & nibble));
                const hi = common.lookup16Wide(offset_values, @bitCast((v >> @splat(4)) & nibble));
                part = common.dotBytesWideLanes(rows, part, @bitCast(lo), il.broadcastWord(x + 32 * i + 4 * t));
                part = common.dotBytesWideLanes(rows, part, @bitCast(hi), il.broadcastWord(x + 32 * i + 16 + 4 * t));
            }
            const low = (sl >> @splat(4 * i)) & @as(U32s, @splat(15));
            const high = (sh >> @splat(2 * i)) & @as(U32s, @splat(3));
            const scale = @as(I32s, @bitCast(low | (high << @splat(4)))) - @as(I32s, @splat(32));
            isum +%= part *% scale;
        }
        const d: F32s = @floatCast(@as(@Vector(rows, f16), g.d));
        acc = common.mulAdd(F32s, @floatFromInt(isum), d * @as(F32s, @splat(act.d[b])), acc);
    }
    return acc;
}

test "IQ4_XS x16: repacking round-trips and the row-group dot matches blockDotRef" {
    try il.check(@This(), 20);
}
