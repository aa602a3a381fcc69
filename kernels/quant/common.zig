//! Integer dot-product building blocks shared by the quantized kernels.
//!
//! Zig has no int8 dot-product builtin, so on x86 with AVX2 the two multiply-add instructions the
//! kernels are built on come from LLVM intrinsics:
//!
//!   mulAddBytes(a: u8×32, b: i8×32) → i16×16   lane k = a[2k]·b[2k] + a[2k+1]·b[2k+1], saturated
//!   mulAddWords(a: i16×16, b: i16×16) → i32×8  lane k = a[2k]·b[2k] + a[2k+1]·b[2k+1]
//!
//! (`vpmaddubsw` and `vpmaddwd`). Every other target gets the plain widening `@Vector` reference
//! below, which the tests also use to check the intrinsics. The kernels keep their operands small
//! enough that `mulAddBytes` never saturates (weights ≤ 63 against activations in [-127, 127]).
//!
//!   dotBytes(acc: i32×8, a: u8×32, b: i8×32) → i32×8   lane k = acc[k] + Σ_{i<4} a[4k+i]·b[4k+i]
//!
//!   dotWords(acc: i32×8, a: i16×16, b: i16×16) → i32×8  lane k = acc[k] + a[2k]·b[2k] + a[2k+1]·b[2k+1]
//!
//!   dotBytesWide: `dotBytes` for any unsigned a (up to 255; b ≠ -128), exact without VNNI too
//!   lookup16(table: [16]i8, idx: u8×32) → i8×32      lane k = table[idx[k]] (idx < 16): `vpshufb`
//!
//! are one `vpdpbusd` / `vpdpwssd` where the CPU has AVX-512 VNNI (or AVX-VNNI), and the
//! multiply-adds above plus an add elsewhere: the GEMM tiles are bound by these multiplies and
//! the one-token dot products by instructions issued, so VNNI's fused forms pay in both.
//!
//! On arm64 the byte dot products are NEON's own: `sdot` (dot-product extension, `has_dotprod`)
//! and `usdot` (int8 matrix multiply extension, `has_i8mm`), four lanes per 16 bytes with the same
//! lane mapping as `vpdpbusd`; `lookup16` is `tbl`. `dotBytes` requires a ≤ 127 (checked in safe
//! builds), since `sdot` reads a as signed: unsigned values up to 255 go through `dotBytesWide`,
//! signed × signed through `dotSignedBytes` / `signedWeights` + `dotSigned`. Every format built
//! on these gets the NEON paths. At the i8mm level the GEMM tiles (prompts: several tokens per
//! weight row) of every quantized format — the K-quants' and IQ formats' `kquants.tile`, the
//! 32-value block formats' `block32.tile` — multiply with `usmmla` instead, the extension's int8
//! matrix multiply (the unsigned × signed form of `smmla`): two weight rows by two tokens, 8 bytes
//! each, per instruction, twice the multiply-adds of a `usdot`, on panels and activations laid
//! out for it (`mmla.zig`). The one-token kernels keep `sdot`/`usdot`: a matrix multiply only
//! pays when two tokens share the weight bytes it loads. The arithmetic is integer and exact
//! everywhere, so the results are the same bits as on x86.
const std = @import("std");
const builtin = @import("builtin");
const simd = @import("../simd.zig");

/// a·b + c, fused where the CPU has FMA (`simd.mulAdd`: use it instead of `@mulAdd`).
pub const mulAdd = simd.mulAdd;

pub const U8x32 = @Vector(32, u8);
pub const I8x32 = @Vector(32, i8);
pub const I16x16 = @Vector(16, i16);
pub const I32x8 = @Vector(8, i32);
pub const F32x8 = @Vector(8, f32);
pub const U16x8 = @Vector(8, u16);
pub const U8x64 = @Vector(64, u8);
pub const I8x64 = @Vector(64, i8);
pub const I32x16 = @Vector(16, i32);
pub const F32x16 = @Vector(16, f32);
pub const F16x8 = @Vector(8, f16);

pub const has_avx2 = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx2);
/// AVX-512VL doubles the vector registers (32 instead of 16), which lets GEMM tiles grow.
pub const has_avx512vl = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512vl);

