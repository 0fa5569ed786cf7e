import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createMembership, type MembershipChange } from '../src/domain/membership.ts';
import { createLogger } from '../src/logger.ts';
import {
  createMemoryPubSub,
  createRedisPubSub,
  type PubSub,
  type RedisClients,
} from '../src/pubsub/index.ts';
import {
  type ApplauseStore,
  createMemoryApplauseStore,
  createMemoryMembershipStore,
  createMemoryPresenceStore,
  createMemoryRateLimitStore,
  createRedisApplauseStore,
  createRedisMembershipStore,
  createRedisPresenceStore,
  createRedisRateLimitStore,
  type MembershipMemory,
  type MembershipStore,
  type PresenceStore,
  type PresenceStoreOptions,
  type Rate,
  type RateLimitStore,
} from '../src/stores/index.ts';
import { WAIT_MS } from './support/clients.ts';
import { type Backend, useStoreBackends } from './support/stores.ts';

/*
 * One contract per store, the same cases on memory, one Redis and a Redis Cluster (three
 * masters): whatever a store promises, each implementation keeps. On the cluster every case
 * that touches several meetings, users or sets spreads them over the masters' slots.
 */

const logger = createLogger('silent');
const unique = (label: string) => `${label}-${randomBytes(4).toString('hex')}`;
const backends = useStoreBackends();

/** Connects once per describe block and closes at its end. */
function useBackend(connect: () => Promise<Backend>): () => Backend {
  let backend: Backend | null = null;
  beforeAll(async () => {
    backend = await connect();
  });
  afterAll(async () => {
    await backend?.close();
  });
  return () => {
    if (!backend) throw new Error('backend not connected');
    return backend;
  };
}

/** Polls `read` until `done` holds for its result (time-based expiry has no event); bounded. */
async function until<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

type Op = 'sendApplause' | 'ping' | 'off';

function ratesOn(backend: Backend, rates: Record<Op, Rate | null>): RateLimitStore<Op> {
  return backend.redis
    ? createRedisRateLimitStore({ rates, client: backend.redis.command, prefix: backend.prefix })
    : createMemoryRateLimitStore({ rates });
}

function applauseOn(backend: Backend, windowMs: number): ApplauseStore {
  return backend.redis
    ? createRedisApplauseStore({ windowMs, client: backend.redis.command, prefix: backend.prefix })
    : createMemoryApplauseStore({ windowMs });
}

interface Ping {
  userId: string;
  status: string;
  time: number;
}

function presenceOn(backend: Backend, options: PresenceStoreOptions): PresenceStore<Ping> {
  return backend.redis
    ? createRedisPresenceStore<Ping>({
        ...options,
        client: backend.redis.command,
        prefix: backend.prefix,
      })
    : createMemoryPresenceStore<Ping>(options);
}

/** One store per "instance": Redis connections of its own, or a memory shared with the others. */
function membershipOn(
  backend: Backend,
  instanceId: string,
  ttlMs: number,
  clients: RedisClients | null,
  memory: MembershipMemory,
): MembershipStore {
  return clients
    ? createRedisMembershipStore({
        instanceId,
        ttlMs,
        client: clients.command,
        prefix: backend.prefix,
      })
    : createMemoryMembershipStore({ instanceId, ttlMs, memory });
}

const RATES: Record<Op, Rate | null> = {
  sendApplause: { points: 3, seconds: 10 },
  ping: { points: 2, seconds: 10 },
  off: null,
};

describe.each(backends)('rate limit store: %s', (_name, connect) => {
  const backend = useBackend(connect);

  it('refuses over the rate with the time to wait, per key and per key within a scope', async () => {
    const rates = ratesOn(backend(), RATES);
    const [user, meeting] = [unique('u'), unique('m')];
    for (let i = 0; i < 3; i++) expect(await rates.consume('sendApplause', user)).toBeNull();
    const refused = await rates.consume('sendApplause', user);
    expect(refused).toBeGreaterThan(0);
    expect(refused).toBeLessThanOrEqual(10_000);
    // Another key, and the same key within a scope, count apart.
    expect(await rates.consume('sendApplause', unique('u'))).toBeNull();
    expect(await rates.consume('sendApplause', user, meeting)).toBeNull();
    // An operation without a rate is never refused and has nothing to check inline.
    for (let i = 0; i < 5; i++) expect(await rates.consume('off', user)).toBeNull();
    expect(rates.inline('off', user)).toBeNull();
  });

  it('counts inline checks (in a store script) and consume on one counter', async () => {
    const rates = ratesOn(backend(), RATES);
    const applause = applauseOn(backend(), 60_000);
    const [user, meeting] = [unique('u'), unique('m')];
    const inline = () => rates.inline('sendApplause', user, meeting);
    expect(inline()).toMatchObject({ points: 3, windowMs: 10_000 });
    expect(await applause.add(meeting, user, Date.now(), inline())).toBeNull();
    expect(await rates.consume('sendApplause', user, meeting)).toBeNull();
    expect(await applause.add(meeting, user, Date.now(), inline())).toBeNull();
    // Three calls by both paths: the fourth is refused by either.
    expect(await rates.consume('sendApplause', user, meeting)).toBeGreaterThan(0);
    expect(await applause.add(meeting, user, Date.now(), inline())).toBeGreaterThan(0);
  });
});

