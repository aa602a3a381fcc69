/**
 * Turns the engine's sampled tokens into what an OpenAI response carries: text decoded as it
 * completes, cut at stop strings, split into reasoning (`reasoning_content`) and answer, the
 * answer split into content and tool calls, and per-token log-probabilities. Streaming and
 * non-streaming responses are both built from its events.
 *
 *   token → StreamDecoder → StopStringFilter → ThinkingSplitter → ToolCallParser → events
 *
 * @module
 */
import type { ChatTool } from "../chat/template.ts";
import { StopStringFilter, ThinkingSplitter } from "../generate/stream.ts";
import type { StreamDecoder, Tokenizer } from "../tokenizer/tokenizer.ts";
import type { TokenLogprob } from "./openai.ts";
import { type ToolCall, ToolCallParser } from "./tool_calls.ts";

export type ReplyEvent =
  | { kind: "reasoning"; text: string }
  | { kind: "content"; text: string }
  | { kind: "tool_call"; index: number; call: ToolCall };

export interface ReplyOptions {
  stop: string[];
  /** Chat replies: split `<think>…</think>` off as reasoning (completions keep raw text). */
  splitThinking: boolean;
  /** The prompt already opened the think block (Qwen3.5 with thinking on). */
  startInThinking?: boolean;
  /** Parse tool calls out of the answer, typed by these tools' schemas. */
  tools?: ChatTool[];
}

/** A sampled token as the engine reports it. */
export interface SampledToken {
  id: number;
  logprob?: number;
  topLogprobs?: Array<{ id: number; logprob: number }>;
}

export class ReplyAssembler {
  content = "";
  reasoning = "";
  readonly toolCalls: ToolCall[] = [];
  readonly logprobs: TokenLogprob[] = [];
  /** Tokens generated while the reply was still thinking. */
  reasoningTokens = 0;
  /** The stop string that ended the reply, if one did. */
  stoppedBy: string | undefined;
  readonly #tokenizer: Tokenizer;
  readonly #decoder: StreamDecoder;
  readonly #stops: StopStringFilter;
  readonly #splitter: ThinkingSplitter | undefined;
  readonly #tools: ToolCallParser | undefined;

  constructor(tokenizer: Tokenizer, options: ReplyOptions) {
    this.#tokenizer = tokenizer;
    this.#decoder = tokenizer.decoder({ special: false });
    this.#stops = new StopStringFilter(options.stop);
    this.#splitter = options.splitThinking ? new ThinkingSplitter({ startInThinking: options.startInThinking }) : undefined;
    this.#tools = options.tools && options.tools.length > 0 ? new ToolCallParser(options.tools) : undefined;
  }

  /** Takes one token; `stopped` says a stop string ended the reply (the caller stops the job). */
  push(token: SampledToken): { events: ReplyEvent[]; stopped: boolean } {
    if (token.logprob !== undefined) this.logprobs.push(this.#logprob(token));
    if (this.#splitter?.inThinking) this.reasoningTokens++;
    const piece = this.#stops.push(this.#decoder.push(token.id));
    const events = this.#text(piece.text);
    if (piece.stop !== undefined) {
      this.stoppedBy = piece.stop;
      events.push(...this.finish());
      return { events, stopped: true };
    }
    return { events, stopped: false };
  }

  /** Ends the reply: releases everything held back. */
  finish(): ReplyEvent[] {
    const events = this.stoppedBy === undefined ? this.#text(this.#stops.push(this.#decoder.flush()).text + this.#stops.flush()) : [];
    if (this.#splitter) events.push(...this.#split(this.#splitter.flush()));
    if (this.#tools) events.push(...this.#answer(this.#tools.flush()));
    return events;
  }

  #text(text: string): ReplyEvent[] {
    if (text === "") return [];
    if (!this.#splitter) return this.#answer([{ content: text }]);
    return this.#split(this.#splitter.push(text));
  }

  #split(split: { thinking: string; answer: string }): ReplyEvent[] {
    const events: ReplyEvent[] = [];
    if (split.thinking) {
      this.reasoning += split.thinking;
      events.push({ kind: "reasoning", text: split.thinking });
    }
    if (split.answer) events.push(...this.#answer(this.#tools ? this.#tools.push(split.answer) : [{ content: split.answer }]));
    return events;
  }

  #answer(parts: Array<{ content: string } | { call: ToolCall }>): ReplyEvent[] {
    const events: ReplyEvent[] = [];
    for (const part of parts) {
      if ("call" in part) {
        events.push({ kind: "tool_call", index: this.toolCalls.length, call: part.call });
        this.toolCalls.push(part.call);
      } else if (part.content) {
        this.content += part.content;
        events.push({ kind: "content", text: part.content });
      }
    }
    return events;
  }

  #logprob(token: SampledToken): TokenLogprob {
    const describe = (id: number) => {
      const bytes = this.#tokenizer.tokenToPiece(id);
      return { token: this.#tokenizer.detokenize([id]), bytes: Array.from(bytes) };
    };
    return {
      ...describe(token.id),
      logprob: token.logprob!,
      top: (token.topLogprobs ?? []).map((t) => ({ ...describe(t.id), logprob: t.logprob })),
    };
  }
}
