import type { Viewer } from '../auth/index.ts';
import { rateLimited } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { InlineRate, RateLimitStore } from '../stores/index.ts';

/** The operations with a per-user rate limit (RATE_LIMIT_* settings). */
export type RateLimitedOperation =
  | 'publish'
  | 'sendApplause'
  | 'ping'
  | 'sendChatMessage'
  | 'createWsToken';

/** Counts one call of the viewer; throws RATE_LIMITED (legacy: 429) when over the rate. */
export type RateLimit = (viewer: Viewer) => Promise<void>;

/**
 * A rate limit that a store checks in the same Redis script as its write, so a call costs one
 * round trip (sendApplause, ping): the store gets `of(viewer)` and reports a refusal back.
 */
export interface InlineRateLimit {
  /**
   * The viewer's limit for one call; null when the operation has no limit. With `within` (a
   * meeting id, say) the viewer's calls are counted per `within`, and a Redis Cluster keeps the
   * counter in the slot of that id, beside what the store writes.
   */
  of(viewer: Viewer, within?: string): InlineRate | null;
  /** The RATE_LIMITED error for a refused call (to throw); logged and counted like `rate`. */
  refusal(viewer: Viewer, retryAfterMs: number): Error;
}

/** Told when a size or count limit refuses something; logs a warning and counts it. */
export type LimitReporter = (limit: string, fields?: Record<string, unknown>) => void;

export interface Limits {
  /** The rate limit of one operation. */
  rate(operation: RateLimitedOperation): RateLimit;
  /** The rate limit of one operation, for a store that checks it with its write. */
  inline(operation: RateLimitedOperation): InlineRateLimit;
  report: LimitReporter;
}

/**
 * Rate limits and the reporting of refused requests: every refusal is one warn log line naming
 * the limit (and the user id, never a token) and one increment of its metric.
 */
export function createLimits(options: {
  store: RateLimitStore<RateLimitedOperation>;
  logger: Logger;
  metrics?: Metrics;
}): Limits {
  const { store, logger, metrics } = options;
  const report: LimitReporter = (limit, fields = {}) => {
    metrics?.limitRejections.inc({ limit });
    logger.warn({ ...fields, limit }, 'limit exceeded');
  };
  const refuse = (operation: RateLimitedOperation, viewer: Viewer, retryAfterMs: number) => {
    metrics?.rateLimited.inc({ operation });
    logger.warn({ limit: 'rate', operation, user: viewer.userId }, 'rate limit exceeded');
    return rateLimited(
      `Too many ${operation} calls; try again in ${Math.ceil(retryAfterMs / 1000)} s`,
      retryAfterMs,
    );
  };
  return {
    report,
    rate: (operation) => async (viewer) => {
      const retryAfterMs = await store.consume(operation, viewer.userId);
      if (retryAfterMs === null) return;
      throw refuse(operation, viewer, retryAfterMs);
    },
    inline: (operation) => ({
      of: (viewer, within) => store.inline(operation, viewer.userId, within),
      refusal: (viewer, retryAfterMs) => refuse(operation, viewer, retryAfterMs),
    }),
  };
}
