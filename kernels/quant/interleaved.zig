//! What the row-interleaved layouts of Q2_K, Q3_K and IQ4_XS share (`*_x16.zig`): 16 rows
//! repacked side by side at load so that a 4-byte lane of a vector is 4 quants of one row. A
//! `dotBytesLanes` lane then sums one row, and per-row scales apply lane-wise, once per sub-block
//! for all 16 rows, instead of a broadcast and a multiply per row and sub-block as in the natural
//! layout's dots (which issue too many instructions to keep up with DRAM). With AVX-512 a vector
//! holds all 16 rows; AVX2 runs each operation as two 8-row halves.
//!
//! Each layout stores every field of its format as `[n][rows]u32`: entry [w][r] is word w
//! (little-endian, bytes 4w .. 4w+3) of that field in row r's block, so a group of 16 blocks takes
//! exactly their bytes. A layout file provides `Natural` (the format), `Group`, `repackRowGroup`,
//! `block` (row r's block back) and `dotRowGroup`, and runs `check` in its tests.
const std = @import("std");
const common = @import("common.zig");
const q8_k = @import("q8_k.zig");

pub const rows = 16;

pub const U32s = @Vector(rows, u32);
pub const I32s = @Vector(rows, i32);
pub const F32s = @Vector(rows, f32);
pub const U8s = @Vector(4 * rows, u8);
pub const I8s = @Vector(4 * rows, i8);
/// Two 16-bit words per lane, for `common.dotWordsLanes`.
pub const Words = @Vector(2 * rows, i16);

/// Copies row r's field `src` (4·n bytes) into column r of `dst`.
pub fn gather(comptime n: usize, dst: *[n][rows]u32, r: usize, src: *const [4 * n]u8) void {
    for (0..n) |w| dst[w][r] = std.mem.readInt(u32, src[4 * w ..][0..4], .little);
}

/// The inverse of `gather`.
pub fn scatter(comptime n: usize, src: *const [n][rows]u32, r: usize, dst: *[4 * n]u8) void {
    for (0..n) |w| std.mem.writeInt(u32, dst[4 * w ..][0..4], src[w][r], .little);
}

/// Four activation bytes repeated in every lane (one broadcast, folded into the multiply-add).
pub inline fn broadcastWord(p: [*]const i8) I8s {
    const word = std.mem.readInt(u32, @as(*const [4]u8, @ptrCast(p)), .little);
    return @bitCast(@as(U32s, @splat(word)));
}

/// Byte m of every lane moved to the lane's low byte, zeros above: one in-lane byte shuffle.
pub inline fn pickByte(v: U32s, comptime m: usize) U32s {
    const bytes: U8s = @bitCast(v);
    return @bitCast(@shuffle(u8, bytes, @as(U8s, @splat(0)), pickMask(m)));
}

fn pickMask(comptime m: usize) [4 * rows]i32 {
    @setEvalBranchQuota(10_000);
    var mask: [4 * rows]i32 = undefined;
    for (0..rows) |r| {
        mask[4 * r] = @intCast(4 * r + m);
        for (1..4) |i| mask[4 * r + i] = -1; // ~0: byte 0 of the zero vector
    }
    return mask;
}

/// Checks a layout file against its format: repacking round-trips through `block`, and the
/// row-group dot matches the sum of the format's `blockDotRef` over each row.
pub fn check(comptime X: type, seed: u64) !void {
    const F = X.Natural;
    var prng = common.testRng(seed);
    const rand = prng.random();
    const nb = 3;
    const n_rows = 2 * rows;
    var natural: [n_rows][nb]F.Block = undefined;
    for (&natural) |*row| for (row) |*blk| {
        blk.* = F.randomBlock(rand);
    };
    const row_bytes = nb * @sizeOf(F.Block);
    var groups: [n_rows / rows][nb]X.Group = undefined;
    for (0..n_rows / rows) |rg| X.repackRowGroup(@ptrCast(&natural), row_bytes, nb, rg, &groups[rg]);

    const k = nb * 256;
    var x: [k]f32 = undefined;
    for (&x, 0..) |*v, i| v.* = rand.floatNorm(f32) * @as(f32, if (i % 61 == 0) 8 else 1);
    // A block of near-extreme activations: byte products at the top of their range.
    for (x[256..512]) |*v| v.* = (0.9 + 0.1 * rand.float(f32)) * @as(f32, if (rand.boolean()) 1 else -1);
    var act_buf: [q8_k.Row.bytes(k)]u8 align(64) = undefined;
    const act = q8_k.Row.at(&act_buf, k, 0);
    q8_k.quantize(&x, k, act);

    for (0..n_rows / rows) |rg| {
        const got = X.dotRowGroup(&groups[rg], act, nb, 0);
        for (0..rows) |r| {
            const row = &natural[rows * rg + r];
            var want: f32 = 0;
            for (row, 0..) |*blk, b| {
                want += F.blockDotRef(blk, act.qs + b * 256, act.bsums + b * 16, act.d[b]);
                try std.testing.expectEqualSlices(u8, std.mem.asBytes(blk), std.mem.asBytes(&X.block(&groups[rg][b], r)));
            }
            try std.testing.expectApproxEqAbs(want, got[r], 1e-5 * @max(1, @abs(want)));
        }
    }
}

test "pickByte moves byte m of each lane down and clears the rest" {
    var v: [rows]u32 = undefined;
    for (&v, 0..) |*x, i| x.* = 0x04030201 +% @as(u32, @intCast(i)) * 0x10101010;
    inline for (0..4) |m| {
        const got: [rows]u32 = pickByte(v, m);
        for (0..rows) |i| try std.testing.expectEqual((v[i] >> @intCast(8 * m)) & 0xff, got[i]);
    }
}
