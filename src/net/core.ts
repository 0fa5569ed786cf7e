import type { Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import type { ConnectionRegistry, ConnectionTracker, Transport } from '../domain/connections.ts';
import { RateLimitedError, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { Connection, type ConnectionHost, type Wire } from './connection.ts';
import { Deadlines } from './deadlines.ts';

/** The limits the core enforces on every transport alike. */
export interface ConnectionLimits {
  /** Most open connections of users on this instance (MAX_CONNECTIONS). */
  maxConnections: number;
  /** Most open connections of one non-service user (MAX_CONNECTIONS_PER_USER). */
  maxPerUser: number;
  /**
   * Most open anonymous connections (ANONYMOUS_CONNECTIONS), a pool of their own that never
   * takes a place of a user; 0 refuses them (UNAUTHENTICATED).
   */
  maxAnonymous: number;
  /** Unsent bytes tolerated on one wire before it is closed as a slow consumer. */
  maxBufferedBytes: number;
  /** How long before its token's exp a watched session is warned (TOKEN_EXPIRY_WARNING_S). */
  expiryWarningMs: number;
}

export interface ConnectionCoreOptions extends ConnectionLimits {
  logger: Logger;
  /** Follows each connection of a user while it is open (chat presence). */
  track?: ConnectionTracker;
  /** Told about every refused connection, with the limit's name (logs and metrics). */
  onLimit?: (
    limit: 'connections' | 'connectionsPerUser' | 'anonymousConnections',
    viewer: Viewer | null,
  ) => void;
  /** Told about every closed connection (slow consumers, for metrics). */
  onClosed?: (connection: Connection) => void;
}

/**
 * The connection core: the only code that holds client connections. Every transport (graphql-ws,
 * graphql-sse, the legacy streams and sockets) opens its connections here and gets the same
 * record: identity, a bounded write that closes slow consumers, expiry at the token's `exp`,
 * keep-alives, limits, dropUser and shutdown. Timers are per instance, never per connection:
 * one expiry sweep, one keep-alive sweep per period, one flush per tick for corked writes.
 */
export function createConnectionCore(options: ConnectionCoreOptions) {
  const { logger } = options;
  const all = new Set<Connection>();
  const byUser = new Map<string, Set<Connection>>();
  let users = 0;
  let anonymous = 0;

  // Writes of one tick are corked per connection and leave together (one system call).
  let dirty: Connection[] = [];
  const flushAll = () => {
    const batch = dirty;
    dirty = [];
    for (const connection of batch) connection.flush();
  };

  // Expiry at the token's exp, and the session warning TOKEN_EXPIRY_WARNING_S before it (only
  // for connections whose session is watched): one timer each per instance.
  const expiries = new Deadlines<Connection>(
    (connection) => connection.close(CloseCode.TokenExpired, 'token expired'),
    {
      get: (c) => c.expiryBucket,
      set: (c, second) => {
        c.expiryBucket = second;
      },
    },
  );
  const warnings = new Deadlines<Connection>((connection) => connection.warnExpiring(), {
    get: (c) => c.warningBucket,
    set: (c, second) => {
      c.warningBucket = second;
    },
  });
  const fileExpiry = (connection: Connection) => {
    const expiresAt = connection.viewer?.expiresAt;
    if (expiresAt == null) return;
    expiries.add(connection, expiresAt);
    if (connection.sessionWatched) {
      warnings.add(connection, expiresAt - options.expiryWarningMs);
    }
  };
  const unfileExpiry = (connection: Connection) => {
    expiries.delete(connection);
    warnings.delete(connection);
  };

  // Keep-alive: one sweep per distinct period over the wires that use it.
  const keepAlives = new Map<number, NodeJS.Timeout>();
  const ensureKeepAlive = (period: number) => {
    if (period <= 0 || keepAlives.has(period)) return;
    const timer = setInterval(() => {
      for (const connection of all) {
        const { wire } = connection;
        if (wire.keepAliveMs === period && !wire.keepAlive()) connection.terminate();
      }
    }, period);
    timer.unref();
    keepAlives.set(period, timer);
  };

  const host: ConnectionHost = {
    maxBufferedBytes: options.maxBufferedBytes,
    renew: (connection, viewer) => core.identify(connection, viewer),
    sessionWatched(connection, watched) {
      const expiresAt = connection.viewer?.expiresAt;
      if (!watched) warnings.delete(connection);
      else if (expiresAt != null) warnings.add(connection, expiresAt - options.expiryWarningMs);
    },
    scheduleFlush(connection) {
      if (dirty.length === 0) process.nextTick(flushAll);
      dirty.push(connection);
    },
    released(connection) {
      if (!all.delete(connection)) return;
      unfile(connection);
      if (connection.closeCode === CloseCode.SlowConsumer) {
        logger.warn(
          { user: connection.viewer?.userId, transport: connection.transport },
          'slow consumer closed',
        );
      }
      options.onClosed?.(connection);
    },
  };

  /**
   * Throws when a connection of `viewer` would not be admitted now: RateLimitedError over a
   * limit, UNAUTHENTICATED for an anonymous caller where anonymous connections are off.
   */
  function admit(viewer: Viewer | null): void {
    if (viewer === null) {
      if (options.maxAnonymous === 0) {
        throw unauthenticated('Anonymous connections are not allowed: send a token');
      }
      if (anonymous >= options.maxAnonymous) {
        options.onLimit?.('anonymousConnections', null);
        throw new RateLimitedError(
          `This instance has ${options.maxAnonymous} anonymous connections; send a token or try again later`,
          null,
          503,
        );
      }
      return;
    }
    if (users >= options.maxConnections) {
      options.onLimit?.('connections', viewer);
      throw new RateLimitedError(
        `This instance has ${options.maxConnections} open connections; try again later`,
        null,
        503,
      );
    }
    const open = viewer.isService ? 0 : (byUser.get(viewer.userId)?.size ?? 0);
    if (open >= options.maxPerUser) {
      options.onLimit?.('connectionsPerUser', viewer);
      throw new RateLimitedError(
        `Too many open connections: at most ${options.maxPerUser} per user`,
      );
    }
  }

  function track(connection: Connection) {
    const { viewer } = connection;
    if (!viewer || !options.track) return;
    options.track(connection).then(
      (release) => {
        if (!release) return;
        // Closed, or identified as someone else, meanwhile.
        if (connection.closed || connection.viewer !== viewer) return release();
        connection.untrack = release;
      },
      (error: unknown) => logger.warn({ err: error }, 'connection tracking failed'),
    );
  }

  /** Files the connection under its viewer (counts, the user index, expiry, tracking). */
  function file(connection: Connection) {
    const { viewer } = connection;
    if (viewer === null) anonymous += 1;
    else {
      users += 1;
      let set = byUser.get(viewer.userId);
      if (!set) {
        set = new Set();
        byUser.set(viewer.userId, set);
      }
      set.add(connection);
    }
    fileExpiry(connection);
    track(connection);
  }

  /** Undoes `file`. */
  function unfile(connection: Connection) {
    unfileExpiry(connection);
    connection.untrack?.();
    connection.untrack = null;
    const userId = connection.viewer?.userId;
    if (userId === undefined) anonymous -= 1;
    else {
      users -= 1;
      const set = byUser.get(userId);
      set?.delete(connection);
      if (set?.size === 0) byUser.delete(userId);
    }
  }

  const core = {
    admit,

    /**
     * Opens a connection over `wire`: admitted against the limits (throws RateLimitedError,
     * opening nothing), registered (dropUser, metrics, shutdown), closed with 4401 at the
     * viewer's token expiry, kept alive by the wire's period, and followed by `track`.
     */
    open(transport: Transport, viewer: Viewer | null, wire: Wire): Connection {
      admit(viewer);
      const connection = new Connection(host, transport, viewer, wire);
      all.add(connection);
      file(connection);
      ensureKeepAlive(wire.keepAliveMs);
      return connection;
    },

    /**
     * Gives an open connection another identity (a legacy socket that names its user in its
     * first frame; a refreshed token): dropUser, limits, expiry and tracking follow it.
     */
    identify(connection: Connection, viewer: Viewer | null): void {
      if (connection.closed) return;
      unfile(connection);
      connection.viewer = viewer;
      file(connection);
    },

    /** The open connections of a user on this instance. */
    forUser(userId: string): Connection[] {
      return [...(byUser.get(userId) ?? [])];
    },

    drop(userId: string): number {
      const open = core.forUser(userId);
      for (const connection of open) connection.close(CloseCode.Forbidden, 'dropped');
      return open.length;
    },

    all(): IterableIterator<Connection> {
      return all.values();
    },

    get size(): number {
      return all.size;
    },

    /** Open connections per transport (the connections gauge). */
    countByTransport(): Record<string, number> {
      const counts: Record<string, number> = {};
      for (const { transport } of all) counts[transport] = (counts[transport] ?? 0) + 1;
      return counts;
    },

    /** Closes every connection (shutdown: 1001, so clients reconnect elsewhere) and the timers. */
    closeAll(code: CloseCode, reason: string): void {
      for (const connection of [...all]) connection.close(code, reason);
      core.stop();
    },

    stop(): void {
      expiries.stop();
      warnings.stop();
      for (const timer of keepAlives.values()) clearInterval(timer);
      keepAlives.clear();
    },
  } satisfies ConnectionRegistry & Record<string, unknown>;
  return core;
}

export type ConnectionCore = ReturnType<typeof createConnectionCore>;
