/**
 * Choosing which GGUF of a Hugging Face repository to use, from the repository's file list (or the
 * files of a cached snapshot): `user/repo:Q4_K_M` names a quantization, `user/repo/file.gguf` a file.
 *
 * GGUF repositories hold one file per quantization (`Qwen3.5-4B-Q4_K_M.gguf`), sometimes split into
 * parts by llama-gguf-split (`…-Q8_0-00001-of-00003.gguf`), plus files that are not language models
 * (vision projectors `mmproj-*.gguf`, importance matrices `imatrix*.gguf`). A choice is the list of
 * files to download: one file, or every part of a split one (which loads from its first part).
 */
import { DeltaqError } from "../errors.ts";

/** A file of a repository revision, as the hub's tree listing or a cached snapshot shows it. */
export interface RepoFile {
  /** Path inside the repository, `/`-separated. */
  path: string;
  size: number;
  /** Content sha256 (hex) when the hub stores the file in LFS/Xet — every GGUF in practice. */
  sha256?: string;
  /** Git blob id (hex sha1 of `blob <size>\0<content>`) for files stored in git itself. */
  gitOid?: string;
}

/** The quantization used when a repository is named without one (what llama.cpp's `-hf` picks too). */
export const PREFERRED_QUANT = "Q4_K_M";

const SPLIT_SUFFIX = /-(\d{5})-of-(\d{5})$/i;

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The file name without `.gguf` and without a split suffix: `Qwen3.5-4B-Q4_K_M`. */
function stem(path: string): string {
  return baseName(path).replace(/\.gguf$/i, "").replace(SPLIT_SUFFIX, "");
}

/** Part index and count of a split GGUF (`-00001-of-00003.gguf`), or undefined for a single file. */
export function splitPart(path: string): { index: number; count: number } | undefined {
  const m = SPLIT_SUFFIX.exec(baseName(path).replace(/\.gguf$/i, ""));
  if (!m || +m[2] <= 1) return undefined;
  return { index: +m[1], count: +m[2] };
}

/** A GGUF holding a language model: not a vision projector nor an importance matrix. */
export function isModelGguf(path: string): boolean {
  const name = baseName(path).toLowerCase();
  return name.endsWith(".gguf") && !name.includes("mmproj") && !name.includes("imatrix");
}

/** The quantization tag a file name ends with (`Qwen3.5-4B-Q4_K_M.gguf` → `Q4_K_M`). */
export function quantTag(path: string): string {
  const s = stem(path);
  const m = /[-.]([A-Za-z0-9_]+)$/.exec(s);
  return (m ? m[1] : s).toUpperCase();
}

/**
 * Does the file name carry `quant` as a whole tag? The tag must start the name or follow `-`, `.`
 * or `/`, and end the name or precede `-` or `.`, so `Q4_K` does not select `Q4_K_M` and
 * `UD-Q4_K_XL` selects `Qwen3.5-4B-UD-Q4_K_XL.gguf`. Case does not matter.
 */
export function matchesQuant(path: string, quant: string): boolean {
  const s = stem(path).toUpperCase();
  const q = quant.toUpperCase();
  for (let at = s.indexOf(q); at >= 0; at = s.indexOf(q, at + 1)) {
    const before = at === 0 ? "" : s[at - 1];
    const after = s[at + q.length] ?? "";
    if ((before === "" || "-./".includes(before)) && (after === "" || "-.".includes(after))) return true;
  }
  return false;
}

/** The distinct quantization tags of the model GGUFs in `files`, sorted (Q2_K before Q10…). */
export function availableQuants(files: RepoFile[]): string[] {
  const tags = new Set(files.filter((f) => isModelGguf(f.path)).map((f) => quantTag(f.path)));
  return [...tags].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
}

/** What to look for: a quantization tag, an exact file path, or neither (the repository's default). */
export interface FileWanted {
  quant?: string;
  file?: string;
}

/**
 * Picks the GGUF to download: one file, or all parts of a split one, first part first. A single
 * file wins over a split one of the same quantization. `where` names the repository (or cached
 * snapshot) in error messages. Throws DeltaqError when nothing fits, listing what is available.
 */
export function chooseGguf(files: RepoFile[], wanted: FileWanted, where: string): RepoFile[] {
  const models = files.filter((f) => isModelGguf(f.path)).sort((a, b) => a.path.localeCompare(b.path));
  const listed = () => {
    const quants = availableQuants(models);
    return quants.length ? `available quantizations: ${quants.join(", ")}` : "it holds no GGUF model files";
  };

  if (wanted.file !== undefined) {
    const file = files.find((f) => f.path === wanted.file);
    if (!file) {
      const ggufs = files.filter((f) => f.path.toLowerCase().endsWith(".gguf")).map((f) => f.path);
      throw new DeltaqError(
        `${where} has no file ${wanted.file}; ${
          ggufs.length ? `GGUF files: ${ggufs.join(", ")}` : "it holds no GGUF files"
        }`,
      );
    }
    return withParts(file, files, where);
  }

  if (models.length === 0) throw new DeltaqError(`${where}: ${listed()}`);
  const quant = wanted.quant ?? PREFERRED_QUANT;
  const matching = models.filter((f) => matchesQuant(f.path, quant));
  const single = matching.find((f) => !splitPart(f.path));
  if (single) return [single];
  if (matching.length > 0) return withParts(matching[0], models, where);
  if (wanted.quant !== undefined) {
    throw new DeltaqError(`${where} has no ${wanted.quant} GGUF; ${listed()}`);
  }
  // Without a requested quantization any model will do, a single file first.
  return withParts(models.find((f) => !splitPart(f.path)) ?? models[0], models, where);
}

/** The paths of every part of the split model `path` belongs to, first first; `[path]` if not split. */
export function partPaths(path: string): string[] {
  const part = splitPart(path);
  if (!part) return [path];
  const m = /^(.*)-\d{5}-of-\d{5}(\.gguf)$/i.exec(path)!;
  const five = (n: number) => String(n).padStart(5, "0");
  return Array.from({ length: part.count }, (_, i) => `${m[1]}-${five(i + 1)}-of-${five(part.count)}${m[2]}`);
}

/** `[file]`, or every part of the split model `file` belongs to (all must be listed). */
function withParts(file: RepoFile, files: RepoFile[], where: string): RepoFile[] {
  return partPaths(file.path).map((path, _, all) => {
    const found = files.find((f) => f.path === path);
    if (!found) {
      throw new DeltaqError(
        `${where}: ${baseName(file.path)} is part of a model split into ${all.length} files, but ${path} is missing`,
      );
    }
    return found;
  });
}
