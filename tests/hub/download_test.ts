// resolveModel against a local imitation of the hub (mock_hub.ts): cache layout, reuse without the
// network, resume, restart, checksum, abort, stall, selection and error messages. Every test uses
// its own temporary cache directory and passes endpoint, cache and offline mode explicitly, so the
// machine's HF_* settings and ~/.cache are never involved.
import assert from "node:assert/strict";
import { join } from "node:path";
import { DeltaqError } from "../../src/errors.ts";
import { type HfModelRef, resolveModel, type ResolveOptions } from "../../src/hub/download.ts";
import { fakeGguf, gitBlobOid, MockHub, sha256Hex } from "./mock_hub.ts";
import { pathExists } from "../../src/util/fs.ts";

const REPO = "org/Model-GGUF";
const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const Q4 = fakeGguf(300_000, 1);
const Q8 = fakeGguf(500_000, 2);
const REPO_DIR = "models--org--Model-GGUF";

function addModelRepo(hub: MockHub): void {
  hub.addRepo(REPO, {
    "Model-Q4_K_M.gguf": Q4,
    "Model-Q8_0.gguf": Q8,
    "mmproj-F16.gguf": fakeGguf(1000, 3),
    "README.md": new TextEncoder().encode("# Model\n"),
  }, COMMIT);
}

async function withHub(fn: (hub: MockHub, cacheDir: string) => Promise<void>): Promise<void> {
  const hub = new MockHub();
  const cacheDir = await Deno.makeTempDir({ prefix: "deltaq-hub-test-" });
  try {
    await fn(hub, cacheDir);
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
}

function options(hub: MockHub, cacheDir: string, extra: ResolveOptions = {}): ResolveOptions {
  return { endpoint: hub.url, cacheDir, offline: false, token: "", ...extra };
}

async function rejectsWith(promise: Promise<unknown>, pattern: RegExp): Promise<DeltaqError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof DeltaqError, `expected a DeltaqError, got ${e}`);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes("\n"), "a user error is one line");
    return e;
  }
  assert.fail(`expected an error matching ${pattern}`);
}

Deno.test("hub: downloads a quantization into the shared Hugging Face cache layout", async () => {
  await withHub(async (hub, cacheDir) => {
    addModelRepo(hub);
    const progress: [number, number, string][] = [];
    const path = await resolveModel(
      { repo: REPO, quant: "q8_0" },
      options(hub, cacheDir, { onProgress: (d, t, f) => progress.push([d, t, f]) }),
    );
    const repoDir = join(cacheDir, REPO_DIR);
    const sha = sha256Hex(Q8);
    assert.equal(path, join(repoDir, "snapshots", COMMIT, "Model-Q8_0.gguf"));
    assert.ok(Deno.lstatSync(path).isSymlink);
    assert.equal(Deno.readLinkSync(path), `../../blobs/${sha}`);
    assert.deepEqual(Deno.readFileSync(path), Q8);
    assert.equal(Deno.readTextFileSync(join(repoDir, "refs", "main")), COMMIT);
    assert.deepEqual([...Deno.readDirSync(join(repoDir, "blobs"))].map((e) => e.name), [sha]);
    assert.deepEqual(progress.at(-1), [Q8.length, Q8.length, "Model-Q8_0.gguf"]);
    assert.ok(progress.length > 2, "progress is reported while bytes arrive");
    assert.deepEqual(hub.requests.map((r) => `${r.method} ${r.path}`), [
      "GET /api/models/org/Model-GGUF/tree/main?recursive=true&expand=false",
      "HEAD /org/Model-GGUF/resolve/main/Model-Q8_0.gguf",
      `GET /org/Model-GGUF/resolve/${COMMIT}/Model-Q8_0.gguf`,
      `GET /cdn/${sha}`,
    ]);
  });
});

