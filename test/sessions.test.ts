import { fetchExchange, subscriptionExchange, Client as UrqlClient } from '@urql/core';
import { print } from 'graphql';
import { createClient as createSseClient } from 'graphql-sse';
import { createClient as createWsClient } from 'graphql-ws';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  ChatDocument,
  NotifyDocument,
  PublishDocument,
  RefreshTokenDocument,
  SendChatMessageDocument,
  SessionDocument,
  UpsertUserDocument,
} from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, nextMatching, ResultQueue, WAIT_MS, wsClient } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

let counter = 0;
const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`;

/** The token's exp in epoch ms (from the server's own answer to refreshToken). */
const expiry = async (server: TestServer, token: string) => {
  const r = await gql(server.url, RefreshTokenDocument, { token }, token);
  return Date.parse(r.body.data?.refreshToken.expiresAt ?? '');
};

/**
 * Waits (bounded) until a control connection whose token expires in the same second as `token`
 * is closed by the server: the expiry sweep for that second has run.
 */
async function expirySwept(server: TestServer, token: string) {
  const control = wsClient(server.wsUrl, token);
  const stream = control.subscribe(NotifyDocument, {});
  await stream.next();
  await stream.waitForEnd(WAIT_MS * 2);
  expect(control.closes[0]?.code).toBe(4401);
}

const notifyOf = (user: string) => async (server: TestServer, token: string) => {
  const stream = wsClient(server.wsUrl, token).subscribe(NotifyDocument, {});
  const first = await stream.next();
  const channel = first.data?.notify;
  if (channel?.__typename !== 'NotifyChannel') throw new Error('no channel');
  return { stream, channelId: channel.channelId, user };
};

describe('sessions: in-band token refresh and expiry warnings', () => {
  const { a, b, ws } = useInstances({
    // Every token below has less than this left: the warning comes at once.
    TOKEN_EXPIRY_WARNING_S: '30',
    RATE_LIMIT_PUBLISH: 'off',
  });

  it('keeps a graphql-ws socket and its subscriptions past the first token, after a refresh', async () => {
    const user = unique('refresh');
    const first = await a.token(user, { ttlSeconds: 2 });
    const client = ws(a, first);
    const stream = client.subscribe(NotifyDocument, {});
    const channel = (await stream.next()).data?.notify;
    if (channel?.__typename !== 'NotifyChannel') throw new Error('no channel');
    const second = await a.token(user, { ttlSeconds: 600 });
    const refreshed = await new Promise<unknown>((resolve) => {
      const queue = new ResultQueue<unknown>();
      client.client.subscribe(
        { query: print(RefreshTokenDocument), variables: { token: second } },
        { next: (value) => resolve(value), error: resolve, complete: () => queue.end() },
      );
    });
    expect(refreshed).toMatchObject({ data: { refreshToken: { userId: user } } });
    // The first token's expiry passes; the socket stays and still delivers.
    await expirySwept(a, await a.token(user, { ttlSeconds: 2 }));
    const sender = await b.token(user);
    await gql(
      b.url,
      PublishDocument,
      { input: { channelId: channel.channelId, name: 'after-exp', toUsers: [user] } },
      sender,
    );
    const message = await nextMatching(
      stream,
      (r) => r.data?.notify.__typename === 'NotifyMessage',
    );
    expect(message.data?.notify).toMatchObject({ name: 'after-exp' });
    expect(client.closes).toEqual([]);
  });

  it('refuses another user (FORBIDDEN) and a forged token (UNAUTHENTICATED); the first exp stands', async () => {
    const user = unique('refused');
    const first = await a.token(user, { ttlSeconds: 2 });
    const client = ws(a, first);
    const stream = client.subscribe(NotifyDocument, {});
    await stream.next();
    const run = (token: string) =>
      new Promise<{ errors?: { extensions?: { code?: string } }[] }>((resolve) => {
        client.client.subscribe(
          { query: print(RefreshTokenDocument), variables: { token } },
          { next: (value) => resolve(value as never), error: resolve as never, complete: () => {} },
        );
      });
    const other = await run(await a.token(unique('someone-else'), { ttlSeconds: 600 }));
    expect(other.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const forged = await run(`${first.slice(0, -4)}AAAA`);
    expect(forged.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    await stream.waitForEnd(WAIT_MS * 2);
    expect(client.closes[0]).toEqual({ code: 4401, reason: 'token expired' });
  });

  it('yields TokenExpiring once per token and TokenRefreshed after each refresh', async () => {
    const user = unique('warned');
    const first = await a.token(user, { ttlSeconds: 20 });
    const client = ws(a, first);
    const session = client.subscribe(SessionDocument, {});
    const warned = await session.next();
    expect(warned.data?.session).toEqual({
      __typename: 'TokenExpiring',
      expiresAt: new Date(await expiry(a, first)).toISOString(),
    });
    const refresh = (token: string) => client.subscribe(RefreshTokenDocument, { token }).next();
    const long = await a.token(user, { ttlSeconds: 600 });
    await refresh(long);
    expect(await session.next()).toMatchObject({
      data: {
        session: {
          __typename: 'TokenRefreshed',
          expiresAt: new Date(await expiry(a, long)).toISOString(),
        },
      },
    });
    // A short token again: refreshed, then warned about the new one at once.
    const short = await a.token(user, { ttlSeconds: 20 });
    await refresh(short);
    const next = [await session.next(), await session.next()].map(
      (r) => r.data?.session.__typename,
    );
    expect(next).toEqual(['TokenRefreshed', 'TokenExpiring']);
    expect(session.pending).toHaveLength(0);
  });

  it('refreshes a graphql-sse single-connection stream through the stream', async () => {
    const user = unique('sse');
    let token = await a.token(user, { ttlSeconds: 2 });
    const client = createSseClient({
      url: `${a.url}/graphql`,
      singleConnection: true,
      retryAttempts: 0,
      headers: () => ({ authorization: `Bearer ${token}` }),
    });
    try {
      const stream = new ResultQueue<{
        data?: { notify?: { __typename: string; name?: string } };
      }>();
      stream.dispose = client.subscribe(
        { query: 'subscription { notify { __typename ... on NotifyMessage { name } } }' },
        {
          next: (v) => stream.push(v as never),
          error: (e) => stream.end(e),
          complete: () => stream.end(),
        },
      );
      expect((await stream.next()).data?.notify?.__typename).toBe('NotifyChannel');
      token = await a.token(user, { ttlSeconds: 600 });
      const refreshed = await new Promise<unknown>((resolve, reject) => {
        client.subscribe(
          { query: print(RefreshTokenDocument), variables: { token } },
          { next: resolve, error: reject, complete: () => {} },
        );
      });
      expect(refreshed).toMatchObject({ data: { refreshToken: { userId: user } } });
      await expirySwept(a, await a.token(user, { ttlSeconds: 2 }));
      const { channelId } = await notifyOf(user)(a, token);
      await gql(
        b.url,
        PublishDocument,
        { input: { channelId, name: 'sse-after-exp', toUsers: [user] } },
        token,
      );
      const message = await nextMatching(
        stream,
        (r) => r.data?.notify?.__typename === 'NotifyMessage',
      );
      expect(message.data?.notify?.name).toBe('sse-after-exp');
    } finally {
      client.dispose();
    }
  });

  it('urql: listens to session and refreshes through the same graphql-ws client', async () => {
    const user = unique('urql');
    let token = await a.token(user, { ttlSeconds: 2 });
    // The documented pattern: connectionParams as a function (a reconnect sends the newest
    // token), and every operation over the socket so refreshToken runs on this connection.
    const socket = createWsClient({
      url: a.wsUrl,
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: () => ({ authorization: `Bearer ${token}` }),
    });
    const urql = new UrqlClient({
      url: `${a.url}/graphql`,
      exchanges: [
        subscriptionExchange({
          enableAllOperations: true,
          forwardSubscription: (request) => ({
            subscribe: (sink) => ({
              unsubscribe: socket.subscribe(
                { query: request.query ?? '', variables: request.variables ?? {} },
                sink as never,
              ),
            }),
          }),
        }),
        fetchExchange,
      ],
    });
    try {
      const sessions = new ResultQueue<{ data?: unknown }>();
      const notifications = new ResultQueue<{ data?: unknown }>();
      const subscriptions = [
        urql.subscription(SessionDocument, {}).subscribe((r) => sessions.push(r)),
        urql.subscription(NotifyDocument, {}).subscribe((r) => notifications.push(r)),
      ];
      expect((await sessions.next()).data).toMatchObject({
        session: { __typename: 'TokenExpiring' },
      });
      const channel = (await notifications.next()).data as {
        notify: { channelId: string };
      };
      token = await a.token(user, { ttlSeconds: 600 });
      const refreshed = await urql.mutation(RefreshTokenDocument, { token }).toPromise();
      expect(refreshed.error).toBeUndefined();
      expect((await sessions.next()).data).toMatchObject({
        session: { __typename: 'TokenRefreshed' },
      });
      await expirySwept(a, await a.token(user, { ttlSeconds: 2 }));
      await gql(
        b.url,
        PublishDocument,
        { input: { channelId: channel.notify.channelId, name: 'urql-after', toUsers: [user] } },
        token,
      );
      expect((await notifications.next()).data).toMatchObject({
        notify: { __typename: 'NotifyMessage', name: 'urql-after' },
      });
      for (const subscription of subscriptions) subscription.unsubscribe();
    } finally {
      await socket.dispose();
    }
  });

  it('only validates over plain HTTP', async () => {
    const user = unique('http');
    const token = await a.token(user);
    const ok = await gql(a.url, RefreshTokenDocument, { token: await a.token(user) }, token);
    expect(ok.body.data?.refreshToken.userId).toBe(user);
    const other = await gql(a.url, RefreshTokenDocument, { token: await a.token('x') }, token);
    expect(other.body.errors?.[0]?.extensions?.['code']).toBe('FORBIDDEN');
    const bad = await gql(a.url, RefreshTokenDocument, { token: 'a.b.c' }, token);
    expect(bad.body.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
  });
});

describe('chat resume (afterId) across two instances', () => {
  const { a, b, ws } = useInstances({ RATE_LIMIT_CHAT: 'off' });

  it('delivers exactly the messages after afterId, in order, once, while 60 arrive meanwhile', async () => {
    const group = unique('g');
    const [me, peer] = [unique('me'), unique('peer')];
    const service = await a.token(unique('svc'), { service: true });
    for (const userId of [me, peer]) {
      await gql(a.url, UpsertUserDocument, { input: { userId, group } }, service);
    }
    const mine = await a.token(me, { group });
    const theirs = await b.token(peer, { group });
    const send = async (server: TestServer, token: string, to: string, text: string) => {
      const r = await gql(server.url, SendChatMessageDocument, { to, text }, token);
      const message = r.body.data?.sendChatMessage;
      if (!message) throw new Error(`send failed: ${JSON.stringify(r.body)}`);
      return message;
    };
    const before = [];
    for (let i = 0; i < 10; i++) before.push(await send(a, theirs, me, `before ${i}`));
    const afterId = before[4]?.id as string;

    // 60 more, alternating instances and directions, while the resuming subscription starts.
    const sending = (async () => {
      const sent = [];
      for (let i = 0; i < 60; i++) {
        sent.push(
          i % 2 === 0
            ? await send(b, theirs, me, `during ${i}`)
            : await send(a, mine, peer, `during ${i}`),
        );
      }
      return sent;
    })();
    const resumed = ws(a, mine).subscribe(ChatDocument, { afterId });
    const sent = await sending;
    const expected = [...before.slice(5), ...sent].map((m) => m.id);
    const received: string[] = [];
    while (received.length < expected.length) {
      const event = (await resumed.next()).data?.chat;
      if (event?.__typename === 'ChatMessage') received.push(event.id);
    }
    expect(received).toEqual(expected);
    // Nothing repeated after the last one: a marker message is the very next.
    const marker = await send(b, theirs, me, 'marker');
    const next = await nextMatching(resumed, (r) => r.data?.chat.__typename === 'ChatMessage');
    expect(next.data?.chat).toMatchObject({ id: marker.id });
  });

  it('refuses an afterId that is no message id', async () => {
    const token = await a.token(unique('bad'), { group: unique('g') });
    const result = await ws(a, token).subscribe(ChatDocument, { afterId: 'x' }).next();
    expect(result.errors?.[0]?.extensions?.['code']).toBe('BAD_USER_INPUT');
  });
});
