//! Matrix × activations for every weight type, and embedding-row lookup.
//!
//!   matmul(ctx, w, x, x_stride, y, y_stride, n_tokens)   y[t][r] = Σ_c w[r][c] · x[t][c]
//!   getRow(w, r, out)                                     out[c]  = w[r][c] as f32
//!
//! `w` is `ne1` rows of `ne0` values (ne0 contiguous, GGUF order); x rows hold ne0 floats,
//! y rows ne1 floats, each `*_stride` floats apart.
//!
//! Numerics follow llama.cpp's CPU backend: the activations are first converted to the weight
//! type's dot-product partner (its `vec_dot_type`) — Q8_K (blocks of 256) for Q2_K…Q6_K and
//! IQ4_XS, Q8_0 for Q8_0/Q4_0/Q5_0/IQ4_NL/MXFP4, Q8_1 for
//! Q4_1/Q5_1, values rounded to F16/BF16 for F16/BF16, plain f32 for
//! F32 — and the products are integer (quantized types) or f32 (float types). The formats live in
//! `quant/`; `Format` names each quantized type's file.
//!
//! Work is split over the context's pool by rows of `w` (dynamic chunks). One token (decode) is
//! memory-bound: each format's `dotRows` streams several weight rows at once against the quantized
//! activation. Q4_K, Q3_K, Q2_K and IQ4_XS weights repacked at load (`repack`, `quant/*_x8.zig`,
//! `quant/*_x16.zig`) go 8 or 16 interleaved rows at a time, Q4_0 and Q8_0 eight blocks of a row
//! at a time (`block32`'s super-blocks), IQ3_S as 4-bit value codes (`quant/iq3_s_codes.zig`,
//! no grid lookups): the natural layouts' dots issue too many instructions to keep up with DRAM. Several tokens (prompt) use tiles of rows × tokens so one decoded weight chunk
//! serves several tokens: K-quant rows are first unpacked once per token chunk into a per-worker
//! panel (`kquants.Panel`, `block32.Panel` for the 32-value block
//! formats), then every tile of the chunk reads the panel; float weights are read directly. Token chunks are sized so their activations stay in L2.
const std = @import("std");
const types = @import("types.zig");
const pool_mod = @import("pool.zig");
const root = @import("root.zig");
const os = @import("os.zig");
const common = @import("quant/common.zig");
const q8_k = @import("quant/q8_k.zig");
const q8_0 = @import("quant/q8_0.zig");
const q4_0 = @import("quant/q4_0.zig");
const q4_1 = @import("quant/q4_1.zig");
const q5_1 = @import("quant/q5_1.zig");
const mxfp4 = @import("quant/mxfp4.zig");
const q5_0 = @import("quant/q5_0.zig");
const iq4_nl = @import("quant/iq4_nl.zig");
const block32 = @import("quant/block32.zig");
const q4_k = @import("quant/q4_k.zig");
const q5_k = @import("quant/q5_k.zig");
const q6_k = @import("quant/q6_k.zig");
const q2_k = @import("quant/q2_k.zig");
const q3_k = @import("quant/q3_k.zig");
const iq4_xs = @import("quant/iq4_xs.zig");
const q4_k_x8 = @import("quant/q4_k_x8.zig");
const iq3_s = @import("quant/iq3_s.zig");
const iq3_s_codes = @import("quant/iq3_s_codes.zig");
const iq3_xxs = @import("quant/iq3_xxs.zig");
const iq2_xxs = @import("quant/iq2_xxs.zig");
const iq2_xs = @import("quant/iq2_xs.zig");
const iq2_s = @import("quant/iq2_s.zig");
const iq1_s = @import("quant/iq1_s.zig");
const iq1_m = @import("quant/iq1_m.zig");
const iquants = @import("quant/iquants.zig");
const q3_k_x16 = @import("quant/q3_k_x16.zig");
const q2_k_x16 = @import("quant/q2_k_x16.zig");
const iq4_xs_x16 = @import("quant/iq4_xs_x16.zig");
const kquants = @import("quant/kquants.zig");
const mmla = @import("quant/mmla.zig");
const float = @import("quant/float.zig");

/// The quant/ file of each quantized type (`getRow` and the tests; `matmulWith` picks the kernel).
fn Format(comptime kind: GgmlType) type {
    return switch (kind) {
        .q4_k => q4_k,
        .q5_k => q5_k,
        .q6_k => q6_k,
        .q2_k => q2_k,
        .q3_k => q3_k,
        .iq4_xs => iq4_xs,
        .iq3_s => iq3_s.kernels,
        .iq3_xxs => iq3_xxs.kernels,
        .iq2_xxs => iq2_xxs.kernels,
        .iq2_xs => iq2_xs.kernels,
        .iq2_s => iq2_s.kernels,
        .iq1_s => iq1_s.kernels,
        .iq1_m => iq1_m.kernels,
        .q8_0 => q8_0,
        .q4_0 => q4_0,
        .q4_1 => q4_1,
        .q5_1 => q5_1,
        .mxfp4 => mxfp4,
        .q5_0 => q5_0,
        .iq4_nl => iq4_nl,
        else => @compileError("not a quantized type: " ++ @tagName(kind)),
    };
}

pub const Weight = types.Weight;
pub const GgmlType = types.GgmlType;
pub const Context = root.Context;

/// Rows × tokens per GEMM tile. Each (row, token) pair keeps two vectors live (integer and float
/// sums), so AVX2's 16 vector registers hold a 2×4 tile and AVX-512VL's 32 a 4×4 one. (On Zen 4
/// with VNNI, 4×3, 3×4 and 2×6 tiles measured within 5% of 4×4, none faster.)
const tile_rows = if (common.has_avx512vl) 4 else 2;
const tile_tokens = 4;
/// Rows per dot-product pass when decoding one token (1, 2 and 4 measured alike; DRAM-bound).
const matvec_rows = 2;

/// Tuning knobs; tests shrink them to exercise chunk edges on small matrices.
pub const Config = struct {
    /// Bytes of quantized activations a token chunk may occupy (kept in L2 while its tiles run).
    token_chunk_bytes: usize = 512 * 1024,
    /// How far ahead one-token kernels prefetch weights, in bytes (rounded to whole rows).
    /// Whole-model decode of the 4B-shape Q4_K_M file, alternating processes: 16 KiB beat
    /// 32 KiB in 10 of 12 pairs (~3–7% per token); 8 KiB was not distinguishable from 16 KiB.
    prefetch_bytes: usize = 16 * 1024,
    /// Rows per work item handed to a worker; 0 for one token picks about an eighth of each
    /// worker's share (64 KiB to 1 MiB of weights): long contiguous streams keep the hardware
    /// and software prefetches useful, several items per worker absorb uneven progress.
    row_chunk_decode: usize = 0,
    row_chunk_gemm: usize = 16,
    /// Use the one-token kernels for every token (`matvec`) rather than GEMM tiles.
    each_token_alone: bool = false,
};

pub fn matmul(ctx: *root.Context, w: *const Weight, x: [*]const f32, x_stride: usize, y: [*]f32, y_stride: usize, n_tokens: usize) error{Failed}!void {
    return matmulWith(ctx, w, x, x_stride, y, y_stride, n_tokens, .{});
}

/// `matmul` where every token is multiplied exactly as a lone token would be (the one-token
/// kernels, bit for bit), in one pass over `w` that serves them all: a decode step of several
/// sequences, whose logits must not depend on what else is in the batch. (`matmul` of several
/// tokens uses GEMM tiles, whose rounding differs from the one-token kernels'.)
pub fn matvec(ctx: *root.Context, w: *const Weight, x: [*]const f32, x_stride: usize, y: [*]f32, y_stride: usize, n_tokens: usize) error{Failed}!void {
    return matmulWith(ctx, w, x, x_stride, y, y_stride, n_tokens, .{ .each_token_alone = true });
}

pub fn matmulWith(ctx: *root.Context, w: *const Weight, x: [*]const f32, x_stride: usize, y: [*]f32, y_stride: usize, n_tokens: usize, cfg: Config) error{Failed}!void {
    if (n_tokens == 0) return;
    if (n_tokens > 1 and x_stride < w.ne0) return root.fail("matmul: activation stride {d} is shorter than a row ({d})", .{ x_stride, w.ne0 });
    if (n_tokens > 1 and y_stride < w.ne1) return root.fail("matmul: output stride {d} is shorter than a row ({d})", .{ y_stride, w.ne1 });
    return dispatch(ctx, .{ .w = w, .x = x, .x_stride = x_stride, .y = y, .y_stride = y_stride, .n_tokens = n_tokens, .matvec = n_tokens == 1 or cfg.each_token_alone, .cfg = cfg });
}

