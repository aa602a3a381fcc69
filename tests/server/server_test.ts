// The HTTP server with raw requests: the OpenAI response shapes field by field, streaming, stop
// strings, logprobs, structured output through the real engine, errors and limits, auth, CORS, and
// abuse (garbage, a stalled body, a client leaving mid-stream). Servers listen on 127.0.0.1 only,
// every loop is bounded, every server is closed.
import assert from "node:assert/strict";
import Ajv from "npm:ajv@8.17.1";
import { post, readEvents, ScriptedEngine, tinyChatModel, withServer } from "./helpers.ts";

const USER = [{ role: "user", content: "Name a river." }];
const GREEDY = { temperature: 0, chat_template_kwargs: { enable_thinking: false } };

// deno-lint-ignore no-explicit-any
type Json = any;

Deno.test("chat completion: every field of the OpenAI shape, deterministic at temperature 0, cached prefix reported", () =>
  withServer({}, async (server) => {
    assert.equal(server.hostname, "127.0.0.1");
    const ask = async () => {
      const r = await post(server, "/v1/chat/completions", { model: "whatever", messages: USER, max_tokens: 6, ...GREEDY });
      assert.equal(r.status, 200);
      assert.match(r.headers.get("content-type")!, /application\/json/);
      return await r.json() as Json;
    };
    const a = await ask();
    assert.match(a.id, /^chatcmpl-[0-9a-f]{24}$/);
    assert.equal(a.object, "chat.completion");
    assert.ok(Number.isInteger(a.created) && Math.abs(a.created - Date.now() / 1000) < 60);
    assert.equal(typeof a.model, "string");
    assert.equal(a.choices.length, 1);
    const c = a.choices[0];
    assert.equal(c.index, 0);
    assert.equal(c.message.role, "assistant");
    assert.equal(typeof c.message.content, "string");
    assert.equal(c.message.refusal, null);
    assert.equal(c.logprobs, null);
    assert.ok(["stop", "length"].includes(c.finish_reason));
    assert.equal(a.usage.completion_tokens <= 6, true);
    assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
    assert.equal(a.usage.prompt_tokens_details.cached_tokens, 0);
    assert.equal(a.usage.completion_tokens_details.reasoning_tokens, 0);
    const b = await ask();
    assert.equal(b.choices[0].message.content, c.message.content);
    assert.equal(b.usage.prompt_tokens, a.usage.prompt_tokens);
    const cached = b.usage.prompt_tokens_details.cached_tokens;
    assert.ok(Number.isInteger(cached) && cached >= 0 && cached < b.usage.prompt_tokens);
  }));

Deno.test("streaming: chunks, include_usage, [DONE], same text as without streaming; stop strings and logprobs", () =>
  withServer({}, async (server) => {
    const plain = await (await post(server, "/v1/chat/completions", { messages: USER, max_tokens: 12, ...GREEDY })).json() as Json;
    const text: string = plain.choices[0].message.content;
    const r = await post(server, "/v1/chat/completions", {
      messages: USER,
      max_tokens: 12,
      stream: true,
      stream_options: { include_usage: true },
      ...GREEDY,
    });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type")!, /text\/event-stream/);
    const events = await readEvents(r);
    assert.equal(events.at(-1), "[DONE]");
    const chunks = events.slice(0, -1) as Json[];
    const id = chunks[0].id;
    for (const ch of chunks) {
      assert.equal(ch.object, "chat.completion.chunk");
      assert.equal(ch.id, id);
      assert.ok("usage" in ch);
    }
    assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
    const usageChunk = chunks.at(-1);
    assert.deepEqual(usageChunk.choices, []);
    assert.equal(usageChunk.usage.completion_tokens, plain.usage.completion_tokens);
    const last = chunks.at(-2);
    assert.equal(last.choices[0].finish_reason, plain.choices[0].finish_reason);
    const streamed = chunks.flatMap((ch) => ch.choices.map((x: Json) => x.delta.content ?? "")).join("");
    assert.equal(streamed.trim(), text);

    // a stop string taken from the greedy reply cuts it there
    const words = text.split(/\s+/).filter((w) => w.length >= 2);
    if (words.length > 1) {
      const stop = words[1];
      const s = await (await post(server, "/v1/chat/completions", { messages: USER, max_tokens: 12, stop, ...GREEDY })).json() as Json;
      assert.equal(s.choices[0].finish_reason, "stop");
      assert.equal(s.choices[0].message.content, text.slice(0, text.indexOf(stop)).trim());
    }

    // logprobs: one entry per token, alternatives sorted, the greedy choice the most likely
    const l = await (await post(server, "/v1/chat/completions", { messages: USER, max_tokens: 5, logprobs: true, top_logprobs: 3, ...GREEDY })).json() as Json;
    const content = l.choices[0].logprobs.content;
    assert.equal(content.length, l.usage.completion_tokens);
    for (const t of content) {
      assert.equal(t.top_logprobs.length, 3);
      assert.ok(t.logprob <= 0 && Array.isArray(t.bytes) && typeof t.token === "string");
      assert.equal(t.top_logprobs[0].logprob, t.logprob);
      for (let i = 1; i < 3; i++) assert.ok(t.top_logprobs[i].logprob <= t.top_logprobs[i - 1].logprob);
    }
  }));

