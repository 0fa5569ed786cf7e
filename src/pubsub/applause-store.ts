import type { Redis } from 'ioredis';

/**
 * Who applauded when, per meeting, shared by every instance: each instance computes the level
 * from the same entries. A user has at most one entry per meeting (sending again refreshes its
 * time), and entries older than the window are pruned, so a meeting holds at most one entry per
 * user who applauded within the window.
 */
export interface ApplauseStore {
  /** Records (or refreshes) the applause of `userId` in `meetingId` at `at` (ms since epoch). */
  add(meetingId: string, userId: string, at: number): Promise<void>;
  /**
   * The number of distinct users who applauded in `meetingId` after `now - window`; prunes
   * what is older.
   */
  level(meetingId: string, now: number): Promise<number>;
}

export interface ApplauseStoreOptions {
  /** How long an applause counts, in milliseconds. */
  windowMs: number;
  /** Redis command connection and key prefix; memory (one instance) when absent. */
  redis?: { client: Redis; prefix: string };
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
    async add(meetingId, userId, at) {
      // Meetings nobody reads are swept here, so nothing grows without bound.
      if (at - lastSweep >= windowMs) {
        lastSweep = at;
        for (const [id, entries] of meetings) prune(id, entries, at - windowMs);
      }
      const entries = meetings.get(meetingId) ?? new Map<string, number>();
      meetings.set(meetingId, entries);
      entries.set(userId, Math.max(at, entries.get(userId) ?? 0));
    },
    async level(meetingId, now) {
      const entries = meetings.get(meetingId);
      if (!entries) return 0;
      prune(meetingId, entries, now - windowMs);
      return entries.size;
    },
  };
}

type ExecResult = [error: Error | null, result: unknown][] | null;

/** A transaction's replies; throws the first failed command's error (exec does not). */
function check(result: ExecResult): [Error | null, unknown][] {
  if (result === null) throw new Error('redis transaction aborted');
  const failed = result.find(([error]) => error !== null)?.[0];
  if (failed) throw failed;
  return result;
}

/**
 * Several instances: a sorted set per meeting (`<prefix>applause:<meetingId>`), members are user
 * ids scored by their latest applause time. The key expires a window after the last applause,
 * and each read drops entries older than the window.
 */
function createRedisApplauseStore(client: Redis, prefix: string, windowMs: number): ApplauseStore {
  const key = (meetingId: string) => `${prefix}applause:${meetingId}`;
  const ttlMs = Math.ceil(windowMs) + 1_000;
  return {
    async add(meetingId, userId, at) {
      check(
        await client
          .multi()
          .zadd(key(meetingId), 'GT', at, userId)
          .pexpire(key(meetingId), ttlMs)
          .exec(),
      );
    },
    async level(meetingId, now) {
      const result = check(
        await client
          .multi()
          .zremrangebyscore(key(meetingId), '-inf', now - windowMs)
          .zcard(key(meetingId))
          .exec(),
      );
      return Number(result[1]?.[1] ?? 0);
    },
  };
}

/** Creates the applause store over Redis (several instances) or memory (one instance). */
export function createApplauseStore(options: ApplauseStoreOptions): ApplauseStore {
  return options.redis
    ? createRedisApplauseStore(options.redis.client, options.redis.prefix, options.windowMs)
    : createMemoryApplauseStore(options.windowMs);
}
