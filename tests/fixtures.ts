/**
 * Locates the shared test fixtures (`../shared/fixtures/` next to the checkout: the real qwen35
 * vocab GGUF with llama.cpp's tokenizer vectors, and the Qwen3.5 chat template). Tests that need
 * one use `fixture(name)` and skip with the returned reason when it is absent.
 */
import assert from "node:assert/strict";

/** The shared fixtures directory, as a URL ending in a slash. */
export const SHARED_FIXTURES = new URL("../../shared/fixtures/", import.meta.url);

/** `{ path }` when the fixture exists, else `{ skip }` with a reason a test can print. */
export function fixture(
  name: string,
): { path: string; skip?: undefined } | { path?: undefined; skip: string } {
  const path = decodeURIComponent(new URL(name, SHARED_FIXTURES).pathname);
  try {
    if (Deno.statSync(path).isFile) return { path };
  } catch {
    // reported below
  }
  return { skip: `fixture ${name} not found at ${path} (expected the shared fixtures next to the checkout)` };
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
