//! Micro-benchmark of `matmul` at Qwen3.5-4B shapes: every weight type, one token (decode,
//! memory-bound: reported as GB/s of weights streamed) and 16 / 64 / 512 tokens (prompt, compute-bound:
//! reported as G multiply-adds per second), with 1 and 2 threads.
//!
//!   zig build bench-kernels                         all types, both shapes
//!   zig build bench-kernels -- q4_k q6_k            only these types
//!   zig build bench-kernels -- --lm-head            also the 248320×2560 Q6_K output matrix
//!   zig build bench-kernels -- --decode             one-token runs only
//!   zig build bench-kernels -- --prompt             16-, 64- and 512-token runs only
//!   zig build bench-kernels -- --hot                one copy of each matrix (cache-resident
//!                                                   where it fits: compute ceiling, not DRAM)
//!   zig build bench-kernels -- --repack             repackable types repacked as loaded (`/r`)
//!   zig build bench-kernels -- --prefetch=32768 --chunk=32   tuning knobs (see matmul.Config)
//!
//! One- and 16-token runs cycle through enough copies of the matrix (≥ 384 MiB) that every call reads
//! its weights from DRAM, as a real forward pass does; a plain vector read of the same buffers
//! gives the machine's bandwidth ceiling. Each figure is the best of 3 timed windows of ≥ 0.25 s.
const std = @import("std");
const linux = std.os.linux;
const mm = @import("matmul");

const Shape = struct { rows: usize, cols: usize, name: []const u8 };

const shapes = [_]Shape{
    .{ .rows = 9216, .cols = 2560, .name = "9216x2560 (gate/up)" },
    .{ .rows = 2560, .cols = 9216, .name = "2560x9216 (down)" },
};
const lm_head = Shape{ .rows = 248320, .cols = 2560, .name = "248320x2560 (LM head)" };

const all_types = [_]mm.GgmlType{ .q4_k, .q5_k, .q6_k, .q2_k, .q3_k, .iq4_xs, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .mxfp4, .f16, .bf16, .f32, .iq3_s };

const dram_bytes = 384 << 20;

fn clock(id: linux.clockid_t) f64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(id, &ts);
    return @as(f64, @floatFromInt(ts.sec)) + @as(f64, @floatFromInt(ts.nsec)) * 1e-9;
}

fn now() f64 {
    return clock(.MONOTONIC);
}

fn cpuTime() f64 {
    return clock(.PROCESS_CPUTIME_ID);
}

fn print(comptime fmt: []const u8, args: anytype) void {
    var buf: [512]u8 = undefined;
    const s = std.fmt.bufPrint(&buf, fmt, args) catch return;
    _ = linux.write(1, s.ptr, s.len);
}

fn mapBytes(n: usize) ![]align(4096) u8 {
    const addr = linux.mmap(null, n, .{ .READ = true, .WRITE = true }, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0);
    if (linux.errno(addr) != .SUCCESS) return error.OutOfMemory;
    return @as([*]align(4096) u8, @ptrFromInt(addr))[0..n];
}

