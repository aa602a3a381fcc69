/**
 * `cli.ts bench` as a user runs it, on a tiny cached model with a few tokens: the table and JSON
 * have every metric for both engines, numbers are positive and finite, the profile's shares add up.
 * Nothing here asserts a speed. One thread: llama.cpp's spinning workers make two threads on a busy
 * two-core machine erratic (see tests/oracle/model_test.ts).
 */
import assert from "node:assert/strict";
import { decodeWeightBytes, stat } from "../../src/cli/bench.ts";
import { categorize } from "../../src/cli/bench_worker.ts";
import { testModel } from "../models.ts";

const cli = new URL("../../cli.ts", import.meta.url).pathname;
const model = await testModel({ preset: "tiny", quant: "Q4_K_M" });
const small = ["-m", model, "-t", "1", "--pp", "16", "--tg", "4", "--reps", "1"];

async function bench(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, "bench", ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

const positive = (x: unknown, what: string) =>
  assert.ok(typeof x === "number" && Number.isFinite(x) && x > 0, `${what}: ${x}`);

Deno.test("bench --json: both engines, every metric, positive numbers", async () => {
  const r = await bench(...small, "--json");
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report.runs.map((x: { engine: string }) => x.engine), ["deltaq", "llama.cpp"]);
  for (const run of report.runs) {
    assert.equal(run.threads, 1);
    assert.deepEqual([run.pp.tokens, run.tg.tokens, run.ttft.tokens], [16, 4, 16]);
    for (const k of ["loadMs", "peakRssKiB"]) positive(run[k], `${run.engine} ${k}`);
    for (const p of ["pp", "tg", "ttft"]) positive(run[p].ms, `${run.engine} ${p}`);
    assert.equal(run.profile, undefined, "no profile unless asked");
  }
  assert.deepEqual(report.summary.map((x: { metric: string }) => x.metric), [
    "ppTokensPerSecond",
    "tgTokensPerSecond",
    "ttftMs",
    "loadPlusTtftMs",
    "loadMs",
    "peakRssMiB",
  ]);
  for (const row of report.summary) {
    positive(row.deltaq.median, `deltaq ${row.metric}`);
    positive(row.llama.median, `llama.cpp ${row.metric}`);
    assert.ok(Math.abs(row.ratio - row.deltaq.median / row.llama.median) < 1e-9, row.metric);
  }
  assert.ok(report.bandwidth.gbPerSecond.length === 1 && report.bandwidth.gbPerSecond[0] > 0);
  positive(report.bandwidth.decodeBoundTokensPerSecond, "decode bound");
  assert.ok(report.bandwidth.decodeWeightBytes < report.modelBytes);
  assert.ok(/^[\d.]+ [\d.]+ [\d.]+$/.test(report.machine.loadAverageBefore));
});

Deno.test("bench --profile: the table with ratios and the profile breakdown", async () => {
  const r = await bench(...small, "--profile");
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split("\n");
  const header = lines.find((l) => l.startsWith("metric"))!;
  assert.match(header, /deltaq\s+llama\.cpp\s+deltaq ÷ llama\.cpp\s+better/);
  for (
    const name of [
      "prompt processing pp16",
      "decode tg4",
      "time to first token (16-token prompt)",
      "load + time to first token",
      "load time",
      "peak RSS",
    ]
  ) {
    const line = lines.find((l) => l.startsWith(name));
    assert.ok(line, `row ${name}`);
    const [deltaq, llama, ratio] = line.slice(name.length).match(/[\d.]+(?=×|\s|$)/g)!.slice(-3).map(Number);
    for (const x of [deltaq, llama, ratio]) positive(x, name);
  }
  assert.ok(lines.some((l) => /^decode ÷ bandwidth bound \([\d.]+ tok\/s\)\s+\d+%\s+\d+%/.test(l)));

  const start = lines.findIndex((l) => l.startsWith("deltaq profile"));
  assert.ok(start > 0, "profile section");
  const rows = lines.slice(start + 3).filter((l) =>
    l && !l.startsWith("total") && !l.startsWith("timed run")
  );
  for (
    const category of [
      "matmul Q4_K",
      "LM head matmul Q6_K",
      "attention",
      "DeltaNet",
      "RMS norms",
      "FFI + dispatch",
      "JS command encoding",
    ]
  ) {
    assert.ok(rows.some((l) => l.startsWith(category)), category);
  }
  for (const column of [0, 1]) {
    const shares = rows.map((l) => Number(l.match(/(-?[\d.]+)%/g)![column].slice(0, -1)));
    assert.ok(shares.every((x) => x >= 0), `no negative share: ${shares}`);
    const sum = shares.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 100) < 1, `shares add up to ${sum}`);
  }
  const timed = lines.find((l) => l.startsWith("timed run, same process"));
  assert.ok(timed && timed.match(/[\d.]+/g)!.length === 2, `timed row: ${timed}`);
});

