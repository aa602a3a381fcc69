//! Causal softmax attention over a KV cache in F16, Q8_0 or Q4_0, with grouped-query heads,
//! computed the flash-attention way: no score matrix larger than (query rows × 64 keys) ever
//! exists, so memory stays linear in the depth of the cache.
//!
//! Cache layout: K and V each `[position][n_head_kv · head_dim]` values of the cache type, one row
//! per position (`CacheType.rowBytes(n_head_kv · head_dim)` bytes), positions absolute (0 = first
//! token of the session); KV head h's slice of a row starts `rowBytes(h · head_dim)` bytes in:
//!   f16    2 bytes per value
//!   q8_0   blocks of 32 values in 34 bytes, `{f16 d; i8 q[32]}`   (quant/q8_0.zig)
//!   q4_0   blocks of 32 values in 18 bytes, `{f16 d; u8 q[16]}`   (quant/q4_0.zig)
//! (quantized caches need head dims that are whole blocks). Query head h reads KV head
//! h / (n_head / n_head_kv). Queries are f32 at `q + t·q_tok_stride + h·q_head_stride` (strided, so
//! the query half of attn_q's per-head [query | gate] output is read in place); the output is
//! `[t][h][head_dim]` f32.
//!
//! Work. The query rows of one KV head — its group of query heads times a tile of tokens — meet
//! the keys they may see (token t: cache rows 0..pos+t) in blocks of 64, with an online softmax:
//! each row keeps its running maximum M, sum S and unnormalised output O, rescaled by
//! exp(M_old − M_new) when the maximum grows. A prompt's items are (KV head, token tile). One
//! decoded token's items are key ranges of every KV head at once (so each reads whole cache rows,
//! front to back), split until every worker has several, and the splits' (M, S, O) are merged at
//! the end, as flash-decoding does; with few keys the heads are divided among items too.
//!
//! Inside an item, one decoded token's rows take dot products of key rows with query rows, four
//! query rows × L/4 keys per pass with one (row, key) sum per vector lane, folded into one vector
//! at the end (`sumLanes`), so a key row is widened from the cache type once per four query rows
//! (a quantized block's scale once per block) and no per-score reduction is paid; it streams
//! through the cache with prefetches ahead. Several
//! tokens (a prompt chunk) widen and transpose a block of 64 keys once, then compute the scores
//! as a register-tiled GEMM (rows × 64 keys, query values broadcast against key vectors). Either
//! way the values go into O by a register tile of rows × 64 dims, V widened per key on the fly
//! (or once per block for several tokens).
//!
//! Numerics follow llama.cpp's CPU flash attention: f32 scores, softmax and accumulators, exp
//! through `simd.expv`. With a quantized K cache llama.cpp rounds each query head through Q8_0
//! before its integer dot products; the query rows are rounded the same way here. One decoded
//! token on a Q8_0 K cache takes those integer dot products too where the CPU has AVX-512 VNNI
//! (`intGroup`); elsewhere the rounded values multiply as floats (the same products, summed in
//! another order). llama.cpp rounds the query to F16 for
//! an F16 cache when decoding one token and keeps V·softmax in an F16 accumulator there; this
//! kernel stays in f32 (see tests/parity/nodes_test.ts for what that costs in agreement).
const std = @import("std");
const builtin = @import("builtin");
const pool_mod = @import("pool.zig");
const root = @import("root.zig");
const simd = @import("simd.zig");
const q8_0 = @import("quant/q8_0.zig");
const q4_0 = @import("quant/q4_0.zig");
const common = @import("quant/common.zig");

pub const Context = root.Context;

/// KV cache element types, by GGML type id.
pub const CacheType = enum(u32) {
    f16 = 1,
    q4_0 = 2,
    q8_0 = 8,
    _,

    /// Bytes of `n` values, or null for an unknown type or a partial block.
    pub fn rowBytes(self: CacheType, n: usize) ?usize {
        return switch (self) {
            .f16 => n * 2,
            .q8_0 => if (n % 32 == 0) n / 32 * 34 else null,
            .q4_0 => if (n % 32 == 0) n / 32 * 18 else null,
            _ => null,
        };
    }

    pub fn name(self: CacheType) []const u8 {
        return std.enums.tagName(CacheType, self) orelse "unknown";
    }
};

pub const Shape = struct {
    q_tok_stride: usize,
    q_head_stride: usize,
    n_tokens: usize,
    /// Position of the first query token; token t attends to cache rows 0..pos+t.
    pos: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    scale: f32,
    k_type: CacheType = .f16,
    v_type: CacheType = .f16,
};

pub const max_head_dim = 512;
/// Keys per block of the online softmax.
const block_keys = 64;
/// Query rows a token tile aims for (tokens × query heads per KV head).
const tile_rows_target = 64;
/// How many key rows ahead decoding prefetches.
const prefetch_keys = 16;
/// Key splits are at least this long.
const min_split_keys = 512;

const has_avx512 = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512f);

/// Converts rows of k and v (f32, `kv_dim` values each, heads of `head_dim`) to the cache types
/// and writes them at cache rows pos..pos+n_tokens; quantized rows are rotated first (`rotation`).
pub fn store(k: [*]const f32, v: [*]const f32, n_tokens: usize, kv_dim: usize, head_dim: usize, k_type: CacheType, v_type: CacheType, k_cache: [*]u8, v_cache: [*]u8, pos: usize) void {
    const k_row = k_type.rowBytes(kv_dim).?;
    const v_row = v_type.rowBytes(kv_dim).?;
    for (0..n_tokens) |t| {
        storeRow(k_type, rotation(k_type, head_dim, .k), k + t * kv_dim, kv_dim, head_dim, k_cache + (pos + t) * k_row);
        storeRow(v_type, rotation(v_type, head_dim, .v), v + t * kv_dim, kv_dim, head_dim, v_cache + (pos + t) * v_row);
    }
}

fn storeRow(t: CacheType, rot: usize, x: [*]const f32, n: usize, head_dim: usize, out: [*]u8) void {
    switch (t) {
        .f16 => toHalf(x, out, n),
        inline .q8_0, .q4_0 => |q| {
            // head by head: rotated into a copy, then quantized in place in the row
            var tmp: [max_head_dim]f32 = undefined;
            var h: usize = 0;
            while (h < n) : (h += head_dim) {
                @memcpy(tmp[0..head_dim], x[h..][0..head_dim]);
                if (rot != 0) rotate(&tmp, head_dim, rot);
                const dst = out + q.rowBytes(h).?;
                if (q == .q8_0) q8_0.quantizeRow(&tmp, head_dim, dst) else q4_0.quantizeRow(&tmp, head_dim, dst);
            }
        },
        _ => unreachable, // checked by the caller
    }
}

/// llama.cpp (the pinned build) rotates what it keeps in a quantized cache by an orthonormal
/// Walsh–Hadamard matrix, which spreads outliers across a block and so shrinks the rounding error:
/// K (and, to keep Q·K, the query) in chunks of the largest power of two dividing the head dim,
/// V in chunks of 64 (and the attention output back, H·H = I) — only for head dims that are
/// multiples of 64 (`llama_kv_cache`'s `attn_rot_k`/`attn_rot_v`). This returns the chunk size,
/// or 0 for no rotation.
pub fn rotation(t: CacheType, head_dim: usize, which: enum { k, v }) usize {
    if (t == .f16 or head_dim % 64 != 0) return 0;
    if (which == .v) return 64;
    var n: usize = 64;
    while (head_dim % (2 * n) == 0) n *= 2;
    return n;
}

/// x ← H·x in chunks of n (a power of two) values: the fast Walsh–Hadamard transform (Sylvester
/// order, as ggml_gen_hadamard builds H), scaled by 1/√n.
pub fn rotate(x: [*]f32, len: usize, n: usize) void {
    var c: usize = 0;
    while (c < len) : (c += n) {
        const v = x + c;
        var h: usize = 1;
        while (h < n) : (h *= 2) {
            var i: usize = 0;
            while (i < n) : (i += 2 * h) {
                if (h >= simd.lanes) {
                    var j: usize = i;
                    while (j < i + h) : (j += simd.lanes) {
                        const a = simd.load(v + j);
                        const b = simd.load(v + j + h);
                        simd.store(v + j, a + b);
                        simd.store(v + j + h, a - b);
                    }
                } else for (i..i + h) |j| {
                    const a = v[j];
                    const b = v[j + h];
                    v[j] = a + b;
                    v[j + h] = a - b;
                }
            }
        }
        simd.scale(v, v, 1 / @sqrt(@as(f32, @floatFromInt(n))), n);
    }
}