/// Which rows of a stacked expert tensor (`ne1` = n_expert · stride rows) one expert matmul uses:
/// expert e's rows [e·stride + first, e·stride + first + count). A fused gate/up tensor is read
/// as its gate half (first 0) and its up half (first = count).
pub const ExpertRows = struct {
    stride: usize,
    first: usize,
    count: usize,
};

/// The (input row, output row) pairs of a batch grouped by expert (`moe.group`): expert `used[u]`
/// owns pairs [start[u], start[u+1]).
pub const Experts = struct {
    rows: ExpertRows,
    in_rows: [*]const u32,
    out_rows: [*]const u32,
    used: [*]const u32,
    start: [*]const u32,
    n_used: usize,

    /// Expert e's rows of `w` as a weight of their own.
    fn view(ex: *const Experts, w: *const Weight, e: usize) Weight {
        var v = w.*;
        v.data = w.data + (e * ex.rows.stride + ex.rows.first) * w.row_bytes;
        v.ne1 = ex.rows.count;
        return v;
    }
};

/// Mixture-of-experts matmul (llama.cpp's `mul_mat_id`): for every pair of `experts`,
///   y[out_row] = (expert e's rows of w) · x[in_row]
/// `n_inputs` rows of x (`x_stride` apart) are converted to the weight type's dot partner once;
/// then each chosen expert's rows are streamed (one token: `matvec`) or unpacked (a prompt) once
/// for all of its tokens, in one pass of the pool over all experts. Only the chosen experts'
/// rows are read.
pub fn matmulExperts(ctx: *root.Context, w: *const Weight, x: [*]const f32, x_stride: usize, n_inputs: usize, y: [*]f32, y_stride: usize, experts: *const Experts, one_token: bool) error{Failed}!void {
    if (n_inputs == 0 or experts.n_used == 0) return;
    if (x_stride < w.ne0 or y_stride < experts.rows.count) return root.fail("matmul: expert strides ({d}, {d}) are shorter than the rows ({d}, {d})", .{ x_stride, y_stride, w.ne0, experts.rows.count });
    const group = repackedGroupRows(w);
    if (experts.rows.stride % group != 0 or experts.rows.first % group != 0 or experts.rows.count % group != 0)
        return root.fail("matmul: repacked experts must start and end on {d}-row groups", .{group});
    return dispatch(ctx, .{ .w = w, .x = x, .x_stride = x_stride, .y = y, .y_stride = y_stride, .n_tokens = n_inputs, .matvec = one_token, .cfg = .{}, .experts = experts });
}

fn dispatch(ctx: *root.Context, p: Problem) error{Failed}!void {
    const w = p.w;
    // A repacked IQ3_S weight's rows are its codes (`repackedRowBytes`), not the file's blocks.
    const want_row_bytes = if (w.repacked and w.kind == .iq3_s) repackedRowBytes(w) else w.kind.rowBytes(w.ne0);
    if (want_row_bytes != w.row_bytes) return root.fail("matmul: weight rows of {d} bytes do not fit type {d} with {d} values", .{ w.row_bytes, @backingInt(w.kind), w.ne0 });
    switch (w.kind) {
        .q4_k => if (w.repacked) try runKQuant(q4_k, q4_k_x8, ctx, p) else try runKQuant(q4_k, null, ctx, p),
        .q5_k => try runKQuant(q5_k, null, ctx, p),
        .q6_k => try runKQuant(q6_k, null, ctx, p),
        .q2_k => if (w.repacked) try runKQuant(q2_k, q2_k_x16, ctx, p) else try runKQuant(q2_k, null, ctx, p),
        .q3_k => if (w.repacked) try runKQuant(q3_k, q3_k_x16, ctx, p) else try runKQuant(q3_k, null, ctx, p),
        .iq4_xs => if (w.repacked) try runKQuant(iq4_xs, iq4_xs_x16, ctx, p) else try runKQuant(iq4_xs, null, ctx, p),
        .iq3_s => if (w.repacked) try runKQuant(iq3_s_codes.kernels, null, ctx, p) else try runKQuant(iq3_s.kernels, null, ctx, p),
        .iq3_xxs => try runKQuant(iq3_xxs.kernels, null, ctx, p),
        .iq2_xxs => try runKQuant(iq2_xxs.kernels, null, ctx, p),
        .iq2_xs => try runKQuant(iq2_xs.kernels, null, ctx, p),
        .iq2_s => try runKQuant(iq2_s.kernels, null, ctx, p),
        .iq1_s => try runKQuant(iq1_s.kernels, null, ctx, p),
        .iq1_m => try runKQuant(iq1_m.kernels, null, ctx, p),
        inline .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .mxfp4 => |q| {
            const F = Format(q);
            if (comptime @hasDecl(F, "Super")) if (w.repacked) return runBlock32(F, true, ctx, p);
            try runBlock32(F, false, ctx, p);
        },
        .f32 => try runFloat(f32, ctx, p),
        .f16 => try runFloat(f16, ctx, p),
        .bf16 => try runFloat(float.Bf16, ctx, p),
        _ => return root.fail("matmul: weight type {d} is not supported", .{@backingInt(w.kind)}),
    }
}

/// The row-interleaved layout a K-quant type is repacked into at load for one-token matmuls
/// (`quant/*_x8.zig`, `quant/*_x16.zig`), or null when it has none.
fn Interleaved(comptime kind: GgmlType) ?type {
    return switch (kind) {
        .q4_k => q4_k_x8,
        .q3_k => q3_k_x16,
        .q2_k => q2_k_x16,
        .iq4_xs => iq4_xs_x16,
        else => null,
    };
}

/// The types with an interleaved layout.
const repackable = [_]GgmlType{ .q4_k, .q3_k, .q2_k, .iq4_xs };

/// The 32-value block formats with a super-block layout (`quant/block32.zig`).
const super_block_kinds = [_]GgmlType{ .q4_0, .q8_0 };

/// The types re-encoded block by block into a code layout (`Codes`): IQ3_S's 4-bit value codes.
const code_kinds = [_]GgmlType{.iq3_s};

/// Rows a weight's layout keeps together: its interleaved group when repacked, else 1.
fn repackedGroupRows(w: *const Weight) usize {
    return if (w.repacked) layoutGroupRows(w.kind) else 1;
}

/// Rows a type's repacked layout keeps together (its interleaved group; 1 for row-by-row layouts):
/// a slice of a repacked weight, such as one expert's rows, must start and end on these groups.
pub fn layoutGroupRows(kind: GgmlType) usize {
    inline for (repackable) |k| if (kind == k) return Interleaved(k).?.rows;
    return 1;
}

/// Whether `repack` can take the weight: a type with an interleaved layout in whole row groups,
/// a 32-value block format with a super-block layout (Q4_0, Q8_0) in whole super-blocks of
/// 256 values, or IQ3_S (into its code layout).
pub fn canRepack(w: *const Weight) bool {
    if (w.repacked) return false;
    inline for (repackable) |kind| if (w.kind == kind) return w.ne1 % Interleaved(kind).?.rows == 0;
    inline for (super_block_kinds) |kind| if (w.kind == kind) return w.ne0 % 256 == 0;
    inline for (code_kinds) |kind| if (w.kind == kind) return true;
    return false;
}

/// Bytes per row of a weight as `repack` copies it: `row_bytes`, except for the code layouts
/// (IQ3_S's codes take 134 bytes per block of 256 values instead of 110).
pub fn repackedRowBytes(w: *const Weight) usize {
    inline for (code_kinds) |kind| if (w.kind == kind) return w.ne0 / 256 * @sizeOf(Codes(kind).Block);
    return w.row_bytes;
}