describe.each(backends)('applause store: %s', (_name, connect) => {
  const backend = useBackend(connect);
  const WINDOW_MS = 5_000;

  it('counts distinct users; sending again refreshes the time without counting twice', async () => {
    const applause = applauseOn(backend(), WINDOW_MS);
    const meeting = unique('m');
    const now = Date.now();
    expect(await applause.add(meeting, 'a', now)).toBeNull();
    expect(await applause.add(meeting, 'b', now)).toBeNull();
    expect(await applause.add(meeting, 'a', now + 3_000)).toBeNull();
    expect(await applause.levels([meeting], now + 10)).toEqual([2]);
    // b's applause left the window; a's refreshed one has not.
    expect(await applause.levels([meeting], now + WINDOW_MS + 10)).toEqual([1]);
    expect(await applause.levels([meeting], now + 3_000 + WINDOW_MS + 10)).toEqual([0]);
  });

  it('records nothing for a call its rate refuses', async () => {
    const rates = ratesOn(backend(), RATES);
    const applause = applauseOn(backend(), WINDOW_MS);
    const [meeting, user] = [unique('m'), unique('u')];
    const rate = () => rates.inline('sendApplause', user, meeting);
    const now = Date.now();
    for (let i = 0; i < 3; i++) expect(await applause.add(meeting, user, now, rate())).toBeNull();
    // Refused: had it refreshed the user's time, the user would still count after the window.
    const refused = await applause.add(meeting, user, now + WINDOW_MS - 1, rate());
    expect(refused).toBeGreaterThan(0);
    expect(refused).toBeLessThanOrEqual(10_000);
    expect(await applause.levels([meeting], now + WINDOW_MS + 10)).toEqual([0]);
    // The rate counts per meeting: the same user applauds elsewhere.
    const other = unique('m');
    const elsewhere = rates.inline('sendApplause', user, other);
    expect(await applause.add(other, user, now, elsewhere)).toBeNull();
  });

  it('reads the levels of many meetings at once, in order, and prunes by the window', async () => {
    const applause = applauseOn(backend(), WINDOW_MS);
    const meetings = Array.from({ length: 30 }, (_, i) => unique(`m${i}`));
    const now = Date.now();
    await Promise.all(
      meetings.flatMap((meeting, i) =>
        Array.from({ length: i % 4 }, (_, j) => applause.add(meeting, `u${j}`, now + j)),
      ),
    );
    expect(await applause.levels(meetings, now + 10)).toEqual(meetings.map((_, i) => i % 4));
    expect(await applause.levels([], now)).toEqual([]);
    expect(await applause.levels(meetings, now + WINDOW_MS + 10)).toEqual(meetings.map(() => 0));
  });
});

