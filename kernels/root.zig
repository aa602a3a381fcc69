//! The C ABI of libdeltaq. This is the only file that exports symbols: every `pub fn dq_*` here
//! (`callconv(.c)`; never `export fn`), exported by the loop at the end of the file with this
//! copy's CPU-level suffix (see `levels.zig`: the library links one copy of the kernels per
//! level, so plain `export fn`s would clash). `src/native/ffi.ts` is its mirror on the
//! TypeScript side and must change with it (bump `abi_version`).
//!
//! Memory model. Every byte a kernel touches lives in a *region* this library owns: a read-only
//! file mapping (`dq_map_file`) or a zeroed, 64-byte aligned buffer (`dq_alloc`). TypeScript
//! refers to memory only through region ids and offsets, and every command is checked against the
//! bounds of the regions it names before any kernel runs, so a wrong offset from the caller is an
//! error message, never a stray read. Ids carry a generation, so a freed id stays invalid even
//! after its slot is reused.
//!
//! Weights are registered once (`dq_weight`: region, byte offset, type, shape), which checks that
//! the tensor lies inside its mapping and has a computable type. Q4_K, Q3_K, Q2_K and IQ4_XS weights
//! can then be copied into a buffer in the row-interleaved layouts one-token matmuls prefer
//! (`dq_repack`, `matmul.repack`), which also drops the
//! source pages from the process, so the copy replaces the mapped tensor instead of doubling it.
//!
//! Work is submitted as a *command list* (`dq_exec`): a sequence of u32 words, each command
//! `[opcode, word count, operands...]`. A forward pass over a batch of tokens is one list, so one
//! FFI call runs hundreds of kernels while the worker pool stays awake. The operand layouts are
//! documented on `Op` below and encoded by `src/native/commands.ts`.
const std = @import("std");
const build_level = @import("build_level");
const os = @import("os.zig");
const cpu = @import("cpu.zig");
const types = @import("types.zig");
const pool_mod = @import("pool.zig");
const matmul = @import("matmul.zig");
const norm = @import("norm.zig");
const elementwise = @import("elementwise.zig");
const rope = @import("rope.zig");
const attention = @import("attention.zig");
const conv1d = @import("conv1d.zig");
const deltanet = @import("deltanet.zig");
const moe = @import("moe.zig");

pub const GgmlType = types.GgmlType;
pub const Weight = types.Weight;
pub const Pool = pool_mod.Pool;

pub const abi_version: u32 = 9;

// ---------------------------------------------------------------------------------------------
// Errors: the last failure's message, read by `dq_last_error`.

var error_buf: [512]u8 = undefined;
var error_len: usize = 0;

pub fn fail(comptime fmt: []const u8, args: anytype) error{Failed} {
    setError(fmt, args);
    return error.Failed;
}

fn setError(comptime fmt: []const u8, args: anytype) void {
    const msg = std.fmt.bufPrint(&error_buf, fmt, args) catch blk: {
        const ellipsis = "...";
        @memcpy(error_buf[error_buf.len - ellipsis.len ..], ellipsis);
        break :blk error_buf[0..];
    };
    error_len = msg.len;
}

pub fn dq_abi_version() callconv(.c) u32 {
    return abi_version;
}

/// The CPU levels linked into this library, space-separated, base level first (written into
/// `out`, at most `cap` bytes; returns the full length). The base level's symbols are the plain
/// names; level `x`'s are the same names followed by `__x`.
pub fn dq_cpu_levels(out: [*]u8, cap: u32) callconv(.c) u32 {
    const names = comptime blk: {
        var joined: []const u8 = "";
        for (build_level.levels, 0..) |name, i| joined = joined ++ (if (i == 0) "" else " ") ++ name;
        break :blk joined;
    };
    const n = @min(names.len, cap);
    @memcpy(out[0..n], names[0..n]);
    return names.len;
}

/// Bit i set when this CPU can run level i of `dq_cpu_levels`.
pub fn dq_cpu_runnable() callconv(.c) u32 {
    return cpu.runnableMask(build_level.levels);
}

/// The physical performance cores this process may use (`os.performanceCores`): the default
/// thread count, in place of the logical CPU count.
pub fn dq_performance_cores() callconv(.c) u32 {
    return @intCast(@min(os.performanceCores(), std.math.maxInt(u32)));
}

/// Copies the last error message into `out` (at most `cap` bytes) and returns its length.
pub fn dq_last_error(out: [*]u8, cap: u32) callconv(.c) u32 {
    const n = @min(error_len, cap);
    @memcpy(out[0..n], error_buf[0..n]);
    return @intCast(n);
}

// ---------------------------------------------------------------------------------------------
// Regions: file mappings and buffers.

const Region = struct {
    ptr: [*]align(64) u8 = undefined,
    len: usize = 0,
    kind: enum { free, mapping, buffer } = .free,
    generation: u16 = 0,
    /// Growable buffers (`dq_reserve`): bytes of address space reserved, and the committed prefix
    /// (whole granules) that `len` lies within. 0 for other regions.
    reserved: usize = 0,
    committed: usize = 0,
};

const max_regions = 4096;
var regions: [max_regions]Region = @splat(.{});

/// Ids are `slot | generation << 16`, never negative as i32.
fn regionId(slot: usize) i32 {
    return @intCast(slot | (@as(usize, regions[slot].generation & 0x7fff) << 16));
}

fn lookupRegion(id: u32) error{Failed}!*Region {
    const slot = id & 0xffff;
    if (slot >= max_regions) return fail("invalid memory region id {d}", .{id});
    const r = &regions[slot];
    if (r.kind == .free or (r.generation & 0x7fff) != (id >> 16)) return fail("memory region {d} was freed or never existed", .{id});
    return r;
}

fn freeSlot() error{Failed}!usize {
    for (&regions, 0..) |*r, i| if (r.kind == .free) return i;
    return fail("too many memory regions (limit {d})", .{max_regions});
}

/// Maps a file read-only. Returns a region id, or -1 (see `dq_last_error`).
pub fn dq_map_file(path: [*:0]const u8) callconv(.c) i32 {
    return mapFile(path) catch -1;
}

