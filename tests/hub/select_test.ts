// Choosing a GGUF from a repository's file list, and parsing `--hf` references.
import assert from "node:assert/strict";
import { DeltaqError } from "../../src/errors.ts";
import { DEFAULT_MODEL, formatHfRef, parseHfRef } from "../../src/hub/download.ts";
import { availableQuants, chooseGguf, matchesQuant, type RepoFile, splitPart } from "../../src/hub/select.ts";

const files = (...paths: string[]): RepoFile[] => paths.map((path) => ({ path, size: 1 }));

function throwsDeltaq(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof DeltaqError && pattern.test(e.message));
}

Deno.test("select: a quantization tag matches whole tags only, in any case", () => {
  assert.ok(matchesQuant("Qwen3.5-4B-Q4_K_M.gguf", "q4_k_m"));
  assert.ok(!matchesQuant("Qwen3.5-4B-Q4_K_M.gguf", "Q4_K"));
  assert.ok(!matchesQuant("Qwen3.5-4B-IQ4_XS.gguf", "Q4_XS"));
  assert.ok(matchesQuant("Qwen3.5-4B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"));
  assert.ok(matchesQuant("Qwen3.5-4B-UD-Q4_K_XL.gguf", "Q4_K_XL"));
  assert.ok(matchesQuant("Q8_0/Qwen3.5-4B-Q8_0-00001-of-00002.gguf", "Q8_0"));
  assert.ok(matchesQuant("qwen3.5-4b.q6_k.gguf", "Q6_K"));
  assert.deepEqual(splitPart("a/M-Q8_0-00002-of-00003.gguf"), { index: 2, count: 3 });
  assert.equal(splitPart("M-Q8_0.gguf"), undefined);
});

const paths = (chosen: RepoFile[]) => chosen.map((f) => f.path);

Deno.test("select: single files win over split ones; a split one is all its parts; projectors and importance matrices are not models", () => {
  const repo = files(
    "README.md",
    "imatrix_unsloth.gguf",
    "mmproj-BF16.gguf",
    "M-BF16-00001-of-00002.gguf",
    "M-BF16-00002-of-00002.gguf",
    "M-Q4_K_M.gguf",
    "M-UD-Q4_K_XL.gguf",
    "Q4_K_M/M-Q4_K_M-00001-of-00002.gguf",
    "Q4_K_M/M-Q4_K_M-00002-of-00002.gguf",
  );
  assert.deepEqual(paths(chooseGguf(repo, { quant: "Q4_K_M" }, "r")), ["M-Q4_K_M.gguf"]);
  assert.deepEqual(paths(chooseGguf(repo, {}, "r")), ["M-Q4_K_M.gguf"], "Q4_K_M is the default");
  assert.deepEqual(paths(chooseGguf(repo, { quant: "ud-q4_k_xl" }, "r")), ["M-UD-Q4_K_XL.gguf"]);
  assert.deepEqual(availableQuants(repo), ["BF16", "Q4_K_M", "Q4_K_XL"]);
  throwsDeltaq(
    () => chooseGguf(repo, { quant: "F16" }, "r"),
    /^r has no F16 GGUF; available quantizations: BF16, Q4_K_M, Q4_K_XL$/,
  );
  assert.deepEqual(paths(chooseGguf(repo, { quant: "BF16" }, "r")), ["M-BF16-00001-of-00002.gguf", "M-BF16-00002-of-00002.gguf"]);
  assert.deepEqual(
    paths(chooseGguf(repo, { file: "Q4_K_M/M-Q4_K_M-00002-of-00002.gguf" }, "r")),
    ["Q4_K_M/M-Q4_K_M-00001-of-00002.gguf", "Q4_K_M/M-Q4_K_M-00002-of-00002.gguf"],
    "naming any part takes them all",
  );
  throwsDeltaq(
    () => chooseGguf(repo.filter((f) => !f.path.startsWith("M-BF16-00002")), { quant: "BF16" }, "r"),
    /^r: M-BF16-00001-of-00002\.gguf is part of a model split into 2 files, but M-BF16-00002-of-00002\.gguf is missing$/,
  );
});