Deno.test("hub: a cached model is reused offline with no request, and online without downloading again", async () => {
  await withHub(async (hub, cacheDir) => {
    addModelRepo(hub);
    const first = await resolveModel({ repo: REPO }, options(hub, cacheDir));
    assert.match(first, /Model-Q4_K_M\.gguf$/, "Q4_K_M is the default quantization");
    const before = hub.requests.length;

    assert.equal(await resolveModel({ repo: REPO }, options(hub, cacheDir, { offline: true })), first);
    assert.equal(
      await resolveModel({ repo: REPO, quant: "Q4_K_M" }, options(hub, cacheDir, { offline: true })),
      first,
    );
    Deno.env.set("HF_HUB_OFFLINE", "1");
    try {
      assert.equal(await resolveModel({ repo: REPO }, { endpoint: hub.url, cacheDir }), first);
    } finally {
      Deno.env.delete("HF_HUB_OFFLINE");
    }
    assert.equal(hub.requests.length, before, "offline use makes no request");

    assert.equal(await resolveModel({ repo: REPO }, options(hub, cacheDir)), first);
    assert.deepEqual(hub.requests.slice(before).map((r) => r.method + " " + r.path.split("?")[0]), [
      "GET /api/models/org/Model-GGUF/tree/main",
      "HEAD /org/Model-GGUF/resolve/main/Model-Q4_K_M.gguf",
    ], "online, the hub is asked for the current commit but nothing is downloaded");

    // Port 1 refuses connections: an unreachable hub falls back to the cache.
    assert.equal(
      await resolveModel({ repo: REPO }, options(hub, cacheDir, { endpoint: "http://127.0.0.1:1" })),
      first,
    );
  });
});

Deno.test("hub: offline or unreachable without a cached copy is a clear error", async () => {
  await withHub(async (hub, cacheDir) => {
    addModelRepo(hub);
    await resolveModel({ repo: REPO, quant: "Q4_K_M" }, options(hub, cacheDir));
    await rejectsWith(
      resolveModel({ repo: REPO, quant: "Q8_0" }, options(hub, cacheDir, { offline: true })),
      /^org\/Model-GGUF:Q8_0 is not in the Hugging Face cache .* offline mode is on/,
    );
    await rejectsWith(
      resolveModel({ repo: "org/Other" }, options(hub, cacheDir, { endpoint: "http://127.0.0.1:1" })),
      /^cannot reach http:\/\/127\.0\.0\.1:1 \(.*\) and org\/Other is not in the Hugging Face cache/,
    );
  });
});

Deno.test("hub: an interrupted transfer keeps its partial file and resumes with a Range request", async () => {
  await withHub(async (hub, cacheDir) => {
    addModelRepo(hub);
    const blob = join(cacheDir, REPO_DIR, "blobs", sha256Hex(Q8));
    hub.cutNextBodyAfter = 100_000;
    await rejectsWith(
      resolveModel({ repo: REPO, quant: "Q8_0" }, options(hub, cacheDir)),
      /^download of Model-Q8_0\.gguf interrupted at 20% \(100000 of 500000 bytes: .*\); run again to resume$/,
    );
    assert.equal(Deno.statSync(`${blob}.incomplete`).size, 100_000);
    assert.ok(!pathExists(blob));
    assert.ok(!pathExists(join(cacheDir, REPO_DIR, "snapshots")));

    const progress: number[] = [];
    const path = await resolveModel(
      { repo: REPO, quant: "Q8_0" },
      options(hub, cacheDir, { onProgress: (d) => progress.push(d) }),
    );
    assert.equal(hub.seen("/cdn/").at(-1)!.range, "bytes=100000-");
    assert.equal(progress[0], 100_000, "progress starts from the bytes already on disk");
    assert.deepEqual(Deno.readFileSync(path), Q8);
    assert.ok(!pathExists(`${blob}.incomplete`));
  });
});

