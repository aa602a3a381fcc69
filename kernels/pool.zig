//! A persistent worker pool. The thread that calls `run` is worker 0; workers 1..n-1 are threads
//! that live as long as the pool. Between jobs they spin for a while (a forward pass issues
//! hundreds of jobs back to back, and a sleep/wake round trip costs more than most of them), then
//! sleep (`os.wait`: futex, __ulock or WaitOnAddress) until the next job.
//!
//! A job is a function called once on every worker with (worker index, worker count); it splits
//! its own work, in the hot paths dynamically with a `Chunks` counter: users' machines are never
//! idle, and with static equal shares a worker that loses its core to another program holds up
//! the whole step, while with chunks the others take over the rest of its work.
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
    /// Set while the caller sleeps on `pending`, so the last worker to finish wakes it.
    caller_sleeping: std.atomic.Value(u32) = .init(0),
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
        // Spin briefly, then sleep: a worker that is not scheduled (another program holds its
        // core) may take a whole time slice to finish, and spinning meanwhile only takes CPU time
        // from it and from the rest of the machine.
        var spins: u32 = 0;
        while (true) {
            const left = self.pending.load(.acquire);
            if (left == 0) break;
            if (spins < spin_iterations) {
                std.atomic.spinLoopHint();
                spins += 1;
                continue;
            }
            self.caller_sleeping.store(1, .seq_cst);
            // Re-read after announcing the sleep: a worker that finished in between saw no flag.
            const now = self.pending.load(.seq_cst);
            if (now != 0) os.wait(&self.pending, now);
            self.caller_sleeping.store(0, .seq_cst);
        }
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
            // The last to finish wakes a sleeping caller. The caller announced its sleep before
            // reading a nonzero count, so this load, after that count dropped to zero, sees it.
            if (self.pending.fetchSub(1, .seq_cst) == 1 and self.caller_sleeping.load(.seq_cst) != 0) os.wakeAll(&self.pending);
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

/// Chunks per worker in `forRange`: enough that the others can absorb a stalled worker's share,
/// few enough that taking one costs nothing next to its work.
const chunks_per_worker = 4;

/// Runs `job.range(begin, end)` over `[0, total)` in chunks (multiples of `granule`) that the
/// workers take as they go, or inline when the work is too small to be worth waking the workers.
/// Each item must be computed on its own, so the result does not depend on who took which chunk.
pub fn forRange(pool: *Pool, total: usize, granule: usize, min_parallel: usize, comptime RangeJob: type, job: *const RangeJob) void {
    if (total < min_parallel or pool.n_spawned == 0) return job.range(0, total);
    const Wrap = struct {
        job: *const RangeJob,
        chunks: *Chunks,
        fn run(w: *const @This(), _: usize, _: usize) void {
            while (w.chunks.take()) |r| w.job.range(r.begin, r.end);
        }
    };
    const units = (total + granule - 1) / granule;
    const per_chunk = @max(1, units / ((pool.n_spawned + 1) * chunks_per_worker));
    var chunks = Chunks.init(total, per_chunk * granule);
    pool.run(Wrap, &.{ .job = job, .chunks = &chunks }, Wrap.run);
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

test "forRange covers every item once, in granule-aligned chunks" {
    var pool: Pool = undefined;
    try pool.init(3);
    defer pool.deinit();
    const CountHits = struct {
        hits: *[1000]std.atomic.Value(u32),
        fn range(j: *const @This(), begin: usize, end: usize) void {
            std.debug.assert(begin % 16 == 0);
            for (begin..end) |i| _ = j.hits[i].fetchAdd(1, .monotonic);
        }
    };
    for (0..50) |_| {
        var hits: [1000]std.atomic.Value(u32) = undefined;
        for (&hits) |*h| h.* = .init(0);
        forRange(&pool, 1000, 16, 1, CountHits, &.{ .hits = &hits });
        for (&hits) |*h| try std.testing.expectEqual(@as(u32, 1), h.load(.monotonic));
    }
}

test "run returns when a worker finishes long after the caller gave up spinning" {
    var pool: Pool = undefined;
    try pool.init(2);
    defer pool.deinit();
    const Ctx = struct {
        done: std.atomic.Value(u32) = .init(0),
        fn work(c: *const @This(), worker: usize, _: usize) void {
            if (worker == 1) {
                // Longer than the caller's spin: it must sleep and be woken.
                const start = os.monotonicNanos();
                while (os.monotonicNanos() - start < 20 * std.time.ns_per_ms) std.atomic.spinLoopHint();
                _ = @constCast(c).done.fetchAdd(1, .release);
            }
        }
    };
    for (0..5) |_| {
        var ctx = Ctx{};
        pool.run(Ctx, &ctx, Ctx.work);
        try std.testing.expectEqual(@as(u32, 1), ctx.done.load(.acquire));
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
