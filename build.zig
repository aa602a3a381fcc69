//! Builds the deltaq kernel library and runs the kernel tests. The library is
//! `lib/libdeltaq.so` (Linux), `lib/libdeltaq.dylib` (macOS) or `bin/deltaq.dll` (Windows) under
//! the prefix; `src/native/build.ts` builds it into `zig-out/<os>-<arch>/` for the running Deno.
//! On Linux name glibc in the target (`x86_64-linux-gnu`): plain `x86_64-linux` means musl,
//! which Deno cannot load.
//!
//!   zig build                        native CPU, ReleaseFast (the default)
//!   zig build -Dcpu=x86_64_v3        portable AVX2/FMA/F16C build
//!   zig build test                              kernel tests (ReleaseSafe: bounds and overflow checked)
//!   zig build bench-kernels [-- types…]         matmul micro-benchmark (ReleaseFast)
//!   zig build bench-attention [-- options…]     attention micro-benchmark (ReleaseFast)
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.option(std.builtin.Optimize, "optimize", "library optimisation (default fast)") orelse .fast;

    const lib = b.addLibrary(.{
        .name = "deltaq",
        .linkage = .dynamic,
        .use_llvm = true,
        .root_module = b.createModule(.{
            .root_source_file = b.path("kernels/root.zig"),
            .target = target,
            .optimize = optimize,
            .omit_frame_pointer = true,
            // Worker threads come from pthread_create: Zig's libc-free Thread.spawn sets up thread
            // TLS from state only Zig's own start code initialises, which a library dlopen'ed into
            // Deno never runs (ReleaseSafe builds abort in Thread.spawn; ReleaseFast runs on
            // undefined values).
            .link_libc = true,
        }),
    });
    b.installArtifact(lib);

    // Kernel tests always run with safety checks on, whatever -Doptimize says for the library:
    // an out-of-bounds index in a kernel must fail a test, not corrupt memory silently.
    const test_filter = b.option([]const u8, "test-filter", "only run kernel tests whose name contains this");
    const tests = b.addTest(.{
        .use_llvm = true,
        .filters = if (test_filter) |f| &.{f} else &.{},
        .root_module = b.createModule(.{
            .root_source_file = b.path("kernels/root.zig"),
            .target = target,
            .optimize = .safe,
            // The OS layer calls libSystem on macOS; on Linux the tests stay static (no libc), so
            // they also run under qemu without a sysroot.
            .link_libc = if (target.result.os.tag == .linux) null else true,
        }),
    });
    const run_tests = b.addRunArtifact(tests);
    run_tests.has_side_effects = true; // always run (and report counts), never "cached"
    b.step("test", "run the kernel test blocks (ReleaseSafe)").dependOn(&run_tests.step);

    // Matmul micro-benchmark: the kernels compiled into an executable (see bench/kernels.zig).
    const bench_module = b.createModule(.{
        .root_source_file = b.path("bench/kernels.zig"),
        .target = target,
        .optimize = .fast,
        .omit_frame_pointer = true,
    });
    bench_module.addImport("matmul", b.createModule(.{
        .root_source_file = b.path("kernels/matmul.zig"),
        .target = target,
        .optimize = .fast,
        .omit_frame_pointer = true,
    }));
    const bench = b.addExecutable(.{ .name = "bench-kernels", .root_module = bench_module, .use_llvm = true });
    const run_bench = b.addRunArtifact(bench);
    run_bench.addPassthruArgs();
    b.step("bench-kernels", "time matmul for every weight type at Qwen3.5-4B shapes").dependOn(&run_bench.step);

    // Attention micro-benchmark (see bench/attention.zig).
    const attention_bench_module = b.createModule(.{
        .root_source_file = b.path("bench/attention.zig"),
        .target = target,
        .optimize = .fast,
        .omit_frame_pointer = true,
    });
    attention_bench_module.addImport("attention", b.createModule(.{
        .root_source_file = b.path("kernels/attention.zig"),
        .target = target,
        .optimize = .fast,
        .omit_frame_pointer = true,
    }));
    const attention_bench = b.addExecutable(.{ .name = "bench-attention", .root_module = attention_bench_module, .use_llvm = true });
    const run_attention_bench = b.addRunArtifact(attention_bench);
    run_attention_bench.addPassthruArgs();
    b.step("bench-attention", "time attention at Qwen3.5-4B shapes and several cache depths").dependOn(&run_attention_bench.step);
}
