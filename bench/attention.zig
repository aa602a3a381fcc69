//! Micro-benchmark of `attention.attend` at Qwen3.5-4B shapes (16 query heads, 4 KV heads of 256
//! dims): one decoded token and a 512-token prompt chunk at several cache depths, for each cache
//! type pair, with 1 and 2 threads.
//!
//!   zig build bench-attention                                  depths 4096 and 32768, F16 cache
//!   zig build bench-attention -- --depth=16384 --kt=q8_0 --vt=q8_0 --threads=2 --decode
//!
//! Decode cycles through 8 caches (the 4B's attention layers), so every call reads its cache from
//! DRAM as a real token does, and reports the cache bytes read per second. Prompt chunks report
//! G multiply-adds per second (QK and PV: 2 · 512 · 16 · keys · 256, keys averaged over the chunk's
//! causal rows). Each figure is the best of 3 timed windows of at least 0.3 s.
const std = @import("std");
const linux = std.os.linux;
const att = @import("attention");

const n_head = 16;
const n_head_kv = 4;
const head_dim = 256;
const kv_dim = n_head_kv * head_dim;
const layers = 8;

fn now() f64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(.MONOTONIC, &ts);
    return @as(f64, @floatFromInt(ts.sec)) + @as(f64, @floatFromInt(ts.nsec)) * 1e-9;
}

fn cpuTime() f64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(.PROCESS_CPUTIME_ID, &ts);
    return @as(f64, @floatFromInt(ts.sec)) + @as(f64, @floatFromInt(ts.nsec)) * 1e-9;
}

fn print(comptime fmt: []const u8, args: anytype) void {
    var buf: [512]u8 = undefined;
    const s = std.fmt.bufPrint(&buf, fmt, args) catch return;
    _ = linux.write(1, s.ptr, s.len);
}

fn mapBytes(n: usize) ![]align(4096) u8 {
    const addr = linux.mmap(null, n, .{ .READ = true, .WRITE = true }, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0);
    if (linux.errno(addr) != .SUCCESS) return error.OutOfMemory;
    _ = linux.madvise(@ptrFromInt(addr), n, linux.MADV.HUGEPAGE);
    return @as([*]align(4096) u8, @ptrFromInt(addr))[0..n];
}

/// Wall seconds per call (best of 3 windows), and CPU seconds per call in that window divided by
/// the thread count: on a busy machine the wall figure suffers, the CPU one much less.
const Timing = struct { wall: f64, cpu: f64 };

fn timeCalls(ctx: *att.Context, s: att.Shape, q: []const f32, kcs: []const []u8, vcs: []const []u8, out: []f32) !Timing {
    for (kcs, vcs) |kc, vc| try att.attend(ctx, s, q.ptr, kc.ptr, vc.ptr, out.ptr);
    var best = Timing{ .wall = std.math.inf(f64), .cpu = std.math.inf(f64) };
    for (0..3) |_| {
        var calls: usize = 0;
        const t0 = now();
        const c0 = cpuTime();
        var elapsed: f64 = 0;
        while (elapsed < 0.3) {
            const i = calls % kcs.len;
            try att.attend(ctx, s, q.ptr, kcs[i].ptr, vcs[i].ptr, out.ptr);
            calls += 1;
            elapsed = now() - t0;
        }
        const n: f64 = @floatFromInt(calls);
        best.wall = @min(best.wall, elapsed / n);
        best.cpu = @min(best.cpu, (cpuTime() - c0) / n / @as(f64, @floatFromInt(ctx.pool.n_threads)));
    }
    return best;
}

