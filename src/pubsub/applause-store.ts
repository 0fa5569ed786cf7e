import { type InlineRate, RATE_CHECK_LUA } from './rate-limits.ts';
import type { RedisCommands } from './redis.ts';

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
   * and the write are one script (one round trip).
   */
  add(
    meetingId: string,
    userId: string,
    at: number,
    rate?: InlineRate | null,
  ): Promise<number | null>;
  /**
   * The number of distinct users who applauded in each of `meetingIds` after `now - window`, in
   * the same order; prunes what is older. With Redis, one pipeline for all of them.
   */
  levels(meetingIds: readonly string[], now: number): Promise<number[]>;
}

export interface ApplauseStoreOptions {
  /** How long an applause counts, in milliseconds. */
  windowMs: number;
  /** Redis command connection and key prefix; memory (one instance) when absent. */
  redis?: { client: RedisCommands; prefix: string };
}

/** One instance: a map per meeting, pruned on reads and by a sweep at most once per window. */
function createMemoryApplauseStore(windowMs: number): ApplauseStore {
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

// KEYS: applause set [, rate counter]. ARGV: time, user id, ttl ms [, points, window ms].
// The rate check (when given) and the write run as one step: a refused call records nothing.
const ADD = `
local RATE_KEY, RATE_ARG = 2, 4
if #KEYS > 1 then ${RATE_CHECK_LUA}
end
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1}`;

const ADD_COMMAND = 'switchboardApplauseAdd';
type AddCommand = (numKeys: number, ...args: (string | number)[]) => Promise<[number, number?]>;

/**
 * Several instances: a sorted set per meeting (`<prefix>applause:<meetingId>`), members are user
 * ids scored by their latest applause time. The key expires a window after the last applause,
 * and each read drops entries older than the window.
 */
function createRedisApplauseStore(
  client: RedisCommands,
  prefix: string,
  windowMs: number,
): ApplauseStore {
  const key = (meetingId: string) => `${prefix}applause:${meetingId}`;
  const ttlMs = Math.ceil(windowMs) + 1_000;
  // EVALSHA with the script cached by Redis, instead of sending the script on every call.
  if (!(ADD_COMMAND in client)) client.defineCommand(ADD_COMMAND, { lua: ADD });
  const add = (client as unknown as Record<typeof ADD_COMMAND, AddCommand>)[ADD_COMMAND].bind(
    client,
  );
  return {
    async add(meetingId, userId, at, rate) {
      const reply =
        rate?.redisKey != null
          ? await add(
              2,
              key(meetingId),
              rate.redisKey,
              at,
              userId,
              ttlMs,
              rate.points,
              rate.windowMs,
            )
          : await add(1, key(meetingId), at, userId, ttlMs);
      return reply[0] === 1 ? null : Math.max(1, Number(reply[1] ?? 1));
    },
    async levels(meetingIds, now) {
      if (meetingIds.length === 0) return [];
      const pipeline = client.pipeline();
      for (const meetingId of meetingIds) {
        pipeline.zremrangebyscore(key(meetingId), '-inf', now - windowMs);
        pipeline.zcard(key(meetingId));
      }
      const replies = await pipeline.exec();
      if (replies === null) throw new Error('redis pipeline aborted');
      return meetingIds.map((_, i) => {
        const [error, count] = replies[i * 2 + 1] ?? [null, 0];
        if (error) throw error;
        return Number(count ?? 0);
      });
    },
  };
}
/** Creates the applause store over Redis (several instances) or memory (one instance). */
export function createApplauseStore(options: ApplauseStoreOptions): ApplauseStore {
  return options.redis
    ? createRedisApplauseStore(options.redis.client, options.redis.prefix, options.windowMs)
    : createMemoryApplauseStore(options.windowMs);
}
