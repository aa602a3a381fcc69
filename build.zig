//! Builds the deltaq kernel library and runs the kernel tests. The library is
//! `lib/libdeltaq.so` (Linux), `lib/libdeltaq.dylib` (macOS) or `bin/deltaq.dll` (Windows) under
//! the prefix; `src/native/build.ts` builds it into `zig-out/<os>-<arch>/` for the running Deno.
//! On Linux name glibc in the target (`x86_64-linux-gnu`): plain `x86_64-linux` means musl,
//! which Deno cannot load.
//!
//! One library carries the whole kernel module compiled once per CPU level of its architecture
//! (`kernels/levels.zig`: baseline, x86_64_v3, avx512_vnni on x86-64; baseline, dotprod, i8mm on
//! arm64); the loader picks the best level the CPU runs (or `DELTAQ_CPU`). `-Dcpu` does not
//! apply to the library.
//!
//!   zig build [-Dtarget=…]                       the library (ReleaseFast)
//!   zig build -Dlevel=baseline                   a library of that one level
//!   zig build test                               kernel tests (bounds and overflow checked: Debug
//!                                                where they run on this CPU's architecture,
//!                                                ReleaseSafe under qemu) at every level this CPU runs
//!   zig build test -Dtest-optimize=safe          … all in one safety-checked mode (debug, safe)
//!   zig build test -Dlevel=x86_64_v3             … at one level
//!   zig build test -Dcpu=native                  … at one CPU instead of the levels
//!   zig build test -Dtarget=aarch64-linux-gnu -fqemu     every arm64 level under qemu (-cpu max)
//!   zig build test -Dtarget=x86_64-windows-gnu -fwine    under Wine
//!   zig build test test-arm64 test-windows -fqemu -fwine  host, arm64 and Windows at once (CI)
//!   zig build bench-kernels [-- types…]          matmul micro-benchmark (ReleaseFast)
//!   zig build bench-attention [-- options…]      attention micro-benchmark (ReleaseFast)
const std = @import("std");
const levels = @import("kernels/levels.zig");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.option(std.builtin.Optimize, "optimize", "library optimisation (default fast)") orelse .fast;
    const only_level = b.option([]const u8, "level", "only this CPU level (tests and library)");
    const test_filter = b.option([]const u8, "test-filter", "only run kernel tests whose name contains this");
    const test_optimize = b.option(std.builtin.Optimize, "test-optimize", "kernel tests' mode, debug or safe (default: debug on this CPU's architecture, safe emulated)");
    if (test_optimize) |m| if (m != .debug and m != .safe) std.debug.panic("-Dtest-optimize={s}: the kernel tests run with safety checks (debug or safe)", .{@tagName(m)});

    const all = levels.forTarget(target.result.cpu.arch, target.result.os.tag);
    if (only_level) |name| for (all) |l| {
        if (std.mem.eql(u8, l.name, name)) break;
    } else std.debug.panic("-Dlevel={s}: not a level of {s} (levels: {s})", .{ name, @tagName(target.result.cpu.arch), levelNames(b, all) });

    // The library: the base level is the root module (plain symbol names); every other level is
    // an object whose exported names carry its suffix. With -Dlevel, that level alone is the root.
    const linked: []const levels.Level = if (only_level) |name| for (all) |l| {
        if (std.mem.eql(u8, l.name, name)) break b.allocator.dupe(levels.Level, &.{l}) catch @panic("OOM");
    } else unreachable else all;
    const names = b.allocator.alloc([]const u8, linked.len) catch @panic("OOM");
    for (linked, names) |l, *n| n.* = l.name;
    const lib = b.addLibrary(.{
        .name = "deltaq",
        .linkage = .dynamic,
        .use_llvm = true,
        .root_module = kernelModule(b, levelTarget(b, target, if (linked.len > 0) linked[0] else null), optimize, "", names),
    });
    if (linked.len > 1) for (linked[1..]) |level| {
        const obj = b.addObject(.{
            .name = b.fmt("deltaq-{s}", .{level.name}),
            .use_llvm = true,
            .root_module = kernelModule(b, levelTarget(b, target, level), optimize, b.fmt("__{s}", .{level.name}), names),
        });
        lib.root_module.addObject(obj);
    };
    b.installArtifact(lib);

    // Kernel tests always run with safety checks on, whatever -Doptimize says for the library:
    // an out-of-bounds index in a kernel must fail a test, not corrupt memory silently. Debug and
    // ReleaseSafe check the same things; on this CPU's architecture (natively, or x86-64 Windows
    // under Wine) Debug compiles in ~35 s instead of ~2.5 min and its tests then run ~25 s instead
    // of ~5, while under qemu optimized code saves as much running as it costs compiling (Ice Lake
    // host, 2 cores, arm64 at three levels: 6.2 min either way). The optimized code is what the
    // Deno suite runs: its parity tests load the ReleaseFast library at every level.
    const test_step = b.step("test", "run the kernel test blocks (safety-checked) at every CPU level this machine runs");
    const explicit_cpu = target.query.cpu_model != .determined_by_arch_os or !target.query.cpu_features_add.isEmpty();
    const native = target.result.cpu.arch == b.graph.host.result.cpu.arch and target.result.os.tag == b.graph.host.result.os.tag;
    if (explicit_cpu or all.len == 0) {
        addTests(b, test_step, target, test_optimize, test_filter, "");
    } else for (all) |level| {
        if (only_level) |name| if (!std.mem.eql(u8, name, level.name)) continue;
        // Natively, only the levels this CPU can execute; cross (qemu, Wine), all of them.
        if (native and !b.graph.host.result.cpu.features.isSuperSetOf(levels.requiredFeatures(target.result.cpu.arch, level))) continue;
        addTests(b, test_step, levelTarget(b, target, level), test_optimize, test_filter, level.name);
    }

    // The other platforms CI can run here: arm64 Linux under qemu-user (every level; `-cpu max`
    // has dotprod and i8mm) and Windows under Wine at the best level this CPU runs (what differs
    // there is the OS layer and how the intrinsics are declared, which the top level uses most).
    // Run with -fqemu / -fwine; in one invocation with `test` the compiles share the cores.
    const arm64 = b.resolveTargetQuery(std.Target.Query.parse(.{ .arch_os_abi = "aarch64-linux-gnu" }) catch unreachable);
    const arm64_step = b.step("test-arm64", "the kernel tests for arm64 Linux at every level (needs -fqemu)");
    for (levels.forTarget(.aarch64, .linux)) |level| addTests(b, arm64_step, levelTarget(b, arm64, level), test_optimize, test_filter, level.name);
    const windows = b.resolveTargetQuery(std.Target.Query.parse(.{ .arch_os_abi = "x86_64-windows-gnu" }) catch unreachable);
    const windows_step = b.step("test-windows", "the kernel tests for x86-64 Windows at the best level this CPU runs (needs -fwine)");
    const windows_level = bestLevel(b, .x86_64, &levels.x86_64, null);
    addTests(b, windows_step, levelTarget(b, windows, windows_level), test_optimize, test_filter, windows_level.name);

    // Matmul micro-benchmark: the kernels compiled into an executable (see bench/kernels.zig), at
    // the best level this CPU runs (or -Dlevel, or -Dcpu).
    const bench_target = if (explicit_cpu or all.len == 0) target else levelTarget(b, target, bestLevel(b, target.result.cpu.arch, all, only_level));
    const bench_module = b.createModule(.{
        .root_source_file = b.path("bench/kernels.zig"),
        .target = bench_target,
        .optimize = .fast,
        .omit_frame_pointer = true,
    });
    bench_module.addImport("matmul", kernelModuleAt(b, "kernels/matmul.zig", bench_target, .fast, "", &.{}));
    const bench = b.addExecutable(.{ .name = "bench-kernels", .root_module = bench_module, .use_llvm = true });
    const run_bench = b.addRunArtifact(bench);
    run_bench.addPassthruArgs();
    b.step("bench-kernels", "time matmul for every weight type at Qwen3.5-4B shapes").dependOn(&run_bench.step);

    // Attention micro-benchmark (see bench/attention.zig), at the same level.
    const attention_bench_module = b.createModule(.{
        .root_source_file = b.path("bench/attention.zig"),
        .target = bench_target,
        .optimize = .fast,
        .omit_frame_pointer = true,
    });
    attention_bench_module.addImport("attention", kernelModuleAt(b, "kernels/attention.zig", bench_target, .fast, "", &.{}));
    const attention_bench = b.addExecutable(.{ .name = "bench-attention", .root_module = attention_bench_module, .use_llvm = true });
    const run_attention_bench = b.addRunArtifact(attention_bench);
    run_attention_bench.addPassthruArgs();
    b.step("bench-attention", "time attention at Qwen3.5-4B shapes and several cache depths").dependOn(&run_attention_bench.step);
}

