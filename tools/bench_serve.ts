/**
 * `deno task bench-serve`: `deltaq serve` under an agent's workload, over HTTP with streaming.
 *
 *   1. one client: a 10-turn agent conversation (system prompt, tool schemas, a tool call and a
 *      tool result per turn, the reply's thinking dropped from the history by the template, so the
 *      context grows every turn); per turn: time to first token, prompt tokens processed vs cached,
 *      and whether only the tokens new since the last checkpoint were processed;
 *   2. N clients, each running such a conversation at once: the same per turn, summed / median;
 *   3. decode throughput: one stream alone, then N streams at once (aggregate tokens/s).
 *
 * The model defaults to `deno task bench`'s synthetic Qwen3.5-4B-shaped Q4_K_M file (built once,
 * ~2.7 GB). Run big models one at a time: `flock /work/bench.lock deno task bench-serve`.
 */
import { loadModel, type Model, serve } from "../mod.ts";
import type { ChatMessage } from "../src/chat/template.ts";
import { ensureBenchModel } from "../src/cli/bench_model.ts";
import { flagHelp, parseFlags } from "../src/cli/args.ts";
import { DeltaqError } from "../src/errors.ts";

const FLAGS = [
  {
    long: "model",
    short: "m",
    kind: "string" as const,
    help: "FILE  model (default: the 4B-shaped benchmark model)",
  },
  {
    long: "clients",
    short: "n",
    kind: "int" as const,
    min: 1,
    max: 16,
    help: "N  parallel clients and slots (default 4)",
  },
  { long: "turns", kind: "int" as const, min: 1, max: 100, help: "N  turns per conversation (default 10)" },
  { long: "max-tokens", kind: "int" as const, min: 1, max: 4096, help: "N  tokens per reply (default 32)" },
  {
    long: "decode-tokens",
    kind: "int" as const,
    min: 1,
    max: 4096,
    help: "N  tokens per stream in the decode test (default 32)",
  },
  {
    long: "tool-tokens",
    kind: "int" as const,
    min: 0,
    max: 100000,
    help: "N  about this many tokens per tool result (default 300)",
  },
  {
    long: "ctx",
    short: "c",
    kind: "int" as const,
    min: 256,
    max: 1 << 20,
    help: "N  context length (default 8192)",
  },
  { long: "cache-mib", kind: "int" as const, min: 0, help: "N  prompt-cache budget (default: the server's)" },
  {
    long: "threads",
    short: "t",
    kind: "int" as const,
    min: 1,
    max: 64,
    help: "N  threads (default: all CPUs)",
  },
  { long: "skip-single", kind: "flag" as const, help: "skip the one-client conversation" },
  { long: "skip-parallel", kind: "flag" as const, help: "skip the N-client conversations" },
  { long: "skip-decode", kind: "flag" as const, help: "skip the decode-throughput test" },
  { long: "help", short: "h", kind: "flag" as const, help: "show this help" },
];

const TOOLS = [
  tool("read_file", "Read a file of the repository.", {
    path: { type: "string", description: "path from the repository root" },
  }, ["path"]),
  tool("run_shell", "Run a shell command in the repository and return its output.", {
    command: { type: "string" },
    timeout_s: { type: "integer", description: "seconds before the command is killed" },
  }, ["command"]),
  tool("search", "Search the repository for a regular expression.", {
    pattern: { type: "string" },
    glob: { type: "string", description: "only files matching this glob" },
  }, ["pattern"]),
];

const SYSTEM = `You are a careful coding agent working in a TypeScript repository. Use the tools to read
files, search and run commands. Explain what you change and why, keep changes small, and run the
tests before you finish. Never invent file contents: read them first.`;

const TASKS = [
  "The test tests/parser_test.ts fails since yesterday's change to src/parser.ts. Find out why and fix it.",
  "Add a --json flag to the CLI that prints the result as one JSON object, with a test.",
  "The server leaks a file descriptor per request under load. Find the leak.",
  "Make the tokenizer 20% faster on long inputs without changing its output.",
  "Document the public API in mod.ts and check every example compiles.",
  "Replace the hand-written argument parser with the table-driven one used elsewhere.",
  "Find every place that swallows an error and make it report the error instead.",
  "Port the benchmark script from Node to Deno and keep its output format.",
];

interface TurnStats {
  /** Undefined when the reply streamed no visible text (nothing to time). */
  ttftMs: number | undefined;
  totalMs: number;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  /** Tokens after the previous turn's checkpoint (the end of its history): the target to process. */
  newTokens: number | undefined;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (e instanceof DeltaqError) {
      console.error(`bench-serve: ${e.message}`);
      Deno.exit(1);
    }
    throw e;
  }
}

