/**
 * A local stand-in for the Hugging Face hub, serving exactly the endpoints src/hub/download.ts
 * uses, with the headers the real hub sends:
 *
 *   GET  /api/models/{org}/{name}/tree/{rev}?recursive=…   JSON entries {type, oid, size, path, lfs?},
 *        paginated with `Link: <…>; rel="next"` like the hub (pageSize entries per page)
 *   HEAD|GET /{org}/{name}/resolve/{rev}/{path}            X-Repo-Commit, ETag, X-Linked-Etag,
 *        X-Linked-Size; LFS files answer 302 with an absolute Location on /cdn/{sha256} (the CDN),
 *        git files answer 200 with the bytes; unknown repo 401 RepoNotFound, unknown revision 404
 *        RevisionNotFound, unknown file 404 EntryNotFound
 *   GET  /cdn/{sha256}                                      the bytes, honouring `Range: bytes=N-`
 *
 * Faults for tests: cut the next CDN body after N bytes, ignore Range, corrupt one byte, slow chunks.
 */
import { createHash } from "node:crypto";

export interface MockFile {
  bytes: Uint8Array;
  /** Stored in LFS (default for .gguf): served through the CDN redirect, listed with its sha256. */
  lfs?: boolean;
}

interface StoredFile {
  bytes: Uint8Array;
  lfs: boolean;
  sha256: string;
  gitOid: string;
}

export interface SeenRequest {
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export function gitBlobOid(bytes: Uint8Array): string {
  return createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");
}

/** Deterministic pseudo-random bytes (xorshift32), starting with the GGUF magic. */
export function fakeGguf(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13, x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5, x >>>= 0;
    out[i] = x & 0xff;
  }
  out.set([0x47, 0x47, 0x55, 0x46].slice(0, size)); // "GGUF"
  return out;
}

export class MockHub {
  readonly requests: SeenRequest[] = [];
  readonly #repos = new Map<string, { commit: string; files: Map<string, StoredFile> }>();
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly url: string;

  /** The next CDN response ends (connection dropped) after this many body bytes. */
  cutNextBodyAfter?: number;
  /** Answer range requests with the whole file (200), as some servers do. */
  ignoreRange = false;
  /** Serve every CDN body with its middle byte flipped. */
  corrupt = false;
  /** Pause between body chunks. */
  chunkDelayMs = 0;
  chunkSize = 64 * 1024;
  /** Tree entries per page. */
  pageSize = 1000;

  constructor() {
    this.#server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => this.#handle(req));
    this.url = `http://127.0.0.1:${this.#server.addr.port}`;
  }

  addRepo(repo: string, files: Record<string, Uint8Array | MockFile>, commit = "a".repeat(40)): void {
    const stored = new Map<string, StoredFile>();
    for (const [path, f] of Object.entries(files)) {
      const file = f instanceof Uint8Array ? { bytes: f } : f;
      const bytes = file.bytes;
      stored.set(path, {
        bytes,
        lfs: file.lfs ?? path.endsWith(".gguf"),
        sha256: sha256Hex(bytes),
        gitOid: gitBlobOid(bytes),
      });
    }
    this.#repos.set(repo, { commit, files: stored });
  }

  /** Requests whose path starts with `prefix` (all when omitted). */
  seen(prefix = ""): SeenRequest[] {
    return this.requests.filter((r) => r.path.startsWith(prefix));
  }

  close(): Promise<void> {
    return this.#server.shutdown();
  }

  #handle(req: Request): Response {
    const url = new URL(req.url);
    this.requests.push({
      method: req.method,
      path: url.pathname + url.search,
      range: req.headers.get("range"),
      authorization: req.headers.get("authorization"),
    });
    const parts = url.pathname.split("/").slice(1).map(decodeURIComponent);