/// AVX-512 VNNI with 256-bit forms (AVX-512VL), or AVX-VNNI: `vpdpbusd` on 32-byte vectors.
pub const has_vnni = builtin.cpu.arch == .x86_64 and
    ((has_avx512vl and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512vnni)) or
        std.Target.x86.featureSetHas(builtin.cpu.features, .avxvnni));

/// AVX-512 VNNI on 64-byte vectors. Where the CPU has two 512-bit multiply units (Xeon
/// since Skylake-SP) a 64-byte `vpdpbusd` issues as often as a 32-byte one, so it doubles the
/// GEMM tile's products per cycle; on Zen 4 it is as fast per byte as two 32-byte ones.
/// AVX-512BW: byte and word operations on 64-byte vectors.
pub const has_avx512bw = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512bw);

pub const has_vnni512 = builtin.cpu.arch == .x86_64 and
    std.Target.x86.featureSetHas(builtin.cpu.features, .avx512vnni) and
    std.Target.x86.featureSetHas(builtin.cpu.features, .avx512bw);

/// arm64 dot-product extension: `sdot` (every Apple Silicon chip, Cortex-A55/A76 and later).
pub const has_dotprod = builtin.cpu.arch == .aarch64 and std.Target.aarch64.featureSetHas(builtin.cpu.features, .dotprod);
/// arm64 int8 matrix multiply extension: `usdot` (unsigned × signed), and `smmla` / `usmmla`
/// (2×8 by 8×2 int8 matrix multiply-accumulate; the GEMM tiles use `usmmla`, see `mmla.zig`).
pub const has_i8mm = builtin.cpu.arch == .aarch64 and std.Target.aarch64.featureSetHas(builtin.cpu.features, .i8mm);
/// Whether signed bytes multiply directly (no sign trick): arm64 with `sdot`.
const direct_signed = has_dotprod;

/// The calling convention LLVM intrinsics are declared with. The C convention would do on Linux and
/// macOS, but on Windows x64 it passes 32- and 64-byte vectors by reference, and LLVM then rejects
/// the intrinsic ("incorrect argument type"); System V passes them in vector registers as LLVM wants.
pub const intrinsic: std.builtin.CallingConvention = if (builtin.cpu.arch == .x86_64) .{ .x86_64_sysv = .{} } else .c;

extern fn @"llvm.x86.avx512.vpdpbusd.512"(acc: I32x16, a: I32x16, b: I32x16) callconv(intrinsic) I32x16;
extern fn @"llvm.x86.avx512.vpdpbusd.256"(acc: I32x8, a: I32x8, b: I32x8) callconv(intrinsic) I32x8;
extern fn @"llvm.x86.avx512.vpdpwssd.256"(acc: I32x8, a: I32x8, b: I32x8) callconv(intrinsic) I32x8;
extern fn @"llvm.x86.avx512.vpdpwssd.512"(acc: I32x16, a: I32x16, b: I32x16) callconv(intrinsic) I32x16;
extern fn @"llvm.x86.avx2.pmadd.ub.sw"(a: U8x32, b: I8x32) callconv(intrinsic) I16x16;
extern fn @"llvm.x86.avx2.pmadd.wd"(a: I16x16, b: I16x16) callconv(intrinsic) I32x8;
extern fn @"llvm.x86.avx2.psign.b"(a: I8x32, b: I8x32) callconv(intrinsic) I8x32;
extern fn @"llvm.x86.avx2.pshuf.b"(a: I8x32, b: I8x32) callconv(intrinsic) I8x32;
extern fn @"llvm.x86.avx512.pshuf.b.512"(a: I8x64, b: I8x64) callconv(intrinsic) I8x64;
extern fn @"llvm.roundeven.v8f32"(a: F32x8) callconv(intrinsic) F32x8;
// arm64: 16-byte vectors only (AAPCS passes larger ones by reference, which LLVM rejects).
const I8x16 = @Vector(16, i8);
const I32x4 = @Vector(4, i32);
extern fn @"llvm.aarch64.neon.sdot.v4i32.v16i8"(acc: I32x4, a: I8x16, b: I8x16) callconv(intrinsic) I32x4;
extern fn @"llvm.aarch64.neon.usdot.v4i32.v16i8"(acc: I32x4, a: I8x16, b: I8x16) callconv(intrinsic) I32x4;
extern fn @"llvm.aarch64.neon.tbl1.v16i8"(table: I8x16, idx: I8x16) callconv(intrinsic) I8x16;

