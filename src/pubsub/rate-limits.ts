import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
} from 'rate-limiter-flexible';
import type { RedisCommands } from './redis.ts';

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
  /**
   * The limit of one call as a store's own Redis script checks it together with its write (one
   * round trip instead of two); null when the operation has no limit. See `RATE_CHECK_LUA`.
   */
  inline(operation: Op, key: string): InlineRate | null;
}

/**
 * One call's rate limit, for a store that checks it in the same step as its write: Redis stores
 * run `RATE_CHECK_LUA` on `redisKey` (the key `consume` uses, so both paths count together);
 * memory stores call `consume` first.
 */
export interface InlineRate {
  /** `<prefix>rl:<operation>:<key>`, or null without Redis. */
  redisKey: string | null;
  points: number;
  windowMs: number;
  /** The ordinary check (what memory stores use): null when allowed, else ms until allowed. */
  consume(): Promise<number | null>;
}

/**
 * A Lua fragment that counts one call in a fixed window, for a store script to start with.
 * It expects the rate key in `KEYS[RATE_KEY]` and points and window ms in `ARGV[RATE_ARG]` and
 * `ARGV[RATE_ARG + 1]` (the script defines both locals before it), and returns
 * `{0, <ms until allowed>}` from the script when the call is over the rate. The counter is a
 * plain integer with a PX expiry, as rate-limiter-flexible keeps it.
 */
export const RATE_CHECK_LUA = `
local rate_count = redis.call('INCR', KEYS[RATE_KEY])
local rate_window = tonumber(ARGV[RATE_ARG + 1])
if rate_count == 1 then redis.call('PEXPIRE', KEYS[RATE_KEY], rate_window) end
if rate_count > tonumber(ARGV[RATE_ARG]) then
  local rate_ttl = redis.call('PTTL', KEYS[RATE_KEY])
  if rate_ttl < 0 then
    redis.call('PEXPIRE', KEYS[RATE_KEY], rate_window)
    rate_ttl = rate_window
  end
  return {0, rate_ttl}
end`;

export interface RateLimitStoreOptions<Op extends string> {
  /** The rate of each operation; null turns its limit off. */
  rates: Record<Op, Rate | null>;
  /** Redis command connection and key prefix; memory (one instance) when absent. */
  redis?: { client: RedisCommands; prefix: string };
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
  const rates = new Map<Op, Rate>();
  for (const [operation, rate] of Object.entries(options.rates) as [Op, Rate | null][]) {
    if (!rate) continue;
    rates.set(operation, rate);
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
  const consume = async (operation: Op, key: string): Promise<number | null> => {
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
  };
  return {
    consume,
    inline(operation, key) {
      const rate = rates.get(operation);
      if (!rate) return null;
      return {
        redisKey: options.redis ? `${options.redis.prefix}rl:${operation}:${key}` : null,
        points: rate.points,
        windowMs: rate.seconds * 1000,
        consume: () => consume(operation, key),
      };
    },
  };
}