fn mapFile(path: [*:0]const u8) error{Failed}!i32 {
    const slot = try freeSlot();
    const m = os.mapFile(path) catch |e| return switch (e) {
        error.Empty => fail("the file is empty", .{}),
        else => fail("cannot open: {s}", .{os.describe(e)}),
    };
    regions[slot] = .{ .ptr = @alignCast(m.ptr), .len = m.len, .kind = .mapping, .generation = regions[slot].generation };
    return regionId(slot);
}

/// Allocates a zeroed buffer of `lo | hi << 32` bytes. Returns a region id, or -1. With
/// `resident` != 0 its pages are faulted in now rather than on first touch: for memory every
/// token reads and writes in full (recurrent state), so that cost lands at allocation instead of
/// in the first token. Buffers used a few rows at a time (KV caches, activations) stay lazy.
pub fn dq_alloc(bytes_lo: u32, bytes_hi: u32, resident: u32) callconv(.c) i32 {
    return alloc((@as(usize, bytes_hi) << 32) | bytes_lo, resident != 0) catch -1;
}

fn alloc(bytes: usize, resident: bool) error{Failed}!i32 {
    const slot = try freeSlot();
    const ptr = os.allocPages(os.pageRound(bytes), resident) orelse return fail("cannot allocate {d} bytes", .{bytes});
    regions[slot] = .{ .ptr = @alignCast(ptr), .len = bytes, .kind = .buffer, .generation = regions[slot].generation };
    return regionId(slot);
}

/// Reserves address space for a growable zeroed buffer of up to `lo | hi << 32` bytes, holding no
/// memory yet: `dq_region_resize` commits what it needs (in 2 MiB granules, as the sequence of a
/// KV cache grows) and gives memory back when it shrinks. Its length starts at 0. Returns a region
/// id, or -1.
pub fn dq_reserve(bytes_lo: u32, bytes_hi: u32) callconv(.c) i32 {
    return reserve((@as(usize, bytes_hi) << 32) | bytes_lo) catch -1;
}

fn reserve(bytes: usize) error{Failed}!i32 {
    const slot = try freeSlot();
    const cap = std.mem.alignForward(usize, @max(bytes, 1), os.commit_granule);
    const ptr = os.reservePages(cap) orelse return fail("cannot reserve {d} bytes of address space", .{bytes});
    regions[slot] = .{ .ptr = @alignCast(ptr), .len = 0, .kind = .buffer, .generation = regions[slot].generation, .reserved = cap };
    return regionId(slot);
}

/// Sets the length of a growable buffer to `lo | hi << 32` bytes (at most what was reserved):
/// granules up to the new length are committed (new bytes read as zero), whole granules past it
/// are released. Returns 0, or -1 (out of memory, or not a growable buffer).
pub fn dq_region_resize(id: u32, bytes_lo: u32, bytes_hi: u32) callconv(.c) i32 {
    resize(id, (@as(usize, bytes_hi) << 32) | bytes_lo) catch return -1;
    return 0;
}

fn resize(id: u32, bytes: usize) error{Failed}!void {
    const r = try lookupRegion(id);
    if (r.reserved == 0) return fail("region {d} is not a growable buffer", .{id});
    if (bytes > r.reserved) return fail("{d} bytes exceed the {d} reserved for region {d}", .{ bytes, r.reserved, id });
    const need = std.mem.alignForward(usize, bytes, os.commit_granule);
    if (need > r.committed) {
        if (!os.commitPages(@alignCast(r.ptr + r.committed), need - r.committed)) return fail("cannot commit {d} more bytes", .{need - r.committed});
    } else if (need < r.committed) {
        os.decommitPages(@alignCast(r.ptr + need), r.committed - need);
    }
    r.committed = need;
    r.len = bytes;
}

/// Bytes of memory a region holds committed (growable buffers), or its length (others); -1 for an
/// invalid id.
pub fn dq_region_committed(id: u32) callconv(.c) f64 {
    const r = lookupRegion(id) catch return -1;
    return @floatFromInt(if (r.reserved != 0) r.committed else r.len);
}

/// The base address of a region (null for an invalid id).
pub fn dq_region_ptr(id: u32) callconv(.c) ?*anyopaque {
    const r = lookupRegion(id) catch return null;
    return r.ptr;
}

/// The length in bytes of a region, as a double (exact below 2^53; -1 for an invalid id).
pub fn dq_region_len(id: u32) callconv(.c) f64 {
    const r = lookupRegion(id) catch return -1;
    return @floatFromInt(r.len);
}

/// Unmaps or frees a region and every weight registered on it. Freeing twice is harmless.
pub fn dq_region_free(id: u32) callconv(.c) void {
    const r = lookupRegion(id) catch return;
    const slot = id & 0xffff;
    for (&weights) |*w| if (w.used and w.region_slot == slot) w.retire();
    switch (r.kind) {
        .buffer => os.freePages(@alignCast(r.ptr), if (r.reserved != 0) r.reserved else os.pageRound(r.len)),
        .mapping => os.unmapFile(.{ .ptr = @alignCast(r.ptr), .len = r.len }),
        .free => unreachable,
    }
    r.* = .{ .generation = r.generation +% 1 };
}

// ---------------------------------------------------------------------------------------------
// Weights: tensors inside a mapping (or buffer), checked once at registration.

const WeightSlot = struct {
    weight: Weight = undefined,
    region_slot: usize = 0,
    used: bool = false,
    generation: u16 = 0,

    /// Frees the slot; its old id no longer resolves.
    fn retire(self: *WeightSlot) void {
        self.used = false;
        self.generation +%= 1;
    }
};

const max_weights = 1 << 14;
var weights: [max_weights]WeightSlot = @splat(.{});

/// Registers `ne1` rows of `ne0` values of GGML type `ggml_type` at byte offset `lo | hi << 32` of
/// a region. Returns a weight id, or -1 when the type is unsupported, a row is not a whole number
/// of blocks, or the tensor does not lie inside the region.
pub fn dq_weight(region: u32, off_lo: u32, off_hi: u32, ggml_type: u32, ne0: u32, ne1: u32) callconv(.c) i32 {
    return registerWeight(region, (@as(usize, off_hi) << 32) | off_lo, ggml_type, ne0, ne1) catch -1;
}

