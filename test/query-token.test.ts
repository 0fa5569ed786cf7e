import { createClient as createSseClient } from 'graphql-sse';
import { describe, expect, it } from 'vitest';
import { CreateWsTokenDocument } from './generated/graphql.ts';
import { gql, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { readJsonLines } from './support/json-lines.ts';
import { openRaw } from './support/raw-ws.ts';

const VIEWER = '{ viewer { userId } }';

describe('?token= only on SSE and WebSocket URLs; ws tokens on the /graphql socket', () => {
  const { a, b, onCleanup } = useInstances();

  it('refuses ?token= on plain HTTP GET and POST of /graphql', async () => {
    const token = await a.token('query-user');
    const post = await fetch(`${a.url}/graphql?token=${token}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
      body: JSON.stringify({ query: VIEWER }),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    expect(post.status).toBe(401);
    expect(JSON.stringify(await post.json())).toContain('UNAUTHENTICATED');
    const get = await fetch(`${a.url}/graphql?query=${encodeURIComponent(VIEWER)}&token=${token}`, {
      headers: { accept: 'application/graphql-response+json' },
      signal: AbortSignal.timeout(WAIT_MS),
    });
    expect(get.status).toBe(401);
    // A plain legacy POST too (the heartbeat ping takes its user from the token).
    const ping = await fetch(`${a.url}/heartbeat/ping?token=${token}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"status":"0"}',
      signal: AbortSignal.timeout(WAIT_MS),
    });
    expect(ping.status).toBe(400);
    // With the header, the same request works.
    expect((await gql(a.url, VIEWER, undefined, token)).body).toEqual({
      data: { viewer: { userId: 'query-user' } },
    });
  });

  it('keeps ?token= working on SSE, WebSocket and legacy stream URLs', async () => {
    const token = await a.token('stream-user');
    const withQuery = createSseClient({
      url: `${b.url}/graphql?token=${token}`,
      retryAttempts: 0,
    });
    onCleanup(() => withQuery.dispose());
    const first = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no SSE result')), WAIT_MS);
      withQuery.subscribe(
        { query: 'subscription { notify { __typename ... on NotifyChannel { channelId } } }' },
        {
          next: (value) => {
            clearTimeout(timer);
            resolve(value);
          },
          error: reject,
          complete: () => {},
        },
      );
    });
    expect(JSON.stringify(first)).toContain(':stream-user:');

    const socket = await openRaw(`${a.wsUrl}?token=${token}`);
    onCleanup(() => socket.socket.close());
    socket.send({ type: 'connection_init' });
    expect(await socket.messages.next()).toMatchObject({ type: 'connection_ack' });

    const icc = await readJsonLines(`${a.url}/system/icc/notify?token=${token}`);
    onCleanup(() => icc.close());
    expect(icc.status).toBe(200);
    expect(await icc.lines.next()).toMatchObject({
      channel_id: expect.stringContaining(':stream-user:'),
    });
  });

  it('accepts a single-use ws token as ?token= on the /graphql socket, once, on any instance', async () => {
    const token = await a.token('ws-token-user');
    const created = await gql(a.url, CreateWsTokenDocument, {}, token);
    const wsToken = created.body.data?.createWsToken.token as string;
    expect(wsToken).toMatch(/^[A-Za-z0-9_-]{32}$/);

    const socket = await openRaw(`${b.wsUrl}?token=${wsToken}`);
    onCleanup(() => socket.socket.close());
    socket.send({ type: 'connection_init' });
    expect(await socket.messages.next()).toMatchObject({ type: 'connection_ack' });
    socket.send({ id: '1', type: 'subscribe', payload: { query: VIEWER } });
    expect(await socket.messages.next()).toEqual({
      id: '1',
      type: 'next',
      payload: { data: { viewer: { userId: 'ws-token-user' } } },
    });

    // Used up: the second socket is refused, on the other instance too.
    const again = await openRaw(`${a.wsUrl}?token=${wsToken}`);
    again.send({ type: 'connection_init' });
    expect((await again.closed()).code).toBe(4403);
  });
});
