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

/**
 * Tokens that do not fit a session's context: a prompt longer than the context length, or a
 * conversation that outgrew it. Callers can offer a way on (a longer context, dropping old turns).
 */
export class ContextFullError extends DeltaqError {
  override name = "ContextFullError";
  constructor(message: string, readonly tokens: number, readonly contextLength: number) {
    super(message);
  }
}