describe.each(backends)('presence store: %s', (_name, connect) => {
  const backend = useBackend(connect);
  const ping = (userId: string, status = 'ACTIVE'): Ping => ({ userId, status, time: Date.now() });

  it('refuses a ping within the minimum interval and answers the cached one', async () => {
    const presence = presenceOn(backend(), { minIntervalMs: 60_000, ttlMs: 60_000 });
    const user = unique('p');
    const first = ping(user);
    expect(await presence.record(user, first, { visible: true })).toEqual({ accepted: true });
    expect(await presence.record(user, ping(user, 'AWAY'), { visible: true })).toEqual({
      accepted: false,
      current: first,
    });
    expect(await presence.get(user)).toEqual({ own: first, visible: first });
    expect(await presence.get(unique('nobody'))).toEqual({ own: null, visible: null });
  });

  it('refuses a ping over the rate (checked first) and changes nothing', async () => {
    const rates = ratesOn(backend(), RATES);
    const presence = presenceOn(backend(), { minIntervalMs: 60_000, ttlMs: 60_000 });
    const user = unique('p');
    const rate = () => rates.inline('ping', user);
    const first = ping(user);
    expect(await presence.record(user, first, { visible: true, rate: rate() })).toEqual({
      accepted: true,
    });
    // Refused by the interval, still counted by the rate.
    expect(await presence.record(user, ping(user), { visible: true, rate: rate() })).toMatchObject({
      accepted: false,
      current: first,
    });
    const limited = await presence.record(user, ping(user, 'AWAY'), {
      visible: false,
      rate: rate(),
    });
    expect(limited).toEqual({ accepted: false, retryAfterMs: expect.any(Number) });
    expect(await presence.get(user)).toEqual({ own: first, visible: first });
  });

  it('keeps the last ping and the last visible one apart by the flag', async () => {
    const presence = presenceOn(backend(), { minIntervalMs: 5, ttlMs: 60_000 });
    const user = unique('p');
    const seen = ping(user);
    expect(await presence.record(user, seen, { visible: true })).toEqual({ accepted: true });
    const hidden = ping(user, 'INVISIBLE');
    // The minimum interval passes within milliseconds.
    await until(
      () => presence.record(user, hidden, { visible: false }),
      (result) => result.accepted,
      'the invisible ping was never accepted',
    );
    expect(await presence.get(user)).toEqual({ own: hidden, visible: seen });
  });

  it('forgets cached pings after their TTL', async () => {
    const presence = presenceOn(backend(), { minIntervalMs: 5, ttlMs: 200 });
    const user = unique('p');
    const first = ping(user);
    expect(await presence.record(user, first, { visible: true })).toEqual({ accepted: true });
    expect((await presence.get(user)).own).toEqual(first);
    await until(
      () => presence.get(user),
      (snapshot) => snapshot.own === null && snapshot.visible === null,
      'the cached ping did not expire',
    );
  });
});

describe.each(backends)('membership store: %s', (_name, connect) => {
  const backend = useBackend(connect);
  const memory: MembershipMemory = new Map();
  /** A store of another instance: with Redis on connections of its own. */
  const instance = async (instanceId: string, ttlMs = 60_000) => {
    const clients = instanceId === 'i1' ? backend().redis : await backend().connectAgain();
    return membershipOn(backend(), unique(instanceId), ttlMs, clients, memory);
  };

  it('decides first join and last leave once across two instances', async () => {
    const [s1, s2] = [await instance('i1'), await instance('i2')];
    const [set, member] = [unique('meeting:1'), 'u:1'];
    const joined = await Promise.all([s1.add(set, member), s2.add(set, member)]);
    expect(joined.filter(Boolean)).toHaveLength(1);
    expect(await s1.members(set)).toEqual([member]);
    expect(await s2.members(set)).toEqual([member]);
    const left = await Promise.all([s1.remove(set, member), s2.remove(set, member)]);
    expect(left.filter(Boolean)).toHaveLength(1);
    expect(await s1.members(set)).toEqual([]);
    // Removing again: not a second leave.
    expect(await s2.remove(set, member)).toBe(false);
  });

  it('counts the members of many sets at once', async () => {
    const [s1, s2] = [await instance('i1'), await instance('i2')];
    const sets = Array.from({ length: 12 }, (_, i) => unique(`group:${i}`));
    await Promise.all(
      sets.flatMap((set, i) =>
        Array.from({ length: i % 3 }, (_, j) => (j % 2 === 0 ? s1 : s2).add(set, `m${j}`)),
      ),
    );
    // A member held by both instances counts once.
    await s2.add(sets[2] as string, 'm0');
    expect(await s1.counts(sets)).toEqual(sets.map((_, i) => i % 3));
    expect(await s2.counts([])).toEqual([]);
  });

  it('sweeps the expired entries of an instance that stopped refreshing, once', async () => {
    const alive = await instance('i1');
    const dead = await instance('i2', 200);
    const set = unique('meeting');
    await Promise.all([alive.add(set, 'both'), dead.add(set, 'both'), dead.add(set, 'gone')]);
    expect((await alive.members(set)).sort()).toEqual(['both', 'gone']);
    const gone = await until(
      () => alive.sweep(set),
      (members) => members.length > 0,
      'the dead entries were not swept',
    );
    expect(gone).toEqual(['gone']);
    expect(await alive.members(set)).toEqual(['both']);
    expect(await alive.counts([set])).toEqual([1]);
    expect(await alive.sweep(set)).toEqual([]);
  });

  it('keeps refreshed entries alive past their TTL', async () => {
    const ttlMs = 1_000;
    const s1 = await instance('i2', ttlMs);
    const set = unique('meeting');
    await s1.add(set, 'kept');
    // Refreshed ten times per TTL for two and a half TTLs (a slow machine has margin to spare).
    const deadline = Date.now() + ttlMs * 2.5;
    while (Date.now() < deadline) {
      await s1.refresh([[set, 'kept']]);
      await new Promise((resolve) => setTimeout(resolve, ttlMs / 10));
    }
    expect(await s1.sweep(set)).toEqual([]);
    expect(await s1.members(set)).toEqual(['kept']);
  });
});

