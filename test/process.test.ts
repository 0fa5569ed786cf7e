import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionResult } from 'graphql';
import { afterAll, describe, expect, it } from 'vitest';
import {
  NotifyDocument,
  type NotifySubscription,
  PublishDocument,
  ViewerDocument,
} from './generated/graphql.ts';
import { TEST_TOKEN_KEY } from './support/app.ts';
import { gql, type ResultQueue, sseClient, wsClient } from './support/clients.ts';
import { createTestDatabase } from './support/postgres.ts';
import { type ServerProcess, spawnServer } from './support/process.ts';
import { requireRedis } from './support/redis.ts';

type NotifyQueue = ResultQueue<ExecutionResult<NotifySubscription>>;

async function channelOf(queue: NotifyQueue): Promise<string> {
  const event = (await queue.next()).data?.notify;
  if (event?.__typename !== 'NotifyChannel')
    throw new Error(`expected a channel, got ${JSON.stringify(event)}`);
  return event.channelId;
}

async function messageOf(queue: NotifyQueue) {
  const event = (await queue.next()).data?.notify;
  if (event?.__typename !== 'NotifyMessage')
    throw new Error(`expected a message, got ${JSON.stringify(event)}`);
  return event;
}

describe('server processes', () => {
  const processes: ServerProcess[] = [];
  const folders: string[] = [];
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
  });

  it('starts with embedded defaults, prints dev tokens, serves notify over graphql-ws and SSE, shuts down cleanly', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-'));
    folders.push(dataDir);
    const server = await spawnServer({ DATA_DIR: dataDir });
    processes.push(server);
    const user = /user 1:\s+(\S+)/.exec(server.output())?.[1];
    const service = /service:\s+(\S+)/.exec(server.output())?.[1];
    expect(user).toBeTruthy();
    expect(service).toBeTruthy();

    const viewer = await gql(server.url, ViewerDocument, {}, user);
    expect(viewer.body.data?.viewer?.userId).toBe('1');

    const ws = wsClient(server.wsUrl, user);
    const sse = sseClient(server.url, user);
    const overWs = ws.subscribe(NotifyDocument, {});
    const overSse = sse.subscribe(NotifyDocument, {});
    await channelOf(overWs);
    await channelOf(overSse);
    const sender = wsClient(server.wsUrl, service);
    const senderChannel = await channelOf(sender.subscribe(NotifyDocument, {}));
    const published = await gql(
      server.url,
      PublishDocument,
      { input: { channelId: senderChannel, name: 'hi', toUsers: ['1'], message: [1, 2] } },
      service,
    );
    expect(published.body.data?.publish).toBe(true);
    expect(await messageOf(overWs)).toMatchObject({
      name: 'hi',
      senderUserId: 'service',
      message: [1, 2],
    });
    expect(await messageOf(overSse)).toMatchObject({
      name: 'hi',
      senderUserId: 'service',
      message: [1, 2],
    });

    expect(await server.stop('SIGTERM')).toBe(0);
    await overWs.waitForEnd();
    await overSse.waitForEnd();
    expect(ws.closes[0]?.code).toBe(1001);
    sse.dispose();
  });

  it('fans out between two processes sharing Postgres and Redis', async () => {
    const [db, redis] = await Promise.all([createTestDatabase(), requireRedis()]);
    try {
      const env = {
        DATABASE_URL: db.url,
        REDIS_URL: redis.url,
        REDIS_PREFIX: redis.prefix,
        AUTH_TOKEN_KEY: TEST_TOKEN_KEY,
        LOG_LEVEL: 'warn',
      };
      const [one, two] = await Promise.all([
        spawnServer({ ...env, LOG_LEVEL: 'info' }),
        spawnServer({ ...env, LOG_LEVEL: 'info' }),
      ]);
      processes.push(one, two);
      const { createAuthenticator } = await import('../src/auth/index.ts');
      const { createLogger } = await import('../src/logger.ts');
      const auth = createAuthenticator({
        tokenKey: TEST_TOKEN_KEY,
        logger: createLogger('silent'),
      });
      const [receiverToken, senderToken] = await Promise.all([
        auth.sign({ sub: 'r' }),
        auth.sign({ sub: 's' }),
      ]);

      const receiver = wsClient(one.wsUrl, receiverToken);
      const stream = receiver.subscribe(NotifyDocument, {});
      await channelOf(stream);
      const sender = wsClient(two.wsUrl, senderToken);
      const senderChannel = await channelOf(sender.subscribe(NotifyDocument, {}));
      await gql(
        two.url,
        PublishDocument,
        { input: { channelId: senderChannel, name: 'x', toUsers: ['r'] } },
        senderToken,
      );
      expect(await messageOf(stream)).toMatchObject({ name: 'x', senderUserId: 's' });
      receiver.dispose();
      sender.dispose();
      expect(await Promise.all([one.stop(), two.stop()])).toEqual([0, 0]);
    } finally {
      await db.drop();
    }
  });
});
