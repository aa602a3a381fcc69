//! The kernels' one contact with the operating system, for Linux, macOS and Windows: read-only
//! file mappings, zeroed pages, memory advice, the page size, sleeping and waking threads, a
//! monotonic clock, the environment, the CPU's features and its core topology. No other kernel
//! file makes a system call or names an OS; they call these functions, which do the best each
//! system offers. Linux-only tuning (populate on map, transparent huge pages, populate on write,
//! holes in a mapping) lives here too and is a no-op or a plain fallback elsewhere.
//!
//! Linux uses raw system calls (`std.os.linux`) where a kernel feature matters (futex, madvise
//! codes glibc may not know); macOS uses libSystem (`std.c`: mmap, `__ulock_wait`, sysctl);
//! Windows uses kernel32 and ntdll (`MapViewOfFile`, `VirtualAlloc`, `RtlWaitOnAddress`).
const std = @import("std");
const builtin = @import("builtin");

const native_os = builtin.os.tag;
const is_linux = native_os == .linux;
const is_darwin = native_os.isDarwin();
const is_windows = native_os == .windows;

comptime {
    if (!(is_linux or is_darwin or is_windows)) @compileError("deltaq's kernels run on Linux, macOS and Windows");
}

const linux = std.os.linux;

/// The smallest page size the target can have, as an alignment (`pageSize()` is the real one).
pub const page_align = std.heap.page_size_min;
pub const PagePtr = [*]align(page_align) u8;

/// The page size at run time: 4 KiB on x86-64, 16 KiB on Apple Silicon, 4–64 KiB on ARM Linux.
pub fn pageSize() usize {
    return std.heap.pageSize();
}

/// `len` rounded up to whole pages (at least one).
pub fn pageRound(len: usize) usize {
    return std.mem.alignForward(usize, @max(len, 1), pageSize());
}

// ---------------------------------------------------------------------------------------------
// File mappings.

pub const MapError = error{ NotFound, AccessDenied, IsDirectory, Empty, TooLarge, Unexpected };

/// Words for an error, for messages ("cannot open: <describe>").
pub fn describe(e: MapError) []const u8 {
    return switch (e) {
        error.NotFound => "no such file",
        error.AccessDenied => "permission denied",
        error.IsDirectory => "it is a directory",
        error.Empty => "the file is empty",
        error.TooLarge => "the file is larger than the address space",
        error.Unexpected => "the system refused to map it",
    };
}

pub const Mapping = struct { ptr: PagePtr, len: usize };

/// Maps a whole file read-only (private). Its pages are read in now where the system can do that
/// cheaply (Linux populates the mapping, like llama.cpp's load; macOS and Windows are asked to
/// prefetch), so the first forward pass does not pay one fault per page of weights.
pub fn mapFile(path: [*:0]const u8) MapError!Mapping {
    if (is_windows) return windows.mapFile(path);
    if (is_linux) {
        const fd_rc = linux.open(path, .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0);
        if (linux.errno(fd_rc) != .SUCCESS) return openError(@backingInt(linux.errno(fd_rc)));
        const fd: linux.fd_t = @intCast(fd_rc);
        defer _ = linux.close(fd);
        const end = linux.lseek(fd, 0, linux.SEEK.END);
        if (linux.errno(end) != .SUCCESS) return error.Unexpected;
        if (end == 0) return error.Empty;
        const len: usize = @intCast(end);
        const addr = linux.mmap(null, len, .{ .READ = true }, .{ .TYPE = .PRIVATE, .POPULATE = true }, fd, 0);
        if (linux.errno(addr) != .SUCCESS) return if (linux.errno(addr) == .NODEV) error.IsDirectory else error.Unexpected;
        return .{ .ptr = @ptrFromInt(addr), .len = len };
    }
    const c = std.c;
    const fd = c.open(path, .{ .ACCMODE = .RDONLY, .CLOEXEC = true });
    if (fd < 0) return openError(@backingInt(c.errno(fd)));
    defer _ = c.close(fd);
    const end = c.lseek(fd, 0, c.SEEK.END);
    if (end < 0) return error.IsDirectory;
    if (end == 0) return error.Empty;
    const len = std.math.cast(usize, end) orelse return error.TooLarge;
    const addr = c.mmap(null, len, .{ .READ = true }, .{ .TYPE = .PRIVATE }, fd, 0);
    if (addr == c.MAP_FAILED) return error.Unexpected;
    const ptr: PagePtr = @ptrCast(@alignCast(addr));
    _ = c.madvise(ptr, len, c.MADV.WILLNEED);
    return .{ .ptr = ptr, .len = len };
}

