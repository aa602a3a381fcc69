/**
 * Text-stream utilities for generation, applied to the decoded text of each new token (the
 * tokenizer's `StreamDecoder` already holds back bytes of a character split across tokens):
 *
 * - `StopStringFilter` ends generation at user-given stop strings, holding back only text that
 *   could still become one and emitting the rest at once;
 * - `ThinkingSplitter` separates `<think>…</think>` reasoning from the answer, tags split across
 *   pieces included, also when the prompt already opened the think block (Qwen3.5).
 *
 * Both give the same result however the text is cut into pieces. Typical order:
 * token → StreamDecoder → StopStringFilter → ThinkingSplitter → caller.
 *
 * @module
 */
import { DeltaqError } from "../errors.ts";

/** What `StopStringFilter.push` lets through. */
export interface StopResult {
  /** Text that is final: it cannot be part of a stop string. */
  text: string;
  /** The stop string that ended the stream, if one did (its text and anything after it are dropped). */
  stop?: string;
}

/**
 * Finds stop strings in streamed text. The stream stops where a stop string is first complete;
 * if two complete at the same point, the one that starts earlier wins, so that the output never
 * depends on how the text was cut into pieces.
 */
export class StopStringFilter {
  readonly stops: readonly string[];
  readonly #longest: number;
  #held = "";
  #stop: string | undefined;

  constructor(stops: readonly string[]) {
    for (const s of stops) {
      if (typeof s !== "string" || s.length === 0) {
        throw new DeltaqError("stop strings must be non-empty strings");
      }
    }
    this.stops = [...new Set(stops)];
    this.#longest = Math.max(0, ...this.stops.map((s) => s.length));
  }

  /** The stop string found so far, if any. */
  get stopped(): string | undefined {
    return this.#stop;
  }

  push(piece: string): StopResult {
    if (this.#stop !== undefined) return { text: "" };
    const text = this.#held + piece;
    let start = -1;
    let end = Infinity;
    let found: string | undefined;
    for (const s of this.stops) {
      const at = text.indexOf(s);
      if (at < 0) continue;
      const e = at + s.length;
      if (e < end || (e === end && at < start)) {
        [start, end, found] = [at, e, s];
      }
    }
    if (found !== undefined) {
      this.#stop = found;
      this.#held = "";
      return { text: text.slice(0, start), stop: found };
    }
    const hold = this.#partialStopAtEnd(text);
    this.#held = text.slice(text.length - hold);
    return { text: text.slice(0, text.length - hold) };
  }

  /** Ends the stream: returns the held-back text (empty if a stop string was found). */
  flush(): string {
    const rest = this.#held;
    this.#held = "";
    return rest;
  }

  /** Length of the longest end of `text` that is the beginning of a stop string. */
  #partialStopAtEnd(text: string): number {
    for (let k = Math.min(text.length, this.#longest - 1); k > 0; k--) {
      const tail = text.slice(text.length - k);
      if (this.stops.some((s) => s.startsWith(tail))) return k;
    }
    return 0;
  }
}

export interface ThinkingSplitterOptions {
  /**
   * The prompt already opened the think block, so generation starts inside it (Qwen3.5 with
   * thinking on ends its prompt with `<think>\n`; see `promptOpensThinking`). Default false: a
   * think block is recognised only at the very start of the output (after whitespace).
   */
  startInThinking?: boolean;
  openTag?: string;
  closeTag?: string;
}

/** The parts of one pushed piece; thinking always comes before the answer. */
export interface SplitText {
  thinking: string;
  answer: string;
}

const enum Section {
  /** Nothing but whitespace seen; a think block may still open. */
  Start,
  Thinking,
  Answer,
}

const WHITESPACE = /\s/;

/**
 * Splits a model's output into reasoning and answer. Both are trimmed the way the Qwen3.5 template
 * trims them when it renders the turn back (leading and trailing whitespace dropped), so the
 * concatenated parts equal the `reasoning_content` and `content` of that turn. To get there
 * promptly, only whitespace at the end of a section and text that may be the start of a tag are
 * held back. The first close tag ends the thinking; later tags are answer text.
 */
export class ThinkingSplitter {
  readonly #open: string;
  readonly #close: string;
  #section: Section;
  #pending = ""; // held-back text of the current section
  #sectionStarted = false; // has the current section emitted non-whitespace yet