/**
 * Two registries as two instances have them: their own store, pub/sub and connections, and
 * their own entry TTLs (the heartbeat runs three times per TTL).
 */
async function registries(backend: Backend, ttls: [number, number], memory: MembershipMemory) {
  const sharedPubSub = createMemoryPubSub();
  const open = async (label: string, ttlMs: number) => {
    const clients = await backend.connectAgain();
    const pubsub: PubSub = clients
      ? createRedisPubSub(clients, { prefix: backend.prefix, logger })
      : sharedPubSub;
    const store = membershipOn(backend, unique(label), ttlMs, clients, memory);
    return { clients, pubsub, membership: createMembership({ pubsub, store, ttlMs, logger }) };
  };
  return [await open('i1', ttls[0]), await open('i2', ttls[1])] as const;
}

async function take<T>(iterator: AsyncIterator<T>, timeoutMs = WAIT_MS): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`nothing within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return (await Promise.race([iterator.next(), timeout])).value;
  } finally {
    clearTimeout(timer);
  }
}

describe.each(backends)('membership registry: %s', (_name, connect) => {
  const backend = useBackend(connect);
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  it('announces the first join and the last leave across instances once', async () => {
    const [one, two] = await registries(backend(), [60_000, 60_000], new Map());
    cleanups.push(() => Promise.all([one.membership.close(), two.membership.close()]));
    cleanups.push(() => Promise.all([one.pubsub.close(), two.pubsub.close()]));
    const set = unique('group:g');
    const changes = one.membership.watch(set, { capacity: 100 });
    await one.pubsub.ping();
    const releases = [
      one.membership.join(set, 'u1'),
      two.membership.join(set, 'u1'),
      two.membership.join(set, 'u1'),
    ];
    expect(await take(changes)).toEqual<MembershipChange>({ set, member: 'u1', present: true });
    expect(await two.membership.members(set)).toEqual(['u1']);
    for (const release of releases) release();
    expect(await take(changes)).toEqual<MembershipChange>({ set, member: 'u1', present: false });
    expect(await one.membership.members(set)).toEqual([]);
    changes.end();
  });
});

// Only an instance with connections of its own can die without leaving: Redis and the cluster.
describe.each(backends.filter(([name]) => name !== 'memory'))(
  'membership registry, an instance dies: %s',
  (_name, connect) => {
    const backend = useBackend(connect);

    it('expires its entries and reports its members gone; the live ones stay', async () => {
      // The live one sweeps every 500 ms and keeps its own entry with a wide margin; the dead
      // one's entries expire 300 ms after its last heartbeat.
      const [alive, doomed] = await registries(backend(), [1_500, 300], new Map());
      const set = unique('meeting:1');
      const changes = alive.membership.watch(set, { capacity: 100 });
      await alive.pubsub.ping();
      alive.membership.join(set, 'u1');
      expect(await take(changes)).toEqual({ set, member: 'u1', present: true });
      doomed.membership.join(set, 'u9');
      expect(await take(changes)).toEqual({ set, member: 'u9', present: true });
      // The instance dies: its connections vanish without any leave.
      doomed.clients?.command.disconnect();
      doomed.clients?.subscriber.disconnect();
      expect(await take(changes)).toEqual({ set, member: 'u9', present: false });
      // The live instance's entry outlived many TTLs by its heartbeat.
      expect(await alive.membership.members(set)).toEqual(['u1']);
      changes.end();
      // Stops the dead one's heartbeat timer; its leaves cannot reach Redis any more (a
      // disconnected Cluster client may hold them instead of failing them, so nobody waits).
      void doomed.membership.close().catch(() => {});
      await alive.membership.close();
      await alive.pubsub.close();
    });
  },
);
