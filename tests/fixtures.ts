/**
 * Test fixtures: the qwen35 vocabulary GGUF from llama.cpp's tokenizer tests with its test
 * vectors (`.inp`/`.out`) and the real Qwen3.5 vocabulary, kept in `tests/fixtures/` so a clean
 * clone runs every tokenizer test;
 * the shared fixtures next to the checkout (`../shared/fixtures/`) are used for anything not
 * copied here. A test that needs a missing one skips with the reason `fixture(name)` gives.
 */
import assert from "node:assert/strict";
import { isFile } from "../src/util/fs.ts";

const LOCAL_FIXTURES = new URL("./fixtures/", import.meta.url);
/** The shared fixtures directory, as a URL ending in a slash. */
export const SHARED_FIXTURES = new URL("../../shared/fixtures/", import.meta.url);

/** `{ path }` when the fixture exists, else `{ skip }` with a reason a test can print. */
export function fixture(
  name: string,
): { path: string; skip?: undefined } | { path?: undefined; skip: string } {
  for (const dir of [LOCAL_FIXTURES, SHARED_FIXTURES]) {
    const path = decodeURIComponent(new URL(name, dir).pathname);
    if (isFile(path)) return { path };
  }
  return { skip: `fixture ${name} is neither in tests/fixtures/ nor in ../shared/fixtures/` };
}

/** llama.cpp's tokenizer test vectors: texts and expected ids, split as test-tokenizer-0.cpp splits them. */
export function readVectors(inpPath: string, outPath: string): { text: string; ids: number[] }[] {
  const raw = Deno.readTextFileSync(inpPath);
  const sep = "\n__ggml_vocab_test__\n";
  const texts: string[] = [];
  for (let pos = 0; pos < raw.length;) {
    const next = raw.indexOf(sep, pos);
    if (next < 0) {
      texts.push(raw.slice(pos));
      break;
    }
    texts.push(raw.slice(pos, next));
    pos = next + sep.length;
  }
  const lines = Deno.readTextFileSync(outPath).split("\n");
  if (lines.at(-1) === "") lines.pop(); // std::getline yields no empty line after the final "\n"
  assert.equal(texts.length, lines.length, "the .inp and .out files hold different numbers of tests");
  return texts.map((text, i) => {
    const line = lines[i].trim();
    return { text, ids: line === "" ? [] : line.split(" ").map(Number) };
  });
}
