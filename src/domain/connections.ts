import type { Viewer } from '../auth/index.ts';
import type { CloseCode } from '../close-codes.ts';
import { RateLimitedError } from '../errors.ts';

/** How a client is connected. */
export type Transport = 'graphql-ws' | 'sse' | 'http' | 'legacy-stream' | 'legacy-ws';

/**
 * One open client connection of this instance, whatever the transport. Domain streams end when
 * `signal` aborts; `close` closes the connection the way its protocol does.
 */
export interface Connection {
  readonly id: string;
  readonly transport: Transport;
  readonly viewer: Viewer | null;
  /** Aborted once the connection is closed, by either side. */
  readonly signal: AbortSignal;
  /** The code the server closed it with; null while open or when the client went away. */
  readonly closeCode: CloseCode | null;
  /** Closes the connection; WebSockets get `code`, streams simply end. Idempotent. */
  close(code: CloseCode, reason: string): void;
}

/** The open connections of this instance, by user. */
export interface ConnectionRegistry {
  /**
   * Adds a connection until its signal aborts. Connections with a user are also handed to the
   * `track` hook (e.g. chat presence: the user's first/last open connection on any instance).
   * Throws RateLimitedError, adding nothing, when MAX_CONNECTIONS or MAX_CONNECTIONS_PER_USER
   * would be passed (see `admit`).
   */
  add(connection: Connection): void;
  /**
   * Throws RateLimitedError (RATE_LIMITED; status 503 when the instance is full, 429 when the
   * user is) if a connection of `viewer` would pass a limit now. `add` checks the same, so a
   * transport calls this only to refuse before it answers (a status code, an upgrade).
   */
  admit(viewer: Viewer | null): void;
  forUser(userId: string): Connection[];
  all(): Iterable<Connection>;
  readonly size: number;
}

/**
 * Follows one connection while it is open: resolves a release that runs once the connection
 * closes (also when it closed before the promise settled), or null to follow nothing.
 */
export type ConnectionTracker = (connection: Connection) => Promise<(() => void) | null>;

export interface ConnectionRegistryOptions {
  /** Called for each added connection that has a viewer; see {@link ConnectionTracker}. */
  track?: ConnectionTracker;
  /** Where a failing tracker is reported; it never fails the connection. */
  onTrackError?: (error: unknown, connection: Connection) => void;
  /** Most open connections (MAX_CONNECTIONS). Default: no limit. */
  maxConnections?: number;
  /** Most open connections of one non-service user (MAX_CONNECTIONS_PER_USER). Default: none. */
  maxPerUser?: number;
  /** Told about every refused connection, with the limit's name (for logs and metrics). */
  onLimit?: (limit: 'connections' | 'connectionsPerUser', viewer: Viewer | null) => void;
  /** Told about every added connection once it closes (e.g. slow consumers, for metrics). */
  onClosed?: (connection: Connection) => void;
}

export function createConnectionRegistry(
  options: ConnectionRegistryOptions = {},
): ConnectionRegistry {
  const all = new Set<Connection>();
  const byUser = new Map<string, Set<Connection>>();
  const track = (connection: Connection, tracker: ConnectionTracker) => {
    tracker(connection).then(
      (release) => {
        if (!release) return;
        if (connection.signal.aborted) return release();
        connection.signal.addEventListener('abort', release, { once: true });
      },
      (error: unknown) => options.onTrackError?.(error, connection),
    );
  };
  const admit = (viewer: Viewer | null) => {
    if (all.size >= (options.maxConnections ?? Number.POSITIVE_INFINITY)) {
      options.onLimit?.('connections', viewer);
      throw new RateLimitedError(
        `This instance has ${options.maxConnections} open connections; try again later`,
        null,
        503,
      );
    }
    const open = viewer && !viewer.isService ? (byUser.get(viewer.userId)?.size ?? 0) : 0;
    if (open >= (options.maxPerUser ?? Number.POSITIVE_INFINITY)) {
      options.onLimit?.('connectionsPerUser', viewer);
      throw new RateLimitedError(
        `Too many open connections: at most ${options.maxPerUser} per user`,
      );
    }
  };
  return {
    admit,
    add(connection) {
      if (connection.signal.aborted) return;
      admit(connection.viewer);
      all.add(connection);
      if (connection.viewer && options.track) track(connection, options.track);
      const userId = connection.viewer?.userId;
      if (userId !== undefined) {
        let set = byUser.get(userId);
        if (!set) {
          set = new Set();
          byUser.set(userId, set);
        }
        set.add(connection);
      }
      connection.signal.addEventListener(
        'abort',
        () => {
          all.delete(connection);
          options.onClosed?.(connection);
          if (userId === undefined) return;
          const set = byUser.get(userId);
          set?.delete(connection);
          if (set?.size === 0) byUser.delete(userId);
        },
        { once: true },
      );
    },
    forUser: (userId) => [...(byUser.get(userId) ?? [])],
    all: () => all.values(),
    get size() {
      return all.size;
    },
  };
}
