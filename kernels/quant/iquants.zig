//! What the grid-based IQ formats (IQ3_S, IQ3_XXS, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M) share.
//!
//! Each stores a block of 256 values as indices into a grid of small magnitudes (`iq_grids.zig`),
//! signs (or, for IQ1, signed grids plus a ±1/8 shift) and small odd integer scales, so that
//! every value is
//!
//!   value(i) = d · scale[i/16] · q(i)        q(i) an integer, |q| ≤ 62;  scale odd, 1..31
//!
//! with d a float per block: the stored f16 times a power of two (1, 1/4 or 1/8 by format), which
//! makes d·scale exactly ggml's per-group multiplier. A format decodes a block into `Decoded`
//! (the q values in natural order, the 16 scales, d); from there the work is shared:
//!
//!   dequantize  (d·scale)·q in f32, bit-identical to ggml's `dequantize_row_*`
//!   blockDot    one block against Q8_K activations (qs, bsums, dx), as llama.cpp pairs these
//!               types: d·dx·Σ_k scale_k·Σ_{16 values} q·x, the double sum in integers. The
//!               quants enter the unsigned×signed byte multiply as q + 64 (2..126); the offset
//!               comes back out through the activation's bsums: Σ q·x = Σ (q+64)·x − 64·Σ x.
//!   unpack      for the GEMM tiles (`kquants`, `scheme32` / `scheme16`): the same q + 64,
//!               interleaved, with the scales per sub-block half.
const std = @import("std");
const common = @import("common.zig");
const kquants = @import("kquants.zig");
const q8_k = @import("q8_k.zig");
pub const grids = @import("iq_grids.zig");

const U8x32 = common.U8x32;
const I8x32 = common.I8x32;
const I16x16 = common.I16x16;
const I32x8 = common.I32x8;
const F32x8 = common.F32x8;

pub const block_values = 256;

/// What the stored quants exceed q by in `blockDot` and `unpack`.
pub const offset = 64;

/// The GEMM tile's view of a format with one scale per 32 values, and with one per 16.
pub const scheme32: kquants.Scheme = .{ .scale_values = 32, .offset = offset, .max_val = offset + 62 };
pub const scheme16: kquants.Scheme = .{ .scale_values = 16, .offset = offset, .max_val = offset + 62 };

/// One block decoded: value(32c + j) = d · scales[(32c + j)/16] · q[c][j].
pub const Decoded = struct {
    q: [8]I8x32,
    scales: I16x16,
    d: f32,
};

/// The magnitudes of four 8-value grid entries, value 8l+j = byte j of entries[l]. (Built as a
/// vector of words: from an array LLVM assembles the vector one byte at a time.)
pub inline fn gridBytes8(comptime table: []const u64, idx: [4]u16) U8x32 {
    const e: @Vector(4, u64) = .{ table[idx[0]], table[idx[1]], table[idx[2]], table[idx[3]] };
    return @bitCast(e);
}

/// The magnitudes of eight 4-value grid entries, value 4k+j = byte j of entries[k].
pub inline fn gridBytes4(comptime table: []const u32, idx: [8]u16) U8x32 {
    var e: @Vector(8, u32) = undefined;
    inline for (0..8) |k| e[k] = table[idx[k]];
    return @bitCast(e);
}

/// Grid indices computed as one vector, then read back one at a time for the table loads. The
/// loads need each index in a general register: one load per index from memory, where taking
/// lanes out of a register costs two instructions each (LLVM vectorizes the index arithmetic
/// either way, so without the barrier it extracts).
pub inline fn spillIndices(comptime n: usize, v: @Vector(n, u16), buf: *[n]u16) void {
    buf.* = v;
    asm volatile (""
        :
        : [buf] "r" (buf),
        : .{ .memory = true });
}