fn openError(errno: u16) MapError {
    const E = if (is_linux) linux.E else std.c.E;
    const e: E = @fromBackingInt(@intCast(errno));
    return switch (e) {
        .NOENT, .NOTDIR => error.NotFound,
        .ACCES, .PERM => error.AccessDenied,
        .ISDIR => error.IsDirectory,
        else => error.Unexpected,
    };
}

pub fn unmapFile(m: Mapping) void {
    if (is_windows) return windows.unmapFile(m.ptr);
    unmapPosix(m.ptr, m.len);
}

/// Gives the whole pages inside `[ptr, ptr + len)` of a file mapping back to the system for good:
/// the range stays reserved but becomes inaccessible. On Linux an anonymous PROT_NONE range
/// replaces it rather than merely dropping the pages (MADV_DONTNEED): with large page-cache folios
/// a fault on a neighbouring tensor maps its whole folio back in. Windows protects the pages and
/// trims them from the working set.
pub fn releaseMapped(ptr: [*]const u8, len: usize) void {
    const page = pageSize();
    const start = std.mem.alignForward(usize, @intFromPtr(ptr), page);
    const end = std.mem.alignBackward(usize, @intFromPtr(ptr) + len, page);
    if (end <= start) return;
    const p: PagePtr = @ptrFromInt(start);
    if (is_windows) return windows.release(p, end - start);
    if (is_linux) {
        const hole = linux.mmap(p, end - start, .{}, .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .FIXED = true, .NORESERVE = true }, -1, 0);
        if (linux.errno(hole) != .SUCCESS) _ = linux.madvise(p, end - start, linux.MADV.DONTNEED);
        return;
    }
    const c = std.c;
    if (c.mmap(p, end - start, .{}, .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .FIXED = true }, -1, 0) == c.MAP_FAILED)
        _ = c.madvise(p, end - start, c.MADV.DONTNEED);
}

// ---------------------------------------------------------------------------------------------
// Anonymous memory.

const huge_page = 2 << 20;

/// `len` (whole pages) bytes of zeroed private memory, or null. `resident` memory is faulted in
/// now rather than on first touch: for buffers every token reads and writes in full (recurrent
/// state), so that cost lands at allocation instead of in the first token. On Linux such buffers
/// also go on 2 MiB-aligned transparent huge pages when they span one or more: a session's
/// DeltaNet state (48 MiB at 4B shapes) on 4 KiB pages took ~12,000 faults during its first
/// forward pass, 60–110 ms. Lazy buffers (KV caches, whose first prompt touches a few rows) keep
/// small pages, so a first touch never zeroes 2 MiB it does not need.
pub fn allocPages(len: usize, resident: bool) ?PagePtr {
    if (is_windows) {
        const p = windows.allocPages(len) orelse return null;
        if (resident) touchPages(p, len);
        return p;
    }
    if (!is_linux) {
        const c = std.c;
        const addr = c.mmap(null, len, .{ .READ = true, .WRITE = true }, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0);
        if (addr == c.MAP_FAILED) return null;
        const p: PagePtr = @ptrCast(@alignCast(addr));
        if (resident) touchPages(p, len);
        return p;
    }
    const prot: linux.PROT = .{ .READ = true, .WRITE = true };
    const flags: linux.MAP = .{ .TYPE = .PRIVATE, .ANONYMOUS = true };
    if (!resident or len < huge_page) {
        const addr = linux.mmap(null, len, prot, flags, -1, 0);
        if (linux.errno(addr) != .SUCCESS) return null;
        if (resident) populateWrite(@ptrFromInt(addr), len);
        return @ptrFromInt(addr);
    }
    // Over-map by one huge page, then unmap the unaligned head and the tail beyond `len`.
    const addr = linux.mmap(null, len + huge_page, prot, flags, -1, 0);
    if (linux.errno(addr) != .SUCCESS) return null;
    const start = std.mem.alignForward(usize, addr, huge_page);
    if (start > addr) _ = linux.munmap(@ptrFromInt(addr), start - addr);
    const tail = addr + len + huge_page - (start + len);
    if (tail > 0) _ = linux.munmap(@ptrFromInt(start + len), tail);
    _ = linux.madvise(@ptrFromInt(start), len, linux.MADV.HUGEPAGE);
    populateWrite(@ptrFromInt(start), len);
    return @ptrFromInt(start);
}

/// Frees memory from `allocPages` (the same `len`).
pub fn freePages(ptr: PagePtr, len: usize) void {
    if (is_windows) return windows.freePages(ptr);
    unmapPosix(ptr, len);
}

