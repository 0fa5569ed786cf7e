/**
 * The error codes a client can see. GraphQL errors carry one of them in
 * `extensions.code`; legacy shims map them to the status codes of the service they replace.
 */
export const ErrorCode = {
  Unauthenticated: 'UNAUTHENTICATED',
  Forbidden: 'FORBIDDEN',
  BadUserInput: 'BAD_USER_INPUT',
  NotFound: 'NOT_FOUND',
  RateLimited: 'RATE_LIMITED',
  /**
   * The server cannot serve the request right now (e.g. the database is saturated by a
   * reconnect storm); nothing was changed. Retry after `extensions.retryAfterMs`; legacy 503.
   */
  Unavailable: 'UNAVAILABLE',
  Internal: 'INTERNAL_SERVER_ERROR',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * An expected failure with a message meant for the client. Domain code throws it; the
 * GraphQL layer turns it into a GraphQL error with `extensions.code`, shims into a status.
 * Anything else thrown is an internal error: masked for the client, logged in full.
 */
export class AppError extends Error {
  override readonly name = 'AppError';
  constructor(
    readonly code: Exclude<ErrorCode, 'INTERNAL_SERVER_ERROR'>,
    message: string,
  ) {
    super(message);
  }
}

export const unauthenticated = (message = 'Authentication required') =>
  new AppError(ErrorCode.Unauthenticated, message);
export const forbidden = (message: string) => new AppError(ErrorCode.Forbidden, message);
export const badInput = (message: string) => new AppError(ErrorCode.BadUserInput, message);
export const notFound = (message: string) => new AppError(ErrorCode.NotFound, message);
/**
 * A refusal the client should retry later: GraphQL clients see its code with
 * `extensions.retryAfterMs` when known, legacy endpoints `status` (429 or 503).
 */
export class RetryLaterError extends AppError {
  constructor(
    code: typeof ErrorCode.RateLimited | typeof ErrorCode.Unavailable,
    message: string,
    /** When the client may try again; null when unknown (a count limit). */
    readonly retryAfterMs: number | null,
    /** The HTTP status legacy endpoints answer: 429, or 503 when the instance is full or busy. */
    readonly status: 429 | 503,
  ) {
    super(code, message);
  }
}

/**
 * A per-user rate limit or a count limit (connections, subscriptions) was hit. GraphQL clients
 * see RATE_LIMITED (with `extensions.retryAfterMs` when known), legacy endpoints 429.
 */
export class RateLimitedError extends RetryLaterError {
  constructor(message: string, retryAfterMs: number | null = null, status: 429 | 503 = 429) {
    super(ErrorCode.RateLimited, message, retryAfterMs, status);
  }
}
export const rateLimited = (message: string, retryAfterMs: number | null = null) =>
  new RateLimitedError(message, retryAfterMs);
/** UNAVAILABLE (legacy 503): the server is too busy to serve this now; retry after the hint. */
export const unavailable = (message: string, retryAfterMs: number) =>
  new RetryLaterError(ErrorCode.Unavailable, message, retryAfterMs, 503);
/** The legacy HTTP status of a retryable AppError (RATE_LIMITED, UNAVAILABLE), else null. */
export const rateLimitStatus = (error: unknown): 429 | 503 | null =>
  error instanceof RetryLaterError ? error.status : null;

export const isAppError = (error: unknown): error is AppError => error instanceof AppError;