/// Fills a matrix with valid random blocks: random bytes, then sane f16 scales.
fn fillMatrix(kind: mm.GgmlType, bytes: []u8, rng: *std.Random.DefaultPrng) void {
    // xorshift words are much faster than Random.bytes for hundreds of MiB
    var s: u64 = rng.random().int(u64) | 1;
    const words: []align(1) u64 = std.mem.bytesAsSlice(u64, bytes[0 .. bytes.len / 8 * 8]);
    for (words) |*w| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        w.* = s;
    }
    const Patch = struct { block: usize, offsets: []const usize, byte: bool = false };
    const patch: ?Patch = switch (kind) {
        .q4_k => .{ .block = 144, .offsets = &.{ 0, 2 } },
        .q5_k => .{ .block = 176, .offsets = &.{ 0, 2 } },
        .q6_k => .{ .block = 210, .offsets = &.{208} },
        .q2_k => .{ .block = 84, .offsets = &.{ 80, 82 } },
        .q3_k => .{ .block = 110, .offsets = &.{108} },
        .iq4_xs => .{ .block = 136, .offsets = &.{0} },
        .q8_0 => .{ .block = 34, .offsets = &.{0} },
        .q4_0, .iq4_nl => .{ .block = 18, .offsets = &.{0} },
        .q4_1 => .{ .block = 20, .offsets = &.{ 0, 2 } },
        .q5_0 => .{ .block = 22, .offsets = &.{0} },
        .q5_1 => .{ .block = 24, .offsets = &.{ 0, 2 } },
        // MXFP4's scale is one exponent byte: 0x3c (2^-68) is small and normal.
        .mxfp4 => .{ .block = 17, .offsets = &.{0}, .byte = true },
        .iq3_s => .{ .block = 110, .offsets = &.{0} },
        .iq3_xxs => .{ .block = 98, .offsets = &.{0} },
        .iq2_xxs => .{ .block = 66, .offsets = &.{0} },
        .iq2_xs => .{ .block = 74, .offsets = &.{0} },
        .iq2_s => .{ .block = 82, .offsets = &.{0} },
        .iq1_s => .{ .block = 50, .offsets = &.{0} },
        else => null,
    };
    const small: f16 = 0.001;
    if (patch) |p| {
        var b: usize = 0;
        while (b + p.block <= bytes.len) : (b += p.block) for (p.offsets) |o| {
            if (p.byte) bytes[b + o] = 0x3c else @memcpy(bytes[b + o ..][0..2], std.mem.asBytes(&small));
        };
    } else {
        // float weights: random bit patterns include NaN/Inf; use small values instead
        const elem: usize = if (kind == .f32) 4 else 2;
        var i: usize = 0;
        while (i + elem <= bytes.len) : (i += elem) switch (kind) {
            .f32 => @memcpy(bytes[i..][0..4], std.mem.asBytes(&@as(f32, @floatFromInt(@as(i32, bytes[i]) - 128)))),
            .f16 => @memcpy(bytes[i..][0..2], std.mem.asBytes(&@as(f16, @floatFromInt(@as(i32, bytes[i]) - 128)))),
            else => @memcpy(bytes[i..][0..2], std.mem.asBytes(&@as(u16, 0x3c00 | (@as(u16, bytes[i]) & 0x7f)))),
        };
    }
}

fn readBandwidth(ctx: *mm.Context, buf: []const u8) f64 {
    const Job = struct {
        buf: []const u8,
        sinks: *[64]u64,
        fn run(j: *const @This(), worker: usize, n_workers: usize) void {
            const V = @Vector(32, u8);
            const per = j.buf.len / n_workers / 128 * 128;
            const part = j.buf[worker * per ..][0..per];
            var acc: [4]V = @splat(@splat(0));
            var i: usize = 0;
            while (i + 128 <= part.len) : (i += 128) inline for (0..4) |u| {
                acc[u] ^= @as(V, part[i + 32 * u ..][0..32].*);
            };
            j.sinks[worker] = @reduce(.Xor, acc[0] ^ acc[1] ^ acc[2] ^ acc[3]);
        }
    };
    var sinks: [64]u64 = undefined;
    const job = Job{ .buf = buf, .sinks = &sinks };
    var best: f64 = 0;
    for (0..3) |_| {
        const t0 = now();
        ctx.pool.run(Job, &job, Job.run);
        const dt = now() - t0;
        best = @max(best, @as(f64, @floatFromInt(buf.len)) / dt / 1e9);
    }
    std.mem.doNotOptimizeAway(sinks[0]);
    return best;
}

const Timing = struct {
    /// Wall-clock seconds per call.
    seconds: f64,
    /// CPU time the process got over wall time × threads: below ~0.95 other processes took
    /// cores away and the figure understates the kernel. ("GMAC/cpu" divides it out: the rate
    /// per busy core, a fair compute figure on a shared machine, not a wall-clock one.)
    cpu_share: f64,
};

