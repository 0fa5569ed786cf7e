import type { Viewer } from '../auth/index.ts';
import type { Owner } from '../pubsub/index.ts';

/** How a client is connected. */
export type Transport = 'graphql-ws' | 'sse' | 'http' | 'legacy-stream' | 'legacy-ws';

/**
 * What a domain stream is bound to: the caller and the life of its connection. Streams are
 * held by it (they end when it closes); a stream whose consumer falls behind calls `overflow`,
 * and the connection layer decides what that means on the wire (the domain knows no close codes).
 */
export interface Binding extends Owner {
  readonly viewer: Viewer | null;
  /**
   * Replaces the connection's identity with a newer token of the same user (the caller checks
   * that): it then expires with the new token. Absent where nothing outlives a request (HTTP).
   */
  renew?(viewer: Viewer): void;
  /**
   * Calls `listener` with the connection's session events until the returned function is
   * called. Absent where nothing outlives a request (HTTP).
   */
  watchSession?(listener: (event: SessionEvent) => void): () => void;
}

/**
 * What happens to a connection's token: it expires within TOKEN_EXPIRY_WARNING_S (once per
 * token), or it was replaced by `renew`. `expiresAt` is epoch milliseconds.
 */
export type SessionEvent =
  | { kind: 'expiring'; expiresAt: number }
  | { kind: 'refreshed'; expiresAt: number };

/** The open connections of this instance, as the domain needs them. */
export interface ConnectionRegistry {
  /** Closes every connection of `userId` on this instance as dropped; returns how many. */
  drop(userId: string): number;
}

/**
 * Follows one connection while it is open: resolves a release that runs once the connection
 * closes (also when it closed before the promise settled), or null to follow nothing.
 */
export type ConnectionTracker = (connection: Binding) => Promise<(() => void) | null>;