fn toHalf(src: [*]const f32, out: [*]u8, n: usize) void {
    const dst: [*]align(1) f16 = @ptrCast(out);
    var i: usize = 0;
    while (i + 8 <= n) : (i += 8) dst[i..][0..8].* = @as(@Vector(8, f16), @floatCast(simd.load(src + i)));
    while (i < n) : (i += 1) dst[i] = @floatCast(src[i]);
}

/// L consecutive values of a row (or head slice) of cache type T, starting at value `at` (a
/// multiple of L), widened to f32.
inline fn widen(comptime T: CacheType, comptime L: usize, row: [*]const u8, at: usize) @Vector(L, f32) {
    return switch (T) {
        .f16 => @floatCast(@as(@Vector(L, f16), @as(*align(1) const [L]f16, @ptrCast(row + 2 * at)).*)),
        .q8_0 => q8_0.widen(L, row + at / 32 * 34, at % 32),
        .q4_0 => q4_0.widen(L, row + at / 32 * 18, at % 32),
        else => @compileError("not a cache type"),
    };
}

/// `n` consecutive vectors of L values of a row from value `at` (a multiple of L), widened to
/// f32. Where a quantized span covers whole blocks (`at` then on a block boundary), each block's
/// scale is converted once for its vectors (per vector, the conversion cost as much as the
/// values' own); a span shorter than a block widens vector by vector.
inline fn widenSpan(comptime T: CacheType, comptime L: usize, comptime n: usize, row: [*]const u8, at: usize) [n]@Vector(L, f32) {
    var out: [n]@Vector(L, f32) = undefined;
    if (T == .f16 or n * L < 32) {
        inline for (0..n) |v| out[v] = widen(T, L, row, at + v * L);
        return out;
    }
    const Q = if (T == .q8_0) q8_0 else q4_0;
    const per_block = 32 / L;
    if (n % per_block != 0) @compileError("widenSpan takes whole blocks");
    inline for (0..n / per_block) |b| {
        const blk = row + T.rowBytes(at + 32 * b).?;
        const d: @Vector(L, f32) = @splat(Q.blockScale(blk));
        inline for (0..per_block) |v| out[b * per_block + v] = Q.codes(L, blk, v * L) * d;
    }
    return out;
}

/// Checks a shape against what the kernel handles; the message names the problem.
pub fn validate(s: Shape) error{Failed}!void {
    if (s.head_dim == 0 or s.head_dim > max_head_dim or s.head_dim % 8 != 0) return root.fail("head dim {d} must be a multiple of 8 up to {d}", .{ s.head_dim, max_head_dim });
    if (s.n_head_kv == 0 or s.n_head % s.n_head_kv != 0) return root.fail("{d} query heads cannot share {d} KV heads", .{ s.n_head, s.n_head_kv });
    inline for (.{ s.k_type, s.v_type }, .{ "K", "V" }) |t, which| {
        if (t.rowBytes(0) == null) return root.fail("unknown {s} cache type {d}", .{ which, @backingInt(t) });
        if (t.rowBytes(s.head_dim) == null) return root.fail("a {s} {s} cache needs a head dim that is a multiple of 32, not {d}", .{ t.name(), which, s.head_dim });
    }
}

pub fn attend(ctx: *root.Context, s: Shape, q: [*]const f32, k_cache: [*]const u8, v_cache: [*]const u8, out: [*]f32) error{Failed}!void {
    try validate(s);
    if (s.n_tokens == 0) return;
    const wide = has_avx512 and s.head_dim % 16 == 0;
    switch (s.k_type) {
        inline .f16, .q8_0, .q4_0 => |kt| switch (s.v_type) {
            inline .f16, .q8_0, .q4_0 => |vt| {
                if (wide) return Kernel(kt, vt, 16).run(ctx, s, q, k_cache, v_cache, out);
                return Kernel(kt, vt, 8).run(ctx, s, q, k_cache, v_cache, out);
            },
            else => unreachable,
        },
        else => unreachable,
    }
}

