// The chat template renderer against Python jinja2 itself, set up as transformers sets it up
// (tests/chat/jinja2_render.py): the real Qwen3.5 template with tool calls whose arguments hold
// None, booleans, floats in exponent form, integer-like keys, big integers and nested values, and
// a small template printing values every way a template can (`{{ }}`, `|string`, `~`, `|tojson`).
// Both sides read the same JSON text, the TypeScript side with ../../src/chat/json.ts.
import assert from "node:assert/strict";
import { ChatTemplate } from "../../src/chat/template.ts";
import { parseJson } from "../../src/chat/json.ts";
import { pythonFloat } from "../../src/chat/python.ts";

const QWEN35 = Deno.readTextFileSync(new URL("./qwen3.5-4b.chat_template.jinja", import.meta.url));
const RENDER_PY = decodeURIComponent(new URL("./jinja2_render.py", import.meta.url).pathname);

function python(): { skip?: string } {
  try {
    const out = new Deno.Command("python3", { args: ["-c", "import sys; print(sys.version)"], stdout: "null", stderr: "null" })
      .outputSync();
    return out.success ? {} : { skip: "python3 does not run" };
  } catch {
    return { skip: "python3 is not installed (the comparison needs Python jinja2)" };
  }
}
const py = python();
if (py.skip) console.warn(`jinja2_test skipped: ${py.skip}`);

/** Renders a JSON list of cases with jinja2; fails (not skips) when jinja2 is missing. */
async function jinja2(casesJson: string): Promise<Array<{ text?: string; error?: string }>> {
  const child = new Deno.Command("python3", { args: [RENDER_PY], stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(casesJson));
  await writer.close();
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (/No module named 'jinja2'/.test(stderr)) {
    throw new Error("Python has no jinja2: `python3 -m pip install jinja2` (.ci/run installs it)");
  }
  assert.ok(out.success, stderr);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

interface Case {
  template: string;
  messages: unknown[];
  tools?: unknown[];
  add_generation_prompt?: boolean;
  enable_thinking?: boolean;
  variables?: Record<string, unknown>;
}

function renderHere(c: Case): { text?: string; error?: string } {
  try {
    const t = new ChatTemplate(c.template);
    return {
      text: t.render(c.messages as never, {
        tools: c.tools as never,
        addGenerationPrompt: c.add_generation_prompt ?? true,
        enableThinking: c.enable_thinking,
        variables: c.variables,
      }).text,
    };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

// Argument values whose printing differs between JavaScript and Python.
const ARGUMENTS = `{"b": 1, "10": "ten", "2": null, "flag": true, "off": false, "eps": 1e-7, "tiny": 0.00001,
  "small": 0.0001, "one": 1.0, "negzero": -0.0, "big": 1e16, "huge": 1.5e300, "plain": 123.456,
  "int": 42, "bigint": 12345678901234567890, "neg": -7, "text": "héllo ☃ 😀 \\"q\\" 'a'",
  "list": [1, 1.0, null, true, "x", 2.5e-8, {"3": 1, "a": 2}],
  "obj": {"z": 1, "1": [false, 0.5], "y": {"k": 1e100}}, "empty": {}, "none_list": []}`;

const CASES_JSON = `[
  {"template": ${JSON.stringify(QWEN35)}, "enable_thinking": false, "messages": [
    {"role": "user", "content": "Call the tool."},
    {"role": "assistant", "content": "", "tool_calls": [
      {"id": "c1", "type": "function", "function": {"name": "probe", "arguments": ${JSON.stringify(ARGUMENTS)}}},
      {"id": "c2", "type": "function", "function": {"name": "probe", "arguments": ${ARGUMENTS}}}
    ]},
    {"role": "tool", "tool_call_id": "c1", "content": "ok"}
  ]},
  {"template": ${JSON.stringify(QWEN35)}, "messages": [{"role": "user", "content": "Weather?"}],
   "tools": [{"type": "function", "function": {"name": "w", "description": "ünïcode \\"quoted\\"",
     "parameters": {"type": "object", "properties": {"b": {"type": "number", "minimum": 0.0, "maximum": 1e-3},
       "10": {"type": "integer", "default": 3}, "flag": {"type": "boolean", "default": false},
       "opt": {"type": ["string", "null"], "default": null}}, "required": ["b"]}}}]},
  {"template": "{% for k, v in x|items %}{{ k }}={{ v }}|{{ v|string }}|{{ 'c' ~ v }}|{{ v|tojson }};{% endfor %}",
   "messages": [], "variables": {"x": ${ARGUMENTS}}},
  {"template": "{{ x|tojson(indent=2) }}\\n{{ x|tojson(sort_keys=true) }}\\n{{ x|tojson(separators=(',', ':')) }}\\n{{ x|tojson(ensure_ascii=true) }}\\n{{ x }}\\n{{ none }}{{ true }}{{ 1.0 }}{{ x.list }}",
   "messages": [], "variables": {"x": ${ARGUMENTS}}},
  {"template": "{% set y = none %}{{ y }}{% if y is none %}none{% endif %}{{ x.obj.z|string }}{{ x.eps * 10 }}",
   "messages": [], "variables": {"x": ${ARGUMENTS}}}
]`;

Deno.test({
  name: "chat template rendering matches Python jinja2 (transformers' setup) value for value",
  ignore: py.skip !== undefined,
  async fn() {
    const cases = parseJson(CASES_JSON) as Case[];
    const expected = await jinja2(CASES_JSON);
    assert.equal(expected.length, cases.length);
    for (const [i, c] of cases.entries()) {
      const want = expected[i];
      assert.ok(want.text !== undefined, `case ${i}: jinja2 failed: ${want.error}`);
      const got = renderHere(c);
      assert.equal(got.error, undefined, `case ${i}: ${got.error}`);
      assert.equal(got.text, want.text, `case ${i}`);
    }
  },
});

Deno.test("the issue's four divergences, spelled out", () => {
  const t = new ChatTemplate(QWEN35);
  const { text } = t.render([
    { role: "user", content: "go" },
    {
      role: "assistant",
      content: "",
      tool_calls: [{ function: { name: "f", arguments: '{"b": 1, "10": null, "t": true, "f": false, "e": 1e-7}' } }],
    },
  ], { addGenerationPrompt: false });
  const params = [...text.matchAll(/<parameter=([^>]*)>\n([^\n]*)\n/g)].map((m) => `${m[1]}=${m[2]}`);
  assert.deepEqual(params, ["b=1", "10=None", "t=True", "f=False", "e=1e-07"]);
});

Deno.test("Python float repr", () => {
  const cases: Array<[number, string]> = [
    [1e-7, "1e-07"],
    [1e-5, "1e-05"],
    [0.0001, "0.0001"],
    [1, "1.0"],
    [-0, "-0.0"],
    [1e16, "1e+16"],
    [1.5e300, "1.5e+300"],
    [123456789012345.6, "123456789012345.6"],
    [0.1 + 0.2, "0.30000000000000004"],
    [Infinity, "inf"],
  ];
  for (const [x, want] of cases) assert.equal(pythonFloat(x), want, String(x));
});
