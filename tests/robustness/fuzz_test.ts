/**
 * The GGUF fuzzer in the default suite: 20,000 seeded mutated micro models (every 8th loaded from
 * disk and evaluated, with a safety-checked (Debug) build of the kernels), in two worker processes. Each must
 * load or fail with a DeltaqError; a failure report names the case and how to replay it.
 * `deno task fuzz` runs many more.
 *
 * The orchestrator's own crash and hang detection is tested too, with workers told to die
 * (SIGSEGV) or block at a given case: a fuzzer that missed crashes would pass vacuously.
 */
import assert from "node:assert/strict";
import { formatReport, fuzz, safeLibrary } from "./fuzz.ts";

const SEED = 20240611;
const CASES = 20_000;

Deno.test(`fuzz: ${CASES} mutated GGUF files load or fail with DeltaqError`, async () => {
  const report = await fuzz({ seed: SEED, count: CASES, jobs: 2, loadEvery: 8, library: safeLibrary() });
  console.log(formatReport(report));
  assert.equal(report.failures.length, 0, formatReport(report));
  assert.equal(report.cases, CASES);
  assert.equal(report.loads, CASES / 8);
  // The mutations must reach past the header checks: some files still load (and evaluate), most
  // are rejected. Either share near 0 would mean the fuzzer stopped exploring.
  assert.ok(report.loaded >= report.loads * 0.02, `only ${report.loaded} of ${report.loads} loaded`);
  assert.ok(report.rejected >= CASES * 0.5, `only ${report.rejected} rejected`);
});

Deno.test("fuzz: a worker crash is reported with its case, and the run goes on", async () => {
  const report = await fuzz({ seed: SEED, start: 100, count: 40, jobs: 1, loadEvery: 0, crashAt: 117 });
  assert.equal(report.cases, 40);
  assert.equal(report.failures.length, 1, formatReport(report));
  const [f] = report.failures;
  assert.equal(f.case, 117);
  assert.equal(f.kind, "crash");
  assert.match(f.error, /signal SIGSEGV/);
  assert.match(formatReport(report), new RegExp(`reproduce: deno task fuzz --seed ${SEED} --case 117`));
});

Deno.test("fuzz: a hanging case is killed and reported", async () => {
  const report = await fuzz({
    seed: SEED,
    start: 0,
    count: 5,
    jobs: 1,
    loadEvery: 0,
    hangAt: 2,
    hangSeconds: 2,
  });
  assert.equal(report.cases, 5);
  assert.deepEqual(report.failures.map((f) => [f.case, f.kind]), [[2, "hang"]]);
});