/// The attention kernel for one pair of cache types and a vector width of L floats.
fn Kernel(comptime KT: CacheType, comptime VT: CacheType, comptime L: usize) type {
    return struct {
        const Vec = @Vector(L, f32);
        /// Score GEMM tile: rows × `qk_vecs` key vectors (6 × 4 = 24 of AVX-512's 32 registers).
        const qk_rows = if (L == 16) 6 else 2;
        const qk_vecs = 4;
        /// Value tile: rows × `pv_vecs` vectors of dims.
        const pv_rows = if (L == 16) 6 else 2;
        const pv_vecs = 4;
        /// Query rows × keys per pass of the key-row dot products (one sum per lane).
        const dot_rows = 4;
        const dot_keys = L / dot_rows;
        /// Whether one decoded token may score a Q8_0 K cache with integer dot products
        /// (`intGroup`): 64-byte `vpdpbusd`, so AVX-512 VNNI only; head dims in whole quads of
        /// blocks (128 values) at run time.
        const int_capable = KT == .q8_0 and L == 16 and common.has_vnni512;
        /// Blocks of 32 values per lane group of `intGroup` (dot_rows rows × quad_blocks = 16 lanes).
        const quad_blocks = 4;

        /// Sizes of one run, shared by every item.
        const Plan = struct {
            s: Shape,
            group: usize,
            tile_tokens: usize,
            n_tiles: usize,
            splits: usize,
            /// KV heads per item (consecutive ones): every head when decoding, one for a prompt.
            heads: usize,
            /// Query rows of one head in a tile, and the scratch rows each head takes (padded to
            /// whole `dot_rows` passes).
            tile_rows: usize,
            head_rows: usize,
            gemm: bool,
            /// Decode scores with integer dots (`intGroup`): `int_capable` and whole quads.
            int_keys: bool,
            k_row: usize,
            v_row: usize,
            k_head: usize,
            v_head: usize,
            worker_floats: usize,

            fn init(s: Shape, n_workers: usize) Plan {
                const group = s.n_head / s.n_head_kv;
                const tile_tokens = @max(1, @min(s.n_tokens, tile_rows_target / group));
                const n_tiles = (s.n_tokens + tile_tokens - 1) / tile_tokens;
                const tile_rows = tile_tokens * group;
                // One token: an item takes every KV head of a key range, so it reads whole cache
                // rows front to back (the heads' slices lie side by side in a row; one head's
                // slices alone are a short strided read per row, which the hardware prefetchers
                // follow poorly: with a Q8_0 cache that made decoding at depth latency-bound).
                // The keys are split until every worker has several items, keeping splits long;
                // when the keys are too few for that, the heads are split too. Several tokens are
                // never split, and always take the GEMM path, one head per item: then each
                // token's result is the same whatever else is in the batch (the score and value
                // sums run in one order per row, blocks start at key 0), which batched serving
                // relies on (a prompt evaluated in one call or in chunks gives identical logits).
                var splits: usize = 1;
                var heads: usize = 1;
                const max_keys = s.pos + s.n_tokens;
                if (s.n_tokens == 1) {
                    heads = s.n_head_kv;
                    while (n_workers > 1 and s.n_head_kv / heads * splits < 4 * n_workers) {
                        if (max_keys / (2 * splits) >= min_split_keys) {
                            splits *= 2;
                        } else if (heads % 2 == 0) {
                            heads /= 2;
                        } else break;
                    }
                }
                const gemm = s.n_tokens > 1;
                const kv_dim = s.n_head_kv * s.head_dim;
                const d = s.head_dim;
                const head_rows = std.mem.alignForward(usize, tile_rows, dot_rows);
                const padded = heads * head_rows;
                var floats = 2 * round(padded * d) + round(padded * block_keys) + 2 * round(padded);
                if (gemm) floats += 2 * round(d * block_keys);
                const int_keys = int_capable and !gemm and d % (32 * quad_blocks) == 0;
                if (int_keys) floats += round(padded * d / 4) + 2 * round(padded * d / 32);
                return .{
                    .s = s,
                    .group = group,
                    .tile_tokens = tile_tokens,
                    .n_tiles = n_tiles,
                    .splits = splits,
                    .heads = heads,
                    .tile_rows = tile_rows,
                    .head_rows = head_rows,
                    .gemm = gemm,
                    .int_keys = int_keys,
                    .k_row = KT.rowBytes(kv_dim).?,
                    .v_row = VT.rowBytes(kv_dim).?,
                    .k_head = KT.rowBytes(d).?,
                    .v_head = VT.rowBytes(d).?,
                    .worker_floats = floats,
                };
            }

            fn items(p: Plan) usize {
                return p.s.n_head_kv / p.heads * p.n_tiles * p.splits;
            }

            fn partialFloats(p: Plan) usize {
                return p.heads * p.tile_rows * (p.s.head_dim + 2);
            }

            /// Item i's partial result for row r of its head hh (a tile of `rows` rows per head):
            /// [M, S, O[0..d]], written by `Job.item`, combined by `merge`.
            fn partialRow(p: Plan, partials: [*]f32, i: usize, hh: usize, rows: usize, r: usize) [*]f32 {
                return partials + i * p.partialFloats() + (hh * rows + r) * (p.s.head_dim + 2);
            }

            /// The (KV heads, token tile) an item works on, key splits aside: heaviest tiles
            /// (the last tokens see the most keys) first.
            fn itemTile(p: Plan, i: usize) struct { first_head: usize, t0: usize, t1: usize } {
                const rest = i / p.splits;
                const head_groups = p.s.n_head_kv / p.heads;
                const tile = p.n_tiles - 1 - rest / head_groups;
                const t0 = tile * p.tile_tokens;
                return .{ .first_head = rest % head_groups * p.heads, .t0 = t0, .t1 = @min(p.s.n_tokens, t0 + p.tile_tokens) };
            }

            /// Query row r of head `head`'s rows in a tile starting at token t0: its token and query head.
            fn rowOf(p: Plan, head: usize, t0: usize, r: usize) struct { t: usize, h: usize } {
                return .{ .t = t0 + r / p.group, .h = head * p.group + r % p.group };
            }
        };

        /// One worker's buffers, carved from the context's scratch memory.
        const Scratch = struct {
            q: [*]f32, // [rows][d] the tile's query rows (rounded through Q8_0 for a quantized K), then zero rows up to a multiple of dot_rows
            o: [*]f32, // [rows][d] unnormalised outputs
            sc: [*]f32, // [rows][block_keys] scores, then softmax numerators
            m: [*]f32, // [rows] running maxima
            l: [*]f32, // [rows] running sums
            kt: [*]f32, // [d][block_keys] widened, transposed keys (GEMM tiles only)
            vw: [*]f32, // [block_keys][d] widened values (GEMM tiles only)
            // The query rows as `intGroup` reads them (`int_keys` only), for each group g of
            // dot_rows rows and quad Q of blocks 4Q..4Q+3, lane l = j·4 + b for row 4g+j, block 4Q+b:
            qi: [*]@Vector(64, i8), // [g][Q][t < 8] lane·4 + e: Q8_0 code 4t + e of the lane's row and block
            qb: [*]i32, // [g][Q][lane] −128 · Σ codes of the lane's block (cancels K's +128 bias)
            qd: [*]f32, // [g][Q][lane] the block's Q8_0 scale times the attention scale

            fn at(base: [*]f32, p: Plan) Scratch {
                var next = base;
                const take = struct {
                    fn f(n: *[*]f32, count: usize) [*]f32 {
                        const here = n.*;
                        n.* += round(count);
                        return here;
                    }
                }.f;
                const d = p.s.head_dim;
                const padded = p.heads * p.head_rows;
                return .{
                    .q = take(&next, padded * d),
                    .o = take(&next, padded * d),
                    .sc = take(&next, padded * block_keys),
                    .m = take(&next, padded),
                    .l = take(&next, padded),
                    .kt = if (p.gemm) take(&next, d * block_keys) else undefined,
                    .vw = if (p.gemm) take(&next, d * block_keys) else undefined,
                    .qi = if (p.int_keys) @ptrCast(@alignCast(take(&next, padded * d / 4))) else undefined,
                    .qb = if (p.int_keys) @ptrCast(take(&next, padded * d / 32)) else undefined,
                    .qd = if (p.int_keys) take(&next, padded * d / 32) else undefined,
                };
            }

            /// The rows of the item's KV head `hh` (0-based within the item): `head_rows` rows
            /// from row hh·head_rows.
            fn head(w: Scratch, p: Plan, hh: usize) Scratch {
                const r0 = hh * p.head_rows;
                const d = p.s.head_dim;
                return .{
                    .q = w.q + r0 * d,
                    .o = w.o + r0 * d,
                    .sc = w.sc + r0 * block_keys,
                    .m = w.m + r0,
                    .l = w.l + r0,
                    .kt = w.kt,
                    .vw = w.vw,
                    .qi = if (p.int_keys) w.qi + r0 * d / 64 else undefined,
                    .qb = if (p.int_keys) w.qb + r0 * d / 32 else undefined,
                    .qd = if (p.int_keys) w.qd + r0 * d / 32 else undefined,
                };
            }
        };

        const Job = struct {
            plan: Plan,
            q: [*]const f32,
            kc: [*]const u8,
            vc: [*]const u8,
            out: [*]f32,
            scratch: [*]f32,
            partials: [*]f32,
            chunks: *pool_mod.Chunks,

            fn run(j: *const Job, worker: usize, _: usize) void {
                const w = Scratch.at(j.scratch + worker * j.plan.worker_floats, j.plan);
                while (j.chunks.take()) |range| for (range.begin..range.end) |i| j.item(i, w);
            }

            /// Item i: one key split of `heads` KV heads × a token tile (`Plan.itemTile`).
            fn item(j: *const Job, i: usize, w: Scratch) void {
                const p = j.plan;
                const s = p.s;
                const d = s.head_dim;
                const split = i % p.splits;
                const tile = p.itemTile(i);
                const rows = (tile.t1 - tile.t0) * p.group; // per head
                const visible = s.pos + tile.t1; // keys any row of the tile may see
                const split_len = std.mem.alignForward(usize, (visible + p.splits - 1) / p.splits, block_keys);
                const k_begin = @min(visible, split * split_len);
                const k_end = @min(visible, k_begin + split_len);

                for (0..p.heads) |hh| {
                    const wh = w.head(p, hh);
                    if (p.int_keys) {
                        // padding rows score zero
                        @memset(wh.qi[0 .. p.head_rows * d / 64], @splat(0));
                        @memset(wh.qb[0 .. p.head_rows * d / 32], 0);
                        @memset(wh.qd[0 .. p.head_rows * d / 32], 0);
                    }
                    for (0..rows) |r| {
                        const at = p.rowOf(tile.first_head + hh, tile.t0, r);
                        const codes = loadQuery(j.q + at.t * s.q_tok_stride + at.h * s.q_head_stride, wh.q + r * d, d);
                        if (p.int_keys) packQuery(&codes, wh, r, d, s.scale);
                    }
                    @memset(wh.q[rows * d .. p.head_rows * d], 0);
                    @memset(wh.o[0 .. rows * d], 0);
                    @memset(wh.m[0..rows], -std.math.inf(f32));
                    @memset(wh.l[0..rows], 0);
                }

                const kc = j.kc + tile.first_head * p.k_head;
                const vc = j.vc + tile.first_head * p.v_head;
                var kb = k_begin;
                while (kb < k_end) : (kb += block_keys) {
                    const nk = @min(block_keys, k_end - kb);
                    if (p.gemm) {
                        transposeKeys(kc + kb * p.k_row, p, nk, w.kt);
                        gemmScores(w, rows, d, s.scale);
                        widenValues(vc + kb * p.v_row, p, nk, w.vw);
                    } else {
                        dotScores(kc + kb * p.k_row, vc + kb * p.v_row, p, nk, w, rows, s.scale);
                    }
                    for (0..p.heads) |hh| {
                        const wh = w.head(p, hh);
                        for (0..rows) |r| {
                            // token t sees keys < pos + t + 1
                            const limit = s.pos + tile.t0 + r / p.group + 1;
                            softmaxStep(wh, r, nk, if (limit > kb) @min(nk, limit - kb) else 0, d);
                        }
                        if (p.gemm) {
                            valueTiles(true, wh, rows, nk, d, w.vw, d);
                        } else {
                            valueTiles(false, wh, rows, nk, d, vc + hh * p.v_head + kb * p.v_row, p.v_row);
                        }
                    }
                }

                for (0..p.heads) |hh| {
                    const wh = w.head(p, hh);
                    if (p.splits == 1) {
                        for (0..rows) |r| {
                            const at = p.rowOf(tile.first_head + hh, tile.t0, r);
                            const inv = if (wh.l[r] == 0) 0 else 1 / wh.l[r];
                            const dst = j.out + (at.t * s.n_head + at.h) * d;
                            simd.scale(wh.o + r * d, dst, inv, d);
                            unrotateOutput(dst, d);
                        }
                    } else {
                        for (0..rows) |r| {
                            const row = p.partialRow(j.partials, i, hh, rows, r);
                            row[0] = wh.m[r];
                            row[1] = wh.l[r];
                            @memcpy(row[2..][0..d], wh.o[r * d ..][0..d]);
                        }
                    }
                }
            }
        };

        fn run(ctx: *root.Context, s: Shape, q: [*]const f32, kc: [*]const u8, vc: [*]const u8, out: [*]f32) error{Failed}!void {
            const n_workers = ctx.pool.n_spawned + 1;
            const plan = Plan.init(s, n_workers);
            const partial_floats = if (plan.splits > 1) plan.items() * round(plan.partialFloats()) else 0;
            const scratch = try ctx.scratchBytes((n_workers * plan.worker_floats + partial_floats) * @sizeOf(f32));
            const base: [*]f32 = @ptrCast(@alignCast(scratch.ptr));
            var chunks = pool_mod.Chunks.init(plan.items(), 1);
            const job = Job{ .plan = plan, .q = q, .kc = kc, .vc = vc, .out = out, .scratch = base, .partials = base + n_workers * plan.worker_floats, .chunks = &chunks };
            ctx.pool.run(Job, &job, Job.run);
            if (plan.splits > 1) merge(&job);
        }

        /// Combines each (heads, tile)'s key splits: M = max M_s, S = Σ S_s·e^(M_s−M), O likewise.
        fn merge(j: *const Job) void {
            const p = j.plan;
            const s = p.s;
            const d = s.head_dim;
            var i: usize = 0;
            while (i < p.items()) : (i += p.splits) {
                const tile = p.itemTile(i);
                const rows = (tile.t1 - tile.t0) * p.group;
                for (0..p.heads) |hh| for (0..rows) |r| {
                    var m: f32 = -std.math.inf(f32);
                    for (0..p.splits) |sp| m = @max(m, p.partialRow(j.partials, i + sp, hh, rows, r)[0]);
                    const at = p.rowOf(tile.first_head + hh, tile.t0, r);
                    const dst = j.out + (at.t * s.n_head + at.h) * d;
                    @memset(dst[0..d], 0);
                    var total: f32 = 0;
                    for (0..p.splits) |sp| {
                        const row = p.partialRow(j.partials, i + sp, hh, rows, r);
                        if (row[1] == 0) continue;
                        const f = simd.expScalar(row[0] - m);
                        total += row[1] * f;
                        axpy(dst, row + 2, f, d);
                    }
                    simd.scale(dst, dst, if (total == 0) 0 else 1 / total, d);
                    unrotateOutput(dst, d);
                };
            }
        }

        /// Values come out of a rotated V cache rotated: turn the output row back.
        fn unrotateOutput(row: [*]f32, d: usize) void {
            const rot = rotation(VT, d, .v);
            if (rot != 0) rotate(row, d, rot);
        }

        const QueryCodes = [max_head_dim / 32 * 34]u8;

        /// A query head row into the tile, rounded through Q8_0 when K is quantized (llama.cpp
        /// quantizes the query to K's dot-product partner before the integer dots); returns the
        /// Q8_0 row (undefined for an F16 K).
        fn loadQuery(src: [*]const f32, dst: [*]f32, d: usize) QueryCodes {
            var buf: QueryCodes = undefined;
            @memcpy(dst[0..d], src[0..d]);
            if (KT == .f16) return buf;
            const rot = rotation(KT, d, .k);
            if (rot != 0) rotate(dst, d, rot);
            q8_0.quantizeRow(dst, d, &buf);
            var c: usize = 0;
            while (c < d) : (c += L) simd.storeN(L, dst + c, widen(.q8_0, L, &buf, c));
            return buf;
        }

        /// Row r's Q8_0 query into `intGroup`'s arrays (see `Scratch.qi`).
        fn packQuery(codes: *const QueryCodes, w: Scratch, r: usize, d: usize, scale: f32) void {
            const g = r / dot_rows;
            const quads = d / (32 * quad_blocks);
            for (0..d / 32) |b| {
                const blk = codes[34 * b ..];
                const at = g * quads + b / quad_blocks;
                const lane = r % dot_rows * quad_blocks + b % quad_blocks;
                const qi: [*]u8 = @ptrCast(w.qi + at * 8);
                var total: i32 = 0;
                for (0..32) |e| {
                    const c: i8 = @bitCast(blk[2 + e]);
                    qi[e / 4 * 64 + lane * 4 + e % 4] = blk[2 + e];
                    total += c;
                }
                w.qb[at * 16 + lane] = -128 * total;
                w.qd[at * 16 + lane] = q8_0.blockScale(blk.ptr) * scale;
            }
        }

        /// Scores of `nk` key rows against the tile's rows, for each of the item's heads:
        /// `dot_rows` query rows × `dot_keys` keys per pass, one (row, key) sum per lane, folded
        /// into one vector at the end (`sumLanes`). Query rows are padded with zeros to whole
        /// passes. Keys go in the outer loop, heads inside, so the cache is read row by row, front
        /// to back. Decoding streams through the cache: each key prefetches its heads' slice of
        /// the key row `prefetch_keys` ahead and of its own value row (read by `valueTiles` once
        /// the block's scores are done).
        fn dotScores(keys: [*]const u8, values: [*]const u8, p: Plan, nk: usize, w: Scratch, rows: usize, scale: f32) void {
            @setEvalBranchQuota(4000);
            const d = p.s.head_dim;
            var k0: usize = 0;
            while (k0 < nk) : (k0 += dot_keys) {
                inline for (0..dot_keys) |i| {
                    const k = k0 + i;
                    if (k < nk) {
                        prefetchSpan(keys + (k + prefetch_keys) * p.k_row, p.heads * p.k_head);
                        prefetchSpan(values + k * p.v_row, p.heads * p.v_head);
                    }
                }
                for (0..p.heads) |hh| {
                    var krows: [dot_keys][*]const u8 = undefined;
                    inline for (0..dot_keys) |i| krows[i] = if (k0 + i < nk) keys + (k0 + i) * p.k_row + hh * p.k_head else &zero_row;
                    const wh = w.head(p, hh);
                    var r: usize = 0;
                    if (int_capable and p.int_keys) {
                        while (r < rows) : (r += dot_rows) intGroup(krows, wh, r, k0, d);
                    } else {
                        while (r < rows) : (r += dot_rows) dotGroup(krows, wh, r, k0, d, scale);
                    }
                }
            }
        }

        inline fn dotGroup(krows: [dot_keys][*]const u8, w: Scratch, r: usize, k0: usize, d: usize, scale: f32) void {
            var acc: [L]Vec = @splat(@splat(0)); // lane j·dot_keys + i: row r+j, key k0+i
            // a whole block of a quantized K at a time (its scale converted once)
            const span = if (KT == .f16) 1 else 32 / L;
            var c: usize = 0;
            while (c < d) : (c += span * L) {
                var kv: [dot_keys][span]Vec = undefined;
                inline for (0..dot_keys) |i| kv[i] = widenSpan(KT, L, span, krows[i], c);
                inline for (0..span) |u| inline for (0..dot_rows) |j| {
                    const qv = simd.loadN(L, w.q + (r + j) * d + c + u * L);
                    inline for (0..dot_keys) |i| acc[j * dot_keys + i] = simd.mulAdd(Vec, qv, kv[i][u], acc[j * dot_keys + i]);
                };
            }
            const sums = sumLanes(L, acc) * @as(Vec, @splat(scale));
            inline for (0..dot_rows) |j| {
                const part: @Vector(dot_keys, f32) = @shuffle(f32, sums, undefined, laneRange(dot_keys, j * dot_keys));
                (w.sc + (r + j) * block_keys + k0)[0..dot_keys].* = part;
            }
        }

        /// `dotGroup` for a Q8_0 K with integer dot products, as llama.cpp's Q8_0·Q8_0 dot: per
        /// block, Σ q·k over the 32 codes in int32, times both blocks' scales. Sixteen lanes are
        /// (query row j of 4, block b of a quad of 4): for each of a block's eight 4-code steps t
        /// one permute puts step t of the key's four blocks in every row's lanes and one 64-byte
        /// `vpdpbusd` adds 4 products per lane (the query codes are laid out to match, `packQuery`).
        /// `vpdpbusd` multiplies unsigned by signed bytes: the key's codes are biased by +128
        /// (x ^ 0x80) and each lane starts from −128 · Σ its query codes. Then one multiply-add
        /// per quad scales the lanes by the key's and the query's block scales; the 16 lanes per
        /// key fold to one score per row at the end. Against widening the key to f32 and 64 FMAs
        /// per 256 dims and row, this is 16 permutes and 16 integer dots per key for four rows.
        inline fn intGroup(krows: [dot_keys][*]const u8, w: Scratch, r: usize, k0: usize, d: usize) void {
            const I32x16 = @Vector(16, i32);
            const U32x16 = @Vector(16, u32);
            const g = r / dot_rows;
            const quads = d / (32 * quad_blocks);
            var f: [dot_keys]Vec = @splat(@splat(0));
            for (0..quads) |qd| {
                const at = g * quads + qd;
                const bias: I32x16 = @bitCast(w.qb[at * 16 ..][0..16].*);
                const dq: Vec = @bitCast(w.qd[at * 16 ..][0..16].*);
                const qi = w.qi + at * 8;
                inline for (0..dot_keys) |i| {
                    const blk = krows[i] + qd * quad_blocks * 34;
                    // blocks 0, 1 in `lo` and 2, 3 in `hi`, 8 words each, biased to unsigned
                    const lo: U32x16 = @bitCast(blockPair(blk));
                    const hi: U32x16 = @bitCast(blockPair(blk + 68));
                    const dk4: @Vector(4, f32) = .{ q8_0.blockScale(blk), q8_0.blockScale(blk + 34), q8_0.blockScale(blk + 68), q8_0.blockScale(blk + 102) };
                    const dk: Vec = @shuffle(f32, dk4, undefined, quad_lanes);
                    var acc = bias;
                    inline for (0..8) |t| {
                        const kb: @Vector(64, u8) = @bitCast(@shuffle(u32, lo, hi, stepWords(t)));
                        acc = common.dotBytes64(acc, kb, qi[t]);
                    }
                    f[i] = simd.mulAdd(Vec, @floatFromInt(acc), dq * dk, f[i]);
                }
            }
            // lanes j·4 + b of key i → lane i·4 + j: two levels of pairwise sums
            const sums = pairSums(pairSums(f[0], f[1]), pairSums(f[2], f[3]));
            inline for (0..dot_rows) |j| {
                const part: @Vector(dot_keys, f32) = @shuffle(f32, sums, undefined, @Vector(4, i32){ j, 4 + j, 8 + j, 12 + j });
                (w.sc + (r + j) * block_keys + k0)[0..dot_keys].* = part;
            }
        }

        /// Lane l of the permute for step t: word t of block l % 4 (blocks 0, 1 from the first
        /// operand, 2, 3 from the second).
        fn stepWords(comptime t: usize) @Vector(16, i32) {
            var m: [16]i32 = undefined;
            for (0..16) |l| {
                const b = l % quad_blocks;
                m[l] = if (b < 2) @intCast(b * 8 + t) else ~@as(i32, @intCast((b - 2) * 8 + t));
            }
            return m;
        }

        /// Lane l ← element l % 4.
        const quad_lanes: @Vector(16, i32) = blk: {
            var m: [16]i32 = undefined;
            for (0..16) |l| m[l] = @intCast(l % quad_blocks);
            break :blk m;
        };

        /// The codes of two consecutive Q8_0 blocks as 64 unsigned bytes, each biased by +128.
        inline fn blockPair(blk: [*]const u8) @Vector(64, u8) {
            const a: @Vector(32, u8) = @bitCast((blk + 2)[0..32].*);
            const b: @Vector(32, u8) = @bitCast((blk + 36)[0..32].*);
            const both = @shuffle(u8, a, b, concatMask(32));
            return both ^ @as(@Vector(64, u8), @splat(0x80));
        }

        /// Widens `nk` key rows into `kt` transposed ([dim][block_keys]), L keys × L dims at a time
        /// by an in-register transpose; keys past nk are zero.
        /// Prefetches the next block's key rows on the way.
        fn transposeKeys(keys: [*]const u8, p: Plan, nk: usize, kt: [*]f32) void {
            const d = p.s.head_dim;
            const stride = p.k_row;
            for (0..nk) |k| prefetchSpan(keys + (k + block_keys) * stride, p.k_head);
            var k0: usize = 0;
            while (k0 < nk) : (k0 += L) {
                var c: usize = 0;
                while (c < d) : (c += L) {
                    var m: [L]Vec = undefined;
                    inline for (0..L) |i| m[i] = if (k0 + i < nk) widen(KT, L, keys + (k0 + i) * stride, c) else @splat(0);
                    const t = transpose(L, m);
                    inline for (0..L) |i| simd.storeN(L, kt + (c + i) * block_keys + k0, t[i]);
                }
            }
            // keys past the last whole vector stay as they were: their scores are masked
        }

        /// sc[r][k] = scale · Σ_c q[r][c]·kt[c][k] for all block_keys columns.
        fn gemmScores(w: Scratch, rows: usize, d: usize, scale: f32) void {
            var r: usize = 0;
            while (r + qk_rows <= rows) : (r += qk_rows) gemmTile(qk_rows, w, r, d, scale);
            switch (rows - r) {
                inline 1...qk_rows - 1 => |n| gemmTile(n, w, r, d, scale),
                else => {},
            }
        }

        inline fn gemmTile(comptime n: usize, w: Scratch, r: usize, d: usize, scale: f32) void {
            comptime var k0: usize = 0;
            inline while (k0 < block_keys) : (k0 += qk_vecs * L) {
                var acc: [n][qk_vecs]Vec = @splat(@splat(@splat(0)));
                for (0..d) |c| {
                    var kv: [qk_vecs]Vec = undefined;
                    inline for (0..qk_vecs) |v| kv[v] = simd.loadN(L, w.kt + c * block_keys + k0 + v * L);
                    inline for (0..n) |i| {
                        const qv: Vec = @splat(w.q[(r + i) * d + c]);
                        inline for (0..qk_vecs) |v| acc[i][v] = simd.mulAdd(Vec, qv, kv[v], acc[i][v]);
                    }
                }
                const sv: Vec = @splat(scale);
                inline for (0..n) |i| inline for (0..qk_vecs) |v| simd.storeN(L, w.sc + (r + i) * block_keys + k0 + v * L, acc[i][v] * sv);
            }
        }

        fn widenValues(values: [*]const u8, p: Plan, nk: usize, vw: [*]f32) void {
            const d = p.s.head_dim;
            const stride = p.v_row;
            for (0..nk) |k| {
                prefetchSpan(values + (k + block_keys) * stride, p.v_head);
                var c: usize = 0;
                while (c < d) : (c += L) simd.storeN(L, vw + k * d + c, widen(VT, L, values + k * stride, c));
            }
        }

        /// One block of the online softmax for row r: keys [0, visible) of the block's nk count,
        /// the rest are masked. Leaves e^(s − M) in sc (0 where masked) and rescales O and S.
        fn softmaxStep(w: Scratch, r: usize, nk: usize, visible: usize, d: usize) void {
            const sc = w.sc + r * block_keys;
            if (visible == 0) {
                @memset(sc[0..nk], 0);
                return;
            }
            var mxv: Vec = @splat(-std.math.inf(f32));
            var i: usize = 0;
            while (i + L <= visible) : (i += L) mxv = @max(mxv, simd.loadN(L, sc + i));
            var mx = @reduce(.Max, mxv);
            while (i < visible) : (i += 1) mx = @max(mx, sc[i]);
            const m_old = w.m[r];
            const m_new = @max(m_old, mx);
            if (m_new > m_old) {
                const f = simd.expScalar(m_old - m_new); // 0 on the first block (m_old = −inf)
                simd.scale(w.o + r * d, w.o + r * d, f, d);
                w.l[r] *= f;
                w.m[r] = m_new;
            }
            const mv: Vec = @splat(m_new);
            var total: Vec = @splat(0);
            var k: usize = 0;
            while (k + L <= visible) : (k += L) {
                const e = simd.expv(L, simd.loadN(L, sc + k) - mv);
                simd.storeN(L, sc + k, e);
                total += e;
            }
            var sum = @reduce(.Add, total);
            while (k < visible) : (k += 1) {
                sc[k] = simd.expScalar(sc[k] - m_new);
                sum += sc[k];
            }
            @memset(sc[visible..nk], 0);
            w.l[r] += sum;
        }

        /// O[r] += Σ_k p[r][k]·V[k] for the block's nk keys: V from the widened block (`widened`)
        /// or straight from the cache rows, one register tile of rows × pv_vecs·L dims at a time.
        fn valueTiles(comptime widened: bool, w: Scratch, rows: usize, nk: usize, d: usize, values: anytype, stride: usize) void {
            var r: usize = 0;
            while (r + pv_rows <= rows) : (r += pv_rows) valueTile(widened, pv_rows, w, r, nk, d, values, stride);
            switch (rows - r) {
                inline 1...pv_rows - 1 => |n| valueTile(widened, n, w, r, nk, d, values, stride),
                else => {},
            }
        }

        inline fn valueTile(comptime widened: bool, comptime n: usize, w: Scratch, r: usize, nk: usize, d: usize, values: anytype, stride: usize) void {
            var c: usize = 0;
            while (c < d) {
                // pv_vecs vectors of dims where they fit, else one
                if (c + pv_vecs * L <= d) {
                    valueStrip(widened, n, pv_vecs, w, r, nk, d, c, values, stride);
                    c += pv_vecs * L;
                } else {
                    valueStrip(widened, n, 1, w, r, nk, d, c, values, stride);
                    c += L;
                }
            }
        }

        inline fn valueStrip(comptime widened: bool, comptime n: usize, comptime nv: usize, w: Scratch, r: usize, nk: usize, d: usize, c: usize, values: anytype, stride: usize) void {
            var acc: [n][nv]Vec = undefined;
            inline for (0..n) |i| inline for (0..nv) |v| {
                acc[i][v] = simd.loadN(L, w.o + (r + i) * d + c + v * L);
            };
            for (0..nk) |k| {
                var vv: [nv]Vec = undefined;
                if (widened) {
                    inline for (0..nv) |v| vv[v] = simd.loadN(L, values + k * d + c + v * L);
                } else {
                    vv = widenSpan(VT, L, nv, values + k * stride, c);
                }
                inline for (0..n) |i| {
                    const pv: Vec = @splat(w.sc[(r + i) * block_keys + k]);
                    inline for (0..nv) |v| acc[i][v] = simd.mulAdd(Vec, pv, vv[v], acc[i][v]);
                }
            }
            inline for (0..n) |i| inline for (0..nv) |v| simd.storeN(L, w.o + (r + i) * d + c + v * L, acc[i][v]);
        }
    };
}

