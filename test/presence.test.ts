import type { ExecutionResult } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LastSeenDocument,
  PingDocument,
  type PingMutation,
  PresenceDocument,
  type PresenceStatus,
  type PresenceSubscription,
} from './generated/graphql.ts';
import { startServer, type TestServer } from './support/app.ts';
import { gql, type ResultQueue, WAIT_MS } from './support/clients.ts';
import { useClients, useInstances } from './support/instances.ts';
import { createTestDatabase } from './support/postgres.ts';
import { requireRedis } from './support/redis.ts';

type Ping = PingMutation['ping'];
type PresenceQueue = ResultQueue<ExecutionResult<PresenceSubscription>>;

let userCounter = 0;
/** A user id no other test (or run) uses. */
const uniqueUser = (label: string) => `${label}-${process.pid}-${Date.now()}-${++userCounter}`;

async function ping(server: TestServer, token: string, status?: PresenceStatus): Promise<Ping> {
  const result = await gql(server.url, PingDocument, status ? { status } : {}, token);
  expect(result.body.errors).toBeUndefined();
  const value = result.body.data?.ping;
  if (!value) throw new Error(`ping failed: ${JSON.stringify(result.body)}`);
  return value;
}

/**
 * Pings until the server accepts the ping (a newer time with this status). The minimum
 * interval has no event to await, so this polls, bounded by WAIT_MS.
 */