Deno.test("select: without Q4_K_M the first single-file model is used; a repo without models is an error", () => {
  assert.deepEqual(paths(chooseGguf(files("b-Q8_0.gguf", "a-Q6_K.gguf", "mmproj-a.gguf"), {}, "r")), ["a-Q6_K.gguf"]);
  assert.deepEqual(paths(chooseGguf(files("a-F16-00001-of-00002.gguf", "b-Q8_0.gguf"), {}, "r")), ["b-Q8_0.gguf"]);
  throwsDeltaq(
    () => chooseGguf(files("README.md", "mmproj-F16.gguf"), {}, "r"),
    /^r: it holds no GGUF model files$/,
  );
  throwsDeltaq(() => chooseGguf(files("x-F16-00001-of-00002.gguf"), {}, "r"), /split into 2 files, but x-F16-00002-of-00002\.gguf is missing/);
  assert.deepEqual(
    paths(chooseGguf(files("x-F16-00002-of-00002.gguf", "x-F16-00001-of-00002.gguf"), {}, "r")),
    ["x-F16-00001-of-00002.gguf", "x-F16-00002-of-00002.gguf"],
  );
});

Deno.test("select: an exact file is taken as named, and its absence lists the GGUF files", () => {
  const repo = files("mmproj-F16.gguf", "M-Q8_0.gguf", "README.md");
  assert.deepEqual(paths(chooseGguf(repo, { file: "mmproj-F16.gguf" }, "r")), ["mmproj-F16.gguf"]);
  throwsDeltaq(
    () => chooseGguf(repo, { file: "M-Q2_K.gguf" }, "r"),
    /^r has no file M-Q2_K\.gguf; GGUF files: mmproj-F16\.gguf, M-Q8_0\.gguf$/,
  );
});

Deno.test("parseHfRef: repository, quantization, file, and pasted hub addresses", () => {
  assert.deepEqual(parseHfRef("unsloth/Qwen3.5-4B-GGUF"), { repo: "unsloth/Qwen3.5-4B-GGUF" });
  assert.deepEqual(parseHfRef("unsloth/Qwen3.5-4B-GGUF:q8_0"), {
    repo: "unsloth/Qwen3.5-4B-GGUF",
    quant: "q8_0",
  });
  assert.deepEqual(parseHfRef("user/repo/Q8_0/m-Q8_0.gguf"), { repo: "user/repo", file: "Q8_0/m-Q8_0.gguf" });
  assert.deepEqual(parseHfRef("hf.co/user/repo:UD-Q4_K_XL"), { repo: "user/repo", quant: "UD-Q4_K_XL" });
  assert.deepEqual(parseHfRef("https://huggingface.co/user/repo/"), { repo: "user/repo" });
  assert.deepEqual(
    parseHfRef("https://huggingface.co/user/repo/blob/v1.0/m%20x.gguf"),
    { repo: "user/repo", file: "m x.gguf", revision: "v1.0" },
  );
  assert.equal(formatHfRef(DEFAULT_MODEL), "unsloth/Qwen3.5-4B-GGUF:Q4_K_M");
  assert.equal(formatHfRef({ repo: "u/r", file: "a.gguf", revision: "v1" }), "u/r/a.gguf@v1");
});

Deno.test("parseHfRef: malformed references are user errors", () => {
  for (
    const [spec, why] of [
      ["repo", /is not a repository name/],
      ["user/repo/notes.txt", /is not a \.gguf file path/],
      ["user/repo/../x.gguf", /is not a \.gguf file path/],
      ["user/repo/m.gguf:Q4_K_M", /either a file or a quantization/],
      ["user/repo:", /is not a quantization tag/],
      ["user--x/repo", /is not a repository name/],
      ["-user/repo", /is not a repository name/],
    ] as const
  ) {
    throwsDeltaq(
      () => parseHfRef(spec),
      new RegExp(`^--hf ${JSON.stringify(spec).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: .*${why.source}`),
    );
  }
});
