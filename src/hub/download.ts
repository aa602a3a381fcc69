/**
 * Models by name: `--hf user/repo[:QUANT]` finds a GGUF in a Hugging Face repository and downloads
 * it into the shared Hugging Face cache (see cache.ts for the layout), resuming interrupted
 * downloads, verifying size and checksum, and reusing cached files offline.
 *
 * Requests, in the order huggingface_hub makes them:
 *   GET  {endpoint}/api/models/{repo}/tree/{revision}?recursive=true   file list (`@huggingface/hub`
 *        listFiles: sizes, LFS sha256) → choose the file (select.ts)
 *   HEAD {endpoint}/{repo}/resolve/{revision}/{file}                   commit (X-Repo-Commit), content
 *        id (X-Linked-Etag / ETag) and size (X-Linked-Size); relative redirects (renamed repos) are
 *        followed, the absolute one to the CDN is not
 *   GET  {endpoint}/{repo}/resolve/{commit}/{file}                     the bytes, following redirects,
 *        with `Range: bytes=N-` when N bytes of an earlier attempt are on disk
 */
import { createHash, type Hash } from "node:crypto";
import { join } from "node:path";
import { DeltaqError } from "../errors.ts";
import { isCommitHash, isSafeRepoPath, RepoCache } from "./cache.ts";
import { chooseGguf, partPaths, type RepoFile } from "./select.ts";

/** A model on the hub: a repository plus a quantization tag or an exact file, at a revision. */
export interface HfModelRef {
  /** `org/name`. */
  repo: string;
  /** A quantization tag such as `Q4_K_M` (matched against file names, case-insensitively). */
  quant?: string;
  /** An exact path inside the repository; excludes `quant`. */
  file?: string;
  /** Branch, tag or commit hash; `main` by default. */
  revision?: string;
}

/**
 * The model used when neither `-m` nor `--hf` is given: Qwen3.5-4B at Q4_K_M from Unsloth's GGUF
 * repository, the most widely used GGUF conversion of Qwen3.5 (Qwen publishes no GGUF of it
 * themselves); it holds single-file quantizations named `Qwen3.5-4B-<QUANT>.gguf`. Chosen from
 * public references to `unsloth/Qwen3.5-4B-GGUF`; it could not be fetched from the build machine.
 */
export const DEFAULT_MODEL: Readonly<HfModelRef> = Object.freeze({
  repo: "unsloth/Qwen3.5-4B-GGUF",
  quant: "Q4_K_M",
});

export interface ResolveOptions {
  /** Hub address; default `HF_ENDPOINT`, else https://huggingface.co. */
  endpoint?: string;
  /** Access token for private or gated repositories; default `HF_TOKEN`. */
  token?: string;
  /** Cache root; default `HF_HUB_CACHE`, else `$HF_HOME/hub`, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Use only the cache, never the network; default `HF_HUB_OFFLINE` (1/true/yes/on). */
  offline?: boolean;
  /** Aborting stops the download and keeps the partial file for the next attempt. */
  signal?: AbortSignal;
  /** Called as bytes arrive (and once before, with the bytes already on disk when resuming). */
  onProgress?: (downloaded: number, total: number, file: string) => void;
  /** A transfer that receives nothing for this long counts as interrupted; default 60 000 ms. */
  stallTimeoutMs?: number;
}

// Hugging Face names: letters, digits, `-`, `_`, `.`; no leading or trailing `-`/`.`, no `--` or
// `..` (the cache folder uses `--` as its separator).
const NAME_PART = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$/;

function isRepoId(repo: string): boolean {
  const parts = repo.split("/");
  return parts.length === 2 &&
    parts.every((p) => NAME_PART.test(p) && !p.includes("--") && !p.includes(".."));
}

const SPEC_HELP = "expected user/repo[:QUANT] or user/repo/file.gguf";

/**
 * Parses `user/repo[:QUANT]`, `user/repo/path/file.gguf`, or a pasted hub address
 * (`https://huggingface.co/user/repo`, `hf.co/user/repo:Q8_0`,
 * `https://huggingface.co/user/repo/blob/main/file.gguf`).
 */