/// Faults `[ptr, ptr + len)` (page-aligned memory about to be written in full) in with one call:
/// cheaper than a fault per page. Linux ≥ 5.14 (MADV_POPULATE_WRITE); elsewhere, and on older
/// kernels, pages fault in as they are written.
pub fn populateWrite(ptr: PagePtr, len: usize) void {
    if (is_linux) _ = linux.madvise(ptr, len, madv_populate_write);
}

const madv_populate_write = 23;

/// Writes one zero per page (the memory is already zero): the portable way to fault pages in now.
fn touchPages(p: PagePtr, len: usize) void {
    const page = pageSize();
    var at: usize = 0;
    while (at < len) : (at += page) @as(*volatile u8, @ptrCast(p + at)).* = 0;
}

// Growable memory (the KV cache): address space reserved once, memory committed as it fills.

/// Granule of `commitPages`/`decommitPages`: a transparent huge page on Linux, a whole number of
/// pages everywhere.
pub const commit_granule = huge_page;

/// Address space for `len` bytes (a multiple of `commit_granule`) that holds no memory and is
/// inaccessible until committed; null if it cannot be reserved. On Linux it starts on a 2 MiB
/// boundary, so committed granules can be huge pages. Free with `freePages(ptr, len)`.
pub fn reservePages(len: usize) ?PagePtr {
    if (is_windows) return windows.reservePages(len);
    if (!is_linux) {
        const c = std.c;
        const addr = c.mmap(null, len, .{}, .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .NORESERVE = true }, -1, 0);
        if (addr == c.MAP_FAILED) return null;
        return @ptrCast(@alignCast(addr));
    }
    const flags: linux.MAP = .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .NORESERVE = true };
    const addr = linux.mmap(null, len + huge_page, .{}, flags, -1, 0);
    if (linux.errno(addr) != .SUCCESS) return null;
    const start = std.mem.alignForward(usize, addr, huge_page);
    if (start > addr) _ = linux.munmap(@ptrFromInt(addr), start - addr);
    const tail = addr + len + huge_page - (start + len);
    if (tail > 0) _ = linux.munmap(@ptrFromInt(start + len), tail);
    return @ptrFromInt(start);
}

/// Makes `[ptr, ptr + len)` of a reservation readable, writable and zero (granule-aligned; pages
/// arrive on first touch). False when the system refuses the memory.
pub fn commitPages(ptr: PagePtr, len: usize) bool {
    if (is_windows) return windows.commitPages(ptr, len);
    if (!is_linux) return std.c.mprotect(@ptrCast(ptr), len, .{ .READ = true, .WRITE = true }) == 0;
    if (linux.errno(linux.mprotect(ptr, len, .{ .READ = true, .WRITE = true })) != .SUCCESS) return false;
    _ = linux.madvise(ptr, len, linux.MADV.HUGEPAGE);
    return true;
}

/// Gives `[ptr, ptr + len)` of a reservation back to the system: its memory is released and the
/// range is inaccessible again (granule-aligned).
pub fn decommitPages(ptr: PagePtr, len: usize) void {
    if (is_windows) return windows.decommitPages(ptr, len);
    // A fresh inaccessible mapping over the range drops its pages and its commit charge at once.
    if (!is_linux) {
        _ = std.c.mmap(ptr, len, .{}, .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .FIXED = true, .NORESERVE = true }, -1, 0);
        return;
    }
    _ = linux.mmap(ptr, len, .{}, .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .FIXED = true, .NORESERVE = true }, -1, 0);
}

fn unmapPosix(ptr: PagePtr, len: usize) void {
    if (is_linux) {
        _ = linux.munmap(ptr, len);
    } else {
        _ = std.c.munmap(ptr, len);
    }
}

// ---------------------------------------------------------------------------------------------
// Sleeping and waking threads on a 32-bit word (futex, __ulock, WaitOnAddress).

/// Sleeps while `word` holds `expect`. Returns when woken, or at once if the word already differs
/// (no lost wake-up); may also return spuriously, so callers re-check in a loop.
pub fn wait(word: *const std.atomic.Value(u32), expect: u32) void {
    if (is_linux) {
        _ = linux.futex_4arg(&word.raw, .{ .cmd = .WAIT, .private = true }, expect, null);
    } else if (is_darwin) {
        _ = std.c.__ulock_wait(.{ .op = .COMPARE_AND_WAIT, .NO_ERRNO = true }, &word.raw, expect, 0);
    } else {
        _ = std.os.windows.ntdll.RtlWaitOnAddress(&word.raw, &expect, @sizeOf(u32), null);
    }
}

