/** `deno task synth` as a user runs it: help, clear one-line errors, shape overrides honoured. */
import assert from "node:assert/strict";
import { readGgufHeader } from "../../src/gguf/read.ts";

const dir = Deno.makeTempDirSync({ prefix: "deltaq-synth-cli-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const tool = new URL("../../tools/synth.ts", import.meta.url).pathname;

async function synth(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", tool, ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("--help lists the options and presets", async () => {
  const r = await synth("--help");
  assert.equal(r.code, 0);
  for (const word of ["--out", "--preset", "--vocab", "--quantize", "tiny", "tiny-b", "qwen35-4b"]) {
    assert.ok(r.stdout.includes(word), word);
  }
});

Deno.test("mistakes end with one clear line and exit code 1", async () => {
  const cases: [string[], RegExp][] = [
    [["--preset", "tiny"], /missing --out FILE/],
    [["--out", `${dir}/x.gguf`, "--bogus"], /Unknown option '--bogus'/],
    [["--out", `${dir}/x.gguf`, "--preset", "huge"], /unknown preset huge/],
    [["--out", `${dir}/x.gguf`, "--type", "q4"], /--type must be f32, f16 or bf16/],
    [["--out", `${dir}/x.gguf`, "--layers", "two"], /--layers must be a number/],
    [["--out", `${dir}/x.gguf`, "--heads", "3"], /3 heads cannot share 2 KV heads/],
    [["--out", `${dir}/x.gguf`, "--vocab", `${dir}/missing.gguf`], /missing\.gguf: no such file/],
    [["--out", `${dir}/no/such/dir/x.gguf`], /cannot write .*x\.gguf/],
  ];
  for (const [args, message] of cases) {
    const r = await synth(...args);
    assert.equal(r.code, 1, args.join(" "));
    assert.match(r.stderr, message, args.join(" "));
    assert.ok(!/\n\s+at /.test(r.stderr), `no stack trace for ${args.join(" ")}:\n${r.stderr}`);
  }
  assert.deepEqual([...Deno.readDirSync(dir)], [], "failed runs leave no files");
});

Deno.test("shape overrides reach the file", async () => {
  const path = `${dir}/custom.gguf`;
  const r = await synth(
    "--out",
    path,
    "--preset",
    "tiny",
    "--type",
    "f16",
    "--layers",
    "4",
    "--interval",
    "2",
    "--untied",
    "--vocab-size",
    "300",
    "--seed",
    "9",
    "--quiet",
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, "");
  const g = readGgufHeader(path);
  assert.equal(g.metadata.get("qwen35.block_count"), 4);
  assert.equal(g.metadata.get("qwen35.full_attention_interval"), 2);
  assert.ok(
    g.tensors.some((t) => t.name === "blk.1.attn_q.weight") &&
      g.tensors.some((t) => t.name === "blk.2.attn_qkv.weight"),
  );
  const out = g.tensors.find((t) => t.name === "output.weight");
  assert.deepEqual(out?.shape, [256, 300]);
  assert.equal(out?.type, 1);
});
