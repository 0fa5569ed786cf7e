import { randomBytes } from 'node:crypto';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import type { ExecutionResult } from 'graphql';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  ApplauseDocument,
  type ApplauseSubscription,
  AutoupdateDocument,
  type AutoupdateSubscription,
  ChatDocument,
  type ChatSubscription,
  DropUserDocument,
  NotifyDocument,
  type NotifySubscription,
  PingDocument,
  PresenceDocument,
  PublishDocument,
  SendApplauseDocument,
  SendChatMessageDocument,
  UpsertUserDocument,
  WriteDataDocument,
} from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, nextMatching, type ResultQueue, warmUp } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

const unique = (name: string) => `${name}${randomBytes(4).toString('hex')}`;

type Queue<T> = ResultQueue<ExecutionResult<T>>;

/** The data of the next result; fails on errors. */
async function nextData<T>(queue: Queue<T>, timeoutMs?: number): Promise<T> {
  const result = await queue.next(timeoutMs);
  expect(result.errors).toBeUndefined();
  if (!result.data) throw new Error(`no data: ${JSON.stringify(result)}`);
  return result.data;
}

describe('every capability across three instances on a Redis Cluster (3 masters, 3 replicas)', () => {
  const { servers, ws, sse, cluster } = useInstances(
    {
      APPLAUSE_INTERVAL_MS: '100',
      APPLAUSE_WINDOW_S: '5',
      PING_MIN_INTERVAL_MS: '50',
      ANONYMOUS_CONNECTIONS: '20',
    },
    3,
    { redis: 'cluster' },
  );
  const [a, b, c] = servers as [TestServer, TestServer, TestServer];
  let service: string;

  beforeAll(async () => {
    service = await a.token('connector', { service: true });
  });

  /** Runs a mutation over HTTP and returns its data; fails on errors. */
  async function mutate<T, V>(
    server: TestServer,
    document: TypedDocumentNode<T, V>,
    variables: V,
    token: string,
  ): Promise<T> {
    const result = await gql(server.url, document, variables, token);
    expect(result.body.errors).toBeUndefined();
    if (!result.body.data) throw new Error(`no data: ${JSON.stringify(result.body)}`);
    return result.body.data;
  }

  it('notify: a publish on one instance reaches graphql-ws and SSE subscribers on the others', async () => {
    const [sender, one, two] = ['201', '202', '203'];
    const tokens = await Promise.all([sender, one, two].map((u) => a.token(u)));
    const senderStream = ws(c, tokens[0]).subscribe(NotifyDocument, {});
    const queues = [
      ws(a, tokens[1]).subscribe(NotifyDocument, {}),
      sse(b, tokens[2]).subscribe(NotifyDocument, {}),
    ];
    const channelOf = async (q: Queue<NotifySubscription>) => {
      const event = (await nextData(q)).notify;
      if (event.__typename !== 'NotifyChannel') throw new Error('expected the channel first');
      return event.channelId;
    };
    const channelId = await channelOf(senderStream);
    for (const q of queues) await channelOf(q);
    await mutate(
      c,
      PublishDocument,
      { input: { channelId, name: 'hello', message: { n: 1 }, toUsers: [one, two] } },
      tokens[0] as string,
    );
    for (const q of queues) {
      expect((await nextData<NotifySubscription>(q)).notify).toMatchObject({
        __typename: 'NotifyMessage',
        senderUserId: sender,
        name: 'hello',
        message: { n: 1 },
      });
    }
  });

  it('applause: nine users on three instances make level 9 on every instance', async () => {
    const meetingId = unique('m');
    const watchers = await Promise.all(servers.map((s, i) => s.token(`watch-${i}`)));
    const queues = servers.map((s, i) =>
      ws(s, watchers[i]).subscribe(ApplauseDocument, { meetingId }),
    );
    for (const q of queues) await q.next();
    const users = Array.from({ length: 9 }, (_, i) => unique(`clap${i}-`));
    await Promise.all(
      users.map(async (user, i) => {
        const server = servers[i % 3] as TestServer;
        await mutate(server, SendApplauseDocument, { meetingId }, await server.token(user));
      }),
    );
    for (const q of queues) {
      const top = await nextMatching(q, (r) => (r.data?.applause.level ?? 0) >= 9);
      expect((top.data as ApplauseSubscription).applause.level).toBe(9);
    }
  });

  it('chat: a message sent on one instance reaches both parties on the others', async () => {
    const group = unique('g');
    const [from, to] = [unique('from'), unique('to')];
    for (const userId of [from, to]) {
      await mutate(a, UpsertUserDocument, { input: { userId, group } }, service);
    }
    const fromToken = await c.token(from, { group });
    const toToken = await a.token(to, { group });
    const queues = [
      ws(a, toToken).subscribe(ChatDocument, { peerId: from }),
      sse(b, fromToken).subscribe(ChatDocument, { peerId: to }),
    ];
    const send = (text: string) => mutate(c, SendChatMessageDocument, { to, text }, fromToken);
    const isMessage = (r: ExecutionResult<ChatSubscription>) =>
      r.data?.chat.__typename === 'ChatMessage';
    // Each subscription is live once a warm-up message reaches it.
    for (const q of queues) {
      const live = await warmUp(
        () => send('warm-up'),
        (ms) => nextMatching(q, isMessage, { timeoutMs: ms }),
      );
      expect(live).not.toBeNull();
    }
    await send('over the cluster');
    for (const q of queues) {
      const message = await nextMatching(
        q,
        (r) => r.data?.chat.__typename === 'ChatMessage' && r.data.chat.text === 'over the cluster',
      );
      expect(message).toBeTruthy();
    }
  });

  it('presence: a ping on one instance reaches watchers on the others', async () => {
    const user = unique('present');
    const userToken = await c.token(user);
    const queues = [
      ws(a, await a.token(unique('w'))).subscribe(PresenceDocument, { userId: user }),
      sse(b, await b.token(unique('w'))).subscribe(PresenceDocument, { userId: user }),
    ];
    // Pings until one newer than the last is accepted (the minimum interval refuses some).
    let last = 0;
    const pingNewer = async () => {
      for (let attempt = 0; attempt < 100; attempt++) {
        const { ping } = await mutate(c, PingDocument, { status: 'AWAY' }, userToken);
        const time = Date.parse(ping.time);
        if (time > last) {
          last = time;
          return time;
        }
      }
      throw new Error('no ping accepted');
    };
    // The first event is the cached ping; a subscription is live once a newer ping reaches it.
    for (const q of queues) {
      let sent = 0;
      const live = await warmUp(
        async () => {
          sent = await pingNewer();
        },
        (ms) =>
          nextMatching(q, (r) => Date.parse(r.data?.presence.time ?? '') === sent, {
            timeoutMs: ms,
          }),
      );
      expect(live).not.toBeNull();
    }
    const time = await pingNewer();
    for (const q of queues) {
      expect(
        await nextMatching(q, (r) => Date.parse(r.data?.presence.time ?? '') === time),
      ).toBeTruthy();
    }
  });

  it('autoupdate: resumes on another instance with exactly the changes written meanwhile', async () => {
    const collection = unique('motions/motion');
    const write = async (server: TestServer, i: number) =>
      (
        await mutate(
          server,
          WriteDataDocument,
          { changes: [{ key: `${collection}:${i}`, value: { id: i } }] },
          service,
        )
      ).writeData;
    const user = await a.token(unique('u'));
    const first = ws(a, user);
    const stream = first.subscribe(AutoupdateDocument, { changeId: 0 });
    let resumeFrom = (await nextData<AutoupdateSubscription>(stream)).autoupdate.toChangeId;
    const zero = await write(b, 0);
    while (resumeFrom < zero) {
      resumeFrom = (await nextData<AutoupdateSubscription>(stream)).autoupdate.toChangeId;
    }
    await first.dispose();
    for (let i = 1; i <= 10; i++) await write(c, i);
    const resumed = ws(b, user).subscribe(AutoupdateDocument, { changeId: resumeFrom });
    const seen: number[] = [];
    while (seen.length < 10) {
      const batch = (await nextData<AutoupdateSubscription>(resumed)).autoupdate;
      const changed = (batch.changed as Record<string, { id: number }[]>)[collection] ?? [];
      seen.push(...changed.map((element) => element.id));
    }
    expect(seen).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
  });

  it("dropUser: closes the user's connections on all three instances", async () => {
    const victim = unique('victim');
    const clients = await Promise.all(servers.map(async (s) => ws(s, await s.token(victim))));
    const streams = clients.map((client) => client.subscribe(AutoupdateDocument, {}));
    for (const s of streams) await s.next();
    const dropped = await mutate(c, DropUserDocument, { userId: victim }, service);
    expect(dropped).toEqual({ dropUser: { connectionsClosed: 3 } });
    for (const s of streams) await s.waitForEnd();
  });

  it('carries every event on sharded channels: PUBSUB CHANNELS is empty on every node', async () => {
    const ports = cluster.nodes.map((node) => node.port);
    for (const port of ports) {
      expect((await cluster.cli(port, 'pubsub', 'channels')).trim()).toBe('');
    }
    const masters = await cluster.masters();
    const sharded = (
      await Promise.all(masters.map((port) => cluster.cli(port, 'pubsub', 'shardchannels')))
    )
      .flatMap((out) => out.split('\n'))
      .filter(Boolean);
    // The instances listen for notify, autoupdate, dropUser... each on the master of its slot.
    expect(sharded).toEqual(expect.arrayContaining(['switchboard:notify', 'switchboard:dropUser']));
    // Spread over more than one master.
    const perMaster = await Promise.all(
      masters.map(async (port) => (await cluster.cli(port, 'pubsub', 'shardchannels')).trim()),
    );
    expect(perMaster.filter(Boolean).length).toBeGreaterThan(1);
  });
});

