import { describe, expect, it } from 'vitest';
import type { Connection } from '../src/net/connection.ts';
import { PublishDocument } from './generated/graphql.ts';
import { gql, WAIT_MS } from './support/clients.ts';
import { connectionClosed } from './support/connections.ts';
import { useInstances } from './support/instances.ts';
import { openAcked, openRaw } from './support/raw-ws.ts';

const RESERVATION_MS = 400;
const NOTIFY = 'subscription { notify { __typename ... on NotifyMessage { name } } }';

let counter = 0;
const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`;

/** A raw graphql-sse single-connection client: PUT, GET, POST and DELETE by hand. */
function sseStream(url: string, token?: string) {
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  let reservation = '';
  const headers = () => ({ ...auth, 'x-graphql-event-stream-token': reservation });
  return {
    get token() {
      return reservation;
    },
    async reserve(): Promise<number> {
      const response = await fetch(`${url}/graphql`, { method: 'PUT', headers: auth });
      reservation = await response.text();
      return response.status;
    },
    /** POSTs an operation with `id` on the stream, as `as` (another token) when given. */
    async post(id: string, query: string, as: Record<string, string> = auth) {
      const response = await fetch(`${url}/graphql`, {
        method: 'POST',
        headers: {
          ...as,
          'x-graphql-event-stream-token': reservation,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ query, extensions: { operationId: id } }),
        signal: AbortSignal.timeout(WAIT_MS),
      });
      return { status: response.status, body: await response.text() };
    },
    /** Opens the stream and collects its events until `until` holds for the text so far. */
    async open(until: (text: string) => boolean, as: Record<string, string> = auth) {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), WAIT_MS);
      const response = await fetch(`${url}/graphql`, {
        headers: { ...headers(), ...as, accept: 'text/event-stream' },
        signal: controller.signal,
      });
      let text = '';
      if (response.ok && response.body) {
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        try {
          while (!until(text)) {
            const { value, done } = await reader.read();
            if (done) break;
            text += decoder.decode(value, { stream: true });
          }
        } catch {
          // Aborted at the bound: the caller's expectation on `text` fails with what came.
        }
      }
      clearTimeout(timer);
      controller.abort();
      return { status: response.status, text };
    },
  };
}

describe('connection core', () => {
  describe('anonymous callers (default: refused)', () => {
    const { a } = useInstances({}, 1, { redis: false });

    it('refuses anonymous graphql-ws (4403), SSE (401) and legacy streams (401)', async () => {
      const raw = await openRaw(a.wsUrl);
      raw.send({ type: 'connection_init', payload: {} });
      expect((await raw.closed()).code).toBe(4403);

      const sse = await fetch(`${a.url}/graphql?query=${encodeURIComponent(NOTIFY)}`, {
        headers: { accept: 'text/event-stream' },
      });
      expect(sse.status).toBe(401);
      expect(
        ((await sse.json()) as { errors: { extensions: { code: string } }[] }).errors[0],
      ).toMatchObject({ extensions: { code: 'UNAUTHENTICATED' } });
      expect((await fetch(`${a.url}/graphql`, { method: 'PUT' })).status).toBe(401);

      expect((await fetch(`${a.url}/heartbeat/subscribe/u1`)).status).toBe(401);
      expect((await fetch(`${a.url}/system/icc/applause?meeting_id=1`)).status).toBe(401);
      // Plain HTTP queries hold no connection and still answer anonymous callers.
      expect((await gql(a.url, '{ viewer { userId } }')).body.data).toEqual({ viewer: null });
    });
  });

  describe('anonymous pool (ANONYMOUS_CONNECTIONS)', () => {
    const { a, onCleanup } = useInstances({ ANONYMOUS_CONNECTIONS: '2', MAX_CONNECTIONS: '2' }, 1, {
      redis: false,
    });

    it('caps anonymous connections apart from users, so they never take a user place', async () => {
      const anonymous = await Promise.all([openAcked(a.wsUrl), openAcked(a.wsUrl)]);
      onCleanup(...anonymous.map((raw) => () => raw.socket.terminate()));
      const third = await openRaw(a.wsUrl);
      third.send({ type: 'connection_init', payload: {} });
      expect((await third.closed()).code).toBe(4029);
      // Both user places are still free.
      const users = await Promise.all([
        openAcked(a.wsUrl, await a.token(unique('u'))),
        openAcked(a.wsUrl, await a.token(unique('u'))),
      ]);
      onCleanup(...users.map((raw) => () => raw.socket.terminate()));
      expect(a.app.connections.size).toBe(4);
    });
  });

  describe('graphql-sse single-connection streams', () => {
    const { a, b } = useInstances({
      SSE_RESERVATION_TIMEOUT_MS: String(RESERVATION_MS),
      MAX_SUBSCRIPTIONS_PER_CONNECTION: '2',
      MAX_CONNECTIONS_PER_USER: '3',
      RATE_LIMIT_PUBLISH: 'off',
    });

    it('drops a reservation that is not opened in time, with its operations', async () => {
      const user = unique('late');
      const stream = sseStream(a.url, await a.token(user));
      expect(await stream.reserve()).toBe(201);
      expect((await stream.post('1', NOTIFY)).status).toBe(202);
      expect(a.app.connections.forUser(user)).toHaveLength(1);
      const [connection] = a.app.connections.forUser(user);
      await connectionClosed(connection as Connection);
      expect((await stream.open(() => true)).status).toBe(404);
      expect((await stream.post('2', NOTIFY)).status).toBe(404);
    });

    it('counts reservations as connections of their user', async () => {
      const user = unique('many');
      const token = await a.token(user);
      for (let i = 0; i < 3; i++) expect(await sseStream(a.url, token).reserve()).toBe(201);
      expect(await sseStream(a.url, token).reserve()).toBe(429);
    });

    it('runs operations posted before the stream opens through the fan-out and the limits', async () => {
      const user = unique('early');
      const token = await a.token(user);
      const stream = sseStream(a.url, token);
      await stream.reserve();
      expect((await stream.post('n1', NOTIFY)).status).toBe(202);
      expect((await stream.post('n2', NOTIFY)).status).toBe(202);
      const third = await stream.post('n3', NOTIFY);
      expect(third.status).toBe(429);
      expect(third.body).toContain('RATE_LIMITED');
      // Published on the other instance before the stream is open: held for it, bounded.
      const publish = await gql(
        b.url,
        PublishDocument,
        { input: { channelId: `abcdefgh:${user}:1`, name: 'early', toUsers: [user] } },
        token,
      );
      expect(publish.body.errors).toBeUndefined();
      const seen = await stream.open((text) => (text.match(/"name":"early"/g) ?? []).length >= 2);
      expect(seen.status).toBe(200);
      expect(seen.text).toContain('"id":"n1"');
      expect(seen.text).toContain('"id":"n2"');
      expect((seen.text.match(/"name":"early"/g) ?? []).length).toBe(2);
    });

    it('refuses requests on a stream from another identity (FORBIDDEN)', async () => {
      const owner = unique('owner');
      const other = unique('other');
      const stream = sseStream(a.url, await a.token(owner));
      await stream.reserve();
      const asOther = { authorization: `Bearer ${await a.token(other)}` };
      const posted = await stream.post('x', NOTIFY, asOther);
      expect(posted.status).toBe(403);
      expect(posted.body).toContain('FORBIDDEN');
      expect((await stream.post('y', NOTIFY, {})).status).toBe(403);
      expect((await stream.open(() => true, asOther)).status).toBe(403);
      // The owner still can.
      expect((await stream.post('z', NOTIFY)).status).toBe(202);
    });

    it('closes reserved streams on dropUser and counts them', async () => {
      const user = unique('dropped');
      const stream = sseStream(a.url, await a.token(user));
      await stream.reserve();
      const service = await b.token('svc', { service: true });
      const dropped = await gql(
        b.url,
        'mutation ($u: ID!) { dropUser(userId: $u) { connectionsClosed } }',
        { u: user },
        service,
      );
      expect(dropped.body.data).toEqual({ dropUser: { connectionsClosed: 1 } });
      expect((await stream.post('1', NOTIFY)).status).toBe(404);
    });
  });
});