/// `sdot` (signed × signed) or `usdot` (unsigned a × signed b) on 32-byte vectors, as two halves.
inline fn neonDot(comptime unsigned_a: bool, acc: I32x8, a: I8x32, b: I8x32) I32x8 {
    const acc_h: [2]I32x4 = @bitCast(acc);
    const a_h: [2]I8x16 = @bitCast(a);
    const b_h: [2]I8x16 = @bitCast(b);
    var out: [2]I32x4 = undefined;
    inline for (0..2) |h| out[h] = if (unsigned_a)
        @"llvm.aarch64.neon.usdot.v4i32.v16i8"(acc_h[h], a_h[h], b_h[h])
    else
        @"llvm.aarch64.neon.sdot.v4i32.v16i8"(acc_h[h], a_h[h], b_h[h]);
    return @bitCast(out);
}

pub inline fn mulAddBytes(a: U8x32, b: I8x32) I16x16 {
    if (comptime has_avx2) return @"llvm.x86.avx2.pmadd.ub.sw"(a, b);
    // 16-bit products are exact (255·128 < 2^15); only the pair sums saturate.
    const prod = @as(@Vector(32, i16), a) * @as(@Vector(32, i16), b);
    return @shuffle(i16, prod, undefined, even16) +| @shuffle(i16, prod, undefined, odd16);
}

pub fn mulAddBytesRef(a: U8x32, b: I8x32) I16x16 {
    const wide = @as(@Vector(32, i32), a) * @as(@Vector(32, i32), b);
    const even = @shuffle(i32, wide, undefined, evenLanes(16));
    const odd = @shuffle(i32, wide, undefined, oddLanes(16));
    const lo: @Vector(16, i32) = @splat(std.math.minInt(i16));
    const hi: @Vector(16, i32) = @splat(std.math.maxInt(i16));
    return @intCast(@min(hi, @max(lo, even + odd)));
}

pub inline fn mulAddWords(a: I16x16, b: I16x16) I32x8 {
    if (comptime has_avx2) return @"llvm.x86.avx2.pmadd.wd"(a, b);
    return mulAddWordsRef(a, b);
}

pub fn mulAddWordsRef(a: I16x16, b: I16x16) I32x8 {
    const wide = @as(@Vector(16, i32), a) * @as(@Vector(16, i32), b);
    // Wrapping add: the one overflowing case (-32768·-32768 twice) wraps in the instruction too.
    return @shuffle(i32, wide, undefined, evenLanes(8)) +% @shuffle(i32, wide, undefined, oddLanes(8));
}

/// `dotBytes` needs a ≤ 127: arm64's `sdot` reads a as signed (x86 would take 128 too).
pub inline fn dotBytes(acc: I32x8, a: U8x32, b: I8x32) I32x8 {
    if (std.debug.runtime_safety) std.debug.assert(@reduce(.Max, a) <= 127);
    if (comptime has_i8mm) return neonDot(true, acc, @bitCast(a), b);
    if (comptime has_dotprod) return neonDot(false, acc, @bitCast(a), b);
    return dotBytesX86(acc, a, b);
}

/// `dotBytes` on x86 and generic targets, exact for a ≤ 128 (what the sign trick produces).
inline fn dotBytesX86(acc: I32x8, a: U8x32, b: I8x32) I32x8 {
    if (comptime has_vnni) return @"llvm.x86.avx512.vpdpbusd.256"(acc, @bitCast(a), @bitCast(b));
    const ones: I16x16 = @splat(1);
    if (comptime has_avx2) return acc +% mulAddWords(mulAddBytes(a, b), ones);
    return dotBytesRef(acc, a, b);
}

