/** Locating the pinned llama.cpp build: version pinning and the DELTAQ_LLAMA_DIR override. */
import assert from "node:assert/strict";
import { DeltaqError } from "../../src/errors.ts";
import {
  checkBinsDir,
  LIBGGML,
  LIBLLAMA,
  LLAMA_PACKAGE_VERSION,
  locateLlama,
} from "../../src/oracle/install.ts";

/** A fake package tree `<root>/bins/linux-x64` with the given package.json version. */
function fakePackage(version: string): { root: string; bins: string } {
  const root = Deno.makeTempDirSync({ prefix: "deltaq-llama-" });
  const bins = `${root}/bins/linux-x64`;
  Deno.mkdirSync(bins, { recursive: true });
  Deno.writeTextFileSync(`${bins}/${LIBLLAMA}`, "");
  Deno.writeTextFileSync(`${bins}/${LIBGGML}`, "");
  Deno.writeTextFileSync(`${root}/package.json`, JSON.stringify({ version }));
  return { root, bins };
}

Deno.test("a bins directory is accepted only with the pinned package version", () => {
  const good = fakePackage(LLAMA_PACKAGE_VERSION);
  const old = fakePackage("3.18.0");
  try {
    assert.equal(checkBinsDir(good.bins), undefined);
    assert.match(checkBinsDir(old.bins) ?? "", /version 3\.18\.0.*needs 3\.21\.1/);
    Deno.removeSync(`${good.bins}/${LIBLLAMA}`);
    assert.match(checkBinsDir(good.bins) ?? "", /libllama\.v0\.4\.0\.so does not exist/);
  } finally {
    Deno.removeSync(good.root, { recursive: true });
    Deno.removeSync(old.root, { recursive: true });
  }
});

Deno.test("DELTAQ_LLAMA_DIR pointing to a wrong version is a DeltaqError naming the variable", () => {
  const old = fakePackage("3.0.0");
  const saved = Deno.env.get("DELTAQ_LLAMA_DIR");
  try {
    Deno.env.set("DELTAQ_LLAMA_DIR", old.bins);
    assert.throws(
      () => locateLlama(),
      (e) => e instanceof DeltaqError && /DELTAQ_LLAMA_DIR=.*3\.0\.0/.test(e.message),
    );
  } finally {
    if (saved === undefined) Deno.env.delete("DELTAQ_LLAMA_DIR");
    else Deno.env.set("DELTAQ_LLAMA_DIR", saved);
    Deno.removeSync(old.root, { recursive: true });
  }
});

Deno.test("the located library is the pinned package", () => {
  const dir = locateLlama();
  assert.equal(checkBinsDir(dir), undefined);
  const manifest = JSON.parse(Deno.readTextFileSync(`${dir}/../../package.json`));
  assert.equal(manifest.name, "@node-llama-cpp/linux-x64");
  assert.equal(manifest.version, "3.21.1");
});
