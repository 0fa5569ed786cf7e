import type { Logger } from '../logger.ts';
import type { PubSub } from './pubsub.ts';
import type { RedisCommands } from './redis.ts';
import type { Subscription, SubscriptionOptions } from './subscription.ts';
import { topic } from './topics.ts';

/** A member's first join or last leave of a set, across all instances. */
export interface MembershipChange {
  set: string;
  member: string;
  present: boolean;
}

/**
 * Who is present where, across instances: "users with an open connection in group g", "users
 * subscribed to meeting m", "live instances". Each instance joins members while it holds them
 * (reference-counted locally) and keeps its entries alive with a heartbeat; entries of an
 * instance that dies expire after `ttlMs`, and a sweep then reports the members as gone.
 */
export interface Membership {
  /** Holds `member` in `set` until the returned release runs (idempotent). */
  join(set: string, member: string): () => void;
  /** The distinct live members of `set`, on every instance. */
  members(set: string): Promise<string[]>;
  /** How many distinct live members each of `sets` has (with Redis, one pipeline for all). */
  counts(sets: readonly string[]): Promise<number[]>;
  /**
   * Changes of `set`: a member's first join anywhere (present) and its last leave or expiry
   * (absent). At most once, in the order this instance sees them.
   */
  watch(
    set: string,
    options: SubscriptionOptions<MembershipChange>,
  ): Subscription<MembershipChange>;
  /** Releases every local entry and stops the heartbeat. */
  close(): Promise<void>;
}

export interface MembershipOptions {
  pubsub: PubSub;
  /** Unique per process; entries are kept per instance. */
  instanceId: string;
  /** How long an entry outlives its last heartbeat (an instance's death is noticed after this). */
  ttlMs: number;
  logger: Logger;
  /** Redis command connection and key prefix; memory (one instance) when absent. */
  redis?: { client: RedisCommands; prefix: string };
}

type Store = {
  /** Adds this instance's entry; resolves true when the member is new to the set. */
  add(set: string, member: string): Promise<boolean>;
  /** Removes this instance's entry; resolves true when no instance holds the member any more. */
  remove(set: string, member: string): Promise<boolean>;
  members(set: string): Promise<string[]>;
  counts(sets: readonly string[]): Promise<number[]>;
  refresh(entries: [string, string][]): Promise<void>;
  /** Drops expired entries of `set`; resolves the members that left with them. */
  sweep(set: string): Promise<string[]>;
};

const memoryStore = (): Store => {
  const sets = new Map<string, Set<string>>();
  return {
    add: async (set, member) => {
      const s = sets.get(set) ?? new Set<string>();
      sets.set(set, s);
      const isNew = !s.has(member);
      s.add(member);
      return isNew;
    },
    remove: async (set, member) => {
      const s = sets.get(set);
      const had = s?.delete(member) ?? false;
      if (s?.size === 0) sets.delete(set);
      return had;
    },
    members: async (set) => [...(sets.get(set) ?? [])],
    counts: async (list) => list.map((set) => sets.get(set)?.size ?? 0),
    refresh: async () => {},
    sweep: async () => [],
  };
};

// Per set: a sorted set of members scored by their latest expiry (`<p>m:<set>`), and per member
// a sorted set of the instances holding it, scored by expiry (`<p>m:<set>:<member>`). Scripts
// keep the two in step atomically, so "first join" and "last leave" are decided once. Set and
// member are encoded (`%` and `:` escaped), so neither contains `:` and no set key can equal a
// member key (meeting `1:x` is not member `x` of meeting `1`); the set's sorted set holds the
// encoded members, which SWEEP appends to the set key as they are.
const ADD = `
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
return redis.call('ZCARD', KEYS[2])`;
const REMOVE = `
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[2]) == 0 then
  if redis.call('ZREM', KEYS[1], ARGV[3]) == 1 then return 1 end
end
return 0`;
const SWEEP = `
local gone = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  local key = KEYS[1] .. ':' .. member
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  if redis.call('ZCARD', key) == 0 then
    redis.call('ZREM', KEYS[1], member)
    table.insert(gone, member)
  end
end
return gone`;

/** Escapes `%` and `:`, so an encoded id never contains the key separator. */
export const encodeKeyPart = (id: string) =>
  id.replace(/[%:]/g, (c) => (c === '%' ? '%25' : '%3A'));
const decodeKeyPart = (part: string) =>
  part.replace(/%25|%3A/g, (found) => (found === '%25' ? '%' : ':'));

