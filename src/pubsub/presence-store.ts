import type { PresencePingEvent } from './events.ts';
import { type InlineRate, RATE_CHECK_LUA } from './rate-limits.ts';
import type { RedisCommands } from './redis.ts';

/** The cached pings of one user: the last of any status, and the last others may see. */
export interface PresenceSnapshot {
  /** The last accepted ping (INVISIBLE included); null when none is cached. */
  own: PresencePingEvent | null;
  /** The last accepted ping that was not INVISIBLE; null when none is cached. */
  visible: PresencePingEvent | null;
}

/**
 * What `record` did: stored the ping, refused it as too soon after the previous one, or refused
 * it over the user's rate limit.
 */
export type RecordResult =
  | { accepted: true }
  | {
      accepted: false;
      /** The user's cached last ping, if any. */
      current: PresencePingEvent | null;
    }
  | {
      accepted: false;
      /** Over the rate limit: milliseconds until the user may ping again. */
      retryAfterMs: number;
    };

/**
 * The live presence cache, shared by every instance on one Redis (memory with one instance):
 * per user the last ping and the last visible ping, each expiring `ttlMs` after it was stored,
 * and the per-user minimum interval between pings. Postgres keeps the durable copy (domain).
 */
export interface PresenceStore {
  /**
   * Stores `ping` unless the user's previous accepted ping is younger than `minIntervalMs`.
   * Check and store are one atomic step, so two instances never both accept pings of one user
   * within the interval. A refused ping changes nothing (it does not extend the interval).
   * `rate` (RATE_LIMIT_PING) is checked first, in the same step with Redis (one round trip).
   */
  record(ping: PresencePingEvent, rate?: InlineRate | null): Promise<RecordResult>;
  /** The cached pings of a user; parts missing after their TTL are null. */
  get(userId: string): Promise<PresenceSnapshot>;
}

export interface PresenceStoreOptions {
  /** PING_MIN_INTERVAL_MS: shortest interval between two accepted pings of one user. */
  minIntervalMs: number;
  /** How long a cached ping lives after it was stored. */
  ttlMs: number;
  /** Redis command connection and key prefix; memory (one instance) when absent. */
  redis?: { client: RedisCommands; prefix: string } | undefined;
}

const visibleToOthers = (ping: PresencePingEvent) => ping.status !== 'INVISIBLE';

/** In-process store: one instance only; expired entries are dropped on read and now and then. */
const memoryStore = ({ minIntervalMs, ttlMs }: PresenceStoreOptions): PresenceStore => {
  interface Entry {
    own: PresencePingEvent | null;
    ownUntil: number;
    visible: PresencePingEvent | null;
    visibleUntil: number;
    rateUntil: number;
  }
  const entries = new Map<string, Entry>();
  let sincePrune = 0;
  const prune = (now: number) => {
    for (const [userId, e] of entries) {
      if (e.ownUntil <= now && e.visibleUntil <= now && e.rateUntil <= now) entries.delete(userId);
    }
  };
  return {
    record: async (ping, rate) => {
      const retryAfterMs = rate ? await rate.consume() : null;
      if (retryAfterMs !== null) return { accepted: false, retryAfterMs };
      const now = Date.now();
      // Bound the map without a timer: every so often drop what expired.
      if (++sincePrune >= 1_000) {
        sincePrune = 0;
        prune(now);
      }
      const entry = entries.get(ping.userId);
      if (entry && entry.rateUntil > now) {
        return { accepted: false, current: entry.ownUntil > now ? entry.own : null };
      }
      const next: Entry = entry ?? {
        own: null,
        ownUntil: 0,
        visible: null,
        visibleUntil: 0,
        rateUntil: 0,
      };
      next.rateUntil = now + minIntervalMs;
      next.own = ping;
      next.ownUntil = now + ttlMs;
      if (visibleToOthers(ping)) {
        next.visible = ping;
        next.visibleUntil = now + ttlMs;
      }
      entries.set(ping.userId, next);
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
};

// KEYS: interval, own, visible [, rate counter]. ARGV: ping JSON, interval ms, ttl ms, '1' when
// visible to others [, points, window ms]. The rate check (when given) answers {0, ms}; SET NX PX
// takes the interval slot atomically; a ping refused by it answers {2, the cached own ping}.
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

const parsePing = (raw: string | null | undefined): PresencePingEvent | null => {
  if (!raw) return null;
  try {
    return JSON.parse(raw) as PresencePingEvent;
  } catch {
    return null;
  }
};

const RECORD_COMMAND = 'switchboardPresenceRecord';
type RecordCommand = (
  numKeys: number,
  ...args: (string | number)[]
) => Promise<[number, (string | number | null)?]>;

/** Redis store: `<p>presence:{rate,own,visible}:<userId>`, all with a PX expiry. */
const redisStore = (
  client: RedisCommands,
  prefix: string,
  { minIntervalMs, ttlMs }: PresenceStoreOptions,
): PresenceStore => {
  const key = (kind: 'rate' | 'own' | 'visible', userId: string) =>
    `${prefix}presence:${kind}:${userId}`;
  // EVALSHA with the script cached by Redis, instead of sending the script on every ping.
  if (!(RECORD_COMMAND in client)) client.defineCommand(RECORD_COMMAND, { lua: RECORD });
  const record = (client as unknown as Record<typeof RECORD_COMMAND, RecordCommand>)[
    RECORD_COMMAND
  ].bind(client);
  return {
    record: async (ping, rate) => {
      const keys = [key('rate', ping.userId), key('own', ping.userId), key('visible', ping.userId)];
      const args = [
        JSON.stringify(ping),
        minIntervalMs,
        Math.max(1, Math.ceil(ttlMs)),
        visibleToOthers(ping) ? '1' : '0',
      ];
      const reply =
        rate?.redisKey != null
          ? await record(4, ...keys, rate.redisKey, ...args, rate.points, rate.windowMs)
          : await record(3, ...keys, ...args);
      if (reply[0] === 1) return { accepted: true };
      if (reply[0] === 2) return { accepted: false, current: parsePing(reply[1] as string | null) };
      return { accepted: false, retryAfterMs: Math.max(1, Number(reply[1] ?? 1)) };
    },
    get: async (userId) => {
      const [own, visible] = await client.mget(key('own', userId), key('visible', userId));
      return { own: parsePing(own), visible: parsePing(visible) };
    },
  };
};

/** Creates the presence cache over Redis (several instances) or memory (one instance). */
export function createPresenceStore(options: PresenceStoreOptions): PresenceStore {
  return options.redis
    ? redisStore(options.redis.client, options.redis.prefix, options)
    : memoryStore(options);
}