async function main(args: string[]): Promise<number> {
  const { flags } = parseFlags(args, FLAGS);
  if (flags.help) {
    console.log(`usage: deno task bench-serve [options]\n\n${__doc()}\noptions:\n${flagHelp(FLAGS)}`);
    return 0;
  }
  const clients = (flags.clients as number | undefined) ?? 4;
  const turns = (flags.turns as number | undefined) ?? 10;
  const maxTokens = (flags.maxTokens as number | undefined) ?? 32;
  const decodeTokens = (flags.decodeTokens as number | undefined) ?? 32;
  const toolTokens = (flags.toolTokens as number | undefined) ?? 300;
  const path = (flags.model as string | undefined) ??
    await ensureBenchModel((l) => console.error(`bench-serve: ${l}`));
  const t0 = performance.now();
  const model = await loadModel(path, {
    threads: flags.threads as number | undefined,
    contextLength: (flags.ctx as number | undefined) ?? 8192,
  });
  const loadMs = performance.now() - t0;
  const server = serve(model, { port: 0, parallel: clients, cacheMiB: flags.cacheMib as number | undefined });
  // End-of-generation tokens are banned (logit_bias -100): every reply has its full length, so
  // runs of different code do the same work. A few dozen plain-word tokens are favoured (+50):
  // a synthetic model's random weights mostly pick tokens that decode to nothing printable (bytes
  // of unfinished characters, markup), and a stream with no visible text gives nothing to time.
  // Which token is sampled does not change the work of a step.
  const logitBias = {
    ...Object.fromEntries(visibleWordTokens(model, 48).map((id) => [id, 50])),
    ...Object.fromEntries(model.tokenizer.endOfGenerationIds.map((id) => [id, -100])),
  };
  const cacheMiB = server.engine.stats().cache.capacityBytes / 2 ** 20;
  try {
    const cpu = cpuName();
    console.log(
      `model:    ${path} (${(model.info.fileSize / 1e9).toFixed(2)} GB), loaded in ${
        (loadMs / 1000).toFixed(1)
      } s`,
    );
    console.log(`machine:  ${cpu}, ${navigator.hardwareConcurrency} logical CPUs; load avg ${loadAvg()}`);
    console.log(
      `server:   ${server.url}, ${clients} slots, context ${model.info.contextLength}, prompt cache ${
        cacheMiB.toFixed(0)
      } MiB, ` +
        `${model.info.threads} threads`,
    );
    console.log(
      `workload: ${turns} turns, ${maxTokens} tokens per reply (end of generation banned, plain-word tokens favoured), ` +
        `tool results of ~${toolTokens} tokens, temperature 0\n`,
    );

    if (!flags.skipSingle) {
      console.log("one client, one conversation");
      const start = performance.now();
      const stats = await conversation(server.url, model, 0, turns, maxTokens, toolTokens, logitBias);
      printTurns(stats.map((s) => [s]), performance.now() - start);
    }
    if (!flags.skipParallel && clients > 1) {
      console.log(`\n${clients} clients, one conversation each, at once`);
      const start = performance.now();
      const all = await Promise.all(
        Array.from(
          { length: clients },
          (_, c) => conversation(server.url, model, c + 1, turns, maxTokens, toolTokens, logitBias),
        ),
      );
      printTurns(Array.from({ length: turns }, (_, t) => all.map((s) => s[t])), performance.now() - start);
    }
    if (!flags.skipDecode) {
      console.log(`\ndecode throughput (${decodeTokens} tokens per stream, short prompts)`);
      const one = await decodeStreams(server.url, 1, decodeTokens, logitBias);
      const many = clients > 1
        ? await decodeStreams(server.url, clients, decodeTokens, logitBias)
        : undefined;
      console.log(`  1 stream:   ${one.toFixed(2)} tokens/s`);
      if (many !== undefined) {
        console.log(
          `  ${clients} streams:  ${many.toFixed(2)} tokens/s aggregate (${
            (many / one).toFixed(2)
          }× one stream)`,
        );
      }
    }
    const s = server.engine.stats();
    console.log(
      `\nprompt cache: ${s.cache.entries} checkpoints, ${(s.cache.bytes / 2 ** 20).toFixed(0)} MiB of ` +
        `${
          cacheMiB.toFixed(0)
        }, ${s.cache.hits} hits, ${s.cache.misses} misses; load avg after: ${loadAvg()}`,
    );
  } finally {
    await server.close();
    model.dispose();
  }
  return 0;
}