describe('failover of a Redis Cluster master', () => {
  const { a, b, ws, cluster } = useInstances({ ANONYMOUS_CONNECTIONS: '20' }, 2, {
    redis: 'cluster',
  });

  /** The port of the master that serves `key`'s slot now. */
  async function masterOf(key: string): Promise<number> {
    const port = cluster.nodes[0]?.port as number;
    const slot = Number((await cluster.cli(port, 'cluster', 'keyslot', key)).trim());
    for (const master of await cluster.masters()) {
      const own = (await cluster.cli(master, 'cluster', 'nodes'))
        .split('\n')
        .find((line) => line.includes('myself'));
      // `<id> <address> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges...>`
      const served = (own ?? '')
        .split(' ')
        .slice(8)
        .some((range) => {
          const [from, to = from] = range.split('-').map(Number) as [number, number?];
          return slot >= from && slot <= (to as number);
        });
      if (served) return master;
    }
    throw new Error(`no master serves ${key}`);
  }

  const ready = async (server: TestServer) =>
    (await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(5_000) })).status;

  /** Polls (bounded) until `check` holds; the failover has no event a test could await. */
  async function until(check: () => Promise<boolean>, timeoutMs: number, what: string) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await check().catch(() => false)) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`${what} within ${timeoutMs} ms`);
  }

  it('keeps fan-out going once the replica is promoted, says 503 meanwhile, loses nothing', async () => {
    const [sender, watcher] = [unique('s'), unique('w')];
    const senderToken = await b.token(sender);
    const senderStream = ws(b, senderToken).subscribe(NotifyDocument, {});
    const queue = ws(a, await a.token(watcher)).subscribe(NotifyDocument, {});
    const channelOf = async (q: Queue<NotifySubscription>) => {
      const event = (await nextData(q)).notify;
      if (event.__typename !== 'NotifyChannel') throw new Error('expected the channel first');
      return event.channelId;
    };
    const channelId = await channelOf(senderStream);
    await channelOf(queue);
    const publish = (name: string) =>
      gql(b.url, PublishDocument, { input: { channelId, name, toUsers: [watcher] } }, senderToken);
    expect((await publish('before')).body.errors).toBeUndefined();
    expect((await nextData(queue)).notify).toMatchObject({ name: 'before' });

    // Something stored in Redis before the failure, on the master about to fail, replicated.
    const master = await masterOf('switchboard:notify');
    await cluster.cli(master, 'set', '{switchboard:notify}:kept', 'yes');
    await cluster.cli(master, 'wait', '1', '2000');

    await cluster.kill(master);
    // Both instances report the outage (a master no longer answers) ...
    await until(async () => (await ready(a)) === 503, 10_000, '/readyz did not say 503');
    // ... and come back once the replica took over, without a restart.
    await cluster.waitOk(20_000);
    for (const server of [a, b]) {
      await until(async () => (await ready(server)) === 200, 20_000, '/readyz did not recover');
    }
    // The subscription made before the failure delivers again (publishes may fail meanwhile).
    let n = 0;
    const delivered = await warmUp(
      async () => {
        n += 1;
        await publish(`after-${n}`);
      },
      (ms) => queue.next(ms),
      { attempts: 40, pollMs: 500 },
    );
    expect(delivered?.data?.notify).toMatchObject({ __typename: 'NotifyMessage' });
    const survivor = cluster.nodes.find((node) => node.process)?.port as number;
    expect((await cluster.cli(survivor, '-c', 'get', '{switchboard:notify}:kept')).trim()).toBe(
      'yes',
    );
  });
});
