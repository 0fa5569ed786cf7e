import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.ts';
import {
  connectRedis,
  createApplauseStore,
  createMembership,
  createMemoryPubSub,
  createPresenceStore,
  createRateLimitStore,
  createRedisPubSub,
  type PresencePingEvent,
  type RedisClients,
} from '../src/pubsub/index.ts';
import { requireRedis } from './support/redis.ts';

const logger = createLogger('silent');
const WINDOW_MS = 5_000;
const unique = (label: string) => `${label}-${randomBytes(4).toString('hex')}`;

/** The write path's stores over one backend: memory, or Redis with a fresh prefix. */
async function storesOf(kind: 'memory' | 'redis') {
  const redis =
    kind === 'redis'
      ? await requireRedis().then(async ({ url, prefix }) => ({
          clients: await connectRedis({ url }, logger),
          prefix,
        }))
      : null;
  const shared = redis ? { redis: { client: redis.clients.command, prefix: redis.prefix } } : {};
  const rates = createRateLimitStore({
    rates: { sendApplause: { points: 3, seconds: 10 }, ping: { points: 2, seconds: 10 } },
    ...shared,
  });
  return {
    rates,
    applause: createApplauseStore({ windowMs: WINDOW_MS, ...shared }),
    presence: createPresenceStore({ minIntervalMs: 50, ttlMs: 60_000, ...shared }),
    clients: redis?.clients ?? null,
    prefix: redis?.prefix ?? '',
  };
}

describe.each(['memory', 'redis'] as const)('write stores: %s', (kind) => {
  const opened: RedisClients[] = [];
  afterAll(async () => {
    await Promise.all(
      opened.map((c) => Promise.allSettled([c.command.quit(), c.subscriber.quit()])),
    );
  });
  const open = async () => {
    const stores = await storesOf(kind);
    if (stores.clients) opened.push(stores.clients);
    return stores;
  };

  it('adds applause with the rate checked in the same step; a refused call adds nothing', async () => {
    const { applause, rates } = await open();
    const meeting = unique('m');
    const user = unique('u');
    const now = Date.now();
    const rate = () => rates.inline('sendApplause', user);
    for (let i = 0; i < 3; i++)
      expect(await applause.add(meeting, user, now + i, rate())).toBeNull();
    // The fourth call within the window is over 3 per 10 s: refused with the time to wait.
    const refused = await applause.add(meeting, unique('other-meeting'), now, rate());
    expect(refused).toBeGreaterThan(0);
    expect(refused).toBeLessThanOrEqual(10_000);
    // Without a rate it is counted; the same user again counts once.
    expect(await applause.add(meeting, unique('u'), now, null)).toBeNull();
    expect(await applause.levels([meeting], now + 10)).toEqual([2]);
  });

  it('reads the levels of many meetings in one call, in order, and prunes by the window', async () => {
    const { applause } = await open();
    const meetings = Array.from({ length: 30 }, (_, i) => unique(`m${i}`));
    const now = Date.now();
    await Promise.all(
      meetings.flatMap((meeting, i) =>
        Array.from({ length: i % 4 }, (_, j) => applause.add(meeting, `u${j}`, now + j)),
      ),
    );
    expect(await applause.levels(meetings, now + 10)).toEqual(meetings.map((_, i) => i % 4));
    expect(await applause.levels([], now)).toEqual([]);
    // After the window nothing counts.
    expect(await applause.levels(meetings, now + WINDOW_MS + 10)).toEqual(meetings.map(() => 0));
  });

  it('records pings with the rate and the minimum interval in one step', async () => {
    const { presence, rates } = await open();
    const userId = unique('p');
    const ping = (time: number): PresencePingEvent => ({
      userId,
      status: 'ACTIVE',
      statusCode: '0',
      time,
    });
    const rate = () => rates.inline('ping', userId);
    const first = ping(Date.now());
    expect(await presence.record(first, rate())).toEqual({ accepted: true });
    // Within the minimum interval: not stored, the cached ping comes back (counts on the rate).
    expect(await presence.record(ping(Date.now()), rate())).toEqual({
      accepted: false,
      current: first,
    });
    // Over 2 per 10 s: refused by the rate, nothing changes.
    const limited = await presence.record(ping(Date.now() + 1), rate());
    expect(limited).toMatchObject({ accepted: false, retryAfterMs: expect.any(Number) });
    expect((await presence.get(userId)).own).toEqual(first);
  });

  it('counts the members of many sets in one call', async () => {
    const stores = await open();
    const pubsub =
      kind === 'redis' && stores.clients
        ? createRedisPubSub(stores.clients, { prefix: stores.prefix, logger })
        : createMemoryPubSub();
    const membership = createMembership({
      pubsub,
      instanceId: unique('instance'),
      ttlMs: 15_000,
      logger,
      ...(stores.clients
        ? { redis: { client: stores.clients.command, prefix: stores.prefix } }
        : {}),
    });
    const sets = [unique('s'), unique('s'), unique('s')];
    const releases = [
      membership.join(sets[0] as string, 'a'),
      membership.join(sets[0] as string, 'b'),
      membership.join(sets[0] as string, 'b'),
      membership.join(sets[2] as string, 'c'),
    ];
    // Joins are written in the background; members() of the last set waits for its own.
    const deadline = Date.now() + 5_000;
    while ((await membership.counts(sets)).join() !== '2,0,1') {
      if (Date.now() > deadline) throw new Error(`counts: ${await membership.counts(sets)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const release of releases) release();
    await membership.close();
  });
});
