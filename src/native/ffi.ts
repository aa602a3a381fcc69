/**
 * The native symbol table: every function libdeltaq exports (kernels/root.zig), declared once, and
 * where the library is found. Everything else reaches native code through `src/native/kernels.ts`.
 *
 * Conventions forced by Deno's FFI costs (../shared/notes/toolchain.md): no u64/usize parameters
 * (a JS number there takes a ~300 ns slow path), 64-bit quantities are passed as lo/hi u32 pairs
 * and returned as f64; pointers are only handed out for regions the library owns.
 */
import { DeltaqError } from "../errors.ts";
import { ensureLibrary } from "./build.ts";

export const ABI_VERSION = 9;

export const symbols = {
  dq_abi_version: { parameters: [], result: "u32" },
  dq_last_error: { parameters: ["buffer", "u32"], result: "u32" },
  dq_cpu_levels: { parameters: ["buffer", "u32"], result: "u32" },
  dq_cpu_runnable: { parameters: [], result: "u32" },
  dq_performance_cores: { parameters: [], result: "u32" },
  dq_map_file: { parameters: ["buffer"], result: "i32" },
  dq_alloc: { parameters: ["u32", "u32", "u32"], result: "i32" },
  dq_reserve: { parameters: ["u32", "u32"], result: "i32" },
  dq_region_resize: { parameters: ["u32", "u32", "u32"], result: "i32" },
  dq_region_committed: { parameters: ["u32"], result: "f64" },
  dq_region_ptr: { parameters: ["u32"], result: "pointer" },
  dq_region_len: { parameters: ["u32"], result: "f64" },
  dq_region_free: { parameters: ["u32"], result: "void" },
  dq_weight: { parameters: ["u32", "u32", "u32", "u32", "u32", "u32"], result: "i32" },
  dq_repack_bytes: { parameters: ["u32"], result: "f64" },
  dq_repack_group_rows: { parameters: ["u32"], result: "u32" },
  dq_repack: { parameters: ["u32", "u32", "u32", "u32", "u32"], result: "i32" },
  dq_context: { parameters: ["u32"], result: "i32" },
  dq_context_free: { parameters: ["u32"], result: "void" },
  dq_exec: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** `dq_exec` on a thread of Deno's blocking pool: the JS thread stays free (≈ 70 µs round trip). */
  dq_exec_nonblocking: { name: "dq_exec", parameters: ["u32", "buffer", "u32"], result: "i32", nonblocking: true },
  dq_profile: { parameters: ["u32", "u32"], result: "i32" },
  dq_profile_read: { parameters: ["u32", "buffer", "u32"], result: "u32" },
} as const satisfies Deno.ForeignLibraryInterface;

export type Native = Deno.DynamicLibrary<typeof symbols>["symbols"];

/** The CPU levels compiled into the library and which of them this process uses. */
export interface CpuLevels {
  /** Every level in the library, base level first (e.g. baseline, x86_64_v3, avx512_vnni). */
  all: string[];
  /** The levels this CPU can execute, in the same order. */
  runnable: string[];
  /** The level whose kernels are bound: `DELTAQ_CPU`, else the best runnable one. */
  selected: string;
}

let native: Native | undefined;
let levels: CpuLevels | undefined;

/**
 * Opens libdeltaq (building it first when missing or stale), checks its ABI version and binds the
 * kernels of one CPU level. The library carries the kernels compiled once per level
 * (kernels/levels.zig): the base level's symbols have the plain names, level `x`'s end in `__x`.
 * A first look at the library asks which levels this CPU runs (CPUID / hwcaps, on the native side);
 * `DELTAQ_CPU=<level>` forces one, which must be runnable.
 */
export function openNative(): Native {
  if (native) return native;
  const path = ensureLibrary();
  const probe = open(path, {
    dq_abi_version: symbols.dq_abi_version,
    dq_cpu_levels: symbols.dq_cpu_levels,
    dq_cpu_runnable: symbols.dq_cpu_runnable,
  });
  try {
    const version = probe.symbols.dq_abi_version();
    if (version !== ABI_VERSION) {
      throw new DeltaqError(
        `kernel library ${path} has ABI version ${version}, this code expects ${ABI_VERSION}; rebuild with \`deno task build\``,
      );
    }
    const buf = new Uint8Array(256);
    const len = probe.symbols.dq_cpu_levels(buf, buf.length);
    const all = new TextDecoder().decode(buf.subarray(0, Math.min(len, buf.length))).split(" ");
    const mask = probe.symbols.dq_cpu_runnable();
    const runnable = all.filter((_, i) => (mask >>> i) & 1);
    const selected = chooseLevel(all, runnable, Deno.env.get("DELTAQ_CPU"));
    const suffix = selected === all[0] ? "" : `__${selected}`;
    const named = Object.fromEntries(
      // A symbol bound under another name (dq_exec_nonblocking is dq_exec) keeps that name.
      Object.entries(symbols).map(([key, def]) => {
        const name = "name" in def ? def.name : key;
        return [key, { ...def, name: `${name}${suffix}` }];
      }),
    ) as unknown as typeof symbols;
    native = open(path, named).symbols;
    levels = { all, runnable, selected };
    return native;
  } finally {
    probe.close();
  }
}

function open<S extends Deno.ForeignLibraryInterface>(path: string, syms: S): Deno.DynamicLibrary<S> {
  try {
    return Deno.dlopen(path, syms);
  } catch (e) {
    throw new DeltaqError(`cannot load the kernel library ${path}: ${(e as Error).message}`);
  }
}

/** `wanted` (DELTAQ_CPU) when given and runnable, else the best runnable level. */
export function chooseLevel(all: string[], runnable: string[], wanted: string | undefined): string {
  if (wanted === undefined || wanted === "") return runnable[runnable.length - 1] ?? all[0];
  if (!all.includes(wanted)) {
    throw new DeltaqError(
      `DELTAQ_CPU=${wanted} is not a CPU level of this kernel library (levels: ${all.join(", ")})`,
    );
  }
  if (!runnable.includes(wanted)) {
    throw new DeltaqError(
      `DELTAQ_CPU=${wanted}: this CPU cannot run that level (it runs: ${runnable.join(", ")})`,
    );
  }
  return wanted;
}

/** The library's CPU levels and the one in use (opens the library if needed). */
export function cpuLevels(): CpuLevels {
  openNative();
  return levels!;
}

/** The message of the library's last failure. */
export function lastError(n: Native): string {
  const buf = new Uint8Array(512);
  const len = n.dq_last_error(buf, buf.length);
  return new TextDecoder().decode(buf.subarray(0, len));
}
