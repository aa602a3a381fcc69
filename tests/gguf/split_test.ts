/**
 * Split models (`name-00001-of-00003.gguf` …, see src/gguf/split.ts): parts written the way
 * llama-gguf-split writes them (tools/gguf-split: all metadata in the first part, `split.no`,
 * `split.count` and `split.tensors.count` in every part, tensors in file order) load from the
 * first part as one model, in deltaq with exactly the logits of the unsplit file and in llama.cpp
 * too (which checks that these are the files its own tool makes); `info` lists every part; and
 * the ways a split model can be incomplete or inconsistent are errors naming the file.
 */
import assert from "node:assert/strict";
import { loadModel } from "../../mod.ts";
import { formatInfo } from "../../src/cli/info.ts";
import { DeltaqError } from "../../src/errors.ts";
import { readModelHeader } from "../../src/gguf/split.ts";
import { GgufValueType } from "../../src/gguf/types.ts";
import { LlamaReference } from "../../src/oracle/llama.ts";
import { testModel } from "../models.ts";
import { encodeGguf, type GgufParts, partsOf, type RawKv, scanGguf, value } from "../robustness/gguf_edit.ts";

const dir = Deno.makeTempDirSync({ prefix: "deltaq-split-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

const u16 = (key: string, v: number): RawKv => ({ key, type: GgufValueType.UINT16, value: Uint8Array.of(v & 255, v >> 8) });
const i32 = (key: string, v: number): RawKv => ({ key, ...kv(value.i32(v)) });
const kv = ([type, bytes]: [number, Uint8Array]) => ({ type, value: bytes });

/**
 * The parts llama-gguf-split makes of `bytes` with `perPart` tensors each (`--split-max-tensors`);
 * `emptyFirst` is its `--no-tensor-first-split`.
 */
function splitParts(bytes: Uint8Array, perPart: number, emptyFirst = false): Uint8Array[] {
  const map = scanGguf(bytes);
  const whole = partsOf(map);
  const groups: number[][] = emptyFirst ? [[]] : [];
  map.tensors.forEach((_, i) => {
    if (i % perPart === 0) groups.push([]);
    groups.at(-1)!.push(i);
  });
  const align = (n: number) => Math.ceil(n / map.alignment) * map.alignment;
  return groups.map((members, no) => {
    const splitKeys = [u16("split.no", no), u16("split.count", groups.length), i32("split.tensors.count", map.tensors.length)];
    const chunks: Uint8Array[] = [];
    let offset = 0;
    const tensors = members.map((i) => {
      const t = map.tensors[i];
      const next = map.tensors[i + 1];
      const start = Number(t.offset);
      const end = next ? Number(next.offset) : bytes.length - map.dataOffset;
      const data = whole.data.subarray(start, end);
      chunks.push(data, new Uint8Array(align(data.length) - data.length));
      const placed = { ...t, offset: BigInt(offset) };
      offset += align(data.length);
      return placed;
    });
    const data = new Uint8Array(offset);
    let at = 0;
    for (const c of chunks) data.set(c, (at += c.length) - c.length);
    const parts: GgufParts = { ...whole, kvs: no === 0 ? [...whole.kvs, ...splitKeys] : splitKeys, tensors, data };
    return encodeGguf(parts);
  });
}

function writeParts(prefix: string, parts: Uint8Array[]): string {
  const five = (n: number) => String(n).padStart(5, "0");
  parts.forEach((p, i) => Deno.writeFileSync(`${prefix}-${five(i + 1)}-of-${five(parts.length)}.gguf`, p));
  return `${prefix}-00001-of-${five(parts.length)}.gguf`;
}

const source = await testModel({ preset: "tiny-b", quant: "Q4_0" });
const sourceBytes = Deno.readFileSync(source);
const TOKENS = Array.from({ length: 12 }, (_, i) => (i * 83 + 5) % 1000);

async function logits(path: string): Promise<Float32Array> {
  const model = await loadModel(path, { threads: 1, contextLength: 64 });
  try {
    return model.createSession().eval(TOKENS, { allLogits: true });
  } finally {
    model.dispose();
  }
}

function llamaLogits(path: string): Float32Array {
  const ref = LlamaReference.load(path, { threads: 1, contextLength: 64 });
  try {
    return ref.eval(TOKENS, { allLogits: true });
  } finally {
    ref.dispose();
  }
}

Deno.test("split model: loads from the first part as the unsplit file does, in deltaq and llama.cpp; info lists the parts", async () => {
  const want = await logits(source);
  const wantLlama = llamaLogits(source);
  const nTensors = scanGguf(sourceBytes).tensors.length;
  for (const [name, perPart, emptyFirst] of [["three", Math.ceil(nTensors / 3), false], ["empty-first", 40, true]] as const) {
    const first = writeParts(`${dir}/${name}`, splitParts(sourceBytes, perPart, emptyFirst));
    assert.deepEqual(await logits(first), want, `${name}: deltaq`);
    assert.deepEqual(llamaLogits(first), wantLlama, `${name}: llama.cpp loads the same parts`);
    const header = readModelHeader(first);
    assert.equal(header.tensors.length, nTensors);
    const info = formatInfo(first, header, {}, header.parts);
    assert.match(info, new RegExp(`split into ${header.parts.length} files: .*-00001-of-.*-0000${header.parts.length}-of-`));
    assert.match(info, /layer schedule/);
  }
});

function throwsDeltaq(f: () => unknown, pattern: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof DeltaqError, String(e));
    assert.match(e.message, pattern);
    return true;
  });
}

async function rejectsDeltaq(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof DeltaqError, String(e));
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("split model: a later part, a missing part, a renamed first part and inconsistent parts are errors", async () => {
  const parts = splitParts(sourceBytes, 30);
  const first = writeParts(`${dir}/bad`, parts);
  const second = first.replace("-00001-of-", "-00002-of-");
  await rejectsDeltaq(loadModel(second), /this is part 2 of a model split into \d files; load the first part \(.*bad-00001-of-0000\d\.gguf\)/);

  Deno.renameSync(first, `${dir}/renamed.gguf`);
  await rejectsDeltaq(loadModel(`${dir}/renamed.gguf`), /renamed\.gguf: the first part of a model split into \d files, but its name does not end in -00001-of-0000\d\.gguf/);
  Deno.renameSync(`${dir}/renamed.gguf`, first);

  const last = first.replace("-00001-of-", `-0000${parts.length}-of-`);
  Deno.removeSync(last);
  await rejectsDeltaq(loadModel(first), /-0000\d-of-0000\d\.gguf: no such file/);
  throwsDeltaq(() => readModelHeader(first), /-0000\d-of-0000\d\.gguf: no such file/);

  // The last part's file holds the second part.
  Deno.writeFileSync(last, parts[1]);
  await rejectsDeltaq(loadModel(first), /says it is part 2 of \d, expected part \d of \d/);

  // A part that repeats the second's tensors (renumbered as the last).
  const repeated = scanGguf(parts[1]);
  const kvs = partsOf(repeated).kvs.map((k) => k.key === "split.no" ? u16("split.no", parts.length - 1) : k);
  Deno.writeFileSync(last, encodeGguf({ ...partsOf(repeated), kvs }));
  await rejectsDeltaq(loadModel(first), /tensor \S+ is also in .*-00002-of-/);
});