/// `dotBytes` on 64-byte vectors (`has_vnni512` only).
pub inline fn dotBytes64(acc: I32x16, a: U8x64, b: I8x64) I32x16 {
    if (comptime !has_vnni512) @compileError("dotBytes64 needs AVX-512 VNNI");
    return @"llvm.x86.avx512.vpdpbusd.512"(acc, @bitCast(a), @bitCast(b));
}

/// `dotBytes` for unsigned bytes above 63 (where `vpmaddubsw` could saturate): VNNI has no
/// intermediate 16-bit sums; AVX2 splits a into its low 7 bits and its top bit, whose two
/// multiply-adds each stay within 16 bits (127·127·2 and 1·127·2 before the shift by 7).
pub inline fn dotBytesWide(acc: I32x8, a: U8x32, b: I8x32) I32x8 {
    if (comptime has_i8mm) return neonDot(true, acc, @bitCast(a), b);
    if (comptime has_dotprod) {
        // a = (a & 127) + 128·(a >> 7): two `sdot`s on operands that read the same signed.
        const top = neonDot(false, @splat(0), @bitCast(a >> @splat(7)), b);
        return neonDot(false, acc, @bitCast(a & @as(U8x32, @splat(0x7f))), b) +% (top << @splat(7));
    }
    if (comptime has_vnni or !has_avx2) return dotBytesX86(acc, a, b);
    const low = mulAddBytes(a & @as(U8x32, @splat(0x7f)), b);
    const top = mulAddBytes(a >> @splat(7), b);
    const ones: I16x16 = @splat(1);
    return acc +% mulAddWords(low, ones) +% mulAddWords(top, @splat(128));
}

/// `dotBytes` on L lanes (8 or 16): one 64-byte `vpdpbusd` for 16 lanes with AVX-512 VNNI, two
/// 32-byte dots otherwise. Kernels whose lanes are matrix rows use it to process 16 rows at once
/// where the CPU has 64-byte vectors.
pub inline fn dotBytesLanes(comptime L: usize, acc: @Vector(L, i32), a: @Vector(4 * L, u8), b: @Vector(4 * L, i8)) @Vector(L, i32) {
    return lanesOf(L, dotBytes, acc, a, b);
}

/// `dotBytesWide` on L lanes (8 or 16), as `dotBytesLanes`.
pub inline fn dotBytesWideLanes(comptime L: usize, acc: @Vector(L, i32), a: @Vector(4 * L, u8), b: @Vector(4 * L, i8)) @Vector(L, i32) {
    return lanesOf(L, dotBytesWide, acc, a, b);
}

inline fn lanesOf(comptime L: usize, comptime dot32: fn (I32x8, U8x32, I8x32) callconv(.@"inline") I32x8, acc: @Vector(L, i32), a: @Vector(4 * L, u8), b: @Vector(4 * L, i8)) @Vector(L, i32) {
    if (L == 8) return dot32(acc, a, b);
    if (L != 16) @compileError("byte dots take 8 or 16 lanes");
    if (comptime has_vnni512) return dotBytes64(acc, a, b);
    const accs: [2]I32x8 = @bitCast(acc);
    const as: [2]U8x32 = @bitCast(a);
    const bs: [2]I8x32 = @bitCast(b);
    return @bitCast([2]I32x8{ dot32(accs[0], as[0], bs[0]), dot32(accs[1], as[1], bs[1]) });
}

/// `dotWords` on L lanes (8 or 16), as `dotBytesLanes`.
pub inline fn dotWordsLanes(comptime L: usize, acc: @Vector(L, i32), a: @Vector(2 * L, i16), b: @Vector(2 * L, i16)) @Vector(L, i32) {
    if (L == 8) return dotWords(acc, a, b);
    if (L != 16) @compileError("dotWordsLanes takes 8 or 16 lanes");
    if (comptime has_vnni512) return @"llvm.x86.avx512.vpdpwssd.512"(acc, @bitCast(a), @bitCast(b));
    const accs: [2]I32x8 = @bitCast(acc);
    const as: [2]I16x16 = @bitCast(a);
    const bs: [2]I16x16 = @bitCast(b);
    return @bitCast([2]I32x8{ dotWords(accs[0], as[0], bs[0]), dotWords(accs[1], as[1], bs[1]) });
}

