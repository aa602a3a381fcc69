//! Memory read bandwidth, the ceiling of token-by-token decode (every weight is streamed from DRAM
//! once per token). `deno run -A cli.ts bench` builds and runs it to report decode as a fraction
//! of `bandwidth / bytes of weights read per token`.
//!
//!   bandwidth [max_threads] [MiB]      default 2 threads, 1024 MiB
//!
//! Reads a buffer far larger than any cache (pages touched first, so they are real DRAM, not the
//! shared zero page) with 1, 2, … max_threads threads, each thread a contiguous slice, 4
//! independent vector accumulators per thread so loads are never serialised. Prints one JSON line:
//! `{"bytes":N,"gbPerSecond":[1 thread, 2 threads, …]}`, each the best of 5 passes.
const std = @import("std");
const linux = std.os.linux;

const V = @Vector(64, u8);
const unroll = 4;
const step = unroll * @sizeOf(V);
const passes = 5;
const max_threads = 64;

fn now() f64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(.MONOTONIC, &ts);
    return @as(f64, @floatFromInt(ts.sec)) + @as(f64, @floatFromInt(ts.nsec)) * 1e-9;
}

fn print(comptime fmt: []const u8, args: anytype) void {
    var buf: [1024]u8 = undefined;
    const s = std.fmt.bufPrint(&buf, fmt, args) catch return;
    _ = linux.write(1, s.ptr, s.len);
}

/// XOR-folds `part` (a multiple of `step` bytes) so the loads cannot be optimised away.
fn readSlice(part: []const u8, sink: *u8) void {
    var acc: [unroll]V = @splat(@splat(0));
    var i: usize = 0;
    while (i + step <= part.len) : (i += step) inline for (0..unroll) |u| {
        acc[u] ^= @as(V, part[i + u * @sizeOf(V) ..][0..@sizeOf(V)].*);
    };
    var all: V = @splat(0);
    inline for (0..unroll) |u| all ^= acc[u];
    sink.* = @reduce(.Xor, all);
}

/// Seconds for `threads` threads to read `buf` once (the calling thread reads the first slice).
fn timedPass(buf: []const u8, threads: usize, sinks: *[max_threads]u8) !f64 {
    const per = buf.len / threads / step * step;
    var handles: [max_threads]std.Thread = undefined;
    const t0 = now();
    for (1..threads) |w| handles[w] = try std.Thread.spawn(.{ .stack_size = 64 << 10 }, readSlice, .{ buf[w * per ..][0..per], &sinks[w] });
    readSlice(buf[0..per], &sinks[0]);
    for (1..threads) |w| handles[w].join();
    const dt = now() - t0;
    return @as(f64, @floatFromInt(per * threads)) / dt;
}

pub fn main(init: std.process.Init.Minimal) !void {
    var threads: usize = 2;
    var mib: usize = 1024;
    var args = std.process.Args.Iterator.init(init.args);
    _ = args.next();
    if (args.next()) |a| threads = try std.fmt.parseInt(usize, a, 10);
    if (args.next()) |a| mib = try std.fmt.parseInt(usize, a, 10);
    if (threads < 1 or threads > max_threads or mib < 64) return error.BadArgument;

    const len = mib << 20;
    const addr = linux.mmap(null, len, .{ .READ = true, .WRITE = true }, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0);
    if (linux.errno(addr) != .SUCCESS) return error.OutOfMemory;
    const buf = @as([*]u8, @ptrFromInt(addr))[0..len];
    defer _ = linux.munmap(buf.ptr, buf.len);
    @memset(buf, 0x5a); // makes every page resident and private

    var sinks: [max_threads]u8 = undefined;
    _ = try timedPass(buf, threads, &sinks); // warm-up: page tables, thread start-up, clocks
    var line: [max_threads * 16]u8 = undefined;
    var at: usize = 0;
    for (1..threads + 1) |t| {
        var best: f64 = 0;
        for (0..passes) |_| best = @max(best, try timedPass(buf, t, &sinks));
        const item = try std.fmt.bufPrint(line[at..], "{s}{d:.2}", .{ if (t > 1) "," else "", best / 1e9 });
        at += item.len;
    }
    std.mem.doNotOptimizeAway(sinks);
    print("{{\"bytes\":{d},\"gbPerSecond\":[{s}]}}\n", .{ len, line[0..at] });
}
