/**
 * Locates the shared test fixtures (`../shared/fixtures/` next to the checkout: the real qwen35
 * vocab GGUF with llama.cpp's tokenizer vectors, and the Qwen3.5 chat template). Tests that need
 * one use `fixture(name)` and skip with the returned reason when it is absent.
 */

/** The shared fixtures directory, as a URL ending in a slash. */
export const SHARED_FIXTURES = new URL("../../shared/fixtures/", import.meta.url);

/** `{ path }` when the fixture exists, else `{ skip }` with a reason a test can print. */
export function fixture(
  name: string,
): { path: string; skip?: undefined } | { path?: undefined; skip: string } {
  const path = decodeURIComponent(new URL(name, SHARED_FIXTURES).pathname);
  try {
    if (Deno.statSync(path).isFile) return { path };
  } catch {
    // reported below
  }
  return { skip: `fixture ${name} not found at ${path} (expected the shared fixtures next to the checkout)` };
}
