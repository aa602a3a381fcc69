// The official `openai` npm client against the server on 127.0.0.1: plain and streamed chats,
// tool calls (non-streamed and as streamed deltas), json_schema output that parses and validates,
// cancellation, parallel requests and error classes. Tool calls come from a scripted engine (a
// random synthetic model never writes one); everything else runs the real engine.
import assert from "node:assert/strict";
import OpenAI from "npm:openai@7.55.0";
import Ajv from "npm:ajv@8.17.1";
import { ScriptedEngine, tinyChatModel, withServer } from "./helpers.ts";

const NO_THINKING = { chat_template_kwargs: { enable_thinking: false } } as Record<string, unknown>;

function client(url: string, apiKey = "unused"): OpenAI {
  return new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });
}

Deno.test("openai client: chat, streaming with usage, completions, models", () =>
  withServer({ modelName: "deltaq-tiny" }, async (server) => {
    const ai = client(server.url);
    const models = await ai.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["deltaq-tiny"]);

    const chat = await ai.chat.completions.create({
      model: "deltaq-tiny",
      messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello" }],
      max_tokens: 6,
      temperature: 0,
      ...NO_THINKING,
    });
    assert.equal(chat.object, "chat.completion");
    assert.equal(chat.choices[0].message.role, "assistant");
    assert.equal(typeof chat.choices[0].message.content, "string");
    assert.ok(chat.usage!.completion_tokens <= 6);

    const stream = await ai.chat.completions.create({
      model: "deltaq-tiny",
      messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello" }],
      max_tokens: 6,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
      ...NO_THINKING,
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        text += c.delta.content ?? "";
        finish = c.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text.trim(), chat.choices[0].message.content);
    assert.equal(finish, chat.choices[0].finish_reason);
    assert.equal(usage?.completion_tokens, chat.usage!.completion_tokens);

    // thinking on (the template's default): the reply's thinking comes as reasoning_content
    const thinking = await ai.chat.completions.create({ model: "x", messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0 });
    const message = thinking.choices[0].message as unknown as { reasoning_content?: string };
    assert.equal(typeof message.reasoning_content, "string");
    assert.ok((thinking.usage!.completion_tokens_details?.reasoning_tokens ?? 0) > 0);

    const completion = await ai.completions.create({ model: "x", prompt: "Once upon a time", max_tokens: 3, temperature: 0 });
    assert.equal(completion.object, "text_completion");
    assert.equal(completion.usage!.completion_tokens, 3);
  }));

Deno.test("openai client: json_schema output parses and validates", () =>
  withServer({}, async (server) => {
    const ai = client(server.url);
    const schema = {
      type: "object",
      properties: {
        city: { type: "string", maxLength: 8 },
        population: { type: "integer", minimum: 0, maximum: 99999999 },
        capital: { type: "boolean" },
      },
      required: ["city", "population", "capital"],
      additionalProperties: false,
    };
    const r = await ai.chat.completions.create({
      model: "x",
      messages: [{ role: "user", content: "A city as JSON." }],
      max_tokens: 120,
      temperature: 0.7,
      seed: 11,
      response_format: { type: "json_schema", json_schema: { name: "city", strict: true, schema } },
      ...NO_THINKING,
    });
    assert.equal(r.choices[0].finish_reason, "stop");
    const doc = JSON.parse(r.choices[0].message.content!);
    const validate = new (Ajv as unknown as new () => { compile(s: unknown): (x: unknown) => boolean })().compile(schema);
    assert.ok(validate(doc), r.choices[0].message.content!);
  }));

const WEATHER: OpenAI.ChatCompletionTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather for a city.",
    parameters: {
      type: "object",
      properties: { city: { type: "string" }, days: { type: "integer" }, metric: { type: "boolean" } },
      required: ["city"],
    },
  },
};

const TOOL_REPLY = "The user wants weather.\n</think>\n\nChecking.\n\n<tool_call>\n<function=get_weather>\n" +
  "<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n" +
  "</function>\n</tool_call>";