/// Lane i = byte i / `per` of `bytes` shifted right by `bits`·(i % `per`), masked to `bits` bits,
/// moved to bits 8.. of a u16: the high index bits several grid indices share one byte for.
pub inline fn highBits(comptime n: usize, comptime per: usize, comptime bits: u4, bytes: @Vector(n / per, u8)) @Vector(n, u16) {
    const spread = comptime blk: {
        var m: [n]i32 = undefined;
        for (&m, 0..) |*e, i| e.* = @intCast(i / per);
        break :blk m;
    };
    const shifts = comptime blk: {
        var m: [n]u3 = undefined;
        for (&m, 0..) |*e, i| e.* = @intCast(bits * (i % per));
        break :blk m;
    };
    const b = @shuffle(u8, bytes, undefined, spread) >> shifts;
    return @as(@Vector(n, u16), b & @as(@Vector(n, u8), @splat((1 << bits) - 1))) << @splat(8);
}

/// `mag` with value i negated where bit i of `signs` is set.
pub inline fn applySigns(mag: U8x32, signs: u32) I8x32 {
    const negative: @Vector(32, bool) = @bitCast(signs);
    const m: I8x32 = @bitCast(mag);
    return @select(i8, negative, -%m, m);
}

/// Four sign bytes (as one word, byte l for values 8l..8l+7) from four 7-bit sign indices, bits
/// 7l..7l+6 of `indices`: each index selects `grids.ksigns[index]` (the 8th sign is the parity).
pub inline fn ksignWord(indices: u32) u32 {
    var out: u32 = 0;
    inline for (0..4) |l| out |= @as(u32, grids.ksigns[(indices >> (7 * l)) & 127]) << (8 * l);
    return out;
}

/// The 16 scales from one scale per 32 values (each used for both halves).
pub inline fn scalesPer32(s: @Vector(8, i16)) I16x16 {
    return @shuffle(i16, s, undefined, [16]i32{ 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7 });
}

pub fn dequantizeDecoded(dec: *const Decoded, out: *[256]f32) void {
    const sc: [16]i16 = dec.scales;
    inline for (0..16) |h| {
        const db: F32x8 = @splat(dec.d * @as(f32, @floatFromInt(sc[h])));
        const chunk: [32]i8 = dec.q[h / 2];
        inline for (0..2) |i| {
            const q: @Vector(8, i8) = chunk[16 * (h % 2) + 8 * i ..][0..8].*;
            out[16 * h + 8 * i ..][0..8].* = db * @as(F32x8, @floatFromInt(q));
        }
    }
}

/// One decoded block's contribution to a dot product with Q8_K activations, as 8 partial sums.
pub inline fn blockDotDecoded(dec: *const Decoded, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
    const sc: [16]i16 = dec.scales;
    const lo = common.duplicateWords(@as(@Vector(8, i16), sc[0..8].*));
    const hi = common.duplicateWords(@as(@Vector(8, i16), sc[8..16].*));
    var isum: [2]I32x8 = @splat(@splat(0));
    inline for (0..8) |c| {
        const w: U8x32 = @bitCast(dec.q[c] +% @as(I8x32, @splat(offset)));
        const prod = common.mulAddBytes(w, xq[32 * c ..][0..32].*);
        const scale = common.broadcastWords(if (c < 4) lo else hi, (2 * c) % 8, (2 * c + 1) % 8);
        isum[c % 2] = common.dotWords(isum[c % 2], prod, scale);
    }
    const correction = common.mulAddWords(dec.scales, bsums) *% @as(I32x8, @splat(offset));
    return @as(F32x8, @floatFromInt(isum[0] +% isum[1] -% correction)) * @as(F32x8, @splat(dec.d * dx));
}

/// The same sum one value at a time in 64-bit integers: the reference for `blockDot` and `unpack`.
pub fn blockDotDecodedRef(dec: *const Decoded, xq: [*]const i8, dx: f32) f32 {
    const sc: [16]i16 = dec.scales;
    var total: i64 = 0;
    for (0..16) |h| {
        const chunk: [32]i8 = dec.q[h / 2];
        var s: i64 = 0;
        for (0..16) |j| s += @as(i64, chunk[16 * (h % 2) + j]) * xq[16 * h + j];
        total += sc[h] * s;
    }
    return dec.d * dx * @as(f32, @floatFromInt(total));
}

