import { randomInt } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  NotifyDocument,
  type NotifySubscription,
  PublishDocument,
  ViewerDocument,
} from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { useCaddy } from './support/caddy.ts';
import { gql, ResultQueue, sseClient, WAIT_MS, wsClient } from './support/clients.ts';
import { connectionClosed } from './support/connections.ts';
import { useClients, useInstances } from './support/instances.ts';
import { readJsonLines } from './support/json-lines.ts';

// The production topology: the repository's deploy/Caddyfile, unchanged, in front of three
// instances on one Postgres and one Redis; every request of these tests goes through Caddy.

type NotifyQueue = ResultQueue<ExecutionResult<NotifySubscription>>;

const NOTIFIER_SECRET = 'caddy-test-notifier-secret';
/** Unique numeric user ids (the ICC speaks integers). */
const uniqueUser = () => String(randomInt(1_000_000, 2_000_000_000));
/** host:port of an instance, as the Caddyfile lists upstreams. */
const hostOf = (server: TestServer) => server.url.replace(/^http:\/\//, '');

/** The channel id of a notify stream: its first event, sent once the subscription is live. */
async function channelOf(queue: NotifyQueue): Promise<string> {
  const first = await queue.next();
  const event = first.data?.notify;
  if (event?.__typename !== 'NotifyChannel') {
    throw new Error(`expected NotifyChannel, got ${JSON.stringify(first)}`);
  }
  return event.channelId;
}

/** The instance holding a connection of `userId`, waiting (bounded) until one does. */
async function holderOf(servers: readonly TestServer[], userId: string): Promise<TestServer> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const holder = servers.find((s) => s.app.connections.forUser(userId).length > 0);
    if (holder) return holder;
    if (Date.now() > deadline) throw new Error(`no instance holds a connection of ${userId}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Opens a WebSocket and resolves once it is open; rejects when refused or after the bound. */
function openSocket(url: string, headers: Record<string, string>): Promise<WebSocket> {
  const socket = new WebSocket(url, { headers });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new Error('socket did not open'));
    }, WAIT_MS);
    socket.once('open', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      res.resume();
      reject(new Error(`upgrade refused: ${res.statusCode}`));
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

describe('Caddy with the repository Caddyfile in front of three instances', () => {
  const instances = useInstances({ NOTIFIER_SECRET }, 3);
  const { servers } = instances;
  const proxy = useCaddy(() => servers.map(hostOf));
  // Registered last, so these clients close first, then Caddy stops, then the instances.
  const { onCleanup } = useClients();

  const ws = (token: string) => {
    const client = wsClient(proxy.wsUrl, token);
    onCleanup(() => void client.dispose());
    return client;
  };
  const sse = (token: string, singleConnection: boolean) => {
    const client = sseClient(proxy.url, token, { singleConnection });
    onCleanup(() => client.dispose());
    return client;
  };

  /**
   * A sender (over graphql-ws) and `count` more users whose notify subscriptions are opened with
   * `subscribe`, each live (its channel event arrived); every request goes through Caddy.
   */
  const subscribers = async (subscribe: (token: string) => NotifyQueue, count: number) => {
    const senderId = uniqueUser();
    const senderToken = await instances.a.token(senderId);
    const senderChannel = await channelOf(ws(senderToken).subscribe(NotifyDocument, {}));
    const users = Array.from({ length: count }, uniqueUser);
    const queues: NotifyQueue[] = [];
    for (const user of users) {
      const queue = subscribe(await instances.a.token(user));
      await channelOf(queue);
      queues.push(queue);
    }
    return { senderId, senderToken, senderChannel, users, queues };
  };

  /** Publishes `name` through Caddy to every subscriber, and expects each to receive it. */
  const deliver = async (group: Awaited<ReturnType<typeof subscribers>>, name: string) => {
    const published = await gql(
      proxy.url,
      PublishDocument,
      { input: { channelId: group.senderChannel, name, toUsers: group.users } },
      group.senderToken,
    );
    expect(published.body).toEqual({ data: { publish: true } });
    for (const queue of group.queues) {
      expect((await queue.next()).data?.notify).toEqual({
        __typename: 'NotifyMessage',
        senderUserId: group.senderId,
        senderChannelId: group.senderChannel,
        name,
        message: null,
      });
      expect(queue.ended).toBe(false);
    }
  };

  /** Opens `count` subscriptions with `subscribe`, then delivers a message to them. */
  const roundTrip = async (
    subscribe: (token: string) => NotifyQueue,
    count: number,
    name: string,
  ) => deliver(await subscribers(subscribe, count), name);

  it('answers GraphQL over HTTP', async () => {
    const token = await instances.a.token('viewer', { group: 'g' });
    for (let i = 0; i < 6; i++) {
      const me = await gql(proxy.url, ViewerDocument, {}, token);
      expect([me.status, me.body]).toEqual([
        200,
        { data: { viewer: { userId: 'viewer', group: 'g', isService: false } } },
      ]);
    }
  });

  it('carries graphql-ws subscriptions', async () => {
    await roundTrip((token) => ws(token).subscribe(NotifyDocument, {}), 3, 'over-ws');
  });

  it("carries graphql-sse's distinct-connections mode", async () => {
    await roundTrip((token) => sse(token, false).subscribe(NotifyDocument, {}), 3, 'over-sse');
  });

  // The reservation (PUT), the stream (GET) and each operation (POST) are requests of their own,
  // which Caddy balances independently (least_conn sends the POST away from the instance holding
  // the stream): this works only when no instance needs to have seen the others.
  it("carries graphql-sse's single-connection mode without sticky sessions", async () => {
    await roundTrip((token) => sse(token, true).subscribe(NotifyDocument, {}), 3, 'over-single');
  });

  it('writes a JSON-lines stream through at once, and ends it on the instance when its client leaves', async () => {
    const userId = uniqueUser();
    const token = await instances.a.token(userId);
    const reader = await readJsonLines(`${proxy.url}/system/icc/notify`, {
      authorization: `Bearer ${token}`,
    });
    onCleanup(reader.close);
    expect(reader.status).toBe(200);
    // The ICC stream sends no keep-alive: nothing written after the message below could push it
    // out of a buffer, so it arrives only when Caddy writes each line through.
    const { channel_id: channelId } = (await reader.lines.next()) as { channel_id: string };
    const publish = await fetch(`${proxy.url}/system/icc/notify/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ channel_id: channelId, name: 'live', to_users: [Number(userId)] }),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    expect([publish.status, await publish.text()]).toEqual([200, '']);
    expect(await reader.lines.next()).toEqual({
      sender_user_id: Number(userId),
      sender_channel_id: channelId,
      name: 'live',
      message: null,
    });
    expect(reader.lines.ended).toBe(false);

    // When the client goes away, the instance's stream ends too, not at its next write (which
    // may be hours away): Caddy passes the disconnect on.
    const [connection] = (await holderOf(servers, userId)).app.connections.forUser(userId);
    if (!connection) throw new Error('the stream has no connection on its instance');
    reader.close();
    await connectionClosed(connection);
  });

  it('carries a legacy WebSocket stream (notifier) frame by frame', async () => {
    const accessId = `caddy-${uniqueUser()}`;
    const socket = await openSocket(
      `${proxy.url.replace(/^http/, 'ws')}/notifier/subscribe_to_events`,
      { authorization: `Bearer ${await instances.a.token(accessId)}` },
    );
    onCleanup(() => socket.terminate());
    const frames = new ResultQueue<string>();
    socket.on('message', (data) => frames.push(String(data)));
    socket.on('close', () => frames.end());
    // Announced from timestamp 0: the first event is replayed if it is stored before the
    // socket subscribed, or comes live; the second comes live either way.
    socket.send(JSON.stringify({ access_id: accessId, timestamp: 0 }));
    const service = await instances.a.token('connector', { service: true });
    for (const [createdAt, payload] of [
      [1, 'first'],
      [2, 'second'],
    ] as const) {
      const response = await fetch(`${proxy.url}/notifier/push_events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${service}` },
        body: JSON.stringify([{ accessid: accessId, created_at: createdAt, payload }]),
        signal: AbortSignal.timeout(WAIT_MS),
      });
      expect([response.status, await response.text()]).toEqual([200, 'true']);
      expect(JSON.parse(await frames.next())).toEqual([
        { accessid: accessId, created_at: createdAt, payload },
      ]);
    }
    expect(socket.readyState).toBe(WebSocket.OPEN);
  });

  // Last: it stops an instance for good.
  it('keeps serving new subscriptions and requests when an instance stops', async () => {
    const stopped = servers[2] as TestServer;
    const address = hostOf(stopped);
    await stopped.stop();

    // Requests without a body (here WebSocket upgrades) that reach the stopped instance are
    // tried on another one at once (lb_try_duration); the failed connection takes it out.
    // least_conn prefers that instance: it holds no connection any more.
    const overWs = await subscribers((token) => ws(token).subscribe(NotifyDocument, {}), 4);

    // Requests with a body are never retried (see the Caddyfile), so they are safe once Caddy
    // took the instance out: by such a failed connection, or by its next health check, which
    // this waits for.
    await proxy.logged(
      (entry) =>
        String(entry['logger']).endsWith('health_checker.active') && entry['host'] === address,
      2 * WAIT_MS,
    );
    await deliver(overWs, 'after-stop-ws');
    const token = await instances.a.token('after-stop');
    for (let i = 0; i < 6; i++) {
      const me = await gql(proxy.url, ViewerDocument, {}, token);
      expect([me.status, me.body.data?.viewer?.userId]).toEqual([200, 'after-stop']);
    }
    await roundTrip((t) => sse(t, false).subscribe(NotifyDocument, {}), 4, 'after-stop-sse');
  });
});