/// Reads of keys past the end of a block (whole `dot_keys` passes) go here: zeros in every type.
const zero_row: [max_head_dim * 2]u8 align(64) = @splat(0);

/// Lane m < 8 of the result is a[2m] + a[2m+1], lane 8 + m is b[2m] + b[2m+1].
fn pairSums(a: @Vector(16, f32), b: @Vector(16, f32)) @Vector(16, f32) {
    const mask = struct {
        fn of(comptime odd: i32) @Vector(16, i32) {
            var m: [16]i32 = undefined;
            for (0..16) |l| {
                const src: i32 = @intCast(2 * (l % 8));
                m[l] = if (l < 8) src + odd else ~(src + odd);
            }
            return m;
        }
    }.of;
    return @shuffle(f32, a, b, mask(0)) + @shuffle(f32, a, b, mask(1));
}

/// Two vectors of n lanes side by side.
fn concatMask(comptime n: usize) @Vector(2 * n, i32) {
    var m: [2 * n]i32 = undefined;
    for (0..n) |i| {
        m[i] = @intCast(i);
        m[n + i] = ~@as(i32, @intCast(i));
    }
    return m;
}

/// Lanes [first, first + n) of a vector, as a shuffle mask.
fn laneRange(comptime n: usize, comptime first: usize) @Vector(n, i32) {
    var m: [n]i32 = undefined;
    for (0..n) |i| m[i] = @intCast(first + i);
    return m;
}

