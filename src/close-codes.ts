/**
 * WebSocket close codes Switchboard uses, beside the graphql-ws protocol's own (4400 bad request,
 * 4401 unauthorized, 4403 forbidden, 4406 subprotocol, 4408 init timeout, 4409 duplicate
 * operation id, 4429 too many init requests, 4500 internal error), which keep their meaning.
 */
export const CloseCode = {
  /** Normal closure, e.g. the legacy notifier's drop_user. */
  Normal: 1000,
  /** The server is shutting down; reconnect, possibly to another instance. */
  GoingAway: 1001,
  /** The connection's token expired; reconnect with a fresh token. */
  TokenExpired: 4401,
  /** The user was dropped (dropUser) or the connection was refused. */
  Forbidden: 4403,
  /**
   * Too many open connections: of this user (MAX_CONNECTIONS_PER_USER) or on this instance
   * (MAX_CONNECTIONS). Retry later, possibly on another instance.
   */
  TooManyConnections: 4029,
  /** The client did not read its events fast enough; its buffer was dropped. Reconnect. */
  SlowConsumer: 4499,
  /** An unexpected server error. */
  InternalError: 4500,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
