import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { parse } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotifyDocument, PublishDocument } from './generated/graphql.ts';
import { startServer, type TestServer } from './support/app.ts';
import { gql, sseClient, wsClient } from './support/clients.ts';
import { createTestDatabase } from './support/postgres.ts';
import { requireRedis } from './support/redis.ts';

describe('one event, one execution', () => {
  let server: TestServer;
  let dropDb: () => Promise<void>;
  const disposers: (() => unknown)[] = [];

  beforeAll(async () => {
    const [db, redis] = await Promise.all([createTestDatabase(), requireRedis()]);
    dropDb = db.drop;
    server = await startServer({
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      REDIS_PREFIX: redis.prefix,
    });
  });

  afterAll(async () => {
    for (const dispose of disposers) dispose();
    await server?.stop();
    await dropDb?.();
  });

  it('executes and serializes a published event once per distinct operation, for every subscriber', async () => {
    const tokens = await Promise.all(Array.from({ length: 41 }, (_, i) => server.token(`fan${i}`)));
    const [senderToken, ...others] = tokens as [string, ...string[]];
    const streams = others.map((token, i) => {
      const client = i % 4 === 3 ? sseClient(server.url, token) : wsClient(server.wsUrl, token);
      disposers.push(() => client.dispose());
      return client.subscribe(NotifyDocument, {});
    });
    // One subscriber asks for a different selection: a second group.
    const otherSelection = wsClient(server.wsUrl, others[0]);
    disposers.push(() => otherSelection.dispose());
    const different = otherSelection.subscribe(
      parse('subscription { notify { ... on NotifyMessage { name } } }') as TypedDocumentNode<
        { notify: { name?: string } },
        Record<string, never>
      >,
      {},
    );
    const sender = wsClient(server.wsUrl, senderToken);
    disposers.push(() => sender.dispose());
    const senderStream = sender.subscribe(NotifyDocument, {});
    const first = (await senderStream.next()).data?.notify;
    const channelId = first?.__typename === 'NotifyChannel' ? first.channelId : '';
    for (const stream of streams) await stream.next();
    await different.next();

    const before = server.app.fanout.executions;
    await gql(
      server.url,
      PublishDocument,
      { input: { channelId, name: 'once', toAll: true } },
      senderToken,
    );
    for (const stream of [...streams, senderStream]) {
      expect((await stream.next()).data?.notify).toMatchObject({ name: 'once' });
    }
    expect((await different.next()).data).toEqual({ notify: { name: 'once' } });
    // 41 subscribers of NotifyDocument (ws and SSE alike) and one of the other selection.
    expect(server.app.fanout.executions - before).toBe(2);
  });
});