/// Copies a weight `canRepack` accepts into `dst` (`ne1 · repackedRowBytes` bytes, 64-byte
/// aligned) in its repacked layout — K-quants in their interleaved row groups (`Interleaved`),
/// Q4_0 and Q8_0 in the super-blocks of `quant/block32.zig`, IQ3_S as the 4-bit value codes of
/// `quant/iq3_s_codes.zig` — split over the pool; returns the repacked weight.
pub fn repack(ctx: *root.Context, w: *const Weight, dst: [*]align(64) u8) Weight {
    std.debug.assert(canRepack(w));
    inline for (repackable) |kind| if (w.kind == kind) repackAs(Interleaved(kind).?, ctx, w, dst);
    inline for (super_block_kinds) |kind| if (w.kind == kind) repackAs(SuperBlocks(kind), ctx, w, dst);
    inline for (code_kinds) |kind| if (w.kind == kind) repackAs(Codes(kind), ctx, w, dst);
    var out = w.*;
    out.data = dst;
    out.row_bytes = repackedRowBytes(w);
    out.repacked = true;
    return out;
}

/// `repackAs`'s description of a block32 format's super-block layout: rows are copied one by one.
fn SuperBlocks(comptime kind: GgmlType) type {
    return struct {
        const rows = 0;
        const F = Format(kind);

        /// One row of `ne0` values.
        fn repackRow(src: [*]const u8, ne0: usize, dst: [*]u8) void {
            block32.repackRow(F, @ptrCast(@alignCast(src)), ne0 / 256, @ptrCast(@alignCast(dst)));
        }
    };
}

/// `repackAs`'s description of a code layout: rows are re-encoded one by one, block by block,
/// into rows of `repackedRowBytes` (IQ3_S: `quant/iq3_s_codes.zig`).
fn Codes(comptime kind: GgmlType) type {
    return switch (kind) {
        .iq3_s => struct {
            const rows = 0;
            /// The kernels of the repacked layout (`runKQuant`, `getRow`).
            const F = iq3_s_codes.kernels;
            const Block = iq3_s_codes.Block;

            fn repackRow(src: [*]const u8, ne0: usize, dst: [*]u8) void {
                const blocks: [*]const iq3_s.Block = @ptrCast(@alignCast(src));
                const out: [*]Block = @ptrCast(@alignCast(dst));
                for (0..ne0 / 256) |b| iq3_s_codes.encode(&blocks[b], &out[b]);
            }
        },
        else => @compileError("no code layout for " ++ @tagName(kind)),
    };
}

/// Copies a weight's rows into `dst` in layout X: an interleaved K-quant layout (`Interleaved`),
/// a block32 super-block layout (`SuperBlocks`) or a code layout (`Codes`); the latter two go
/// row by row (`rows` 0), into rows of `repackedRowBytes`.
fn repackAs(comptime X: type, ctx: *root.Context, w: *const Weight, dst: [*]align(64) u8) void {
    const Job = struct {
        w: *const Weight,
        dst: [*]align(64) u8,
        dst_row_bytes: usize,
        fn run(j: *const @This(), worker: usize, n_workers: usize) void {
            const step: usize = if (X.rows > 0) X.rows else 1;
            const s = pool_mod.share(j.w.ne1 / step, 1, worker, n_workers);
            // Fault this worker's share of the copy in with one call: cheaper than a fault per page.
            const page = os.pageSize();
            const first = std.mem.alignBackward(usize, @intFromPtr(j.dst + s.begin * step * j.dst_row_bytes), page);
            const last = std.mem.alignForward(usize, @intFromPtr(j.dst + s.end * step * j.dst_row_bytes), page);
            if (last > first) os.populateWrite(@ptrFromInt(first), last - first);
            if (comptime X.rows > 0) {
                const nb = j.w.ne0 / 256;
                const groups: [*]X.Group = @ptrCast(j.dst);
                for (s.begin..s.end) |rg| X.repackRowGroup(j.w.data, j.w.row_bytes, nb, rg, groups + rg * nb);
            } else for (s.begin..s.end) |r| {
                X.repackRow(j.w.row(r), j.w.ne0, j.dst + r * j.dst_row_bytes);
            }
        }
    };
    const job = Job{ .w = w, .dst = dst, .dst_row_bytes = repackedRowBytes(w) };
    ctx.pool.run(Job, &job, Job.run);
}

pub fn getRow(w: *const Weight, r: usize, out: [*]f32) void {
    if (w.repacked) return dequantizeRepackedRow(w, r, out);
    const row = w.row(r);
    switch (w.kind) {
        .f32 => float.getRow(f32, @ptrCast(@alignCast(row)), out, w.ne0),
        .f16 => float.getRow(f16, @ptrCast(@alignCast(row)), out, w.ne0),
        .bf16 => float.getRow(float.Bf16, @ptrCast(@alignCast(row)), out, w.ne0),
        inline .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .mxfp4, .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .iq3_s, .iq3_xxs, .iq2_xxs, .iq2_xs, .iq2_s, .iq1_s, .iq1_m => |q| dequantizeRow(Format(q), row, out, w.ne0),
        // Registration (root.zig) only accepts the types above.
        _ => unreachable,
    }
}

fn dequantizeRepackedRow(w: *const Weight, r: usize, out: [*]f32) void {
    inline for (code_kinds) |kind| if (w.kind == kind) return dequantizeRow(Codes(kind).F, w.row(r), out, w.ne0);
    inline for (super_block_kinds) |kind| if (w.kind == kind) {
        return block32.dequantizeSuperRow(Format(kind), @ptrCast(@alignCast(w.data + r * w.row_bytes)), w.ne0 / 256, out);
    };
    inline for (repackable) |kind| if (w.kind == kind) {
        const X = Interleaved(kind).?;
        const nb = w.ne0 / 256;
        const groups: [*]const X.Group = @ptrCast(@alignCast(w.data));
        for (0..nb) |b| {
            const blk = X.block(&groups[r / X.rows * nb + b], r % X.rows);
            X.Natural.dequantize(&blk, out[b * 256 ..][0..256]);
        }
    };
}

fn dequantizeRow(comptime F: type, row: [*]const u8, out: [*]f32, n: usize) void {
    const blocks: [*]const F.Block = @ptrCast(@alignCast(row));
    const per_block = F.block_values;
    for (0..n / per_block) |b| F.dequantize(&blocks[b], out[b * per_block ..][0..per_block]);
}

const Problem = struct {
    w: *const Weight,
    x: [*]const f32,
    x_stride: usize,
    y: [*]f32,
    y_stride: usize,
    n_tokens: usize,
    /// Every token through the one-token kernels (`dotRows`) rather than GEMM tiles: one token,
    /// `Config.each_token_alone`, or an expert matmul's decode step (one token per expert, but
    /// several input rows in all, one per slot). Set when the problem is made: an expert's share
    /// of a batch must keep the activation layout the whole batch was prepared in.
    matvec: bool,
    cfg: Config,
    /// Expert matmuls: the grouping, and for one expert's share (made by `runExperts`) where
    /// its tokens' activation rows and output rows are. Null maps are the identity.
    experts: ?*const Experts = null,
    x_rows: ?[*]const u32 = null,
    y_rows: ?[*]const u32 = null,

    fn prefetchAhead(p: Problem) usize {
        return (p.cfg.prefetch_bytes + p.w.row_bytes - 1) / p.w.row_bytes * p.w.row_bytes;
    }

    /// Which prepared activation row (or x row) token t reads.
    fn inRow(p: Problem, t: usize) usize {
        return if (p.x_rows) |m| m[t] else t;
    }

    fn out(p: Problem, t: usize, r: usize) *f32 {
        const row = if (p.y_rows) |m| m[t] else t;
        return &p.y[row * p.y_stride + r];
    }

    /// GEMM tiles (several tokens) rather than the one-token kernels run per token.
    fn tiled(p: Problem) bool {
        return !p.matvec;
    }

    /// Tokens per chunk: a multiple of the tile, with `row_bytes` of activations per token.
    fn tokenChunk(p: Problem, row_bytes: usize) usize {
        const fit = p.cfg.token_chunk_bytes / row_bytes;
        return @max(tile_tokens, fit / tile_tokens * tile_tokens);
    }
};

fn nWorkers(ctx: *root.Context) usize {
    return ctx.pool.n_spawned + 1;
}

/// Quantizes (or rounds) every token's activations into scratch rows `row_bytes` apart, split
/// over the pool by tokens when there are several.
fn prepareActivations(ctx: *root.Context, p: Problem, dst: [*]align(64) u8, row_bytes: usize, comptime convert: fn (x: [*]const f32, k: usize, dst: [*]align(64) u8) void) void {
    const Job = struct {
        p: Problem,
        dst: [*]align(64) u8,
        row_bytes: usize,
        /// Tokens taken as workers go (each token's row is its own): a stalled worker holds up one.
        tokens: *pool_mod.Chunks,
        fn run(j: *const @This(), _: usize, _: usize) void {
            while (j.tokens.take()) |r| for (r.begin..r.end) |t| convert(j.p.x + t * j.p.x_stride, j.p.w.ne0, @alignCast(j.dst + t * j.row_bytes));
        }
    };
    var tokens = pool_mod.Chunks.init(p.n_tokens, 1);
    const job = Job{ .p = p, .dst = dst, .row_bytes = row_bytes, .tokens = &tokens };
    if (p.n_tokens == 1) Job.run(&job, 0, 1) else ctx.pool.run(Job, &job, Job.run);
}