Deno.test("openai client: tool calls, whole and as streamed deltas; the next turn renders them back", async () => {
  const model = await tinyChatModel();
  const engine = new ScriptedEngine(model, TOOL_REPLY, 1);
  await withServer({ engine }, async (server) => {
    const ai = client(server.url);
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "Weather in Paris?" }];
    const r = await ai.chat.completions.create({ model: "x", messages, tools: [WEATHER], tool_choice: "auto" });
    const choice = r.choices[0];
    assert.equal(choice.finish_reason, "tool_calls");
    assert.equal(choice.message.content, "Checking.");
    assert.equal((choice.message as unknown as { reasoning_content: string }).reasoning_content, "The user wants weather.");
    const calls = choice.message.tool_calls!;
    assert.equal(calls.length, 1);
    const call = calls[0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    assert.equal(call.function.name, "get_weather");
    assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris", days: 3, metric: true });

    // streamed: the SDK's accumulator puts the deltas back together
    const runner = ai.chat.completions.stream({ model: "x", messages, tools: [WEATHER] });
    let deltas = 0;
    runner.on("chunk", (chunk) => {
      if (chunk.choices[0]?.delta.tool_calls) deltas++;
    });
    const final = await runner.finalChatCompletion();
    assert.ok(deltas >= 1);
    const streamedCall = final.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    assert.equal(final.choices[0].finish_reason, "tool_calls");
    assert.deepEqual(JSON.parse(streamedCall.function.arguments), { city: "Paris", days: 3, metric: true });

    // the conversation continues with the call and its result (rendered through the template)
    engine.script = "Done.\n</think>\n\nIt is sunny.";
    messages.push(choice.message as OpenAI.ChatCompletionMessageParam);
    messages.push({ role: "tool", tool_call_id: call.id, content: '{"sky": "clear", "temp_c": 21.0}' });
    const next = await ai.chat.completions.create({ model: "x", messages, tools: [WEATHER] });
    assert.equal(next.choices[0].message.content, "It is sunny.");
    assert.equal(next.choices[0].finish_reason, "stop");
  });
});

Deno.test("openai client: cancellation stops the generation; parallel requests all complete; errors map to SDK classes", () =>
  withServer({ apiKey: "k1" }, async (server) => {
    const ai = client(server.url, "k1");
    const abort = new AbortController();
    const model = await tinyChatModel();
    const noEnd = Object.fromEntries(model.tokenizer.endOfGenerationIds.map((id) => [String(id), -100]));
    const stream = await ai.chat.completions.create(
      { model: "x", messages: [{ role: "user", content: "Tell a long story." }], max_tokens: 400, stream: true, logit_bias: noEnd, ...NO_THINKING },
      { signal: abort.signal },
    );
    let chunks = 0;
    // The SDK ends an aborted stream quietly (or with an abort error, depending on timing).
    try {
      for await (const _ of stream) {
        if (++chunks === 3) abort.abort();
      }
    } catch (e) {
      assert.ok(e instanceof OpenAI.APIUserAbortError, String(e));
    }
    assert.ok(chunks >= 3 && chunks < 50, `${chunks} chunks after the abort`);
    for (let i = 0; i < 100 && server.engine.stats().active > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.engine.stats().active, 0, "the cancelled generation is still running");

    const replies = await Promise.all([0, 1, 2].map((i) =>
      ai.chat.completions.create({ model: "x", messages: [{ role: "user", content: `Question ${i}` }], max_tokens: 3, ...NO_THINKING })
    ));
    for (const r of replies) assert.ok(r.usage!.completion_tokens <= 3 && r.choices.length === 1);

    await assert.rejects(
      () => ai.chat.completions.create({ model: "x", messages: [], max_tokens: 3 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.status === 400 && /messages/.test(e.message),
    );
    await assert.rejects(
      () => client(server.url, "wrong").models.list(),
      (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401,
    );
  }));
