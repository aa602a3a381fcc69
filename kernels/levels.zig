//! The CPU levels one kernel library carries. build.zig compiles the whole kernel module once per
//! level of the target's architecture and links the copies into one library: the first (base)
//! level exports the plain `dq_*` symbols, every other level the same symbols with `__<name>`
//! appended. At load, `src/native/ffi.ts` asks the library which levels this CPU can run
//! (`dq_cpu_runnable`, from `cpu.zig`) and binds the best one's symbols, or the one `DELTAQ_CPU`
//! names. So one binary is fast on each CPU and never runs an instruction its CPU lacks.
//!
//! `cpu` is a Zig CPU spelling (model, then `+feature`s), as `-Dcpu` takes it. `requires` are the
//! instruction-set features a CPU must report to run the level; the test below checks that they
//! cover everything the model enables apart from tuning flags.
//!
//! This file is data only (build.zig imports it).
const std = @import("std");

pub const Level = struct {
    /// What `DELTAQ_CPU` takes and what symbol suffixes are made of.
    name: []const u8,
    cpu: []const u8,
    requires: []const []const u8,
};

const x86_v3_isa = [_][]const u8{ "sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "crc32", "cx16", "sahf", "avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave" };

pub const x86_64 = [_]Level{
    // SSE2: every x86-64 CPU.
    .{ .name = "baseline", .cpu = "x86_64", .requires = &.{} },
    // AVX2, FMA, F16C, BMI2 (Haswell, Zen 1 and later).
    .{ .name = "x86_64_v3", .cpu = "x86_64_v3", .requires = &x86_v3_isa },
    // AVX-512 with VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later): 64-byte int8 dot products.
    .{
        .name = "avx512_vnni",
        .cpu = "x86_64_v4+avx512vnni",
        .requires = &(x86_v3_isa ++ [_][]const u8{ "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512vnni" }),
    },
};

pub const aarch64 = [_]Level{
    // NEON (every arm64 CPU).
    .{ .name = "baseline", .cpu = "generic", .requires = &.{} },
    // The dot-product extension (`sdot`): every Apple Silicon chip, Cortex-A55/A76 and later.
    .{ .name = "dotprod", .cpu = "generic+dotprod", .requires = &.{"dotprod"} },
    // Int8 matrix multiply (`smmla`): Apple M2 and later, Neoverse V1/N2, Cortex-A510/A710.
    .{ .name = "i8mm", .cpu = "generic+dotprod+i8mm", .requires = &.{ "dotprod", "i8mm" } },
};

/// Apple Silicon starts at the M1, which has the dot-product extension: no NEON-only level.
pub const aarch64_macos = [_]Level{
    .{ .name = "dotprod", .cpu = "apple_m1", .requires = &.{"dotprod"} },
    .{ .name = "i8mm", .cpu = "apple_m1+i8mm", .requires = &.{ "dotprod", "i8mm" } },
};

/// The levels for a target, base level first.
pub fn forTarget(arch: std.Target.Cpu.Arch, os: std.Target.Os.Tag) []const Level {
    return switch (arch) {
        .x86_64 => &x86_64,
        .aarch64 => if (os.isDarwin()) &aarch64_macos else &aarch64,
        else => &.{},
    };
}

/// The features a level's CPU spelling turns on (model, additions, and what they depend on).
pub fn compiledFeatures(comptime arch: std.Target.Cpu.Arch, level: Level) !std.Target.Cpu.Feature.Set {
    const q = try std.Target.Query.parse(.{ .arch_os_abi = @tagName(arch) ++ "-linux", .cpu_features = level.cpu });
    var set = q.cpu_model.explicit.features;
    set.addFeatureSet(q.cpu_features_add);
    set.removeFeatureSet(q.cpu_features_sub);
    set.populateDependencies(arch.allFeaturesList());
    return set;
}

/// `level.requires` as a feature set of `arch` (names are checked by the tests below).
pub fn requiredFeatures(arch: std.Target.Cpu.Arch, level: Level) std.Target.Cpu.Feature.Set {
    @setEvalBranchQuota(100_000);
    var set: std.Target.Cpu.Feature.Set = .empty;
    const all = arch.allFeaturesList();
    for (level.requires) |name| for (all, 0..) |f, i| {
        if (std.mem.eql(u8, f.name, name)) set.addFeature(@intCast(i));
    };
    return set;
}

/// Features an x86 CPU model turns on that only tune code generation, or that every x86-64 CPU
/// has: a CPU need not report them to run the model's code.
fn isTuningOrUniversal(name: []const u8) bool {
    const prefixes = [_][]const u8{ "fast_", "slow_", "false_deps_", "prefer_", "tuning_", "allow_light_256_bit", "idivq_to_divl", "macrofusion", "nopl", "vzeroupper", "branch_hint" };
    for (prefixes) |p| if (std.mem.startsWith(u8, name, p)) return true;
    const universal = [_][]const u8{ "64bit", "cmov", "cx8", "fxsr", "mmx", "sse", "sse2", "x87" };
    for (universal) |u| if (std.mem.eql(u8, name, u)) return true;
    return false;
}

test "arm64 levels name real features" {
    for ([_][]const Level{ &aarch64, &aarch64_macos }) |list| for (list) |level| {
        try std.testing.expectEqual(level.requires.len, requiredFeatures(.aarch64, level).count());
        _ = try compiledFeatures(.aarch64, level);
    };
}

test "each x86-64 level requires every instruction set its CPU spelling enables" {
    inline for (x86_64) |level| {
        const compiled = try compiledFeatures(.x86_64, level);
        const required = requiredFeatures(.x86_64, level);
        try std.testing.expectEqual(level.requires.len, required.count());
        for (std.Target.x86.all_features, 0..) |f, i| {
            const index: std.Target.Cpu.Feature.Set.Index = @intCast(i);
            if (!compiled.isEnabled(index) or isTuningOrUniversal(f.name)) continue;
            if (!required.isEnabled(index)) {
                std.debug.print("level {s} ({s}) enables {s}, which it does not require\n", .{ level.name, level.cpu, f.name });
                return error.UncoveredFeature;
            }
        }
        // and nothing is required that the code does not use
        try std.testing.expect(compiled.isSuperSetOf(required));
    }
}