/// Seconds per call, best of 5 windows of at least 0.2 s, cycling through the given copies.
fn timeCalls(ctx: *mm.Context, weights: []const mm.Weight, x: []const f32, y: []f32, n_tokens: usize, cfg: mm.Config) !Timing {
    const w0 = weights[0];
    // warm-up, also touches every copy once
    for (weights) |*w| try mm.matmulWith(ctx, w, x.ptr, w0.ne0, y.ptr, w0.ne1, n_tokens, cfg);
    var best = Timing{ .seconds = std.math.inf(f64), .cpu_share = 0 };
    for (0..5) |_| {
        var calls: usize = 0;
        const t0 = now();
        const c0 = cpuTime();
        var elapsed: f64 = 0;
        while (elapsed < 0.2) {
            try mm.matmulWith(ctx, &weights[calls % weights.len], x.ptr, w0.ne0, y.ptr, w0.ne1, n_tokens, cfg);
            calls += 1;
            elapsed = now() - t0;
        }
        const per_call = elapsed / @as(f64, @floatFromInt(calls));
        if (per_call < best.seconds) best = .{
            .seconds = per_call,
            .cpu_share = (cpuTime() - c0) / elapsed / @as(f64, @floatFromInt(ctx.pool.n_threads)),
        };
    }
    return best;
}