/// Wakes every thread in `wait` on `word`.
pub fn wakeAll(word: *const std.atomic.Value(u32)) void {
    if (is_linux) {
        _ = linux.futex_3arg(&word.raw, .{ .cmd = .WAKE, .private = true }, std.math.maxInt(i32));
    } else if (is_darwin) {
        _ = std.c.__ulock_wake(.{ .op = .COMPARE_AND_WAIT, .WAKE_ALL = true, .NO_ERRNO = true }, &word.raw, 0);
    } else {
        std.os.windows.ntdll.RtlWakeAddressAll(&word.raw);
    }
}

/// Worker threads: `std.Thread` is pthreads where libc is linked (the library always links it: a
/// library dlopen'ed into Deno never runs Zig's start code, which the libc-free `spawn` relies
/// on) and CreateThread on Windows.
pub const Thread = std.Thread;

// ---------------------------------------------------------------------------------------------
// Time and environment.

/// Nanoseconds from an arbitrary start, never going backwards.
pub fn monotonicNanos() u64 {
    if (is_windows) return windows.monotonicNanos();
    var ts: linux.timespec = undefined;
    if (is_linux) {
        _ = linux.clock_gettime(.MONOTONIC, &ts);
    } else {
        _ = std.c.clock_gettime(.MONOTONIC, @ptrCast(&ts));
    }
    return @as(u64, @intCast(ts.sec)) * std.time.ns_per_s + @as(u64, @intCast(ts.nsec));
}

/// The value of an environment variable, or null (also when libc is not linked, as in tests).
pub fn getenv(name: [*:0]const u8) ?[:0]const u8 {
    if (!builtin.link_libc) return null;
    const v = std.c.getenv(name) orelse return null;
    return std.mem.span(v);
}

// ---------------------------------------------------------------------------------------------
// CPU features the OS reports (arm64: user space cannot read the ID registers portably).

pub const ArmFeatures = struct { dotprod: bool = false, i8mm: bool = false };

/// The arm64 extensions the kernels have paths for: Linux hwcaps (HWCAP_ASIMDDP, HWCAP2_I8MM),
/// macOS `hw.optional.arm.FEAT_*`. Nothing on other systems (Windows on arm64 is not a target).
pub fn armFeatures() ArmFeatures {
    if (is_linux) {
        const at_hwcap = 16;
        const at_hwcap2 = 26;
        // In a library loaded by a libc program Zig's own auxv copy is never set up: ask libc.
        const getauxval = if (builtin.link_libc) std.c.getauxval else linux.getauxval;
        const hwcap = getauxval(at_hwcap);
        const hwcap2 = getauxval(at_hwcap2);
        return .{ .dotprod = hwcap & (1 << 20) != 0, .i8mm = hwcap2 & (1 << 13) != 0 };
    }
    if (is_darwin) return .{ .dotprod = sysctlFlag("hw.optional.arm.FEAT_DotProd"), .i8mm = sysctlFlag("hw.optional.arm.FEAT_I8MM") };
    return .{};
}

fn sysctlFlag(name: [*:0]const u8) bool {
    var value: c_int = 0;
    var len: usize = @sizeOf(c_int);
    if (std.c.sysctlbyname(name, &value, &len, null, 0) != 0) return false;
    return value != 0;
}

// ---------------------------------------------------------------------------------------------
// Core topology: how many threads a memory-bound decode should run.

/// The physical performance cores this process may run on: the default thread count. A second
/// hyper-thread of a core adds no memory bandwidth, and an efficiency core finishes its share of
/// a step later than the others, which then wait for it. Linux counts distinct cores among the
/// CPUs of the affinity mask (only the performance ones on hybrid Intel) and honours a cgroup CPU
/// quota; macOS asks for perflevel0 (the P cores of Apple Silicon); Windows counts the cores of
/// the highest efficiency class. When the system will not say, the logical CPU count.
pub fn performanceCores() usize {
    const logical = @max(1, Thread.getCpuCount() catch 1);
    const cores = if (is_linux) linuxTopology.performanceCores() else if (is_darwin) darwinPerformanceCores() else windows.performanceCores();
    return std.math.clamp(cores orelse logical, 1, logical);
}

fn darwinPerformanceCores() ?usize {
    return sysctlCount("hw.perflevel0.physicalcpu") orelse sysctlCount("hw.physicalcpu");
}

fn sysctlCount(name: [*:0]const u8) ?usize {
    var value: c_int = 0;
    var len: usize = @sizeOf(c_int);
    if (std.c.sysctlbyname(name, &value, &len, null, 0) != 0 or value <= 0) return null;
    return @intCast(value);
}

/// A set of CPU numbers as Linux numbers them, as large as the affinity mask glibc's cpu_set_t
/// holds (1,024 CPUs).
pub const CpuSet = std.bit_set.Array(usize, @bitSizeOf(linux.cpu_set_t));

