// Structured output: the JSON-schema automaton accepts exactly the documents it should, and the
// token constraint built on it, driven by random logits over a real Qwen vocabulary, always ends
// with a document that parses and validates (checked by Ajv, an independent validator).
import assert from "node:assert/strict";
import Ajv from "npm:ajv@8.17.1";
import { canEnd, compileSchema, SchemaError, type Stack, startState, step } from "../../src/generate/json_schema.ts";
import { jsonConstraint } from "../../src/generate/constraint.ts";
import { loadTokenizer, type Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { fixture } from "../fixtures.ts";

function accepts(schema: unknown, text: string): boolean {
  let states: Stack[] = startState(compileSchema(schema));
  for (const b of new TextEncoder().encode(text)) {
    states = states.flatMap((s) => step(s, b));
    if (states.length === 0) return false;
  }
  return states.some(canEnd);
}

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", minLength: 1, maxLength: 12 },
    age: { type: "integer", minimum: 0, maximum: 150 },
    score: { type: "number", exclusiveMinimum: -1, maximum: 1 },
    tags: { type: "array", items: { enum: ["a", "b", 3, null] }, maxItems: 3 },
    nick: { type: ["string", "null"], maxLength: 4 },
    ok: { type: "boolean" },
    kind: { const: "person" },
    where: { $ref: "#/$defs/place" },
  },
  required: ["name", "age", "ok", "kind"],
  additionalProperties: false,
  $defs: { place: { anyOf: [{ type: "null" }, { type: "object", properties: { x: { type: "integer" } }, required: ["x"] }] } },
};

Deno.test("json automaton: documents in and out of a schema", () => {
  const yes = [
    '{"name": "Ada", "age": 36, "ok": true, "kind": "person"}',
    '\n\n{"kind":"person","ok":false,"age":0,"name":"é\\u00e9\\n"}\n',
    '{\n  "name": "E",\n  "age": 1,\n\t"ok": true,\n  "kind": "person"\n}',
    '{"name": "B", "age": 150, "ok": true, "kind": "person", "score": -0.5, "tags": ["a", 3, null], "nick": null}',
    '{"name": "C", "age": 7, "ok": true, "kind": "person", "where": {"x": -3}, "nick": "abcd", "score": 1}',
    '{"name": "D", "age": 7, "ok": true, "kind": "person", "where": null, "tags": []}',
  ];
  const no = [
    '{"name": "Ada", "age": 36, "ok": true}', // kind missing
    '{"name": "", "age": 36, "ok": true, "kind": "person"}', // minLength
    '{"name": "Ada", "age": 151, "ok": true, "kind": "person"}', // maximum
    '{"name": "Ada", "age": -1, "ok": true, "kind": "person"}', // minimum
    '{"name": "Ada", "age": 3.5, "ok": true, "kind": "person"}', // integer
    '{"name": "Ada", "age": 1e2, "ok": true, "kind": "person"}', // no exponent with bounds
    '{"name": "Ada", "age": 3, "ok": true, "kind": "person", "score": -1}', // exclusiveMinimum
    '{"name": "Ada", "age": 3, "ok": true, "kind": "human"}', // const
    '{"name": "Ada", "age": 3, "ok": true, "kind": "person", "extra": 1}', // additionalProperties
    '{"name": "Ada", "name": "B", "age": 3, "ok": true, "kind": "person"}', // repeated key
    '{"name": "Ada", "age": 3, "ok": true, "kind": "person", "tags": ["a","b","a","b"]}', // maxItems
    '{"name": "Ada", "age": 3, "ok": true, "kind": "person", "tags": ["c"]}', // enum
    '{"name": "Ada", "age": 3, "ok": true, "kind": "person", "nick": "abcde"}', // maxLength
    '{"name": "Ada", "age": 3, "ok": true, "kind": "person", "where": {}}', // required in $ref'd anyOf
    '{"name": "A\\x", "age": 3, "ok": true, "kind": "person"}', // bad escape
    '{"name": "A\u0001", "age": 3, "ok": true, "kind": "person"}', // control character
    '{"name": "Ada", "age": 03, "ok": true, "kind": "person"}', // leading zero
    '{"name": "Ada", "age": 3, "ok": true, "kind": "person"',
    '{"name": "Ada", "age": 3, "ok": true, "kind": "person"} x',
    "{" + " ".repeat(2) + "}", // whitespace: nothing, one space, or a newline and indentation
    "{\n\n}",
    "\n\n\n\n\n{}",
    "{\n" + " ".repeat(21) + "}",
  ];
  for (const t of yes) assert.ok(accepts(PERSON, t), `should accept ${t}`);
  for (const t of no) assert.ok(!accepts(PERSON, t), `should reject ${t}`);
  // invalid UTF-8 inside a string: a lone continuation byte, a surrogate, an overlong form
  const bytes = (b: number[]) => String.fromCharCode(...b);
  for (const bad of [[0x80], [0xed, 0xa0, 0x80], [0xc0, 0xaf]]) {
    let states: Stack[] = startState(compileSchema({ type: "string" }));
    for (const b of [0x22, ...bad]) states = states.flatMap((s) => step(s, b));
    assert.equal(states.length, 0, `UTF-8 ${bytes(bad)}`);
  }
  // any JSON value / any object
  assert.ok(accepts(true, '[1, -2.5e+3, "x", {"a": [null, true]}, {}]'));
  assert.ok(accepts({ type: "object" }, '{"a": {"b": [1, {"c": "d"}]}, "e": 0.1}'));
  assert.ok(!accepts({ type: "object" }, "[1]"));
});