async function pingAccepted(
  server: TestServer,
  token: string,
  status: PresenceStatus,
  previous: Ping | null,
): Promise<Ping> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const result = await ping(server, token, status);
    if (result.status === status && (!previous || result.time > previous.time)) return result;
    if (Date.now() > deadline) throw new Error(`ping ${status} not accepted within ${WAIT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function nextPing(queue: PresenceQueue, timeoutMs = WAIT_MS) {
  const result = await queue.next(timeoutMs);
  expect(result.errors).toBeUndefined();
  const value = result.data?.presence;
  if (!value) throw new Error(`expected a presence event, got ${JSON.stringify(result)}`);
  return value;
}

describe('presence across two instances on one Redis', () => {
  const { a, b, ws, sse } = useInstances({
    PING_MIN_INTERVAL_MS: '300',
    ANONYMOUS_CONNECTIONS: '20',
  });

  it('sends the cached ping at once, then every ping made on the other instance, in order', async () => {
    const user = uniqueUser('p');
    const [userToken, watcherToken] = await Promise.all([a.token(user), a.token(uniqueUser('w'))]);
    const first = await ping(b, userToken, 'AWAY');
    expect(first).toMatchObject({ userId: user, status: 'AWAY', statusCode: '1', online: true });

    const overWs = ws(a, watcherToken).subscribe(PresenceDocument, { userId: user });
    const overSse = sse(b, watcherToken).subscribe(PresenceDocument, { userId: user });
    for (const q of [overWs, overSse]) expect(await nextPing(q)).toEqual(first);

    let previous = first;
    const sent: Ping[] = [];
    for (const status of ['DO_NOT_DISTURB', 'ACTIVE', 'AWAY'] as const) {
      previous = await pingAccepted(b, userToken, status, previous);
      sent.push(previous);
    }
    for (const q of [overWs, overSse]) {
      for (const expected of sent) expect(await nextPing(q)).toEqual(expected);
    }
    expect(sent.map((p) => p.statusCode)).toEqual(['2', '0', '1']);

    const seen = await gql(a.url, LastSeenDocument, { userId: user }, watcherToken);
    expect(seen.body.data?.lastSeen).toEqual(previous);
  });

  it('does not fan out pings faster than the minimum interval', async () => {
    const user = uniqueUser('rate');
    const [userToken, watcherToken] = await Promise.all([a.token(user), b.token(uniqueUser('w'))]);
    const cached = await ping(a, userToken, 'ACTIVE');
    const watcher = ws(b, watcherToken).subscribe(PresenceDocument, { userId: user });
    expect(await nextPing(watcher)).toEqual(cached);

    const accepted = await pingAccepted(a, userToken, 'AWAY', cached);
    // Within the interval, on either instance: nothing changes and the last ping is returned.
    expect(await ping(b, userToken, 'ACTIVE')).toEqual(accepted);
    expect(await ping(a, userToken, 'INVISIBLE')).toEqual(accepted);

    const marker = await pingAccepted(b, userToken, 'DO_NOT_DISTURB', accepted);
    // The accepted ping, then the marker: the refused pings were never sent.
    expect(await nextPing(watcher)).toEqual(accepted);
    expect(await nextPing(watcher)).toEqual(marker);
  });

  it('answers lastSeen null for an unknown user and refuses anonymous callers', async () => {
    const token = await a.token(uniqueUser('q'));
    const unknown = await gql(a.url, LastSeenDocument, { userId: uniqueUser('never') }, token);
    expect(unknown.body).toEqual({ data: { lastSeen: null } });

    const anonymousPing = await gql(a.url, PingDocument, {});
    expect(anonymousPing.body.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
    const anonymousSeen = await gql(a.url, LastSeenDocument, { userId: 'x' });
    expect(anonymousSeen.body.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');

    const tooLong = await gql(a.url, LastSeenDocument, { userId: 'x'.repeat(300) }, token);
    expect(tooLong.body.errors?.[0]?.extensions?.['code']).toBe('BAD_USER_INPUT');

    const anonymous = ws(a);
    const refused = await anonymous.subscribe(PresenceDocument, { userId: 'x' }).next();
    expect(refused.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
  });
});

describe('presence timeouts and INVISIBLE across two instances', () => {
  const TIMEOUT_S = 3;
  /** Long enough for a timeout to happen, bounded. */
  const AFTER_TIMEOUT_MS = TIMEOUT_S * 1000 + WAIT_MS;
  const {
    a: c,
    b: d,
    ws,
    sse,
  } = useInstances({ PING_MIN_INTERVAL_MS: '300', PRESENCE_TIMEOUT_S: String(TIMEOUT_S) });

  it('sends online=false once on every instance when the last ping times out', async () => {
    const user = uniqueUser('t');
    const [userToken, watcherToken] = await Promise.all([c.token(user), c.token(uniqueUser('w'))]);
    const first = await ping(c, userToken, 'ACTIVE');
    const onC = ws(c, watcherToken).subscribe(PresenceDocument, { userId: user });
    const onD = sse(d, watcherToken).subscribe(PresenceDocument, { userId: user });
    for (const q of [onC, onD]) expect(await nextPing(q)).toEqual(first);
    for (const q of [onC, onD]) {
      expect(await nextPing(q, AFTER_TIMEOUT_MS)).toEqual({ ...first, online: false });
    }
    const seen = await gql(d.url, LastSeenDocument, { userId: user }, watcherToken);
    expect(seen.body.data?.lastSeen).toEqual({ ...first, online: false });

    // Back online; the marker is the next event on both (no second offline event).
    const back = await pingAccepted(d, userToken, 'AWAY', first);
    for (const q of [onC, onD]) expect(await nextPing(q)).toEqual(back);
  });

  it('shows INVISIBLE only to the user; others see the last visible ping time out', async () => {
    const user = uniqueUser('inv');
    const [userToken, otherToken] = await Promise.all([c.token(user), d.token(uniqueUser('o'))]);
    const visible = await ping(c, userToken, 'ACTIVE');
    const own = ws(c, userToken).subscribe(PresenceDocument, { userId: user });
    const ownSse = sse(d, userToken).subscribe(PresenceDocument, { userId: user });
    const other = ws(d, otherToken).subscribe(PresenceDocument, { userId: user });
    for (const q of [own, ownSse, other]) expect(await nextPing(q)).toEqual(visible);

    const invisible = await pingAccepted(d, userToken, 'INVISIBLE', visible);
    expect(invisible).toMatchObject({ status: 'INVISIBLE', statusCode: '3', online: true });
    for (const q of [own, ownSse]) expect(await nextPing(q)).toEqual(invisible);

    // The other subscriber's next event is the visible ping going offline: no INVISIBLE.
    expect(await nextPing(other, AFTER_TIMEOUT_MS)).toEqual({ ...visible, online: false });
    const seenByOther = await gql(c.url, LastSeenDocument, { userId: user }, otherToken);
    expect(seenByOther.body.data?.lastSeen).toEqual({ ...visible, online: false });
    const seenBySelf = await gql(c.url, LastSeenDocument, { userId: user }, userToken);
    expect(seenBySelf.body.data?.lastSeen?.status).toBe('INVISIBLE');

    // Visible again: everyone gets it.
    const again = await pingAccepted(c, userToken, 'AWAY', invisible);
    expect(await nextPing(other)).toEqual(again);
    // The own streams may have seen their INVISIBLE ping time out first.
    for (const q of [own, ownSse]) {
      let event = await nextPing(q);
      if (event.status === 'INVISIBLE') {
        expect(event).toEqual({ ...invisible, online: false });
        event = await nextPing(q);
      }
      expect(event).toEqual(again);
    }
  });
});

describe('presence durability', () => {
  let dbUrl: string;
  let dropDb: () => Promise<void>;
  const servers: TestServer[] = [];

  beforeAll(async () => {
    const db = await createTestDatabase();
    dbUrl = db.url;
    dropDb = db.drop;
  });

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await dropDb?.();
  });
  // Registered after the hook above, so its clients close before the servers stop.
  const { ws } = useClients();

  const start = async () => {
    const redis = await requireRedis();
    const server = await startServer({
      DATABASE_URL: dbUrl,
      REDIS_URL: redis.url,
      // A fresh prefix: nothing of the last run is in Redis, only in Postgres.
      REDIS_PREFIX: redis.prefix,
      PING_MIN_INTERVAL_MS: '50',
    });
    servers.push(server);
    return server;
  };

  it('answers lastSeen after a restart, with INVISIBLE kept from others', async () => {
    const user = uniqueUser('r');
    const other = uniqueUser('o');
    const first = await start();
    const visible = await ping(first, await first.token(user), 'DO_NOT_DISTURB');
    const invisible = await pingAccepted(first, await first.token(user), 'INVISIBLE', visible);
    await first.stop();

    const second = await start();
    const [userToken, otherToken] = await Promise.all([second.token(user), second.token(other)]);
    const bySelf = await gql(second.url, LastSeenDocument, { userId: user }, userToken);
    expect(bySelf.body.data?.lastSeen).toEqual(invisible);
    const byOther = await gql(second.url, LastSeenDocument, { userId: user }, otherToken);
    expect(byOther.body.data?.lastSeen).toEqual(visible);
    // The presence stream starts from the stored ping too.
    const stream = ws(second, otherToken).subscribe(PresenceDocument, { userId: user });
    expect(await nextPing(stream)).toEqual(visible);
  });
});

describe('presence without Redis (one instance, memory cache)', () => {
  const { a: server, sse } = useInstances({ PING_MIN_INTERVAL_MS: '300' }, 1, { redis: false });

  it('pings, limits the rate and streams', async () => {
    const user = uniqueUser('m');
    const [userToken, watcherToken] = await Promise.all([
      server.token(user),
      server.token(uniqueUser('w')),
    ]);
    const first = await ping(server, userToken);
    expect(first.status).toBe('ACTIVE');
    const watcher = sse(server, watcherToken).subscribe(PresenceDocument, { userId: user });
    expect(await nextPing(watcher)).toEqual(first);
    expect(await ping(server, userToken, 'AWAY')).toEqual(first);
    const next = await pingAccepted(server, userToken, 'DO_NOT_DISTURB', first);
    expect(await nextPing(watcher)).toEqual(next);
    const seen = await gql(server.url, LastSeenDocument, { userId: user }, watcherToken);
    expect(seen.body.data?.lastSeen).toEqual(next);
  });
});
