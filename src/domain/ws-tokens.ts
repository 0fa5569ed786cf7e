import { randomBytes } from 'node:crypto';
import type { Viewer } from '../auth/index.ts';
import type { Database } from '../db/index.ts';
import { forbidden, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { RateLimit } from './limits.ts';

/** A fresh single-use token (chatter's ws_token, GraphQL `createWsToken`). */
export interface WsToken {
  /** 32 URL-safe random characters (24 random bytes). */
  token: string;
  userId: string;
  expiresAt: Date;
}

export interface WsTokensOptions {
  db: Database;
  /** Lifetime of a token in seconds (WS_TOKEN_TTL_S, default 300). */
  ttlSeconds: number;
  logger: Logger;
  /** How often expired tokens are deleted. Default: the TTL, at least 1 s, at most 60 s. */
  purgeIntervalMs?: number;
  /** The per-user rate of `create` (RATE_LIMIT_WS_TOKEN). */
  rateLimit?: RateLimit;
}

// What `createWsToken` makes, so anything else is refused without a database round trip.
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{28,128}$/;

/** The answer for every token that cannot be used; it never says which case it was. */
const refused = () => forbidden('Invalid, used or expired ws token');

interface ConsumedRow {
  user_id: string;
  group: string | null;
  live: boolean;
  /** Epoch milliseconds, computed in SQL so no driver time-zone parsing is involved. */
  viewer_expires_ms: number | null;
}

/**
 * Single-use tokens for opening a WebSocket where headers cannot be set. A token is stored in
 * Postgres and consumed by one `DELETE ... RETURNING`, so of two concurrent uses exactly one
 * wins, on any instance. Expired tokens are refused (and deleted on that use) and purged by a
 * per-instance timer.
 */
export function createWsTokens(options: WsTokensOptions) {
  const { prisma } = options.db;
  const ttlMs = options.ttlSeconds * 1000;

  const purge = async (): Promise<number> => {
    const { count } = await prisma.wsToken.deleteMany({
      where: { expiresAt: { lte: new Date() } },
    });
    return count;
  };

  const interval = options.purgeIntervalMs ?? Math.min(60_000, Math.max(1_000, ttlMs));
  const timer = setInterval(() => {
    purge().catch((error: unknown) => options.logger.warn({ err: error }, 'ws token purge failed'));
  }, interval);
  timer.unref();

  return {
    /** Creates a token for the viewer, valid for `ttlSeconds`. UNAUTHENTICATED when anonymous. */
    async create(viewer: Viewer | null): Promise<WsToken> {
      if (!viewer) throw unauthenticated();
      await options.rateLimit?.(viewer);
      const token = randomBytes(24).toString('base64url');
      const expiresAt = new Date(Date.now() + ttlMs);
      await prisma.wsToken.create({
        data: {
          token,
          userId: viewer.userId,
          group: viewer.group,
          viewerExpiresAt: viewer.expiresAt === null ? null : new Date(viewer.expiresAt),
          expiresAt,
        },
      });
      return { token, userId: viewer.userId, expiresAt };
    },

    /**
     * Uses a token up and returns the viewer it stands for (the creator, whose connection then
     * expires with the creator's own token). FORBIDDEN for an unknown, used or expired token.
     */
    async consume(token: string): Promise<Viewer> {
      if (!TOKEN_SHAPE.test(token)) throw refused();
      // One statement: the row is gone for every other caller the moment one gets it. An
      // expired token is deleted by its use as well (and refused).
      const rows = await prisma.$queryRaw<ConsumedRow[]>`
        DELETE FROM ws_tokens WHERE token = ${token}
        RETURNING user_id, "group", EXTRACT(EPOCH FROM expires_at) * 1000 > ${Date.now()}::float8 AS live,
          (EXTRACT(EPOCH FROM viewer_expires_at) * 1000)::float8 AS viewer_expires_ms`;
      const row = rows[0];
      if (!row?.live) throw refused();
      const expiresAt = row.viewer_expires_ms === null ? null : Number(row.viewer_expires_ms);
      // The creator's own token ran out meanwhile: the socket would be closed at once.
      if (expiresAt !== null && expiresAt <= Date.now()) throw refused();
      return { userId: row.user_id, group: row.group, isService: false, expiresAt };
    },

    /** Deletes every expired token now; resolves how many. */
    purge,

    /** Stops the purge timer. */
    stop(): void {
      clearInterval(timer);
    },
  };
}

export type WsTokens = ReturnType<typeof createWsTokens>;