fn registerWeight(region: u32, offset: usize, ggml_type: u32, ne0: u32, ne1: u32) error{Failed}!i32 {
    const r = try lookupRegion(region);
    const kind: GgmlType = @fromBackingInt(@intCast(ggml_type));
    if (kind.layout() == null) return fail("tensor type {d} is not supported", .{ggml_type});
    if (ne0 == 0 or ne1 == 0) return fail("empty tensor ({d} x {d})", .{ ne0, ne1 });
    const row_bytes = kind.rowBytes(ne0) orelse return fail("row of {d} values is not a whole number of {s} blocks", .{ ne0, @tagName(kind) });
    const bytes = std.math.mul(usize, row_bytes, ne1) catch return fail("tensor size overflows", .{});
    if (offset > r.len or bytes > r.len - offset) return fail("tensor (offset {d}, size {d}) extends past the end of its region ({d} bytes)", .{ offset, bytes, r.len });
    if (offset % 4 != 0) return fail("tensor offset {d} is not 4-byte aligned", .{offset});
    for (&weights, 0..) |*w, i| if (!w.used) {
        w.* = .{
            .weight = .{ .data = r.ptr + offset, .kind = kind, .ne0 = ne0, .ne1 = ne1, .row_bytes = row_bytes },
            .region_slot = region & 0xffff,
            .used = true,
            .generation = w.generation,
        };
        return @intCast(i | (@as(usize, w.generation & 0x7fff) << 16) << 0);
    };
    return fail("too many weights (limit {d})", .{max_weights});
}

/// Bytes `dq_repack` needs for a weight (its size as repacked, `matmul.repackedRowBytes` per
/// row), or 0 when the weight cannot be repacked (see `matmul.canRepack`: K-quants with an
/// interleaved layout in whole row groups, Q4_0 and Q8_0 with rows of a multiple of 256 values,
/// IQ3_S) or the id is invalid.
pub fn dq_repack_bytes(weight: u32) callconv(.c) f64 {
    const w = lookupWeight(weight) catch return 0;
    if (!matmul.canRepack(w)) return 0;
    return @floatFromInt(w.ne1 * matmul.repackedRowBytes(w));
}

/// Rows the weight's repacked layout keeps together (`matmul.layoutGroupRows`: 8 or 16 for the
/// interleaved K-quant layouts, 1 for the others), or 0 when it cannot be repacked or the id is
/// invalid. A slice of rows (one expert's) repacks usefully only in whole groups.
pub fn dq_repack_group_rows(weight: u32) callconv(.c) u32 {
    const w = lookupWeight(weight) catch return 0;
    if (!matmul.canRepack(w)) return 0;
    return @intCast(matmul.layoutGroupRows(w.kind));
}

/// Copies a weight into a buffer region at byte offset `lo | hi << 32` (64-byte aligned) in its
/// type's repacked layout (`matmul.repack`: row-interleaved groups, super-blocks or IQ3_S's 4-bit
/// value codes), using the context's threads. If the source lies in a file mapping, its whole
/// pages are unmapped (the range stays reserved, inaccessible) and its id is freed: the copy
/// replaces it. Returns the new weight's id, or -1.
pub fn dq_repack(context: u32, weight: u32, region: u32, off_lo: u32, off_hi: u32) callconv(.c) i32 {
    return repackWeight(context, weight, region, (@as(usize, off_hi) << 32) | off_lo) catch -1;
}

fn repackWeight(context: u32, weight: u32, region: u32, offset: usize) error{Failed}!i32 {
    const ctx = try lookupContext(context);
    const w = try lookupWeight(weight);
    if (!matmul.canRepack(w)) return fail("weight {d} cannot be repacked (only Q4_K, Q3_K, Q2_K and IQ4_XS in whole row groups of 8 or 16, Q4_0 and Q8_0 with rows of a multiple of 256 values, and IQ3_S)", .{weight});
    const src_region = &regions[weights[weight & 0xffff].region_slot];
    const dst = try lookupRegion(region);
    if (dst.kind != .buffer) return fail("repacking needs a buffer region, not a file mapping", .{});
    const bytes = w.ne1 * matmul.repackedRowBytes(w);
    if (offset % 64 != 0) return fail("repack offset {d} is not 64-byte aligned", .{offset});
    if (offset > dst.len or bytes > dst.len - offset) return fail("repacked weight (offset {d}, size {d}) extends past the end of its region ({d} bytes)", .{ offset, bytes, dst.len });
    const slot = for (&weights, 0..) |*ws, i| {
        if (!ws.used) break i;
    } else return fail("too many weights (limit {d})", .{max_weights});
    const repacked = matmul.repack(ctx, w, @alignCast(dst.ptr + offset));
    if (src_region.kind == .mapping) {
        // The original's whole pages become an inaccessible range rather than merely dropped
        // pages (see `os.releaseMapped`): at 4B shapes the first forward pass otherwise brought
        // ~140 MiB of released Q4_K pages back into RSS. The source id is retired, so nothing can
        // read the hole.
        os.releaseMapped(w.data, w.ne1 * w.row_bytes);
        weights[weight & 0xffff].retire();
    }
    const ws = &weights[slot];
    ws.* = .{ .weight = repacked, .region_slot = region & 0xffff, .used = true, .generation = ws.generation };
    return @intCast(slot | (@as(usize, ws.generation & 0x7fff) << 16));
}

fn lookupWeight(id: u32) error{Failed}!*const Weight {
    const slot = id & 0xffff;
    if (slot >= max_weights) return fail("invalid weight id {d}", .{id});
    const w = &weights[slot];
    if (!w.used or (w.generation & 0x7fff) != (id >> 16)) return fail("weight {d} was freed or never existed", .{id});
    return &w.weight;
}

// ---------------------------------------------------------------------------------------------
// Contexts: a worker pool plus scratch memory, one per loaded model.