/// Parses a sysfs CPU list ("0-3,8,10-11\n") into a set; null if it is malformed.
pub fn parseCpuList(text: []const u8) ?CpuSet {
    var set = CpuSet.empty;
    var ranges = std.mem.tokenizeAny(u8, text, ",\n \t");
    while (ranges.next()) |range| {
        const dash = std.mem.indexOfScalar(u8, range, '-');
        const first = std.fmt.parseInt(usize, range[0 .. dash orelse range.len], 10) catch return null;
        const last = if (dash) |d| std.fmt.parseInt(usize, range[d + 1 ..], 10) catch return null else first;
        if (last < first or last >= CpuSet.bit_length) return null;
        set.setRangeValue(.{ .start = first, .end = last + 1 }, true);
    }
    return set;
}

/// Distinct physical cores among the `allowed` CPUs, counting only cores with a CPU in
/// `performance` when that is given and the process may use any of them (a process pinned to
/// efficiency cores has only those). `topology.siblings(cpu)` is the set of CPUs sharing cpu's
/// core; its lowest member names the core. Sibling lists hold system-wide CPU numbers, so two
/// packages' cores never collide the way their per-package `core_id`s do. Null when a CPU's
/// siblings are unknown.
pub fn countCores(allowed: *const CpuSet, performance: ?*const CpuSet, topology: anytype) ?usize {
    var cores = CpuSet.empty;
    var performance_cores = CpuSet.empty;
    var it = allowed.iterator(.{});
    while (it.next()) |cpu| {
        const siblings = topology.siblings(cpu) orelse return null;
        const core = siblings.findFirstSet() orelse return null;
        cores.set(core);
        if (performance) |p| if (p.isSet(cpu)) performance_cores.set(core);
    }
    if (performance_cores.count() > 0) return performance_cores.count();
    return if (cores.count() > 0) cores.count() else null;
}

/// CPUs from a cgroup v2 `cpu.max` ("200000 100000": quota and period in µs, or "max …"),
/// rounded up; null without a quota.
pub fn quotaCpus(text: []const u8) ?usize {
    var fields = std.mem.tokenizeAny(u8, text, " \n");
    const quota = std.fmt.parseInt(u64, fields.next() orelse return null, 10) catch return null;
    const period = std.fmt.parseInt(u64, fields.next() orelse return null, 10) catch return null;
    if (period == 0) return null;
    return @intCast(@max(1, (quota + period - 1) / period));
}

const linuxTopology = struct {
    fn performanceCores() ?usize {
        var mask: linux.cpu_set_t = undefined;
        if (linux.errno(linux.sched_getaffinity(0, @sizeOf(linux.cpu_set_t), &mask)) != .SUCCESS) return null;
        // The kernel reports only CPUs that are online and allowed.
        const allowed: CpuSet = .{ .masks = mask };
        var buf: [4096]u8 = undefined;
        // Hybrid Intel (Alder Lake and later) registers the P cores as their own PMU.
        const performance: ?CpuSet = if (readFile("/sys/devices/cpu_core/cpus", &buf)) |t| parseCpuList(t) else null;
        var cores = countCores(&allowed, if (performance) |*p| p else null, Sysfs{}) orelse return null;
        // A container limited with --cpus keeps every CPU in its mask but gets a time quota.
        if (readFile("/sys/fs/cgroup/cpu.max", &buf)) |t| if (quotaCpus(t)) |q| {
            cores = @min(cores, q);
        };
        return cores;
    }

    const Sysfs = struct {
        fn siblings(_: Sysfs, cpu: usize) ?CpuSet {
            var buf: [4096]u8 = undefined;
            // core_cpus_list since Linux 5.7; thread_siblings_list is its older name.
            for ([_][]const u8{ "core_cpus_list", "thread_siblings_list" }) |name| {
                var path_buf: [96]u8 = undefined;
                const path = std.fmt.bufPrintSentinel(&path_buf, "/sys/devices/system/cpu/cpu{d}/topology/{s}", .{ cpu, name }, 0) catch return null;
                if (readFile(path, &buf)) |t| return parseCpuList(t);
            }
            return null;
        }
    };

    /// A small file's contents (sysfs, cgroupfs), or null if it cannot be read.
    fn readFile(path: [*:0]const u8, buf: []u8) ?[]const u8 {
        const fd_rc = linux.open(path, .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0);
        if (linux.errno(fd_rc) != .SUCCESS) return null;
        const fd: linux.fd_t = @intCast(fd_rc);
        defer _ = linux.close(fd);
        const n = linux.read(fd, buf.ptr, buf.len);
        if (linux.errno(n) != .SUCCESS) return null;
        return buf[0..n];
    }
};

