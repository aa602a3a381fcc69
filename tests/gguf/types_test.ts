/**
 * The GGML type table: a file holding a tensor of every type id llama.cpp defines is read and
 * listed by `info`; removed ids are named in the error; and the table's `computable` flags agree
 * with what the kernel library accepts at registration (the two lists must change together).
 */
import assert from "node:assert/strict";
import { formatInfo } from "../../src/cli/info.ts";
import { DeltaqError } from "../../src/errors.ts";
import { readGgufHeader } from "../../src/gguf/read.ts";
import {
  COMPUTABLE_TYPES,
  GGML_TYPES,
  ggmlTypeName,
  REMOVED_GGML_TYPES,
  tensorBytes,
} from "../../src/gguf/types.ts";
import { writeGguf } from "../../src/gguf/write.ts";
import { allocate, registerWeight } from "../../src/native/kernels.ts";

const dir = Deno.makeTempDirSync({ prefix: "deltaq-types-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

Deno.test("info lists a file with a tensor of every GGML type id", async () => {
  const ids = Object.keys(GGML_TYPES).map(Number);
  const path = `${dir}/every-type.gguf`;
  await writeGguf(path, {
    metadata: [["general.architecture", "qwen35"]],
    tensors: ids.map((id) => {
      const shape = [GGML_TYPES[id].blockValues * 2, 3];
      return { name: `t.${id}`, shape, type: id, data: () => [new Uint8Array(tensorBytes(id, shape)!)] };
    }),
  });
  const gguf = readGgufHeader(path);
  assert.deepEqual(gguf.tensors.map((t) => t.type), ids);
  const text = formatInfo(path, gguf);
  for (const id of ids) {
    const t = GGML_TYPES[id];
    assert.match(
      text,
      new RegExp(`t\\.${id}\\s+${t.name}\\s+\\[${2 * t.blockValues}, 3\\]`),
      `${t.name} listed`,
    );
  }
  assert.match(text, /not runnable by deltaq/);
});

Deno.test("a removed type id is named in the error", async () => {
  const path = `${dir}/removed.gguf`;
  const bytes = new Uint8Array(18 * 2);
  await writeGguf(path, {
    metadata: [["general.architecture", "qwen35"]],
    tensors: [{ name: "w", shape: [32, 2], type: 2, data: () => [bytes] }],
  });
  // Patch the tensor's type (Q4_0, 2) to Q4_0_8_8 (33): the u32 after the last dimension.
  const file = Deno.readFileSync(path);
  const view = new DataView(file.buffer);
  const at = file.findIndex((_, i) =>
    i > 24 && view.getUint32(i, true) === 2 && view.getBigUint64(i - 8, true) === 2n
  );
  view.setUint32(at, 33, true);
  Deno.writeFileSync(path, file);
  assert.throws(() => readGgufHeader(path), (e: unknown) => {
    assert.ok(e instanceof DeltaqError);
    assert.match(
      e.message,
      /tensor w has unknown type id 33 \(Q4_0_8_8, which llama\.cpp has removed from GGUF\)/,
    );
    return true;
  });
  assert.equal(ggmlTypeName(33), REMOVED_GGML_TYPES[33]);
});

Deno.test("the kernels register exactly the computable types", () => {
  const region = allocate(1 << 16);
  try {
    for (let id = 0; id < 48; id++) {
      const t = GGML_TYPES[id];
      const ne0 = t ? t.blockValues * 2 : 256;
      let ok = true;
      try {
        registerWeight(region, 0, id, ne0, 4, `type ${id}`);
      } catch (e) {
        assert.ok(e instanceof DeltaqError);
        ok = false;
      }
      assert.equal(
        ok,
        COMPUTABLE_TYPES.has(id),
        `${ggmlTypeName(id)}: kernels ${ok ? "accept" : "refuse"} it`,
      );
    }
  } finally {
    region.free();
  }
});