pub const Context = struct {
    pool: Pool,
    scratch: []align(64) u8 = &.{},
    /// A second scratch area for what must stay valid while a kernel uses `scratch` (the expert
    /// grouping of a mixture-of-experts matmul).
    aux: []align(64) u8 = &.{},
    /// Per-command timing, when enabled by `dq_profile` (null otherwise: no clock reads at all).
    profile: ?*Profile = null,
    /// The current profile label (set by `Op.label`), i.e. which part of the model is running.
    label: usize = 0,

    /// Scratch memory of at least `bytes`, valid until the next call; contents are not kept.
    pub fn scratchBytes(self: *Context, bytes: usize) error{Failed}![]align(64) u8 {
        return grow(&self.scratch, bytes);
    }

    /// Like `scratchBytes`, from the separate `aux` area.
    pub fn auxBytes(self: *Context, bytes: usize) error{Failed}![]align(64) u8 {
        return grow(&self.aux, bytes);
    }

    fn grow(area: *[]align(64) u8, bytes: usize) error{Failed}![]align(64) u8 {
        if (area.len < bytes) {
            freeArea(area);
            const len = os.pageRound(bytes);
            const ptr = os.allocPages(len, true) orelse return fail("cannot allocate {d} bytes of scratch memory", .{bytes});
            area.* = ptr[0..len];
        }
        return area.*[0..bytes];
    }

    fn freeArea(area: *[]align(64) u8) void {
        if (area.len != 0) os.freePages(@alignCast(area.ptr), area.len);
        area.* = &.{};
    }

    pub fn freeScratch(self: *Context) void {
        freeArea(&self.scratch);
        freeArea(&self.aux);
    }
};

/// Accumulated time and call counts per (label, opcode, weight type).
pub const Profile = struct {
    pub const labels = 8;
    pub const ops = 32;
    pub const kinds = 32;
    const cells = labels * ops * kinds;
    nanos: [cells]f64 = @splat(0),
    counts: [cells]f64 = @splat(0),

    fn cell(label: usize, op: u32, kind: u32) usize {
        const l: usize = @min(label, labels - 1);
        const o: usize = @min(op, ops - 1);
        const k: usize = @min(kind, kinds - 1);
        return (l * ops + o) * kinds + k;
    }
};

/// Turns per-command timing on (and clears it) or off for a context.
pub fn dq_profile(context: u32, enable: u32) callconv(.c) i32 {
    const ctx = lookupContext(context) catch return -1;
    if (enable == 0) {
        if (ctx.profile) |p| std.heap.page_allocator.destroy(p);
        ctx.profile = null;
        return 0;
    }
    if (ctx.profile == null) ctx.profile = std.heap.page_allocator.create(Profile) catch return -1;
    ctx.profile.?.* = .{};
    return 0;
}

/// Copies the profile as `labels × ops × kinds` nanoseconds followed by as many call counts
/// (`2 · 8 · 32 · 32` doubles). Returns the number of doubles written, or 0 when profiling is off.
pub fn dq_profile_read(context: u32, out: [*]f64, cap: u32) callconv(.c) u32 {
    const ctx = lookupContext(context) catch return 0;
    const p = ctx.profile orelse return 0;
    const n = p.nanos.len;
    if (cap < 2 * n) return 0;
    @memcpy(out[0..n], &p.nanos);
    @memcpy(out[n .. 2 * n], &p.counts);
    return @intCast(2 * n);
}

fn lookupContext(id: u32) error{Failed}!*Context {
    if (id >= max_contexts or contexts[id] == null) return fail("context {d} was freed or never existed", .{id});
    return contexts[id].?;
}

const max_contexts = 64;
var contexts: [max_contexts]?*Context = @splat(null);

/// Creates a context with a pool of `n_threads` workers (the calling thread counts as one).
/// Returns a context id, or -1.
pub fn dq_context(n_threads: u32) callconv(.c) i32 {
    return createContext(n_threads) catch -1;
}

fn createContext(n_threads: u32) error{Failed}!i32 {
    if (n_threads == 0 or n_threads > pool_mod.max_threads) return fail("thread count {d} is outside 1..{d}", .{ n_threads, pool_mod.max_threads });
    for (&contexts, 0..) |*c, i| if (c.* == null) {
        const ctx = std.heap.page_allocator.create(Context) catch return fail("out of memory", .{});
        ctx.* = .{ .pool = undefined };
        ctx.pool.init(n_threads) catch {
            std.heap.page_allocator.destroy(ctx);
            return fail("cannot start {d} worker threads", .{n_threads});
        };
        c.* = ctx;
        return @intCast(i);
    };
    return fail("too many contexts (limit {d})", .{max_contexts});
}

/// Stops a context's workers and frees its scratch memory. Freeing twice is harmless.
pub fn dq_context_free(id: u32) callconv(.c) void {
    if (id >= max_contexts) return;
    const ctx = contexts[id] orelse return;
    ctx.pool.deinit();
    if (ctx.profile) |p| std.heap.page_allocator.destroy(p);
    ctx.freeScratch();
    std.heap.page_allocator.destroy(ctx);
    contexts[id] = null;
}

// ---------------------------------------------------------------------------------------------
// Command lists.

/// llama.cpp's LLAMA_MAX_EXPERTS.
const max_experts = 1024;

/// `k` experts used per token of `n_expert`.
fn checkExperts(n_expert: usize, k: usize) error{Failed}!void {
    if (n_expert == 0 or n_expert > max_experts or k == 0 or k > n_expert) return fail("{d} experts used of {d} (at most {d} experts)", .{ k, n_expert, max_experts });
}