Deno.test("completions endpoint, models, health, metrics", () =>
  withServer({ modelName: "tiny" }, async (server) => {
    const r = await (await post(server, "/v1/completions", { prompt: "Once upon a time", max_tokens: 4, temperature: 0, logprobs: 2 })).json() as Json;
    assert.match(r.id, /^cmpl-/);
    assert.equal(r.object, "text_completion");
    assert.equal(r.model, "tiny");
    assert.equal(typeof r.choices[0].text, "string");
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.length, r.usage.completion_tokens);
    assert.equal(lp.tokens.join(""), r.choices[0].text);
    assert.deepEqual(lp.text_offset[0], 0);
    assert.equal(Object.keys(lp.top_logprobs[0]).length <= 2, true);
    const events = await readEvents(await post(server, "/v1/completions", { prompt: [1, 2, 3], max_tokens: 3, stream: true, temperature: 0 }));
    assert.equal(events.at(-1), "[DONE]");
    assert.equal((events.at(-2) as Json).choices[0].finish_reason, "length");

    const models = await (await fetch(`${server.url}/v1/models`)).json() as Json;
    assert.deepEqual(models.data.map((m: Json) => [m.id, m.object, m.owned_by]), [["tiny", "model", "deltaq"]]);
    assert.equal((await fetch(`${server.url}/v1/models/tiny`)).status, 200);
    const missing = await fetch(`${server.url}/v1/models/other`);
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as Json).error.code, "model_not_found");
    assert.deepEqual(await (await fetch(`${server.url}/health`)).json(), { status: "ok" });
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^deltaq_http_requests_total\{route="completions",status="200"\} 2$/m);
    assert.match(metrics, /^deltaq_generated_tokens_total \d+$/m);
    assert.match(metrics, /^deltaq_time_to_first_token_seconds_count 2$/m);
    assert.match(metrics, /^deltaq_prompt_cache_hits_total \d+$/m);
  }));

