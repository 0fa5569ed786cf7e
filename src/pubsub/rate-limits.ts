import type { Redis } from 'ioredis';
import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
} from 'rate-limiter-flexible';

/** A rate: `points` calls per `seconds` (fixed window per key). */
export interface Rate {
  points: number;
  seconds: number;
}

/**
 * Per-key call counters for a few named operations, shared by every instance on one Redis.
 * `consume` resolves null when the call is allowed, or the milliseconds until it would be.
 */
export interface RateLimitStore<Op extends string> {
  consume(operation: Op, key: string): Promise<number | null>;
}

export interface RateLimitStoreOptions<Op extends string> {
  /** The rate of each operation; null turns its limit off. */
  rates: Record<Op, Rate | null>;
  /** Redis command connection and key prefix; memory (one instance) when absent. */
  redis?: { client: Redis; prefix: string };
}

/**
 * Creates the store: fixed windows in Redis (`<prefix>rl:<operation>:<key>`, expiring with the
 * window) or in memory. While Redis is unreachable each instance counts in memory instead, so an
 * outage neither blocks every call nor lifts the limits.
 */
export function createRateLimitStore<Op extends string>(
  options: RateLimitStoreOptions<Op>,
): RateLimitStore<Op> {
  const limiters = new Map<Op, RateLimiterAbstract>();
  for (const [operation, rate] of Object.entries(options.rates) as [Op, Rate | null][]) {
    if (!rate) continue;
    const base = { points: rate.points, duration: rate.seconds, keyPrefix: `rl:${operation}` };
    const memory = new RateLimiterMemory(base);
    limiters.set(
      operation,
      options.redis
        ? new RateLimiterRedis({
            ...base,
            keyPrefix: `${options.redis.prefix}rl:${operation}`,
            storeClient: options.redis.client,
            // Fail over at once instead of waiting for ioredis to give up on a dead connection.
            rejectIfRedisNotReady: true,
            insuranceLimiter: memory,
          })
        : memory,
    );
  }
  return {
    async consume(operation, key) {
      const limiter = limiters.get(operation);
      if (!limiter) return null;
      try {
        await limiter.consume(key);
        return null;
      } catch (rejection) {
        // A RateLimiterRes is a refusal; anything else is a store failure the caller sees.
        if (rejection instanceof RateLimiterRes) return Math.max(1, rejection.msBeforeNext);
        throw rejection;
      }
    },
  };
}