Deno.test("json automaton: schemas it cannot enforce are refused up front", () => {
  for (const schema of [
    { type: "string", pattern: "^a" },
    { type: "object", patternProperties: {} },
    { type: "number", multipleOf: 3 },
    { allOf: [{ type: "string" }, { maxLength: 3 }] },
    { $ref: "#/nowhere" },
    { type: "strange" },
    "not a schema",
  ]) {
    assert.throws(() => compileSchema(schema), SchemaError, JSON.stringify(schema));
  }
});

const realVocab = fixture("qwen35-real-vocab.gguf");
const vocab = realVocab.path ? realVocab : fixture("ggml-vocab-qwen35.gguf");

/** Generates under the constraint with random logits; returns the text (undefined: no end in time). */
function generate(tokenizer: Tokenizer, schema: unknown, seed: number, maxSteps: number): string | undefined {
  const constraint = jsonConstraint(tokenizer, schema);
  let x = seed >>> 0 || 1; // xorshift32: a cheap stream of random logits
  const logits = new Float32Array(tokenizer.vocabSize);
  const eog = new Set(tokenizer.endOfGenerationIds);
  const out: number[] = [];
  for (let i = 0; i < maxSteps; i++) {
    for (let j = 0; j < logits.length; j++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      logits[j] = (x >>> 0) / 2 ** 30;
    }
    constraint.mask(logits);
    // prefer ending when allowed, so documents finish
    let best = -1;
    for (const id of eog) if (logits[id] > -Infinity) best = id;
    if (best >= 0) return tokenizer.detokenize(out);
    for (let j = 0; j < logits.length; j++) if (best < 0 || logits[j] > logits[best]) best = j;
    assert.ok(logits[best] > -Infinity, "the constraint masked every token");
    constraint.accept(best);
    out.push(best);
  }
  return undefined;
}

Deno.test({
  name: "json constraint: random logits over a real vocabulary always give valid documents",
  ignore: vocab.skip !== undefined,
  fn() {
    const tokenizer = loadTokenizer(vocab.path!);
    const ajv = new (Ajv as unknown as new (o: object) => { compile(s: unknown): ((x: unknown) => boolean) & { errors?: unknown } })({ strict: false });
    const schemas = [
      PERSON,
      { type: "array", items: { type: "integer", minimum: -5, maximum: 5 }, minItems: 1, maxItems: 4 },
      { type: "object", properties: { a: { type: "string", maxLength: 6 }, b: { enum: [1, 12, 123] } }, required: ["a", "b"] },
    ];
    let done = 0;
    for (const [i, schema] of schemas.entries()) {
      const validate = ajv.compile(schema);
      for (let seed = 1; seed <= 3; seed++) {
        const text = generate(tokenizer, schema, seed * 10 + i, 400);
        if (text === undefined) continue;
        const doc = JSON.parse(text);
        assert.ok(validate(doc), `schema ${i} seed ${seed}: ${text} ${JSON.stringify(validate.errors)}`);
        done++;
      }
    }
    assert.ok(done >= 6, `only ${done} of 9 generations ended within 400 tokens`);

    // Every token of a valid document is allowed when it comes (mask and accept agree).
    const text = '{"name": "Zoë \\"Z\\" Ünal", "age": 41, "ok": false, "kind": "person", "tags": ["b", null], "where": {"x": 12}}';
    const constraint = jsonConstraint(tokenizer, PERSON);
    const logits = new Float32Array(tokenizer.vocabSize);
    for (const id of tokenizer.tokenize(text)) {
      logits.fill(0);
      constraint.mask(logits);
      assert.equal(logits[id], 0, `token ${JSON.stringify(tokenizer.detokenize([id]))} was masked`);
      constraint.accept(id);
    }
    assert.ok(constraint.complete);
    logits.fill(0);
    constraint.mask(logits);
    assert.ok(tokenizer.endOfGenerationIds.some((id) => logits[id] === 0));
  },
});
