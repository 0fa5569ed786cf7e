import { randomBytes, randomUUID } from 'node:crypto';
import { print } from 'graphql';
import { createClient as createSseClient } from 'graphql-sse';
import { beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.ts';
import type { Connection } from '../src/net/connection.ts';
import { connectRedis, type RedisTarget } from '../src/pubsub/index.ts';
import { createRedisSseReservationStore } from '../src/stores/sse-reservations.ts';
import { NotifyDocument, PublishDocument } from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, ResultQueue, WAIT_MS, warmUp } from './support/clients.ts';
import { connectionClosed } from './support/connections.ts';
import { useInstances } from './support/instances.ts';
import { TEST_REDIS_URL } from './support/redis.ts';

const NOTIFY = 'subscription { notify { __typename ... on NotifyMessage { name } } }';
const FORWARD_TIMEOUT_MS = 1_000;

let counter = 0;
const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`;

/** The text of one open event stream, read as it arrives; waits are bounded. */
class EventStream {
  text = '';
  ended = false;
  readonly #controller: AbortController;
  #waiters: (() => void)[] = [];

  constructor(body: ReadableStream<Uint8Array>, controller: AbortController) {
    this.#controller = controller;
    void this.#read(body);
  }

  async #read(body: ReadableStream<Uint8Array>) {
    const decoder = new TextDecoder();
    const reader = body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.text += decoder.decode(value, { stream: true });
        for (const waiter of [...this.#waiters]) waiter();
      }
    } catch {
      // Aborted by the test.
    }
    this.ended = true;
    for (const waiter of [...this.#waiters]) waiter();
  }

  /** Resolves once `predicate` holds for the text so far; rejects after the bound. */
  waitFor(predicate: (text: string) => boolean, what: string, timeoutMs = WAIT_MS) {
    return new Promise<string>((resolve, reject) => {
      const check = () => {
        if (predicate(this.text)) done(() => resolve(this.text));
        else if (this.ended) done(() => reject(new Error(`stream ended before ${what}`)));
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`no ${what} within ${timeoutMs} ms: ${this.text}`))),
        timeoutMs,
      );
      const done = (settle: () => void) => {
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== check);
        settle();
      };
      this.#waiters.push(check);
      check();
    });
  }

  close() {
    this.#controller.abort();
  }
}

/** How often `name` was delivered to operation `id` on the stream so far. */
const deliveries = (text: string, id: string, name: string) =>
  text.split('\n').filter((line) => line.includes(`"id":"${id}"`) && line.includes(`"${name}"`))
    .length;

/** A raw single-connection client whose every request names the instance it goes to. */
function rawClient(token: string) {
  let reservation = '';
  const auth = (as?: string | null) =>
    as === null ? {} : { authorization: `Bearer ${as ?? token}` };
  const streamHeader = () => ({ 'x-graphql-event-stream-token': reservation });
  return {
    get reservation() {
      return reservation;
    },
    set reservation(value: string) {
      reservation = value;
    },
    async reserve(server: TestServer) {
      const response = await fetch(`${server.url}/graphql`, { method: 'PUT', headers: auth() });
      reservation = await response.text();
      return response.status;
    },
    /** POSTs operation `id`; `as` is another token (null: none). */
    async post(server: TestServer, id: string, query: string, as?: string | null) {
      const response = await fetch(`${server.url}/graphql`, {
        method: 'POST',
        headers: { ...auth(as), ...streamHeader(), 'content-type': 'application/json' },
        body: JSON.stringify({ query, extensions: { operationId: id } }),
        signal: AbortSignal.timeout(WAIT_MS),
      });
      return { status: response.status, body: await response.text() };
    },
    async stop(server: TestServer, id: string, as?: string | null) {
      const response = await fetch(`${server.url}/graphql?operationId=${id}`, {
        method: 'DELETE',
        headers: { ...auth(as), ...streamHeader() },
        signal: AbortSignal.timeout(WAIT_MS),
      });
      return response.status;
    },
    /** Opens the stream; the status, and the stream when it opened. */
    async open(server: TestServer, as?: string | null) {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), WAIT_MS);
      const response = await fetch(`${server.url}/graphql`, {
        headers: { ...auth(as), ...streamHeader(), accept: 'text/event-stream' },
        signal: controller.signal,
      });
      clearTimeout(timer);
      if (!response.ok || !response.body) {
        await response.body?.cancel();
        return { status: response.status, stream: null };
      }
      return { status: response.status, stream: new EventStream(response.body, controller) };
    },
  };
}

/** The one connection of `user` on `server` (fails unless there is exactly one). */
function onlyConnection(server: TestServer, user: string): Connection {
  const connections = server.app.connections.forUser(user);
  expect(connections).toHaveLength(1);
  return connections[0] as Connection;
}

/** Publishes notify `name` to `user` from `server`. */
async function publish(server: TestServer, token: string, user: string, name: string) {
  const result = await gql(
    server.url,
    PublishDocument,
    { input: { channelId: `abcdefgh:${user}:1`, name, toUsers: [user] } },
    token,
  );
  expect(result.body.errors).toBeUndefined();
}

/** Routes each request of a graphql-sse client to the instance `pick` names for it. */
function routedFetch(pick: (method: string) => TestServer): typeof fetch {
  return (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const target = new URL(pick(init?.method ?? 'GET').url);
    url.host = target.host;
    return fetch(url, init);
  };
}

describe.each([
  ['one Redis', true],
  ['a Redis Cluster', 'cluster'],
] as const)('graphql-sse single connection without sticky sessions: %s', (_name, redis) => {
  const prefix = `sbtest:${randomBytes(6).toString('hex')}:`;
  const instances = useInstances(
    {
      REDIS_PREFIX: prefix,
      SSE_FORWARD_TIMEOUT_MS: String(FORWARD_TIMEOUT_MS),
      MAX_SUBSCRIPTIONS_PER_CONNECTION: '3',
      RATE_LIMIT_PUBLISH: 'off',
    },
    3,
    { redis },
  );
  const [a, b, c] = instances.servers as [TestServer, TestServer, TestServer];

  // Every instance listens to notify for the whole suite, so a stream's subscription is live as
  // soon as it answers (no first Redis subscription to wait for).
  beforeAll(async () => {
    for (const server of [a, b, c]) {
      const keeper = unique('keeper');
      const token = await server.token(keeper);
      const ws = instances.ws(server, token);
      const events = ws.subscribe(NotifyDocument, {});
      await events.next();
      const seen = await warmUp(
        () => publish(server, token, keeper, 'warm'),
        (ms) => events.next(ms),
      );
      expect(seen).not.toBeNull();
    }
  });

  it('runs operations posted to one instance on a stream opened on another, stopped from a third', async () => {
    const user = unique('u');
    const token = await a.token(user);
    const client = rawClient(token);
    expect(await client.reserve(a)).toBe(201);
    const reservation = onlyConnection(a, user);
    const { status, stream } = await client.open(b);
    expect(status).toBe(200);
    if (!stream) return;
    instances.onCleanup(() => stream.close());
    // The reservation connection gave its place to the stream's.
    await connectionClosed(reservation);
    expect(a.app.connections.forUser(user)).toHaveLength(0);
    const streamConnection = onlyConnection(b, user);

    expect((await client.post(c, 'n1', NOTIFY)).status).toBe(202);
    expect((await client.post(a, 'n2', NOTIFY)).status).toBe(202);
    await stream.waitFor(
      (text) =>
        deliveries(text, 'n1', 'NotifyChannel') + deliveries(text, 'n2', 'NotifyChannel') === 2,
      'both subscriptions',
    );
    await publish(c, token, user, 'one');
    await stream.waitFor(
      (text) => deliveries(text, 'n1', 'one') === 1 && deliveries(text, 'n2', 'one') === 1,
      'the first message on both',
    );
    // The owner decides: a duplicate id, a refused operation, the operation limit (3).
    const duplicate = await client.post(c, 'n2', NOTIFY);
    expect(duplicate.status).toBe(409);
    const invalid = await client.post(c, 'bad', 'subscription { nothing }');
    expect(invalid.status).toBe(400);
    expect(invalid.body).toContain('nothing');
    expect((await client.post(c, 'n3', NOTIFY)).status).toBe(202);
    const over = await client.post(a, 'n4', NOTIFY);
    expect(over.status).toBe(429);
    expect(over.body).toContain('RATE_LIMITED');

    expect(await client.stop(a, 'n1')).toBe(200);
    await publish(a, token, user, 'two');
    const text = await stream.waitFor(
      (t) => deliveries(t, 'n2', 'two') === 1 && deliveries(t, 'n3', 'two') === 1,
      'the second message',
    );
    // Written in the same flush as n2's: n1 would be there if it still ran.
    expect(deliveries(text, 'n1', 'two')).toBe(0);
    // Stopping what is not running is fine, from anywhere.
    expect(await client.stop(c, 'n1')).toBe(200);

    stream.close();
    await connectionClosed(streamConnection);
    for (const server of [a, b, c]) expect(server.app.connections.forUser(user)).toHaveLength(0);
    // The stream's entry is gone with it.
    expect((await client.post(c, 'n5', NOTIFY)).status).toBe(404);
    expect((await client.open(a)).status).toBe(404);
  });

  it('hands over what a reservation held when its stream opens on another instance', async () => {
    const user = unique('early');
    const token = await a.token(user);
    const client = rawClient(token);
    expect(await client.reserve(a)).toBe(201);
    // Posted elsewhere before the stream opens: they run on the reserving instance at once.
    expect((await client.post(c, 'q1', '{ viewer { userId } }')).status).toBe(202);
    expect((await client.post(b, 'n1', NOTIFY)).status).toBe(202);
    await publish(b, token, user, 'early');
    const reservation = onlyConnection(a, user);
    expect(b.app.connections.forUser(user)).toHaveLength(0);
    expect(c.app.connections.forUser(user)).toHaveLength(0);

    const { stream } = await client.open(b);
    expect(stream).not.toBeNull();
    if (!stream) return;
    instances.onCleanup(() => stream.close());
    const text = await stream.waitFor(
      (t) => deliveries(t, 'n1', 'early') === 1,
      'the message published before the stream opened',
    );
    expect(text).toContain(`{"id":"q1","payload":{"data":{"viewer":{"userId":"${user}"}}}}`);
    expect(text).toContain('event: complete\ndata: {"id":"q1"}');
    await connectionClosed(reservation);
    const streamConnection = onlyConnection(b, user);
    // The subscription runs again on the stream's instance.
    await stream.waitFor((t) => deliveries(t, 'n1', 'NotifyChannel') === 2, 'the restart');
    await publish(c, token, user, 'later');
    await stream.waitFor((t) => deliveries(t, 'n1', 'later') === 1, 'a message after the move');
    expect((await client.post(c, 'n1', NOTIFY)).status).toBe(409);

    stream.close();
    await connectionClosed(streamConnection);
    for (const server of [a, b, c]) expect(server.app.connections.forUser(user)).toHaveLength(0);
  });

  it('refuses another identity and unknown tokens on every instance', async () => {
    const user = unique('owner');
    const token = await a.token(user);
    const other = await a.token(unique('other'));
    const client = rawClient(token);
    expect(await client.reserve(a)).toBe(201);
    for (const server of [b, c]) {
      const posted = await client.post(server, 'x', NOTIFY, other);
      expect(posted.status).toBe(403);
      expect(posted.body).toContain('FORBIDDEN');
      expect((await client.post(server, 'y', NOTIFY, null)).status).toBe(403);
      expect(await client.stop(server, 'x', other)).toBe(403);
      expect((await client.open(server, other)).status).toBe(403);
    }

    const owned = client.reservation;
    client.reservation = randomUUID();
    expect((await client.post(c, 'z', NOTIFY)).status).toBe(404);
    expect(await client.stop(c, 'z')).toBe(404);
    expect((await client.open(b)).status).toBe(404);
    client.reservation = 'not-a-reservation';
    expect((await client.post(c, 'z', NOTIFY)).status).toBe(404);

    // Nothing of that changed the reservation: its owner opens it elsewhere.
    client.reservation = owned;
    const { status, stream } = await client.open(c);
    expect(status).toBe(200);
    instances.onCleanup(() => stream?.close());
    expect((await client.open(b)).status).toBe(409);
    expect((await client.open(a)).status).toBe(409);
    const streamConnection = onlyConnection(c, user);
    stream?.close();
    await connectionClosed(streamConnection);
  });

  it('answers 503 when the instance that owns a reservation does not answer', async () => {
    // A reservation of an instance that died without releasing it.
    const target: RedisTarget =
      redis === 'cluster'
        ? { clusterNodes: instances.cluster.nodes.map(({ port }) => ({ host: '127.0.0.1', port })) }
        : { url: TEST_REDIS_URL };
    const clients = await connectRedis(target, createLogger('silent'));
    instances.onCleanup(() => {
      clients.command.disconnect();
      clients.subscriber.disconnect();
    });
    const store = createRedisSseReservationStore({ client: clients.command, prefix });
    const user = unique('orphan');
    const token = await a.token(user);
    const client = rawClient(token);
    client.reservation = randomUUID();
    await store.reserve(client.reservation, { userId: user, instanceId: 'gone' }, 60_000);

    const posted = await client.post(c, 'n1', NOTIFY);
    expect(posted.status).toBe(503);
    expect(posted.body).toContain('UNAVAILABLE');
    // The stream still opens (without what the dead instance held), and then serves.
    const { status, stream } = await client.open(b);
    expect(status).toBe(200);
    if (!stream) return;
    instances.onCleanup(() => stream.close());
    expect((await client.post(c, 'n1', NOTIFY)).status).toBe(202);
    await stream.waitFor((t) => deliveries(t, 'n1', 'NotifyChannel') === 1, 'the subscription');
    const streamConnection = onlyConnection(b, user);
    stream.close();
    await connectionClosed(streamConnection);
  });

  it('serves the graphql-sse client whose PUT, GET, POST and DELETE reach different instances', async () => {
    const user = unique('client');
    const token = await a.token(user);
    const byMethod: Record<string, TestServer> = { PUT: a, GET: b, POST: c, DELETE: a };
    const client = createSseClient({
      url: `${a.url}/graphql`,
      singleConnection: true,
      retryAttempts: 0,
      headers: { authorization: `Bearer ${token}` },
      fetchFn: routedFetch((method) => byMethod[method] ?? a),
    });
    instances.onCleanup(() => client.dispose());
    const events = new ResultQueue<{ data?: { notify?: { __typename: string; name?: string } } }>();
    events.dispose = client.subscribe(
      { query: NOTIFY },
      { next: (v) => events.push(v as never), error: (e) => events.end(e), complete: () => {} },
    );
    expect((await events.next()).data?.notify?.__typename).toBe('NotifyChannel');
    const streamConnection = onlyConnection(b, user);
    expect(a.app.connections.forUser(user)).toHaveLength(0);
    await publish(a, token, user, 'hello');
    expect((await events.next()).data?.notify).toEqual({
      __typename: 'NotifyMessage',
      name: 'hello',
    });
    const viewer = await new Promise<unknown>((resolve, reject) => {
      client.subscribe(
        { query: '{ viewer { userId } }' },
        { next: resolve, error: reject, complete: () => {} },
      );
    });
    expect(viewer).toEqual({ data: { viewer: { userId: user } } });

    // Unsubscribing sends the DELETE (to a); the client then closes its stream (lazy).
    events.close();
    await connectionClosed(streamConnection);
    for (const server of [a, b, c]) expect(server.app.connections.forUser(user)).toHaveLength(0);
  });

  it('serves the graphql-sse client behind a round-robin balancer', async () => {
    const user = unique('balanced');
    const token = await a.token(user);
    let next = 0;
    const servers = [a, b, c];
    const client = createSseClient({
      url: `${a.url}/graphql`,
      singleConnection: true,
      retryAttempts: 0,
      headers: { authorization: `Bearer ${token}` },
      fetchFn: routedFetch(() => servers[next++ % servers.length] as TestServer),
    });
    instances.onCleanup(() => client.dispose());
    const queues = Array.from({ length: 3 }, () => {
      const queue = new ResultQueue<{
        data?: { notify?: { __typename: string; name?: string } };
      }>();
      queue.dispose = client.subscribe(
        { query: print(NotifyDocument) },
        { next: (v) => queue.push(v as never), error: (e) => queue.end(e), complete: () => {} },
      );
      return queue;
    });
    for (const queue of queues) {
      expect((await queue.next()).data?.notify?.__typename).toBe('NotifyChannel');
    }
    await publish(b, token, user, 'everyone');
    for (const queue of queues) {
      expect((await queue.next()).data?.notify).toMatchObject({ name: 'everyone' });
    }
    const holder = servers.find((server) => server.app.connections.forUser(user).length > 0);
    const streamConnection = onlyConnection(holder as TestServer, user);
    for (const queue of queues) queue.close();
    await connectionClosed(streamConnection);
    for (const server of servers) expect(server.app.connections.forUser(user)).toHaveLength(0);
  });
});

describe('single-connection mode while Redis does not answer', () => {
  const { a } = useInstances({}, 1);

  it('answers a reservation with 503 UNAVAILABLE, not a server error', async () => {
    const token = await a.token('no-redis');
    // Closes this instance's Redis connections (the reservation store's among them).
    await a.app.pubsub.close();
    const response = await fetch(`${a.url}/graphql`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(WAIT_MS),
    });
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({
      errors: [{ extensions: { code: 'UNAVAILABLE' } }],
    });
  });
});
