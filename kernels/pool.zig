//! A persistent worker pool. The thread that calls `run` is worker 0; workers 1..n-1 are threads
//! that live as long as the pool. Between jobs they spin for a while (a forward pass issues
//! hundreds of jobs back to back, and a sleep/wake round trip costs more than most of them), then
//! sleep (`os.wait`: futex, __ulock or WaitOnAddress) until the next job.
//!
//! A job is a function called once on every worker with (worker index, worker count); it splits
//! its own work, either statically by index or dynamically with a `Chunks` counter.
const std = @import("std");
const os = @import("os.zig");

pub const max_threads = 64;

/// Iterations of `spinLoopHint` a worker waits for the next job before sleeping (~0.2-1 ms).
const spin_iterations = 20_000;

pub const Job = struct {
    func: *const fn (ctx: *const anyopaque, worker: usize, n_workers: usize) void,
    ctx: *const anyopaque,
};

pub const Pool = struct {
    n_threads: usize,
    threads: [max_threads]os.Thread = undefined,
    n_spawned: usize = 0,
    /// Bumped once per job; workers wait for it to change.
    generation: std.atomic.Value(u32) = .init(0),
    /// Workers (not counting the caller) still running the current job.
    pending: std.atomic.Value(u32) = .init(0),
    /// Workers inside `os.wait`, so `run` only pays for a wake syscall when someone sleeps.
    sleepers: std.atomic.Value(u32) = .init(0),
    job: Job = undefined,
    quit: bool = false,

    /// Creates the pool in place (workers keep a pointer to it, so it must not move).
    pub fn init(self: *Pool, n_threads: usize) !void {
        self.* = .{ .n_threads = @max(1, @min(n_threads, max_threads)) };
        while (self.n_spawned + 1 < self.n_threads) {
            const index = self.n_spawned + 1;
            self.threads[self.n_spawned] = os.Thread.spawn(.{ .stack_size = 1 << 20 }, workerMain, .{ self, index }) catch |err| {
                self.deinit();
                return err;
            };
            self.n_spawned += 1;
        }
    }

    pub fn deinit(self: *Pool) void {
        self.quit = true;
        _ = self.generation.fetchAdd(1, .seq_cst);
        os.wakeAll(&self.generation);
        for (self.threads[0..self.n_spawned]) |t| t.join();
        self.n_spawned = 0;
    }

    /// Calls `func(ctx, worker, n_workers)` on every worker and returns when all are done.
    pub fn run(self: *Pool, comptime Ctx: type, ctx: *const Ctx, comptime func: fn (*const Ctx, usize, usize) void) void {
        const Trampoline = struct {
            fn call(p: *const anyopaque, worker: usize, n: usize) void {
                func(@ptrCast(@alignCast(p)), worker, n);
            }
        };
        const n = self.n_spawned + 1;
        if (n == 1) return func(ctx, 0, 1);
        self.job = .{ .func = Trampoline.call, .ctx = ctx };
        self.pending.store(@intCast(self.n_spawned), .seq_cst);
        _ = self.generation.fetchAdd(1, .seq_cst);
        if (self.sleepers.load(.seq_cst) != 0) os.wakeAll(&self.generation);
        func(ctx, 0, n);
        while (self.pending.load(.acquire) != 0) std.atomic.spinLoopHint();
    }

    fn workerMain(self: *Pool, index: usize) void {
        // The generation is 0 until the first job; reading it here instead could miss a job
        // published before this thread got to run.
        var seen: u32 = 0;
        while (true) {
            var spins: u32 = 0;
            while (self.generation.load(.acquire) == seen) {
                if (spins < spin_iterations) {
                    std.atomic.spinLoopHint();
                    spins += 1;
                } else {
                    _ = self.sleepers.fetchAdd(1, .seq_cst);
                    // Returns at once if the generation already moved on (no lost wake-up).
                    os.wait(&self.generation, seen);
                    _ = self.sleepers.fetchSub(1, .seq_cst);
                }
            }
            seen = self.generation.load(.acquire);
            if (self.quit) return;
            self.job.func(self.job.ctx, index, self.n_spawned + 1);
            _ = self.pending.fetchSub(1, .release);
        }
    }
};

