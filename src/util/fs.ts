/** File-system predicates that answer false instead of throwing when a path cannot be stat'ed. */

/** Whether `path` is a regular file (symlinks followed). */
export function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Whether `path` is a directory (symlinks followed). */
export function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** Whether anything at all is at `path`, a dangling symlink included (for "nothing left behind"). */
export function pathExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