/// The sums of L vectors of L lanes: lane i of the result is Σ lanes of in[i]. A tree of
/// log2 L levels; each level halves the vectors (pairs side by side) and the segment width
/// (halves added), 3 operations per output vector instead of a full reduction per input. The
/// tree leaves its sums in bit-reversed order, so the inputs go in bit-reversed.
fn sumLanes(comptime L: usize, in: [L]@Vector(L, f32)) @Vector(L, f32) {
    const bits = comptime std.math.log2_int(usize, L);
    var x: [L]@Vector(L, f32) = undefined;
    inline for (0..L) |j| x[j] = in[reverseBits(j, bits)];
    inline for (0..bits) |level| {
        const width = L >> level; // segment width in the inputs of this level
        inline for (0..(L >> level) / 2) |j| {
            const a = x[2 * j];
            const b = x[2 * j + 1];
            x[j] = @shuffle(f32, a, b, pairMask(L, width, false)) + @shuffle(f32, a, b, pairMask(L, width, true));
        }
    }
    return x[0];
}

fn reverseBits(x: usize, bits: usize) usize {
    var r: usize = 0;
    for (0..bits) |i| r |= ((x >> @intCast(i)) & 1) << @intCast(bits - 1 - i);
    return r;
}

/// Output segment 2s (width w/2) takes a's segment s, 2s+1 takes b's; `high` picks the upper halves.
fn pairMask(comptime L: usize, comptime w: usize, comptime high: bool) @Vector(L, i32) {
    var m: [L]i32 = undefined;
    const half = w / 2;
    for (0..L) |lane| {
        const seg = lane / half;
        const e = lane % half;
        const src: i32 = @intCast((seg / 2) * w + e + (if (high) half else 0));
        m[lane] = if (seg % 2 == 0) src else ~src;
    }
    return m;
}

