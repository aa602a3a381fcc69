/**
 * llama.cpp's own tokenizer vectors for the qwen35 pre-tokenizer, read the way
 * llama.cpp's tests/test-tokenizer-0.cpp reads them (texts separated by "\n__ggml_vocab_test__\n",
 * one line of space-separated ids per text, add_special and parse_special off).
 */
import assert from "node:assert/strict";
import { loadTokenizer } from "../../src/tokenizer/tokenizer.ts";
import { fixture } from "../fixtures.ts";

const vocab = fixture("ggml-vocab-qwen35.gguf");
const inp = fixture("ggml-vocab-qwen35.gguf.inp");
const out = fixture("ggml-vocab-qwen35.gguf.out");
const skip = vocab.skip ?? inp.skip ?? out.skip;
if (skip) console.warn(`tokenizer vectors skipped: ${skip}`);

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

Deno.test({
  name: "tokenizer: llama.cpp's qwen35 vectors tokenize exactly and detokenize back",
  ignore: skip !== undefined,
  fn() {
    const tok = loadTokenizer(vocab.path!);
    const vectors = readVectors(inp.path!, out.path!);
    assert.ok(vectors.length >= 40, `only ${vectors.length} vectors parsed`);
    for (const { text, ids } of vectors) {
      assert.deepEqual(tok.tokenize(text), ids, `tokenize(${JSON.stringify(text)})`);
      assert.equal(tok.detokenize(ids), text, `detokenize of ${JSON.stringify(text)}`);
    }
  },
});
