/**
 * deltaq command line: `deno run -A cli.ts --help`.
 */
import { main } from "./src/cli/main.ts";

if (import.meta.main) Deno.exit(await main(Deno.args));