Deno.test("structured output through the engine: the reply parses and validates", () =>
  withServer({}, async (server) => {
    const schema = {
      type: "object",
      properties: {
        river: { type: "string", maxLength: 10 },
        length_km: { type: "integer", minimum: 0, maximum: 9999 },
        countries: { type: "array", items: { enum: ["FR", "DE", "NL"] }, minItems: 1, maxItems: 3 },
        navigable: { type: "boolean" },
      },
      required: ["river", "length_km", "countries", "navigable"],
      additionalProperties: false,
    };
    const validate = new (Ajv as unknown as new () => { compile(s: unknown): (x: unknown) => boolean })().compile(schema);
    for (const temperature of [0, 1]) {
      const r = await (await post(server, "/v1/chat/completions", {
        messages: USER,
        max_tokens: 200,
        temperature,
        seed: 3,
        chat_template_kwargs: { enable_thinking: false },
        response_format: { type: "json_schema", json_schema: { name: "river", strict: true, schema } },
      })).json() as Json;
      assert.equal(r.choices[0].finish_reason, "stop", JSON.stringify(r));
      const doc = JSON.parse(r.choices[0].message.content);
      assert.ok(validate(doc), r.choices[0].message.content);
    }
    const obj = await (await post(server, "/v1/chat/completions", {
      messages: USER,
      max_tokens: 8,
      ...GREEDY,
      response_format: { type: "json_object" },
    })).json() as Json;
    assert.match(obj.choices[0].message.content, /^\{/);
  }));

Deno.test("tool_choice required / a named function: the reply opens with a call to that tool", () =>
  withServer({}, async (server) => {
    const tool = (name: string) => ({ type: "function", function: { name, parameters: { type: "object", properties: { q: { type: "string" } } } } });
    for (const [choice, names] of [["required", "lookup|other"], [{ type: "function", function: { name: "other" } }, "other"]] as const) {
      const r = await (await post(server, "/v1/chat/completions", {
        messages: USER,
        tools: [tool("lookup"), tool("other")],
        tool_choice: choice,
        max_tokens: 24,
        ...GREEDY,
      })).json() as Json;
      // a random model does not close the call in 24 tokens, so its opening comes back as text
      assert.match(r.choices[0].message.content, new RegExp(`^<tool_call>\n<function=(${names})>\n`));
    }
    const both = await post(server, "/v1/chat/completions", {
      messages: USER,
      tools: [tool("lookup")],
      tool_choice: "required",
      response_format: { type: "json_object" },
    });
    assert.equal(both.status, 400);
    await both.body?.cancel();
  }));

Deno.test("bad requests get OpenAI error objects with the right status; unknown fields are ignored", () =>
  withServer({ limits: { maxBodyBytes: 20_000, maxMessages: 4, maxTokens: 64, maxPromptTokens: 300 } }, async (server, model) => {
    const expect = async (body: unknown, status: number, match: RegExp, param?: string) => {
      const r = await post(server, "/v1/chat/completions", body);
      const j = await r.json() as Json;
      assert.equal(r.status, status, JSON.stringify(j));
      assert.equal(typeof j.error.message, "string");
      assert.equal(typeof j.error.type, "string");
      assert.ok("param" in j.error && "code" in j.error);
      assert.match(j.error.message, match);
      if (param !== undefined) assert.equal(j.error.param, param);
    };
    await expect("{not json", 400, /not valid JSON/);
    await expect("[1, 2]", 400, /JSON object/);
    await expect("[".repeat(5000) + "]".repeat(5000), 400, /nesting/);
    await expect({}, 400, /messages/, "messages");
    await expect({ messages: "hi" }, 400, /expected an array/, "messages");
    await expect({ messages: [] }, 400, /at least one/, "messages");
    await expect({ messages: [{ role: "robot", content: "x" }] }, 400, /role/, "messages[0].role");
    await expect({ messages: [{ role: "user", content: 5 }] }, 400, /content/, "messages[0].content");
    await expect({ messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] }, 400, /only text parts/);
    await expect({ messages: USER, temperature: "hot" }, 400, /number/, "temperature");
    await expect({ messages: USER, temperature: 3 }, 400, /at most 2/, "temperature");
    await expect({ messages: USER, max_tokens: 1.5 }, 400, /integer/, "max_tokens");
    await expect({ messages: USER, max_tokens: 65 }, 400, /at most 64/, "max_tokens");
    await expect({ messages: USER, max_completion_tokens: 0 }, 400, /at least 1/, "max_completion_tokens");
    await expect({ messages: USER, stop: [1] }, 400, /stop/, "stop");
    await expect({ messages: USER, n: 2 }, 400, /n = 1/, "n");
    await expect({ messages: USER, top_logprobs: 2 }, 400, /logprobs/, "top_logprobs");
    await expect({ messages: USER, stream: "yes" }, 400, /boolean/, "stream");
    await expect({ messages: USER, tools: [{ type: "function", function: {} }] }, 400, /name/);
    await expect({ messages: USER, tool_choice: { type: "function", function: { name: "x" } } }, 400, /no tool named/);
    await expect({ messages: USER, response_format: { type: "xml" } }, 400, /response_format/);
    await expect({ messages: USER, response_format: { type: "json_schema", json_schema: { schema: { type: "string", pattern: "a+" } } } }, 400, /pattern/, "response_format");
    await expect({ messages: Array(5).fill(USER[0]) }, 400, /at most 4 messages/);
    await expect({ messages: [{ role: "assistant", content: "only" }] }, 400, /No user query/); // the template refuses
    await expect({ messages: [{ role: "user", content: "word ".repeat(5000) }] }, 413, /larger than 20000 bytes/);
    // too many tokens; and refused before tokenizing when the text alone is too long (a token
    // covers at most the longest piece of the vocabulary)
    const longest = Math.max(...Array.from({ length: model.tokenizer.vocabSize }, (_, id) => model.tokenizer.tokenToPiece(id).length));
    await expect({ messages: [{ role: "user", content: " y".repeat(Math.floor(300 * longest / 2) - 20) }] }, 400, /more than the 300/);
    await expect({ messages: [{ role: "user", content: "a".repeat(300 * longest + 1) }] }, 400, /characters\) is longer than 300 tokens/);
    const completions = await post(server, "/v1/completions", { prompt: 7 });
    assert.equal(completions.status, 400);
    // vendor extensions and unknown fields do not matter
    const ok = await post(server, "/v1/chat/completions", {
      messages: [{ role: "user", content: "hi", some_vendor_field: { x: 1 } }],
      max_tokens: 2,
      user: "u1",
      parallel_tool_calls: true,
      unknown_field: [1, 2, 3],
    });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    const notFound = await fetch(`${server.url}/v2/nothing`);
    assert.equal(notFound.status, 404);
    await notFound.body?.cancel();
    const wrongMethod = await fetch(`${server.url}/v1/chat/completions`);
    assert.equal(wrongMethod.status, 405);
    await wrongMethod.body?.cancel();
  }));

