/**
 * The one error type deltaq throws for problems a user can act on: a bad file, a bad argument,
 * a missing toolchain. The CLI prints its message alone (no stack trace) and exits with code 1.
 */
export class DeltaqError extends Error {
  override name = "DeltaqError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