pub fn dotBytesRef(acc: I32x8, a: U8x32, b: I8x32) I32x8 {
    const wide = @as(@Vector(32, i32), a) * @as(@Vector(32, i32), b);
    var out = acc;
    inline for (0..4) |i| out +%= @shuffle(i32, wide, undefined, strided(8, 4, i));
    return out;
}

pub inline fn dotWords(acc: I32x8, a: I16x16, b: I16x16) I32x8 {
    if (comptime has_vnni) return @"llvm.x86.avx512.vpdpwssd.256"(acc, @bitCast(a), @bitCast(b));
    return acc +% mulAddWords(a, b);
}

/// The 8×8 transpose of 32-bit words: word i of result v is word v of input i. For eight
/// 32-byte chunks of consecutive values this puts 4 values of every chunk side by side, so one
/// `dotBytes` lane sums one chunk (see `kquants.Unpacked`).
pub inline fn transposeWords(in: [8]U8x32) [8]U8x32 {
    const W = @Vector(8, u32);
    var r: [8]W = undefined;
    inline for (0..8) |i| r[i] = @bitCast(in[i]);
    var u: [8]W = undefined;
    inline for (0..4) |p| {
        u[2 * p] = @shuffle(u32, r[2 * p], r[2 * p + 1], [8]i32{ 0, ~@as(i32, 0), 1, ~@as(i32, 1), 4, ~@as(i32, 4), 5, ~@as(i32, 5) });
        u[2 * p + 1] = @shuffle(u32, r[2 * p], r[2 * p + 1], [8]i32{ 2, ~@as(i32, 2), 3, ~@as(i32, 3), 6, ~@as(i32, 6), 7, ~@as(i32, 7) });
    }
    var w: [8]W = undefined;
    inline for (0..2) |q| inline for (0..2) |h| {
        const a = u[4 * q + h];
        const b = u[4 * q + 2 + h];
        w[4 * q + 2 * h] = @shuffle(u32, a, b, [8]i32{ 0, 1, ~@as(i32, 0), ~@as(i32, 1), 4, 5, ~@as(i32, 4), ~@as(i32, 5) });
        w[4 * q + 2 * h + 1] = @shuffle(u32, a, b, [8]i32{ 2, 3, ~@as(i32, 2), ~@as(i32, 3), 6, 7, ~@as(i32, 6), ~@as(i32, 7) });
    };
    var out: [8]U8x32 = undefined;
    inline for (0..4) |c| {
        out[c] = @bitCast(@shuffle(u32, w[c], w[4 + c], [8]i32{ 0, 1, 2, 3, ~@as(i32, 0), ~@as(i32, 1), ~@as(i32, 2), ~@as(i32, 3) }));
        out[c + 4] = @bitCast(@shuffle(u32, w[c], w[4 + c], [8]i32{ 4, 5, 6, 7, ~@as(i32, 4), ~@as(i32, 5), ~@as(i32, 6), ~@as(i32, 7) }));
    }
    return out;
}

/// table[idx[k]] in lane k, for idx < 16: one in-lane byte shuffle (`vpshufb`) on the table
/// repeated in both 128-bit halves.
pub inline fn lookup16(table: @Vector(16, i8), idx: U8x32) I8x32 {
    if (comptime has_avx2) return @"llvm.x86.avx2.pshuf.b"(std.simd.join(table, table), @bitCast(idx));
    if (comptime builtin.cpu.arch == .aarch64) {
        const halves: [2]I8x16 = @bitCast(idx);
        return std.simd.join(@"llvm.aarch64.neon.tbl1.v16i8"(table, halves[0]), @"llvm.aarch64.neon.tbl1.v16i8"(table, halves[1]));
    }
    return lookup16Ref(table, idx);
}

/// `lookup16` on 64 bytes: one `vpshufb` with AVX-512BW, two 32-byte ones otherwise.
pub inline fn lookup16Wide(table: @Vector(16, i8), idx: U8x64) I8x64 {
    if (comptime has_avx512bw) {
        const t4 = std.simd.join(std.simd.join(table, table), std.simd.join(table, table));
        return @"llvm.x86.avx512.pshuf.b.512"(t4, @bitCast(idx));
    }
    const halves: [2]U8x32 = @bitCast(idx);
    return @bitCast([2]I8x32{ lookup16(table, halves[0]), lookup16(table, halves[1]) });
}