fn kernelModule(b: *std.Build, target: std.Build.ResolvedTarget, optimize: std.builtin.OptimizeMode, suffix: []const u8, names: []const []const u8) *std.Build.Module {
    return kernelModuleAt(b, "kernels/root.zig", target, optimize, suffix, names);
}

/// A kernel module compiled for one target and level: `build_level.suffix` ends its exported
/// names, `build_level.levels` names the levels linked into the library (base first).
fn kernelModuleAt(b: *std.Build, root: []const u8, target: std.Build.ResolvedTarget, optimize: std.builtin.OptimizeMode, suffix: []const u8, names: []const []const u8) *std.Build.Module {
    const options = b.addOptions();
    options.addOption([]const u8, "suffix", suffix);
    options.addOption([]const []const u8, "levels", names);
    const module = b.createModule(.{
        .root_source_file = b.path(root),
        .target = target,
        .optimize = optimize,
        .omit_frame_pointer = true,
        // Worker threads come from pthread_create: Zig's libc-free Thread.spawn sets up thread
        // TLS from state only Zig's own start code initialises, which a library dlopen'ed into
        // Deno never runs (ReleaseSafe builds abort in Thread.spawn; ReleaseFast runs on
        // undefined values).
        .link_libc = true,
    });
    module.addOptions("build_level", options);
    return module;
}

