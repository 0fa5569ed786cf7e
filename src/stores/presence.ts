import type { RedisCommands } from '../pubsub/index.ts';
import { type InlineRate, RATE_CHECK_LUA } from './rate-limits.ts';
import { defineScript, hashTag } from './redis.ts';

/** The cached pings of one user: the last of any kind, and the last others may see. */
export interface PresenceSnapshot<P> {
  /** The last accepted ping (visible or not); null when none is cached. */
  own: P | null;
  /** The last accepted ping that was recorded as visible to others; null when none is cached. */
  visible: P | null;
}

/**
 * What `record` did: stored the ping, refused it as too soon after the previous one, or refused
 * it over the user's rate limit.
 */
export type RecordResult<P> =
  | { accepted: true }
  | {
      accepted: false;
      /** The user's cached last ping, if any. */
      current: P | null;
    }
  | {
      accepted: false;
      /** Over the rate limit: milliseconds until the user may ping again. */
      retryAfterMs: number;
    };

/** How `record` stores one ping. */
export interface RecordOptions {
  /** Whether others may see the ping (the domain decides; INVISIBLE pings are not). */
  visible: boolean;
  /**
   * The user's rate (RATE_LIMIT_PING), checked before the interval, in the same step with Redis
   * (one round trip). On a cluster its counter must be the user's (`rates.inline(op, userId)`),
   * which shares the slot of the user's presence keys.
   */
  rate?: InlineRate | null;
}

/**
 * The live presence cache, shared by every instance on one Redis or Redis Cluster (memory with
 * one instance): per user the last ping and the last visible ping (JSON values the domain
 * defines), each expiring `ttlMs` after it was stored, and the per-user minimum interval between
 * pings. Postgres keeps the durable copy (domain).
 */
export interface PresenceStore<P> {
  /**
   * Stores `ping` of `userId` unless the user's previous accepted ping is younger than
   * `minIntervalMs`. Check and store are one atomic step, so two instances never both accept
   * pings of one user within the interval. A refused ping changes nothing (it does not extend
   * the interval).
   */
  record(userId: string, ping: P, options: RecordOptions): Promise<RecordResult<P>>;
  /** The cached pings of a user; parts missing after their TTL are null. */
  get(userId: string): Promise<PresenceSnapshot<P>>;
}

export interface PresenceStoreOptions {
  /** PING_MIN_INTERVAL_MS: shortest interval between two accepted pings of one user. */
  minIntervalMs: number;
  /** How long a cached ping lives after it was stored. */
  ttlMs: number;
}

/** In-process store: one instance only; expired entries are dropped on read and now and then. */
export function createMemoryPresenceStore<P>({
  minIntervalMs,
  ttlMs,
}: PresenceStoreOptions): PresenceStore<P> {
  interface Entry {
    own: P | null;
    ownUntil: number;
    visible: P | null;
    visibleUntil: number;
    intervalUntil: number;
  }
  const entries = new Map<string, Entry>();
  let sincePrune = 0;
  const prune = (now: number) => {
    for (const [userId, e] of entries) {
      if (e.ownUntil <= now && e.visibleUntil <= now && e.intervalUntil <= now) {
        entries.delete(userId);
      }
    }
  };
  return {
    record: async (userId, ping, { visible, rate }) => {
      const retryAfterMs = rate ? await rate.consume() : null;
      if (retryAfterMs !== null) return { accepted: false, retryAfterMs };
      const now = Date.now();
      // Bound the map without a timer: every so often drop what expired.
      if (++sincePrune >= 1_000) {
        sincePrune = 0;
        prune(now);
      }
      const entry = entries.get(userId);
      if (entry && entry.intervalUntil > now) {
        return { accepted: false, current: entry.ownUntil > now ? entry.own : null };
      }
      const next: Entry = entry ?? {
        own: null,
        ownUntil: 0,
        visible: null,
        visibleUntil: 0,
        intervalUntil: 0,
      };
      next.intervalUntil = now + minIntervalMs;
      next.own = ping;
      next.ownUntil = now + ttlMs;
      if (visible) {
        next.visible = ping;
        next.visibleUntil = now + ttlMs;
      }
      entries.set(userId, next);
      return { accepted: true };
    },
    get: async (userId) => {
      const now = Date.now();
      const entry = entries.get(userId);
      return {
        own: entry && entry.ownUntil > now ? entry.own : null,
        visible: entry && entry.visibleUntil > now ? entry.visible : null,
      };
    },
  };
}

// KEYS: interval, own, visible [, rate counter], all in the user's slot. ARGV: ping JSON,
// interval ms, ttl ms, '1' when visible to others [, points, window ms]. The rate check (when
// given) answers {0, ms}; SET NX PX takes the interval slot atomically; a ping refused by it
// answers {2, the cached own ping}.
const RECORD = `
local RATE_KEY, RATE_ARG = 4, 5
if #KEYS > 3 then ${RATE_CHECK_LUA}
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then
  return {2, redis.call('GET', KEYS[2])}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
if ARGV[4] == '1' then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3]) end
return {1}`;

/**
 * Several instances, on one Redis or a Redis Cluster:
 * `<prefix>presence:{<userId>}:{interval,own,visible}`, all with a PX expiry and tagged by the
 * user, so one script (and one MGET) reaches them together with the user's ping rate counter.
 */
export function createRedisPresenceStore<P>(
  options: PresenceStoreOptions & {
    client: RedisCommands;
    /** REDIS_PREFIX. */
    prefix: string;
  },
): PresenceStore<P> {
  const { client, prefix, minIntervalMs, ttlMs } = options;
  const key = (userId: string, kind: 'interval' | 'own' | 'visible') =>
    `${prefix}presence:${hashTag(userId)}:${kind}`;
  const parse = (raw: string | null | undefined): P | null => {
    if (!raw) return null;
    try {
      return JSON.parse(raw) as P;
    } catch {
      return null;
    }
  };
  type Reply = [number, (string | number | null)?];
  // One command per key count (see defineScript): with and without the rate counter.
  const record = defineScript<Reply>(client, 'switchboardPresenceRecord', 3, RECORD);
  const recordRated = defineScript<Reply>(client, 'switchboardPresenceRecordRated', 4, RECORD);
  return {
    record: async (userId, ping, { visible, rate }) => {
      const keys = [key(userId, 'interval'), key(userId, 'own'), key(userId, 'visible')];
      const args = [
        JSON.stringify(ping),
        minIntervalMs,
        Math.max(1, Math.ceil(ttlMs)),
        visible ? '1' : '0',
      ];
      const reply =
        rate?.redisKey != null
          ? await recordRated(...keys, rate.redisKey, ...args, rate.points, rate.windowMs)
          : await record(...keys, ...args);
      if (reply[0] === 1) return { accepted: true };
      if (reply[0] === 2) return { accepted: false, current: parse(reply[1] as string | null) };
      return { accepted: false, retryAfterMs: Math.max(1, Number(reply[1] ?? 1)) };
    },
    get: async (userId) => {
      const [own, visible] = await client.mget(key(userId, 'own'), key(userId, 'visible'));
      return { own: parse(own), visible: parse(visible) };
    },
  };
}
