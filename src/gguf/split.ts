/**
 * Models split by llama.cpp's `llama-gguf-split` into `name-00001-of-00003.gguf`,
 * `name-00002-of-00003.gguf`, …, loaded as one model from the first part, as llama.cpp does.
 *
 * Every part is a GGUF of its own with three keys (tools/gguf-split, llama-model-loader.cpp):
 *   split.no             u16  the part's index, 0-based
 *   split.count          u16  number of parts
 *   split.tensors.count  i32  tensors over all parts
 * The first part holds all other metadata; each part holds some of the tensors (the first may
 * hold none). The other parts' names come from the first's: its `-00001-of-0000N.gguf` suffix
 * with the part number changed (llama.cpp's `llama_split_path`).
 */
import { DeltaqError } from "../errors.ts";
import { Metadata, readGgufHeader } from "./read.ts";
import type { GgufFile, GgufTensorInfo } from "./types.ts";

export const SPLIT_NO = "split.no";
export const SPLIT_COUNT = "split.count";
export const SPLIT_TENSORS_COUNT = "split.tensors.count";

/** `prefix-00002-of-00003.gguf`: llama.cpp's part naming (`part` 0-based). */
export function splitPartPath(prefix: string, part: number, count: number): string {
  const five = (n: number) => String(n).padStart(5, "0");
  return `${prefix}-${five(part + 1)}-of-${five(count)}.gguf`;
}

/**
 * The paths of every part of the model whose first part is `path`, read from its header `first`:
 * just `[path]` for a file that is not split. Throws a DeltaqError for a later part (the model
 * loads from the first) or a first part whose name does not say where the others are.
 */
export function splitPartPaths(path: string, first: GgufFile): string[] {
  const md = new Metadata(first, path);
  const count = md.uint(SPLIT_COUNT, 0);
  if (count <= 1) return [path];
  const no = md.uint(SPLIT_NO, 0);
  const m = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/.exec(path);
  if (no !== 0) {
    const firstName = m ? ` (${splitPartPath(m[1], 0, count)})` : "";
    throw new DeltaqError(`${path}: this is part ${no + 1} of a model split into ${count} files; load the first part${firstName}`);
  }
  if (!m || Number(m[2]) !== 1 || Number(m[3]) !== count) {
    throw new DeltaqError(
      `${path}: the first part of a model split into ${count} files, but its name does not end in ` +
        `-00001-of-${String(count).padStart(5, "0")}.gguf, so the other parts cannot be found`,
    );
  }
  return Array.from({ length: count }, (_, i) => i === 0 ? path : splitPartPath(m[1], i, count));
}

/** Checks that part `index` of `count` says so in its header. */
export function checkSplitPart(path: string, gguf: GgufFile, index: number, count: number): void {
  const md = new Metadata(gguf, path);
  if (!md.has(SPLIT_NO)) throw new DeltaqError(`${path}: not a part of a split model (no ${SPLIT_NO})`);
  const no = md.uint(SPLIT_NO);
  const n = md.uint(SPLIT_COUNT, 0);
  if (no !== index || n !== count) {
    throw new DeltaqError(`${path}: says it is part ${no + 1} of ${n}, expected part ${index + 1} of ${count}`);
  }
}

/**
 * One view of a split model: the first part's metadata with every part's tensors (`part` tells
 * which file a tensor's `fileOffset` is in). Checks that no tensor appears twice and that the
 * parts hold the number of tensors the first announces.
 */
export function joinSplitParts(paths: string[], parts: GgufFile[]): { gguf: GgufFile; part: Map<string, number> } {
  const part = new Map<string, number>();
  const tensors: GgufTensorInfo[] = [];
  parts.forEach((g, i) => {
    for (const t of g.tensors) {
      if (part.has(t.name)) {
        throw new DeltaqError(`${paths[i]}: tensor ${t.name} is also in ${paths[part.get(t.name)!]}`);
      }
      part.set(t.name, i);
      tensors.push(t);
    }
  });
  const expected = new Metadata(parts[0], paths[0]).uint(SPLIT_TENSORS_COUNT, tensors.length);
  if (expected !== tensors.length) {
    throw new DeltaqError(`${paths[0]}: the ${parts.length} parts hold ${tensors.length} tensors, the first part announces ${expected}`);
  }
  const fileSize = parts.reduce((s, g) => s + g.fileSize, 0);
  return { gguf: { ...parts[0], tensors, fileSize }, part };
}

/**
 * The header of a model from its path, every part of a split model joined (`readGgufHeader`
 * for one file); `parts` lists the files.
 */
export function readModelHeader(path: string): GgufFile & { parts: string[] } {
  const first = readGgufHeader(path);
  const paths = splitPartPaths(path, first);
  if (paths.length === 1) return { ...first, parts: paths };
  const parts = paths.map((p, i) => i === 0 ? first : readGgufHeader(p));
  parts.forEach((g, i) => checkSplitPart(paths[i], g, i, paths.length));
  return { ...joinSplitParts(paths, parts).gguf, parts: paths };
}
