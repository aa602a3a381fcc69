/** External tools the platform tests use, found on PATH (or Debian's versioned names). */

/** Whether `program` is an executable file in a directory of PATH. */
export function onPath(program: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
    try {
      return Deno.statSync(`${dir}/${program}`).isFile;
    } catch {
      return false;
    }
  });
}

/** llvm-objdump (any version; Debian installs llvm-objdump-NN), or undefined. */
export function findObjdump(): string | undefined {
  if (onPath("llvm-objdump")) return "llvm-objdump";
  for (let v = 30; v >= 12; v--) if (onPath(`llvm-objdump-${v}`)) return `llvm-objdump-${v}`;
  return undefined;
}
