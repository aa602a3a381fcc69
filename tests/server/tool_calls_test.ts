// Qwen3.5 tool-call output → OpenAI tool calls: however the text is cut into pieces, arguments typed
// by the tool's schema, several calls, and malformed blocks released as plain content.
import assert from "node:assert/strict";
import type { ChatTool } from "../../src/chat/template.ts";
import { type ToolCallEvent, ToolCallParser, typedValue } from "../../src/server/tool_calls.ts";

const TOOLS: ChatTool[] = [{
  type: "function",
  function: {
    name: "search",
    parameters: {
      type: "object",
      properties: {
        query: { type: "string" },
        limit: { type: "integer" },
        ratio: { type: "number" },
        exact: { type: "boolean" },
        filters: { type: "object" },
        ids: { type: "array" },
        maybe: { type: ["integer", "null"] },
      },
    },
  },
}, { type: "function", function: { name: "now" } }];

const REPLY = "Let me look.\n\n<tool_call>\n<function=search>\n<parameter=query>\nrivers of France\nand Spain\n</parameter>\n" +
  "<parameter=limit>\n5\n</parameter>\n<parameter=ratio>\n0.5\n</parameter>\n<parameter=exact>\nTrue\n</parameter>\n" +
  '<parameter=filters>\n{"lang": "fr", "10": 1}\n</parameter>\n<parameter=ids>\n[1, 2]\n</parameter>\n<parameter=maybe>\nNone\n</parameter>\n' +
  "</function>\n</tool_call>\n<tool_call>\n<function=now>\n</function>\n</tool_call>";

function run(pieces: string[]): { content: string; calls: Array<{ name: string; args: unknown; raw: string }> } {
  const parser = new ToolCallParser(TOOLS);
  const events: ToolCallEvent[] = [];
  for (const p of pieces) events.push(...parser.push(p));
  events.push(...parser.flush());
  let content = "";
  const calls = [];
  for (const e of events) {
    if ("content" in e) content += e.content;
    else {
      assert.match(e.call.id, /^call_[A-Za-z0-9]{24}$/);
      assert.equal(e.call.type, "function");
      calls.push({ name: e.call.function.name, args: JSON.parse(e.call.function.arguments), raw: e.call.function.arguments });
    }
  }
  return { content, calls };
}

Deno.test("tool calls are parsed and typed by the schema, however the text is split", () => {
  const whole = run([REPLY]);
  assert.equal(whole.content, "Let me look.\n\n");
  assert.deepEqual(whole.calls.map((c) => c.name), ["search", "now"]);
  assert.deepEqual(whole.calls[0].args, {
    query: "rivers of France\nand Spain",
    limit: 5,
    ratio: 0.5,
    exact: true,
    filters: { lang: "fr", "10": 1 },
    ids: [1, 2],
    maybe: null,
  });
  assert.deepEqual(whole.calls[1].args, {});
  // arguments keep the order the model wrote them in
  assert.ok(whole.calls[0].raw.startsWith('{"query": '));
  for (const size of [1, 2, 3, 7, 13]) {
    const pieces = [];
    for (let i = 0; i < REPLY.length; i += size) pieces.push(REPLY.slice(i, i + size));
    assert.deepEqual(run(pieces).calls.map((c) => c.args), whole.calls.map((c) => c.args), `pieces of ${size}`);
    assert.equal(run(pieces).content, whole.content);
  }
});

Deno.test("malformed tool calls degrade to content", () => {
  const cases = [
    "<tool_call>\n<function=unknown_tool>\n</function>\n</tool_call>", // not offered
    "<tool_call>\nno function here\n</tool_call>",
    "<tool_call>\n<function=search>\n<parameter=query>\nx\n</parameter>\n", // never closed
    "<tool_call>\n<function=search>\nstray <parameter=query>\nx\n</parameter>\n</function>\n</tool_call>",
    "text with <tool_call but not a tag",
  ];
  for (const text of cases) {
    const r = run([text]);
    assert.deepEqual(r.calls, [], text);
    assert.equal(r.content, text);
  }
});

Deno.test("parameter values follow their schema, and stay text when they do not fit it", () => {
  assert.equal(typedValue("42", { type: "integer" }), 42);
  assert.equal(typedValue("4.2", { type: "integer" }), "4.2");
  assert.equal(typedValue("4.2", { type: "number" }), 4.2);
  assert.equal(typedValue("false", { type: "boolean" }), false);
  assert.equal(typedValue("yes", { type: "boolean" }), "yes");
  assert.equal(typedValue("null", { anyOf: [{ type: "string" }, { type: "null" }] }), null);
  assert.equal(typedValue("007", { type: "string" }), "007");
  assert.equal(typedValue("[1", { type: "array" }), "[1");
  assert.deepEqual(typedValue("[1]", undefined), [1]);
  assert.equal(typedValue("Paris", undefined), "Paris");
  assert.equal(typedValue('"quoted"', undefined), '"quoted"');
});