export function parseHfRef(spec: string): HfModelRef {
  const bad = (why: string) => new DeltaqError(`--hf ${JSON.stringify(spec)}: ${why}; ${SPEC_HELP}`);
  let rest = spec.trim().replace(/^https?:\/\//i, "").replace(/^(www\.)?(huggingface\.co|hf\.co)\//i, "");
  rest = rest.replace(/\/+$/, "");
  let quant: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon >= 0) {
    quant = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!/^[A-Za-z0-9_.-]+$/.test(quant)) throw bad(`${JSON.stringify(quant)} is not a quantization tag`);
  }
  const parts = rest.split("/");
  const repo = parts.slice(0, 2).join("/");
  if (!isRepoId(repo)) throw bad(`${JSON.stringify(repo)} is not a repository name`);
  if (parts.length === 2) return quant === undefined ? { repo } : { repo, quant };

  let revision: string | undefined;
  let fileParts = parts.slice(2);
  if ((parts[2] === "blob" || parts[2] === "resolve") && parts.length >= 5) {
    revision = decodeURIComponent(parts[3]);
    fileParts = parts.slice(4);
  }
  const file = fileParts.map(decodeURIComponent).join("/");
  if (!isSafeRepoPath(file) || !file.toLowerCase().endsWith(".gguf")) {
    throw bad(`${JSON.stringify(file)} is not a .gguf file path`);
  }
  if (quant !== undefined) throw bad("give either a file or a quantization, not both");
  return revision === undefined ? { repo, file } : { repo, file, revision };
}

/** `user/repo:QUANT`, `user/repo/file.gguf`, with `@revision` when it is not main. */
export function formatHfRef(ref: HfModelRef): string {
  const at = ref.revision && ref.revision !== "main" ? `@${ref.revision}` : "";
  if (ref.file !== undefined) return `${ref.repo}/${ref.file}${at}`;
  return `${ref.repo}${at}${ref.quant ? `:${ref.quant}` : ""}`;
}

// The library is loaded on first use: commands that never touch the hub do not pay its ~70 ms.
type HubLibrary = typeof import("npm:@huggingface/hub@2.17.5");
let hubLibrary: Promise<HubLibrary> | undefined;
function loadHubLibrary(): Promise<HubLibrary> {
  return hubLibrary ??= import("npm:@huggingface/hub@2.17.5");
}

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

/** A failure to talk to the hub at all (no connection, server error): the cache may still serve. */
class HubUnreachable extends Error {}

interface Session {
  ref: HfModelRef;
  endpoint: string;
  revision: string;
  /** Shown in messages: `user/repo` or `user/repo@rev`. */
  where: string;
  fetch: typeof fetch;
  signal?: AbortSignal;
}

/**
 * Returns the local path of the GGUF `ref` names (a file under the cache's `snapshots/`),
 * downloading it first unless the cache already has it. Throws DeltaqError for anything the user
 * can act on: unknown repository or quantization, offline without a cached copy, an interrupted
 * download (the partial file is kept and the next call resumes it), a checksum mismatch.
 */
