//! Matrix × activations for every weight type, and embedding-row lookup.
//!
//!   matmul(ctx, w, x, x_stride, y, y_stride, n_tokens)   y[t][r] = Σ_c w[r][c] · x[t][c]
//!   getRow(w, r, out)                                     out[c]  = w[r][c] as f32
//!
//! `w` is `ne1` rows of `ne0` values (ne0 contiguous, GGUF order); x rows hold ne0 floats,
//! y rows ne1 floats, each `*_stride` floats apart.
//!
//! Numerics follow llama.cpp's CPU backend: the activations are first converted to the weight
//! type's dot-product partner — Q8_K (blocks of 256) for Q2_K…Q6_K and IQ4_XS, Q8_0 for Q8_0, values
//! rounded to F16/BF16 for F16/BF16, plain f32 for F32 — and the products are integer (quantized
//! types) or f32 (float types). The formats live in `quant/`.
//!
//! Work is split over the context's pool by rows of `w` (dynamic chunks). One token (decode) is
//! memory-bound: each format's `dotRows` streams several weight rows at once against the quantized
//! activation. Q4_K weights repacked at load (`repack`, `quant/q4_k_x8.zig`) go 8 interleaved rows
//! at a time: the natural layout's Q4_K dot issues too many instructions to keep up with DRAM. Several tokens (prompt) use tiles of rows × tokens so one decoded weight chunk
//! serves several tokens: K-quant rows are first unpacked once per token chunk into a per-worker
//! panel (`kquants.Panel`), then every tile of the chunk reads the panel; Q8_0 and float
//! weights are read directly. Token chunks are sized so their activations stay in L2.
const std = @import("std");
const types = @import("types.zig");
const pool_mod = @import("pool.zig");
const root = @import("root.zig");
const os = @import("os.zig");
const common = @import("quant/common.zig");
const q8_k = @import("quant/q8_k.zig");
const q8_0 = @import("quant/q8_0.zig");
const q4_k = @import("quant/q4_k.zig");
const q5_k = @import("quant/q5_k.zig");
const q6_k = @import("quant/q6_k.zig");
const q2_k = @import("quant/q2_k.zig");
const q3_k = @import("quant/q3_k.zig");
const iq4_xs = @import("quant/iq4_xs.zig");
const q4_k_x8 = @import("quant/q4_k_x8.zig");
const kquants = @import("quant/kquants.zig");
const float = @import("quant/float.zig");

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
    if (w.kind.rowBytes(w.ne0) != w.row_bytes) return root.fail("matmul: weight rows of {d} bytes do not fit type {d} with {d} values", .{ w.row_bytes, @intFromEnum(w.kind), w.ne0 });
    if (n_tokens > 1 and x_stride < w.ne0) return root.fail("matmul: activation stride {d} is shorter than a row ({d})", .{ x_stride, w.ne0 });
    if (n_tokens > 1 and y_stride < w.ne1) return root.fail("matmul: output stride {d} is shorter than a row ({d})", .{ y_stride, w.ne1 });
    const p = Problem{ .w = w, .x = x, .x_stride = x_stride, .y = y, .y_stride = y_stride, .n_tokens = n_tokens, .cfg = cfg };
    switch (w.kind) {
        .q4_k => if (w.repacked) try runKQuant(Q4KRepacked, ctx, p) else try runKQuant(q4_k, ctx, p),
        .q5_k => try runKQuant(q5_k, ctx, p),
        .q6_k => try runKQuant(q6_k, ctx, p),
        .q2_k => try runKQuant(q2_k, ctx, p),
        .q3_k => try runKQuant(q3_k, ctx, p),
        .iq4_xs => try runKQuant(iq4_xs, ctx, p),
        .q8_0 => try runQ8_0(ctx, p),
        .f32 => try runFloat(f32, ctx, p),
        .f16 => try runFloat(f16, ctx, p),
        .bf16 => try runFloat(float.Bf16, ctx, p),
        _ => return root.fail("matmul: weight type {d} is not supported", .{@intFromEnum(w.kind)}),
    }
}

/// Whether `repack` can take the weight: Q4_K in whole groups of 8 rows.
pub fn canRepack(w: *const Weight) bool {
    return w.kind == .q4_k and !w.repacked and w.ne1 % q4_k_x8.rows == 0;
}