fn addTests(b: *std.Build, step: *std.Build.Step, target: std.Build.ResolvedTarget, optimize: ?std.builtin.Optimize, filter: ?[]const u8, level: []const u8) void {
    const emulated = target.result.cpu.arch != b.graph.host.result.cpu.arch;
    const options = b.addOptions();
    options.addOption([]const u8, "suffix", "");
    options.addOption([]const []const u8, "levels", if (level.len > 0) b.dupeStrings(&.{level}) else &.{});
    const module = b.createModule(.{
        .root_source_file = b.path("kernels/root.zig"),
        .target = target,
        .optimize = optimize orelse if (emulated) .safe else .debug,
        // The OS layer calls libSystem on macOS; on Linux the tests stay static (no libc), so
        // they also run under qemu without a sysroot.
        .link_libc = if (target.result.os.tag == .linux) null else true,
    });
    module.addOptions("build_level", options);
    const tests = b.addTest(.{
        .name = b.fmt("test-{s}-{s}{s}{s}", .{ @tagName(target.result.cpu.arch), @tagName(target.result.os.tag), if (level.len > 0) "-" else "", level }),
        .use_llvm = true,
        .filters = if (filter) |f| b.dupeStrings(&.{f}) else &.{},
        .root_module = module,
    });
    const run = b.addRunArtifact(tests);
    run.has_side_effects = true; // always run (and report counts), never "cached"
    // qemu-user emulates the CPU the environment names: `max` has every arm64 extension.
    if (emulated) run.setEnvironmentVariable("QEMU_CPU", "max");
    if (target.result.os.tag == .windows and b.graph.host.result.os.tag != .windows) run.setEnvironmentVariable("WINEDEBUG", "-all");
    step.dependOn(&run.step);
}

/// The target with a level's CPU (model and features) instead of the one asked for.
fn levelTarget(b: *std.Build, target: std.Build.ResolvedTarget, level: ?levels.Level) std.Build.ResolvedTarget {
    const l = level orelse return target;
    var q = target.query;
    const parsed = std.Target.Query.parse(.{ .arch_os_abi = b.fmt("{s}-linux", .{@tagName(target.result.cpu.arch)}), .cpu_features = l.cpu }) catch |e|
        std.debug.panic("level {s}: cannot parse CPU {s}: {s}", .{ l.name, l.cpu, @errorName(e) });
    q.cpu_model = parsed.cpu_model;
    q.cpu_features_add = parsed.cpu_features_add;
    q.cpu_features_sub = parsed.cpu_features_sub;
    return b.resolveTargetQuery(q);
}

/// The best level the host runs (the last, as levels are ordered), or -Dlevel.
/// The best of an architecture's levels this machine runs (the base level on another
/// architecture), or -Dlevel.
fn bestLevel(b: *std.Build, arch: std.Target.Cpu.Arch, all: []const levels.Level, only: ?[]const u8) levels.Level {
    if (only) |name| for (all) |l| if (std.mem.eql(u8, l.name, name)) return l;
    const host = b.graph.host.result.cpu;
    var best = all[0];
    if (host.arch == arch) for (all) |l| if (host.features.isSuperSetOf(levels.requiredFeatures(arch, l))) {
        best = l;
    };
    return best;
}

fn levelNames(b: *std.Build, all: []const levels.Level) []const u8 {
    var names: []const u8 = "";
    for (all) |l| names = b.fmt("{s}{s}{s}", .{ names, if (names.len > 0) ", " else "", l.name });
    return names;
}