Deno.test("API key (constant-time check; /health open) and CORS", () =>
  withServer({ apiKey: "sekrit-key", cors: "https://app.example" }, async (server) => {
    const models = (key?: string) => fetch(`${server.url}/v1/models`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
    for (const key of [undefined, "wrong", "sekrit-ke", "sekrit-key2"]) {
      const r = await models(key);
      assert.equal(r.status, 401);
      const j = await r.json() as Json;
      assert.equal(j.error.type, "authentication_error");
    }
    const ok = await models("sekrit-key");
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("access-control-allow-origin"), "https://app.example");
    await ok.body?.cancel();
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
    const chat = await post(server, "/v1/chat/completions", { messages: USER, max_tokens: 1 }, { authorization: "Bearer nope" });
    assert.equal(chat.status, 401);
    await chat.body?.cancel();
    const preflight = await fetch(`${server.url}/v1/chat/completions`, { method: "OPTIONS" });
    assert.equal(preflight.status, 204);
    assert.match(preflight.headers.get("access-control-allow-headers")!, /authorization/);
    await preflight.body?.cancel();
  }));

/** Sends raw bytes on a new connection and returns what comes back before the server closes it or `ms` pass. */
async function raw(server: { port: number }, bytes: Uint8Array, ms = 2000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await conn.write(bytes);
    const buf = new Uint8Array(4096);
    let out = "";
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const n = await Promise.race([conn.read(buf), new Promise<null>((r) => setTimeout(() => r(null), Math.max(1, deadline - Date.now())))]);
      if (n === null) break;
      out += new TextDecoder().decode(buf.subarray(0, n));
      if (out.includes("\r\n\r\n") && /content-length: (\d+)/i.test(out)) {
        const len = Number(/content-length: (\d+)/i.exec(out)![1]);
        if (out.length - out.indexOf("\r\n\r\n") - 4 >= len) break;
      }
    }
    return out;
  } finally {
    conn.close();
  }
}

Deno.test("abuse: garbage bytes, a stalled body and clients leaving mid-stream leave the server serving", async () => {
  const model = await tinyChatModel();
  const engine = new ScriptedEngine(model, "word ".repeat(200), 5);
  await withServer({ engine, bodyTimeoutMs: 300 }, async (server) => {
    const enc = new TextEncoder();
    // garbage, a truncated request line, a huge header
    for (const junk of ["\x00\x01\x02garbage\r\n\r\n", "GET", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX: " + "a".repeat(20000) + "\r\n\r\n"]) {
      await raw(server, enc.encode(junk), 300);
    }
    // connections that stall inside the request line do not hold up anyone else
    const stalls = await Promise.all(Array.from({ length: 20 }, () => Deno.connect({ hostname: "127.0.0.1", port: server.port })));
    try {
      for (const c of stalls) await c.write(enc.encode("GET /health HTT"));
      const health = await fetch(`${server.url}/health`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
    } finally {
      for (const c of stalls) c.close();
    }
    // a body that stops arriving
    const stalled = await raw(server, enc.encode("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"messa"), 3000);
    assert.match(stalled, /^HTTP\/1\.1 408/);
    // a client that leaves mid-stream: the generation stops
    for (let i = 0; i < 3; i++) {
      const abort = new AbortController();
      const r = await post(server, "/v1/chat/completions", { messages: USER, stream: true }, {}).then((x) => x);
      const reader = r.body!.getReader();
      await reader.read();
      abort.abort();
      await reader.cancel();
    }
    // and one that leaves while waiting for a whole (non-streamed) reply
    const gone = new AbortController();
    const waiting = post(server, "/v1/chat/completions", { messages: USER }, {}).then((r) => r.text());
    void waiting.catch(() => {});
    const leaving = fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ messages: USER }),
      signal: gone.signal,
    }).then((r) => r.text()).catch(() => "left");
    await new Promise((r) => setTimeout(r, 50));
    gone.abort();
    assert.equal(await leaving, "left");
    await waiting; // the first one runs to its end
    for (let i = 0; i < 50 && engine.counts.active > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(engine.counts.active, 0, "generations for departed clients are still running");
    assert.ok(engine.counts.aborted >= 4, `${engine.counts.aborted} generations were aborted`);
    // and the server still answers
    engine.script = "still here";
    const r = await (await post(server, "/v1/chat/completions", { messages: USER, ...GREEDY })).json() as Json;
    assert.equal(r.choices[0].message.content, "still here");
  });
});
