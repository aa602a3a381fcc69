/**
 * llama.cpp's own tokenizer test vectors for the qwen35 pre-tokenizer, run through the oracle the
 * way llama.cpp's tests/test-tokenizer-0.cpp runs them: vocab-only load, texts separated by
 * "\n__ggml_vocab_test__\n", one line of ids per text, add_special = false, parse_special = false.
 */
import assert from "node:assert/strict";
import { LlamaReference } from "../../src/oracle/llama.ts";
import { fixture, readVectors } from "../fixtures.ts";

const vocab = fixture("ggml-vocab-qwen35.gguf");
const inp = fixture("ggml-vocab-qwen35.gguf.inp");
const out = fixture("ggml-vocab-qwen35.gguf.out");
const skip = vocab.skip ?? inp.skip ?? out.skip;
if (skip) console.warn(`tokenizer_test skipped: ${skip}`);


Deno.test({
  name: "oracle tokenizes llama.cpp's qwen35 test vectors exactly",
  ignore: skip !== undefined,
  fn() {
    const vectors = readVectors(inp.path!, out.path!);
    assert.ok(vectors.length >= 40, `only ${vectors.length} vectors parsed`);
    const ref = LlamaReference.load(vocab.path!, { vocabOnly: true });
    try {
      assert.equal(ref.nVocab, 151936);
      for (const { text, ids } of vectors) {
        const got = Array.from(ref.tokenize(text, { addSpecial: false, parseSpecial: false }));
        assert.deepEqual(got, ids, `tokenize(${JSON.stringify(text)})`);
      }
    } finally {
      ref.dispose();
    }
  },
});

Deno.test({
  name: "oracle: special tokens are matched only with parseSpecial, and detokenize inverts tokenize",
  ignore: vocab.skip !== undefined,
  fn() {
    const ref = LlamaReference.load(vocab.path!, { vocabOnly: true });
    try {
      const text = "<|im_start|>user\nHello, world!<|im_end|>";
      const special = Array.from(ref.tokenize(text, { parseSpecial: true }));
      const plain = Array.from(ref.tokenize(text, { parseSpecial: false }));
      assert.equal(special[0], 151644); // <|im_start|> in this 151,936-token vocab
      assert.ok(!plain.includes(151644));
      assert.ok(plain.length > special.length);
      assert.equal(ref.detokenize(special), text);
      assert.equal(ref.detokenize(plain), text);
      const pieces = special.map((t) => new TextDecoder().decode(ref.tokenToPiece(t))).join("");
      assert.equal(pieces, text);
      // Qwen adds no BOS even when special tokens may be added.
      assert.deepEqual(Array.from(ref.tokenize("hi", { addSpecial: true })), Array.from(ref.tokenize("hi")));
    } finally {
      ref.dispose();
    }
  },
});
