/**
 * A one-line progress bar for long work (downloads, loading), redrawn in place on stderr:
 *
 *   Qwen3.5-4B-Q4_K_M.gguf [#########-----------]   45%   1.17 GiB / 2.61 GiB   31.4 MiB/s  ETA 0:47
 *
 * It draws only when the stream is a terminal, so logs and pipes never receive carriage returns.
 * Usage: `const bar = new ProgressBar("download"); … bar.update(done, total, label); … bar.finish();`
 */
import { formatBytes } from "./info.ts";

/** Where the bar is drawn; Deno.stderr by default. */
export interface ProgressStream {
  isTerminal(): boolean;
  writeSync(bytes: Uint8Array): number;
}

export interface ProgressOptions {
  stream?: ProgressStream;
  /** Milliseconds clock, replaceable in tests. */
  now?: () => number;
  /** Terminal width; read from the console when omitted (80 if unknown). */
  columns?: number;
  /** How amounts are written; bytes by default. */
  format?: (amount: number) => string;
  /** Redraws at most this often, except for the final state. */
  minIntervalMs?: number;
}

function consoleColumns(): number {
  try {
    const { columns } = Deno.consoleSize();
    return columns >= 40 ? columns : 80; // some pseudo-terminals report 0
  } catch {
    return 80;
  }
}

/** `m:ss` or `h:mm:ss`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mmss = `${String(m).padStart(h ? 2 : 1, "0")}:${String(sec).padStart(2, "0")}`;
  return h ? `${h}:${mmss}` : mmss;
}

/** Cuts the middle out of a long label, keeping both ends (`Qwen3.5-4…-Q4_K_M.gguf`). */
function shorten(label: string, max: number): string {
  if (label.length <= max) return label;
  if (max <= 1) return max === 1 ? "…" : "";
  const head = Math.ceil((max - 1) / 2);
  return `${label.slice(0, head)}…${label.slice(label.length - (max - 1 - head))}`;
}

export class ProgressBar {
  readonly #stream: ProgressStream;
  readonly #enabled: boolean;
  readonly #now: () => number;
  readonly #format: (amount: number) => string;
  readonly #interval: number;
  readonly #columns: number;
  readonly #encoder = new TextEncoder();
  #label: string;
  #done = 0;
  #total = 0;
  /** The first amount seen and when: the rate counts only work done while this bar watched. */
  #start?: { done: number; at: number };
  #lastDraw = -Infinity;
  #drawn = false;

  constructor(label: string, opts: ProgressOptions = {}) {
    this.#label = label;
    this.#stream = opts.stream ?? Deno.stderr;
    this.#enabled = this.#stream.isTerminal();
    this.#now = opts.now ?? (() => performance.now());
    this.#format = opts.format ?? formatBytes;
    this.#interval = opts.minIntervalMs ?? 100;
    this.#columns = opts.columns ?? (this.#enabled ? consoleColumns() : 80);
  }

  update(done: number, total: number, label?: string): void {
    if (!this.#enabled) return;
    const now = this.#now();
    if (label !== undefined) this.#label = label;
    this.#start ??= { done, at: now };
    this.#done = done;
    this.#total = total;
    if (now - this.#lastDraw < this.#interval && done < total) return;
    this.#lastDraw = now;
    this.#draw(now);
  }

  /** Draws the final state and ends the line (nothing when nothing was drawn). */
  finish(): void {
    if (!this.#enabled || !this.#drawn) return;
    this.#draw(this.#now());
    this.#write("\n");
    this.#drawn = false;
  }

  /** Removes the bar from the terminal instead of leaving its final state. */
  clear(): void {
    if (!this.#enabled || !this.#drawn) return;
    this.#write("\r\x1b[2K");
    this.#drawn = false;
  }

  /** The text of the bar for the current state, without control characters. */
  render(now = this.#now()): string {
    const total = this.#total, done = Math.min(this.#done, total || this.#done);
    const fraction = total > 0 ? done / total : 0;
    const elapsed = this.#start ? (now - this.#start.at) / 1000 : 0;
    const rate = elapsed >= 0.5 ? (done - this.#start!.done) / elapsed : 0;
    // Fixed-width fields, so the bar does not shift as the numbers change or the rate appears.
    const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
    const amounts = `${this.#format(done).padStart(9)} / ${this.#format(total)}`;
    const speed = (rate > 0 ? `${this.#format(rate)}/s` : "").padStart(11);
    const eta = (rate > 0 && done < total ? `ETA ${formatDuration((total - done) / rate)}` : "").padEnd(11);
    // Narrow terminals drop the rate, then the amounts, before the label drops below 24 characters.
    const wanted = Math.min(this.#label.length, 24);
    let tail = "", available = 0;
    for (const fields of [[percent, amounts, speed, eta], [percent, amounts, eta], [percent, eta]]) {
      tail = fields.join("  ");
      available = this.#columns - 1 - tail.length - 2; // for the label, the bar and their brackets
      if (available - 13 >= wanted) break;
    }
    const label = shorten(this.#label, available - 13);
    const cells = Math.min(30, available - label.length - 3);
    const filled = Math.round(fraction * cells);
    const bar = cells > 0 ? ` [${"#".repeat(filled)}${"-".repeat(cells - filled)}]` : "";
    return `${label}${bar}  ${tail}`.trimEnd();
  }

  #draw(now: number): void {
    this.#write(`\r${this.render(now)}\x1b[K`);
    this.#drawn = true;
  }

  #write(text: string): void {
    const bytes = this.#encoder.encode(text);
    for (let off = 0; off < bytes.length;) off += this.#stream.writeSync(bytes.subarray(off));
  }
}
