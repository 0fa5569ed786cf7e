import type { Viewer } from '../auth/index.ts';
import { rateLimited } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { RateLimitStore } from '../pubsub/index.ts';

/** The operations with a per-user rate limit (RATE_LIMIT_* settings). */
export type RateLimitedOperation =
  | 'publish'
  | 'sendApplause'
  | 'ping'
  | 'sendChatMessage'
  | 'createWsToken';

/** Counts one call of the viewer; throws RATE_LIMITED (legacy: 429) when over the rate. */
export type RateLimit = (viewer: Viewer) => Promise<void>;

/** Told when a size or count limit refuses something; logs a warning and counts it. */
export type LimitReporter = (limit: string, fields?: Record<string, unknown>) => void;

export interface Limits {
  /** The rate limit of one operation. */
  rate(operation: RateLimitedOperation): RateLimit;
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
  return {
    report,
    rate: (operation) => async (viewer) => {
      const retryAfterMs = await store.consume(operation, viewer.userId);
      if (retryAfterMs === null) return;
      metrics?.rateLimited.inc({ operation });
      logger.warn({ limit: 'rate', operation, user: viewer.userId }, 'rate limit exceeded');
      throw rateLimited(
        `Too many ${operation} calls; try again in ${Math.ceil(retryAfterMs / 1000)} s`,
        retryAfterMs,
      );
    },
  };
}