/// Runs a kernel over the pool. A kernel type `K` holds `p: Problem` and `chunks: *Chunks` and
/// provides, for rows r.. and tokens t..:
///   dotRows(k, R, r, t) [R]f32                one token (decode), R = `matvecRows(K)`
///   dotRowsTokens(k, R, T, r, t) [T][R]f32    if `fuses_tokens`: T tokens in one pass, each as dotRows
///   prepare(k, worker, r, n_rows)              before the tiles of a row group (K-quants unpack)
///   tile(k, worker, R, T, r, i, t) [R][T]f32   several tokens; row r is row i of its group
/// Workers take row chunks; within one, token chunks sized for L2 come first, then row groups of
/// `groupRows(K)`, then tiles of `tile_rows` × `tile_tokens`. Ragged edges run as single rows /
/// single tokens (few tile shapes keep the build fast; edges are a small share of the work).
fn run(ctx: *root.Context, comptime K: type, k: *const K) void {
    if (k.p.experts) |ex| return runExperts(ctx, K, k, ex);
    const Driver = struct {
        fn work(kk: *const K, worker: usize, _: usize) void {
            while (kk.chunks.take()) |range| workRows(kk, worker, range.begin, range.end);
        }
    };
    ctx.pool.run(K, k, Driver.work);
}

/// Rows [begin, end) of a kernel's problem, for every token.
fn workRows(kk: anytype, worker: usize, begin: usize, end: usize) void {
    const K = @TypeOf(kk.*);
    const p = kk.p;
    if (!p.tiled()) {
        var r = begin;
        const m = comptime matvecRows(K);
        while (r + m <= end) : (r += m) rowsForEachToken(kk, m, r);
        // Repacked weights come in whole groups, so this never runs for them.
        if (m == matvec_rows) while (r < end) : (r += 1) rowsForEachToken(kk, 1, r);
        return;
    }
    const chunk = p.tokenChunk(if (comptime @hasDecl(K, "Act")) K.Act.Row.bytes(p.w.ne0) else K.actRowBytes(p.w.ne0));
    var t0: usize = 0;
    while (t0 < p.n_tokens) : (t0 += chunk) {
        const t1 = @min(p.n_tokens, t0 + chunk);
        var r = begin;
        const group = comptime groupRows(K);
        while (r < end) : (r += group) {
            const n_rows = @min(group, end - r);
            kk.prepare(worker, r, n_rows);
            var i: usize = 0;
            while (i + tile_rows <= n_rows) : (i += tile_rows) tokenTiles(kk, worker, tile_rows, r + i, i, t0, t1);
            while (i < n_rows) : (i += 1) tokenTiles(kk, worker, 1, r + i, i, t0, t1);
        }
    }
}

/// An expert matmul: work items are (chosen expert, row chunk) pairs over all experts, so one
/// pass of the pool covers the whole batch. Each item runs the kernel on a copy whose problem is
/// that expert's rows and tokens.
fn runExperts(ctx: *root.Context, comptime K: type, k: *const K, ex: *const Experts) void {
    const p = k.p;
    const first_view = ex.view(p.w, ex.used[0]);
    var sample = p;
    sample.w = &first_view;
    sample.n_tokens = if (p.matvec) 1 else p.n_tokens;
    const chunk = rowChunk(ctx, sample, rowMultiple(K));
    const per_expert = (ex.rows.count + chunk - 1) / chunk;
    const Job = struct {
        k: *const K,
        ex: *const Experts,
        chunk: usize,
        per_expert: usize,
        items: pool_mod.Chunks,
        fn work(j: *const @This(), worker: usize, _: usize) void {
            const items: *pool_mod.Chunks = @constCast(&j.items);
            while (items.take()) |range| for (range.begin..range.end) |item| {
                const u = item / j.per_expert;
                const e = j.ex.used[u];
                const view = j.ex.view(j.k.p.w, e);
                var kk = j.k.*;
                kk.p.w = &view;
                kk.p.n_tokens = j.ex.start[u + 1] - j.ex.start[u];
                kk.p.x_rows = j.ex.in_rows + j.ex.start[u];
                kk.p.y_rows = j.ex.out_rows + j.ex.start[u];
                const begin = item % j.per_expert * j.chunk;
                workRows(&kk, worker, begin, @min(j.ex.rows.count, begin + j.chunk));
            };
        }
    };
    const job = Job{ .k = k, .ex = ex, .chunk = chunk, .per_expert = per_expert, .items = pool_mod.Chunks.init(ex.n_used * per_expert, 1) };
    ctx.pool.run(Job, &job, Job.work);
}

/// Tokens fused per pass over a row group by kernels with `dotRowsTokens`.
const fused_tokens = 4;

/// Rows [r, r+R) times every token with the one-token kernel: the rows stay in L1 from the first
/// token to the last, so memory sees one pass over the weights.
inline fn rowsForEachToken(kk: anytype, comptime R: usize, r: usize) void {
    const p = kk.p;
    var t: usize = 0;
    const K = @TypeOf(kk.*);
    if (comptime @hasDecl(K, "fuses_tokens") and K.fuses_tokens) {
        while (t + fused_tokens <= p.n_tokens) : (t += fused_tokens) fusedTokens(kk, R, fused_tokens, r, t);
        // the rest (2 or 3 tokens) in one pass too
        inline for (2..fused_tokens) |rest| {
            if (p.n_tokens - t == rest) {
                fusedTokens(kk, R, rest, r, t);
                t += rest;
            }
        }
    }
    while (t < p.n_tokens) : (t += 1) {
        const s = kk.dotRows(R, r, t);
        inline for (0..R) |i| p.out(t, r + i).* = s[i];
    }
}

inline fn fusedTokens(kk: anytype, comptime R: usize, comptime T: usize, r: usize, t: usize) void {
    const s = kk.dotRowsTokens(R, T, r, t);
    inline for (0..T) |ti| inline for (0..R) |i| {
        kk.p.out(t + ti, r + i).* = s[ti][i];
    };
}

/// Tiles of R rows (row r = row i of the prepared group) over tokens [t0, t1).
inline fn tokenTiles(kk: anytype, worker: usize, comptime R: usize, r: usize, i: usize, t0: usize, t1: usize) void {
    const p = kk.p;
    var t = t0;
    while (t + tile_tokens <= t1) : (t += tile_tokens) {
        const out = kk.tile(worker, R, tile_tokens, r, i, t);
        inline for (0..R) |ri| inline for (0..tile_tokens) |ti| {
            p.out(t + ti, r + ri).* = out[ri][ti];
        };
    }
    while (t < t1) : (t += 1) {
        const out = kk.tile(worker, R, 1, r, i, t);
        inline for (0..R) |ri| p.out(t, r + ri).* = out[ri][0];
    }
}

/// Rows a kernel's one-token `dotRows` takes at once.
fn matvecRows(comptime K: type) usize {
    return if (@hasDecl(K, "dot_rows")) K.dot_rows else matvec_rows;
}

/// What row chunks must be a multiple of (whole repacked groups).
fn rowMultiple(comptime K: type) usize {
    return if (@hasDecl(K, "row_multiple")) K.row_multiple else 1;
}

/// Rows a kernel prepares (unpacks) together before their tiles.
fn groupRows(comptime K: type) usize {
    return if (@hasDecl(K, "group_rows")) K.group_rows else tile_rows;
}

/// Rows per work item: a multiple of `multiple` (whole repacked groups).
fn rowChunk(ctx: *root.Context, p: Problem, multiple: usize) usize {
    const rows = blk: {
        if (p.tiled()) break :blk p.cfg.row_chunk_gemm;
        if (p.cfg.row_chunk_decode != 0) break :blk p.cfg.row_chunk_decode;
        const bytes = std.math.clamp(p.w.ne1 * p.w.row_bytes / (8 * nWorkers(ctx)), 64 << 10, 1 << 20);
        break :blk bytes / p.w.row_bytes;
    };
    const m = @max(multiple, if (p.tiled()) @as(usize, 1) else matvec_rows);
    return @max(m, (rows + m - 1) / m * m);
}

