/**
 * Tokenizer benchmark: load time and tokenize throughput of deltaq's tokenizer next to llama.cpp's
 * (the pinned oracle build), on about 1 MiB of each kind of text, checking that both give the
 * same ids.
 *
 *   deno run -A bench/tokenizer.ts [--vocab path.gguf] [--repeat 3]
 *
 * Texts (deterministic, built from what every checkout has):
 * - prose: the English Markdown in ../shared (spec and notes), repeated to 1 MiB;
 * - code: this repository's .ts and .zig sources, repeated to 1 MiB;
 * - cjk: generated Chinese-like text (Zipf-distributed Han characters, CJK punctuation);
 * - mixed: tests/tokenizer/corpus.ts strings (emoji, many scripts, random code points, long runs).
 * "cold" is the first call on a fresh tokenizer (empty word cache), "warm" the best of the repeats.
 */
import { parseArgs } from "node:util";
import { readGgufHeader } from "../src/gguf/read.ts";
import { LlamaReference, setLlamaLog } from "../src/oracle/llama.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { corpus, rng } from "../tests/tokenizer/corpus.ts";

const MIB = 1 << 20;
const repoRoot = new URL("../", import.meta.url);
const sharedRoot = new URL("../../shared/", import.meta.url);

function filesUnder(dir: URL, extensions: string[]): string[] {
  const out: string[] = [];
  const walk = (d: URL) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(d)].sort((a, b) => a.name.localeCompare(b.name));
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.name.startsWith(".") || e.name === "node_modules" || e.name === "zig-out") continue;
      const u = new URL(e.name + (e.isDirectory ? "/" : ""), d);
      if (e.isDirectory) walk(u);
      else if (extensions.some((x) => e.name.endsWith(x))) out.push(Deno.readTextFileSync(u));
    }
  };
  walk(dir);
  return out;
}

function toSize(text: string, bytes: number): string {
  if (text.length === 0) return "";
  let out = text;
  while (new TextEncoder().encode(out).length < bytes) out += "\n" + text;
  // Cut at a character boundary near the target size.
  let cut = out.length;
  while (new TextEncoder().encode(out.slice(0, cut)).length > bytes) cut = Math.floor(cut * 0.98);
  return out.slice(0, cut).toWellFormed();
}

function cjkText(bytes: number): string {
  const r = rng(7);
  const parts: string[] = [];
  let size = 0;
  while (size < bytes) {
    const rank = Math.floor(Math.pow(r(), 3) * 4000); // a few hundred characters dominate
    parts.push(String.fromCodePoint(0x4e00 + ((rank * 2654435761) >>> 0) % 20902));
    size += 3;
    if (r() < 0.08) parts.push("，"), size += 3;
    if (r() < 0.02) parts.push("。\n"), size += 4;
  }
  return parts.join("");
}

function time<T>(f: () => T): { ms: number; value: T } {
  const t0 = performance.now();
  const value = f();
  return { ms: performance.now() - t0, value };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { vocab: { type: "string" }, repeat: { type: "string", default: "3" } },
  });
  const vocab = values.vocab ??
    decodeURIComponent(new URL("fixtures/ggml-vocab-qwen35.gguf", sharedRoot).pathname);
  const repeat = Math.max(1, Number(values.repeat));
  setLlamaLog("errors");

  const header = time(() => readGgufHeader(vocab));
  const build = time(() => Tokenizer.fromGguf(header.value, vocab));
  const ref = LlamaReference.load(vocab, { vocabOnly: true });
  console.log(`vocab ${vocab}: ${build.value.vocabSize} tokens`);
  console.log(
    `load: deltaq ${(header.ms + build.ms).toFixed(0)} ms (GGUF header ${
      header.ms.toFixed(0)
    } ms + tokenizer ${build.ms.toFixed(0)} ms); llama.cpp vocab-only load ${ref.loadMs.toFixed(0)} ms`,
  );

  const texts: [string, string][] = [
    ["prose", toSize(filesUnder(sharedRoot, [".md"]).join("\n\n"), MIB)],
    ["code", toSize(filesUnder(repoRoot, [".ts", ".zig"]).join("\n"), MIB)],
    ["cjk", cjkText(MIB)],
    ["mixed", toSize(corpus(5, 4000).join("\n"), MIB)],
  ];
  console.log("text     MiB   tokens   deltaq cold   deltaq warm   llama.cpp   same ids");
  for (const [name, text] of texts) {
    if (text === "") {
      console.log(`${name.padEnd(7)} (no input found)`);
      continue;
    }
    const mib = new TextEncoder().encode(text).length / MIB;
    const fresh = Tokenizer.fromGguf(header.value, vocab);
    const cold = time(() => fresh.tokenize(text));
    let warm = Infinity, llama = Infinity;
    let expected: Int32Array | undefined;
    for (let i = 0; i < repeat; i++) {
      warm = Math.min(warm, time(() => fresh.tokenize(text)).ms);
      const r = time(() => ref.tokenize(text));
      llama = Math.min(llama, r.ms);
      expected = r.value;
    }
    const same = expected!.length === cold.value.length && expected!.every((id, i) => id === cold.value[i]);
    const rate = (ms: number) =>
      `${ms.toFixed(0).padStart(5)} ms ${(mib / (ms / 1000)).toFixed(1).padStart(5)} MiB/s`;
    console.log(
      `${name.padEnd(7)} ${mib.toFixed(2)} ${String(cold.value.length).padStart(8)}  ${rate(cold.ms)}  ${
        rate(warm)
      }  ${rate(llama)}  ${same ? "yes" : "NO"}`,
    );
  }
  ref.dispose();
}