/// Opcodes and their operands, in order. `ref` = two words (region id, element offset), always
/// into a buffer region (never a mapping); `w` = a weight id; `w?` = a weight id or 0xffffffff for
/// none; `f32` = the bits of a float. Row operations take `rows = tokens × heads` with separate
/// token and head strides (in elements), so a kernel can walk one head's slice of each token
/// (e.g. the query half of `attn_q`'s per-head [query | gate] output) without a copy.
pub const Op = enum(u32) {
    /// w, tokens: ref(i32), n_tokens, out: ref(f32), out_stride — out[t] = row tokens[t] of w.
    embed = 1,
    /// w, x: ref, x_stride, y: ref, y_stride, n_tokens — y[t][r] = Σ_c w[r][c]·x[t][c].
    matmul = 2,
    /// x: ref, y: ref, n_tokens, x_tok_stride, y_tok_stride, n_heads, x_head_stride,
    /// y_head_stride, dim, weight: w?, eps: f32, mode (0 = RMS norm, 1 = L2 norm).
    norm = 3,
    /// a: ref, b: ref, n — a[i] += b[i].
    add = 4,
    /// gate: ref, up: ref, out: ref, n — out[i] = silu(gate[i])·up[i].
    swiglu = 5,
    /// x: ref, gate: ref, n_rows, dim, x_stride, gate_stride — x[r][i] *= sigmoid(gate[r][i]).
    sigmoid_gate = 6,
    /// x: ref, n_tokens, tok_stride, n_heads, head_stride, n_rot, table: ref — NeoX rotation of the
    /// first n_rot dims of each head; table[t] = cos[n_rot/2] then sin[n_rot/2] for token t.
    rope = 7,
    /// k: ref(f32), v: ref(f32), n_tokens, kv_dim, k_cache: ref(u8), v_cache: ref(u8), pos,
    /// k_type, v_type, head_dim — converts rows to the cache types (GGML ids: F16, Q8_0, Q4_0;
    /// quantized rows rotated per head, see attention.rotation) and stores them at cache positions
    /// pos..pos+n_tokens (cache refs count bytes; see attention.zig).
    kv_store = 8,
    /// q: ref, q_tok_stride, q_head_stride, k_cache: ref(u8), v_cache: ref(u8), out: ref,
    /// n_tokens, pos, n_head, n_head_kv, head_dim, scale: f32, k_type, v_type — causal GQA
    /// softmax attention; token t (at position pos+t) reads cache rows 0..pos+t; out[t][h] is
    /// head_dim contiguous.
    attention = 9,
    /// x: ref, state: ref, w: w (F32 {K, C}), out: ref, n_tokens, channels, x_stride —
    /// out[t] = silu(causal depthwise conv); state holds the last K-1 inputs and is advanced.
    conv1d_silu = 10,
    /// qkv: ref, qkv_stride, beta: ref, alpha: ref, gate_stride, ssm_a: w, dt_bias: w, state: ref,
    /// out: ref, n_tokens, n_k_heads, n_v_heads, head_dim — the Gated DeltaNet recurrence over the
    /// already L2-normalised q and k heads (see deltanet.zig).
    deltanet = 11,
    /// o: ref, z: ref, w: w, out: ref, n_rows, dim, eps: f32 — out = rmsnorm(o)·w·silu(z), rows
    /// contiguous in all three.
    gated_norm = 12,
    /// label — names the part of the model the following commands belong to, for profiling only.
    label = 13,
    /// Operands as `matmul`; every token is multiplied exactly as a lone token would be (the
    /// one-token kernels, bit for bit) in one pass over w: a decode step of several sequences.
    matvec = 14,
    /// logits: ref, n_tokens, n_expert, k, ids: ref(i32), weights: ref — mixture-of-experts
    /// routing of each token's router logits (see moe.zig): ids [n_tokens][k], weights likewise.
    moe_route = 20,
    /// w, x: ref, x_stride, flags, ids: ref(i32), n_tokens, k, n_expert, first, rows, y: ref,
    /// y_stride — y[t·k+i] = rows [first, first+rows) of expert ids[t][i]'s slice of w (ne1 =
    /// n_expert · stride rows) times x[t], or x[t·k+i] with flag 1 (input per slot); flag 2: every
    /// token multiplied as a lone token would be (as `matvec`). Only chosen experts' rows are read.
    matmul_experts = 21,
    /// y: ref, y_stride, weights: ref, n_tokens, k, dim, shared: ref, gate: ref, out: ref —
    /// out[t] = Σ_i weights[t][i]·y[t·k+i] + sigmoid(gate[t])·shared[t].
    moe_combine = 22,
    _,
};

const Reader = struct {
    words: []const u32,
    at: usize = 0,

    fn int(self: *Reader) error{Failed}!usize {
        if (self.at >= self.words.len) return fail("command is missing operands", .{});
        defer self.at += 1;
        return self.words[self.at];
    }

    fn float(self: *Reader) error{Failed}!f32 {
        return @bitCast(@as(u32, @intCast(try self.int())));
    }

    fn weight(self: *Reader) error{Failed}!*const Weight {
        return lookupWeight(@intCast(try self.int()));
    }

    fn optionalWeight(self: *Reader) error{Failed}!?*const Weight {
        const id = try self.int();
        if (id == 0xffff_ffff) return null;
        return try lookupWeight(@intCast(id));
    }

    /// A buffer reference whose accessed elements span `[offset, offset + extent)`.
    fn ref(self: *Reader, comptime T: type, extent: usize) error{Failed}![*]T {
        const id: u32 = @intCast(try self.int());
        const offset = try self.int();
        const r = try lookupRegion(id);
        if (r.kind != .buffer) return fail("region {d} is a read-only mapping, not a buffer", .{id});
        const end = std.math.add(usize, offset, extent) catch return fail("operand extent overflows", .{});
        if (end > r.len / @sizeOf(T)) return fail("operand [{d}, {d}) lies outside region {d} of {d} {s} elements", .{ offset, end, id, r.len / @sizeOf(T), @typeName(T) });
        const base: [*]T = @ptrCast(@alignCast(r.ptr));
        return base + offset;
    }

    /// Reads a ref now but checks it once its extent is known from later operands.
    fn deferred(self: *Reader) error{Failed}!DeferredRef {
        const id: u32 = @intCast(try self.int());
        const offset = try self.int();
        return .{ .id = id, .offset = offset };
    }
};

const DeferredRef = struct {
    id: u32,
    offset: usize,

    fn get(self: DeferredRef, comptime T: type, extent: usize) error{Failed}![*]T {
        var r = Reader{ .words = &.{ self.id, @intCast(self.offset) } };
        return r.ref(T, extent);
    }
};

fn mul(a: usize, b: usize) error{Failed}!usize {
    return std.math.mul(usize, a, b) catch fail("operand extent overflows", .{});
}

