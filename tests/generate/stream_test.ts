// Streaming text utilities: stop strings, the thinking splitter, and incremental UTF-8 decoding
// of token pieces (the tokenizer's StreamDecoder), each fed the same text in many different cuts.
import assert from "node:assert/strict";
import {
  promptOpensThinking,
  type SplitText,
  StopStringFilter,
  ThinkingSplitter,
} from "../../src/generate/stream.ts";
import { DeltaqError } from "../../src/errors.ts";
import { loadTokenizer } from "../../src/tokenizer/tokenizer.ts";
import { fixture } from "../fixtures.ts";

/** Deterministic cuts of `text`: every single-character cut, then random ones. */
function* cuts(text: string, seed = 1): Generator<string[]> {
  yield [text];
  yield [...text];
  let state = seed;
  const rand = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let n = 0; n < 30; n++) {
    const pieces: string[] = [];
    for (let i = 0; i < text.length;) {
      const len = 1 + Math.floor(rand() * 6);
      pieces.push(text.slice(i, i + len));
      i += len;
    }
    yield pieces;
  }
}

function runStops(stops: string[], pieces: string[]): { text: string; stop?: string } {
  const f = new StopStringFilter(stops);
  let text = "";
  for (const p of pieces) {
    const r = f.push(p);
    text += r.text;
    if (r.stop !== undefined) return { text, stop: r.stop };
  }
  return { text: text + f.flush() };
}

Deno.test("stop strings: text is emitted at once except what could start a stop string", () => {
  const f = new StopStringFilter(["</s>", "\nUser:"]);
  assert.deepEqual(f.push("Hello"), { text: "Hello" });
  assert.deepEqual(f.push(" wor<"), { text: " wor" });
  assert.deepEqual(f.push("b>"), { text: "<b>" }); // "<b" is not the start of "</s>"
  assert.deepEqual(f.push("\nUs"), { text: "" });
  assert.deepEqual(f.push("e"), { text: "" });
  assert.deepEqual(f.push("d"), { text: "\nUsed" });
  assert.deepEqual(f.push(" ok</"), { text: " ok" });
  assert.deepEqual(f.push("s> and more"), { text: "", stop: "</s>" });
  assert.equal(f.stopped, "</s>");
  assert.deepEqual(f.push("ignored"), { text: "" });
  assert.equal(f.flush(), "");

  const g = new StopStringFilter(["STOP"]);
  assert.deepEqual(g.push("the end ST"), { text: "the end " });
  assert.equal(g.flush(), "ST");
  assert.throws(() => new StopStringFilter([""]), DeltaqError);
});

Deno.test("stop strings: the stop completed first wins, whatever the cut", () => {
  const cases: Array<[string[], string, { text: string; stop?: string }]> = [
    [["abcd", "c"], "xxabcdyy", { text: "xxab", stop: "c" }], // "c" is complete before "abcd"
    [["b", "ab"], "xab", { text: "x", stop: "ab" }], // both complete at "b": the earlier start wins
    [["\n\n", "Q:"], "A: 1\nQ: 2\n\n", { text: "A: 1\n", stop: "Q:" }],
    [["<|im_end|>"], "answer<|im_", { text: "answer<|im_" }], // never completed: flushed
    [["aaa"], "aaaa", { text: "", stop: "aaa" }],
    [["aab"], "aaab", { text: "a", stop: "aab" }],
  ];
  for (const [stops, text, expected] of cases) {
    for (const pieces of cuts(text)) {
      assert.deepEqual(
        runStops(stops, pieces),
        expected,
        `${JSON.stringify(stops)} ${JSON.stringify(pieces)}`,
      );
    }
  }
});

function runSplitter(pieces: string[], startInThinking: boolean): SplitText {
  const s = new ThinkingSplitter({ startInThinking });
  const all: SplitText = { thinking: "", answer: "" };
  for (const p of [...pieces.map((p) => s.push(p)), s.flush()]) {
    all.thinking += p.thinking;
    all.answer += p.answer;
  }
  return all;
}

/** How the Qwen3.5 template reads an assistant turn back: split at </think>, strip, trim. */
function templateReading(raw: string): SplitText {
  if (!raw.includes("</think>")) return { thinking: "", answer: raw.trim() };
  const reasoning = raw.split("</think>")[0].replace(/\n+$/, "").split("<think>").at(-1)!.replace(/^\n+/, "");
  return { thinking: reasoning.trim(), answer: raw.split("</think>").at(-1)!.replace(/^\n+/, "").trim() };
}

