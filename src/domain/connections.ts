import type { Viewer } from '../auth/index.ts';

/** How a client is connected. */
export type Transport = 'graphql-ws' | 'sse' | 'http' | 'legacy-stream' | 'legacy-ws';

/**
 * What a domain stream is bound to: the caller and the life of its connection. Streams end when
 * `signal` aborts; a stream whose consumer falls behind calls `overflow`, and the connection
 * layer decides what that means on the wire (the domain knows no close codes).
 */
export interface Binding {
  readonly viewer: Viewer | null;
  /** Aborted once the connection is closed, by either side. */
  readonly signal: AbortSignal;
  /** The consumer fell behind its buffer: the connection is closed as a slow consumer. */
  overflow(): void;
}

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
