import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { serverAudits } from 'graphql-http';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Connection } from '../src/net/connection.ts';
import { NotifyDocument, PublishDocument } from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, WAIT_MS, wsClient } from './support/clients.ts';
import { connectionClosed } from './support/connections.ts';
import { useInstances } from './support/instances.ts';

/** The server-side connections of a user, waiting (bounded) until there are `count`. */
async function connectionsOf(server: TestServer, userId: string, count = 1): Promise<Connection[]> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const found = server.app.connections.forUser(userId);
    if (found.length >= count) return found;
    if (Date.now() > deadline) throw new Error(`user ${userId} has ${found.length} connections`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('transports', () => {
  const { a: server } = useInstances(
    // Small bounds so a stalled reader is found quickly; the slow-consumer tests publish from
    // one user, faster than the default per-user publish rate allows.
    { WS_MAX_BUFFERED_BYTES: '262144', SUBSCRIPTION_BUFFER: '50', RATE_LIMIT_PUBLISH: 'off' },
    1,
  );

  describe('GraphQL over HTTP audits (graphql-http)', () => {
    for (const audit of serverAudits({ url: () => `${server.url}/graphql` })) {
      it(audit.name, async () => {
        const result = await audit.fn();
        if (result.status !== 'ok') throw new Error(`${result.status}: ${result.reason}`);
      });
    }
  });

  it('answers /healthz and /readyz with each dependency', async () => {
    const live = await fetch(`${server.url}/healthz`);
    expect(live.status).toBe(200);
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({
      status: 'ready',
      checks: { postgres: 'ok', redis: 'ok' },
    });
  });

  it('serves GraphiQL to browsers', async () => {
    const page = await fetch(`${server.url}/graphql`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/graphiql/i);
  });

  it('refuses a graphql-ws connection with a bad token (4403)', async () => {
    const client = wsClient(server.wsUrl, 'not-a-token');
    const result = client.subscribe(NotifyDocument, {});
    await result.waitForEnd();
    expect(client.closes[0]?.code).toBe(4403);
  });

  it('closes a live graphql-ws connection when its token expires (4401)', async () => {
    const token = await server.token('expiring', { ttlSeconds: 2 });
    const client = wsClient(server.wsUrl, token);
    const stream = client.subscribe(NotifyDocument, {});
    expect((await stream.next()).data?.notify.__typename).toBe('NotifyChannel');
    await stream.waitForEnd(WAIT_MS);
    expect(client.closes[0]).toEqual({ code: 4401, reason: 'token expired' });
  });

  it('closes a graphql-ws client that stops reading (4499) and keeps serving others', async () => {
    const [slowToken, healthyToken, senderToken] = await Promise.all(
      ['slow', 'healthy', 'sender'].map((u) => server.token(u)),
    );
    const socket = new WebSocket(server.wsUrl, 'graphql-transport-ws');
    await once(socket, 'open');
    socket.send(JSON.stringify({ type: 'connection_init', payload: { token: slowToken } }));
    await once(socket, 'message');
    socket.send(
      JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: 'subscription { notify { ... on NotifyMessage { message } } }' },
      }),
    );
    await once(socket, 'message');
    const [slow] = await connectionsOf(server, 'slow');
    // Stop reading: the kernel buffers fill, then the server's.
    (socket as unknown as { _socket: { pause(): void } })._socket.pause();

    const healthy = wsClient(server.wsUrl, healthyToken);
    const healthyStream = healthy.subscribe(NotifyDocument, {});
    await healthyStream.next();
    const sender = wsClient(server.wsUrl, senderToken);
    const senderStream = sender.subscribe(NotifyDocument, {});
    const first = await senderStream.next();
    const channelId =
      first.data?.notify.__typename === 'NotifyChannel' ? first.data.notify.channelId : '';
    const big = 'x'.repeat(16_000);
    let sent = 0;
    while (!slow?.closed && sent < 5_000) {
      await gql(
        server.url,
        PublishDocument,
        { input: { channelId, name: 'load', toUsers: ['slow'], message: big } },
        senderToken,
      );
      sent += 1;
    }
    await connectionClosed(slow as Connection);
    expect(sent).toBeLessThan(5_000);
    // Everyone else still gets messages.
    await gql(
      server.url,
      PublishDocument,
      { input: { channelId, name: 'after', toUsers: ['healthy'] } },
      senderToken,
    );
    const after = await healthyStream.next();
    expect(after.data?.notify).toMatchObject({ name: 'after' });
    socket.terminate();
    healthy.dispose();
    sender.dispose();
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });

  it('ends an SSE stream whose client stops reading and keeps serving', async () => {
    const [slowToken, senderToken] = await Promise.all(
      ['slow-sse', 'sender-sse'].map((u) => server.token(u)),
    );
    const req = httpRequest(`${server.url}/graphql`, {
      method: 'POST',
      headers: {
        accept: 'text/event-stream',
        'content-type': 'application/json',
        authorization: `Bearer ${slowToken}`,
      },
    });
    req.end(
      JSON.stringify({ query: 'subscription { notify { ... on NotifyMessage { message } } }' }),
    );
    const [res] = (await once(req, 'response')) as [import('node:http').IncomingMessage];
    expect(res.statusCode).toBe(200);
    const [slow] = await connectionsOf(server, 'slow-sse');
    res.pause();
    res.socket.pause();

    const sender = wsClient(server.wsUrl, senderToken);
    const senderStream = sender.subscribe(NotifyDocument, {});
    const first = await senderStream.next();
    const channelId =
      first.data?.notify.__typename === 'NotifyChannel' ? first.data.notify.channelId : '';
    const big = 'y'.repeat(16_000);
    let sent = 0;
    while (!slow?.closed && sent < 5_000) {
      await gql(
        server.url,
        PublishDocument,
        { input: { channelId, name: 'load', toUsers: ['slow-sse'], message: big } },
        senderToken,
      );
      sent += 1;
    }
    await connectionClosed(slow as Connection);
    expect(sent).toBeLessThan(5_000);
    res.destroy();
    sender.dispose();
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });
});