/// Dynamic work splitting: workers take chunks of `[0, total)` until none are left.
pub const Chunks = struct {
    next: std.atomic.Value(usize) = .init(0),
    total: usize,
    chunk: usize,

    pub fn init(total: usize, chunk: usize) Chunks {
        return .{ .total = total, .chunk = @max(1, chunk) };
    }

    /// The next `[begin, end)` range, or null when the work is exhausted.
    pub fn take(self: *Chunks) ?struct { begin: usize, end: usize } {
        const begin = self.next.fetchAdd(self.chunk, .monotonic);
        if (begin >= self.total) return null;
        return .{ .begin = begin, .end = @min(self.total, begin + self.chunk) };
    }
};

/// Runs `job.range(begin, end)` over `[0, total)` split into one share per worker (in multiples
/// of `granule`), or inline when the work is too small to be worth waking the workers.
pub fn forRange(pool: *Pool, total: usize, granule: usize, min_parallel: usize, comptime RangeJob: type, job: *const RangeJob) void {
    if (total < min_parallel or pool.n_spawned == 0) return job.range(0, total);
    const Wrap = struct {
        job: *const RangeJob,
        total: usize,
        granule: usize,
        fn run(w: *const @This(), worker: usize, n_workers: usize) void {
            const s = share(w.total, w.granule, worker, n_workers);
            if (s.begin < s.end) w.job.range(s.begin, s.end);
        }
    };
    pool.run(Wrap, &.{ .job = job, .total = total, .granule = granule }, Wrap.run);
}

/// The static share `[begin, end)` of `total` items for one worker, in multiples of `granule`.
pub fn share(total: usize, granule: usize, worker: usize, n_workers: usize) struct { begin: usize, end: usize } {
    const units = (total + granule - 1) / granule;
    const begin = @min(total, (units * worker / n_workers) * granule);
    const end = @min(total, (units * (worker + 1) / n_workers) * granule);
    return .{ .begin = begin, .end = end };
}

test "pool runs every worker once per job and sums exactly" {
    var pool: Pool = undefined;
    try pool.init(4);
    defer pool.deinit();
    const Ctx = struct {
        hits: [max_threads]std.atomic.Value(u32),
        chunks: *Chunks,
        sum: std.atomic.Value(u64),
        fn work(c: *const @This(), worker: usize, n: usize) void {
            _ = n;
            const self: *@This() = @constCast(c);
            _ = self.hits[worker].fetchAdd(1, .monotonic);
            while (self.chunks.take()) |r| {
                var s: u64 = 0;
                for (r.begin..r.end) |i| s += i;
                _ = self.sum.fetchAdd(s, .monotonic);
            }
        }
    };
    for (0..200) |_| {
        var chunks = Chunks.init(10_000, 37);
        var ctx = Ctx{ .hits = undefined, .chunks = &chunks, .sum = .init(0) };
        for (&ctx.hits) |*h| h.* = .init(0);
        pool.run(Ctx, &ctx, Ctx.work);
        try std.testing.expectEqual(@as(u64, 10_000 * 9_999 / 2), ctx.sum.load(.monotonic));
        for (0..4) |w| try std.testing.expectEqual(@as(u32, 1), ctx.hits[w].load(.monotonic));
    }
}

test "share covers the range without overlap" {
    for ([_]usize{ 1, 2, 3, 7 }) |n| {
        var covered: usize = 0;
        for (0..n) |w| {
            const s = share(1000, 16, w, n);
            try std.testing.expectEqual(covered, s.begin);
            try std.testing.expect(s.begin % 16 == 0);
            covered = s.end;
        }
        try std.testing.expectEqual(@as(usize, 1000), covered);
    }
}