pub fn main(init: std.process.Init.Minimal) !void {
    var filter: [16]mm.GgmlType = undefined;
    var n_filter: usize = 0;
    var with_lm_head = false;
    var decode_only = false;
    var prompt_only = false;
    var hot = false;
    var repack = false;
    var cfg: mm.Config = .{};
    var args = std.process.Args.Iterator.init(init.args);
    _ = args.next();
    while (args.next()) |a| {
        if (std.mem.eql(u8, a, "--lm-head")) {
            with_lm_head = true;
        } else if (std.mem.eql(u8, a, "--hot")) {
            hot = true;
        } else if (std.mem.eql(u8, a, "--repack")) {
            repack = true;
        } else if (std.mem.eql(u8, a, "--decode")) {
            decode_only = true;
        } else if (std.mem.eql(u8, a, "--prompt")) {
            prompt_only = true;
        } else if (std.mem.startsWith(u8, a, "--prefetch=")) {
            cfg.prefetch_bytes = try std.fmt.parseInt(usize, a["--prefetch=".len..], 10);
        } else if (std.mem.startsWith(u8, a, "--chunk=")) {
            cfg.row_chunk_decode = try std.fmt.parseInt(usize, a["--chunk=".len..], 10);
        } else if (std.meta.stringToEnum(mm.GgmlType, a)) |t| {
            filter[n_filter] = t;
            n_filter += 1;
        } else {
            print("unknown argument {s}\n", .{a});
            return error.BadArgument;
        }
    }
    const types: []const mm.GgmlType = if (n_filter > 0) filter[0..n_filter] else &all_types;

    var contexts: [2]mm.Context = .{ .{ .pool = undefined }, .{ .pool = undefined } };
    try contexts[0].pool.init(1);
    try contexts[1].pool.init(2);

    var rng = std.Random.DefaultPrng.init(42);
    const max_tokens = 512;
    const x = try std.heap.page_allocator.alloc(f32, max_tokens * 9216);
    for (x) |*v| v.* = rng.random().floatNorm(f32);
    const y = try std.heap.page_allocator.alloc(f32, max_tokens * 248320);

    {
        var load: [64]u8 = undefined;
        const fd = linux.open("/proc/loadavg", .{ .ACCMODE = .RDONLY }, 0);
        const n = if (linux.errno(fd) == .SUCCESS) linux.read(@intCast(fd), &load, load.len) else 0;
        const line = std.mem.sliceTo(load[0..@min(n, load.len)], '\n');
        print("load average before the run: {s}\n", .{line});
        const buf = try mapBytes(dram_bytes);
        defer _ = linux.munmap(buf.ptr, buf.len);
        @memset(buf, 1);
        print("plain read of {d} MiB: {d:.1} GB/s (1 thread), {d:.1} GB/s (2 threads)\n\n", .{ dram_bytes >> 20, readBandwidth(&contexts[0], buf), readBandwidth(&contexts[1], buf) });
    }

    print("{s:<6} {s:<22} {s:>6} {s:>3} {s:>10} {s:>8} {s:>8} {s:>5} {s:>9}\n", .{ "type", "matrix (rows x cols)", "tokens", "thr", "ms/call", "GB/s", "GMAC/s", "cpu", "GMAC/cpu" });
    for (types) |kind| {
        const n_shapes = shapes.len + @intFromBool(with_lm_head and kind == .q6_k);
        for (0..n_shapes) |si| {
            const shape = if (si < shapes.len) shapes[si] else lm_head;
            const row_bytes = kind.rowBytes(shape.cols).?;
            const matrix_bytes = row_bytes * shape.rows;
            const copies = if (hot) 1 else @max(1, (dram_bytes + matrix_bytes - 1) / matrix_bytes);
            const buf = try mapBytes(copies * std.mem.alignForward(usize, matrix_bytes, 4096));
            defer _ = linux.munmap(buf.ptr, buf.len);
            const stride = buf.len / copies;
            fillMatrix(kind, buf[0..matrix_bytes], &rng);
            var weights: [64]mm.Weight = undefined;
            for (0..copies) |c| {
                if (c > 0) @memcpy(buf[c * stride ..][0..matrix_bytes], buf[0..matrix_bytes]);
                weights[c] = .{ .data = buf.ptr + c * stride, .kind = kind, .ne0 = shape.cols, .ne1 = shape.rows, .row_bytes = row_bytes };
            }
            var packed_buf: []align(4096) u8 = &.{};
            const packed_stride = std.mem.alignForward(usize, shape.rows * mm.repackedRowBytes(&weights[0]), 4096);
            if (repack and mm.canRepack(&weights[0])) packed_buf = try mapBytes(copies * packed_stride);
            defer if (packed_buf.len > 0) {
                _ = linux.munmap(packed_buf.ptr, packed_buf.len);
            };
            if (packed_buf.len > 0) for (0..copies) |c| {
                weights[c] = mm.repack(&contexts[1], &weights[c], @alignCast(packed_buf.ptr + c * packed_stride));
            };
            var name_buf: [16]u8 = undefined;
            const name = if (packed_buf.len > 0) std.fmt.bufPrint(&name_buf, "{s}/r", .{@tagName(kind)}) catch unreachable else @tagName(kind);
            const token_counts: []const usize = if (decode_only or si >= shapes.len) &.{1} else if (prompt_only) &.{ 16, 64, 512 } else &.{ 1, 16, 64, 512 };
            for (token_counts) |n_tokens| for (&contexts, 1..) |*ctx, threads| {
                // Short prompts (a chat turn) still stream their weights from DRAM, as decode does.
                const ws = if (n_tokens <= 16) weights[0..copies] else weights[0..1];
                const timing = try timeCalls(ctx, ws, x, y, n_tokens, cfg);
                const sec = timing.seconds;
                const macs = @as(f64, @floatFromInt(shape.rows * shape.cols * n_tokens));
                print("{s:<6} {s:<22} {d:>6} {d:>3} {d:>10.3} {d:>8.1} {d:>8.1} {d:>5.2} {d:>9.1}\n", .{
                    name,                                              shape.name,       n_tokens,         threads,                                                                sec * 1e3,
                    @as(f64, @floatFromInt(matrix_bytes)) / sec / 1e9, macs / sec / 1e9, timing.cpu_share, macs / sec / 1e9 / timing.cpu_share / @as(f64, @floatFromInt(threads)),
                });
            };
        }
    }
}