/// Cores of the highest efficiency class in a buffer of Windows SYSTEM_LOGICAL_PROCESSOR_
/// INFORMATION_EX records (RelationProcessorCore = 0: relationship u32, size u32, flags u8,
/// efficiency class u8, …). Non-hybrid CPUs report class 0 for every core. Null if malformed.
pub fn countTopEfficiencyClass(records: []const u8) ?usize {
    var at: usize = 0;
    var top: u8 = 0;
    var count: usize = 0;
    while (at < records.len) {
        if (records.len - at < 10) return null;
        const relationship = std.mem.readInt(u32, records[at..][0..4], .little);
        const size = std.mem.readInt(u32, records[at + 4 ..][0..4], .little);
        if (size < 10 or size > records.len - at) return null;
        if (relationship == 0) {
            const class = records[at + 9];
            if (count == 0 or class > top) {
                top = class;
                count = 0;
            }
            if (class == top) count += 1;
        }
        at += size;
    }
    return if (count > 0) count else null;
}

// ---------------------------------------------------------------------------------------------
// Windows: kernel32 and ntdll.

const windows = struct {
    const W = std.os.windows;
    const HANDLE = W.HANDLE;
    const BOOL = c_int;
    const DWORD = u32;
    const winapi: std.builtin.CallingConvention = .winapi;

    const GENERIC_READ: DWORD = 0x80000000;
    const FILE_SHARE_READ: DWORD = 1;
    const FILE_SHARE_DELETE: DWORD = 4;
    const OPEN_EXISTING: DWORD = 3;
    const FILE_ATTRIBUTE_NORMAL: DWORD = 0x80;
    const PAGE_NOACCESS: DWORD = 0x01;
    const PAGE_READONLY: DWORD = 0x02;
    const PAGE_READWRITE: DWORD = 0x04;
    const FILE_MAP_READ: DWORD = 0x04;
    const MEM_COMMIT: DWORD = 0x1000;
    const MEM_RESERVE: DWORD = 0x2000;
    const MEM_RELEASE: DWORD = 0x8000;
    const MEM_DECOMMIT: DWORD = 0x4000;
    const invalid_handle: usize = std.math.maxInt(usize);

    const MemoryRange = extern struct { addr: *anyopaque, len: usize };

    extern "kernel32" fn CreateFileW(name: [*:0]const u16, access: DWORD, share: DWORD, security: ?*anyopaque, disposition: DWORD, flags: DWORD, template: ?HANDLE) callconv(winapi) usize;
    extern "kernel32" fn GetFileSizeEx(file: HANDLE, size: *i64) callconv(winapi) BOOL;
    extern "kernel32" fn GetFileAttributesW(name: [*:0]const u16) callconv(winapi) DWORD;
    extern "kernel32" fn CreateFileMappingW(file: HANDLE, security: ?*anyopaque, protect: DWORD, size_hi: DWORD, size_lo: DWORD, name: ?[*:0]const u16) callconv(winapi) ?HANDLE;
    extern "kernel32" fn MapViewOfFile(mapping: HANDLE, access: DWORD, off_hi: DWORD, off_lo: DWORD, len: usize) callconv(winapi) ?*anyopaque;
    extern "kernel32" fn UnmapViewOfFile(base: *const anyopaque) callconv(winapi) BOOL;
    extern "kernel32" fn CloseHandle(h: HANDLE) callconv(winapi) BOOL;
    extern "kernel32" fn GetLastError() callconv(winapi) DWORD;
    extern "kernel32" fn GetCurrentProcess() callconv(winapi) HANDLE;
    extern "kernel32" fn PrefetchVirtualMemory(process: HANDLE, n: usize, ranges: [*]const MemoryRange, flags: u32) callconv(winapi) BOOL;
    extern "kernel32" fn VirtualAlloc(addr: ?*anyopaque, len: usize, kind: DWORD, protect: DWORD) callconv(winapi) ?*anyopaque;
    extern "kernel32" fn VirtualFree(addr: *anyopaque, len: usize, kind: DWORD) callconv(winapi) BOOL;
    extern "kernel32" fn VirtualProtect(addr: *anyopaque, len: usize, protect: DWORD, old: *DWORD) callconv(winapi) BOOL;
    extern "kernel32" fn VirtualUnlock(addr: *anyopaque, len: usize) callconv(winapi) BOOL;
    extern "kernel32" fn GetLogicalProcessorInformationEx(relationship: u32, buffer: ?[*]u8, len: *DWORD) callconv(winapi) BOOL;

    fn performanceCores() ?usize {
        const relation_processor_core = 0;
        var len: DWORD = 0;
        // The first call fails with ERROR_INSUFFICIENT_BUFFER and says how much to allocate.
        _ = GetLogicalProcessorInformationEx(relation_processor_core, null, &len);
        if (len == 0) return null;
        const buf = std.heap.page_allocator.alloc(u8, len) catch return null;
        defer std.heap.page_allocator.free(buf);
        if (GetLogicalProcessorInformationEx(relation_processor_core, buf.ptr, &len) == 0) return null;
        return countTopEfficiencyClass(buf[0..@min(len, buf.len)]);
    }

    fn mapFile(path: [*:0]const u8) MapError!Mapping {
        // Paths arrive as UTF-8; the wide API takes UTF-16 (any length, forward slashes work).
        const wide = std.unicode.utf8ToUtf16LeAllocZ(std.heap.page_allocator, std.mem.span(path)) catch return error.NotFound;
        defer std.heap.page_allocator.free(wide);
        const file = CreateFileW(wide, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_DELETE, null, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, null);
        if (file == invalid_handle) {
            return switch (GetLastError()) {
                2, 3 => error.NotFound, // ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND
                // Opening a directory without FILE_FLAG_BACKUP_SEMANTICS is "access denied".
                5 => if (GetFileAttributesW(wide) & 0x10 != 0 and GetFileAttributesW(wide) != 0xffffffff) error.IsDirectory else error.AccessDenied,
                else => error.Unexpected,
            };
        }
        const h: HANDLE = @ptrFromInt(file);
        defer _ = CloseHandle(h);
        var size: i64 = 0;
        if (GetFileSizeEx(h, &size) == 0) return error.Unexpected;
        if (size == 0) return error.Empty;
        const len = std.math.cast(usize, size) orelse return error.TooLarge;
        const mapping = CreateFileMappingW(h, null, PAGE_READONLY, 0, 0, null) orelse return error.Unexpected;
        defer _ = CloseHandle(mapping); // the view keeps the mapping alive
        const view = MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0) orelse return error.Unexpected;
        const range = [1]MemoryRange{.{ .addr = view, .len = len }};
        _ = PrefetchVirtualMemory(GetCurrentProcess(), 1, &range, 0);
        return .{ .ptr = @ptrCast(@alignCast(view)), .len = len };
    }

    fn unmapFile(ptr: PagePtr) void {
        _ = UnmapViewOfFile(ptr);
    }

    fn release(ptr: PagePtr, len: usize) void {
        var old: DWORD = 0;
        _ = VirtualProtect(ptr, len, PAGE_NOACCESS, &old);
        // Unlocking pages that are not locked removes them from the working set.
        _ = VirtualUnlock(ptr, len);
    }

    fn allocPages(len: usize) ?PagePtr {
        const p = VirtualAlloc(null, len, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE) orelse return null;
        return @ptrCast(@alignCast(p));
    }

    fn freePages(ptr: PagePtr) void {
        _ = VirtualFree(ptr, 0, MEM_RELEASE);
    }

    fn reservePages(len: usize) ?PagePtr {
        const p = VirtualAlloc(null, len, MEM_RESERVE, PAGE_NOACCESS) orelse return null;
        return @ptrCast(@alignCast(p));
    }

    fn commitPages(ptr: PagePtr, len: usize) bool {
        return VirtualAlloc(ptr, len, MEM_COMMIT, PAGE_READWRITE) != null;
    }

    fn decommitPages(ptr: PagePtr, len: usize) void {
        _ = VirtualFree(ptr, len, MEM_DECOMMIT);
    }

    fn monotonicNanos() u64 {
        var counter: i64 = 0;
        var freq: i64 = 1;
        _ = W.ntdll.RtlQueryPerformanceCounter(&counter);
        _ = W.ntdll.RtlQueryPerformanceFrequency(&freq);
        const c: u128 = @intCast(counter);
        return @intCast(c * std.time.ns_per_s / @as(u128, @intCast(freq)));
    }
};