pub fn main(init: std.process.Init.Minimal) !void {
    var depths_buf: [8]usize = undefined;
    var depths: []const usize = &.{ 4096, 32768 };
    var kt: att.CacheType = .f16;
    var vt: att.CacheType = .f16;
    var thread_counts: []const usize = &.{ 1, 2 };
    var two = [_]usize{2};
    var one = [_]usize{1};
    var decode = true;
    var prompt = true;
    var args = std.process.Args.Iterator.init(init.args);
    _ = args.next();
    while (args.next()) |a| {
        if (std.mem.startsWith(u8, a, "--depth=")) {
            var n: usize = 0;
            var it = std.mem.splitScalar(u8, a["--depth=".len..], ',');
            while (it.next()) |d| : (n += 1) depths_buf[n] = try std.fmt.parseInt(usize, d, 10);
            depths = depths_buf[0..n];
        } else if (std.mem.startsWith(u8, a, "--kt=")) {
            kt = std.meta.stringToEnum(att.CacheType, a["--kt=".len..]) orelse return error.BadArgument;
        } else if (std.mem.startsWith(u8, a, "--vt=")) {
            vt = std.meta.stringToEnum(att.CacheType, a["--vt=".len..]) orelse return error.BadArgument;
        } else if (std.mem.eql(u8, a, "--threads=2")) {
            thread_counts = &two;
        } else if (std.mem.eql(u8, a, "--threads=1")) {
            thread_counts = &one;
        } else if (std.mem.eql(u8, a, "--decode")) {
            prompt = false;
        } else if (std.mem.eql(u8, a, "--prompt")) {
            decode = false;
        } else {
            print("unknown argument {s}\n", .{a});
            return error.BadArgument;
        }
    }
    const chunk = 512;
    var max_depth: usize = 0;
    for (depths) |d| max_depth = @max(max_depth, d);
    const rows = max_depth + chunk;
    const k_row = kt.rowBytes(kv_dim).?;
    const v_row = vt.rowBytes(kv_dim).?;

    // 8 layers' caches, filled through the kernel's own store from random rows
    var kcs: [layers][]u8 = undefined;
    var vcs: [layers][]u8 = undefined;
    var rng = std.Random.DefaultPrng.init(7);
    const rand = rng.random();
    const rowbuf = try std.heap.page_allocator.alloc(f32, 2 * 64 * kv_dim);
    for (0..layers) |l| {
        kcs[l] = try mapBytes(std.mem.alignForward(usize, rows * k_row, 4096));
        vcs[l] = try mapBytes(std.mem.alignForward(usize, rows * v_row, 4096));
        var p: usize = 0;
        while (p < rows) : (p += 64) {
            const n: usize = @min(64, rows - p);
            for (rowbuf[0 .. 2 * n * kv_dim]) |*x| x.* = rand.floatNorm(f32);
            att.store(rowbuf.ptr, rowbuf.ptr + n * kv_dim, n, kv_dim, head_dim, kt, vt, kcs[l].ptr, vcs[l].ptr, p);
        }
    }
    const q = try std.heap.page_allocator.alloc(f32, chunk * n_head * 2 * head_dim);
    for (q) |*x| x.* = rand.floatNorm(f32);
    const out = try std.heap.page_allocator.alloc(f32, chunk * n_head * head_dim);

    print("attention, 4B shapes ({d}/{d} heads x {d}), K {s}, V {s}\n", .{ n_head, n_head_kv, head_dim, kt.name(), vt.name() });
    for (thread_counts) |threads| {
        var ctx = att.Context{ .pool = undefined };
        try ctx.pool.init(threads);
        defer ctx.pool.deinit();
        for (depths) |depth| {
            const base = att.Shape{ .q_tok_stride = n_head * 2 * head_dim, .q_head_stride = 2 * head_dim, .n_tokens = 1, .pos = depth, .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = head_dim, .scale = 1.0 / 16.0, .k_type = kt, .v_type = vt };
            if (decode) {
                const tm = try timeCalls(&ctx, base, q, &kcs, &vcs, out);
                const bytes: f64 = @floatFromInt((depth + 1) * (k_row + v_row));
                print("  {d} thread(s), depth {d:>6}: decode  {d:8.3} ms/layer (cpu {d:8.3})  {d:6.1} GB/s of cache  ({d:.1} ms per token for {d} layers)\n", .{ threads, depth, tm.wall * 1e3, tm.cpu * 1e3, bytes / tm.wall / 1e9, tm.wall * 1e3 * layers, layers });
            }
            if (prompt) {
                var s = base;
                s.n_tokens = chunk;
                const tm = try timeCalls(&ctx, s, q, kcs[0..1], vcs[0..1], out);
                const keys: f64 = @floatFromInt(depth + (chunk + 1) / 2);
                const macs = 2 * chunk * n_head * keys * head_dim;
                print("  {d} thread(s), depth {d:>6}: prompt {d:8.1} ms/layer/{d} tokens (cpu {d:8.1})  {d:6.1} GMAC/s, {d:6.1} GMAC/s per busy thread\n", .{ threads, depth, tm.wall * 1e3, chunk, tm.cpu * 1e3, macs / tm.wall / 1e9, macs / tm.cpu / 1e9 / @as(f64, @floatFromInt(threads)) });
            }
        }
    }
}
