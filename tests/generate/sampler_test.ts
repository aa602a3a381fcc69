// The sampler: each stage on small hand-made distributions, the fast path against a plain
// reference of llama.cpp's chain (full sorts, no shortcuts), seeding, and draw statistics.
// Parity with llama.cpp itself is in sampler_parity_test.ts.
import assert from "node:assert/strict";
import { Mt19937, Sampler, type SamplerOptions } from "../../src/generate/sampler.ts";
import { DeltaqError } from "../../src/errors.ts";

/** All filters off, temperature 1: candidates() is the plain softmax. */
const PLAIN: SamplerOptions = { topK: 0, topP: 1, minP: 0, temperature: 1, seed: 1 };

function softmax(logits: number[]): number[] {
  const max = Math.max(...logits);
  const e = logits.map((l) => Math.exp(l - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

function assertProbs(actual: Float32Array, expected: number[], tolerance = 1e-6) {
  assert.equal(actual.length, expected.length, `got ${[...actual]}, expected ${expected}`);
  expected.forEach((p, i) =>
    assert.ok(Math.abs(actual[i] - p) <= tolerance, `prob ${i}: ${actual[i]} vs ${p}`)
  );
}

function candidates(logits: number[], options: SamplerOptions, accepted: number[] = []) {
  const s = new Sampler(logits.length, options);
  s.accept(accepted);
  const c = s.candidates(Float32Array.from(logits));
  return { ids: [...c.ids], probs: c.probs };
}

/** p = [0.5, 0.3, 0.15, 0.05] at ids [2, 0, 3, 1]. */
const FOUR = [Math.log(0.3), Math.log(0.05), Math.log(0.5), Math.log(0.15)];

Deno.test("mt19937 matches the C++ standard's check value and libstdc++'s double draw", () => {
  const rng = new Mt19937(5489);
  const first = rng.nextU32();
  const second = rng.nextU32();
  assert.deepEqual([first, second], [3499211612, 581869302]);
  let last = 0;
  for (let i = 3; i <= 10000; i++) last = rng.nextU32();
  assert.equal(last, 4123659995); // [rand.predef]: the 10000th output of default-seeded mt19937
  assert.equal(new Mt19937(5489).nextDouble(), (first + second * 2 ** 32) / 2 ** 64);
});

Deno.test("greedy is argmax of the biased, penalised logits; ties go to the lowest id", () => {
  let seed = 3;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const s = new Sampler(1000, { temperature: 0 });
  for (let trial = 0; trial < 20; trial++) {
    const logits = Float32Array.from({ length: 1000 }, () => rand() * 20 - 10);
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    assert.equal(s.sample(logits), best);
  }
  assert.equal(new Sampler(4, { temperature: 0 }).sample(Float32Array.of(1, 3, 3, 2)), 1);
  assert.equal(
    new Sampler(4, { temperature: 0, logitBias: { 1: -Infinity } }).sample(Float32Array.of(1, 3, 3, 2)),
    2,
  );
  assert.equal(
    new Sampler(4, { temperature: 0, logitBias: new Map([[0, 2.5]]) }).sample(Float32Array.of(1, 3, 3, 2)),
    0,
  );
  assert.deepEqual(candidates([1, 3, 3, 2], { temperature: 0 }).ids, [1]);
});

Deno.test("top-k keeps the k largest logits, sorted", () => {
  const { ids, probs } = candidates([1, 3, 2, 5, 4], { ...PLAIN, topK: 2 });
  assert.deepEqual(ids, [3, 4]);
  assertProbs(probs, softmax([5, 4]));
  assert.deepEqual(candidates([1, 3, 2, 5, 4], { ...PLAIN, topK: 10 }).ids, [3, 4, 1, 2, 0]);
});

Deno.test("top-p keeps the smallest most likely set reaching p, with and without top-k", () => {
  for (const topK of [0, 3, 4]) {
    const at = (topP: number) => candidates(FOUR, { ...PLAIN, topK, topP });
    assert.deepEqual(at(0.45).ids, [2]);
    assert.deepEqual(at(0.7).ids, [2, 0]);
    assertProbs(at(0.7).probs, [0.5 / 0.8, 0.3 / 0.8]);
    assert.deepEqual(at(0.85).ids, [2, 0, 3]);
    assertProbs(at(0.85).probs, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95]);
  }
  // Top-p measures probability within what top-k left: of {2, 0} (0.625, 0.375), p = 0.6 keeps one.
  assert.deepEqual(candidates(FOUR, { ...PLAIN, topK: 2, topP: 0.6 }).ids, [2]);
});

Deno.test("min-p drops tokens below p × the best; keeps id order when nothing sorted", () => {
  const unsorted = candidates(FOUR, { ...PLAIN, minP: 0.2 }); // threshold 0.1
  assert.deepEqual(unsorted.ids, [0, 2, 3]);
  assertProbs(unsorted.probs, [0.3 / 0.95, 0.5 / 0.95, 0.15 / 0.95]);
  assert.deepEqual(candidates(FOUR, { ...PLAIN, topK: 4, minP: 0.2 }).ids, [2, 0, 3]);
  assert.deepEqual(candidates(FOUR, { ...PLAIN, minP: 1 }).ids, [2]);
});

Deno.test("temperature reshapes what the filters left, after them", () => {
  assertProbs(candidates([0, Math.log(4)], { ...PLAIN, temperature: 2 }).probs, [1 / 3, 2 / 3]);
  assertProbs(candidates([0, Math.log(4)], { ...PLAIN, temperature: 0.5 }).probs, [1 / 17, 16 / 17]);
  // top-p 0.7 sees the temperature-1 distribution and keeps {2, 0}; T = 0.5 then squares the odds.
  const c = candidates(FOUR, { ...PLAIN, topP: 0.7, temperature: 0.5 });
  assert.deepEqual(c.ids, [2, 0]);
  assertProbs(c.probs, [0.25 / 0.34, 0.09 / 0.34]);
});

Deno.test("penalties: repeat divides positive and multiplies negative logits; frequency and presence subtract", () => {
  const logits = [2, -2, 1, 0.5];
  const repeat = candidates(logits, { ...PLAIN, repeatPenalty: 2 }, [0, 1, 0]);
  assertProbs(repeat.probs, softmax([1, -4, 1, 0.5]));
  const all = candidates(
    logits,
    { ...PLAIN, repeatPenalty: 2, frequencyPenalty: 0.5, presencePenalty: 0.25 },
    [0, 1, 0],
  );
  // token 0: 2/2 − 2·0.5 − 0.25; token 1: −2·2 − 1·0.5 − 0.25
  assertProbs(all.probs, softmax([-0.25, -4.75, 1, 0.5]));
  // Only the last penaltyLastN accepted tokens count; -1 counts all; 0 disables.
  assertProbs(
    candidates(logits, { ...PLAIN, presencePenalty: 1, penaltyLastN: 2 }, [0, 1, 2]).probs,
    softmax([2, -3, 0, 0.5]),
  );
  assertProbs(
    candidates(logits, { ...PLAIN, presencePenalty: 1, penaltyLastN: -1 }, [0, 1, 2]).probs,
    softmax([1, -3, 0, 0.5]),
  );
  assertProbs(
    candidates(logits, { ...PLAIN, presencePenalty: 1, penaltyLastN: 0 }, [0, 1, 2]).probs,
    softmax(logits),
  );
  // sample() remembers its pick: a strong repeat penalty moves greedy off the previous token.
  const s = new Sampler(3, { temperature: 0, repeatPenalty: 4 });
  const l = Float32Array.of(3, 2, 1);
  assert.deepEqual([s.sample(l), s.sample(l), s.sample(l)], [0, 1, 2]);
  s.reset();
  assert.equal(s.sample(l), 0);
});

Deno.test("logit bias shifts and bans tokens before the filters", () => {
  const c = candidates(FOUR, { ...PLAIN, logitBias: { 2: -Infinity, 1: Math.log(2) } });
  assert.deepEqual(c.ids, [0, 1, 3]);
  assertProbs(c.probs, [0.3 / 0.55, 0.1 / 0.55, 0.15 / 0.55]);
  const banned = new Sampler(2, { ...PLAIN, logitBias: { 0: -Infinity, 1: -Infinity } });
  assert.throws(() => banned.sample(Float32Array.of(1, 2)), DeltaqError);
  assert.throws(
    () =>
      new Sampler(2, { temperature: 0, logitBias: { 0: -Infinity, 1: -Infinity } }).sample(
        Float32Array.of(1, 2),
      ),
    DeltaqError,
  );
});

Deno.test("bad options and inputs are DeltaqErrors", () => {
  const bad: SamplerOptions[] = [
    { temperature: NaN },
    { topK: 1.5 },
    { minP: 1.5 },
    { repeatPenalty: 0 },
    { penaltyLastN: -2 },
    { seed: -1 },
    { seed: 2 ** 32 },
    { logitBias: { 9: 1 } },
    { logitBias: { 0: Infinity } },
  ];
  for (const options of bad) {
    assert.throws(() => new Sampler(4, options), DeltaqError, JSON.stringify(options));
  }
  assert.throws(() => new Sampler(0), DeltaqError);
  assert.throws(() => new Sampler(4).sample(new Float32Array(5)), DeltaqError);
});

Deno.test("same seed and logits give the same tokens; reset replays; another seed differs", () => {
  let state = 11;
  const rand = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const steps = Array.from({ length: 50 }, () => Float32Array.from({ length: 500 }, () => rand() * 6));
  const run = (s: Sampler) => steps.map((l) => s.sample(l));
  const a = new Sampler(500, { seed: 1234, temperature: 1, topK: 100, topP: 0.99, minP: 0 });
  const first = run(a);
  assert.deepEqual(
    run(new Sampler(500, { seed: 1234, temperature: 1, topK: 100, topP: 0.99, minP: 0 })),
    first,
  );
  a.reset();
  assert.deepEqual(run(a), first);
  assert.notDeepEqual(
    run(new Sampler(500, { seed: 1235, temperature: 1, topK: 100, topP: 0.99, minP: 0 })),
    first,
  );
  assert.equal(a.seed, 1234);
  const unseeded = new Sampler(10);
  assert.ok(Number.isInteger(unseeded.seed) && unseeded.seed >= 0 && unseeded.seed < 2 ** 32);
});

Deno.test("draw frequencies follow the softmax (temperature 1, no filters)", () => {
  const p = [0.1, 0.2, 0.3, 0.4];
  const s = new Sampler(4, { ...PLAIN, seed: 7 });
  const logits = Float32Array.from(p, Math.log);
  const n = 40_000;
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) counts[s.sample(logits)]++;
  p.forEach((pi, i) => {
    const bound = 4.5 * Math.sqrt(pi * (1 - pi) / n); // ~1e-5 chance per category for a fair sampler
    assert.ok(Math.abs(counts[i] / n - pi) < bound, `token ${i}: ${counts[i] / n} vs ${pi}`);
  });
});

// ---- the fast path against a plain reference --------------------------------------------------

/**
 * llama.cpp's chain written the obvious way: full stable sorts, filter by filter, the same float
 * rounding steps. Returns candidate ids and probabilities in llama.cpp's draw order.
 */
function reference(
  logits: Float32Array,
  o: Required<Omit<SamplerOptions, "logitBias" | "seed">> & {
    bias: Array<[number, number]>;
    history: number[];
  },
): { ids: number[]; probs: number[] } {
  const f = Math.fround;
  let c = Array.from(logits, (l, id) => ({ id, l: f(l), p: 0 }));
  for (const [id, b] of o.bias) c[id].l = f(c[id].l + b);
  const recent = o.penaltyLastN < 0 ? o.history : o.history.slice(-o.penaltyLastN);
  if (o.penaltyLastN !== 0) {
    const counts = new Map<number, number>();
    for (const t of recent) counts.set(t, (counts.get(t) ?? 0) + 1);
    for (const [id, n] of counts) {
      const x = c[id];
      x.l = x.l <= 0 ? f(x.l * f(o.repeatPenalty)) : f(x.l / f(o.repeatPenalty));
      x.l = f(x.l - f(f(n * f(o.frequencyPenalty)) + f(o.presencePenalty)));
    }
  }
  c = c.filter((x) => x.l > -Infinity);
  const maxOf = () => c.reduce((m, x) => Math.max(m, x.l), -Infinity);
  let sorted = false;
  const sort = () => {
    c.sort((a, b) => b.l - a.l || a.id - b.id);
    sorted = true;
  };
  if (o.topK > 0) {
    sort();
    c = c.slice(0, o.topK);
  }
  if (f(o.topP) < 1) {
    const max = maxOf();
    let sum = 0;
    for (const x of c) sum = f(sum + (x.p = f(Math.exp(f(x.l - max)))));
    for (const x of c) x.p = f(x.p / sum);
    if (!sorted) sort();
    let cum = 0;
    let keep = c.length;
    for (let i = 0; i < c.length; i++) {
      cum = f(cum + c[i].p);
      if (cum >= f(o.topP)) {
        keep = i + 1;
        break;
      }
    }
    c = c.slice(0, keep);
  }
  if (f(o.minP) > 0) {
    const threshold = f(maxOf() + f(Math.log(f(o.minP))));
    c = c.filter((x) => x.l >= threshold);
  }
  const scaled = c.map((x) => f(x.l / f(o.temperature)));
  const max = Math.max(...scaled);
  const e = scaled.map((s) => f(Math.exp(f(s - max))));
  const sum = e.reduce((a, b) => a + b, 0);
  return { ids: c.map((x) => x.id), probs: e.map((x) => f(x / sum)) };
}

Deno.test("fast path equals the plain reference on random distributions and settings", () => {
  let state = 99;
  const rand = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)];
  for (let trial = 0; trial < 60; trial++) {
    const vocab = pick([7, 300, 3000, 6000]);
    const spread = pick([0.01, 1, 4]); // 0.01: nearly flat, so top-p needs thousands of tokens
    const logits = Float32Array.from({ length: vocab }, () => (rand() - 0.5) * spread);
    for (let j = 0; j < 5; j++) logits[Math.floor(rand() * vocab)] += pick([0, 3, 8]);
    if (rand() < 0.3) logits[Math.floor(rand() * vocab)] = logits[Math.floor(rand() * vocab)]; // a tie
    const o = {
      temperature: pick([0.3, 0.8, 1, 1.7]),
      topK: pick([0, 0, 1, 5, 40, 5000]),
      topP: pick([1, 0.95, 0.5, 0.1]),
      minP: pick([0, 0.05, 0.5]),
      repeatPenalty: pick([1, 1.3]),
      frequencyPenalty: pick([0, 0.2]),
      presencePenalty: pick([0, 0.7]),
      penaltyLastN: pick([0, 3, 64, -1]),
      bias: [[Math.floor(rand() * vocab), pick([-Infinity, 1.5, -2])]] as Array<[number, number]>,
      history: Array.from({ length: 10 }, () => Math.floor(rand() * Math.min(vocab, 20))),
    };
    const s = new Sampler(vocab, { ...o, logitBias: new Map(o.bias), seed: 1 });
    s.accept(o.history);
    const got = s.candidates(logits);
    const want = reference(logits, o);
    const label = JSON.stringify({ trial, vocab, spread, ...o, history: undefined });
    assert.deepEqual([...got.ids], want.ids, label);
    assert.deepEqual([...got.probs], want.probs, label);
  }
});
