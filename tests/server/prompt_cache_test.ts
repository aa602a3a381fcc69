/**
 * The prompt cache's radix tree against a model of it: checkpoints resume at the deepest saved
 * prefix within the limit, KV rows come back exactly (also across node splits), and the budget
 * holds by dropping the least recently used checkpoints.
 */
import assert from "node:assert/strict";
import { type CheckpointSource, PromptCache } from "../../src/server/prompt_cache.ts";

/** Two blocks (think: one layer's K and V) of 3 and 2 bytes per row; row i's bytes encode (i, token). */
const LAYOUT = [3, 2];
const PER_TOKEN = 5;

function source(tokens: number[], recurrentBytes = 16): CheckpointSource {
  return {
    recurrent: () => new Uint8Array(recurrentBytes).fill(tokens.length % 251),
    kvRows: (from, to) => {
      const out: number[] = [];
      for (const width of LAYOUT) {
        for (let i = from; i < to; i++) {
          for (let b = 0; b < width; b++) out.push((i * 7 + tokens[i] * 3 + b + width) % 256);
        }
      }
      return Uint8Array.from(out);
    },
    kvRowLayout: LAYOUT,
  };
}

/** Reassembles rows [0, position) from a hit's KV buffers and compares them with the source's. */
function assertKv(hit: NonNullable<ReturnType<PromptCache["lookup"]>>, tokens: number[]) {
  const want = source(tokens).kvRows(0, hit.position);
  const rows: number[][][] = LAYOUT.map(() => []);
  let at = 0;
  for (const chunk of hit.kv) {
    assert.equal(chunk.from, at, "chunks cover the prefix in order");
    const n = chunk.bytes.length / PER_TOKEN;
    let off = 0;
    LAYOUT.forEach((w, b) => {
      for (let i = 0; i < n; i++) rows[b].push([...chunk.bytes.subarray(off + i * w, off + (i + 1) * w)]);
      off += n * w;
    });
    at += n;
  }
  assert.equal(at, hit.position);
  assert.deepEqual(Uint8Array.from(rows.flat(2)), want);
}

Deno.test("prompt cache: resumes at the deepest checkpoint on the prompt, within the limit", () => {
  const cache = new PromptCache(1 << 20);
  const base = Array.from({ length: 40 }, (_, i) => i + 1);
  const a = [...base, 100, 101, 102, 103, 104, 105];
  const b = [...base.slice(0, 30), 200, 201, 202];
  cache.save(a.slice(0, 20), source(a));
  cache.save(a.slice(0, 44), source(a));
  cache.save(b, source(b)); // splits the [20, 44) edge at 30
  assert.equal(cache.entries, 3);

  let hit = cache.lookup([...a, 7, 7], 100)!;
  assert.equal(hit.position, 44);
  assertKv(hit, a);
  hit = cache.lookup(a, 43)!; // the limit excludes 44
  assert.equal(hit.position, 20);
  assertKv(hit, a);
  hit = cache.lookup([...b, 5], 100)!;
  assert.equal(hit.position, 33);
  assertKv(hit, b);
  assert.equal(cache.lookup([...base.slice(0, 25), 999, 1000], 100)!.position, 20);
  assert.equal(cache.lookup([999, 1, 2], 100), undefined);
  assert.equal(cache.hits, 4);
  assert.equal(cache.misses, 1);
  assert.ok(cache.has(a.slice(0, 20)) && !cache.has(a.slice(0, 21)));
  // bytes: one copy of each distinct KV row plus three recurrent states
  assert.equal(cache.bytes, (44 + 3) * PER_TOKEN + 3 * 16);
});

Deno.test("prompt cache: the budget holds, least recently used checkpoints go first", () => {
  // room for about three checkpoints of 100 bytes plus their rows
  const cache = new PromptCache(3 * 100 + 40 * PER_TOKEN);
  const chats = [0, 1, 2, 3].map((c) => Array.from({ length: 10 }, (_, i) => c * 1000 + i));
  for (const t of chats.slice(0, 3)) assert.ok(cache.save(t, source(t, 100)));
  assert.equal(cache.entries, 3);
  assert.ok(cache.lookup([...chats[0], 5], 100)); // chat 0 is now the most recently used
  assert.ok(cache.save(chats[3], source(chats[3], 100)));
  assert.ok(cache.bytes <= cache.capacityBytes, `${cache.bytes} > ${cache.capacityBytes}`);
  assert.equal(cache.lookup([...chats[1], 5], 100), undefined, "chat 1 was the least recently used");
  assert.ok(cache.lookup([...chats[0], 5], 100));
  assert.ok(cache.lookup([...chats[3], 5], 100));
  // a checkpoint larger than the whole budget is refused and leaves the cache as it was
  const before = cache.bytes;
  assert.equal(cache.save([9, 9, 9], source([9, 9, 9], 10_000)), false);
  assert.equal(cache.bytes, before);
  cache.clear();
  assert.equal(cache.bytes, 0);
  assert.equal(cache.entries, 0);
});