fn round(n: usize) usize {
    return std.mem.alignForward(usize, n, 16);
}

/// dst[i] += src[i]·f
fn axpy(dst: [*]f32, src: [*]const f32, f: f32, n: usize) void {
    const fv: simd.V = @splat(f);
    var i: usize = 0;
    while (i + simd.lanes <= n) : (i += simd.lanes) simd.store(dst + i, simd.mulAdd(simd.V, simd.load(src + i), fv, simd.load(dst + i)));
    while (i < n) : (i += 1) dst[i] += src[i] * f;
}

fn prefetchSpan(base: [*]const u8, bytes: usize) void {
    var at: usize = 0;
    while (at < bytes) : (at += 64) @prefetch(base + at, .{ .locality = 3 });
}

/// The L×L transpose of L vectors: lane x of result i is lane i of input x. Each stage b swaps
/// bit b of the row index with bit b of the lane index (L·log2 L two-input shuffles).
fn transpose(comptime L: usize, in: [L]@Vector(L, f32)) [L]@Vector(L, f32) {
    var r = in;
    comptime var b: usize = L / 2;
    inline while (b >= 1) : (b /= 2) {
        const lo_mask = comptime swapMask(L, b, false);
        const hi_mask = comptime swapMask(L, b, true);
        inline for (0..L) |i| {
            if (i & b == 0) {
                const lo = r[i];
                const hi = r[i + b];
                r[i] = @shuffle(f32, lo, hi, lo_mask);
                r[i + b] = @shuffle(f32, lo, hi, hi_mask);
            }
        }
    }
    return r;
}

/// Stage masks of `transpose`: new_lo[x] = x&b ? hi[x−b] : lo[x]; new_hi[x] = x&b ? hi[x] : lo[x+b].
fn swapMask(comptime L: usize, comptime b: usize, comptime high: bool) @Vector(L, i32) {
    var m: [L]i32 = undefined;
    for (0..L) |x| {
        const xi: i32 = @intCast(x);
        const bi: i32 = @intCast(b);
        m[x] = if (x & b == 0)
            (if (high) xi + bi else xi)
        else
            (if (high) ~xi else ~(xi - bi));
    }
    return m;
}