// ---------------------------------------------------------------------------------------------
// K-quants and IQ4_XS against Q8_K activations.

/// Format F's kernel; X is its interleaved layout when the weight is repacked (else null).
fn KQuantKernel(comptime F: type, comptime X: ?type) type {
    return struct {
        p: Problem,
        chunks: *pool_mod.Chunks,
        acts: [*]align(64) u8,
        panels: [*]align(64) u8,
        panel_bytes: usize,

        const Self = @This();
        const repacked = X != null;
        const I = X orelse struct {
            const rows = 1;
            const Group = void;
        };
        pub const dot_rows = if (repacked) I.rows else matvec_rows;
        pub const group_rows = if (repacked) I.rows else tile_rows;
        pub const row_multiple = if (repacked) I.rows else 1;

        pub const Act = q8_k;

        fn blocks(self: *const Self, r: usize) [*]const F.Block {
            return @ptrCast(@alignCast(self.p.w.row(r)));
        }

        fn act(self: *const Self, t: usize) q8_k.Row {
            return q8_k.Row.at(self.acts, self.p.w.ne0, self.p.inRow(t));
        }

        fn panel(self: *const Self, worker: usize) kquants.Panel {
            return .{ .pairs = @ptrCast(@alignCast(self.panels + worker * self.panel_bytes)), .nb = self.p.w.ne0 / 256 };
        }

        /// Repacked: the groups of the rows from r (a multiple of the group's rows).
        fn groups(self: *const Self, r: usize) [*]const I.Group {
            return @ptrCast(@alignCast(self.p.w.data + r * self.p.w.row_bytes));
        }

        fn dotRows(self: *const Self, comptime R: usize, r: usize, t: usize) [R]f32 {
            if (repacked) {
                if (R != I.rows) unreachable; // whole groups only (see `run`)
                return I.dotRowGroup(self.groups(r), self.act(t), self.p.w.ne0 / 256, self.p.prefetchAhead());
            }
            var rows: [R][*]const F.Block = undefined;
            inline for (0..R) |i| rows[i] = self.blocks(r + i);
            return kquants.dotRows(F, R, rows, self.act(t), self.p.w.ne0 / 256, self.p.prefetchAhead());
        }

        /// T tokens per pass over the rows, each block unpacked once for all: repacked layouts
        /// with `dotRowGroupTokens` (Q4_K's) and formats with a prepared dot (`kquants.dotRowsTokens`).
        pub const fuses_tokens = (repacked and @hasDecl(I, "dotRowGroupTokens")) or (!repacked and @hasDecl(F, "prepare"));

        fn dotRowsTokens(self: *const Self, comptime R: usize, comptime T: usize, r: usize, t: usize) [T][R]f32 {
            var acts: [T]q8_k.Row = undefined;
            inline for (0..T) |i| acts[i] = self.act(t + i);
            if (repacked) {
                if (!@hasDecl(I, "dotRowGroupTokens") or R != I.rows) unreachable;
                return I.dotRowGroupTokens(T, self.groups(r), acts, self.p.w.ne0 / 256, self.p.prefetchAhead());
            }
            if (!@hasDecl(F, "prepare")) unreachable;
            var rows: [R][*]const F.Block = undefined;
            inline for (0..R) |i| rows[i] = self.blocks(r + i);
            return kquants.dotRowsTokens(F, R, T, rows, acts, self.p.w.ne0 / 256, self.p.prefetchAhead());
        }

        fn prepare(self: *const Self, worker: usize, r: usize, n_rows: usize) void {
            const nb = self.p.w.ne0 / 256;
            const dst = self.panel(worker);
            // While unpacking, fetch the next row group's blocks: its tiles then find them in
            // cache. With few tokens per unpack (a short prompt) the unpack otherwise waits on DRAM.
            const next_ok = r + n_rows + n_rows <= self.p.w.ne1;
            if (repacked) {
                const src = self.groups(r);
                const next = self.groups(if (next_ok) r + n_rows else r);
                for (0..nb) |b| {
                    if (next_ok) common.prefetchSpan(@ptrCast(&next[b]), @sizeOf(I.Group));
                    if (@hasDecl(I, "unpackGroup")) {
                        I.unpackGroup(&src[b], dst, 0, b);
                    } else for (0..I.rows) |i| {
                        // Through the natural block: unpacking is a small share of a GEMM.
                        const blk = I.block(&src[b], i);
                        var u: kquants.Unpacked = undefined;
                        F.unpack(&blk, &u);
                        dst.store(i, b, &u);
                    }
                }
                return;
            }
            for (0..n_rows) |i| {
                const src = self.blocks(r + i);
                const next = self.blocks(if (next_ok) r + i + n_rows else r + i);
                for (0..nb) |b| {
                    if (next_ok) common.prefetchSpan(@ptrCast(&next[b]), @sizeOf(F.Block));
                    var u: kquants.Unpacked = undefined;
                    F.unpack(&src[b], &u);
                    dst.store(i, b, &u);
                }
            }
        }

        fn tile(self: *const Self, worker: usize, comptime R: usize, comptime T: usize, _: usize, first: usize, t: usize) [R][T]f32 {
            var acts: [T]q8_k.Row = undefined;
            inline for (0..T) |i| acts[i] = self.act(t + i);
            var out: [R][T]f32 = undefined;
            kquants.tile(R, T, F.scheme, self.panel(worker), first, acts, &out);
            return out;
        }
    };
}

fn runKQuant(comptime F: type, comptime X: ?type, ctx: *root.Context, p: Problem) error{Failed}!void {
    const K = KQuantKernel(F, X);
    const panel_bytes = kquants.Panel.bytes(K.group_rows, p.w.ne0 / 256);
    try runQuantized(K, ctx, p, panel_bytes, rowMultiple(K));
}

/// Runs a quantized kernel K (fields p, chunks, acts, panels, panel_bytes; activation format
/// `K.Act`, q8_k or q8_0): quantizes the activations into scratch memory — interleaved for the
/// GEMM tiles — followed by one panel of `panel_bytes` per worker, and works through the rows in
/// chunks that are multiples of `multiple`.
fn runQuantized(comptime K: type, ctx: *root.Context, p: Problem, panel_bytes_min: usize, multiple: usize) error{Failed}!void {
    // One-token kernels of repacked block32 rows read the activations interleaved too.
    const interleave = p.tiled() or (comptime @hasDecl(K, "interleaved_acts") and K.interleaved_acts);
    const A = K.Act;
    const Convert = struct {
        fn natural(x: [*]const f32, k: usize, dst: [*]align(64) u8) void {
            A.quantize(x, k, A.Row.at(dst, k, 0));
        }
        fn forTiles(x: [*]const f32, k: usize, dst: [*]align(64) u8) void {
            const row = A.Row.at(dst, k, 0);
            A.quantize(x, k, row);
            A.interleave(row, k);
        }
        /// The i8mm level's tiles multiply two tokens per `usmmla`, which reads the interleaved
        /// values with their words paired (`mmla.zig`); the one-token kernels do not.
        fn forMmlaTiles(x: [*]const f32, k: usize, dst: [*]align(64) u8) void {
            forTiles(x, k, dst);
            mmla.pairWordsRow(A.Row.at(dst, k, 0).qs, std.mem.alignForward(usize, k, 256) / 256);
        }
    };
    const act_bytes = A.Row.bytes(p.w.ne0);
    const panel_bytes = std.mem.alignForward(usize, panel_bytes_min, 64);
    const acts_total = p.n_tokens * act_bytes;
    const scratch = try ctx.scratchBytes(acts_total + if (p.tiled()) nWorkers(ctx) * panel_bytes else 0);
    if (mmla.enabled and p.tiled()) {
        prepareActivations(ctx, p, scratch.ptr, act_bytes, Convert.forMmlaTiles);
    } else if (interleave) prepareActivations(ctx, p, scratch.ptr, act_bytes, Convert.forTiles) else prepareActivations(ctx, p, scratch.ptr, act_bytes, Convert.natural);
    var chunks = pool_mod.Chunks.init(p.w.ne1, rowChunk(ctx, p, multiple));
    run(ctx, K, &.{ .p = p, .chunks = &chunks, .acts = scratch.ptr, .panels = @alignCast(scratch.ptr + acts_total), .panel_bytes = panel_bytes });
}

