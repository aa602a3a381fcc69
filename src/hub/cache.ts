/**
 * One model repository inside the Hugging Face cache, in the layout huggingface_hub (Python),
 * `@huggingface/hub` and llama.cpp's `-hf` share, so a file downloaded by any of them is reused by
 * the others:
 *
 *   <cache>/models--<org>--<name>/
 *     blobs/<sha256 or git oid>              file contents, named by their hash
 *     blobs/<id>.incomplete                  a download in progress (resumed from its length)
 *     snapshots/<commit>/<path in repo>      relative symlink to ../../blobs/<id>
 *     refs/<revision>                        the commit a branch or tag pointed to when last seen
 */
import { dirname, join, relative } from "node:path";
import type { RepoFile } from "./select.ts";

const COMMIT = /^[0-9a-f]{40}$/;

export function isCommitHash(revision: string): boolean {
  return COMMIT.test(revision);
}

/**
 * A path from the hub's listing is joined onto the cache directory, so it must stay inside it:
 * relative, `/`-separated, without empty, `.` or `..` segments.
 */
export function isSafeRepoPath(path: string): boolean {
  if (path === "" || path.startsWith("/") || path.includes("\\") || path.includes("\0")) return false;
  return path.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

export class RepoCache {
  /** `dir` is `<cache>/models--<org>--<name>`. */
  constructor(readonly dir: string) {}

  blobPath(id: string): string {
    return join(this.dir, "blobs", id);
  }

  snapshotPath(commit: string, path: string): string {
    return join(this.dir, "snapshots", commit, ...path.split("/"));
  }

  /** The snapshot file if it exists and resolves to a file (a dangling link does not count). */
  existingSnapshot(commit: string, path: string): string | undefined {
    const p = this.snapshotPath(commit, path);
    return statOrUndefined(p)?.isFile ? p : undefined;
  }

  hasBlob(id: string): boolean {
    return statOrUndefined(this.blobPath(id))?.isFile ?? false;
  }

  /** The commit `revision` resolves to offline: itself when it is a commit hash, else `refs/<revision>`. */
  readRef(revision: string): string | undefined {
    if (isCommitHash(revision)) return revision;
    try {
      const commit = Deno.readTextFileSync(join(this.dir, "refs", ...revision.split("/"))).trim();
      return isCommitHash(commit) ? commit : undefined;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  /** Records where a branch or tag points (nothing to record for a commit hash). */
  writeRef(revision: string, commit: string): void {
    if (revision === commit) return;
    const path = join(this.dir, "refs", ...revision.split("/"));
    if (this.readRef(revision) === commit) return;
    Deno.mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}.${Deno.pid}.tmp`;
    Deno.writeTextFileSync(tmp, commit);
    Deno.renameSync(tmp, path);
  }

  /**
   * Makes `snapshots/<commit>/<path>` point at the blob with a relative symlink. Where symlinks are
   * not available the blob is moved into the snapshot instead (what huggingface_hub does too).
   */
  linkSnapshot(commit: string, path: string, blobId: string): string {
    const pointer = this.snapshotPath(commit, path);
    const blob = this.blobPath(blobId);
    Deno.mkdirSync(dirname(pointer), { recursive: true });
    try {
      Deno.removeSync(pointer); // a dangling link left by a removed blob
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    try {
      Deno.symlinkSync(relative(dirname(pointer), blob), pointer);
    } catch {
      Deno.renameSync(blob, pointer);
    }
    return pointer;
  }

  /** The files of a cached snapshot (links resolved), for choosing a quantization offline. */
  snapshotFiles(commit: string): RepoFile[] {
    const root = join(this.dir, "snapshots", commit);
    const files: RepoFile[] = [];
    const walk = (dir: string, prefix: string) => {
      let entries: Deno.DirEntry[];
      try {
        entries = [...Deno.readDirSync(dir)];
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
        throw e;
      }
      for (const entry of entries) {
        const full = join(dir, entry.name);
        const info = statOrUndefined(full);
        if (info?.isDirectory) walk(full, `${prefix}${entry.name}/`);
        else if (info?.isFile) files.push({ path: `${prefix}${entry.name}`, size: info.size });
      }
    };
    walk(root, "");
    return files;
  }
}