Deno.test("hub: a server that ignores Range makes the download start over, still verified", async () => {
  await withHub(async (hub, cacheDir) => {
    addModelRepo(hub);
    hub.cutNextBodyAfter = 70_000;
    await rejectsWith(resolveModel({ repo: REPO }, options(hub, cacheDir)), /interrupted/);
    hub.ignoreRange = true;
    const path = await resolveModel({ repo: REPO }, options(hub, cacheDir));
    const last = hub.seen("/cdn/").at(-1)!;
    assert.equal(last.range, "bytes=70000-", "the resume was attempted");
    assert.deepEqual(Deno.readFileSync(path), Q4);
  });
});

Deno.test("hub: a checksum mismatch deletes the partial file and leaves no blob", async () => {
  await withHub(async (hub, cacheDir) => {
    addModelRepo(hub);
    hub.corrupt = true;
    const sha = sha256Hex(Q4);
    await rejectsWith(
      resolveModel({ repo: REPO }, options(hub, cacheDir)),
      new RegExp(
        `^downloaded Model-Q4_K_M\\.gguf is corrupt: sha256 [0-9a-f]{64} does not match the hub's ${sha}`,
      ),
    );
    const blobs = join(cacheDir, REPO_DIR, "blobs");
    assert.deepEqual([...Deno.readDirSync(blobs)], []);
    assert.ok(!pathExists(join(cacheDir, REPO_DIR, "snapshots")));

    hub.corrupt = false;
    assert.deepEqual(Deno.readFileSync(await resolveModel({ repo: REPO }, options(hub, cacheDir))), Q4);
  });
});

Deno.test("hub: aborting keeps the partial file; a stalled transfer counts as interrupted", async () => {
  await withHub(async (hub, cacheDir) => {
    addModelRepo(hub);
    hub.chunkSize = 16 * 1024;
    hub.chunkDelayMs = 5;
    const controller = new AbortController();
    await rejectsWith(
      resolveModel(
        { repo: REPO },
        options(hub, cacheDir, { signal: controller.signal, onProgress: (d) => d > 0 && controller.abort() }),
      ),
      /^download of Model-Q4_K_M\.gguf interrupted at \d+% \(\d+ of 300000 bytes: aborted\); run again to resume$/,
    );
    const partial = join(cacheDir, REPO_DIR, "blobs", `${sha256Hex(Q4)}.incomplete`);
    const kept = Deno.statSync(partial).size;
    assert.ok(kept > 0 && kept < Q4.length);

    hub.chunkDelayMs = 400;
    await rejectsWith(
      resolveModel({ repo: REPO }, options(hub, cacheDir, { stallTimeoutMs: 100 })),
      /interrupted at \d+% .*: no data for 0\.1 s\); run again to resume$/,
    );
    assert.ok(Deno.statSync(partial).size > kept, "bytes received before the stall are kept");

    hub.chunkDelayMs = 0;
    assert.deepEqual(Deno.readFileSync(await resolveModel({ repo: REPO }, options(hub, cacheDir))), Q4);
  });
});