pub fn lookup16Ref(table: @Vector(16, i8), idx: U8x32) I8x32 {
    const t: [16]i8 = table;
    const ix: [32]u8 = idx;
    var out: [32]i8 = undefined;
    for (&out, ix) |*o, i| o.* = t[i & 15];
    return out;
}

/// a with the sign of b applied lane-wise (0 where b is 0): `vpsignb`.
pub inline fn applySign(a: I8x32, b: I8x32) I8x32 {
    if (comptime has_avx2) return @"llvm.x86.avx2.psign.b"(a, b);
    return applySignRef(a, b);
}

pub fn applySignRef(a: I8x32, b: I8x32) I8x32 {
    const zero: I8x32 = @splat(0);
    return @select(i8, b < zero, zero -% a, @select(i8, b == zero, zero, a));
}

/// Σ a[i]·b[i] for signed bytes, as 8 partial sums (each of 4 products). The sign trick moves a's
/// sign onto b and reads |a| as unsigned, so a may hold -128 (|a| = 128) but b must not.
pub inline fn dotSignedBytes(a: I8x32, b: I8x32) I32x8 {
    return dotSigned(@splat(0), signedWeights(a), b);
}

/// Signed bytes w prepared once for several `dotSigned` products (a GEMM tile's row against
/// several tokens): |w| and w for the sign trick, or w alone where signed bytes multiply directly.
pub const SignedWeights = struct { abs: U8x32, w: I8x32 };

pub inline fn signedWeights(w: I8x32) SignedWeights {
    if (comptime direct_signed) return .{ .abs = undefined, .w = w };
    return .{ .abs = @bitCast(applySign(w, w)), .w = w };
}

/// acc + Σ w[i]·x[i] per 4 bytes, for signed w (-128 allowed) and x (> -128).
pub inline fn dotSigned(acc: I32x8, sw: SignedWeights, x: I8x32) I32x8 {
    if (comptime direct_signed) return neonDot(false, acc, sw.w, x);
    return dotBytesX86(acc, sw.abs, applySign(x, sw.w));
}

/// Eight 8-bit values (u8 or i8) widened to i16 words, the 8 words repeated in both 128-bit
/// halves: the source `broadcastWord` picks from with one in-lane byte shuffle (`vpshufb`),
/// which is cheaper than broadcasting each scale from a general register.
pub inline fn duplicateWords(v: anytype) @Vector(32, u8) {
    const words: @Vector(8, i16) = v;
    const bytes: @Vector(16, u8) = @bitCast(words);
    return @shuffle(u8, bytes, undefined, [32]i32{ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 });
}

/// Word j of `duplicateWords`' result in all 16 lanes.
pub inline fn broadcastWord(dup: @Vector(32, u8), comptime j: usize) I16x16 {
    return broadcastWords(dup, j, j);
}

/// Word `lo` of `duplicateWords`' result in lanes 0-7 and word `hi` in lanes 8-15.
pub inline fn broadcastWords(dup: @Vector(32, u8), comptime lo: usize, comptime hi: usize) I16x16 {
    const mask = comptime blk: {
        @setEvalBranchQuota(10_000);
        var m: [32]i32 = undefined;
        for (&m, 0..) |*e, i| e.* = @intCast(if (i < 16) 2 * lo + i % 2 else 16 + 2 * hi + i % 2);
        break :blk m;
    };
    return @bitCast(@shuffle(u8, dup, undefined, mask));
}

/// Round half to even, like `vroundps` with the default rounding mode and llama.cpp's
/// `nearest_int` / `_mm256_round_ps(x, _MM_ROUND_NEAREST)`.
pub inline fn roundEven(v: F32x8) F32x8 {
    // Without AVX an 8 x f32 vector does not fit a register and LLVM rejects the intrinsic call.
    if (comptime has_avx2) return @"llvm.roundeven.v8f32"(v);
    const magic: F32x8 = @splat(12582912.0); // see roundEvenScalar; quantizers stay below 2^22
    return (v + magic) - magic;
}