Deno.test("thinking splitter: same split for every cut, equal to how the template reads the turn", () => {
  // [output, prompt opened <think>, a finished turn the template's reading applies to]
  const outputs: Array<[string, boolean, boolean]> = [
    ["Let me add.\n2 + 2 = 4.\n</think>\n\nThe answer is 4.", true, true], // prompt ended with "<think>\n"
    ["<think>\nLet me add.\n</think>\n\nThe answer is 4.\n", false, true], // model opens the block itself
    ["\n\n<think>\n\n</think>\n\nShort.", false, true],
    ["  <think>x</think>y", false, true],
    ["The answer is 4.", false, true], // thinking off: no block at all
    ["<thinking> is not the tag", false, true],
    ["Tags <think> later are text </think> too.", false, false],
    ["Unfinished thoughts\n\n", true, false],
    ["a</think>b</think>c", true, false], // the first close tag ends thinking
    ["x\n</thi", true, false], // a partial tag at the end is text
  ];
  for (const [output, startInThinking, finished] of outputs) {
    const expected = runSplitter([output], startInThinking);
    for (const pieces of cuts(output, output.length)) {
      assert.deepEqual(runSplitter(pieces, startInThinking), expected, `${JSON.stringify(pieces)}`);
    }
    if (finished) {
      const raw = startInThinking ? "<think>\n" + output : output;
      assert.deepEqual(expected, templateReading(raw), JSON.stringify(output));
    }
  }
  assert.deepEqual(runSplitter(["Unfinished thoughts\n\n"], true), {
    thinking: "Unfinished thoughts",
    answer: "",
  });
  assert.deepEqual(runSplitter(["Tags <think> later are text </think> too."], false), {
    thinking: "",
    answer: "Tags <think> later are text </think> too.",
  });
  assert.deepEqual(runSplitter(["a</think>b</think>c"], true), { thinking: "a", answer: "b</think>c" });
  assert.deepEqual(runSplitter(["x\n</thi"], true), { thinking: "x\n</thi", answer: "" });
});

Deno.test("thinking splitter: emits promptly, holding back only whitespace and partial tags", () => {
  const s = new ThinkingSplitter({ startInThinking: true });
  assert.equal(s.inThinking, true);
  assert.deepEqual(s.push("Reasoning"), { thinking: "Reasoning", answer: "" });
  assert.deepEqual(s.push(" more\n"), { thinking: " more", answer: "" });
  assert.deepEqual(s.push("and\n</th"), { thinking: "\nand", answer: "" });
  assert.deepEqual(s.push("ink>"), { thinking: "", answer: "" });
  assert.equal(s.inThinking, false);
  assert.deepEqual(s.push("\n\nThe"), { thinking: "", answer: "The" });
  assert.deepEqual(s.push(" answer.\n"), { thinking: "", answer: " answer." });
  assert.deepEqual(s.flush(), { thinking: "", answer: "" });

  const t = new ThinkingSplitter();
  assert.deepEqual(t.push("<thi"), { thinking: "", answer: "" });
  assert.deepEqual(t.push("nk>\nPlan</think>Do"), { thinking: "Plan", answer: "Do" });
});

Deno.test("promptOpensThinking recognises Qwen3.5 prompts with thinking on", () => {
  const history = "<|im_start|>user\nHi<|im_end|>\n";
  assert.equal(promptOpensThinking(history + "<|im_start|>assistant\n<think>\n"), true);
  assert.equal(promptOpensThinking(history + "<|im_start|>assistant\n<think>\n\n</think>\n\n"), false);
  assert.equal(promptOpensThinking(history + "<|im_start|>assistant\n"), false);
  assert.equal(
    promptOpensThinking("<|im_start|>user\nWhat does <think> do?<|im_end|>\n<|im_start|>assistant\n"),
    false,
  );
});

const vocab = fixture("ggml-vocab-qwen35.gguf");

Deno.test({
  name: "streaming detokenizer holds bytes of characters split across tokens",
  ignore: vocab.skip !== undefined,
  fn() {
    const tokenizer = loadTokenizer(vocab.path!);
    const text = "naïve 𓀀 🫠 ünïcödé 漢字 ꙮ end";
    const ids = tokenizer.tokenize(text);
    const decoder = tokenizer.decoder();
    const pieces = ids.map((id) => decoder.push(id));
    pieces.push(decoder.flush());
    assert.equal(pieces.join(""), text);
    assert.ok(pieces.every((p) => p.isWellFormed() && !p.includes("\ufffd")), JSON.stringify(pieces));
    // The hieroglyph 𓀀 is three byte tokens in this vocabulary: all but the last emit nothing.
    const emojiIds = tokenizer.tokenize("𓀀");
    assert.ok(emojiIds.length > 1, `expected 𓀀 to span tokens, got ${emojiIds}`);
    const d = tokenizer.decoder();
    assert.deepEqual(emojiIds.map((id) => d.push(id)), [...emojiIds.slice(1).map(() => ""), "𓀀"]);
    // A character cut off at the end of the stream becomes U+FFFD, and the decoder is reusable.
    d.push(emojiIds[0]);
    assert.equal(d.flush(), "\ufffd");
    assert.equal(emojiIds.map((id) => d.push(id)).join(""), "𓀀");
  },
});
if (vocab.skip) console.warn(`stream_test: detokenizer test skipped: ${vocab.skip}`);
