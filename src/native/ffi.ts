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

export const ABI_VERSION = 6;

export const symbols = {
  dq_abi_version: { parameters: [], result: "u32" },
  dq_last_error: { parameters: ["buffer", "u32"], result: "u32" },
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

let native: Native | undefined;

/** Opens libdeltaq (building it first when missing or stale) and checks its ABI version. */
export function openNative(): Native {
  if (native) return native;
  const path = ensureLibrary();
  let lib: Deno.DynamicLibrary<typeof symbols>;
  try {
    lib = Deno.dlopen(path, symbols);
  } catch (e) {
    throw new DeltaqError(`cannot load the kernel library ${path}: ${(e as Error).message}`);
  }
  const version = lib.symbols.dq_abi_version();
  if (version !== ABI_VERSION) {
    lib.close();
    throw new DeltaqError(
      `kernel library ${path} has ABI version ${version}, this code expects ${ABI_VERSION}; rebuild with \`deno task build\``,
    );
  }
  native = lib.symbols;
  return native;
}

/** The message of the library's last failure. */
export function lastError(n: Native): string {
  const buf = new Uint8Array(512);
  const len = n.dq_last_error(buf, buf.length);
  return new TextDecoder().decode(buf.subarray(0, len));
}