// ---------------------------------------------------------------------------------------------
// Formats with 32-value blocks (Q4_0, Q5_0, Q8_0, IQ4_NL, …) against Q8_0 / Q8_1 activations
// (`quant/block32.zig`): one token reads the weights in place; tiles read rows unpacked into a
// per-worker panel of interleaved super-blocks.

fn Block32Kernel(comptime F: type, comptime repacked: bool) type {
    return struct {
        p: Problem,
        chunks: *pool_mod.Chunks,
        acts: [*]align(64) u8,
        panels: [*]align(64) u8,
        panel_bytes: usize,

        const Self = @This();

        pub const Act = q8_0;
        pub const interleaved_acts = repacked;

        fn blocks(self: *const Self, r: usize) [*]const F.Block {
            return @ptrCast(@alignCast(self.p.w.row(r)));
        }

        /// Repacked: row r's super-blocks.
        fn supers(self: *const Self, r: usize) [*]const F.Super {
            return @ptrCast(@alignCast(self.p.w.data + r * self.p.w.row_bytes));
        }

        fn act(self: *const Self, t: usize) q8_0.Row {
            return q8_0.Row.at(self.acts, self.p.w.ne0, self.p.inRow(t));
        }

        fn panel(self: *const Self, worker: usize) block32.Panel {
            return .{ .pairs = @ptrCast(@alignCast(self.panels + worker * self.panel_bytes)), .ns = q8_0.padded(self.p.w.ne0) / 256 };
        }

        fn dotRows(self: *const Self, comptime R: usize, r: usize, t: usize) [R]f32 {
            if (repacked) {
                var rows: [R][*]const F.Super = undefined;
                inline for (0..R) |i| rows[i] = self.supers(r + i);
                return block32.dotRowsSuper(F, R, rows, self.act(t), self.p.w.ne0 / 256, self.p.prefetchAhead());
            }
            var rows: [R][*]const F.Block = undefined;
            inline for (0..R) |i| rows[i] = self.blocks(r + i);
            return block32.dotRows(F, R, rows, self.act(t), self.p.w.ne0 / 32, self.p.prefetchAhead());
        }

        fn prepare(self: *const Self, worker: usize, r: usize, n_rows: usize) void {
            const nb = self.p.w.ne0 / 32;
            const dst = self.panel(worker);
            const next_ok = r + n_rows + n_rows <= self.p.w.ne1;
            for (0..n_rows) |i| {
                // Fetch the next group's row while unpacking this one (see KQuantKernel.prepare).
                if (next_ok) {
                    const next = self.p.w.data + (r + i + n_rows) * self.p.w.row_bytes;
                    var off: usize = 0;
                    while (off < self.p.w.row_bytes) : (off += 64) common.prefetchSpan(next + off, 64);
                }
                if (repacked) dst.unpackSuperRow(F, self.supers(r + i), i) else dst.unpackRow(F, self.blocks(r + i), nb, i);
            }
        }

        fn tile(self: *const Self, worker: usize, comptime R: usize, comptime T: usize, _: usize, first: usize, t: usize) [R][T]f32 {
            var acts: [T]q8_0.Row = undefined;
            inline for (0..T) |i| acts[i] = self.act(t + i);
            var out: [R][T]f32 = undefined;
            block32.tile(F, R, T, self.panel(worker), first, acts, &out);
            return out;
        }
    };
}

fn runBlock32(comptime F: type, comptime repacked: bool, ctx: *root.Context, p: Problem) error{Failed}!void {
    try runQuantized(Block32Kernel(F, repacked), ctx, p, block32.Panel.bytes(tile_rows, p.w.ne0), 1);
}

// ---------------------------------------------------------------------------------------------
// F32, F16 and BF16 weights against f32 activations (rounded to F16/BF16 for those types).

fn FloatKernel(comptime W: type) type {
    return struct {
        p: Problem,
        chunks: *pool_mod.Chunks,
        xs: [*]const f32,
        x_stride: usize,

        const Self = @This();

        fn actRowBytes(k: usize) usize {
            return std.mem.alignForward(usize, k * 4, 64);
        }

        fn convert(x: [*]const f32, k: usize, dst: [*]align(64) u8) void {
            float.roundRow(W, x, @ptrCast(dst), k);
        }

        fn row(self: *const Self, r: usize) [*]const W {
            return @ptrCast(@alignCast(self.p.w.row(r)));
        }

        fn dotRows(self: *const Self, comptime R: usize, r: usize, t: usize) [R]f32 {
            var rows: [R][*]const W = undefined;
            inline for (0..R) |i| rows[i] = self.row(r + i);
            return float.dotRows(W, R, rows, self.xs + self.p.inRow(t) * self.x_stride, self.p.w.ne0, self.p.prefetchAhead());
        }

        fn prepare(_: *const Self, _: usize, _: usize, _: usize) void {}

        fn tile(self: *const Self, _: usize, comptime R: usize, comptime T: usize, r: usize, _: usize, t: usize) [R][T]f32 {
            var rows: [R][*]const W = undefined;
            inline for (0..R) |i| rows[i] = self.row(r + i);
            var xs: [T][*]const f32 = undefined;
            inline for (0..T) |i| xs[i] = self.xs + self.p.inRow(t + i) * self.x_stride;
            var out: [R][T]f32 = undefined;
            float.tile(W, R, T, rows, xs, self.p.w.ne0, &out);
            return out;
        }
    };
}

fn runFloat(comptime W: type, ctx: *root.Context, p: Problem) error{Failed}!void {
    const K = FloatKernel(W);
    var chunks = pool_mod.Chunks.init(p.w.ne1, rowChunk(ctx, p, 1));
    if (W == f32) return run(ctx, K, &.{ .p = p, .chunks = &chunks, .xs = p.x, .x_stride = p.x_stride });
    const row_bytes = K.actRowBytes(p.w.ne0);
    const scratch = try ctx.scratchBytes(p.n_tokens * row_bytes);
    prepareActivations(ctx, p, scratch.ptr, row_bytes, K.convert);
    run(ctx, K, &.{ .p = p, .chunks = &chunks, .xs = @ptrCast(scratch.ptr), .x_stride = row_bytes / 4 });
}

// ---------------------------------------------------------------------------------------------
// Tests: every type against dequantize-then-multiply references.

const testing = std.testing;

const TestMatrix = struct {
    w: Weight,
    /// Row r dequantized by the formats' scalar references.
    ref: []f32,
};

fn testMatrix(kind: GgmlType, n: usize, k: usize, rand: std.Random, bytes: []align(64) u8, ref: []f32) TestMatrix {
    const row_bytes = kind.rowBytes(k).?;
    const w = Weight{ .data = bytes.ptr, .kind = kind, .ne0 = k, .ne1 = n, .row_bytes = row_bytes };
    for (0..n) |r| {
        const row = bytes[r * row_bytes ..];
        const out = ref[r * k ..];
        switch (kind) {
            inline .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .mxfp4, .iq3_s, .iq3_xxs, .iq2_xxs, .iq2_xs, .iq2_s, .iq1_s, .iq1_m => |q| {
                const F = Format(q);
                const blocks: [*]F.Block = @ptrCast(@alignCast(row));
                for (0..k / F.block_values) |b| {
                    blocks[b] = F.randomBlock(rand);
                    F.dequantizeRef(&blocks[b], out[b * F.block_values ..][0..F.block_values]);
                }
            },
            inline .f32, .f16, .bf16 => |f| {
                const W = switch (f) {
                    .f32 => f32,
                    .f16 => f16,
                    else => float.Bf16,
                };
                const values: [*]W = @ptrCast(@alignCast(row));
                for (0..k) |c| {
                    const v = rand.floatNorm(f32);
                    values[c] = if (W == float.Bf16) float.toBf16(v) else @floatCast(v);
                    out[c] = float.toF32(W, values[c]);
                }
            },
            _ => unreachable,
        }
    }
    return .{ .w = w, .ref = ref[0 .. n * k] };
}