Deno.test("bench --depth: pp and decode at each depth for both engines, the table and the memory line", async () => {
  const depthArgs = ["-m", model, "-t", "1", "--pp", "16", "--tg", "4", "--depth", "64,0", "-ctk", "q8_0", "-ctv", "q8_0"];
  const r = await bench(...depthArgs, "--json");
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report.depths, [0, 64]);
  assert.equal(report.cacheTypeK, "q8_0");
  assert.deepEqual(report.runs.map((x: { engine: string }) => x.engine), ["deltaq", "llama.cpp"]);
  for (const run of report.runs) {
    assert.deepEqual(run.points.map((p: { depth: number }) => p.depth), [0, 64]);
    for (const p of run.points) {
      positive(p.pp.tokensPerSecond, `${run.engine} pp at ${p.depth}`);
      positive(p.tg.tokensPerSecond, `${run.engine} tg at ${p.depth}`);
    }
    positive(run.peakRssKiB, `${run.engine} peak RSS`);
  }
  assert.equal(report.rows[0].tgOfDepth0, 1);
  // deltaq's paired decode: both halves timed at every depth, their ratio in the row
  for (const p of report.runs[0].points) {
    positive(p.paired.deep.tokensPerSecond, `paired decode at ${p.depth}`);
    positive(p.paired.shallow.tokensPerSecond, `paired depth-0 decode beside ${p.depth}`);
  }
  assert.equal(report.runs[1].points[0].paired, undefined, "llama.cpp has no paired decode");
  for (const row of report.rows) {
    const { paired } = report.runs[0].points.find((x: { depth: number }) => x.depth === row.depth);
    const share = paired.deep.tokensPerSecond / paired.shallow.tokensPerSecond;
    assert.ok(Math.abs(row.tgPairedOfDepth0.median - share) < 1e-9, `paired share at ${row.depth}`);
  }
  positive(report.rows[1].ppRatio, "pp ratio");
  positive(report.memory.kvCacheBytes, "KV bytes");

  const table = await bench(...depthArgs);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /depth\s+pp16 deltaq\s+llama\.cpp\s+ratio\s+tg4 deltaq\s+llama\.cpp\s+ratio\s+deltaq tg ÷ depth 0\s+paired/);
  assert.match(table.stdout, /^\s*64 .* \d+%\s+\d+\.\d%$/m);
  assert.match(table.stdout, /KV cache q8_0\/q8_0/);
  assert.match(table.stdout, /peak RSS, deltaq, after depth 64: [\d,]+ MiB against file/);
  assert.match((await bench("--depth", "0,x")).stderr, /--depth needs a comma-separated list/);
});

Deno.test("bench: mistakes end with one line, --help lists the options", async () => {
  const cases: [string[], RegExp][] = [
    [["--reps", "0"], /--reps must be at least 1/],
    [["-m", "/nonexistent/model.gguf"], /nonexistent\/model\.gguf: no such file/],
    [["--pp"], /--pp needs a value/],
    [["--bogus"], /unknown option --bogus/],
  ];
  for (const [args, message] of cases) {
    const r = await bench(...args);
    assert.equal(r.code, 1, args.join(" "));
    assert.match(r.stderr, message);
    assert.ok(!/\n\s+at /.test(r.stderr), `no stack trace: ${r.stderr}`);
  }
  const help = await bench("--help");
  assert.equal(help.code, 0);
  for (
    const flag of [
      "--threads",
      "--pp",
      "--tg",
      "--ttft-tokens",
      "--reps",
      "--profile",
      "--no-reference",
      "--json",
      "--depth",
      "--cache-type-k",
    ]
  ) {
    assert.ok(help.stdout.includes(flag), flag);
  }
});

