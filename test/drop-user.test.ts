import { randomBytes } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import { beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  AutoupdateDocument,
  type AutoupdateSubscription,
  DropUserDocument,
  WriteDataDocument,
} from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, ResultQueue, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { readJsonLines } from './support/json-lines.ts';

const unique = (name: string) => `${name}-${randomBytes(4).toString('hex')}`;

describe('dropUser across two instances on one Redis', () => {
  const { a, b, ws, sse, onCleanup } = useInstances();
  let service: string;

  beforeAll(async () => {
    service = await a.token('connector', { service: true });
  });

  /** A notifier socket of `userId`, subscribed (its first frame is awaited by the caller). */
  async function notifierSocket(server: TestServer, userId: string) {
    const url = `${server.url.replace(/^http/, 'ws')}/notifier/subscribe_to_events`;
    const socket = new WebSocket(url, {
      headers: { authorization: `Bearer ${await server.token(userId)}` },
    });
    onCleanup(() => socket.terminate());
    const frames = new ResultQueue<string>();
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      socket.on('close', (code, reason) => resolve({ code, reason: String(reason) })),
    );
    socket.on('message', (data) => frames.push(String(data)));
    await new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    });
    socket.send(JSON.stringify({ access_id: userId, timestamp: 0 }));
    return { frames, closed };
  }

  const firstBatch = async (queue: ResultQueue<ExecutionResult<AutoupdateSubscription>>) => {
    const result = await queue.next();
    expect(result.errors).toBeUndefined();
    if (!result.data) throw new Error(`no data: ${JSON.stringify(result)}`);
    return result.data.autoupdate;
  };

  it("closes the user's graphql-ws, SSE, OS3 stream and notifier sockets everywhere and counts them", async () => {
    const [victim, bystander] = [unique('victim'), unique('bystander')];
    const victimOnA = await a.token(victim);
    const victimOnB = await b.token(victim);

    const wsA = ws(a, victimOnA);
    const wsB = ws(b, victimOnB);
    const sseB = sse(b, victimOnB);
    const other = ws(a, await a.token(bystander));
    const streams = [wsA, wsB, sseB].map((c) => c.subscribe(AutoupdateDocument, {}));
    const otherStream = other.subscribe(AutoupdateDocument, {});
    for (const s of [...streams, otherStream]) await firstBatch(s);
    const os3 = await readJsonLines(`${b.url}/system/autoupdate`, {
      authorization: `Bearer ${victimOnB}`,
    });
    onCleanup(() => os3.close());
    // Written once the stream is subscribed; an empty snapshot is not written (as OS3).
    expect(await os3.lines.next()).toEqual({ connected: true });

    const notifier = await notifierSocket(a, victim);
    // The notifier socket is subscribed once an event pushed for it arrives.
    const pushed = await gql(
      a.url,
      'mutation($id: ID!) { pushEvents(events: [{accessId: $id, payload: "hi"}]) { accepted } }',
      { id: victim },
      service,
    );
    expect(pushed.body.errors).toBeUndefined();
    await notifier.frames.next();

    const refused = await gql(b.url, DropUserDocument, { userId: victim }, victimOnB);
    expect(refused.body.errors?.[0]?.extensions?.['code']).toBe('FORBIDDEN');

    const dropped = await gql(b.url, DropUserDocument, { userId: victim, reason: 'test' }, service);
    expect(dropped.body).toEqual({ data: { dropUser: { connectionsClosed: 5 } } });

    for (const s of streams) await s.waitForEnd();
    await os3.lines.waitForEnd();
    expect(wsA.closes).toEqual([{ code: 4403, reason: 'dropped' }]);
    expect(wsB.closes).toEqual([{ code: 4403, reason: 'dropped' }]);
    const notifierClose = await Promise.race([
      notifier.closed,
      new Promise((_, reject) => setTimeout(() => reject(new Error('not closed')), WAIT_MS)),
    ]);
    expect(notifierClose).toEqual({ code: 1000, reason: 'close' });

    // The bystander's connection is still served.
    const collection = unique('after/drop');
    await gql(
      a.url,
      WriteDataDocument,
      { changes: [{ key: `${collection}:1`, value: 1 }] },
      service,
    );
    const next = await firstBatch(otherStream);
    expect((next.changed as Record<string, unknown>)[collection]).toEqual([1]);
    expect(other.closes).toEqual([]);

    // Nothing left to drop.
    const again = await gql(a.url, DropUserDocument, { userId: victim }, service);
    expect(again.body.data?.dropUser.connectionsClosed).toBe(0);
  });
});
