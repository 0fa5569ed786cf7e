import type { Viewer } from '../auth/index.ts';
import { badInput, forbidden, isAppError, unauthenticated } from '../errors.ts';
import { Subscription } from '../pubsub/index.ts';
import type { Binding, SessionEvent } from './connections.ts';

/** The session a token gives: whose it is and when it ends (epoch ms). */
export interface Session {
  userId: string;
  expiresAt: number;
}

export interface SessionsOptions {
  /** Verifies a token (jose); rejects with UNAUTHENTICATED. */
  verify: (token: string) => Promise<Viewer>;
  /** Events buffered per subscriber before it is closed as a slow consumer. */
  subscriptionBuffer: number;
}

/**
 * Sessions that outlive their first token: `refresh` puts a newer token of the same user on a
 * live connection (a graphql-ws socket, a graphql-sse stream), which then expires with it, so
 * clients refresh in-band instead of reconnecting and resubscribing; `subscribe` tells a
 * connection when its token is about to expire and when it was refreshed.
 */
export function createSessions(options: SessionsOptions) {
  return {
    /**
     * Replaces the token of the connection the caller runs on. The new token must verify
     * (UNAUTHENTICATED otherwise) and name the connection's user (FORBIDDEN otherwise); in both
     * cases the old token and its expiry stand. Over plain HTTP it only validates.
     */
    async refresh(binding: Binding, token: string): Promise<Session> {
      const current = binding.viewer;
      if (!current) throw unauthenticated('Anonymous connections have no session to refresh');
      let next: Viewer;
      try {
        next = await options.verify(token);
      } catch (error) {
        if (isAppError(error)) throw unauthenticated(`Invalid token: ${error.message}`);
        throw error;
      }
      if (next.userId !== current.userId) {
        throw forbidden('The new token names another user than this connection');
      }
      if (next.expiresAt === null) throw unauthenticated('Invalid token: it has no expiry');
      binding.renew?.(next);
      return { userId: next.userId, expiresAt: next.expiresAt };
    },

    /**
     * The connection's session events: `expiring` once per token as soon as it has
     * TOKEN_EXPIRY_WARNING_S or less left (at once if it already has), `refreshed` after each
     * refresh on the connection. Ends with the connection.
     */
    subscribe(binding: Binding): Subscription<SessionEvent> {
      if (!binding.viewer) throw unauthenticated('Anonymous connections have no session');
      if (!binding.watchSession) {
        throw badInput('A session lives on a graphql-ws socket or a graphql-sse stream');
      }
      const events = new Subscription<SessionEvent>({
        capacity: options.subscriptionBuffer,
        owner: binding,
      });
      if (!events.done) events.onEnd(binding.watchSession((event) => events.push(event)));
      return events;
    },
  };
}

export type Sessions = ReturnType<typeof createSessions>;