// ---------------------------------------------------------------------------------------------

test "file mapping: contents, empty and missing files, release" {
    const page = pageSize();
    try std.testing.expect(std.math.isPowerOfTwo(page) and page >= page_align);
    const missing = mapFile("/nonexistent/deltaq-os-test");
    try std.testing.expectError(error.NotFound, missing);
}

test "anonymous pages are zeroed and writable, resident or not" {
    for ([_]bool{ false, true }) |resident| for ([_]usize{ pageSize(), 3 << 20 }) |len| {
        const p = allocPages(len, resident) orelse return error.OutOfMemory;
        defer freePages(p, len);
        try std.testing.expect(@intFromPtr(p) % pageSize() == 0);
        try std.testing.expectEqual(@as(u8, 0), p[0]);
        try std.testing.expectEqual(@as(u8, 0), p[len - 1]);
        p[len - 1] = 7;
        populateWrite(p, len);
        try std.testing.expectEqual(@as(u8, 7), p[len - 1]);
    };
}

test "wait returns at once when the word already differs; wakeAll wakes a sleeper" {
    var word = std.atomic.Value(u32).init(1);
    wait(&word, 0);
    const Sleeper = struct {
        fn run(w: *std.atomic.Value(u32)) void {
            while (w.load(.acquire) == 1) wait(w, 1);
        }
    };
    const t = try Thread.spawn(.{}, Sleeper.run, .{&word});
    const start = monotonicNanos();
    while (monotonicNanos() - start < 2 * std.time.ns_per_ms) std.atomic.spinLoopHint();
    word.store(2, .release);
    wakeAll(&word);
    t.join();
    try std.testing.expect(monotonicNanos() >= start);
}