  constructor(options: ThinkingSplitterOptions = {}) {
    this.#open = options.openTag ?? "<think>";
    this.#close = options.closeTag ?? "</think>";
    this.#section = options.startInThinking ? Section.Thinking : Section.Start;
  }

  /** Inside the think block now (what the model writes next is reasoning). */
  get inThinking(): boolean {
    return this.#section === Section.Thinking;
  }

  push(piece: string): SplitText {
    const out: SplitText = { thinking: "", answer: "" };
    let text = this.#pending + piece;
    this.#pending = "";
    while (true) {
      if (this.#section === Section.Start) {
        const body = text.trimStart();
        if (body.startsWith(this.#open)) {
          text = body.slice(this.#open.length);
          this.#enter(Section.Thinking);
          continue;
        }
        if (this.#open.startsWith(body)) { // only whitespace, or the tag may be arriving
          this.#pending = text;
          return out;
        }
        this.#enter(Section.Answer);
        continue;
      }
      if (this.#section === Section.Thinking) {
        const at = text.indexOf(this.#close);
        if (at >= 0) {
          out.thinking += this.#emit(text.slice(0, at), true);
          text = text.slice(at + this.#close.length);
          this.#enter(Section.Answer);
          continue;
        }
        const hold = partialAtEnd(text, this.#close);
        out.thinking += this.#emit(text.slice(0, text.length - hold), false);
        this.#pending += text.slice(text.length - hold);
        return out;
      }
      out.answer += this.#emit(text, false);
      return out;
    }
  }

  /** Ends the stream; trailing whitespace of the last section is dropped. */
  flush(): SplitText {
    const rest = this.#pending;
    this.#pending = "";
    // An unfinished tag at the end is text of its section; the whitespace we held is dropped.
    if (this.#section === Section.Start) {
      const body = rest.trim();
      return { thinking: "", answer: body };
    }
    const text = this.#sectionStarted ? rest.trimEnd() : rest.trim();
    return this.#section === Section.Thinking
      ? { thinking: text, answer: "" }
      : { thinking: "", answer: text };
  }

  #enter(section: Section): void {
    this.#section = section;
    this.#sectionStarted = false;
  }

  /**
   * Text of the current section that can be shown now: leading whitespace of the section dropped,
   * trailing whitespace kept back in #pending unless the section ends here (then dropped).
   */
  #emit(text: string, sectionEnds: boolean): string {
    if (!this.#sectionStarted) text = text.trimStart();
    let end = text.length;
    while (end > 0 && WHITESPACE.test(text[end - 1])) end--;
    if (!sectionEnds) this.#pending = text.slice(end) + this.#pending;
    if (end > 0) this.#sectionStarted = true;
    return text.slice(0, end);
  }
}

/**
 * Whether a rendered prompt leaves a think block open, so generation starts inside it: the last
 * open tag is followed by nothing but whitespace.
 */
export function promptOpensThinking(prompt: string, openTag = "<think>"): boolean {
  const at = prompt.lastIndexOf(openTag);
  return at >= 0 && prompt.slice(at + openTag.length).trim() === "";
}

/** Length of the longest end of `text` that is a proper beginning of `tag`. */
export function partialAtEnd(text: string, tag: string): number {
  for (let k = Math.min(text.length, tag.length - 1); k > 0; k--) {
    if (tag.startsWith(text.slice(text.length - k))) return k;
  }
  return 0;
}