/// Scalar round half to even, as llama.cpp's `nearest_int`: adding 1.5·2^23 pushes the fraction
/// out of the mantissa under the default rounding mode (exact for |x| < 2^22).
pub fn roundEvenScalar(x: f32) f32 {
    const magic: f32 = 12582912.0;
    return (x + magic) - magic;
}

pub inline fn sum(v: F32x8) f32 {
    return @reduce(.Add, v);
}

/// Asks for the `bytes` starting at p to be brought into cache. The one-token kernels stream
/// weights from DRAM with long dependency chains per block, so the out-of-order window alone
/// keeps too few cache misses in flight; they prefetch the rows they will read next.
pub inline fn prefetchSpan(p: [*]const u8, comptime bytes: usize) void {
    inline for (0..(bytes + 63) / 64) |i| @prefetch(p + 64 * i, .{ .rw = .read, .locality = 2, .cache = .data });
}

/// `v` as a W: itself for u32, in every lane for a vector (comptime, so it also serves as a
/// shift amount). Lets one packing rule serve one block (`u32` words) and repacked rows side by
/// side (`@Vector(n, u32)`).
pub inline fn rep(comptime W: type, comptime v: u32) W {
    return if (@typeInfo(W) == .vector) @splat(v) else v;
}

/// Lanes first, first + stride, … (n of them).
fn strided(comptime n: usize, comptime stride: usize, comptime first: usize) [n]i32 {
    var m: [n]i32 = undefined;
    for (&m, 0..) |*x, i| x.* = @intCast(stride * i + first);
    return m;
}

const even16 = evenLanes(16);
const odd16 = oddLanes(16);

fn evenLanes(comptime n: usize) [n]i32 {
    var m: [n]i32 = undefined;
    for (&m, 0..) |*x, i| x.* = @intCast(2 * i);
    return m;
}

fn oddLanes(comptime n: usize) [n]i32 {
    var m: [n]i32 = undefined;
    for (&m, 0..) |*x, i| x.* = @intCast(2 * i + 1);
    return m;
}

/// Deterministic test data.
pub fn testRng(seed: u64) std.Random.DefaultPrng {
    return std.Random.DefaultPrng.init(seed);
}

