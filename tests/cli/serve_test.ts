// `deno run -A cli.ts serve`: --help, a clear error for a bad flag, and a real run that listens on
// 127.0.0.1 (port 0: a free one), answers /health and stops cleanly on SIGTERM.
import assert from "node:assert/strict";
import { tinyChatModel } from "../server/helpers.ts";

const CLI = decodeURIComponent(new URL("../../cli.ts", import.meta.url).pathname);

function run(args: string[]) {
  return new Deno.Command(Deno.execPath(), { args: ["run", "-A", CLI, ...args], stdout: "piped", stderr: "piped" });
}

Deno.test("serve: --help and flag errors", async () => {
  const help = await run(["serve", "--help"]).output();
  assert.ok(help.success);
  const text = new TextDecoder().decode(help.stdout);
  for (const flag of ["--host", "--port", "--api-key", "--parallel", "--ctx", "--cache-mib", "--cors"]) assert.match(text, new RegExp(flag));
  const bad = await run(["serve", "-m", "x.gguf", "--port", "99999"]).output();
  assert.equal(bad.code, 1);
  assert.match(new TextDecoder().decode(bad.stderr), /^deltaq: --port must be at most 65535/);
  const missing = await run(["serve", "-m", "/nonexistent/model.gguf"]).output();
  assert.equal(missing.code, 1);
  assert.match(new TextDecoder().decode(missing.stderr), /nonexistent\/model\.gguf/);
});

Deno.test("serve: listens on 127.0.0.1, answers, stops on SIGTERM", async () => {
  const model = await tinyChatModel();
  const child = run(["serve", "-m", model.info.file, "--port", "0", "-c", "256", "--alias", "tiny"]).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = "";
  try {
    const deadline = Date.now() + 60_000;
    let url: string | undefined;
    while (!url && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      err += value;
      url = /at (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(err)?.[1];
    }
    assert.ok(url, `no listening line in: ${err}`);
    assert.deepEqual(await (await fetch(`${url}/health`)).json(), { status: "ok" });
    const models = await (await fetch(`${url}/v1/models`)).json();
    assert.equal(models.data[0].id, "tiny");
  } finally {
    child.kill("SIGTERM");
    const status = await child.status;
    assert.equal(status.code, 0, err);
    await reader.cancel().catch(() => {});
    await child.stdout.cancel().catch(() => {});
  }
});
