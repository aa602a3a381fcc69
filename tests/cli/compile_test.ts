/**
 * The single-binary path: `deno task compile` fails clearly without Deno's runtime, and the code
 * that finds the embedded kernel library inside a compiled binary works. `deno compile` itself
 * cannot run here (it downloads denort), so the binary's layout is simulated: the sources and the
 * library are copied under a `deno-compile-<name>/` root — where a compiled binary's modules live —
 * and loaded with no Zig reachable, so finding the library cannot fall back to building it.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { buildPrefix, ensureLibrary, hostPlatform, isCompiledBinary, libraryFile } from "../../src/native/build.ts";

const repo = fileURLToPath(new URL("../../", import.meta.url));

function copyTree(from: string, to: string): void {
  Deno.mkdirSync(to, { recursive: true });
  for (const e of Deno.readDirSync(from)) {
    if (e.isDirectory) copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else if (e.isFile) Deno.copyFileSync(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

Deno.test("isCompiledBinary recognises the virtual file system root of a compiled binary", () => {
  assert.equal(isCompiledBinary("file:///tmp/deno-compile-deltaq/src/native/build.ts"), true);
  assert.equal(isCompiledBinary("file:///home/me/deltaq/src/native/build.ts"), false);
  assert.equal(isCompiledBinary("file:///C:/Users/me/AppData/Local/Temp/deno-compile-deltaq.exe/src/native/build.ts"), true);
});

Deno.test("inside a compiled binary's layout the embedded library is opened without Zig", async () => {
  const lib = ensureLibrary(); // a built library to stand in for the embedded one
  const tmp = Deno.makeTempDirSync();
  try {
    const binRoot = `${tmp}/deno-compile-deltaq`;
    copyTree(`${repo}src`, `${binRoot}/src`);
    const embedded = `${binRoot}/${buildPrefix(hostPlatform())}/${libraryFile(hostPlatform())}`;
    Deno.mkdirSync(embedded.replace(/\/[^/]+$/, ""), { recursive: true });
    Deno.copyFileSync(lib, embedded);
    const probe = `${binRoot}/probe.ts`;
    Deno.writeTextFileSync(
      probe,
      `import { openNative } from "./src/native/ffi.ts";\nconsole.log(openNative().dq_abi_version());\n`,
    );
    const denoDir = Deno.execPath().replace(/\/[^/]+$/, "");
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-lock", probe],
      env: { PATH: denoDir, DELTAQ_LIB: "", HOME: Deno.env.get("HOME") ?? tmp, DENO_DIR: Deno.env.get("DENO_DIR") ?? "" },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, stderr);
    assert.match(new TextDecoder().decode(out.stdout), /^\d+\n$/);
    assert.doesNotMatch(stderr, /building/);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("deno task compile fails with one clear line when the runtime is unavailable", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const output = `${tmp}/deltaq-bin`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "tools/compile.ts", "--output", output],
      cwd: repo,
      env: { DENORT_BIN: `${tmp}/no-such-denort` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr).trim();
    assert.equal(out.code, 1);
    assert.match(stderr, /DENORT_BIN=.*no such file/);
    assert.equal(stderr.split("\n").length, 1, stderr);
    assert.throws(() => Deno.statSync(output));
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
