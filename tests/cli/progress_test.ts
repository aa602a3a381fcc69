// The stderr progress bar: nothing on a non-terminal, throttled redraws, rate and ETA from a fake clock.
import assert from "node:assert/strict";
import { formatDuration, ProgressBar, type ProgressStream } from "../../src/cli/progress.ts";

function fakeStream(terminal: boolean): ProgressStream & { text: () => string } {
  const chunks: Uint8Array[] = [];
  return {
    isTerminal: () => terminal,
    writeSync: (b) => (chunks.push(b.slice()), b.length),
    text: () => new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c]))),
  };
}

Deno.test("progress: no output when stderr is not a terminal", () => {
  const stream = fakeStream(false);
  const bar = new ProgressBar("model.gguf", { stream });
  bar.update(5, 10);
  bar.update(10, 10);
  bar.finish();
  assert.equal(stream.text(), "");
});

Deno.test("progress: draws in place with percentage, amounts, rate and ETA, throttled, ending the line", () => {
  const stream = fakeStream(true);
  let now = 0;
  const bar = new ProgressBar("start", { stream, now: () => now, columns: 100 });
  bar.update(1 << 20, 10 << 20, "model.gguf"); // resumed: 1 MiB was already on disk
  now = 50;
  bar.update(2 << 20, 10 << 20); // within 100 ms: not drawn
  now = 2000;
  bar.update(5 << 20, 10 << 20); // 4 MiB in 2 s → 2 MiB/s, 5 MiB left → 0:03
  const lines = stream.text().split("\r").filter(Boolean);
  assert.equal(lines.length, 2);
  const cells = (filled: number, width: number) => `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
  const CLEAR = "\x1b[K";
  assert.equal(lines[0], `model.gguf ${cells(3, 30)}   10%   1.00 MiB / 10.0 MiB${CLEAR}`);
  assert.equal(
    lines[1],
    `model.gguf ${cells(15, 30)}   50%   5.00 MiB / 10.0 MiB   2.00 MiB/s  ETA 0:03${CLEAR}`,
  );
  now = 3000;
  bar.update(10 << 20, 10 << 20);
  bar.finish();
  assert.equal(
    stream.text().split("\r").at(-1),
    `model.gguf ${cells(30, 30)}  100%   10.0 MiB / 10.0 MiB   3.00 MiB/s${CLEAR}\n`,
  );
});

Deno.test("progress: a long label is shortened to fit the terminal", () => {
  const bar = new ProgressBar("x".repeat(200), { stream: fakeStream(true), now: () => 0, columns: 60 });
  bar.update(1, 2);
  const text = bar.render();
  assert.ok(text.length <= 59, text);
  assert.equal(text, `${"x".repeat(13)}…${"x".repeat(13)} [#####-----]   50%`, "narrow: no amounts, no rate");
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(59.6), "1:00");
});
