import type { RedisCommands } from '../pubsub/index.ts';
import { decodeKeyPart, defineScript, encodeKeyPart, hashTag } from './redis.ts';

/**
 * The entries behind cross-instance membership: per set and member, which instances hold the
 * member, each entry expiring `ttlMs` after it was added or last refreshed. A store is one
 * instance's view (it writes the entries of its `instanceId`); reads see every instance's live
 * entries. "First join" and "last leave" are decided by the store in one atomic step, so when
 * two instances add (or remove) a member at once exactly one of them learns it was the first
 * (or the last).
 */
export interface MembershipStore {
  /** Adds this instance's entry; resolves true when no other instance held the member. */
  add(set: string, member: string): Promise<boolean>;
  /**
   * Removes this instance's entry; resolves true when the member was in the set and no live
   * entry of any instance holds it any more (it leaves the set).
   */
  remove(set: string, member: string): Promise<boolean>;
  /** The distinct members of `set` with a live entry, on every instance. */
  members(set: string): Promise<string[]>;
  /** How many distinct members with a live entry each of `sets` has, in the same order. */
  counts(sets: readonly string[]): Promise<number[]>;
  /** Renews this instance's entries (set, member) for another `ttlMs` (the heartbeat). */
  refresh(entries: readonly (readonly [string, string])[]): Promise<void>;
  /**
   * Drops the expired entries of `set` (instances that died) and resolves the members that left
   * the set with them; each member is reported by one sweep only.
   */
  sweep(set: string): Promise<string[]>;
}

export interface MembershipStoreOptions {
  /** Unique per process; entries are kept per instance. */
  instanceId: string;
  /** How long an entry outlives its last refresh (an instance's death is noticed after this). */
  ttlMs: number;
}

/** What memory stores keep: set -> member -> instance -> expiry (epoch ms). */
export type MembershipMemory = Map<string, Map<string, Map<string, number>>>;

/**
 * In-process store. Stores given the same `memory` act as instances sharing one Redis (tests);
 * a server has one instance and one store, so its entries are refreshed and never expire while
 * it runs.
 */
export function createMemoryMembershipStore(
  options: MembershipStoreOptions & { memory?: MembershipMemory },
): MembershipStore {
  const { instanceId, ttlMs } = options;
  const sets: MembershipMemory = options.memory ?? new Map();
  /** Drops the expired holders of a member; true when none is left. */
  const prune = (holders: Map<string, number>, now: number) => {
    for (const [instance, expiry] of holders) if (expiry <= now) holders.delete(instance);
    return holders.size === 0;
  };
  const live = (holders: Map<string, number>, now: number) => {
    for (const expiry of holders.values()) if (expiry > now) return true;
    return false;
  };
  const hold = (set: string, member: string, expiry: number) => {
    const members = sets.get(set) ?? new Map<string, Map<string, number>>();
    sets.set(set, members);
    const holders = members.get(member) ?? new Map<string, number>();
    members.set(member, holders);
    holders.set(instanceId, expiry);
    return holders;
  };
  const leave = (set: string, member: string) => {
    const members = sets.get(set);
    members?.delete(member);
    if (members?.size === 0) sets.delete(set);
  };
  return {
    add: async (set, member) => {
      const now = Date.now();
      const holders = hold(set, member, now + ttlMs);
      prune(holders, now);
      return holders.size === 1;
    },
    remove: async (set, member) => {
      const holders = sets.get(set)?.get(member);
      if (!holders) return false;
      holders.delete(instanceId);
      if (!prune(holders, Date.now())) return false;
      leave(set, member);
      return true;
    },
    members: async (set) => {
      const now = Date.now();
      const members = sets.get(set);
      if (!members) return [];
      return [...members].filter(([, holders]) => live(holders, now)).map(([member]) => member);
    },
    counts: async (list) => {
      const now = Date.now();
      return list.map((set) => {
        let count = 0;
        for (const holders of sets.get(set)?.values() ?? []) if (live(holders, now)) count++;
        return count;
      });
    },
    refresh: async (entries) => {
      const expiry = Date.now() + ttlMs;
      for (const [set, member] of entries) hold(set, member, expiry);
    },
    sweep: async (set) => {
      const now = Date.now();
      const gone: string[] = [];
      for (const [member, holders] of sets.get(set) ?? []) {
        if (!prune(holders, now)) continue;
        leave(set, member);
        gone.push(member);
      }
      return gone;
    },
  };
}

// Per set: a sorted set of members scored by their latest expiry (`<p>m:{<set>}`), and per member
// a sorted set of the instances holding it, scored by expiry (`<p>m:{<set>}:<member>`). Both carry
// the set's hash tag, so on a cluster they share a slot and scripts keep them in step atomically:
// "first join" and "last leave" are decided once. Set and member are encoded (`%`, `:` and braces
// escaped), so no set key can equal a member key (meeting `1:x` is not member `x` of meeting
// `1`); the set's sorted set holds the encoded members, which SWEEP appends to the set key as
// they are (a key of the same slot).
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
const REFRESH = `
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[3])
return 1`;
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

/**
 * Several instances, on one Redis or a Redis Cluster. Every call is one command (a script or a
 * read of one key); calls for many sets leave at once and auto-pipelining writes them once per
 * node.
 */
export function createRedisMembershipStore(
  options: MembershipStoreOptions & {
    client: RedisCommands;
    /** REDIS_PREFIX. */
    prefix: string;
  },
): MembershipStore {
  const { client, prefix, instanceId, ttlMs } = options;
  const setKey = (set: string) => `${prefix}m:${hashTag(set)}`;
  const memberKey = (set: string, member: string) => `${setKey(set)}:${encodeKeyPart(member)}`;
  const add = defineScript<number>(client, 'switchboardMembershipAdd', 2, ADD);
  const remove = defineScript<number>(client, 'switchboardMembershipRemove', 2, REMOVE);
  const refresh = defineScript<number>(client, 'switchboardMembershipRefresh', 2, REFRESH);
  const sweep = defineScript<string[]>(client, 'switchboardMembershipSweep', 1, SWEEP);
  return {
    add: async (set, member) => {
      const now = Date.now();
      const count = await add(
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
      (await remove(
        setKey(set),
        memberKey(set, member),
        instanceId,
        Date.now(),
        encodeKeyPart(member),
      )) === 1,
    members: async (set) =>
      (await client.zrangebyscore(setKey(set), Date.now(), '+inf')).map(decodeKeyPart),
    counts: (list) => {
      const now = Date.now();
      return Promise.all(list.map((set) => client.zcount(setKey(set), now, '+inf')));
    },
    refresh: async (entries) => {
      const expiry = Date.now() + ttlMs;
      await Promise.all(
        entries.map(([set, member]) =>
          refresh(setKey(set), memberKey(set, member), instanceId, expiry, encodeKeyPart(member)),
        ),
      );
    },
    sweep: async (set) => (await sweep(setKey(set), Date.now())).map(decodeKeyPart),
  };
}