function __doc(): string {
  return "Replays agent conversations against `deltaq serve` and prints time to first token, prompt\n" +
    "tokens processed vs cached per turn, and decode throughput for one and several streams.\n";
}

/** One client's conversation: `turns` requests, each adding a reply, a tool call and its result. */
async function conversation(
  url: string,
  model: Model,
  client: number,
  turns: number,
  maxTokens: number,
  toolTokens: number,
  logitBias: Record<string, number>,
): Promise<TurnStats[]> {
  const messages: ChatMessage[] = [
    { role: "system", content: SYSTEM },
    { role: "user", content: TASKS[client % TASKS.length] },
  ];
  const stats: TurnStats[] = [];
  let previousHistory: number | undefined;
  for (let turn = 0; turn < turns; turn++) {
    const rendered = model.renderChat(messages, { tools: TOOLS });
    const r = await chat(url, messages, maxTokens, logitBias);
    stats.push({
      ...r,
      newTokens: previousHistory === undefined ? undefined : r.promptTokens - previousHistory,
    });
    previousHistory = rendered.historyTokens;
    // The agent's side: the reply (its thinking goes back as reasoning_content, which the template
    // drops), a tool call, the tool's result, and on to the next turn.
    const call = toolCall(client, turn);
    messages.push(
      {
        role: "assistant",
        content: r.content,
        reasoning_content: r.reasoning,
        tool_calls: [call],
      } as ChatMessage,
    );
    messages.push(
      { role: "tool", tool_call_id: call.id, content: toolResult(client, turn, toolTokens) } as ChatMessage,
    );
  }
  return stats;
}

/** Up to `count` tokens that decode alone to a short word of ASCII letters (after an optional space). */
function visibleWordTokens(model: Model, count: number): number[] {
  const ids: number[] = [];
  for (let id = 0; id < model.tokenizer.vocabSize && ids.length < count; id++) {
    if (model.tokenizer.isControl(id)) continue;
    if (/^ ?[A-Za-z]{2,8}$/.test(model.tokenizer.detokenize([id]))) ids.push(id);
  }
  if (ids.length === 0) throw new DeltaqError("the model's vocabulary has no plain-word tokens to stream");
  return ids;
}

/** One streamed chat completion; times the first token. */
async function chat(
  url: string,
  messages: ChatMessage[],
  maxTokens: number,
  logitBias: Record<string, number>,
) {
  const start = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "bench",
      messages,
      tools: TOOLS,
      max_tokens: maxTokens,
      logit_bias: logitBias,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!res.ok || !res.body) throw new DeltaqError(`the server answered ${res.status}: ${await res.text()}`);
  let ttftMs: number | undefined, content = "", reasoning = "";
  let usage: {
    prompt_tokens: number;
    completion_tokens: number;
    prompt_tokens_details?: { cached_tokens?: number };
  } | undefined;
  for await (const data of sseEvents(res.body)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new DeltaqError(`the server reported: ${chunk.error.message}`);
    const delta = chunk.choices?.[0]?.delta;
    if (delta && ttftMs === undefined && (delta.content || delta.reasoning_content || delta.tool_calls)) {
      ttftMs = performance.now() - start;
    }
    content += delta?.content ?? "";
    reasoning += delta?.reasoning_content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  if (!usage) throw new DeltaqError("the server sent no usage (stream_options.include_usage)");
  return {
    ttftMs,
    totalMs: performance.now() - start,
    promptTokens: usage.prompt_tokens,
    cachedTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
    completionTokens: usage.completion_tokens,
    content,
    reasoning,
  };
}

/** `streams` short prompts at once, each generating `tokens`; aggregate tokens per second. */
async function decodeStreams(
  url: string,
  streams: number,
  tokens: number,
  logitBias: Record<string, number>,
): Promise<number> {
  const run = async (i: number) => {
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "bench",
        prompt: `Stream ${i}: once upon a time`,
        max_tokens: tokens,
        logit_bias: logitBias,
        temperature: 0.8,
        seed: i,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    if (!res.ok || !res.body) throw new DeltaqError(`the server answered ${res.status}: ${await res.text()}`);
    const times: number[] = [];
    for await (const data of sseEvents(res.body)) {
      if (data === "[DONE]") break;
      if (JSON.parse(data).choices?.[0]?.text) times.push(performance.now());
    }
    if (times.length < 2) {
      throw new DeltaqError(`stream ${i} produced ${times.length} tokens: nothing to time`);
    }
    return times;
  };
  const times = await Promise.all(Array.from({ length: streams }, (_, i) => run(i)));
  // from the moment every stream has its first token (prompts are not decode time) to the end:
  // the tokens each stream produced in that window, over its length
  const from = Math.max(...times.map((t) => t[0]));
  const to = Math.max(...times.map((t) => t.at(-1)!));
  const counted = times.reduce((n, t) => n + t.filter((x) => x > from).length, 0);
  return counted / ((to - from) / 1000);
}