test "performanceCores is between one and the logical CPU count" {
    const n = performanceCores();
    try std.testing.expect(n >= 1 and n <= try Thread.getCpuCount());
}

test "parseCpuList: ranges, singles, malformed" {
    const set = parseCpuList("0-3,8,10-11\n").?;
    try std.testing.expectEqual(@as(usize, 7), set.count());
    try std.testing.expect(set.isSet(8) and set.isSet(11) and !set.isSet(9) and !set.isSet(4));
    try std.testing.expect(parseCpuList("3-1") == null);
    try std.testing.expect(parseCpuList("x") == null);
    try std.testing.expect(parseCpuList("0-5000") == null);
}

test "countCores: hyper-threads, hybrid performance cores, affinity, packages" {
    // Two packages of two cores, two threads each: CPU c and c+4 share a core (Linux numbering).
    const Fake = struct {
        fn siblings(_: @This(), cpu: usize) ?CpuSet {
            var s = CpuSet.empty;
            s.set(cpu % 4);
            s.set(cpu % 4 + 4);
            return s;
        }
    };
    const all = parseCpuList("0-7").?;
    try std.testing.expectEqual(@as(?usize, 4), countCores(&all, null, Fake{}));
    // A container limited to CPUs 0 and 4 has one core.
    const pinned = parseCpuList("0,4").?;
    try std.testing.expectEqual(@as(?usize, 1), countCores(&pinned, null, Fake{}));
    // Hybrid: only cores 0 and 1 (CPUs 0, 1, 4, 5) are performance cores.
    const p_cores = parseCpuList("0-1,4-5").?;
    try std.testing.expectEqual(@as(?usize, 2), countCores(&all, &p_cores, Fake{}));
    // Pinned to efficiency cores only: those are what there is.
    const e_only = parseCpuList("2-3").?;
    try std.testing.expectEqual(@as(?usize, 2), countCores(&e_only, &p_cores, Fake{}));
    const Unknown = struct {
        fn siblings(_: @This(), _: usize) ?CpuSet {
            return null;
        }
    };
    try std.testing.expectEqual(@as(?usize, null), countCores(&all, null, Unknown{}));
}

test "quotaCpus: cgroup cpu.max" {
    try std.testing.expectEqual(@as(?usize, 2), quotaCpus("200000 100000\n"));
    try std.testing.expectEqual(@as(?usize, 2), quotaCpus("150000 100000\n"));
    try std.testing.expectEqual(@as(?usize, null), quotaCpus("max 100000\n"));
}

test "countTopEfficiencyClass: Windows processor-core records" {
    var buf: [5 * 48]u8 = @splat(0);
    // Classes 1, 0, 1, 0 and one record of another relationship (cache, 2) with a class-like byte.
    for ([_]u8{ 1, 0, 1, 0, 9 }, 0..) |class, i| {
        const rec = buf[i * 48 ..][0..48];
        std.mem.writeInt(u32, rec[0..4], if (i == 4) 2 else 0, .little);
        std.mem.writeInt(u32, rec[4..8], 48, .little);
        rec[9] = class;
    }
    try std.testing.expectEqual(@as(?usize, 2), countTopEfficiencyClass(&buf));
    try std.testing.expectEqual(@as(?usize, 2), countTopEfficiencyClass(buf[0 .. 4 * 48]));
    try std.testing.expectEqual(@as(?usize, null), countTopEfficiencyClass(buf[0..47]));
    try std.testing.expectEqual(@as(?usize, null), countTopEfficiencyClass(buf[4 * 48 ..]));
}