// ---------------------------------------------------------------------------------------------
// Tests: the kernel against a scalar f64 reference on every path (dot-product and GEMM tiles, key
// splits, every cache type pair, 8- and 16-wide vectors), continuing positions and GQA.

/// Scalar reference: the cache decoded value by value, softmax in f64.
fn reference(s: Shape, q: []const f32, kc: []const u8, vc: []const u8, out: []f32) void {
    const d = s.head_dim;
    const group = s.n_head / s.n_head_kv;
    const kv_dim = s.n_head_kv * d;
    const k_row = s.k_type.rowBytes(kv_dim).?;
    const v_row = s.v_type.rowBytes(kv_dim).?;
    const n_keys_max = s.pos + s.n_tokens;
    const scores = std.testing.allocator.alloc(f64, n_keys_max) catch unreachable;
    defer std.testing.allocator.free(scores);
    const kval = std.testing.allocator.alloc(f32, kv_dim) catch unreachable;
    defer std.testing.allocator.free(kval);
    const vval = std.testing.allocator.alloc(f32, kv_dim) catch unreachable;
    defer std.testing.allocator.free(vval);
    var qr: [max_head_dim]f32 = undefined;
    for (0..s.n_tokens) |t| for (0..s.n_head) |h| {
        const kvh = h / group;
        const n_keys = s.pos + t + 1;
        const qsrc = q[t * s.q_tok_stride + h * s.q_head_stride ..];
        @memcpy(qr[0..d], qsrc[0..d]);
        if (s.k_type != .f16) {
            const rot = rotation(s.k_type, d, .k);
            if (rot != 0) hadamardRef(&qr, d, rot);
            for (0..d / 32) |b| {
                var qs: [32]i8 = undefined;
                const dq = q8_0.quantizeBlockRef(qr[32 * b ..][0..32], &qs).d;
                for (0..32) |i| qr[32 * b + i] = @as(f32, dq) * @as(f32, @floatFromInt(qs[i]));
            }
        }
        var mx: f64 = -std.math.inf(f64);
        for (0..n_keys) |p| {
            decodeRow(s.k_type, kc[p * k_row ..].ptr, kv_dim, kval);
            var acc: f64 = 0;
            for (0..d) |i| acc += @as(f64, qr[i]) * kval[kvh * d + i];
            scores[p] = acc * s.scale;
            mx = @max(mx, scores[p]);
        }
        var total: f64 = 0;
        for (0..n_keys) |p| {
            scores[p] = @exp(scores[p] - mx);
            total += scores[p];
        }
        var o: [max_head_dim]f64 = @splat(0);
        for (0..n_keys) |p| {
            decodeRow(s.v_type, vc[p * v_row ..].ptr, kv_dim, vval);
            for (0..d) |i| o[i] += scores[p] / total * vval[kvh * d + i];
        }
        var of: [max_head_dim]f32 = undefined;
        for (0..d) |i| of[i] = @floatCast(o[i]);
        const rot_v = rotation(s.v_type, d, .v);
        if (rot_v != 0) hadamardRef(&of, d, rot_v);
        @memcpy(out[(t * s.n_head + h) * d ..][0..d], of[0..d]);
    };
}

fn decodeRow(t: CacheType, row: [*]const u8, n: usize, out: []f32) void {
    for (0..n) |i| out[i] = switch (t) {
        .f16 => @as(*align(1) const f16, @ptrCast(row + 2 * i)).*,
        .q8_0 => blk: {
            const b = row + i / 32 * 34;
            break :blk @as(f32, @as(*align(1) const f16, @ptrCast(b)).*) * @as(f32, @floatFromInt(@as(i8, @bitCast(b[2 + i % 32]))));
        },
        .q4_0 => blk: {
            var vals: [32]f32 = undefined;
            q4_0.dequantizeRef(@ptrCast(row + i / 32 * 18), &vals);
            break :blk vals[i % 32];
        },
        else => unreachable,
    };
}

fn testCase(pool_threads: usize, s: Shape, seed: u64) !void {
    const gpa = std.testing.allocator;
    var ctx = root.Context{ .pool = undefined };
    try ctx.pool.init(pool_threads);
    defer ctx.pool.deinit();
    defer ctx.freeScratch();
    var prng = std.Random.DefaultPrng.init(seed);
    const rand = prng.random();
    const kv_dim = s.n_head_kv * s.head_dim;
    const n_pos = s.pos + s.n_tokens;
    const kc = try gpa.alloc(u8, n_pos * s.k_type.rowBytes(kv_dim).?);
    defer gpa.free(kc);
    const vc = try gpa.alloc(u8, n_pos * s.v_type.rowBytes(kv_dim).?);
    defer gpa.free(vc);
    const kf = try gpa.alloc(f32, n_pos * kv_dim);
    defer gpa.free(kf);
    const vf = try gpa.alloc(f32, n_pos * kv_dim);
    defer gpa.free(vf);
    for (kf) |*x| x.* = rand.floatNorm(f32);
    for (vf) |*x| x.* = rand.floatNorm(f32);
    store(kf.ptr, vf.ptr, n_pos, kv_dim, s.head_dim, s.k_type, s.v_type, kc.ptr, vc.ptr, 0);
    const q = try gpa.alloc(f32, s.n_tokens * s.q_tok_stride);
    defer gpa.free(q);
    for (q) |*x| x.* = rand.floatNorm(f32);
    const out = try gpa.alloc(f32, s.n_tokens * s.n_head * s.head_dim);
    defer gpa.free(out);
    const want = try gpa.alloc(f32, out.len);
    defer gpa.free(want);
    try attend(&ctx, s, q.ptr, kc.ptr, vc.ptr, out.ptr);
    reference(s, q, kc, vc, want);
    for (want, out) |a, b| try std.testing.expectApproxEqAbs(a, b, 2e-5);
}

fn shapeOf(n_tokens: usize, pos: usize, n_head: usize, n_head_kv: usize, d: usize, kt: CacheType, vt: CacheType) Shape {
    // queries strided as in the model: each head's query followed by an unused gate half
    return .{ .q_tok_stride = n_head * 2 * d, .q_head_stride = 2 * d, .n_tokens = n_tokens, .pos = pos, .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = d, .scale = 1 / @sqrt(@as(f32, @floatFromInt(d))), .k_type = kt, .v_type = vt };
}

test "attention (F16 cache) matches the reference: decode, short and long prompts, continuing positions" {
    // decode-shaped: dot-product tiles, every KV head in one item; with 2 workers and > 1024
    // keys the keys are split, with fewer the heads are (down to one, or to an odd count)
    try testCase(2, shapeOf(1, 1500, 8, 2, 64, .f16, .f16), 1);
    try testCase(1, shapeOf(1, 700, 16, 4, 64, .f16, .f16), 11);
    try testCase(2, shapeOf(1, 100, 24, 4, 64, .f16, .f16), 12); // groups of 6 rows: padded passes
    try testCase(4, shapeOf(1, 3000, 12, 3, 32, .f16, .f16), 13);
    try testCase(3, shapeOf(1, 40, 6, 3, 16, .f16, .f16), 14);
    try testCase(1, shapeOf(2, 3, 4, 2, 16, .f16, .f16), 2);
    // prompt-shaped: GEMM tiles (16+ rows), partial key blocks, causal edges inside blocks
    try testCase(2, shapeOf(37, 70, 8, 2, 64, .f16, .f16), 3);
    try testCase(2, shapeOf(130, 0, 4, 1, 128, .f16, .f16), 4);
    // head dim 8 and 24: 8-wide vectors only
    try testCase(2, shapeOf(20, 5, 2, 1, 8, .f16, .f16), 5);
    try testCase(2, shapeOf(3, 600, 2, 2, 24, .f16, .f16), 6);
    // a group larger than a tile's target rows
    try testCase(2, shapeOf(3, 10, 80, 1, 16, .f16, .f16), 7);
}