Deno.test("hub: quantization choice through a paginated listing, files in folders, and the error listing quants", async () => {
  await withHub(async (hub, cacheDir) => {
    hub.pageSize = 2;
    const q2 = fakeGguf(2000, 4);
    hub.addRepo(REPO, {
      "Model-Q4_K_M-00001-of-00002.gguf": fakeGguf(1000, 5),
      "Model-Q4_K_M-00002-of-00002.gguf": fakeGguf(1000, 6),
      "Model-Q8_0.gguf": Q8,
      "sub/Model-Q2_K.gguf": q2,
      "mmproj-F16.gguf": fakeGguf(1000, 3),
    }, COMMIT);
    const path = await resolveModel({ repo: REPO, quant: "Q2_K" }, options(hub, cacheDir));
    assert.equal(path, join(cacheDir, REPO_DIR, "snapshots", COMMIT, "sub", "Model-Q2_K.gguf"));
    assert.equal(Deno.readLinkSync(path), `../../../blobs/${sha256Hex(q2)}`);
    assert.deepEqual(Deno.readFileSync(path), q2);
    assert.ok(hub.seen("/api/").length >= 3, "all listing pages were read");

    await rejectsWith(
      resolveModel({ repo: REPO, quant: "Q5_K_S" }, options(hub, cacheDir)),
      /^org\/Model-GGUF has no Q5_K_S GGUF; available quantizations: Q2_K, Q4_K_M, Q8_0$/,
    );
    // A split quantization: every part is downloaded next to the first, whose path comes back.
    const first = await resolveModel({ repo: REPO, quant: "Q4_K_M" }, options(hub, cacheDir));
    assert.equal(first, join(cacheDir, REPO_DIR, "snapshots", COMMIT, "Model-Q4_K_M-00001-of-00002.gguf"));
    assert.deepEqual(Deno.readFileSync(first), fakeGguf(1000, 5));
    assert.deepEqual(Deno.readFileSync(first.replace("-00001-of-", "-00002-of-")), fakeGguf(1000, 6));
    const downloads = hub.seen("/cdn/").length;
    assert.equal(await resolveModel({ repo: REPO, quant: "Q4_K_M" }, options(hub, cacheDir, { offline: true })), first);
    assert.equal(await resolveModel({ repo: REPO, quant: "Q4_K_M" }, options(hub, cacheDir)), first);
    assert.equal(hub.seen("/cdn/").length, downloads, "cached parts are not downloaded again");
    await rejectsWith(
      resolveModel({ repo: REPO, file: "Model-Q3_K.gguf" }, options(hub, cacheDir)),
      /^org\/Model-GGUF has no file Model-Q3_K\.gguf; GGUF files: /,
    );
  });
});

Deno.test("hub: a GGUF stored in git itself is verified by its git blob id", async () => {
  await withHub(async (hub, cacheDir) => {
    const small = fakeGguf(5000, 7);
    hub.addRepo(REPO, { "tiny.gguf": { bytes: small, lfs: false } }, COMMIT);
    const path = await resolveModel({ repo: REPO, file: "tiny.gguf" }, options(hub, cacheDir));
    assert.equal(Deno.readLinkSync(path), `../../blobs/${gitBlobOid(small)}`);
    assert.deepEqual(Deno.readFileSync(path), small);
    assert.equal(hub.seen("/cdn/").length, 0);

    // Pinned to a commit and cached: answered from the cache alone.
    const before = hub.requests.length;
    assert.equal(
      await resolveModel({ repo: REPO, file: "tiny.gguf", revision: COMMIT }, options(hub, cacheDir)),
      path,
    );
    assert.equal(hub.requests.length, before);
  });
});

Deno.test("hub: unknown repository or revision, and the token sent to the hub", async () => {
  await withHub(async (hub, cacheDir) => {
    addModelRepo(hub);
    await rejectsWith(
      resolveModel({ repo: "org/nope" }, options(hub, cacheDir)),
      /^repository org\/nope not found on http:\/\/127\.0\.0\.1:\d+ \(check the name; private repositories need HF_TOKEN\)$/,
    );
    await rejectsWith(
      resolveModel({ repo: REPO, revision: "v9" }, options(hub, cacheDir)),
      /^org\/Model-GGUF has no revision "v9" on /,
    );
    await resolveModel({ repo: REPO }, options(hub, cacheDir, { token: "hf_secret" }));
    assert.equal(hub.seen("/api/").at(-1)!.authorization, "Bearer hf_secret");
    assert.equal(hub.seen("/org/").at(-1)!.authorization, "Bearer hf_secret");
    await rejectsWith(
      resolveModel({ repo: "../x" } as HfModelRef, options(hub, cacheDir)),
      /not a Hugging Face repository name/,
    );
  });
});
