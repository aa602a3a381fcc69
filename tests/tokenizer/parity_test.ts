/**
 * Live parity with llama.cpp's tokenizer (the pinned build, through src/oracle/llama.ts) on
 * thousands of generated strings (tests/tokenizer/corpus.ts), with special parsing off and on, on:
 * - llama.cpp's qwen35 test vocabulary (151,936 tokens, Qwen2/3 style);
 * - the real Qwen3.5/3.6 vocabulary (248,320 rows, `qwen35-real-vocab.gguf`), with special tokens
 *   spliced into the strings;
 * - the same vocabulary with `tokenizer.ggml.pre = "qwen2"` (combining marks split off words);
 * - the same vocabulary with extra tokens of every type and one broken merge, which exercises
 *   llama.cpp's rules for user-defined vs control tokens, tokens it promotes to control by their
 *   text, overlapping special tokens, empty token texts, byte tokens and merges whose result is
 *   not in the vocabulary.
 * Every token's piece (special rendering on and off) is compared too.
 */
import assert from "node:assert/strict";
import { type GgufFile, GgufValueType } from "../../src/gguf/types.ts";
import { readGgufHeader } from "../../src/gguf/read.ts";
import { type MetadataInput, TypedValue, writeGguf } from "../../src/gguf/write.ts";
import { LlamaReference, setLlamaLog } from "../../src/oracle/llama.ts";
import { loadTokenizer, type Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { fixture } from "../fixtures.ts";
import { corpus, rng } from "./corpus.ts";

const vocab = fixture("ggml-vocab-qwen35.gguf");
if (vocab.skip) console.warn(`tokenizer parity skipped: ${vocab.skip}`);
const realVocab = fixture("qwen35-real-vocab.gguf");
if (realVocab.skip) console.warn(`tokenizer parity on the real vocabulary skipped: ${realVocab.skip}`);

/** Token texts added by the "extras" variant, with their GGUF token types. */
const EXTRA_TOKENS: [string, number][] = [
  ["<think>", 4], // user-defined: matched even with special parsing off
  ["</think>", 4],
  ["<tool_call>", 3], // control
  ["<|fim_pad|>", 1], // normal in the file, promoted to control (and end of generation) by llama.cpp
  ["<|file_sep|>", 4], // user-defined in the file, promoted to control
  ["<|unused_7|>", 3],
  ["<|reserved|>", 5], // unused: never matched, renders as nothing
  ["<|unk|>", 2], // unknown: matched like a control token
  ["<0x41>", 6], // byte token: renders as the byte 0x41
  ["@#", 4], // overlaps "#$$$$" in "@#$$$$": the longer one wins although it starts later
  ["#$$$$", 4],
  ["im_", 4], // inside "<|im_start|>": matched there only when special parsing is off
  ["【特殊】", 4], // non-ASCII user-defined token
  ["", 1], // empty text: llama.cpp names it "[EMPTY_<id>]"
];

function typed(gguf: GgufFile, key: string): MetadataInput {
  const t = gguf.metadataTypes.get(key)!;
  const value = gguf.metadata.get(key)!;
  if (t.type === GgufValueType.ARRAY) return new TypedValue(t.type, value, t.arrayType);
  return new TypedValue(t.type, value);
}

/** Writes a copy of the vocab GGUF with some metadata replaced. */
async function writeVariant(
  path: string,
  source: GgufFile,
  replace: Record<string, MetadataInput>,
): Promise<void> {
  const metadata: [string, MetadataInput][] = [];
  for (const key of source.metadata.keys()) metadata.push([key, replace[key] ?? typed(source, key)]);
  await writeGguf(path, { metadata, tensors: [] });
}

/** Corpus strings with special token texts spliced in at random places. */
function withSpecials(seed: number, count: number, specials: string[]): string[] {
  const r = rng(seed);
  return corpus(seed, count).map((s) => {
    const at = Math.floor(r() * (s.length + 1));
    const a = specials[Math.floor(r() * specials.length)];
    const b = specials[Math.floor(r() * specials.length)];
    return s.slice(0, at) + a + s.slice(at) + (r() < 0.5 ? b : "");
  });
}

function checkTokenize(ours: Tokenizer, ref: LlamaReference, texts: string[], label: string): void {
  let mismatches = 0;
  const examples: string[] = [];
  for (const special of [false, true]) {
    for (const text of texts) {
      const expected = Array.from(ref.tokenize(text, { parseSpecial: special }));
      const got = ours.tokenize(text, { special });
      if (expected.length === got.length && expected.every((id, i) => id === got[i])) continue;
      mismatches++;
      if (examples.length < 5) {
        examples.push(
          `special=${special} ${JSON.stringify(text)}\n  llama.cpp ${expected.join(" ")}\n  deltaq    ${
            got.join(" ")
          }`,
        );
      }
    }
  }
  assert.equal(
    mismatches,
    0,
    `${label}: ${mismatches} of ${2 * texts.length} differ from llama.cpp:\n${examples.join("\n")}`,
  );
}

function checkPieces(ours: Tokenizer, ref: LlamaReference, ids: Iterable<number>, label: string): void {
  for (const id of ids) {
    for (const special of [true, false]) {
      assert.deepEqual(
        ours.tokenToPiece(id, { special }),
        ref.tokenToPiece(id, { special }),
        `${label}: piece of ${id} (special=${special})`,
      );
    }
  }
}

function withReference<T>(path: string, f: (ref: LlamaReference) => T): T {
  const ref = LlamaReference.load(path, { vocabOnly: true });
  try {
    return f(ref);
  } finally {
    ref.dispose();
  }
}

Deno.test({
  name: "tokenizer parity with llama.cpp: qwen35 vocabulary, 3000 generated strings, special off and on",
  ignore: vocab.skip !== undefined,
  fn() {
    setLlamaLog("errors");
    const ours = loadTokenizer(vocab.path!);
    withReference(vocab.path!, (ref) => {
      assert.equal(ours.vocabSize, ref.nVocab);
      checkTokenize(ours, ref, corpus(1, 3000), "qwen35");
      checkPieces(ours, ref, Array.from({ length: ours.vocabSize }, (_, id) => id), "qwen35");
    });
  },
});

Deno.test({
  name: "tokenizer parity with llama.cpp: the real Qwen3.5 vocabulary (248,320 rows), 3000 strings, special off and on",
  ignore: realVocab.skip !== undefined,
  fn() {
    setLlamaLog("errors");
    const ours = loadTokenizer(realVocab.path!);
    withReference(realVocab.path!, (ref) => {
      assert.equal(ours.vocabSize, 248320);
      assert.equal(ref.nVocab, 248320);
      const specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>"];
      checkTokenize(ours, ref, withSpecials(4, 3000, specials), "real qwen35");
      // Every special and padding row, and a spread of ordinary tokens.
      const ids = Array.from({ length: ours.vocabSize }, (_, id) => id).filter((id) => id >= 248000 || id % 61 === 0);
      checkPieces(ours, ref, ids, "real qwen35");
    });
  },
});

Deno.test({
  name: "tokenizer parity with llama.cpp: qwen2 pre-tokenizer and a vocabulary with every token type",
  ignore: vocab.skip !== undefined,
  async fn() {
    setLlamaLog("errors");
    const source = readGgufHeader(vocab.path!);
    const dir = await Deno.makeTempDir({ prefix: "deltaq-tokenizer-" });
    try {
      const qwen2 = `${dir}/qwen2.gguf`;
      await writeVariant(qwen2, source, { "tokenizer.ggml.pre": "qwen2" });
      withReference(qwen2, (ref) => checkTokenize(loadTokenizer(qwen2), ref, corpus(2, 1500), "qwen2"));

      const texts = source.metadata.get("tokenizer.ggml.tokens") as string[];
      const types = source.metadata.get("tokenizer.ggml.token_type") as Int32Array;
      const merges = source.metadata.get("tokenizer.ggml.merges") as string[];
      // A merge whose result is not a token (broken vocabulary): llama.cpp then emits the word's
      // single-byte tokens. "X X" for a word X that BPE leaves as two tokens when doubled.
      const base = loadTokenizer(vocab.path!);
      const doubled = ["the", "and", "ing", "ion", "ent", "for"].find((x) => {
        const ids = base.tokenize(x + x);
        return ids.length === 2 && ids[0] === ids[1] && !texts.includes(x + x);
      });
      assert.ok(doubled, "no word to build a broken merge from");
      for (const [t] of EXTRA_TOKENS) {
        assert.ok(t === "" || !texts.includes(t), `${t} is already in the vocabulary`);
      }
      const extras = `${dir}/extras.gguf`;
      await writeVariant(extras, source, {
        "tokenizer.ggml.tokens": [...texts, ...EXTRA_TOKENS.map(([t]) => t)],
        "tokenizer.ggml.token_type": Int32Array.from([...types, ...EXTRA_TOKENS.map(([, type]) => type)]),
        "tokenizer.ggml.merges": [...merges, `${doubled} ${doubled}`],
      });
      const ours = loadTokenizer(extras);
      withReference(extras, (ref) => {
        assert.equal(ours.vocabSize, ref.nVocab);
        const specials = [
          ...EXTRA_TOKENS.map(([t]) => t).filter((t) => t !== ""),
          "<|im_start|>",
          "<|im_end|>",
          "<|endoftext|>",
          "@#$$$$",
          doubled + doubled,
          ` ${doubled}${doubled}`,
        ];
        const broken = ours.tokenize(doubled + doubled);
        assert.equal(broken.length, 2 * doubled.length, "the broken merge should give single-byte tokens");
        checkTokenize(ours, ref, withSpecials(3, 1500, specials), "extras");
        checkPieces(
          ours,
          ref,
          Array.from({ length: EXTRA_TOKENS.length + 3 }, (_, i) => ours.vocabSize - 1 - i),
          "extras",
        );
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