export async function resolveModel(ref: HfModelRef, opts: ResolveOptions = {}): Promise<string> {
  if (!isRepoId(ref.repo)) {
    throw new DeltaqError(`${JSON.stringify(ref.repo)} is not a Hugging Face repository name`);
  }
  if (ref.file !== undefined && !isSafeRepoPath(ref.file)) {
    throw new DeltaqError(`${JSON.stringify(ref.file)} is not a file path inside a repository`);
  }
  const endpoint = (opts.endpoint ?? envVar("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, "");
  if (!URL.canParse(endpoint) || !/^https?:$/.test(new URL(endpoint).protocol)) {
    throw new DeltaqError(`hub endpoint ${JSON.stringify(endpoint)} (HF_ENDPOINT) is not an http(s) address`);
  }
  const token = opts.token ?? envVar("HF_TOKEN");
  const offline = opts.offline ?? /^(1|true|yes|on)$/i.test(envVar("HF_HUB_OFFLINE") ?? "");
  const hub = await loadHubLibrary();
  const cacheDir = opts.cacheDir ?? hub.getHFHubCachePath();
  const cache = new RepoCache(join(cacheDir, hub.getRepoFolderName({ type: "model", name: ref.repo })));
  const revision = ref.revision ?? "main";
  const where = revision === "main" ? ref.repo : `${ref.repo}@${revision}`;

  if (offline) {
    const cached = cachedModel(cache, ref, revision, where);
    if (cached) return cached;
    throw new DeltaqError(
      `${formatHfRef(ref)} is not in the Hugging Face cache (${cache.dir}) and offline mode is on ` +
        `(HF_HUB_OFFLINE); run once online to download it`,
    );
  }
  // A file pinned to a commit cannot change: if it is cached (every part of a split one), the
  // hub has nothing to add.
  if (ref.file !== undefined && isCommitHash(revision)) {
    const cached = partPaths(ref.file).map((p) => cache.existingSnapshot(revision, p));
    if (cached.every((p) => p !== undefined)) return cached[0]!;
  }

  const session: Session = {
    ref,
    endpoint,
    revision,
    where,
    fetch: hubFetch(endpoint, token, opts.signal),
    signal: opts.signal,
  };
  try {
    return await lookUpAndDownload(hub, session, cache, opts);
  } catch (e) {
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new DeltaqError(
        `cannot write the Hugging Face cache at ${cache.dir} (${e.message}); set HF_HUB_CACHE to a writable directory`,
      );
    }
    if (e instanceof Deno.errors.NotCapable) throw new DeltaqError(e.message); // names the missing --allow flag
    throw e;
  }
}

/**
 * Asks the hub which file (or split parts) and commit `session.ref` means, then downloads what is
 * not cached; returns the path of the (first) file.
 */
async function lookUpAndDownload(
  hub: HubLibrary,
  session: Session,
  cache: RepoCache,
  opts: ResolveOptions,
): Promise<string> {
  const { ref, endpoint, revision, where } = session;
  const files: RepoFile[] = [];
  let commit = "";
  try {
    const listing = await listRepoFiles(hub, session);
    for (const chosen of chooseGguf(listing, ref, where)) {
      const head = await headFile(session, chosen);
      // The parts of one model come from one commit (the first HEAD's).
      commit ||= head.commit;
      files.push(head.file);
    }
  } catch (e) {
    if (opts.signal?.aborted) {
      throw new DeltaqError(`looking up ${formatHfRef(ref)} on ${endpoint} was aborted`);
    }
    if (!(e instanceof HubUnreachable)) throw e;
    const cached = cachedModel(cache, ref, revision, where);
    if (cached) return cached;
    throw new DeltaqError(
      `cannot reach ${endpoint} (${e.message}) and ${
        formatHfRef(ref)
      } is not in the Hugging Face cache (${cache.dir})`,
    );
  }

  const paths: string[] = [];
  for (const file of files) {
    const existing = cache.existingSnapshot(commit, file.path);
    const blobId = file.sha256 ?? file.gitOid;
    if (!existing && !blobId) {
      throw new DeltaqError(`${endpoint} gave no content hash for ${file.path} in ${where}`);
    }
    if (!existing && !cache.hasBlob(blobId!)) {
      const url = `${endpoint}/${ref.repo}/resolve/${commit}/${encodePath(file.path)}`;
      await downloadBlob(session, url, file, cache.blobPath(blobId!), opts);
    }
    paths.push(existing ?? cache.linkSnapshot(commit, file.path, blobId!));
  }
  cache.writeRef(revision, commit);
  return paths[0];
}

/** The cached file for `ref` at the commit `refs/<revision>` last recorded, if there is one. */
function cachedModel(cache: RepoCache, ref: HfModelRef, revision: string, where: string): string | undefined {
  const commit = cache.readRef(revision);
  if (!commit) return undefined;
  const files = cache.snapshotFiles(commit);
  if (files.length === 0) return undefined;
  let chosen: RepoFile[];
  try {
    chosen = chooseGguf(files, ref, `the cached snapshot of ${where}`);
  } catch (e) {
    if (e instanceof DeltaqError) return undefined; // a different quantization was cached
    throw e;
  }
  const paths = chosen.map((f) => cache.existingSnapshot(commit, f.path));
  return paths.every((p) => p !== undefined) ? paths[0] : undefined;
}

function encodePath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** fetch with the token (sent to the hub only, never to the CDN it redirects to) and the signal. */
function hubFetch(endpoint: string, token: string | undefined, signal?: AbortSignal): typeof fetch {
  const origin = new URL(endpoint).origin;
  return (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    const headers = new Headers(init?.headers);
    headers.set("user-agent", "deltaq (+@huggingface/hub)");
    if (token && new URL(url).origin === origin) headers.set("authorization", `Bearer ${token}`);
    return fetch(input, { ...init, headers, signal: init?.signal ?? signal });
  };
}

/** Runs a hub request, turning connection failures into HubUnreachable. */
async function request<T>(session: Session, what: () => Promise<T>): Promise<T> {
  try {
    return await what();
  } catch (e) {
    if (session.signal?.aborted) throw e;
    if (e instanceof TypeError) throw new HubUnreachable(e.message); // fetch's "connection refused" etc.
    throw e;
  }
}

function hubError(session: Session, status: number, detail: string, code?: string | null): Error {
  const { ref, endpoint, where } = session;
  if (status >= 500) return new HubUnreachable(`${endpoint} answered HTTP ${status}`);
  if (code === "RevisionNotFound" || (status === 404 && /\brev/i.test(detail))) {
    return new DeltaqError(`${ref.repo} has no revision ${JSON.stringify(session.revision)} on ${endpoint}`);
  }
  if (code === "GatedRepo" || status === 403) {
    return new DeltaqError(
      `${where} is gated or restricted on ${endpoint}: accept its terms on the website and set HF_TOKEN (${detail})`,
    );
  }
  if (code === "EntryNotFound") {
    return new DeltaqError(`${where} has no file ${ref.file ?? ""} on ${endpoint}`);
  }
  if (status === 401 || status === 404) {
    return new DeltaqError(
      `repository ${ref.repo} not found on ${endpoint} (check the name; private repositories need HF_TOKEN)`,
    );
  }
  return new DeltaqError(`${endpoint}: HTTP ${status} for ${where}${detail ? `: ${detail}` : ""}`);
}

async function listRepoFiles(hub: HubLibrary, session: Session): Promise<RepoFile[]> {
  const files: RepoFile[] = [];
  try {
    await request(session, async () => {
      const entries = hub.listFiles({
        repo: { type: "model", name: session.ref.repo },
        revision: encodeURIComponent(session.revision),
        recursive: true,
        hubUrl: session.endpoint,
        fetch: session.fetch,
      });
      for await (const entry of entries) {
        if (entry.type !== "file" || !isSafeRepoPath(entry.path)) continue;
        // Hashes become file names in the cache: only well-formed ones are taken.
        const sha256 = SHA256.test(entry.lfs?.oid ?? "") ? entry.lfs!.oid : undefined;
        const gitOid = !entry.lfs && GIT_OID.test(entry.oid ?? "") ? entry.oid : undefined;
        files.push({ path: entry.path, size: entry.lfs?.size ?? entry.size, sha256, gitOid });
      }
    });
  } catch (e) {
    if (e instanceof hub.HubApiError) {
      throw hubError(session, e.statusCode, e.message.replace(/\.? ?URL: .*$/s, ""));
    }
    if (e instanceof SyntaxError) {
      throw new DeltaqError(
        `${session.endpoint} did not answer like a Hugging Face hub (listing ${session.where}: ${e.message})`,
      );
    }
    throw e;
  }
  return files;
}

const SHA256 = /^[0-9a-f]{64}$/;
const GIT_OID = /^[0-9a-f]{40}$/;

/** Hex digests as the hub writes them in ETag headers: `"abc…"` or `W/"abc…"`. */
function normalizeEtag(etag: string | null): string | undefined {
  const value = etag?.replace(/^W\//, "").replace(/^"|"$/g, "");
  return value && (SHA256.test(value) || GIT_OID.test(value)) ? value : undefined;
}

/**
 * Asks the hub which commit `revision` is at and what the chosen file holds there. The HEAD's
 * content id and size take precedence over the listing's, since they belong to that commit.
 */
async function headFile(session: Session, listed: RepoFile): Promise<{ file: RepoFile; commit: string }> {
  let url = `${session.endpoint}/${session.ref.repo}/resolve/${encodeURIComponent(session.revision)}/${
    encodePath(listed.path)
  }`;
  let res: Response;
  for (let hops = 0;; hops++) {
    res = await request(
      session,
      () =>
        session.fetch(url, {
          method: "HEAD",
          redirect: "manual",
          headers: { "accept-encoding": "identity" },
        }),
    );
    const location = res.headers.get("location");
    // A relative redirect stays on the hub (a renamed repository); an absolute one leads to the CDN.
    if (res.status >= 300 && res.status < 400 && location && !/^[a-z]+:|^\/\//i.test(location) && hops < 5) {
      url = new URL(location, url).href;
      continue;
    }
    break;
  }
  if (res.status >= 400) throw hubError(session, res.status, res.statusText, res.headers.get("x-error-code"));
  const commit = res.headers.get("x-repo-commit") ?? "";
  if (!isCommitHash(commit)) {
    throw new DeltaqError(
      `${session.endpoint} gave no commit for ${listed.path} in ${session.where} (X-Repo-Commit header)`,
    );
  }
  const etag = normalizeEtag(res.headers.get("x-linked-etag") ?? res.headers.get("etag"));
  const linkedSize = Number(
    res.headers.get("x-linked-size") ?? (res.ok ? res.headers.get("content-length") : null) ?? NaN,
  );
  const file: RepoFile = { ...listed };
  if (etag && etag !== (listed.sha256 ?? listed.gitOid)) {
    if (etag.length === 64) file.sha256 = etag, delete file.gitOid;
    else file.gitOid = etag, delete file.sha256;
  }
  if (Number.isSafeInteger(linkedSize) && linkedSize >= 0) file.size = linkedSize;
  return { file, commit };
}

/**
 * The hash a finished blob must have: sha256 of the content for LFS files, the git blob id
 * (sha1 of `blob <size>\0` + content) otherwise. Fed incrementally as bytes arrive.
 */
class ContentCheck {
  #hash!: Hash;
  readonly algorithm: string;
  readonly expected: string;
  constructor(private file: RepoFile) {
    this.algorithm = file.sha256 ? "sha256" : "git blob sha1";
    this.expected = (file.sha256 ?? file.gitOid)!.toLowerCase();
    this.reset();
  }
  reset(): void {
    if (this.file.sha256) this.#hash = createHash("sha256");
    else this.#hash = createHash("sha1").update(`blob ${this.file.size}\0`);
  }
  update(bytes: Uint8Array): void {
    this.#hash.update(bytes);
  }
  digest(): string {
    return this.#hash.digest("hex");
  }
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
}

/** Feeds the bytes of an earlier attempt to the check, so the digest covers the whole file. */
async function hashExisting(
  path: string,
  length: number,
  check: ContentCheck,
  signal?: AbortSignal,
): Promise<void> {
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(4 << 20);
  for (let done = 0; done < length;) {
    signal?.throwIfAborted();
    const n = await file.read(buf.subarray(0, Math.min(buf.length, length - done)));
    if (n === null) throw new DeltaqError(`${path} shrank while being read`);
    check.update(buf.subarray(0, n));
    done += n;
  }
}

/**
 * Downloads `url` into `blobPath` through `blobPath.incomplete`: continues a partial file with a
 * Range request (starting over if the server ignores it), then verifies size and hash before
 * renaming. Interruptions keep the partial file; a hash mismatch deletes it.
 */
async function downloadBlob(
  session: Session,
  url: string,
  file: RepoFile,
  blobPath: string,
  opts: ResolveOptions,
): Promise<void> {
  const partial = `${blobPath}.incomplete`;
  const name = file.path;
  const total = file.size;
  await Deno.mkdir(join(blobPath, ".."), { recursive: true });
  let have = await fileSize(partial);
  if (have > total) {
    await removeIfPresent(partial);
    have = 0;
  }
  const check = new ContentCheck(file);

  const stallMs = opts.stallTimeoutMs ?? 60_000;
  const stall = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stall.signal]) : stall.signal;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const armStallTimer = () => {
    clearTimeout(timer);
    timer = setTimeout(() => stall.abort(), stallMs);
  };
  const interrupted = (e: unknown) => {
    const why = opts.signal?.aborted
      ? "aborted"
      : stall.signal.aborted
      ? `no data for ${stallMs / 1000} s`
      : e instanceof Error
      ? e.message
      : String(e);
    const pct = total > 0 ? Math.floor((have / total) * 100) : 0;
    return new DeltaqError(
      `download of ${name} interrupted at ${pct}% (${have} of ${total} bytes: ${why}); run again to resume`,
      { cause: e },
    );
  };
  const get = (from: number) => {
    const headers: Record<string, string> = { "accept-encoding": "identity" };
    if (from > 0) headers.range = `bytes=${from}-`;
    return session.fetch(url, { headers, signal });
  };

  let out: Deno.FsFile | undefined;
  try {
    if (have > 0) await hashExisting(partial, have, check, opts.signal);
    opts.onProgress?.(have, total, name);
    if (have < total) {
      armStallTimer();
      let res = await get(have);
      if (have > 0 && res.status === 206) {
        const start = /^bytes (\d+)-/.exec(res.headers.get("content-range") ?? "");
        if (!start || +start[1] !== have) {
          await res.body?.cancel();
          have = 0;
          check.reset();
          res = await get(0);
        }
      } else if (have > 0 && (res.status === 200 || res.status === 416)) {
        // The server ignored the range (200) or rejected it (416): start over from byte 0.
        if (res.status === 416) await res.body?.cancel(), res = await get(0);
        have = 0;
        check.reset();
      }
      if (!(res.status === 200 || (res.status === 206 && have > 0)) || !res.body) {
        await res.body?.cancel();
        if (res.status >= 500) throw new Error(`HTTP ${res.status}`);
        throw hubError(session, res.status, res.statusText, res.headers.get("x-error-code"));
      }
      out = await Deno.open(partial, { write: true, create: true, append: have > 0, truncate: have === 0 });
      opts.onProgress?.(have, total, name);
      for await (const chunk of res.body) {
        armStallTimer();
        if (have + chunk.length > total) {
          out.close(), out = undefined;
          await removeIfPresent(partial);
          throw new DeltaqError(`downloading ${name}: the server sent more than the expected ${total} bytes`);
        }
        await writeAll(out, chunk);
        check.update(chunk);
        have += chunk.length;
        opts.onProgress?.(have, total, name);
      }
      out.close();
      out = undefined;
      if (have < total) throw new Error("connection closed early");
    }
  } catch (e) {
    if (
      e instanceof DeltaqError || e instanceof Deno.errors.PermissionDenied ||
      e instanceof Deno.errors.NotCapable
    ) {
      throw e;
    }
    throw interrupted(e);
  } finally {
    clearTimeout(timer);
    out?.close();
  }

  const digest = check.digest();
  if (digest !== check.expected) {
    await removeIfPresent(partial);
    throw new DeltaqError(
      `downloaded ${name} is corrupt: ${check.algorithm} ${digest} does not match the hub's ${check.expected}; ` +
        `the partial file was deleted, run again to download it afresh`,
    );
  }
  await Deno.rename(partial, blobPath);
}
