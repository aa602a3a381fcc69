//! Q4_0: 32 values in 18 bytes, `{f16 d; u8 qs[16]}`, value = d·(n − 8) for a 4-bit code n.
//! Byte j holds value j in its low nibble and value j + 16 in its high nibble.
//!
//! Quantization is ggml's `quantize_row_q4_0_ref` (which the CPU backend's `quantize_row_q4_0`
//! calls), reproduced operation for operation so the codes are bit-identical:
//!   max = the first value of largest magnitude (sign kept),  d = max / −8,  id = 1/d (0 if d = 0)
//!   n = min(15, trunc(x·id + 8.5))
//! The largest-magnitude value maps to code 0 exactly and nothing rounds below it.
//!
//! Used for the KV cache (`attention.zig`: `quantizeRow` stores K and V rows, `widen` reads them
//! back); the Q4_0 *weight* dot products against Q8_0 activations are a separate concern.
const std = @import("std");

pub const Block = extern struct {
    d: f16 align(1),
    qs: [16]u8,
};

comptime {
    std.debug.assert(@sizeOf(Block) == 18);
}

pub const block_values = 32;
pub const block_bytes = 18;

/// One block of 32 values, ggml's reference rounding.
pub fn quantizeBlock(x: *const [32]f32, out: *Block) void {
    var amax: f32 = 0;
    var max: f32 = 0;
    for (x) |v| {
        if (amax < @abs(v)) {
            amax = @abs(v);
            max = v;
        }
    }
    const d = max / -8.0;
    const id: f32 = if (d != 0) 1.0 / d else 0;
    out.d = @floatCast(d);
    for (0..16) |j| {
        const lo = code(x[j] * id);
        const hi = code(x[j + 16] * id);
        out.qs[j] = lo | (hi << 4);
    }
}

/// min(15, (int8_t)(v + 8.5f)) as ggml writes it: the add in f32, then truncation toward zero.
inline fn code(v: f32) u8 {
    const t: i32 = @intFromFloat(@trunc(v + 8.5));
    return @intCast(@min(15, @max(0, t)));
}

/// `k / 32` blocks from `k` floats (k a multiple of 32).
pub fn quantizeRow(x: [*]const f32, k: usize, out: [*]u8) void {
    const blocks: [*]align(1) Block = @ptrCast(out);
    for (0..k / 32) |b| quantizeBlock(x[32 * b ..][0..32], &blocks[b]);
}

pub fn dequantizeRef(blk: *const Block, out: *[32]f32) void {
    const d: f32 = blk.d;
    for (0..16) |j| {
        out[j] = d * @as(f32, @floatFromInt(@as(i32, blk.qs[j] & 0x0f) - 8));
        out[j + 16] = d * @as(f32, @floatFromInt(@as(i32, blk.qs[j] >> 4) - 8));
    }
}

/// L consecutive values (L = 8 or 16) of the block starting at value `at` (a multiple of L), as
/// f32: the low nibbles of bytes at % 16 … hold values below 16, the high nibbles those above.
pub inline fn widen(comptime L: usize, blk: [*]const u8, at: usize) @Vector(L, f32) {
    const d: f32 = @as(*align(1) const f16, @ptrCast(blk)).*;
    const bytes: @Vector(L, u8) = (blk + 2 + at % 16)[0..L].*;
    const codes = if (at < 16) bytes & @as(@Vector(L, u8), @splat(0x0f)) else bytes >> @splat(4);
    const values = @as(@Vector(L, i32), codes) - @as(@Vector(L, i32), @splat(8));
    return @as(@Vector(L, f32), @floatFromInt(values)) * @as(@Vector(L, f32), @splat(d));
}

test "Q4_0 quantization keeps ggml's rounding and widening matches the reference" {
    var prng = std.Random.DefaultPrng.init(40);
    const rand = prng.random();
    var x: [32]f32 = undefined;
    for (0..200) |iter| {
        for (&x) |*v| v.* = rand.floatNorm(f32) * 3;
        if (iter % 5 == 0) @memset(&x, 0);
        if (iter % 7 == 1) x[9] = -x[3] - 20; // a negative extreme
        if (iter % 11 == 2) {
            // ties: two values of equal magnitude and opposite sign, the first one wins
            for (&x) |*v| v.* *= 0.1;
            x[4] = 10;
            x[20] = -10;
        }
        var blk: Block = undefined;
        quantizeBlock(&x, &blk);
        // the scalar definition, written out again
        var amax: f32 = 0;
        var max: f32 = 0;
        for (x) |v| {
            if (amax < @abs(v)) {
                amax = @abs(v);
                max = v;
            }
        }
        const d = max / -8.0;
        const id: f32 = if (d != 0) 1.0 / d else 0;
        try std.testing.expectEqual(@as(f16, @floatCast(d)), blk.d);
        for (0..32) |i| {
            const v = x[i] * id + 8.5;
            const want: u8 = @intCast(@min(15, @as(i32, @intFromFloat(@trunc(v)))));
            const got = if (i < 16) blk.qs[i] & 0x0f else blk.qs[i - 16] >> 4;
            try std.testing.expectEqual(want, got);
        }
        var ref: [32]f32 = undefined;
        dequantizeRef(&blk, &ref);
        const bytes: [*]const u8 = @ptrCast(&blk);
        inline for (.{ 8, 16 }) |L| {
            var at: usize = 0;
            while (at < 32) : (at += L) {
                const got: [L]f32 = widen(L, bytes, at);
                try std.testing.expectEqualSlices(f32, ref[at..][0..L], &got);
            }
        }
        if (iter % 11 == 2) try std.testing.expectEqual(@as(f32, 10), -8 * @as(f32, blk.d));
    }
}