/// Copies a Q4_K weight into `dst` (`ne1 · row_bytes` bytes, 64-byte aligned) in the 8-row
/// interleaved layout of `quant/q4_k_x8.zig`, split over the pool; returns the repacked weight.
pub fn repack(ctx: *root.Context, w: *const Weight, dst: [*]align(64) u8) Weight {
    std.debug.assert(canRepack(w));
    const Job = struct {
        w: *const Weight,
        dst: [*]align(64) u8,
        fn run(j: *const @This(), worker: usize, n_workers: usize) void {
            const nb = j.w.ne0 / 256;
            const s = pool_mod.share(j.w.ne1 / q4_k_x8.rows, 1, worker, n_workers);
            const groups: [*]q4_k_x8.Group = @ptrCast(j.dst);
            // Fault this worker's share of the copy in with one call: cheaper than a fault per page.
            const page = os.pageSize();
            const first = std.mem.alignBackward(usize, @intFromPtr(groups + s.begin * nb), page);
            const last = std.mem.alignForward(usize, @intFromPtr(groups + s.end * nb), page);
            if (last > first) os.populateWrite(@ptrFromInt(first), last - first);
            for (s.begin..s.end) |rg| q4_k_x8.repackRowGroup(j.w.data, j.w.row_bytes, nb, rg, groups + rg * nb);
        }
    };
    const job = Job{ .w = w, .dst = dst };
    ctx.pool.run(Job, &job, Job.run);
    var out = w.*;
    out.data = dst;
    out.repacked = true;
    return out;
}

pub fn getRow(w: *const Weight, r: usize, out: [*]f32) void {
    if (w.repacked) return dequantizeRepackedRow(w, r, out);
    const row = w.row(r);
    switch (w.kind) {
        .f32 => float.getRow(f32, @ptrCast(@alignCast(row)), out, w.ne0),
        .f16 => float.getRow(f16, @ptrCast(@alignCast(row)), out, w.ne0),
        .bf16 => float.getRow(float.Bf16, @ptrCast(@alignCast(row)), out, w.ne0),
        .q8_0 => dequantizeRow(q8_0, row, out, w.ne0),
        .q4_k => dequantizeRow(q4_k, row, out, w.ne0),
        .q5_k => dequantizeRow(q5_k, row, out, w.ne0),
        .q6_k => dequantizeRow(q6_k, row, out, w.ne0),
        .q2_k => dequantizeRow(q2_k, row, out, w.ne0),
        .q3_k => dequantizeRow(q3_k, row, out, w.ne0),
        .iq4_xs => dequantizeRow(iq4_xs, row, out, w.ne0),
        // Registration (root.zig) only accepts the types above.
        _ => unreachable,
    }
}

