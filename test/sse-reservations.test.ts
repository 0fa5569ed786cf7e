import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { RedisClients } from '../src/pubsub/index.ts';
import {
  createMemorySseReservationStore,
  createRedisSseReservationStore,
  type SseReservationStore,
} from '../src/stores/sse-reservations.ts';
import { WAIT_MS } from './support/clients.ts';
import { type Backend, useStoreBackends } from './support/stores.ts';

/** Polls `check` until it holds; rejects after the bound (for expiry, which sends no event). */
async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`${what} within ${timeoutMs} ms`);
}

describe.each(useStoreBackends())('sse reservation store: %s', (_name, connect) => {
  const opened: Backend[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((backend) => backend.close()));
  });

  /** Two instances' views of one store: two connections to the same Redis (memory: one map). */
  async function stores(): Promise<[SseReservationStore, SseReservationStore, Backend]> {
    const backend = await connect();
    opened.push(backend);
    if (!backend.redis) {
      const store = createMemorySseReservationStore();
      return [store, store, backend];
    }
    const second = await backend.connectAgain();
    const [a, b] = [backend.redis, second as RedisClients].map((clients) =>
      createRedisSseReservationStore({ client: clients.command, prefix: backend.prefix }),
    ) as [SseReservationStore, SseReservationStore];
    return [a, b, backend];
  }

  it('routes to the reserving instance, then once to the instance that claims it', async () => {
    const [a, b] = await stores();
    const token = randomUUID();
    await a.reserve(token, { userId: 'u1', instanceId: 'A' }, 60_000);
    expect(await b.route(token)).toEqual({ userId: 'u1', owner: 'A' });
    expect(await b.claim(token, { userId: 'u1', instanceId: 'B' }, 60_000)).toEqual({
      status: 'claimed',
      reservedBy: 'A',
    });
    expect(await a.route(token)).toEqual({ userId: 'u1', owner: 'B' });
    // Only one stream may ever fulfil a reservation, wherever it opens.
    expect(await a.claim(token, { userId: 'u1', instanceId: 'A' }, 60_000)).toEqual({
      status: 'open',
    });
    expect(await b.claim(token, { userId: 'u1', instanceId: 'C' }, 60_000)).toEqual({
      status: 'open',
    });
    expect(await b.route(token)).toEqual({ userId: 'u1', owner: 'B' });
  });

  it('claims on the reserving instance itself', async () => {
    const [a, , backend] = await stores();
    const token = randomUUID();
    await a.reserve(token, { userId: 'u1', instanceId: 'A' }, 60_000);
    const client = backend.redis?.command;
    if (client) {
      // One key per reservation, hash-tagged by its token (a cluster keeps it in one slot).
      const key = `${backend.prefix}sse:{${token}}`;
      expect(await client.exists(key)).toBe(1);
      expect(await client.pttl(key)).toBeGreaterThan(0);
    }
    expect(await a.claim(token, { userId: 'u1', instanceId: 'A' }, 60_000)).toEqual({
      status: 'claimed',
      reservedBy: 'A',
    });
  });

  it('refuses another identity and unknown tokens, and changes nothing', async () => {
    const [a, b] = await stores();
    const token = randomUUID();
    await a.reserve(token, { userId: 'u1', instanceId: 'A' }, 60_000);
    expect(await b.claim(token, { userId: 'u2', instanceId: 'B' }, 60_000)).toEqual({
      status: 'forbidden',
    });
    expect(await b.claim(token, { userId: null, instanceId: 'B' }, 60_000)).toEqual({
      status: 'forbidden',
    });
    expect(await b.route(token)).toEqual({ userId: 'u1', owner: 'A' });
    const unknown = randomUUID();
    expect(await b.claim(unknown, { userId: 'u1', instanceId: 'B' }, 60_000)).toEqual({
      status: 'missing',
    });
    expect(await b.route(unknown)).toBeNull();
  });

  it('keeps anonymous reservations apart from users', async () => {
    const [a, b] = await stores();
    const token = randomUUID();
    await a.reserve(token, { userId: null, instanceId: 'A' }, 60_000);
    expect(await b.route(token)).toEqual({ userId: null, owner: 'A' });
    // A user id that looks like the anonymous marker is still a user.
    expect(await b.claim(token, { userId: '-', instanceId: 'B' }, 60_000)).toEqual({
      status: 'forbidden',
    });
    expect(await b.claim(token, { userId: null, instanceId: 'B' }, 60_000)).toEqual({
      status: 'claimed',
      reservedBy: 'A',
    });
  });

  it('forgets an unclaimed reservation after its time, and a claimed one after its lease unless renewed', async () => {
    const [a, b] = await stores();
    const late = randomUUID();
    await a.reserve(late, { userId: 'u1', instanceId: 'A' }, 150);
    const renewed = randomUUID();
    const lapsed = randomUUID();
    for (const token of [renewed, lapsed]) {
      await a.reserve(token, { userId: 'u1', instanceId: 'A' }, 60_000);
      await b.claim(token, { userId: 'u1', instanceId: 'B' }, 150);
    }
    await b.renew([renewed], 60_000);
    await eventually(async () => (await a.route(late)) === null, 'unclaimed entry expired');
    expect(await b.claim(late, { userId: 'u1', instanceId: 'B' }, 60_000)).toEqual({
      status: 'missing',
    });
    await eventually(async () => (await a.route(lapsed)) === null, 'claimed entry expired');
    expect(await a.route(renewed)).toEqual({ userId: 'u1', owner: 'B' });
    // Renewing what is gone brings nothing back.
    await b.renew([lapsed], 60_000);
    expect(await a.route(lapsed)).toBeNull();
  });

  it('releases only for the instance that owns the reservation', async () => {
    const [a, b] = await stores();
    const token = randomUUID();
    await a.reserve(token, { userId: 'u1', instanceId: 'A' }, 60_000);
    await b.claim(token, { userId: 'u1', instanceId: 'B' }, 60_000);
    // The reserving instance closing its reservation connection leaves the stream's entry.
    await a.release(token, 'A');
    expect(await a.route(token)).toEqual({ userId: 'u1', owner: 'B' });
    await b.release(token, 'B');
    expect(await a.route(token)).toBeNull();
    const unclaimed = randomUUID();
    await a.reserve(unclaimed, { userId: 'u1', instanceId: 'A' }, 60_000);
    await a.release(unclaimed, 'A');
    expect(await b.claim(unclaimed, { userId: 'u1', instanceId: 'B' }, 60_000)).toEqual({
      status: 'missing',
    });
  });
});
