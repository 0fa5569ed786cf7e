import { afterAll, describe, expect, it } from 'vitest';
import { NotifyDocument, PublishDocument, ViewerDocument } from './generated/graphql.ts';
import { startServer, type TestServer } from './support/app.ts';
import { gql, WAIT_MS, wsClient } from './support/clients.ts';
import { createTestDatabase } from './support/postgres.ts';

describe('graceful shutdown with SHUTDOWN_DRAIN_MS', () => {
  let dropDb: (() => Promise<void>) | undefined;
  afterAll(async () => {
    await dropDb?.();
  });

  it('says 503 draining on /readyz while it still serves, then closes sockets with 1001', async () => {
    const db = await createTestDatabase();
    dropDb = db.drop;
    // Long enough for the checks below; the drain is not a timing assertion.
    const server: TestServer = await startServer({
      DATABASE_URL: db.url,
      SHUTDOWN_DRAIN_MS: '3000',
    });
    const token = await server.token('drain-1');
    const client = wsClient(server.wsUrl, token);
    const stream = client.subscribe(NotifyDocument, {});
    const first = await stream.next();
    if (first.data?.notify.__typename !== 'NotifyChannel') throw new Error('expected a channel');
    const channelId = first.data.notify.channelId;

    const stopped = server.stop();
    const readyz = async () => {
      const response = await fetch(`${server.url}/readyz`, {
        signal: AbortSignal.timeout(WAIT_MS),
      });
      return { status: response.status, body: (await response.json()) as { status: string } };
    };
    // The first /readyz after stop() began already says so (no check of Postgres runs).
    expect(await readyz()).toEqual({ status: 503, body: { status: 'draining', checks: {} } });

    // Meanwhile requests and open subscriptions are served as before.
    const viewer = await gql(server.url, ViewerDocument, {}, token);
    expect(viewer.body.data?.viewer?.userId).toBe('drain-1');
    const published = await gql(
      server.url,
      PublishDocument,
      { input: { channelId, name: 'during-drain', toUsers: ['drain-1'] } },
      token,
    );
    expect(published.body.data?.publish).toBe(true);
    expect((await stream.next()).data?.notify).toMatchObject({ name: 'during-drain' });
    expect(client.closes).toEqual([]);

    await stopped;
    await stream.waitForEnd();
    expect(client.closes[0]?.code).toBe(1001);
    await client.dispose();
  });
});
