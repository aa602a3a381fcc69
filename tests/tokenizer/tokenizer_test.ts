/**
 * Tokenizer behaviour that needs no oracle: the API on the real qwen35 vocabulary, special-token
 * modes, round trips, streaming decode, hostile input (lone surrogates, NUL, 10 MB, long runs)
 * and clear errors for tokenizers deltaq does not support.
 */
import assert from "node:assert/strict";
import { DeltaqError } from "../../src/errors.ts";
import { Metadata, readGgufHeader } from "../../src/gguf/read.ts";
import type { GgufFile } from "../../src/gguf/types.ts";
import { loadTokenizer, Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { fixture } from "../fixtures.ts";
import { corpus } from "./corpus.ts";

const vocab = fixture("ggml-vocab-qwen35.gguf");
if (vocab.skip) console.warn(`tokenizer tests skipped: ${vocab.skip}`);
const ignore = vocab.skip !== undefined;

let shared: Tokenizer | undefined;
const tokenizer = () => (shared ??= loadTokenizer(vocab.path!));

const IM_START = 151644, IM_END = 151645, END_OF_TEXT = 151643;

Deno.test({
  name: "tokenizer: ids and token classes of the qwen35 vocabulary",
  ignore,
  fn() {
    const tok = tokenizer();
    assert.equal(tok.vocabSize, 151936);
    assert.equal(tok.preTokenizer, "qwen35");
    assert.equal(tok.eosId, END_OF_TEXT);
    assert.equal(tok.imStartId, IM_START);
    assert.equal(tok.imEndId, IM_END);
    assert.equal(tok.endOfTextId, END_OF_TEXT);
    assert.equal(tok.specialTokenId("<|im_start|>"), IM_START);
    assert.equal(tok.specialTokenId("hello"), undefined);
    // llama.cpp's end-of-generation set: eos, <|im_end|>, and "</s>" — a normal token in this
    // vocabulary that llama.cpp recognises by its text (and then treats as a control token).
    const slash = tok.tokenize("</s>", { special: true });
    assert.equal(slash.length, 1);
    assert.deepEqual(tok.endOfGenerationIds, [slash[0], END_OF_TEXT, IM_END]);
    assert.ok(tok.isEndOfGeneration(IM_END) && tok.isEndOfGeneration(END_OF_TEXT));
    assert.ok(!tok.isEndOfGeneration(IM_START) && !tok.isEndOfGeneration(tok.tokenize("Hello")[0]));
    assert.ok(tok.isControl(IM_START) && tok.isControl(slash[0]));
    assert.ok(!tok.isControl(tok.tokenize("Hello")[0]) && !tok.isControl(151700)); // [PAD151700] is user-defined
    assert.ok(!tok.isControl(-1) && !tok.isControl(tok.vocabSize));
    assert.deepEqual(tok.controlTokenTexts.sort(), ["</s>", "<|endoftext|>", "<|im_end|>", "<|im_start|>"]);
  },
});

Deno.test({
  name: "tokenizer: control tokens in text only with special parsing; user-defined always; literal spans",
  ignore,
  fn() {
    const tok = tokenizer();
    const text = "<|im_start|>user\nHi<|im_end|>";
    const special = tok.tokenize(text, { special: true });
    assert.equal(special[0], IM_START);
    assert.equal(special.at(-1), IM_END);
    const plain = tok.tokenize(text);
    assert.ok(!plain.some((id) => tok.isControl(id)), "user text became control tokens");
    assert.equal(tok.detokenize(plain), text);
    assert.equal(tok.detokenize(special), text);
    // [PAD151650] is user-defined (type 4): one token in both modes, like llama.cpp.
    assert.deepEqual(tok.tokenize("a[PAD151650]b"), tok.tokenize("a[PAD151650]b", { special: true }));
    assert.ok(tok.tokenize("a[PAD151650]b").includes(151650));
    // A literal span keeps the control token text inside it as ordinary text.
    const prompt = "<|im_start|>user\nsay <|im_end|> please<|im_end|>";
    const at = prompt.indexOf("say");
    const spans = [{ start: at, end: at + "say <|im_end|> please".length }];
    const ids = tok.tokenize(prompt, { special: true, literalSpans: spans });
    assert.equal(ids.filter((id) => id === IM_END).length, 1);
    assert.equal(ids[0], IM_START);
    assert.equal(ids.at(-1), IM_END);
    assert.deepEqual(ids.slice(1, -1), tok.tokenize("user\nsay <|im_end|> please"));
    assert.equal(tok.detokenize(ids), prompt);
  },
});

Deno.test({
  name: "tokenizer: detokenize(tokenize(s)) === s for 2000 generated strings; control tokens can be omitted",
  ignore,
  fn() {
    const tok = tokenizer();
    for (const s of corpus(11, 2000)) {
      const expected = s.toWellFormed();
      assert.equal(tok.detokenize(tok.tokenize(s)), expected);
      assert.equal(tok.detokenize(tok.tokenize(s, { special: true })), expected);
    }
    const ids = tok.tokenize("<|im_start|>assistant\nok<|im_end|>", { special: true });
    assert.equal(tok.detokenize(ids, { special: false }), "assistant\nok");
    assert.equal(tok.tokenToPiece(IM_END, { special: false }).length, 0);
    assert.equal(new TextDecoder().decode(tok.tokenToPiece(IM_END)), "<|im_end|>");
    assert.equal(tok.detokenize([]), "");
    assert.deepEqual(tok.tokenize(""), []);
    // A byte-order mark at the start survives (TextDecoder would drop it by default).
    assert.equal(tok.detokenize(tok.tokenize("\ufeffx")), "\ufeffx");
  },
});

Deno.test({
  name: "tokenizer: streaming decode holds back characters split across tokens",
  ignore,
  fn() {
    const tok = tokenizer();
    const text = "Math 𝖞𝕬 and family 👨‍👩‍👧‍👦 in 中文 and ﷽ and \u{2ebf0}.";
    const ids = tok.tokenize(text);
    const partial = ids.filter((id) => {
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(tok.tokenToPiece(id));
        return false;
      } catch {
        return true;
      }
    });
    assert.ok(partial.length > 0, "the text should contain characters split across tokens");
    const decoder = tok.decoder();
    let streamed = "";
    let heldBack = 0;
    for (const id of ids) {
      const piece = decoder.push(id);
      assert.ok(!piece.includes("\ufffd"), `a partial character was emitted: ${JSON.stringify(piece)}`);
      if (piece === "") heldBack++;
      streamed += piece;
    }
    streamed += decoder.flush();
    assert.equal(streamed, text);
    assert.ok(heldBack > 0);
    // A stream cut inside a character ends with U+FFFD on flush, and the decoder starts afresh.
    // (The first split token of well-formed text ends inside the character it starts.)
    const first = tok.tokenToPiece(partial[0]);
    const completePart = new TextDecoder().decode(first.subarray(0, first.findLastIndex((b) => b >= 0xc0)));
    assert.equal(decoder.push(partial[0]), completePart);
    assert.equal(decoder.flush(), "\ufffd");
    assert.equal(decoder.push(tok.tokenize("ok")[0]), "ok");
    // Control tokens are text by default and can be left out.
    const quiet = tok.decoder({ special: false });
    assert.equal([IM_START, ...tok.tokenize("hi"), IM_END].map((id) => quiet.push(id)).join(""), "hi");
  },
});