/** The `data:` payloads of a server-sent event stream. */
async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const bytes of body) {
    buffer += decoder.decode(bytes, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) if (line.startsWith("data: ")) yield line.slice(6);
    }
  }
}

/** Rows of one turn from every client: medians of times, sums of tokens. */
function printTurns(rows: TurnStats[][], wallMs: number): void {
  const header = [
    "turn",
    "TTFT ms",
    "reply ms",
    "prompt",
    "cached",
    "processed",
    "new since checkpoint",
    "target met",
  ];
  const lines = rows.map((turn, t) => {
    const sum = (f: (s: TurnStats) => number) => turn.reduce((n, s) => n + f(s), 0);
    const processed = sum((s) => s.promptTokens - s.cachedTokens);
    const targets = turn.map((s) => s.newTokens);
    const target = targets.every((x) => x !== undefined) ? targets.reduce((n, x) => n! + x!, 0)! : undefined;
    return [
      String(t + 1),
      turn.every((s) => s.ttftMs !== undefined) ? median(turn.map((s) => s.ttftMs!)).toFixed(0) : "—",
      median(turn.map((s) => s.totalMs)).toFixed(0),
      String(sum((s) => s.promptTokens)),
      String(sum((s) => s.cachedTokens)),
      String(processed),
      target === undefined ? "—" : String(target),
      target === undefined ? "—" : processed <= target ? "yes" : "no",
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join("  ");
  console.log(fmt(header));
  for (const l of lines) console.log(fmt(l));
  const completion = rows.flat().reduce((n, s) => n + s.completionTokens, 0);
  const prompt = rows.flat().reduce((n, s) => n + s.promptTokens, 0);
  const cached = rows.flat().reduce((n, s) => n + s.cachedTokens, 0);
  console.log(
    `${rows[0].length > 1 ? "times are medians over clients, tokens sums; " : ""}` +
      `wall ${(wallMs / 1000).toFixed(1)} s, ${completion} tokens generated (${
        (completion / (wallMs / 1000)).toFixed(2)
      } tokens/s ` +
      `aggregate over the wall time), prompt tokens ${prompt}, of them cached ${cached} (${
        (100 * cached / prompt).toFixed(0)
      }%)`,
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function tool(name: string, description: string, properties: Record<string, unknown>, required: string[]) {
  return {
    type: "function" as const,
    function: { name, description, parameters: { type: "object", properties, required } },
  };
}

function toolCall(client: number, turn: number) {
  const id = `call_${client}_${turn}`;
  const kind = turn % 3;
  const args = kind === 0
    ? { path: `src/module_${client}_${turn}.ts` }
    : kind === 1
    ? { command: `deno test -A tests/module_${turn}_test.ts`, timeout_s: 120 }
    : { pattern: `function\\s+handle${turn}`, glob: "src/**/*.ts" };
  const name = ["read_file", "run_shell", "search"][kind];
  return { id, type: "function" as const, function: { name, arguments: JSON.stringify(args) } };
}

/** A deterministic tool result of about `tokens` tokens: TypeScript-looking lines. */
function toolResult(client: number, turn: number, tokens: number): string {
  const lines: string[] = [];
  let approx = 0;
  for (let i = 0; approx < tokens; i++) {
    const line =
      `export function handle${turn}_${i}(input: Record<string, number>, client = ${client}): number {` +
      ` return Object.values(input).reduce((a, b) => a + b * ${i + 1}, ${turn}); }`;
    lines.push(line);
    approx += 40; // about 40 tokens per line
  }
  return lines.join("\n");
}

function cpuName(): string {
  try {
    const m = /model name\s*:\s*(.+)/.exec(Deno.readTextFileSync("/proc/cpuinfo"));
    return m ? m[1].trim() : Deno.build.arch;
  } catch {
    return Deno.build.arch;
  }
}

function loadAvg(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}
