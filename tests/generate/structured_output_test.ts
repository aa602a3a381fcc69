// The library's responseFormat option: model.chat / model.generate keep the answer to JSON (a
// schema) while sampling, after the thinking when thinking is on.
import assert from "node:assert/strict";
import Ajv from "npm:ajv@8.17.1";
import { tinyChatModel } from "../server/helpers.ts";

const SCHEMA = {
  type: "object",
  properties: { name: { type: "string", maxLength: 6 }, n: { type: "integer", minimum: 1, maximum: 9 } },
  required: ["name", "n"],
  additionalProperties: false,
};

Deno.test("responseFormat json_schema in model.chat and model.generate", async () => {
  const model = await tinyChatModel();
  const validate = new (Ajv as unknown as new () => { compile(s: unknown): (x: unknown) => boolean })().compile(SCHEMA);
  const format = { type: "json_schema" as const, json_schema: { name: "t", schema: SCHEMA } };
  for (const seed of [1, 2]) {
    const r = await model.chat([{ role: "user", content: "Give me JSON." }], {
      enableThinking: false,
      temperature: 1,
      seed,
      maxTokens: 80,
      responseFormat: format,
    }).result;
    assert.equal(r.stopReason, "eog", r.text);
    assert.ok(validate(JSON.parse(r.text)), r.text);
  }
  const g = await model.generate("Data:", { temperature: 0, maxTokens: 80, responseFormat: { type: "json_object" } }).result;
  assert.equal(g.stopReason, "eog", g.text);
  assert.equal(typeof JSON.parse(g.text), "object");
  // with thinking on, the thinking is free and the JSON comes after </think>: a schema the model
  // cannot end without closing still holds once the answer starts
  const think = await model.chat([{ role: "user", content: "Hi" }], { temperature: 0, maxTokens: 20, responseFormat: format }).result;
  assert.ok(think.stopReason === "length" || validate(JSON.parse(think.text)));
  assert.throws(() => model.generate("x", { responseFormat: { type: "json_schema", json_schema: { schema: { pattern: "a" } } } }), /pattern/);
});
