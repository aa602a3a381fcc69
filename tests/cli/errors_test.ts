/**
 * User errors at the command line: each row runs `deno run -A cli.ts …` as a user would and expects
 * exit code 1, nothing on stdout, and exactly one line on stderr — `deltaq: ` and the message, no
 * stack trace, no signal death. Add a row to `cases` for every new way a user can get it wrong
 * (the `files` helper builds broken models; `env` and `hub` reach the download path).
 */
import assert from "node:assert/strict";
import { ensureLibrary } from "../../src/native/build.ts";
import { basePaths } from "../robustness/bases.ts";
import { encodeGguf, partsOf, patchU32, patchU64, scanGguf, setKv, value } from "../robustness/gguf_edit.ts";
import { fakeGguf, MockHub } from "../hub/mock_hub.ts";

const CLI = decodeURIComponent(new URL("../../cli.ts", import.meta.url).pathname);
const dir = Deno.makeTempDirSync({ prefix: "deltaq-cli-errors-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

ensureLibrary(); // built once here, so no child prints a build notice
const micro = (await basePaths()).micro;
const base = scanGguf(Deno.readFileSync(micro));

/** Writes a file into the test directory and returns its path. */
function file(name: string, bytes: Uint8Array): string {
  const path = `${dir}/${name}`;
  Deno.writeFileSync(path, bytes);
  return path;
}

const files = {
  empty: () => file("empty.gguf", new Uint8Array()),
  text: () => file("notes.txt", new TextEncoder().encode("not a model\n")),
  badVersion: () => file("v9.gguf", patchU32(base.bytes, 4, 9)),
  truncated: () => file("truncated.gguf", base.bytes.slice(0, base.bytes.length - 100)),
  hugeCount: () => file("huge-count.gguf", patchU64(base.bytes, 8, 1n << 62n)),
  badUtf8: () => {
    const bytes = base.bytes.slice();
    bytes[base.kvs[0].at + 8] = 0xff;
    return file("bad-utf8.gguf", bytes);
  },
  llama: () =>
    file("llama.gguf", encodeGguf(setKv(partsOf(base), "general.architecture", value.string("llama")))),
  noTensor: () => {
    const p = partsOf(base);
    return file(
      "no-tensor.gguf",
      encodeGguf({ ...p, tensors: p.tensors.filter((t) => t.name !== "blk.1.attn_k.weight") }),
    );
  },
  nanEps: () =>
    file(
      "nan-eps.gguf",
      encodeGguf(setKv(partsOf(base), "qwen35.attention.layer_norm_rms_epsilon", value.f32(NaN))),
    ),
  fifo: () => {
    const path = `${dir}/fifo.gguf`;
    new Deno.Command("mkfifo", { args: [path] }).outputSync();
    return path;
  },
};

interface CliCase {
  name: string;
  args: () => string[] | Promise<string[]>;
  /** What the line must contain after `deltaq: ` (string) or match (RegExp). */
  expect: string | RegExp | (() => string);
  env?: Record<string, string>;
  /** Run against a fresh mock hub (set its faults here). */
  hub?: (hub: MockHub) => void;
}

/** A mock Hugging Face hub serving two fake (unusable) GGUF files, and the environment that points the CLI at it. */
function startHub(): { hub: MockHub; env: Record<string, string> } {
  const hub = new MockHub();
  hub.addRepo("org/Model-GGUF", {
    "Model-Q4_K_M.gguf": fakeGguf(300_000, 1),
    "Model-Q8_0.gguf": fakeGguf(500_000, 2),
  });
  const cache = Deno.makeTempDirSync({ dir, prefix: "hub-cache-" });
  return { hub, env: { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "0", HF_TOKEN: "" } };
}

const cases: CliCase[] = [
  // --- info
  { name: "info without a file", args: () => ["info"], expect: "usage: deno run -A cli.ts info MODEL.gguf" },
  {
    name: "info: missing file",
    args: () => ["info", `${dir}/nope.gguf`],
    expect: () => `${dir}/nope.gguf: no such file`,
  },
  {
    name: "info: directory",
    args: () => ["info", dir],
    expect: () => `${dir}: is a directory, not a GGUF file`,
  },
  { name: "info: device", args: () => ["info", "/dev/null"], expect: "/dev/null: not a regular file" },
  { name: "info: FIFO", args: () => ["info", files.fifo()], expect: "fifo.gguf: not a regular file" },
  { name: "info: empty file", args: () => ["info", files.empty()], expect: "empty.gguf: the file is empty" },
  {
    name: "info: not a GGUF",
    args: () => ["info", files.text()],
    expect: "notes.txt: too small to be a GGUF file (12 bytes)",
  },
  {
    name: "info: unsupported version",
    args: () => ["info", files.badVersion()],
    expect: "v9.gguf: unsupported GGUF version 9",
  },
  {
    name: "info: truncated",
    args: () => ["info", files.truncated()],
    expect: /truncated\.gguf: tensor \S+ extends past end of file \(offset \d+, size \d+, file \d+\)/,
  },
  {
    name: "info: huge tensor count",
    args: () => ["info", files.hugeCount()],
    expect: "huge-count.gguf: tensor count is 4611686018427387904, which is impossibly large",
  },
  {
    name: "info: key not UTF-8",
    args: () => ["info", files.badUtf8()],
    expect: /bad-utf8\.gguf: metadata key #0 is not valid UTF-8/,
  },
  // --- loading a model to run it
  {
    name: "-m: missing file",
    args: () => ["-m", `${dir}/nope.gguf`, "-p", "hi"],
    expect: () => `${dir}/nope.gguf: no such file`,
  },
  {
    name: "-m: directory",
    args: () => ["-m", dir, "-p", "hi"],
    expect: () => `${dir}: is a directory, not a GGUF file`,
  },
  { name: "-m: FIFO", args: () => ["-m", files.fifo(), "-p", "hi"], expect: "fifo.gguf: not a regular file" },
  {
    name: "-m: not a GGUF",
    args: () => ["-m", files.text(), "-p", "hi"],
    expect: "notes.txt: too small to be a GGUF file (12 bytes)",
  },
  {
    name: "-m: truncated",
    args: () => ["-m", files.truncated(), "-p", "hi"],
    expect: /truncated\.gguf: tensor \S+ extends past end of file/,
  },
  {
    name: "-m: huge tensor count",
    args: () => ["-m", files.hugeCount(), "-p", "hi"],
    expect: "huge-count.gguf: tensor count is 4611686018427387904, which is impossibly large",
  },
  {
    name: "-m: another architecture",
    args: () => ["-m", files.llama(), "-p", "hi"],
    expect: `llama.gguf: unsupported architecture "llama"`,
  },
  {
    name: "-m: missing tensor",
    args: () => ["-m", files.noTensor(), "-p", "hi"],
    expect: "no-tensor.gguf: required tensor blk.1.attn_k.weight is missing",
  },
  {
    name: "-m: NaN hyper-parameter",
    args: () => ["-m", files.nanEps(), "-p", "hi"],
    expect:
      "nan-eps.gguf: metadata qwen35.attention.layer_norm_rms_epsilon should be a finite number, got NaN",
  },
  {
    name: "prompt longer than the context",
    args: () => ["-m", micro, "-c", "4", "-p", "a prompt that is longer than four tokens"],
    expect: /the prompt has \d+ tokens, more than the context length 4/,
  },
  { name: "unknown argument", args: () => ["bogus"], expect: `unexpected argument "bogus"` },
  // --- flag values (checked before the model is touched)
  { name: "-n below -1", args: () => ["-m", micro, "-n", "-5", "-p", "hi"], expect: "-n must be at least -1, got -5" },
  { name: "--temp not a number", args: () => ["-m", micro, "--temp", "abc", "-p", "hi"], expect: `--temp needs a number, got "abc"` },
  { name: "-t 0", args: () => ["-m", micro, "-t", "0", "-p", "hi"], expect: "-t must be at least 1, got 0" },
  { name: "--top-p above 1", args: () => ["-m", micro, "--top-p", "1.5", "-p", "hi"], expect: "--top-p must be at most 1, got 1.5" },
  { name: "-c fractional", args: () => ["-m", micro, "-c", "2.5", "-p", "hi"], expect: "-c needs a whole number, got 2.5" },
  { name: "flag without its value", args: () => ["-m", micro, "-p"], expect: "-p needs a value" },
  { name: "unknown option", args: () => ["--frobnicate"], expect: "unknown option --frobnicate (see --help)" },
  { name: "--raw with --chat", args: () => ["-m", micro, "--raw", "--chat", "-p", "hi"], expect: "--raw and --chat cannot be combined" },
  { name: "no prompt", args: () => ["-m", micro], expect: /^no prompt: give one with -p TEXT/ },
  { name: "prompt file missing", args: () => ["-m", micro, "-f", `${dir}/none.txt`], expect: () => `${dir}/none.txt: cannot read the prompt file: no such file` },
  // --- bench
  {
    name: "bench: unknown model type",
    args: () => ["bench", "--type", "Q9_9"],
    expect: /^unknown benchmark model type "Q9_9"; use one of .*Q4_0.*IQ4_XS/,
  },
  {
    name: "bench: -m and --type together",
    args: () => ["bench", "-m", micro, "--type", "Q4_0"],
    expect: "bench takes either -m FILE or a synthetic model (--preset NAME, --type T), not both",
  },
  // --- downloads
  {
    name: "--hf: interrupted download",
    args: () => {
      return ["--hf", "org/Model-GGUF:Q8_0", "-p", "hi"];
    },
    hub: (hub) => hub.cutNextBodyAfter = 100_000,
    expect:
      /^download of Model-Q8_0\.gguf interrupted at 20% \(100000 of 500000 bytes: .*\); run again to resume$/,
  },
  {
    name: "--hf: unknown quantization",
    args: () => ["--hf", "org/Model-GGUF:Q2_K", "-p", "hi"],
    hub: () => {},
    expect: "org/Model-GGUF has no Q2_K GGUF; available quantizations: Q4_K_M, Q8_0",
  },
  {
    name: "--hf: downloaded file is not a usable model",
    args: () => ["--hf", "org/Model-GGUF:Q4_K_M", "-p", "hi"],
    hub: () => {},
    expect: /\/Model-Q4_K_M\.gguf: unsupported GGUF version \d+ \(deltaq reads versions 2 and 3\)$/,
  },
  {
    name: "--hf: offline without a cached copy",
    args: () => ["--hf", "org/Other-GGUF:Q4_K_M", "-p", "hi"],
    hub: () => {},
    env: { HF_HUB_OFFLINE: "1" },
    expect: /^org\/Other-GGUF:Q4_K_M is not in the Hugging Face cache .* and offline mode is on/,
  },
];

const decoder = new TextDecoder();

for (const c of cases) {
  Deno.test(`cli error: ${c.name}`, async () => {
    const mock = c.hub ? startHub() : undefined;
    if (mock) c.hub!(mock.hub);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, ...(await c.args())],
      env: { NO_COLOR: "1", ...mock?.env, ...c.env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output().finally(() => mock?.hub.close());
    const stderr = decoder.decode(out.stderr);
    const report = `exit ${out.code}${
      out.signal ? ` signal ${out.signal}` : ""
    }\nstderr: ${stderr}\nstdout: ${decoder.decode(out.stdout)}`;
    assert.equal(out.signal, null, report);
    assert.equal(out.code, 1, report);
    assert.equal(out.stdout.length, 0, report);
    const lines = stderr.split("\n").filter((l) => l !== "");
    assert.equal(lines.length, 1, `exactly one line on stderr:\n${report}`);
    assert.ok(stderr.endsWith("\n"), report);
    const [line] = lines;
    assert.ok(line.startsWith("deltaq: "), report);
    assert.ok(!/\bat .*:\d+:\d+|Uncaught|error: /.test(line), `no stack trace: ${line}`);
    const message = line.slice("deltaq: ".length);
    const expect = typeof c.expect === "function" ? c.expect() : c.expect;
    if (typeof expect === "string") {
      assert.ok(message.includes(expect), `${JSON.stringify(message)} lacks ${JSON.stringify(expect)}`);
    } else assert.match(message, expect);
  });
}