Deno.test("bench helpers: medians, decode bytes, profile categories", () => {
  assert.deepEqual(stat([3, 1, 2]), { median: 2, min: 1, max: 3 });
  assert.deepEqual(stat([4, 1, 3, 2]), { median: 2.5, min: 1, max: 4 });

  const tensor = (name: string, byteLength: number) => ({ name, byteLength });
  const meta = new Map<string, unknown>([["general.architecture", "qwen35"], ["qwen35.block_count", 2]]);
  const blocks = [
    tensor("blk.0.ffn_up.weight", 10),
    tensor("blk.1.ffn_up.weight", 10),
    tensor("blk.2.nextn.eh_proj.weight", 7),
  ];
  // tied: the LM head streams the embedding; the MTP block (blk.2) does not run
  assert.equal(
    decodeWeightBytes({ metadata: meta, tensors: [tensor("token_embd.weight", 100), ...blocks] }),
    120,
  );
  // untied: one embedding row per token, the output matrix in full
  assert.equal(
    decodeWeightBytes({
      metadata: meta,
      tensors: [tensor("token_embd.weight", 100), tensor("output.weight", 50), ...blocks],
    }),
    70,
  );
  // mixture of experts: a token streams k of the X experts of each *_exps tensor, all the rest
  const moe = new Map<string, unknown>([
    ["general.architecture", "qwen35moe"],
    ["qwen35moe.block_count", 1],
    ["qwen35moe.expert_count", 8],
    ["qwen35moe.expert_used_count", 2],
  ]);
  assert.equal(
    decodeWeightBytes({
      metadata: moe,
      tensors: [
        tensor("token_embd.weight", 100),
        tensor("blk.0.ffn_gate_inp.weight", 4),
        tensor("blk.0.ffn_up_exps.weight", 80),
        tensor("blk.0.ffn_down_exps.weight", 40),
        tensor("blk.0.ffn_up_shexp.weight", 10),
      ],
    }),
    100 + 4 + 20 + 10 + 10,
  );

  const b = categorize(
    {
      entries: [
        { label: "ffn", op: "matmul", weightType: 12, ms: 5.5, calls: 3 },
        { label: "lm_head", op: "matmul", weightType: 14, ms: 2, calls: 1 },
        { label: "ffn", op: "matmul_experts", weightType: 12, ms: 0.25, calls: 1 },
        { label: "ffn", op: "moe_route", weightType: 0, ms: 0.25, calls: 1 },
        { label: "deltanet", op: "conv1d", weightType: 0, ms: 1, calls: 1 },
        { label: "other", op: "label", weightType: 0, ms: 0.5, calls: 9 },
      ],
      execMs: 10,
      jsMs: 1,
    },
    2,
    12,
  );
  const ms = Object.fromEntries(b.rows.map((r) => [r.category, r.msPerToken * 2]));
  assert.equal(ms["matmul Q4_K"], 5.5);
  assert.equal(ms["LM head matmul Q6_K"], 2);
  assert.equal(ms["DeltaNet (recurrence, conv1d, gated norm)"], 1);
  assert.equal(ms["matmul Q4_K (experts)"], 0.25);
  assert.equal(ms["expert routing and weighted sum"], 0.25);
  assert.equal(ms["FFI + dispatch (exec wall − kernels)"], 1); // 10 − 9, label commands count as dispatch
  assert.equal(ms["JS command encoding"], 1);
  assert.equal(ms["rest of eval (logits copy, argmax)"], 1);
  assert.equal(b.msPerToken, 6);
});