    if (parts[0] === "api" && parts[1] === "models" && parts[4] === "tree") {
      return this.#tree(url, `${parts[2]}/${parts[3]}`, parts[5], parts.slice(6).join("/"));
    }
    if (parts[0] === "cdn") return this.#cdn(req, parts[1]);
    if (parts[2] === "resolve") {
      return this.#resolve(req, `${parts[0]}/${parts[1]}`, parts[3], parts.slice(4).join("/"));
    }
    return new Response("not found", { status: 404 });
  }

  #repo(repo: string, revision: string): { commit: string; files: Map<string, StoredFile> } | Response {
    const entry = this.#repos.get(repo);
    if (!entry) return jsonError(401, "Repository not found", "RepoNotFound");
    if (revision !== "main" && revision !== entry.commit) {
      return jsonError(404, `Invalid rev id: ${revision}`, "RevisionNotFound");
    }
    return entry;
  }

  #tree(url: URL, repo: string, revision: string, folder: string): Response {
    const entry = this.#repo(repo, revision);
    if (entry instanceof Response) return entry;
    const recursive = url.searchParams.get("recursive") === "true";
    const items: unknown[] = [];
    const dirs = new Set<string>();
    for (const [path, f] of entry.files) {
      if (folder && !path.startsWith(`${folder}/`)) continue;
      const rest = folder ? path.slice(folder.length + 1) : path;
      const slash = rest.indexOf("/");
      if (slash >= 0) {
        const dir = (folder ? `${folder}/` : "") + rest.slice(0, slash);
        if (!dirs.has(dir)) {
          dirs.add(dir), items.push({ type: "directory", oid: "d".repeat(40), size: 0, path: dir });
        }
        if (!recursive) continue;
      }
      items.push({
        type: "file",
        oid: f.lfs ? gitBlobOid(new TextEncoder().encode(`pointer ${f.sha256}`)) : f.gitOid,
        size: f.bytes.length,
        path,
        ...(f.lfs ? { lfs: { oid: f.sha256, size: f.bytes.length, pointerSize: 134 } } : {}),
      });
    }
    const cursor = Number(url.searchParams.get("cursor") ?? 0);
    const page = items.slice(cursor, cursor + this.pageSize);
    const headers = new Headers({ "content-type": "application/json" });
    if (cursor + this.pageSize < items.length) {
      const next = new URL(url);
      next.searchParams.set("cursor", String(cursor + this.pageSize));
      headers.set("link", `<${next.href}>; rel="next"`);
    }
    return new Response(JSON.stringify(page), { headers });
  }

  #resolve(req: Request, repo: string, revision: string, path: string): Response {
    const entry = this.#repo(repo, revision);
    if (entry instanceof Response) return entry;
    const file = entry.files.get(path);
    if (!file) return jsonError(404, "Entry not found", "EntryNotFound");
    const headers = new Headers({ "x-repo-commit": entry.commit, "accept-ranges": "bytes" });
    if (file.lfs) {
      headers.set("etag", `"${file.sha256}"`);
      headers.set("x-linked-etag", `"${file.sha256}"`);
      headers.set("x-linked-size", String(file.bytes.length));
      headers.set("location", `${this.url}/cdn/${file.sha256}`);
      return new Response(null, { status: 302, headers });
    }
    headers.set("etag", `"${file.gitOid}"`);
    if (req.method === "HEAD") {
      headers.set("content-length", String(file.bytes.length));
      return new Response(null, { headers });
    }
    return new Response(file.bytes.slice(), { headers });
  }

  #cdn(req: Request, sha256: string): Response {
    const file = [...this.#repos.values()].flatMap((r) => [...r.files.values()]).find((f) =>
      f.sha256 === sha256
    );
    if (!file) return new Response("no such object", { status: 404 });
    let bytes = file.bytes;
    if (this.corrupt) {
      bytes = bytes.slice();
      bytes[bytes.length >> 1] ^= 0xff;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
    let start = 0, status = 200;
    const headers = new Headers({ "accept-ranges": "bytes", "content-type": "application/octet-stream" });
    if (range && !this.ignoreRange) {
      start = Number(range[1]);
      if (start >= bytes.length) {
        headers.set("content-range", `bytes */${bytes.length}`);
        return new Response(null, { status: 416, headers });
      }
      status = 206;
      headers.set("content-range", `bytes ${start}-${bytes.length - 1}/${bytes.length}`);
    }
    const body = bytes.subarray(start);
    headers.set("content-length", String(body.length));
    const cut = this.cutNextBodyAfter;
    this.cutNextBodyAfter = undefined;
    const end = cut === undefined ? body.length : Math.min(cut, body.length);
    if (req.method === "HEAD") return new Response(null, { status, headers });
    let offset = 0;
    const { chunkSize, chunkDelayMs } = this;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (offset > 0 && chunkDelayMs > 0) await new Promise((r) => setTimeout(r, chunkDelayMs));
        if (offset >= end) {
          // Closing before Content-Length bytes makes the server drop the connection mid-body.
          controller.close();
          return;
        }
        const n = Math.min(chunkSize, end - offset);
        controller.enqueue(body.slice(offset, offset + n));
        offset += n;
      },
    });
    return new Response(stream, { status, headers });
  }
}

function jsonError(status: number, message: string, code: string): Response {
  return new Response(JSON.stringify({ error: message }), {
    status,
    headers: { "content-type": "application/json", "x-error-code": code },
  });
}
