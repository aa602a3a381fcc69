//! Which of the library's CPU levels (`levels.zig`) the running CPU can execute. x86-64 asks
//! CPUID, and XGETBV so that AVX / AVX-512 state the OS does not save counts as absent; arm64
//! asks the OS (`os.armFeatures`: hwcaps on Linux, sysctl on macOS).
const std = @import("std");
const builtin = @import("builtin");
const levels = @import("levels.zig");
const os = @import("os.zig");

const arch = builtin.cpu.arch;

/// The levels of this build's architecture and OS, base level first.
pub const all = levels.forTarget(arch, builtin.os.tag);

/// Bit i is set when this CPU can run the level named `names[i]` (unknown names: never).
pub fn runnableMask(comptime names: []const []const u8) u32 {
    var mask: u32 = 0;
    inline for (names, 0..) |name, i| {
        inline for (all) |level| {
            if (comptime std.mem.eql(u8, level.name, name)) {
                if (canRun(level)) mask |= @as(u32, 1) << @intCast(i);
            }
        }
    }
    return mask;
}

fn canRun(comptime level: levels.Level) bool {
    switch (arch) {
        .x86_64 => {
            return x86Features().isSuperSetOf(comptime levels.requiredFeatures(.x86_64, level));
        },
        .aarch64 => {
            const have = os.armFeatures();
            inline for (level.requires) |name| {
                if (std.mem.eql(u8, name, "dotprod") and !have.dotprod) return false;
                if (std.mem.eql(u8, name, "i8mm") and !have.i8mm) return false;
            }
            return true;
        },
        else => return level.requires.len == 0,
    }
}

/// The x86 features the levels can require, as CPUID reports them.
fn x86Features() std.Target.Cpu.Feature.Set {
    const F = std.Target.x86.Feature;
    var set: std.Target.Cpu.Feature.Set = .empty;
    const add = struct {
        fn add(s: *std.Target.Cpu.Feature.Set, f: F, on: bool) void {
            if (on) s.addFeature(@backingInt(f));
        }
    }.add;
    const max_leaf = cpuid(0, 0).eax;
    const l1 = cpuid(1, 0);
    const l7 = if (max_leaf >= 7) cpuid(7, 0) else Regs{};
    const ext = cpuid(0x80000001, 0);
    const bit = struct {
        fn bit(r: u32, i: u5) bool {
            return (r >> i) & 1 != 0;
        }
    }.bit;
    // The OS saves the SSE and AVX (YMM) state, and for AVX-512 the opmask and ZMM state too.
    const xcr0: u32 = if (bit(l1.ecx, 27)) xgetbv() else 0;
    const avx_os = xcr0 & 0x6 == 0x6;
    const avx512_os = avx_os and xcr0 & 0xe0 == 0xe0;
    add(&set, .sse3, bit(l1.ecx, 0));
    add(&set, .ssse3, bit(l1.ecx, 9));
    add(&set, .fma, bit(l1.ecx, 12) and avx_os);
    add(&set, .cx16, bit(l1.ecx, 13));
    add(&set, .sse4_1, bit(l1.ecx, 19));
    add(&set, .sse4_2, bit(l1.ecx, 20));
    add(&set, .crc32, bit(l1.ecx, 20));
    add(&set, .movbe, bit(l1.ecx, 22));
    add(&set, .popcnt, bit(l1.ecx, 23));
    add(&set, .xsave, bit(l1.ecx, 26) and avx_os);
    add(&set, .avx, bit(l1.ecx, 28) and avx_os);
    add(&set, .f16c, bit(l1.ecx, 29) and avx_os);
    add(&set, .sahf, bit(ext.ecx, 0));
    add(&set, .lzcnt, bit(ext.ecx, 5));
    add(&set, .bmi, bit(l7.ebx, 3));
    add(&set, .avx2, bit(l7.ebx, 5) and avx_os);
    add(&set, .bmi2, bit(l7.ebx, 8));
    add(&set, .avx512f, bit(l7.ebx, 16) and avx512_os);
    add(&set, .avx512dq, bit(l7.ebx, 17) and avx512_os);
    add(&set, .avx512cd, bit(l7.ebx, 28) and avx512_os);
    add(&set, .avx512bw, bit(l7.ebx, 30) and avx512_os);
    add(&set, .avx512vl, bit(l7.ebx, 31) and avx512_os);
    add(&set, .avx512vnni, bit(l7.ecx, 11) and avx512_os);
    return set;
}

const Regs = struct { eax: u32 = 0, ebx: u32 = 0, ecx: u32 = 0, edx: u32 = 0 };

fn cpuid(leaf: u32, sub: u32) Regs {
    var eax: u32 = undefined;
    var ebx: u32 = undefined;
    var ecx: u32 = undefined;
    var edx: u32 = undefined;
    asm volatile ("cpuid"
        : [_] "={eax}" (eax),
          [_] "={ebx}" (ebx),
          [_] "={ecx}" (ecx),
          [_] "={edx}" (edx),
        : [_] "{eax}" (leaf),
          [_] "{ecx}" (sub),
    );
    return .{ .eax = eax, .ebx = ebx, .ecx = ecx, .edx = edx };
}

/// XCR0: which register state the OS saves on a context switch.
fn xgetbv() u32 {
    return asm volatile (
        \\ xor %%ecx, %%ecx
        \\ xgetbv
        : [_] "={eax}" (-> u32),
        :
        : .{ .edx = true, .ecx = true });
}

test "the base level always runs, and so does the level these tests were compiled for" {
    comptime var names: []const []const u8 = &.{};
    inline for (all) |level| names = names ++ .{level.name};
    const mask = runnableMask(names);
    try std.testing.expect(mask & 1 != 0);
    // The test binary itself runs, so the CPU has every feature it was compiled with: the best
    // level whose requirements the compile-time CPU meets must be runnable.
    inline for (all, 0..) |level, i| {
        if (comptime builtin.cpu.features.isSuperSetOf(levels.requiredFeatures(arch, level)))
            try std.testing.expect(mask & (@as(u32, 1) << i) != 0);
    }
}
