import type { RedisCommands } from '../pubsub/index.ts';
import { type InlineRate, RATE_CHECK_LUA } from './rate-limits.ts';
import { defineScript, hashTag } from './redis.ts';

/**
 * Who applauded when, per meeting, shared by every instance: each instance computes the level
 * from the same entries. A user has at most one entry per meeting (sending again refreshes its
 * time), and entries older than the window are pruned, so a meeting holds at most one entry per
 * user who applauded within the window.
 */
export interface ApplauseStore {
  /**
   * Records (or refreshes) the applause of `userId` in `meetingId` at `at` (ms since epoch),
   * unless `rate` refuses the call: then nothing is recorded and it resolves the milliseconds
   * until the user may applaud again. Resolves null when recorded. With Redis, the rate check
   * and the write are one script (one round trip); on a cluster that needs the rate's counter
   * in the meeting's slot, so `rate` must count within the meeting
   * (`rates.inline(operation, userId, meetingId)`).
   */
  add(
    meetingId: string,
    userId: string,
    at: number,
    rate?: InlineRate | null,
  ): Promise<number | null>;
  /**
   * The number of distinct users who applauded in each of `meetingIds` after `now - window`, in
   * the same order; prunes what is older. With Redis, all commands leave at once (one write per
   * node).
   */
  levels(meetingIds: readonly string[], now: number): Promise<number[]>;
}

/** One instance: a map per meeting, pruned on reads and by a sweep at most once per window. */
export function createMemoryApplauseStore(options: {
  /** How long an applause counts, in milliseconds. */
  windowMs: number;
}): ApplauseStore {
  const { windowMs } = options;
  const meetings = new Map<string, Map<string, number>>();
  let lastSweep = 0;
  const prune = (meetingId: string, entries: Map<string, number>, since: number) => {
    for (const [user, at] of entries) if (at <= since) entries.delete(user);
    if (entries.size === 0) meetings.delete(meetingId);
  };
  return {
    async add(meetingId, userId, at, rate) {
      const refused = rate ? await rate.consume() : null;
      if (refused !== null) return refused;
      // Meetings nobody reads are swept here, so nothing grows without bound.
      if (at - lastSweep >= windowMs) {
        lastSweep = at;
        for (const [id, entries] of meetings) prune(id, entries, at - windowMs);
      }
      const entries = meetings.get(meetingId) ?? new Map<string, number>();
      meetings.set(meetingId, entries);
      entries.set(userId, Math.max(at, entries.get(userId) ?? 0));
      return null;
    },
    async levels(meetingIds, now) {
      return meetingIds.map((meetingId) => {
        const entries = meetings.get(meetingId);
        if (!entries) return 0;
        prune(meetingId, entries, now - windowMs);
        return entries.size;
      });
    },
  };
}

// KEYS: applause set [, rate counter in the same slot]. ARGV: time, user id, ttl ms [, points,
// window ms]. The rate check (when given) and the write run as one step: a refused call records
// nothing.
const ADD = `
local RATE_KEY, RATE_ARG = 2, 4
if #KEYS > 1 then ${RATE_CHECK_LUA}
end
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1}`;

// KEYS: applause set. ARGV: the window's start (ms). Drops what is older, counts the rest.
const LEVEL = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])`;

/**
 * Several instances, on one Redis or a Redis Cluster: a sorted set per meeting
 * (`<prefix>applause:{<meetingId>}`, tagged by the meeting, so the meeting's applause rate
 * counters share its slot), members are user ids scored by their latest applause time. The key
 * expires a window after the last applause, and each read drops entries older than the window.
 */
export function createRedisApplauseStore(options: {
  windowMs: number;
  client: RedisCommands;
  /** REDIS_PREFIX. */
  prefix: string;
}): ApplauseStore {
  const { client, prefix, windowMs } = options;
  const key = (meetingId: string) => `${prefix}applause:${hashTag(meetingId)}`;
  const ttlMs = Math.ceil(windowMs) + 1_000;
  // One command per key count (see defineScript): with and without the rate counter.
  const add = defineScript<[number, number?]>(client, 'switchboardApplauseAdd', 1, ADD);
  const addRated = defineScript<[number, number?]>(client, 'switchboardApplauseAddRated', 2, ADD);
  const level = defineScript<number>(client, 'switchboardApplauseLevel', 1, LEVEL);
  return {
    async add(meetingId, userId, at, rate) {
      const reply =
        rate?.redisKey != null
          ? await addRated(
              key(meetingId),
              rate.redisKey,
              at,
              userId,
              ttlMs,
              rate.points,
              rate.windowMs,
            )
          : await add(key(meetingId), at, userId, ttlMs);
      return reply[0] === 1 ? null : Math.max(1, Number(reply[1] ?? 1));
    },
    levels(meetingIds, now) {
      // One script per meeting, all sent in this tick: auto-pipelining writes them once per
      // node (an explicit pipeline may not span the slots of a cluster).
      return Promise.all(meetingIds.map((meetingId) => level(key(meetingId), now - windowMs)));
    },
  };
}
