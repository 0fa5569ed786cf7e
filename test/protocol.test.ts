import { describe, expect, it } from 'vitest';
import type { Connection } from '../src/net/connection.ts';
import { connectionClosed } from './support/connections.ts';
import { useInstances } from './support/instances.ts';
import { openAcked, openRaw, type RawSocket } from './support/raw-ws.ts';

const KEEPALIVE_MS = 200;

/** graphql-transport-ws conformance, spoken with a raw `ws` socket. */
describe('graphql-ws protocol', () => {
  const { a: server, onCleanup } = useInstances(
    {
      WS_INIT_TIMEOUT_MS: '300',
      WS_KEEPALIVE_MS: String(KEEPALIVE_MS),
      ANONYMOUS_CONNECTIONS: '20',
    },
    1,
    { redis: false },
  );
  const open = async (options: Parameters<typeof openRaw>[1] = {}) => {
    const raw = await openRaw(server.wsUrl, options);
    onCleanup(() => raw.socket.terminate());
    return raw;
  };
  const acked = async (token?: string) => {
    const raw = await openAcked(server.wsUrl, token);
    onCleanup(() => raw.socket.terminate());
    return raw;
  };
  const subscription = (raw: RawSocket, id: string) =>
    raw.send({
      id,
      type: 'subscribe',
      payload: { query: 'subscription { presence(userId: "nobody") { userId } }' },
    });

  it('closes 4408 when connection_init does not come in time', async () => {
    const raw = await open();
    expect(await raw.closed()).toEqual({ code: 4408, reason: 'Connection initialisation timeout' });
  });

  it('closes 4429 on a second connection_init', async () => {
    const raw = await acked();
    raw.send({ type: 'connection_init' });
    expect((await raw.closed()).code).toBe(4429);
  });

  it('closes 4401 on subscribe before connection_ack', async () => {
    const raw = await open();
    subscription(raw, '1');
    expect((await raw.closed()).code).toBe(4401);
  });

  it('closes 4409 on a duplicate operation id', async () => {
    const raw = await acked(await server.token('dup'));
    subscription(raw, 'same');
    // A marker query proves the first subscribe is running before the duplicate.
    raw.send({ id: 'marker', type: 'subscribe', payload: { query: '{ viewer { userId } }' } });
    expect(await raw.messages.next()).toMatchObject({ id: 'marker', type: 'next' });
    subscription(raw, 'same');
    expect((await raw.closed()).code).toBe(4409);
  });

  it.each([
    ['text that is not JSON', 'not json'],
    ['an unknown message type', { type: 'nope' }],
    ['a subscribe without id', { type: 'subscribe', payload: { query: '{ viewer { userId } }' } }],
    ['a subscribe whose query is no string', { id: '1', type: 'subscribe', payload: { query: 5 } }],
    ['a JSON array', [1, 2]],
  ])('closes 4400 on a malformed message: %s', async (_name, message) => {
    const raw = await acked();
    raw.send(message);
    expect((await raw.closed()).code).toBe(4400);
  });

  it('closes 4403 when connection_init carries a bad or expired token', async () => {
    for (const authorization of ['Bearer not-a-token', 'Bearer a.b.c']) {
      const raw = await open();
      raw.send({ type: 'connection_init', payload: { authorization } });
      expect((await raw.closed()).code).toBe(4403);
    }
  });

  it('answers protocol pings with pongs', async () => {
    const raw = await acked();
    raw.send({ type: 'ping', payload: { n: 1 } });
    expect(await raw.messages.next()).toEqual({ type: 'pong', payload: { n: 1 } });
  });

  it('terminates a peer that stops answering WebSocket pings, and keeps one that answers', async () => {
    const answering = await acked();
    const silent = await open({ autoPong: false });
    // Counted from the start: the first ping may arrive in the same packet as the ack.
    let pings = 0;
    silent.socket.on('ping', () => {
      pings += 1;
    });
    silent.send({ type: 'connection_init' });
    expect(await silent.messages.next()).toEqual({ type: 'connection_ack' });
    // Terminated without a close frame: 1006 on the client side.
    expect((await silent.closed(KEEPALIVE_MS * 20)).code).toBe(1006);
    expect(pings).toBeGreaterThan(0);
    // The answering socket outlived the silent one and still works.
    answering.send({ type: 'ping' });
    expect(await answering.messages.next()).toEqual({ type: 'pong' });
  });
  // The server-side cases of graphql-ws' own test suite that apply to this server, spoken with
  // a raw socket: the protocol document's rules, checked on our lean server.
  describe('graphql-ws server conformance', () => {
    const query = (raw: RawSocket, id: string, text: string, extra: object = {}) =>
      raw.send({ id, type: 'subscribe', payload: { query: text, ...extra } });

    it('closes 4406 when the graphql-transport-ws subprotocol is not offered', async () => {
      const raw = await open({ protocol: null });
      expect((await raw.closed()).code).toBe(4406);
    });

    it('acknowledges connection_init without a payload', async () => {
      const raw = await open();
      raw.send({ type: 'connection_init' });
      expect(await raw.messages.next()).toEqual({ type: 'connection_ack' });
    });

    it('answers a ping before connection_init and ignores pongs', async () => {
      const raw = await open();
      raw.send({ type: 'pong' });
      raw.send({ type: 'ping' });
      expect(await raw.messages.next()).toEqual({ type: 'pong' });
      raw.send({ type: 'connection_init' });
      expect(await raw.messages.next()).toEqual({ type: 'connection_ack' });
    });

    it('closes 4400 on a connection_init whose payload is not an object', async () => {
      const raw = await open();
      raw.send({ type: 'connection_init', payload: 'nope' });
      expect((await raw.closed()).code).toBe(4400);
    });

    it.each([
      ['connection_ack', { type: 'connection_ack' }],
      ['next', { id: '1', type: 'next', payload: {} }],
      ['error', { id: '1', type: 'error', payload: [] }],
    ])('closes 4400 on a %s message from the client', async (_name, message) => {
      const raw = await acked();
      raw.send(message);
      expect((await raw.closed()).code).toBe(4400);
    });

    it('closes 4400 on a binary message', async () => {
      const raw = await acked();
      raw.send(Buffer.from(JSON.stringify({ type: 'ping' })));
      expect((await raw.closed()).code).toBe(4400);
    });

    it('sends next then complete for a query, and the id may be reused afterwards', async () => {
      const raw = await acked(await server.token('conf-query'));
      for (let round = 0; round < 2; round++) {
        query(raw, 'q', '{ viewer { userId } }');
        expect(await raw.messages.next()).toEqual({
          id: 'q',
          type: 'next',
          payload: { data: { viewer: { userId: 'conf-query' } } },
        });
        expect(await raw.messages.next()).toEqual({ id: 'q', type: 'complete' });
      }
    });

    it('sends error (and no complete) for an invalid operation, then accepts the id again', async () => {
      const raw = await acked(await server.token('conf-error'));
      query(raw, 'e', '{ nope }');
      const error = (await raw.messages.next()) as { id: string; type: string; payload: unknown[] };
      expect(error).toMatchObject({ id: 'e', type: 'error' });
      expect(error.payload.length).toBeGreaterThan(0);
      query(raw, 'e', '{ viewer { userId } }', { operationName: 'Missing' });
      expect(await raw.messages.next()).toMatchObject({ id: 'e', type: 'error' });
      query(raw, 'e', '{ viewer { userId } }');
      expect(await raw.messages.next()).toMatchObject({ id: 'e', type: 'next' });
      expect(await raw.messages.next()).toEqual({ id: 'e', type: 'complete' });
    });

    it('stops a subscription on complete, sends nothing more for it, and ignores unknown ids', async () => {
      const user = 'conf-complete';
      const token = await server.token(user);
      const raw = await acked(token);
      query(raw, 's', 'subscription { notify { __typename ... on NotifyChannel { channelId } } }');
      const first = (await raw.messages.next()) as {
        payload: { data: { notify: { channelId: string } } };
      };
      const { channelId } = first.payload.data.notify;
      raw.send({ id: 's', type: 'complete' });
      raw.send({ id: 'never-started', type: 'complete' });
      // A message to the user is not delivered on the completed id; a marker query still is.
      const publish = `mutation { publish(input: { channelId: "${channelId}", name: "late", toUsers: ["${user}"] }) }`;
      query(raw, 'p', publish);
      expect(await raw.messages.next()).toMatchObject({ id: 'p', type: 'next' });
      expect(await raw.messages.next()).toEqual({ id: 'p', type: 'complete' });
      query(raw, 'm', '{ viewer { userId } }');
      expect(await raw.messages.next()).toMatchObject({ id: 'm', type: 'next' });
      expect(await raw.messages.next()).toEqual({ id: 'm', type: 'complete' });
      expect(raw.messages.pending).toHaveLength(0);
      expect(raw.socket.readyState).toBe(raw.socket.OPEN);
    });

    it('ends the operations of a socket that closes', async () => {
      const user = 'conf-close';
      const raw = await acked(await server.token(user));
      query(raw, 's', 'subscription { notify { __typename } }');
      await raw.messages.next();
      const [connection] = server.app.connections.forUser(user);
      raw.socket.close();
      await connectionClosed(connection as Connection);
      expect(server.app.connections.forUser(user)).toHaveLength(0);
    });
  });
});
