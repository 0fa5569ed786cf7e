import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
} from 'rate-limiter-flexible';
import type { RedisCommands } from '../pubsub/index.ts';
import { encodeKeyPart, hashTag } from './redis.ts';

/** A rate: `points` calls per `seconds` (fixed window per key). */
export interface Rate {
  points: number;
  seconds: number;
}

/**
 * Per-key call counters for a few named operations, shared by every instance on one Redis or
 * Redis Cluster (memory: one instance). A counter counts the calls of `key`, or of `key` within
 * `within` (the applause rate: per user within a meeting). With Redis the counter lives in the
 * cluster slot of `within` (of `key` without it), so a store whose script writes keys tagged
 * with that id can check the rate in the same step (see `InlineRate`).
 */
export interface RateLimitStore<Op extends string> {
  /** Counts one call; resolves null when it is allowed, or the milliseconds until it would be. */
  consume(operation: Op, key: string, within?: string): Promise<number | null>;
  /**
   * The same counter, for a store that checks it in its own Redis script together with its
   * write (one round trip instead of two); null when the operation has no limit. Both paths
   * count together. See `RATE_CHECK_LUA`.
   */
  inline(operation: Op, key: string, within?: string): InlineRate | null;
}

/**
 * One call's rate limit, for a store that checks it in the same step as its write: Redis stores
 * run `RATE_CHECK_LUA` on `redisKey` (the key `consume` uses, so both paths count together);
 * memory stores call `consume` first.
 */
export interface InlineRate {
  /**
   * `<prefix>rl:<operation>:{<within or key>}[:<key>]` (ids encoded), whose hash tag is the id
   * of `within`, or of `key` without it; null without Redis.
   */
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

/** The counter's name after the operation: `{<within or key>}[:<key>]`, ids encoded. */
const counterOf = (key: string, within: string | undefined) =>
  within === undefined ? hashTag(key) : `${hashTag(within)}:${encodeKeyPart(key)}`;

/** The store over one limiter per limited operation (rate-limiter-flexible). */
function storeOver<Op extends string>(
  rates: Record<Op, Rate | null>,
  limiterOf: (operation: Op, rate: Rate) => RateLimiterAbstract,
  redisKeyOf: ((operation: Op, counter: string) => string) | null,
): RateLimitStore<Op> {
  const limiters = new Map<Op, RateLimiterAbstract>();
  const limited = new Map<Op, Rate>();
  for (const [operation, rate] of Object.entries(rates) as [Op, Rate | null][]) {
    if (!rate) continue;
    limited.set(operation, rate);
    limiters.set(operation, limiterOf(operation, rate));
  }
  const count = async (operation: Op, counter: string): Promise<number | null> => {
    const limiter = limiters.get(operation);
    if (!limiter) return null;
    try {
      await limiter.consume(counter);
      return null;
    } catch (rejection) {
      // A RateLimiterRes is a refusal; anything else is a store failure the caller sees.
      if (rejection instanceof RateLimiterRes) return Math.max(1, rejection.msBeforeNext);
      throw rejection;
    }
  };
  return {
    consume: (operation, key, within) => count(operation, counterOf(key, within)),
    inline(operation, key, within) {
      const rate = limited.get(operation);
      if (!rate) return null;
      const counter = counterOf(key, within);
      return {
        redisKey: redisKeyOf ? redisKeyOf(operation, counter) : null,
        points: rate.points,
        windowMs: rate.seconds * 1000,
        consume: () => count(operation, counter),
      };
    },
  };
}

const memoryLimiter = (operation: string, rate: Rate) =>
  new RateLimiterMemory({
    points: rate.points,
    duration: rate.seconds,
    keyPrefix: `rl:${operation}`,
  });

/** Counters of one instance, in memory (fixed windows). */
export function createMemoryRateLimitStore<Op extends string>(options: {
  /** The rate of each operation; null turns its limit off. */
  rates: Record<Op, Rate | null>;
}): RateLimitStore<Op> {
  return storeOver(options.rates, memoryLimiter, null);
}

/**
 * Counters shared through Redis or a Redis Cluster: fixed windows in plain integer keys
 * (`<prefix>rl:<operation>:{<within or key>}[:<key>]`) expiring with the window. While Redis is
 * unreachable each instance counts in memory instead, so an outage neither blocks every call
 * nor lifts the limits. rate-limiter-flexible's RateLimiterRedis takes the Cluster client as it
 * takes one Redis: every command it sends (a one-key script, a one-key MULTI) names one key.
 */
export function createRedisRateLimitStore<Op extends string>(options: {
  rates: Record<Op, Rate | null>;
  client: RedisCommands;
  /** REDIS_PREFIX. */
  prefix: string;
}): RateLimitStore<Op> {
  const { client, prefix } = options;
  return storeOver(
    options.rates,
    (operation, rate) =>
      new RateLimiterRedis({
        points: rate.points,
        duration: rate.seconds,
        // rate-limiter-flexible names a key `<keyPrefix>:<counter>`, as `redisKeyOf` does.
        keyPrefix: `${prefix}rl:${operation}`,
        storeClient: client,
        // Fail over at once instead of waiting for ioredis to give up on a dead connection.
        rejectIfRedisNotReady: true,
        insuranceLimiter: memoryLimiter(operation, rate),
      }),
    (operation, counter) => `${prefix}rl:${operation}:${counter}`,
  );
}
