import type { RedisCommands } from '../pubsub/index.ts';

/** Where the requests of a graphql-sse single-connection reservation go, and whose it is. */
export interface SseRoute {
  /** The user who reserved it; null for an anonymous reservation. */
  userId: string | null;
  /**
   * The instance that runs its operations: the one that answered the PUT until a stream opens,
   * then the one that holds the stream.
   */
  owner: string;
}

/** What `claim` found. */
export type SseClaim =
  /** The stream is now the claimant's; `reservedBy` answered the PUT (perhaps the claimant). */
  | { status: 'claimed'; reservedBy: string }
  /** No such reservation: never made, expired, or released. */
  | { status: 'missing' }
  /** Reserved by another identity. */
  | { status: 'forbidden' }
  /** A stream already fulfils it (only one may, ever). */
  | { status: 'open' };

/**
 * The reservations of graphql-sse's single-connection mode, shared by every instance, so the
 * reservation (PUT), its stream (GET) and its operations (POST, DELETE) may reach different
 * instances. A reservation names its user and the instance that owns it: first the one that
 * made it, then, once, the one that opened its stream. It lives `ttlMs` from the PUT unless a
 * stream claims it; a claimed one lives `leaseMs` from its claim or last `renew`, so the entries
 * of an instance that died expire by themselves.
 *
 * Redis: one hash per reservation, `<prefix>sse:{<token>}`, written by scripts that touch only
 * that key (the hash tag keeps any later key of the same reservation in its slot on Redis
 * Cluster). Memory: one instance.
 */
export interface SseReservationStore {
  readonly kind: 'memory' | 'redis';
  /** Records a new reservation owned by `instanceId`, unclaimed, for `ttlMs`. */
  reserve(
    token: string,
    reservation: { userId: string | null; instanceId: string },
    ttlMs: number,
  ): Promise<void>;
  /**
   * A stream opens on `instanceId` for the caller `userId`: atomically, if the reservation
   * exists, is the caller's and has no stream yet, `instanceId` becomes its owner for `leaseMs`.
   */
  claim(
    token: string,
    claimant: { userId: string | null; instanceId: string },
    leaseMs: number,
  ): Promise<SseClaim>;
  /** The owner and user of a reservation, or null when there is none. */
  route(token: string): Promise<SseRoute | null>;
  /** Extends the life of claimed reservations (their owner calls it, one batch per period). */
  renew(tokens: readonly string[], leaseMs: number): Promise<void>;
  /** Forgets a reservation, unless another instance owns it meanwhile. */
  release(token: string, instanceId: string): Promise<void>;
}

/** How a user is written in the store: anonymous reservations have an owner too. */
const who = (userId: string | null) => (userId === null ? '-' : `u${userId}`);
const userOf = (written: string) => (written === '-' ? null : written.slice(1));

interface MemoryEntry {
  who: string;
  owner: string;
  open: boolean;
  expiresAt: number;
}

/** One instance: a map, entries dropped when found expired. */
export function createMemorySseReservationStore(): SseReservationStore {
  const entries = new Map<string, MemoryEntry>();
  const live = (token: string) => {
    const entry = entries.get(token);
    if (entry && entry.expiresAt <= Date.now()) {
      entries.delete(token);
      return undefined;
    }
    return entry;
  };
  return {
    kind: 'memory',
    async reserve(token, { userId, instanceId }, ttlMs) {
      entries.set(token, {
        who: who(userId),
        owner: instanceId,
        open: false,
        expiresAt: Date.now() + ttlMs,
      });
    },
    async claim(token, { userId, instanceId }, leaseMs) {
      const entry = live(token);
      if (!entry) return { status: 'missing' };
      if (entry.who !== who(userId)) return { status: 'forbidden' };
      if (entry.open) return { status: 'open' };
      const reservedBy = entry.owner;
      entry.owner = instanceId;
      entry.open = true;
      entry.expiresAt = Date.now() + leaseMs;
      return { status: 'claimed', reservedBy };
    },
    async route(token) {
      const entry = live(token);
      return entry ? { userId: userOf(entry.who), owner: entry.owner } : null;
    },
    async renew(tokens, leaseMs) {
      const expiresAt = Date.now() + leaseMs;
      for (const token of tokens) {
        const entry = live(token);
        if (entry) entry.expiresAt = expiresAt;
      }
    },
    async release(token, instanceId) {
      if (entries.get(token)?.owner === instanceId) entries.delete(token);
    },
  };
}

// KEYS: reservation. ARGV: user, instance, ttl ms.
const RESERVE = `
redis.call('HSET', KEYS[1], 'who', ARGV[1], 'owner', ARGV[2], 'open', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`;

// KEYS: reservation. ARGV: user, instance, lease ms. Checks and takes the reservation in one step.
const CLAIM = `
local entry = redis.call('HMGET', KEYS[1], 'who', 'owner', 'open')
if not entry[1] then return {'missing'} end
if entry[1] ~= ARGV[1] then return {'forbidden'} end
if entry[3] == '1' then return {'open'} end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'open', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'claimed', entry[2]}`;

// KEYS: reservation. ARGV: instance. Deletes only what the caller still owns.
const RELEASE = `
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

const COMMANDS = {
  switchboardSseReserve: RESERVE,
  switchboardSseClaim: CLAIM,
  switchboardSseRelease: RELEASE,
} as const;
type Script = (key: string, ...args: (string | number)[]) => Promise<unknown>;

/** Several instances: one hash per reservation, changed only by single-key scripts. */
export function createRedisSseReservationStore({
  client,
  prefix,
}: {
  client: RedisCommands;
  prefix: string;
}): SseReservationStore {
  const key = (token: string) => `${prefix}sse:{${token}}`;
  // EVALSHA with the scripts cached by Redis, instead of sending a script on every call.
  const scripts = {} as Record<keyof typeof COMMANDS, Script>;
  for (const [name, lua] of Object.entries(COMMANDS) as [keyof typeof COMMANDS, string][]) {
    if (!(name in client)) client.defineCommand(name, { numberOfKeys: 1, lua });
    const command = (client as unknown as Record<string, Script>)[name] as Script;
    scripts[name] = command.bind(client);
  }
  return {
    kind: 'redis',
    async reserve(token, { userId, instanceId }, ttlMs) {
      await scripts.switchboardSseReserve(key(token), who(userId), instanceId, Math.ceil(ttlMs));
    },
    async claim(token, { userId, instanceId }, leaseMs) {
      const [status, reservedBy] = (await scripts.switchboardSseClaim(
        key(token),
        who(userId),
        instanceId,
        Math.ceil(leaseMs),
      )) as [SseClaim['status'], string?];
      return status === 'claimed'
        ? { status, reservedBy: reservedBy ?? '' }
        : ({ status } as SseClaim);
    },
    async route(token) {
      const [written, owner] = await client.hmget(key(token), 'who', 'owner');
      return written && owner ? { userId: userOf(written), owner } : null;
    },
    async renew(tokens, leaseMs) {
      // One command per key: they live in different slots on a cluster (auto-pipelined).
      await Promise.all(tokens.map((token) => client.pexpire(key(token), Math.ceil(leaseMs))));
    },
    async release(token, instanceId) {
      await scripts.switchboardSseRelease(key(token), instanceId);
    },
  };
}