/// The activation row as the weight type's partner represents it (what llama.cpp multiplies).
fn partnerActivation(kind: GgmlType, x: []const f32, out: []f32) void {
    const k = x.len;
    var buf: [q8_k.Row.bytes(1024)]u8 align(64) = undefined;
    switch (kind) {
        .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .iq3_s, .iq3_xxs, .iq2_xxs, .iq2_xs, .iq2_s, .iq1_s, .iq1_m => {
            const row = q8_k.Row.at(&buf, k, 0);
            q8_k.quantize(x.ptr, k, row);
            for (0..k) |c| out[c] = row.d[c / 256] * @as(f32, @floatFromInt(row.qs[c]));
        },
        .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .mxfp4 => {
            const row = q8_0.Row.at(&buf, k, 0);
            q8_0.quantize(x.ptr, k, row);
            for (0..k) |c| out[c] = row.d[c / 32] * @as(f32, @floatFromInt(row.qs[c]));
        },
        .f32 => @memcpy(out, x),
        .f16 => for (x, out) |v, *o| {
            o.* = float.roundTo(f16, v);
        },
        .bf16 => for (x, out) |v, *o| {
            o.* = float.roundTo(float.Bf16, v);
        },
        _ => unreachable,
    }
}

/// What Q8_1's s (f16-rounded d·Σq, from the unrounded d) adds to a row's product with the
/// partner activation d·q: Σ_blocks m·(s − d·Σq) for Q4_1/Q5_1, zero for the other types.
fn q8_1Correction(w: *const Weight, r: usize, x: []const f32) f64 {
    switch (w.kind) {
        inline .q4_1, .q5_1 => |q| {
            const F = Format(q);
            var buf: [q8_0.Row.bytes(1024)]u8 align(64) = undefined;
            const act = q8_0.Row.at(&buf, x.len, 0);
            q8_0.quantize(x.ptr, x.len, act);
            const blocks: [*]const F.Block = @ptrCast(@alignCast(w.row(r)));
            var c: f64 = 0;
            for (0..x.len / 32) |b| {
                const exact = @as(f64, act.d[b]) * @as(f64, @floatFromInt(act.sums[b]));
                c += @as(f64, F.min(&blocks[b])) * (act.s[b] - exact);
            }
            return c;
        },
        else => return 0,
    }
}

test "repacked weights give the natural layout's products: one token to float rounding, tiles exactly" {
    var prng = common.testRng(37);
    const rand = prng.random();
    const n = 48;
    const k = 768;
    const max_tokens = 21;
    const contexts = [2]*root.Context{ try testContext(1), try testContext(2) };
    defer for (contexts) |c| freeTestContext(c);
    for (repackable ++ super_block_kinds ++ code_kinds) |kind| try checkRepacked(kind, n, k, max_tokens, rand, contexts);
}

fn checkRepacked(kind: GgmlType, comptime n: usize, comptime k: usize, comptime max_tokens: usize, rand: std.Random, contexts: [2]*root.Context) !void {
    const row_bytes = kind.rowBytes(k).?;
    const bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * row_bytes);
    defer testing.allocator.free(bytes);
    const ref = try testing.allocator.alloc(f32, n * k);
    defer testing.allocator.free(ref);
    const natural = testMatrix(kind, n, k, rand, bytes, ref).w;
    try testing.expect(canRepack(&natural));
    const packed_bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * repackedRowBytes(&natural));
    defer testing.allocator.free(packed_bytes);
    const repacked = repack(contexts[1], &natural, packed_bytes.ptr);
    try testing.expect(!canRepack(&repacked));

    var row: [k]f32 = undefined;
    for (0..n) |r| {
        getRow(&repacked, r, &row);
        try testing.expectEqualSlices(f32, ref[r * k ..][0..k], &row);
    }
    var x: [max_tokens * k]f32 = undefined;
    for (&x) |*v| v.* = rand.floatNorm(f32);
    for (contexts) |ctx| for ([_]usize{ 1, 3, max_tokens }) |n_tokens| {
        var want: [max_tokens * n]f32 = undefined;
        var got: [max_tokens * n]f32 = undefined;
        const cfg = Config{ .token_chunk_bytes = 10 * 1024, .row_chunk_decode = 5, .row_chunk_gemm = 6 };
        try matmulWith(ctx, &natural, &x, k, &want, n, n_tokens, cfg);
        try matmulWith(ctx, &repacked, &x, k, &got, n, n_tokens, cfg);
        if (n_tokens > 1 or kind == .iq3_s) {
            // IQ3_S's codes multiply the same integers in the same order, one token too.
            try testing.expectEqualSlices(f32, want[0 .. n_tokens * n], got[0 .. n_tokens * n]);
        } else for (0..n) |r| {
            try testing.expectApproxEqAbs(want[r], got[r], 4e-5 * @max(1, @abs(want[r])));
        }
    };
}

fn testContext(n_threads: usize) !*root.Context {
    const ctx = try testing.allocator.create(root.Context);
    ctx.* = .{ .pool = undefined };
    try ctx.pool.init(n_threads);
    return ctx;
}

fn freeTestContext(ctx: *root.Context) void {
    ctx.pool.deinit();
    ctx.freeScratch();
    testing.allocator.destroy(ctx);
}

test "matmul of every weight type matches dequantize-then-multiply, at tile and chunk edges" {
    var prng = common.testRng(31);
    const rand = prng.random();
    const n = 37; // not a multiple of any tile or chunk
    const max_tokens = 64;
    const x_pad = 3;
    const y_pad = 2;
    const contexts = [2]*root.Context{ try testContext(1), try testContext(2) };
    defer for (contexts) |c| freeTestContext(c);

    const kinds = [_]GgmlType{ .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .mxfp4, .f32, .f16, .bf16, .iq3_s, .iq3_xxs, .iq2_xxs, .iq2_xs, .iq2_s, .iq1_s, .iq1_m };
    for (kinds) |kind| {
        const k: usize = switch (kind) {
            .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .iq3_s, .iq3_xxs, .iq2_xxs, .iq2_xs, .iq2_s, .iq1_s, .iq1_m => 512,
            .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .mxfp4 => 352, // one whole super-block and a padded one
            else => 45,
        };
        const bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * kind.rowBytes(k).?);
        defer testing.allocator.free(bytes);
        const ref = try testing.allocator.alloc(f32, n * k);
        defer testing.allocator.free(ref);
        const m = testMatrix(kind, n, k, rand, bytes, ref);

        const x_stride = k + x_pad;
        const x = try testing.allocator.alloc(f32, max_tokens * x_stride);
        defer testing.allocator.free(x);
        for (x, 0..) |*v, i| v.* = rand.floatNorm(f32) * @as(f32, if (i % 53 == 0) 6 else 1);

        // want[t][r]: exact products with the partner activation; bound[t][r]: how far the
        // product with the raw activation may be from it.
        var want: [max_tokens][n]f64 = undefined;
        var bound: [max_tokens][n]f64 = undefined;
        var raw: [max_tokens][n]f64 = undefined;
        var x_partner: [512]f32 = undefined;
        for (0..max_tokens) |t| {
            const xt = x[t * x_stride ..][0..k];
            partnerActivation(kind, xt, x_partner[0..k]);
            for (0..n) |r| {
                var s: f64 = 0;
                var e: f64 = 0;
                var plain: f64 = 0;
                for (0..k) |c| {
                    const wv: f64 = m.ref[r * k + c];
                    s += wv * x_partner[c];
                    e += @abs(wv) * @abs(@as(f64, x_partner[c]) - xt[c]);
                    plain += wv * xt[c];
                }
                want[t][r] = s + q8_1Correction(&m.w, r, xt);
                bound[t][r] = e;
                raw[t][r] = plain;
            }
        }

        for (contexts) |ctx| for ([_]usize{ 1, 3, max_tokens }) |n_tokens| {
            const y_stride = n + y_pad;
            var y: [max_tokens * (n + y_pad)]f32 = @splat(std.math.nan(f32));
            const cfg = Config{ .token_chunk_bytes = 10 * 1024, .row_chunk_decode = 5, .row_chunk_gemm = 6 };
            try matmulWith(ctx, &m.w, x.ptr, x_stride, &y, y_stride, n_tokens, cfg);
            for (0..n_tokens) |t| {
                for (0..n) |r| {
                    const got: f64 = y[t * y_stride + r];
                    const tol = 2e-5 * (1 + @abs(want[t][r]) + bound[t][r]);
                    testing.expectApproxEqAbs(want[t][r], got, tol) catch |err| {
                        std.debug.print("{s}: {d} tokens, {d} threads, row {d} token {d}\n", .{ @tagName(kind), n_tokens, ctx.pool.n_threads, r, t });
                        return err;
                    };
                    try testing.expect(@abs(raw[t][r] - got) <= 1.001 * bound[t][r] + tol);
                }
                for (n..y_stride) |r| try testing.expect(std.math.isNan(y[t * y_stride + r]));
            }
            for (y[n_tokens * y_stride ..]) |v| try testing.expect(std.math.isNan(v));
        };

        var row: [512]f32 = undefined;
        for ([_]usize{ 0, 17, n - 1 }) |r| {
            getRow(&m.w, r, &row);
            try testing.expectEqualSlices(f32, m.ref[r * k ..][0..k], row[0..k]);
        }
    }
}