test "multiply-add intrinsics match the widening reference, saturation included" {
    var prng = testRng(1);
    const rand = prng.random();
    for (0..2000) |_| {
        var a: [32]u8 = undefined;
        var b: [32]i8 = undefined;
        var c: [16]i16 = undefined;
        var d: [16]i16 = undefined;
        rand.bytes(&a);
        rand.bytes(std.mem.asBytes(&b));
        rand.bytes(std.mem.asBytes(&c));
        rand.bytes(std.mem.asBytes(&d));
        try std.testing.expectEqual(mulAddBytesRef(a, b), mulAddBytes(a, b));
        try std.testing.expectEqual(mulAddWordsRef(c, d), mulAddWords(c, d));
        var e: [32]i8 = undefined;
        rand.bytes(std.mem.asBytes(&e));
        e[3] = -128;
        try std.testing.expectEqual(applySignRef(b, e), applySign(b, e));
        var f = b;
        for (&f) |*x| if (x.* == -128) {
            x.* = -127;
        };
        const got: [8]i32 = dotSignedBytes(e, f);
        for (0..8) |k| {
            var want: i32 = 0;
            for (0..4) |i| want += @as(i32, e[4 * k + i]) * f[4 * k + i];
            try std.testing.expectEqual(want, got[k]);
        }
    }
    for (0..200) |_| {
        var acc: [8]i32 = undefined;
        var a: [32]u8 = undefined;
        var b: [32]i8 = undefined;
        rand.bytes(std.mem.asBytes(&acc));
        rand.bytes(&a);
        rand.bytes(std.mem.asBytes(&b));
        for (&a) |*x| x.* &= 127; // dotBytes' range (arm64 `sdot` reads a as signed)
        try std.testing.expectEqual(dotBytesRef(acc, a, b), dotBytes(acc, a, b));
        var w: [32]i8 = undefined;
        rand.bytes(std.mem.asBytes(&w));
        w[5] = -128;
        const b_no_min: [32]i8 = @select(i8, @as(I8x32, b) == @as(I8x32, @splat(-128)), @as(I8x32, @splat(-127)), @as(I8x32, b));
        var want_signed: [8]i32 = acc;
        for (0..8) |k| for (0..4) |i| {
            want_signed[k] +%= @as(i32, w[4 * k + i]) * b_no_min[4 * k + i];
        };
        try std.testing.expectEqual(@as(I32x8, want_signed), dotSigned(acc, signedWeights(w), b_no_min));
        var wide_a: [32]u8 = undefined;
        rand.bytes(&wide_a);
        var b127 = b;
        for (&b127) |*x| if (x.* == -128) {
            x.* = 127;
        };
        try std.testing.expectEqual(dotBytesRef(acc, wide_a, b127), dotBytesWide(acc, wide_a, b127));
        var table: [16]i8 = undefined;
        rand.bytes(std.mem.asBytes(&table));
        var idx: [32]u8 = undefined;
        for (&idx, a) |*i, x| i.* = x & 15;
        try std.testing.expectEqual(lookup16Ref(table, idx), lookup16(table, idx));
        const looked_up: [64]i8 = lookup16Wide(table, std.simd.join(@as(U8x32, idx), @as(U8x32, idx) ^ @as(U8x32, @splat(5))));
        try std.testing.expectEqual(lookup16Ref(table, idx), @as(I8x32, looked_up[0..32].*));
        try std.testing.expectEqual(lookup16Ref(table, @as(U8x32, idx) ^ @as(U8x32, @splat(5))), @as(I8x32, looked_up[32..64].*));
        if (has_vnni512) {
            // Halves of the 64-byte form are two 32-byte dot products.
            const wide: [16]i32 = dotBytes64(
                std.simd.join(@as(I32x8, acc), @as(I32x8, acc)),
                std.simd.join(@as(U8x32, a), @as(U8x32, a) >> @splat(1)),
                std.simd.join(@as(I8x32, b), -%@as(I8x32, b)),
            );
            try std.testing.expectEqual(dotBytesRef(acc, a, b), @as(I32x8, wide[0..8].*));
            try std.testing.expectEqual(dotBytesRef(acc, @as(U8x32, a) >> @splat(1), -%@as(I8x32, b)), @as(I32x8, wide[8..16].*));
        }
        var c: [16]i16 = undefined;
        var d: [16]i16 = undefined;
        rand.bytes(std.mem.asBytes(&c));
        rand.bytes(std.mem.asBytes(&d));
        try std.testing.expectEqual(acc +% mulAddWordsRef(c, d), dotWords(acc, c, d));
        const got: [8]i32 = dotBytesRef(acc, a, b);
        for (0..8) |k| {
            var want: i32 = acc[k];
            for (0..4) |i| want +%= @as(i32, a[4 * k + i]) * b[4 * k + i];
            try std.testing.expectEqual(want, got[k]);
        }
    }
    // The saturating corner: 255·127 twice overflows i16.
    const big = mulAddBytes(@splat(255), @splat(127));
    try std.testing.expectEqual(@as(i16, 32767), big[0]);
}

test "transposeWords swaps word rows and columns" {
    var in: [8]U8x32 = undefined;
    for (0..8) |i| {
        var words: [8]u32 = undefined;
        for (0..8) |j| words[j] = @intCast(100 * i + j);
        in[i] = @bitCast(words);
    }
    const out = transposeWords(in);
    for (0..8) |v| {
        const words: [8]u32 = @bitCast(out[v]);
        for (0..8) |i| try std.testing.expectEqual(@as(u32, @intCast(100 * i + v)), words[i]);
    }
}

test "round half to even" {
    const xs = [8]f32{ 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999998, -3.7 };
    const want = [8]f32{ 0, 2, 2, -0.0, -2, -2, 2, -4 };
    const got: [8]f32 = roundEven(xs);
    for (0..8) |i| {
        try std.testing.expectEqual(want[i], got[i]);
        try std.testing.expectEqual(want[i], roundEvenScalar(xs[i]));
    }
}