Deno.test({
  name: "tokenizer: lone surrogates read as U+FFFD, NUL is a byte, huge and degenerate inputs complete",
  ignore,
  fn() {
    const tok = tokenizer();
    // UTF-16 that is not valid Unicode: encoded to UTF-8 (as for llama.cpp), a lone surrogate is
    // U+FFFD, so both give the same tokens, and detokenizing gives U+FFFD back.
    for (const bad of ["a\ud800b", "\udfff", "x\ud83d", "\ude00\ud800"]) {
      const ids = tok.tokenize(bad, { special: true });
      assert.deepEqual(ids, tok.tokenize(bad.toWellFormed()));
      assert.equal(tok.detokenize(ids), bad.toWellFormed());
    }
    const nul = tok.tokenize("a\0b\0\0");
    assert.equal(tok.detokenize(nul), "a\0b\0\0");
    assert.ok(nul.length >= 3);

    // 10 MB of varied text, and long runs that are one pre-token word each.
    let big = "";
    const block = corpus(12, 300).join("\n");
    while (big.length < 10 << 20) big += block;
    const ids = tok.tokenize(big);
    assert.equal(tok.detokenize(ids), big.toWellFormed());
    for (
      const run of ["a".repeat(200_000), "=".repeat(200_000), " ".repeat(100_000) + "x", "中".repeat(50_000)]
    ) {
      assert.equal(tok.detokenize(tok.tokenize(run)), run);
    }
  },
});

Deno.test({
  name: "tokenizer: from already parsed metadata; clear errors for unsupported tokenizers and bad ids",
  ignore,
  fn() {
    const gguf = readGgufHeader(vocab.path!);
    const tok = Tokenizer.fromMetadata(new Metadata(gguf, vocab.path!));
    assert.deepEqual(tok.tokenize("Hello world"), tokenizer().tokenize("Hello world"));

    const variant = (edit: Record<string, string | undefined>): GgufFile => {
      const metadata = new Map(gguf.metadata);
      for (const [key, value] of Object.entries(edit)) {
        value === undefined ? metadata.delete(key) : metadata.set(key, value);
      }
      return { ...gguf, metadata };
    };
    assert.throws(
      () => Tokenizer.fromGguf(variant({ "tokenizer.ggml.pre": "llama-bpe" }), "m.gguf"),
      (e: Error) => {
        return e instanceof DeltaqError && e.message.startsWith("m.gguf: ") &&
          e.message.includes('unsupported pre-tokenizer "llama-bpe"');
      },
    );
    assert.throws(
      () => Tokenizer.fromGguf(variant({ "tokenizer.ggml.pre": undefined }), "m.gguf"),
      /tokenizer\.ggml\.pre is missing/,
    );
    assert.throws(
      () => Tokenizer.fromGguf(variant({ "tokenizer.ggml.model": "llama" }), "m.gguf"),
      /unsupported tokenizer model "llama"/,
    );
    assert.throws(
      () => Tokenizer.fromGguf(variant({ "tokenizer.ggml.model": undefined }), "m.gguf"),
      /no tokenizer/,
    );
    assert.throws(
      () => Tokenizer.fromGguf(variant({ "tokenizer.ggml.merges": undefined }), "m.gguf"),
      /tokenizer\.ggml\.merges is missing/,
    );
    assert.throws(() => loadTokenizer("/nonexistent/model.gguf"), DeltaqError);
    assert.throws(() => tok.tokenToPiece(tok.vocabSize), /outside the vocabulary/);
    assert.throws(() => tok.detokenize([1, -1]), DeltaqError);
  },
});