fn dequantizeRepackedRow(w: *const Weight, r: usize, out: [*]f32) void {
    const nb = w.ne0 / 256;
    const groups: [*]const q4_k_x8.Group = @ptrCast(@alignCast(w.data));
    for (0..nb) |b| {
        const blk = q4_k_x8.block(&groups[r / q4_k_x8.rows * nb + b], r % q4_k_x8.rows);
        q4_k.dequantize(&blk, out[b * 256 ..][0..256]);
    }
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
    cfg: Config,

    fn prefetchAhead(p: Problem) usize {
        return (p.cfg.prefetch_bytes + p.w.row_bytes - 1) / p.w.row_bytes * p.w.row_bytes;
    }

    fn out(p: Problem, t: usize, r: usize) *f32 {
        return &p.y[t * p.y_stride + r];
    }

    /// GEMM tiles (several tokens) rather than the one-token kernels run per token.
    fn tiled(p: Problem) bool {
        return p.n_tokens > 1 and !p.cfg.each_token_alone;
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
        fn run(j: *const @This(), worker: usize, n_workers: usize) void {
            const s = pool_mod.share(j.p.n_tokens, 1, worker, n_workers);
            for (s.begin..s.end) |t| convert(j.p.x + t * j.p.x_stride, j.p.w.ne0, @alignCast(j.dst + t * j.row_bytes));
        }
    };
    const job = Job{ .p = p, .dst = dst, .row_bytes = row_bytes };
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
    const Driver = struct {
        fn work(kk: *const K, worker: usize, _: usize) void {
            const p = kk.p;
            if (!p.tiled()) {
                while (kk.chunks.take()) |range| {
                    var r = range.begin;
                    const m = comptime matvecRows(K);
                    while (r + m <= range.end) : (r += m) rowsForEachToken(kk, m, r);
                    // Repacked weights come in whole groups, so this never runs for them.
                    if (m == matvec_rows) while (r < range.end) : (r += 1) rowsForEachToken(kk, 1, r);
                }
                return;
            }
            const chunk = p.tokenChunk(K.actRowBytes(p.w.ne0));
            while (kk.chunks.take()) |range| {
                var t0: usize = 0;
                while (t0 < p.n_tokens) : (t0 += chunk) {
                    const t1 = @min(p.n_tokens, t0 + chunk);
                    var r = range.begin;
                    const group = comptime groupRows(K);
                    while (r < range.end) : (r += group) {
                        const n_rows = @min(group, range.end - r);
                        kk.prepare(worker, r, n_rows);
                        var i: usize = 0;
                        while (i + tile_rows <= n_rows) : (i += tile_rows) tokenTiles(kk, worker, tile_rows, r + i, i, t0, t1);
                        while (i < n_rows) : (i += 1) tokenTiles(kk, worker, 1, r + i, i, t0, t1);
                    }
                }
            }
        }
    };
    ctx.pool.run(K, k, Driver.work);
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

fn KQuantKernel(comptime F: type) type {
    return struct {
        p: Problem,
        chunks: *pool_mod.Chunks,
        acts: [*]align(64) u8,
        panels: [*]align(64) u8,
        panel_bytes: usize,

        const Self = @This();
        const repacked = F == Q4KRepacked;
        pub const dot_rows = if (repacked) q4_k_x8.rows else matvec_rows;
        pub const group_rows = if (repacked) q4_k_x8.rows else tile_rows;

        fn actRowBytes(k: usize) usize {
            return q8_k.Row.bytes(k);
        }

        fn convert(x: [*]const f32, k: usize, dst: [*]align(64) u8) void {
            q8_k.quantize(x, k, q8_k.Row.at(dst, k, 0));
        }

        /// For the GEMM tiles: quantized, then interleaved.
        fn convertForTiles(x: [*]const f32, k: usize, dst: [*]align(64) u8) void {
            const row = q8_k.Row.at(dst, k, 0);
            q8_k.quantize(x, k, row);
            q8_k.interleave(row, k);
        }

        fn blocks(self: *const Self, r: usize) [*]const F.Block {
            return @ptrCast(@alignCast(self.p.w.row(r)));
        }

        fn act(self: *const Self, t: usize) q8_k.Row {
            return q8_k.Row.at(self.acts, self.p.w.ne0, t);
        }

        fn panel(self: *const Self, worker: usize) kquants.Panel {
            return .{ .pairs = @ptrCast(@alignCast(self.panels + worker * self.panel_bytes)), .nb = self.p.w.ne0 / 256 };
        }

        /// Repacked: the groups of the 8 rows from r (a multiple of 8).
        fn groups(self: *const Self, r: usize) [*]const q4_k_x8.Group {
            return @ptrCast(@alignCast(self.p.w.data + r * self.p.w.row_bytes));
        }

        fn dotRows(self: *const Self, comptime R: usize, r: usize, t: usize) [R]f32 {
            if (repacked) {
                if (R != q4_k_x8.rows) unreachable; // whole groups only (see `run`)
                return q4_k_x8.dotRowGroup(self.groups(r), self.act(t), self.p.w.ne0 / 256, self.p.prefetchAhead());
            }
            var rows: [R][*]const F.Block = undefined;
            inline for (0..R) |i| rows[i] = self.blocks(r + i);
            return kquants.dotRows(F, R, rows, self.act(t), self.p.w.ne0 / 256, self.p.prefetchAhead());
        }

        /// T tokens per pass over the rows, each block unpacked once for all: repacked Q4_K
        /// (`q4_k_x8.dotRowGroupTokens`) and formats with a prepared dot (`kquants.dotRowsTokens`).
        pub const fuses_tokens = repacked or @hasDecl(F, "prepare");

        fn dotRowsTokens(self: *const Self, comptime R: usize, comptime T: usize, r: usize, t: usize) [T][R]f32 {
            var acts: [T]q8_k.Row = undefined;
            inline for (0..T) |i| acts[i] = self.act(t + i);
            if (repacked) {
                if (R != q4_k_x8.rows) unreachable;
                return q4_k_x8.dotRowGroupTokens(T, self.groups(r), acts, self.p.w.ne0 / 256, self.p.prefetchAhead());
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
                    if (next_ok) common.prefetchSpan(@ptrCast(&next[b]), @sizeOf(q4_k_x8.Group));
                    q4_k_x8.unpackGroup(&src[b], dst, 0, b);
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

/// `KQuantKernel`'s format for Q4_K repacked in groups of 8 rows (`quant/q4_k_x8.zig`).
const Q4KRepacked = struct {
    pub const scheme = q4_k.scheme;
    pub const Block = q4_k.Block;
};

fn runKQuant(comptime F: type, ctx: *root.Context, p: Problem) error{Failed}!void {
    const K = KQuantKernel(F);
    const k = p.w.ne0;
    const act_bytes = K.actRowBytes(k);
    const panel_bytes = std.mem.alignForward(usize, kquants.Panel.bytes(K.group_rows, k / 256), 64);
    const acts_total = p.n_tokens * act_bytes;
    const scratch = try ctx.scratchBytes(acts_total + if (p.tiled()) nWorkers(ctx) * panel_bytes else 0);
    if (p.tiled()) prepareActivations(ctx, p, scratch.ptr, act_bytes, K.convertForTiles) else prepareActivations(ctx, p, scratch.ptr, act_bytes, K.convert);
    var chunks = pool_mod.Chunks.init(p.w.ne1, rowChunk(ctx, p, if (K.repacked) q4_k_x8.rows else 1));
    run(ctx, K, &.{ .p = p, .chunks = &chunks, .acts = scratch.ptr, .panels = @alignCast(scratch.ptr + acts_total), .panel_bytes = panel_bytes });
}

// ---------------------------------------------------------------------------------------------
// Q8_0 against Q8_0 activations: tiles read the weights in place.

const Q8_0Kernel = struct {
    p: Problem,
    chunks: *pool_mod.Chunks,
    acts: [*]align(64) u8,

    const Self = @This();

    fn actRowBytes(k: usize) usize {
        return q8_0.Row.bytes(k);
    }

    fn convert(x: [*]const f32, k: usize, dst: [*]align(64) u8) void {
        q8_0.quantize(x, k, q8_0.Row.at(dst, k, 0));
    }

    fn blocks(self: *const Self, r: usize) [*]const q8_0.Block {
        return @ptrCast(@alignCast(self.p.w.row(r)));
    }

    fn act(self: *const Self, t: usize) q8_0.Row {
        return q8_0.Row.at(self.acts, self.p.w.ne0, t);
    }

    fn dotRows(self: *const Self, comptime R: usize, r: usize, t: usize) [R]f32 {
        var rows: [R][*]const q8_0.Block = undefined;
        inline for (0..R) |i| rows[i] = self.blocks(r + i);
        return q8_0.dotRows(R, rows, self.act(t), self.p.w.ne0 / 32, self.p.prefetchAhead());
    }

    fn prepare(_: *const Self, _: usize, _: usize, _: usize) void {}

    fn tile(self: *const Self, _: usize, comptime R: usize, comptime T: usize, r: usize, _: usize, t: usize) [R][T]f32 {
        var rows: [R][*]const q8_0.Block = undefined;
        inline for (0..R) |i| rows[i] = self.blocks(r + i);
        var acts: [T]q8_0.Row = undefined;
        inline for (0..T) |i| acts[i] = self.act(t + i);
        var out: [R][T]f32 = undefined;
        q8_0.tile(R, T, rows, acts, self.p.w.ne0 / 32, &out);
        return out;
    }
};

fn runQ8_0(ctx: *root.Context, p: Problem) error{Failed}!void {
    const act_bytes = Q8_0Kernel.actRowBytes(p.w.ne0);
    const scratch = try ctx.scratchBytes(p.n_tokens * act_bytes);
    prepareActivations(ctx, p, scratch.ptr, act_bytes, Q8_0Kernel.convert);
    var chunks = pool_mod.Chunks.init(p.w.ne1, rowChunk(ctx, p, 1));
    run(ctx, Q8_0Kernel, &.{ .p = p, .chunks = &chunks, .acts = scratch.ptr });
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
            return float.dotRows(W, R, rows, self.xs + t * self.x_stride, self.p.w.ne0, self.p.prefetchAhead());
        }

        fn prepare(_: *const Self, _: usize, _: usize, _: usize) void {}

        fn tile(self: *const Self, _: usize, comptime R: usize, comptime T: usize, r: usize, _: usize, t: usize) [R][T]f32 {
            var rows: [R][*]const W = undefined;
            inline for (0..R) |i| rows[i] = self.row(r + i);
            var xs: [T][*]const f32 = undefined;
            inline for (0..T) |i| xs[i] = self.xs + (t + i) * self.x_stride;
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
            inline .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .q8_0 => |q| {
                const F = switch (q) {
                    .q4_k => q4_k,
                    .q5_k => q5_k,
                    .q6_k => q6_k,
                    .q2_k => q2_k,
                    .q3_k => q3_k,
                    .iq4_xs => iq4_xs,
                    else => q8_0,
                };
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
        .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs => {
            const row = q8_k.Row.at(&buf, k, 0);
            q8_k.quantize(x.ptr, k, row);
            for (0..k) |c| out[c] = row.d[c / 256] * @as(f32, @floatFromInt(row.qs[c]));
        },
        .q8_0 => {
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

test "repacked Q4_K gives the natural layout's products: one token to float rounding, tiles exactly" {
    var prng = common.testRng(37);
    const rand = prng.random();
    const n = 48;
    const k = 768;
    const max_tokens = 21;
    const contexts = [2]*root.Context{ try testContext(1), try testContext(2) };
    defer for (contexts) |c| freeTestContext(c);
    const row_bytes = GgmlType.q4_k.rowBytes(k).?;
    const bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * row_bytes);
    defer testing.allocator.free(bytes);
    const packed_bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * row_bytes);
    defer testing.allocator.free(packed_bytes);
    const ref = try testing.allocator.alloc(f32, n * k);
    defer testing.allocator.free(ref);
    const natural = testMatrix(.q4_k, n, k, rand, bytes, ref).w;
    try testing.expect(canRepack(&natural));
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
        if (n_tokens > 1) {
            try testing.expectEqualSlices(f32, want[0 .. n_tokens * n], got[0 .. n_tokens * n]);
        } else for (0..n) |r| {
            try testing.expectApproxEqAbs(want[r], got[r], 1e-5 * @max(1, @abs(want[r])));
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

    const kinds = [_]GgmlType{ .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .q8_0, .f32, .f16, .bf16 };
    for (kinds) |kind| {
        const k: usize = switch (kind) {
            .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs => 512,
            .q8_0 => 96,
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
                want[t][r] = s;
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

test "matvec gives every token exactly the one-token matmul's result (every type, repacked Q4_K)" {
    var prng = common.testRng(41);
    const rand = prng.random();
    const n = 40; // 5 repacked row groups; not a multiple of the row chunk below
    const max_tokens = 11; // two fused passes of 4 and one of 3
    const contexts = [2]*root.Context{ try testContext(1), try testContext(2) };
    defer for (contexts) |c| freeTestContext(c);
    const kinds = [_]GgmlType{ .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .q8_0, .f32, .f16, .bf16 };
    for (kinds) |kind| for ([_]bool{ false, true }) |repack_it| {
        if (repack_it and kind != .q4_k) continue;
        const k: usize = if (kind == .q8_0) 96 else if (kind == .f32 or kind == .f16 or kind == .bf16) 45 else 512;
        const bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * kind.rowBytes(k).?);
        defer testing.allocator.free(bytes);
        const packed_bytes = try testing.allocator.alignedAlloc(u8, .@"64", n * kind.rowBytes(k).?);
        defer testing.allocator.free(packed_bytes);
        const ref = try testing.allocator.alloc(f32, n * k);
        defer testing.allocator.free(ref);
        var w = testMatrix(kind, n, k, rand, bytes, ref).w;
        if (repack_it) w = repack(contexts[0], &w, packed_bytes.ptr);
        const x_stride = k + 3;
        var x: [max_tokens * (512 + 3)]f32 = undefined;
        for (&x) |*v| v.* = rand.floatNorm(f32);
        const y_stride = n + 1;
        for (contexts) |ctx| for ([_]usize{ 2, 9, max_tokens }) |n_tokens| {
            var together: [max_tokens * (n + 1)]f32 = undefined;
            const cfg = Config{ .row_chunk_decode = 16, .each_token_alone = true };
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

test "matmul rejects a weight whose rows do not match its type" {
    const ctx = try testContext(1);
    defer freeTestContext(ctx);
    var data: [1024]u8 align(64) = @splat(0);
    var x: [256]f32 = @splat(1);
    var y: [4]f32 = undefined;
    const bad_rows = Weight{ .data = &data, .kind = .q4_k, .ne0 = 256, .ne1 = 2, .row_bytes = 100 };
    try testing.expectError(error.Failed, matmul(ctx, &bad_rows, &x, 256, &y, 2, 1));
    const unknown = Weight{ .data = &data, .kind = @enumFromInt(2), .ne0 = 32, .ne1 = 2, .row_bytes = 18 };
    try testing.expectError(error.Failed, matmul(ctx, &unknown, &x, 32, &y, 2, 1));
}

test {
    _ = common;
    _ = q8_k;
    _ = q8_0;
    _ = q4_k;
    _ = q5_k;
    _ = q6_k;
    _ = q2_k;
    _ = q3_k;
    _ = iq4_xs;
    _ = kquants;
    _ = float;
}
