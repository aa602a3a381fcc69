//! Tensor element types (GGML type ids) and the weight descriptor kernels receive.
const std = @import("std");

pub const GgmlType = enum(u32) {
    f32 = 0,
    f16 = 1,
    q4_0 = 2,
    q4_1 = 3,
    q5_0 = 6,
    q5_1 = 7,
    q8_0 = 8,
    q2_k = 10,
    q3_k = 11,
    q4_k = 12,
    q5_k = 13,
    q6_k = 14,
    iq2_xxs = 16,
    iq2_xs = 17,
    iq3_xxs = 18,
    iq1_s = 19,
    iq4_nl = 20,
    iq3_s = 21,
    iq2_s = 22,
    iq1_m = 29,
    iq4_xs = 23,
    bf16 = 30,
    mxfp4 = 39,
    _,

    /// Values per block and bytes per block, or null for types deltaq cannot compute with.
    pub fn layout(self: GgmlType) ?struct { block_values: usize, block_bytes: usize } {
        return switch (self) {
            .f32 => .{ .block_values = 1, .block_bytes = 4 },
            .f16, .bf16 => .{ .block_values = 1, .block_bytes = 2 },
            .q4_0 => .{ .block_values = 32, .block_bytes = 18 },
            .q4_1 => .{ .block_values = 32, .block_bytes = 20 },
            .q5_0 => .{ .block_values = 32, .block_bytes = 22 },
            .q5_1 => .{ .block_values = 32, .block_bytes = 24 },
            .q8_0 => .{ .block_values = 32, .block_bytes = 34 },
            .q2_k => .{ .block_values = 256, .block_bytes = 84 },
            .q3_k => .{ .block_values = 256, .block_bytes = 110 },
            .iq4_nl => .{ .block_values = 32, .block_bytes = 18 },
            .mxfp4 => .{ .block_values = 32, .block_bytes = 17 },
            .q4_k => .{ .block_values = 256, .block_bytes = 144 },
            .q5_k => .{ .block_values = 256, .block_bytes = 176 },
            .q6_k => .{ .block_values = 256, .block_bytes = 210 },
            .iq2_xxs => .{ .block_values = 256, .block_bytes = 66 },
            .iq2_xs => .{ .block_values = 256, .block_bytes = 74 },
            .iq3_xxs => .{ .block_values = 256, .block_bytes = 98 },
            .iq1_s => .{ .block_values = 256, .block_bytes = 50 },
            .iq3_s => .{ .block_values = 256, .block_bytes = 110 },
            .iq2_s => .{ .block_values = 256, .block_bytes = 82 },
            .iq1_m => .{ .block_values = 256, .block_bytes = 56 },
            .iq4_xs => .{ .block_values = 256, .block_bytes = 136 },
            _ => null,
        };
    }

    /// Bytes of one row of `ne0` values, or null when the type is unknown or `ne0` is not a whole
    /// number of blocks.
    pub fn rowBytes(self: GgmlType, ne0: usize) ?usize {
        const l = self.layout() orelse return null;
        if (ne0 % l.block_values != 0) return null;
        return ne0 / l.block_values * l.block_bytes;
    }
};

/// A 2-D weight matrix in memory the kernels may read: `ne1` rows of `ne0` values, rows
/// `row_bytes` apart (ne0 contiguous, as GGUF stores it) — or, when `repacked`, as copied at load
/// for one-token matmuls (`matmul.repack`): Q4_K rows in groups of 8 and Q3_K, Q2_K and IQ4_XS
/// rows in groups of 16 interleaved (`quant/q4_k_x8.zig`, `quant/*_x16.zig`; n rows still take
/// n·row_bytes), Q4_0 / Q8_0 rows of super-blocks (`quant/block32.zig`, same row size), or IQ3_S
/// rows of 4-bit value codes (`quant/iq3_s_codes.zig`; `row_bytes` is then their size).
pub const Weight = struct {
    data: [*]const u8,
    kind: GgmlType,
    ne0: usize,
    ne1: usize,
    row_bytes: usize,
    repacked: bool = false,

    /// Row r: of the repacked layouts, only IQ3_S's codes keep whole rows of blocks.
    pub fn row(self: Weight, r: usize) [*]const u8 {
        std.debug.assert(!self.repacked or self.kind == .iq3_s);
        return self.data + r * self.row_bytes;
    }

    /// The weight as F32 values; only valid when `kind == .f32`.
    pub fn f32s(self: Weight) [*]const f32 {
        std.debug.assert(self.kind == .f32);
        return @ptrCast(@alignCast(self.data));
    }
};

test "row sizes of every supported type" {
    try std.testing.expectEqual(@as(?usize, 2560 * 4), GgmlType.f32.rowBytes(2560));
    try std.testing.expectEqual(@as(?usize, 10 * 144), GgmlType.q4_k.rowBytes(2560));
    try std.testing.expectEqual(@as(?usize, 80 * 34), GgmlType.q8_0.rowBytes(2560));
    try std.testing.expectEqual(@as(?usize, null), GgmlType.q6_k.rowBytes(100));
    try std.testing.expectEqual(@as(?usize, null), @as(GgmlType, @fromBackingInt(@intCast(9))).rowBytes(32));
}