test "matvec gives every token exactly the one-token matmul's result (every type, repacked or not)" {
    var prng = common.testRng(41);
    const rand = prng.random();
    const n = 80; // 10 or 5 repacked row groups; not a multiple of the row chunk below
    const max_tokens = 11; // two fused passes of 4 and one of 3
    const contexts = [2]*root.Context{ try testContext(1), try testContext(2) };
    defer for (contexts) |c| freeTestContext(c);
    const kinds = [_]GgmlType{ .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .mxfp4, .f32, .f16, .bf16, .iq3_s, .iq3_xxs, .iq2_xxs, .iq2_xs, .iq2_s, .iq1_s, .iq1_m };
    for (kinds) |kind| for ([_]bool{ false, true }) |repack_it| {
        if (repack_it and std.mem.indexOfScalar(GgmlType, &(repackable ++ super_block_kinds ++ code_kinds), kind) == null) continue;
        const k: usize = if (kind == .f32 or kind == .f16 or kind == .bf16) 45 else 512;
        const bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * kind.rowBytes(k).?);
        defer testing.allocator.free(bytes);
        const ref = try testing.allocator.alloc(f32, n * k);
        defer testing.allocator.free(ref);
        var w = testMatrix(kind, n, k, rand, bytes, ref).w;
        const packed_bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * repackedRowBytes(&w));
        defer testing.allocator.free(packed_bytes);
        if (repack_it) w = repack(contexts[0], &w, packed_bytes.ptr);
        const x_stride = k + 3;
        var x: [max_tokens * (512 + 3)]f32 = undefined;
        for (&x) |*v| v.* = rand.floatNorm(f32);
        const y_stride = n + 1;
        for (contexts) |ctx| for ([_]usize{ 2, 9, max_tokens }) |n_tokens| {
            var together: [max_tokens * (n + 1)]f32 = undefined;
            const cfg = Config{ .row_chunk_decode = 32, .each_token_alone = true };
            try matmulWith(ctx, &w, &x, x_stride, &together, y_stride, n_tokens, cfg);
            for (0..n_tokens) |t| {
                var alone: [n]f32 = undefined;
                try matmul(ctx, &w, x[t * x_stride ..].ptr, x_stride, &alone, n, 1);
                testing.expectEqualSlices(f32, &alone, together[t * y_stride ..][0..n]) catch |err| {
                    std.debug.print("{s} (repacked: {}): token {d} of {d}\n", .{ @tagName(kind), repack_it, t, n_tokens });
                    return err;
                };
            }
        };
    };
}

test "expert matmul equals each chosen expert's own matmul, one token and a batch, every type" {
    const moe = @import("moe.zig");
    var prng = common.testRng(41);
    const rand = prng.random();
    const n_expert = 5;
    const stride = 24; // rows per expert: gate 16 at first 0, "up" 8 at first 16
    const max_tokens = 9;
    const k_used = 3;
    const contexts = [2]*root.Context{ try testContext(1), try testContext(2) };
    defer for (contexts) |c| freeTestContext(c);
    const kinds = [_]GgmlType{ .q4_k, .q6_k, .q8_0, .f32, .f16, .iq3_s };
    for (kinds) |kind| for ([_]bool{ false, true }) |repack_it| {
        if (repack_it and kind != .q4_k and kind != .iq3_s) continue;
        const k: usize = if (kind == .q8_0 or kind == .f32 or kind == .f16) 64 else 512;
        const n = n_expert * stride;
        const bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * kind.rowBytes(k).?);
        defer testing.allocator.free(bytes);
        const ref = try testing.allocator.alloc(f32, n * k);
        defer testing.allocator.free(ref);
        const natural = testMatrix(kind, n, k, rand, bytes, ref).w;
        // IQ3_S's codes rows are longer than its blocks': the expert views must follow them.
        const packed_bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * repackedRowBytes(&natural));
        defer testing.allocator.free(packed_bytes);
        const w = if (repack_it) repack(contexts[1], &natural, packed_bytes.ptr) else natural;
        var x: [max_tokens * k_used * 512]f32 = undefined;
        for (&x) |*v| v.* = rand.floatNorm(f32);
        for (contexts) |ctx| for ([_]usize{ 1, max_tokens }) |n_tokens| for ([_]bool{ false, true }) |per_slot| {
            var ids: [max_tokens * k_used]i32 = undefined;
            for (0..n_tokens) |t| {
                // k distinct experts per token, not all experts used when there is one token
                const base = rand.uintLessThan(usize, n_expert);
                for (0..k_used) |i| ids[t * k_used + i] = @intCast((base + 2 * i) % n_expert);
            }
            for ([_][2]usize{ .{ 0, 16 }, .{ 16, 8 } }) |range| {
                const rows = ExpertRows{ .stride = stride, .first = range[0], .count = range[1] };
                var buf: [4096]u8 align(64) = undefined;
                const ex = try moe.group(&ids, n_tokens, k_used, n_expert, per_slot, &buf, rows);
                const n_inputs = if (per_slot) n_tokens * k_used else n_tokens;
                const y_stride = 19;
                var got: [max_tokens * k_used * 19]f32 = @splat(std.math.nan(f32));
                try matmulExperts(ctx, &w, &x, k, n_inputs, &got, y_stride, &ex, n_tokens == 1);
                for (0..n_tokens * k_used) |pair| {
                    const e: usize = @intCast(ids[pair]);
                    const input = if (per_slot) pair else pair / k_used;
                    var want: [16]f32 = undefined;
                    var view = natural;
                    view.data = natural.data + (e * stride + range[0]) * natural.row_bytes;
                    view.ne1 = range[1];
                    try matmul(ctx, &view, x[input * k ..].ptr, k, &want, range[1], 1);
                    for (0..range[1]) |r| {
                        const g = got[pair * y_stride + r];
                        testing.expectApproxEqAbs(want[r], g, 1e-4 * @max(1, @abs(want[r]))) catch |err| {
                            std.debug.print("{s} repacked={} tokens={d} per_slot={} pair {d} row {d}\n", .{ @tagName(kind), repack_it, n_tokens, per_slot, pair, r });
                            return err;
                        };
                    }
                    for (range[1]..y_stride) |r| try testing.expect(std.math.isNan(got[pair * y_stride + r]));
                }
            }
        };
    };
}

test "matmul rejects a weight whose rows do not match its type" {
    const ctx = try testContext(1);
    defer freeTestContext(ctx);
    var data: [1024]u8 align(64) = @splat(0);
    var x: [256]f32 = @splat(1);
    var y: [4]f32 = undefined;
    const bad_rows = Weight{ .data = &data, .kind = .q4_k, .ne0 = 256, .ne1 = 2, .row_bytes = 100 };
    try testing.expectError(error.Failed, matmul(ctx, &bad_rows, &x, 256, &y, 2, 1));
    const unknown = Weight{ .data = &data, .kind = @fromBackingInt(@intCast(9)), .ne0 = 32, .ne1 = 2, .row_bytes = 36 };
    try testing.expectError(error.Failed, matmul(ctx, &unknown, &x, 32, &y, 2, 1));
}

test {
    _ = common;
    _ = q8_k;
    _ = q8_0;
    _ = q4_0;
    _ = q5_0;
    _ = iq4_nl;
    _ = q4_1;
    _ = q5_1;
    _ = mxfp4;
    _ = block32;
    _ = q4_k;
    _ = q5_k;
    _ = q6_k;
    _ = q2_k;
    _ = q3_k;
    _ = q3_k_x16;
    _ = q2_k_x16;
    _ = iq4_xs_x16;
    _ = iq4_xs;
    _ = kquants;
    _ = mmla;
    _ = float;
    _ = iquants;
    _ = iq3_s;
    _ = iq3_s_codes;
    _ = iq3_xxs;
    _ = iq2_xxs;
    _ = iq2_xs;
    _ = iq2_s;
    _ = iq1_s;
    _ = iq1_m;
}
