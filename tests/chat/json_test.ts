// parseJson: agrees with JSON.parse on values, rejects what JSON.parse rejects, and remembers key
// order and number literal kinds.
import assert from "node:assert/strict";
import { jsonSource, JsonSyntaxError, parseJson } from "../../src/chat/json.ts";

Deno.test("parseJson agrees with JSON.parse and rejects what it rejects", () => {
  const good = [
    '{"a": [1, 2.5, -0, 1e3, "x\\u00e9\\n"], "b": {"c": null, "d": true, "e": false}}',
    "[]",
    " {} ",
    '"\\ud83d\\ude00"',
    "-12.5e-3",
    '{"__proto__": {"polluted": 1}}',
  ];
  for (const text of good) assert.deepEqual(parseJson(text), JSON.parse(text), text);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  const bad = ["", "{", "[1,]", '{"a" 1}', "01", "1.", ".5", "+1", "tru", '"\\x"', '"a\nb"', "[1] 2", "{'a': 1}", "NaN"];
  for (const text of bad) {
    assert.throws(() => JSON.parse(text), SyntaxError, text);
    assert.throws(() => parseJson(text), JsonSyntaxError, text);
  }
  assert.throws(() => parseJson("[".repeat(600) + "]".repeat(600)), /nesting deeper than 512/);
  assert.deepEqual(parseJson("[".repeat(10) + "]".repeat(10), { maxDepth: 10 }), JSON.parse("[".repeat(10) + "]".repeat(10)));
});

Deno.test("parseJson remembers key order, float literals and big integer digits", () => {
  const v = parseJson('{"b": 1, "10": 2.0, "2": 12345678901234567890, "b": 3, "x": [1.0, 2, 3.5]}') as Record<string, unknown>;
  assert.deepEqual(Object.keys(v), ["2", "10", "b", "x"]); // JavaScript's order…
  const source = jsonSource(v)!;
  assert.deepEqual(source.keys, ["b", "10", "2", "x"]); // …and the written one (duplicates keep the first place)
  assert.equal(v.b, 3); // the last value wins, as in Python
  assert.deepEqual([...source.numbers!], [["10", "float"], ["2", "12345678901234567890"]]);
  assert.deepEqual([...jsonSource(v.x)!.numbers!], [[0, "float"]]);
  assert.equal(jsonSource(parseJson('{"a": 1, "b": 2.5}')), undefined); // nothing to remember
});