/// Elements spanned by `rows` rows of `dim` values, `stride` apart.
fn span(rows: usize, stride: usize, dim: usize) error{Failed}!usize {
    if (rows == 0) return 0;
    const last = std.math.mul(usize, rows - 1, stride) catch return fail("operand extent overflows", .{});
    return std.math.add(usize, last, dim) catch return fail("operand extent overflows", .{});
}

/// Elements spanned by a tokens × heads grid of `dim`-value rows.
fn span2(n_tokens: usize, tok_stride: usize, n_heads: usize, head_stride: usize, dim: usize) error{Failed}!usize {
    if (n_tokens == 0 or n_heads == 0) return 0;
    return std.math.add(usize, try span(n_tokens, tok_stride, 0), try span(n_heads, head_stride, dim)) catch
        return fail("operand extent overflows", .{});
}

/// Runs a command list on a context. Returns 0, or -1 with the failing command named in
/// `dq_last_error`. Commands before the failing one have run.
pub fn dq_exec(context: u32, cmds: [*]const u32, n_words: u32) callconv(.c) i32 {
    const ctx = lookupContext(context) catch return -1;
    var at: usize = 0;
    var index: usize = 0;
    while (at < n_words) : (index += 1) {
        if (n_words - at < 2) {
            setError("command {d}: truncated header", .{index});
            return -1;
        }
        const op: Op = @fromBackingInt(@intCast(cmds[at]));
        const len = cmds[at + 1];
        if (len < 2 or len > n_words - at) {
            setError("command {d}: bad length {d}", .{ index, len });
            return -1;
        }
        var reader = Reader{ .words = cmds[at + 2 .. at + len] };
        // A kernel that fails without a message must not inherit (and re-prefix) an older one.
        error_len = 0;
        const start = if (ctx.profile != null) os.monotonicNanos() else 0;
        runCommand(ctx, op, &reader) catch {
            var prefix_buf: [64]u8 = undefined;
            const prefix = std.fmt.bufPrint(&prefix_buf, "command {d} ({s}): ", .{ index, opName(op) }) catch "";
            const keep = @min(error_len, error_buf.len - prefix.len);
            std.mem.copyBackwards(u8, error_buf[prefix.len .. prefix.len + keep], error_buf[0..keep]);
            @memcpy(error_buf[0..prefix.len], prefix);
            error_len = prefix.len + keep;
            return -1;
        };
        if (ctx.profile) |p| {
            // matmul and embed are split by weight type: their first operand is the weight id
            const kind: u32 = if ((op == .matmul or op == .matvec or op == .embed or op == .matmul_experts) and len > 2)
                if (lookupWeight(cmds[at + 2])) |w| @backingInt(w.kind) else |_| 31
            else
                0;
            const c = Profile.cell(ctx.label, @backingInt(op), kind);
            p.nanos[c] += @floatFromInt(os.monotonicNanos() - start);
            p.counts[c] += 1;
        }
        at += len;
    }
    return 0;
}

fn opName(op: Op) []const u8 {
    return std.enums.tagName(Op, op) orelse "unknown op";
}