const redisStore = (
  client: RedisCommands,
  prefix: string,
  instanceId: string,
  ttlMs: number,
): Store => {
  const setKey = (set: string) => `${prefix}m:${encodeKeyPart(set)}`;
  const memberKey = (set: string, member: string) =>
    `${prefix}m:${encodeKeyPart(set)}:${encodeKeyPart(member)}`;
  return {
    add: async (set, member) => {
      const now = Date.now();
      const count = await client.eval(
        ADD,
        2,
        setKey(set),
        memberKey(set, member),
        instanceId,
        now + ttlMs,
        now,
        encodeKeyPart(member),
      );
      return count === 1;
    },
    remove: async (set, member) =>
      (await client.eval(
        REMOVE,
        2,
        setKey(set),
        memberKey(set, member),
        instanceId,
        Date.now(),
        encodeKeyPart(member),
      )) === 1,
    members: async (set) =>
      (await client.zrangebyscore(setKey(set), Date.now(), '+inf')).map(decodeKeyPart),
    counts: async (list) => {
      if (list.length === 0) return [];
      const now = Date.now();
      const pipeline = client.pipeline();
      for (const set of list) pipeline.zcount(setKey(set), now, '+inf');
      const replies = await pipeline.exec();
      if (replies === null) throw new Error('redis pipeline aborted');
      return replies.map(([error, count]) => {
        if (error) throw error;
        return Number(count);
      });
    },
    refresh: async (entries) => {
      const expiry = Date.now() + ttlMs;
      const pipeline = client.pipeline();
      for (const [set, member] of entries) {
        pipeline.zadd(memberKey(set, member), expiry, instanceId);
        pipeline.pexpireat(memberKey(set, member), expiry);
        pipeline.zadd(setKey(set), 'GT', expiry, encodeKeyPart(member));
      }
      await pipeline.exec();
    },
    sweep: async (set) =>
      ((await client.eval(SWEEP, 1, setKey(set), Date.now())) as string[]).map(decodeKeyPart),
  };
};

/** Creates the membership registry over Redis (several instances) or memory (one instance). */
export function createMembership(options: MembershipOptions): Membership {
  const { pubsub, logger } = options;
  const store = options.redis
    ? redisStore(options.redis.client, options.redis.prefix, options.instanceId, options.ttlMs)
    : memoryStore();
  /** Local reference counts: set -> member -> holders on this instance. */
  const local = new Map<string, Map<string, number>>();
  /** Sets watched on this instance, with their watcher counts (they are swept). */
  const watched = new Map<string, number>();
  // Operations on one (set, member) run in order, so a quick leave never overtakes its join.
  const queues = new Map<string, Promise<void>>();

  const announce = (set: string, member: string, present: boolean) =>
    pubsub.publish(topic('membership', set), { set, member, present });

  const enqueue = (set: string, member: string, work: () => Promise<void>) => {
    const key = `${set}\u0000${member}`;
    const next = (queues.get(key) ?? Promise.resolve()).then(work).catch((error: unknown) => {
      logger.error({ err: error, set }, 'membership update failed');
    });
    queues.set(key, next);
    void next.then(() => {
      if (queues.get(key) === next) queues.delete(key);
    });
  };

  const heartbeat = setInterval(
    () => {
      const entries: [string, string][] = [];
      for (const [set, members] of local)
        for (const member of members.keys()) entries.push([set, member]);
      if (entries.length > 0) {
        store.refresh(entries).catch((error: unknown) => {
          logger.warn({ err: error }, 'membership heartbeat failed');
        });
      }
      for (const set of watched.keys()) {
        store
          .sweep(set)
          .then((gone) => Promise.all(gone.map((member) => announce(set, member, false))))
          .catch((error: unknown) => logger.warn({ err: error, set }, 'membership sweep failed'));
      }
    },
    Math.max(50, Math.floor(options.ttlMs / 3)),
  );
  heartbeat.unref();

  return {
    join(set, member) {
      const members = local.get(set) ?? new Map<string, number>();
      local.set(set, members);
      const count = (members.get(member) ?? 0) + 1;
      members.set(member, count);
      if (count === 1) {
        enqueue(set, member, async () => {
          if (await store.add(set, member)) await announce(set, member, true);
        });
      }
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const current = local.get(set);
        const left = (current?.get(member) ?? 1) - 1;
        if (left > 0) {
          current?.set(member, left);
          return;
        }
        current?.delete(member);
        if (current?.size === 0) local.delete(set);
        enqueue(set, member, async () => {
          // Re-joined meanwhile on this instance: keep the entry.
          if (local.get(set)?.has(member)) return;
          if (await store.remove(set, member)) await announce(set, member, false);
        });
      };
    },
    members: (set) => store.members(set),
    counts: (sets) => store.counts(sets),
    watch(set, subscriptionOptions) {
      const subscription = pubsub.subscribe(topic('membership', set), subscriptionOptions);
      watched.set(set, (watched.get(set) ?? 0) + 1);
      subscription.onEnd(() => {
        const left = (watched.get(set) ?? 1) - 1;
        if (left === 0) watched.delete(set);
        else watched.set(set, left);
      });
      return subscription;
    },
    async close() {
      clearInterval(heartbeat);
      const entries: [string, string][] = [];
      for (const [set, members] of local)
        for (const member of members.keys()) entries.push([set, member]);
      local.clear();
      await Promise.allSettled(
        entries.map(async ([set, member]) => {
          if (await store.remove(set, member)) await announce(set, member, false);
        }),
      );
    },
  };
}