test "a prompt token's attention is bit-identical whatever else is in its batch" {
    const gpa = std.testing.allocator;
    var ctx = root.Context{ .pool = undefined };
    try ctx.pool.init(2);
    defer ctx.pool.deinit();
    defer ctx.freeScratch();
    inline for (.{ CacheType.f16, CacheType.q8_0 }) |kt| {
        const s = shapeOf(40, 90, 8, 2, 64, kt, .f16);
        const kv_dim = s.n_head_kv * s.head_dim;
        const n_pos = s.pos + s.n_tokens;
        var prng = std.Random.DefaultPrng.init(5);
        const rand = prng.random();
        const kf = try gpa.alloc(f32, 2 * n_pos * kv_dim);
        defer gpa.free(kf);
        for (kf) |*x| x.* = rand.floatNorm(f32);
        const kc = try gpa.alloc(u8, n_pos * kt.rowBytes(kv_dim).?);
        defer gpa.free(kc);
        const vc = try gpa.alloc(u8, n_pos * 2 * kv_dim);
        defer gpa.free(vc);
        store(kf.ptr, kf.ptr + n_pos * kv_dim, n_pos, kv_dim, s.head_dim, kt, .f16, kc.ptr, vc.ptr, 0);
        const q = try gpa.alloc(f32, s.n_tokens * s.q_tok_stride);
        defer gpa.free(q);
        for (q) |*x| x.* = rand.floatNorm(f32);
        const width = s.n_head * s.head_dim;
        const whole = try gpa.alloc(f32, s.n_tokens * width);
        defer gpa.free(whole);
        const parts = try gpa.alloc(f32, s.n_tokens * width);
        defer gpa.free(parts);
        try attend(&ctx, s, q.ptr, kc.ptr, vc.ptr, whole.ptr);
        // the same tokens as batches of 2, 17 and 21
        var t: usize = 0;
        for ([_]usize{ 2, 17, 21 }) |n| {
            var part = s;
            part.n_tokens = n;
            part.pos = s.pos + t;
            try attend(&ctx, part, q.ptr + t * s.q_tok_stride, kc.ptr, vc.ptr, parts.ptr + t * width);
            t += n;
        }
        try std.testing.expectEqualSlices(f32, whole, parts);
    }
}

test "attention with Q8_0 and Q4_0 caches matches the reference on every type pair" {
    const kinds = [_]CacheType{ .f16, .q8_0, .q4_0 };
    var seed: u64 = 100;
    for (kinds) |kt| for (kinds) |vt| {
        if (kt == .f16 and vt == .f16) continue;
        seed += 1;
        try testCase(2, shapeOf(1, 1200, 4, 2, 64, kt, vt), seed);
        try testCase(2, shapeOf(1, 2100, 24, 4, 64, kt, vt), seed + 20);
        try testCase(2, shapeOf(40, 30, 4, 1, 32, kt, vt), seed + 50);
    };
}

test "decoding with a Q8_0 K cache matches the reference at the models' head dims (integer dots with AVX-512 VNNI)" {
    // head dims in whole quads of blocks: `intGroup` where the level has 64-byte VNNI
    for ([_]CacheType{ .f16, .q8_0, .q4_0 }, 0..) |vt, i| {
        try testCase(2, shapeOf(1, 1100, 16, 4, 256, .q8_0, vt), 300 + i); // 4B's shape, key splits
        try testCase(1, shapeOf(1, 300, 24, 4, 128, .q8_0, vt), 310 + i); // groups of 6 rows: padded
        try testCase(3, shapeOf(1, 70, 16, 2, 256, .q8_0, vt), 320 + i); // groups of 8, heads split, a partial pass
    }
}

/// H·x in chunks of n with H built as ggml_gen_hadamard builds it (entries ±1/√n), by matrix product.
fn hadamardRef(x: [*]f32, len: usize, n: usize) void {
    var h: [256 * 256]f32 = undefined;
    h[0] = 1 / @sqrt(@as(f32, @floatFromInt(n)));
    var sz: usize = 1;
    while (sz < n) : (sz *= 2) for (0..sz) |i| for (0..sz) |j| {
        const val = h[i * n + j];
        h[(i + sz) * n + j] = val;
        h[i * n + j + sz] = val;
        h[(i + sz) * n + j + sz] = -val;
    };
    var c: usize = 0;
    while (c < len) : (c += n) {
        var y: [256]f32 = undefined;
        for (0..n) |i| {
            var acc: f64 = 0;
            for (0..n) |k| acc += @as(f64, h[i * n + k]) * x[c + k];
            y[i] = @floatCast(acc);
        }
        @memcpy(x[c..][0..n], y[0..n]);
    }
}

test "rotate is ggml's Walsh-Hadamard matrix product, orthonormal, and picks llama.cpp's chunk sizes" {
    var prng = std.Random.DefaultPrng.init(77);
    const rand = prng.random();
    inline for (.{ 64, 128, 256 }) |n| {
        var x: [2 * n]f32 = undefined;
        for (&x) |*v| v.* = rand.floatNorm(f32);
        var fast = x;
        var slow = x;
        rotate(&fast, 2 * n, n);
        hadamardRef(&slow, 2 * n, n);
        for (fast, slow) |a, b| try std.testing.expectApproxEqAbs(b, a, 2e-6);
        rotate(&fast, 2 * n, n);
        for (fast, x) |a, b| try std.testing.expectApproxEqAbs(b, a, 2e-6);
    }
    try std.testing.expectEqual(@as(usize, 256), rotation(.q8_0, 256, .k));
    try std.testing.expectEqual(@as(usize, 64), rotation(.q4_0, 256, .v));
    try std.testing.expectEqual(@as(usize, 64), rotation(.q8_0, 192, .k));
    try std.testing.expectEqual(@as(usize, 0), rotation(.q8_0, 96, .k));
    try std.testing.expectEqual(@as(usize, 0), rotation(.f16, 256, .k));
}

test "sumLanes adds each input's lanes into its own lane" {
    inline for (.{ 8, 16 }) |L| {
        var in: [L]@Vector(L, f32) = undefined;
        for (0..L) |i| {
            var row: [L]f32 = undefined;
            for (0..L) |x| row[x] = @floatFromInt(i * 1000 + x * (i + 1));
            in[i] = row;
        }
        const got: [L]f32 = sumLanes(L, in);
        for (0..L) |i| {
            var want: f32 = 0;
            for (0..L) |x| want += @floatFromInt(i * 1000 + x * (i + 1));
            try std.testing.expectEqual(want, got[i]);
        }
    }
}

test "transpose swaps rows and lanes" {
    inline for (.{ 8, 16 }) |L| {
        var m: [L]@Vector(L, f32) = undefined;
        for (0..L) |i| {
            var row: [L]f32 = undefined;
            for (0..L) |x| row[x] = @floatFromInt(i * 100 + x);
            m[i] = row;
        }
        const t = transpose(L, m);
        for (0..L) |i| {
            const row: [L]f32 = t[i];
            for (0..L) |x| try std.testing.expectEqual(@as(f32, @floatFromInt(x * 100 + i)), row[x]);
        }
    }
}

test "store writes F16, Q8_0 and Q4_0 rows at the given positions" {
    var k: [2 * 64]f32 = undefined;
    var v: [2 * 64]f32 = undefined;
    for (&k, 0..) |*x, i| x.* = @sin(@as(f32, @floatFromInt(i)));
    for (&v, 0..) |*x, i| x.* = @cos(@as(f32, @floatFromInt(i)));
    var kc: [4 * 64 * 2]u8 = @splat(0xaa);
    var vc: [4 * 2 * 18]u8 = @splat(0xaa);
    store(&k, &v, 2, 64, 64, .f16, .q4_0, &kc, &vc, 1);
    // row 0 and row 3 untouched
    try std.testing.expectEqual(@as(u8, 0xaa), kc[0]);
    try std.testing.expectEqual(@as(u8, 0xaa), kc[3 * 128]);
    const k1: *align(1) const f16 = @ptrCast(&kc[128 + 2 * 5]);
    try std.testing.expectEqual(@as(f16, @floatCast(k[5])), k1.*);
    // V rows of a 64-dim head are rotated (chunks of 64) before they are quantized
    var rotated: [64]f32 = v[64..][0..64].*;
    rotate(&rotated, 64, 64);
    var blk: q4_0.Block = undefined;
    q4_0.quantizeBlock(rotated[32..64], &blk);
    try std.testing.expectEqualSlices(u8, std.mem.asBytes(&blk), vc[2 * 36 + 18 ..][0..18]);
    try std.testing.expectEqual(@as(u8, 0xaa), vc[0]);
}

test {
    _ = q4_0;
}