fn runCommand(ctx: *Context, op: Op, r: *Reader) error{Failed}!void {
    switch (op) {
        .embed => {
            const w = try r.weight();
            const tokens_ref = try r.deferred();
            const n_tokens = try r.int();
            const out_ref = try r.deferred();
            const out_stride = try r.int();
            const tokens = try tokens_ref.get(i32, n_tokens);
            const out = try out_ref.get(f32, try span(n_tokens, out_stride, w.ne0));
            for (0..n_tokens) |t| {
                const id = tokens[t];
                if (id < 0 or id >= w.ne1) return fail("token id {d} is outside the vocabulary (0..{d})", .{ id, w.ne1 - 1 });
                matmul.getRow(w, @intCast(id), out + t * out_stride);
            }
        },
        .matmul, .matvec => {
            const w = try r.weight();
            const x_ref = try r.deferred();
            const x_stride = try r.int();
            const y_ref = try r.deferred();
            const y_stride = try r.int();
            const n_tokens = try r.int();
            const x = try x_ref.get(f32, try span(n_tokens, x_stride, w.ne0));
            const y = try y_ref.get(f32, try span(n_tokens, y_stride, w.ne1));
            if (op == .matvec) try matmul.matvec(ctx, w, x, x_stride, y, y_stride, n_tokens) else try matmul.matmul(ctx, w, x, x_stride, y, y_stride, n_tokens);
        },
        .norm => {
            const x_ref = try r.deferred();
            const y_ref = try r.deferred();
            const g = norm.Grid{
                .n_tokens = try r.int(),
                .x_tok_stride = try r.int(),
                .y_tok_stride = try r.int(),
                .n_heads = try r.int(),
                .x_head_stride = try r.int(),
                .y_head_stride = try r.int(),
                .dim = try r.int(),
            };
            const w = try r.optionalWeight();
            const eps = try r.float();
            const mode = try r.int();
            if (w) |weight| if (weight.kind != .f32 or weight.ne0 * weight.ne1 != g.dim)
                return fail("norm weight must be F32 with {d} values", .{g.dim});
            if (mode > 1) return fail("unknown norm mode {d}", .{mode});
            const x = try x_ref.get(f32, try span2(g.n_tokens, g.x_tok_stride, g.n_heads, g.x_head_stride, g.dim));
            const y = try y_ref.get(f32, try span2(g.n_tokens, g.y_tok_stride, g.n_heads, g.y_head_stride, g.dim));
            norm.normRows(&ctx.pool, g, x, y, if (w) |weight| weight.f32s() else null, eps, if (mode == 0) .rms else .l2);
        },
        .add => {
            const a_ref = try r.deferred();
            const b_ref = try r.deferred();
            const n = try r.int();
            elementwise.add(&ctx.pool, try a_ref.get(f32, n), try b_ref.get(f32, n), n);
        },
        .swiglu => {
            const gate_ref = try r.deferred();
            const up_ref = try r.deferred();
            const out_ref = try r.deferred();
            const n = try r.int();
            elementwise.swiglu(&ctx.pool, try gate_ref.get(f32, n), try up_ref.get(f32, n), try out_ref.get(f32, n), n);
        },
        .sigmoid_gate => {
            const x_ref = try r.deferred();
            const gate_ref = try r.deferred();
            const n_rows = try r.int();
            const dim = try r.int();
            const x_stride = try r.int();
            const gate_stride = try r.int();
            const x = try x_ref.get(f32, try span(n_rows, x_stride, dim));
            const gate = try gate_ref.get(f32, try span(n_rows, gate_stride, dim));
            elementwise.sigmoidGate(&ctx.pool, x, gate, n_rows, dim, x_stride, gate_stride);
        },
        .rope => {
            const x_ref = try r.deferred();
            const n_tokens = try r.int();
            const tok_stride = try r.int();
            const n_heads = try r.int();
            const head_stride = try r.int();
            const n_rot = try r.int();
            const table_ref = try r.deferred();
            if (n_rot == 0 or n_rot % 2 != 0 or n_rot > head_stride) return fail("rotary dims {d} must be even and at most the head stride {d}", .{ n_rot, head_stride });
            const x = try x_ref.get(f32, try span2(n_tokens, tok_stride, n_heads, head_stride, n_rot));
            const table = try table_ref.get(f32, try mul(n_tokens, n_rot));
            rope.neox(x, n_tokens, tok_stride, n_heads, head_stride, n_rot, table);
        },
        .kv_store => {
            const k_ref = try r.deferred();
            const v_ref = try r.deferred();
            const n_tokens = try r.int();
            const kv_dim = try r.int();
            const kc_ref = try r.deferred();
            const vc_ref = try r.deferred();
            const pos = try r.int();
            const k_type: attention.CacheType = @fromBackingInt(@intCast(try r.int()));
            const v_type: attention.CacheType = @fromBackingInt(@intCast(try r.int()));
            const head_dim = try r.int();
            if (head_dim == 0 or head_dim > attention.max_head_dim or kv_dim % head_dim != 0) return fail("head dim {d} must divide the row of {d} values and be at most {d}", .{ head_dim, kv_dim, attention.max_head_dim });
            const k_row = k_type.rowBytes(kv_dim) orelse return fail("K cache type {d} cannot hold rows of {d} values", .{ @backingInt(k_type), kv_dim });
            const v_row = v_type.rowBytes(kv_dim) orelse return fail("V cache type {d} cannot hold rows of {d} values", .{ @backingInt(v_type), kv_dim });
            const n = try mul(n_tokens, kv_dim);
            const k = try k_ref.get(f32, n);
            const v = try v_ref.get(f32, n);
            const kc = try kc_ref.get(u8, try mul(pos + n_tokens, k_row));
            const vc = try vc_ref.get(u8, try mul(pos + n_tokens, v_row));
            if (k_type.rowBytes(head_dim) == null or v_type.rowBytes(head_dim) == null) return fail("a quantized cache needs a head dim that is a multiple of 32, not {d}", .{head_dim});
            attention.store(k, v, n_tokens, kv_dim, head_dim, k_type, v_type, kc, vc, pos);
        },
        .attention => {
            const q_ref = try r.deferred();
            const q_tok_stride = try r.int();
            const q_head_stride = try r.int();
            const kc_ref = try r.deferred();
            const vc_ref = try r.deferred();
            const out_ref = try r.deferred();
            const s = attention.Shape{
                .q_tok_stride = q_tok_stride,
                .q_head_stride = q_head_stride,
                .n_tokens = try r.int(),
                .pos = try r.int(),
                .n_head = try r.int(),
                .n_head_kv = try r.int(),
                .head_dim = try r.int(),
                .scale = try r.float(),
                .k_type = @fromBackingInt(@intCast(try r.int())),
                .v_type = @fromBackingInt(@intCast(try r.int())),
            };
            try attention.validate(s);
            const kv_dim = s.n_head_kv * s.head_dim;
            const q = try q_ref.get(f32, try span2(s.n_tokens, s.q_tok_stride, s.n_head, s.q_head_stride, s.head_dim));
            const kc = try kc_ref.get(u8, try mul(s.pos + s.n_tokens, s.k_type.rowBytes(kv_dim).?));
            const vc = try vc_ref.get(u8, try mul(s.pos + s.n_tokens, s.v_type.rowBytes(kv_dim).?));
            const out = try out_ref.get(f32, try mul(s.n_tokens, s.n_head * s.head_dim));
            try attention.attend(ctx, s, q, kc, vc, out);
        },
        .conv1d_silu => {
            const x_ref = try r.deferred();
            const state_ref = try r.deferred();
            const w = try r.weight();
            const out_ref = try r.deferred();
            const n_tokens = try r.int();
            const channels = try r.int();
            const x_stride = try r.int();
            if (w.kind != .f32 or w.ne1 != channels or w.ne0 < 2 or w.ne0 > conv1d.max_taps)
                return fail("conv weight must be F32 {{K, {d}}} with 2 <= K <= {d}", .{ channels, conv1d.max_taps });
            const k = w.ne0;
            const x = try x_ref.get(f32, try span(n_tokens, x_stride, channels));
            const state = try state_ref.get(f32, (k - 1) * channels);
            const out = try out_ref.get(f32, try mul(n_tokens, channels));
            conv1d.convSilu(ctx, x, x_stride, state, w.f32s(), k, out, n_tokens, channels);
        },
        .deltanet => {
            const qkv_ref = try r.deferred();
            const qkv_stride = try r.int();
            const beta_ref = try r.deferred();
            const alpha_ref = try r.deferred();
            const gate_stride = try r.int();
            const ssm_a = try r.weight();
            const dt_bias = try r.weight();
            const state_ref = try r.deferred();
            const out_ref = try r.deferred();
            const d = deltanet.Shape{
                .n_tokens = try r.int(),
                .n_k_heads = try r.int(),
                .n_v_heads = try r.int(),
                .head_dim = try r.int(),
            };
            if (d.n_k_heads == 0 or d.head_dim == 0 or d.head_dim % 8 != 0 or d.head_dim > 256) return fail("DeltaNet head dim {d} must be a multiple of 8 up to 256", .{d.head_dim});
            if (d.n_v_heads % d.n_k_heads != 0) return fail("{d} V heads cannot tile {d} K heads", .{ d.n_v_heads, d.n_k_heads });
            if (ssm_a.kind != .f32 or ssm_a.ne0 * ssm_a.ne1 != d.n_v_heads) return fail("ssm_a must be F32 with {d} values", .{d.n_v_heads});
            if (dt_bias.kind != .f32 or dt_bias.ne0 * dt_bias.ne1 != d.n_v_heads) return fail("ssm_dt.bias must be F32 with {d} values", .{d.n_v_heads});
            const qkv_dim = (2 * d.n_k_heads + d.n_v_heads) * d.head_dim;
            const qkv = try qkv_ref.get(f32, try span(d.n_tokens, qkv_stride, qkv_dim));
            const beta = try beta_ref.get(f32, try span(d.n_tokens, gate_stride, d.n_v_heads));
            const alpha = try alpha_ref.get(f32, try span(d.n_tokens, gate_stride, d.n_v_heads));
            const state = try state_ref.get(f32, d.n_v_heads * d.head_dim * d.head_dim);
            const out = try out_ref.get(f32, try mul(d.n_tokens, d.n_v_heads * d.head_dim));
            deltanet.run(ctx, d, qkv, qkv_stride, beta, alpha, gate_stride, ssm_a.f32s(), dt_bias.f32s(), state, out);
        },
        .gated_norm => {
            const o_ref = try r.deferred();
            const z_ref = try r.deferred();
            const w = try r.weight();
            const out_ref = try r.deferred();
            const n_rows = try r.int();
            const dim = try r.int();
            const eps = try r.float();
            if (w.kind != .f32 or w.ne0 * w.ne1 != dim) return fail("gated norm weight must be F32 with {d} values", .{dim});
            const n = try mul(n_rows, dim);
            norm.gatedRows(&ctx.pool, try o_ref.get(f32, n), try z_ref.get(f32, n), w.f32s(), try out_ref.get(f32, n), n_rows, dim, eps);
        },
        .label => ctx.label = try r.int(),
        .moe_route => {
            const logits_ref = try r.deferred();
            const n_tokens = try r.int();
            const n_expert = try r.int();
            const k = try r.int();
            const ids_ref = try r.deferred();
            const weights_ref = try r.deferred();
            try checkExperts(n_expert, k);
            const logits = try logits_ref.get(f32, try mul(n_tokens, n_expert));
            const ids = try ids_ref.get(i32, try mul(n_tokens, k));
            const route_weights = try weights_ref.get(f32, try mul(n_tokens, k));
            moe.route(logits, n_tokens, n_expert, k, ids, route_weights);
        },
        .matmul_experts => {
            const w = try r.weight();
            const x_ref = try r.deferred();
            const x_stride = try r.int();
            const flags = try r.int();
            const ids_ref = try r.deferred();
            const n_tokens = try r.int();
            const k = try r.int();
            const n_expert = try r.int();
            const first = try r.int();
            const rows = try r.int();
            const y_ref = try r.deferred();
            const y_stride = try r.int();
            try checkExperts(n_expert, k);
            if (flags > 3) return fail("unknown flags {d}", .{flags});
            const per_slot: usize = flags & 1;
            if (w.ne1 % n_expert != 0) return fail("weight of {d} rows does not split into {d} experts", .{ w.ne1, n_expert });
            const stride = w.ne1 / n_expert;
            if (rows == 0 or first > stride or rows > stride - first) return fail("rows [{d}, {d}) lie outside an expert's {d} rows", .{ first, first + rows, stride });
            const pairs = try mul(n_tokens, k);
            const n_inputs = if (per_slot == 1) pairs else n_tokens;
            const ids = try ids_ref.get(i32, pairs);
            const x = try x_ref.get(f32, try span(n_inputs, x_stride, w.ne0));
            const y = try y_ref.get(f32, try span(pairs, y_stride, rows));
            const buf = try ctx.auxBytes(moe.groupingBytes(n_tokens, k, n_expert));
            const experts = moe.group(ids, n_tokens, k, n_expert, per_slot == 1, buf, .{ .stride = stride, .first = first, .count = rows }) catch
                return fail("expert id outside 0..{d}", .{n_expert - 1});
            try matmul.matmulExperts(ctx, w, x, x_stride, n_inputs, y, y_stride, &experts, n_tokens == 1 or flags & 2 != 0);
        },
        .moe_combine => {
            const y_ref = try r.deferred();
            const y_stride = try r.int();
            const weights_ref = try r.deferred();
            const n_tokens = try r.int();
            const k = try r.int();
            const dim = try r.int();
            const shared_ref = try r.deferred();
            const gate_ref = try r.deferred();
            const out_ref = try r.deferred();
            if (k == 0 or k > max_experts) return fail("{d} experts per token (at most {d})", .{ k, max_experts });
            const pairs = try mul(n_tokens, k);
            const y = try y_ref.get(f32, try span(pairs, y_stride, dim));
            const slot_weights = try weights_ref.get(f32, pairs);
            const shared = try shared_ref.get(f32, try mul(n_tokens, dim));
            const gate = try gate_ref.get(f32, n_tokens);
            const out = try out_ref.get(f32, try mul(n_tokens, dim));
            moe.combine(&ctx.pool, y, y_stride, slot_weights, n_tokens, k, dim, shared, gate, out);
        },
        _ => return fail("unknown opcode {d}", .{@backingInt(op)}),
    }
    if (r.at != r.words.len) return fail("{d} operand words, expected {d}", .{ r.words.len, r.at });
}

// ---------------------------------------------------------------------------------------------
// Exports: every `pub fn dq_*`, named with this copy's level suffix ("" for the base level).

comptime {
    for (std.meta.declarations(@This())) |name| {
        if (std.mem.startsWith(u8, name, "dq_")) @export(&@field(@This(), name), .{ .name = name ++ build_level.suffix });
    }
}

test {
    std.testing.refAllDecls(@This());
    _ = cpu;
    _ = os;
    _ = types;
    _ = pool_mod;
    _ = matmul;
    _ = norm;
    _ = elementwise;
    _ = rope;
    _ = attention;
    _ = conv1d;
    _ = deltanet;
    _ = moe;
}