/// A decoded block for the GEMM tile (`kquants`, `scheme32` or `scheme16`).
pub fn unpackDecoded(dec: *const Decoded, out: *kquants.Unpacked) void {
    var chunks: [8]U8x32 = undefined;
    inline for (0..8) |c| chunks[c] = @bitCast(dec.q[c] +% @as(I8x32, @splat(offset)));
    out.vals = kquants.interleaveVals(chunks);
    const sc: @Vector(16, i32) = dec.scales;
    out.scales_lo = @shuffle(i32, sc, undefined, [8]i32{ 0, 2, 4, 6, 8, 10, 12, 14 });
    out.scales_hi = @shuffle(i32, sc, undefined, [8]i32{ 1, 3, 5, 7, 9, 11, 13, 15 });
    out.d = @splat(dec.d);
    out.mins = @splat(0);
    out.mins_hi = @splat(0);
}

/// The kernel interface of format file F (what `matmul` and `kquants.checkFormat` call): F
/// provides `Block`, `scheme`, `decode`, `dequantizeRef` and `setD`, and may provide its own
/// `blockDot` in place of the decode-then-multiply one.
pub fn Kernels(comptime F: type) type {
    return struct {
        pub const Block = F.Block;
        pub const block_values = 256;
        pub const scheme = F.scheme;
        pub const dequantizeRef = F.dequantizeRef;
        pub const setD = F.setD;

        pub fn dequantize(blk: *const Block, out: *[256]f32) void {
            dequantizeDecoded(&F.decode(blk), out);
        }

        pub inline fn blockDot(blk: *const Block, xq: [*]const i8, bsums: I16x16, dx: f32) F32x8 {
            if (comptime @hasDecl(F, "blockDot")) return F.blockDot(blk, xq, bsums, dx);
            return blockDotDecoded(&F.decode(blk), xq, bsums, dx);
        }

        pub fn blockDotRef(blk: *const Block, xq: [*]const i8, _: [*]const i16, dx: f32) f32 {
            return blockDotDecodedRef(&F.decode(blk), xq, dx);
        }

        pub fn unpack(blk: *const Block, out: *kquants.Unpacked) void {
            unpackDecoded(&F.decode(blk), out);
        }

        /// A random block: random bytes, then a small positive d.
        pub fn randomBlock(rand: std.Random) Block {
            var blk: Block = undefined;
            rand.bytes(std.mem.asBytes(&blk));
            F.setD(&blk, @floatCast(0.0005 + rand.float(f32) * 0.002));
            return blk;
        }
    };
}

/// The checks every IQ format runs: `kquants.checkFormat` (dequantize against the scalar
/// reference bit for bit, the integer scheme against float products, blockDot, dotRows and
/// unpack), plus blocks at the extremes of every field.
pub fn checkFormat(comptime F: type, seed: u64) !void {
    const K = Kernels(F);
    try kquants.checkFormat(K, seed);
    for ([_]u8{ 0x00, 0xff, 0x55, 0xaa }) |fill| {
        var blk: F.Block = undefined;
        @memset(std.mem.asBytes(&blk), fill);
        F.setD(&blk, 0.001);
        var ref: [256]f32 = undefined;
        var got: [256]f32 = undefined;
        F.dequantizeRef(&blk, &ref);
        K.dequantize(&blk, &got);
        try std.testing.expectEqualSlices(f32, &ref, &got);
    }
}

test "sign helpers" {
    try std.testing.expectEqual(@as(u8, 0x81), grids.ksigns[1]);
    for (0..128) |i| {
        const parity: usize = @popCount(@as(u8, @intCast(i))) & 1;
        try std.testing.expectEqual(@as(u8, @intCast(i | (parity << 7))), grids.ksigns[i]);
    }
    try std.testing.expectEqual(@as(u32, 0x03_82_81_00), ksignWord(0 | (1 << 7) | (2 << 14) | (3 << 21)));
    const mags: U8x32 = @splat(5);
    const s: [32]i8 = applySigns(mags, 0x8000_0001);
    for (s, 0..) |v, i| try std.testing.expectEqual(@as(i8, if (i == 0 or i == 31) -5 else 5), v);
}

test {
    _ = q8_k;
}
