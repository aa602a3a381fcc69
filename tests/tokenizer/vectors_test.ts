/**
 * llama.cpp's own tokenizer vectors for the qwen35 pre-tokenizer, read the way
 * llama.cpp's tests/test-tokenizer-0.cpp reads them (texts separated by "\n__ggml_vocab_test__\n",
 * one line of space-separated ids per text, add_special and parse_special off).
 */
import assert from "node:assert/strict";
import { loadTokenizer } from "../../src/tokenizer/tokenizer.ts";
import { fixture, readVectors } from "../fixtures.ts";

const vocab = fixture("ggml-vocab-qwen35.gguf");
const inp = fixture("ggml-vocab-qwen35.gguf.inp");
const out = fixture("ggml-vocab-qwen35.gguf.out");
const skip = vocab.skip ?? inp.skip ?? out.skip;
if (skip) console.warn(`tokenizer vectors skipped: ${skip}`);


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
