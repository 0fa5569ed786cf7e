import { randomBytes } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AutoupdateDocument,
  type AutoupdateSubscription,
  PushEventsDocument,
  WriteDataDocument,
} from './generated/graphql.ts';
import { startServer, type TestServer } from './support/app.ts';
import { gql, type ResultQueue } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

type Batch = AutoupdateSubscription['autoupdate'];
type BatchQueue = ResultQueue<ExecutionResult<AutoupdateSubscription>>;
type Change = { key: string; value?: unknown; visibleTo?: string[] | null };

const unique = (name: string) => `${name}${randomBytes(4).toString('hex')}`;

async function nextBatch(queue: BatchQueue): Promise<Batch> {
  const result = await queue.next();
  expect(result.errors).toBeUndefined();
  if (!result.data) throw new Error(`no data: ${JSON.stringify(result)}`);
  return result.data.autoupdate;
}

const changedIn = (batch: Batch, collection: string) =>
  ((batch.changed as Record<string, unknown[]>)[collection] ?? []) as Record<string, unknown>[];
const deletedIn = (batch: Batch, collection: string) =>
  (batch.deleted as Record<string, unknown[]>)[collection] ?? [];

describe('autoupdate across two instances on one Redis', () => {
  const { a, b, ws, sse } = useInstances({ ANONYMOUS_CONNECTIONS: '20' });
  let service: string;

  beforeAll(async () => {
    service = await a.token('connector', { service: true });
  });

  const write = async (server: TestServer, changes: Change[], token = service) => {
    const result = await gql(server.url, WriteDataDocument, { changes }, token);
    expect(result.body.errors).toBeUndefined();
    return result.body.data?.writeData as number;
  };

  it('starts with an allData snapshot for changeId 0 and then sends live batches', async () => {
    const collection = unique('topics/topic');
    const last = await write(b, [
      { key: `${collection}:1`, value: { id: 1, title: 'one' } },
      { key: `${collection}:2`, value: { id: 2, title: 'two' } },
    ]);
    const user = await a.token(unique('u'));
    const stream = ws(a, user).subscribe(AutoupdateDocument, { changeId: 0 });
    const first = await nextBatch(stream);
    expect(first).toMatchObject({ allData: true, fromChangeId: 0 });
    expect(first.toChangeId).toBeGreaterThanOrEqual(last);
    expect(changedIn(first, collection)).toEqual([
      { id: 1, title: 'one' },
      { id: 2, title: 'two' },
    ]);

    const next = await write(b, [
      { key: `${collection}:1`, value: { id: 1, title: 'first' } },
      { key: `${collection}:1`, value: { id: 1, title: 'uno' } },
      { key: `${collection}:2`, value: null },
    ]);
    const live = await nextBatch(stream);
    expect(live).toMatchObject({
      allData: false,
      fromChangeId: first.toChangeId,
      toChangeId: next,
    });
    // Current values only: the last write of key 1 within the batch.
    expect(changedIn(live, collection)).toEqual([{ id: 1, title: 'uno' }]);
    expect(deletedIn(live, collection)).toEqual([2]);
  });

  it('resumes from toChangeId with exactly the changes written meanwhile, in order, once', async () => {
    const collection = unique('motions/motion');
    const user = await a.token(unique('u'));
    const first = ws(a, user);
    const stream = first.subscribe(AutoupdateDocument, { changeId: 0 });
    const snapshot = await nextBatch(stream);
    const n = await write(b, [{ key: `${collection}:0`, value: { id: 0 } }]);
    let resumeFrom = snapshot.toChangeId;
    while (resumeFrom < n) resumeFrom = (await nextBatch(stream)).toChangeId;
    await first.dispose();

    // 25 single-change calls on B while the subscriber is away...
    const ids: number[] = [];
    for (let i = 1; i <= 25; i++) {
      ids.push(await write(b, [{ key: `${collection}:${i}`, value: { id: i } }]));
    }
    const resumed = ws(a, user).subscribe(AutoupdateDocument, { changeId: resumeFrom });
    // ...and 25 more on B while it replays and after.
    const more = (async () => {
      for (let i = 26; i <= 50; i++) {
        ids.push(await write(b, [{ key: `${collection}:${i}`, value: { id: i } }]));
      }
    })();
    const seen: number[] = [];
    let to = resumeFrom;
    let from = resumeFrom;
    let batches = 0;
    while (seen.length < 50) {
      const batch = await nextBatch(resumed);
      expect(batch.allData).toBe(false);
      expect(batch.fromChangeId).toBe(from);
      expect(batch.toChangeId).toBeGreaterThanOrEqual(to);
      from = batch.toChangeId;
      to = batch.toChangeId;
      for (const element of changedIn(batch, collection)) seen.push(element['id'] as number);
      batches += 1;
    }
    await more;
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(to).toBe(ids[ids.length - 1]);
    expect(batches).toBeGreaterThanOrEqual(1);
    // Nothing repeated afterwards: the next batch is the marker.
    await write(b, [{ key: `${collection}:marker`, value: { id: 'marker' } }]);
    const marker = await nextBatch(resumed);
    expect(changedIn(marker, collection)).toEqual([{ id: 'marker' }]);
  });

  it('never skips a change id when two instances write concurrently', async () => {
    const collection = unique('load/item');
    const user = await b.token(unique('u'));
    const stream = ws(b, user).subscribe(AutoupdateDocument, {});
    const snapshot = await nextBatch(stream);
    const writes = Array.from({ length: 30 }, (_, i) =>
      write(i % 2 === 0 ? a : b, [
        { key: `${collection}:${i}a`, value: { i, part: 'a' } },
        { key: `${collection}:${i}b`, value: { i, part: 'b' } },
      ]),
    );
    const results = await Promise.all(writes);
    const last = Math.max(...results);
    const seen = new Set<string>();
    let to = snapshot.toChangeId;
    while (to < last) {
      const batch = await nextBatch(stream);
      expect(batch.fromChangeId).toBe(to);
      to = batch.toChangeId;
      for (const element of changedIn(batch, collection)) {
        const key = `${element['i']}${element['part']}`;
        expect(seen.has(key)).toBe(false);
        seen.add(key);
      }
    }
    expect(seen.size).toBe(60);
    // Consecutive ids per call: ranges of two ids that never interleave.
    expect(new Set(results).size).toBe(30);
  });

  it('hides elements by visibleTo and reports them as deleted when access is taken away', async () => {
    const collection = unique('secret/doc');
    const [owner, other] = [unique('owner'), unique('other')];
    const ownerStream = ws(a, await a.token(owner)).subscribe(AutoupdateDocument, {});
    const otherStream = sse(b, await b.token(other)).subscribe(AutoupdateDocument, {});
    await nextBatch(ownerStream);
    await nextBatch(otherStream);

    await write(a, [
      { key: `${collection}:7`, value: { id: 7, text: 'hush' }, visibleTo: [owner] },
    ]);
    expect(changedIn(await nextBatch(ownerStream), collection)).toEqual([{ id: 7, text: 'hush' }]);

    await write(a, [{ key: `${collection}:8`, value: { id: 8, text: 'public' } }]);
    // The other user's first batch is the public marker: it never saw element 7.
    const otherBatch = await nextBatch(otherStream);
    expect(changedIn(otherBatch, collection)).toEqual([{ id: 8, text: 'public' }]);
    expect(deletedIn(otherBatch, collection)).toEqual([]);
    expect(changedIn(await nextBatch(ownerStream), collection)).toEqual([
      { id: 8, text: 'public' },
    ]);

    await write(b, [
      { key: `${collection}:7`, value: { id: 7, text: 'moved' }, visibleTo: [other] },
    ]);
    const ownerLost = await nextBatch(ownerStream);
    expect(changedIn(ownerLost, collection)).toEqual([]);
    expect(deletedIn(ownerLost, collection)).toEqual([7]);
    expect(changedIn(await nextBatch(otherStream), collection)).toEqual([{ id: 7, text: 'moved' }]);

    // A fresh snapshot follows visibility too.
    const snapshot = await nextBatch(ws(b, await b.token(owner)).subscribe(AutoupdateDocument, {}));
    expect(changedIn(snapshot, collection)).toEqual([{ id: 8, text: 'public' }]);
  });

  it('delivers pushed events only to their access id, replayed and live, filtered by since', async () => {
    const [u1, u2] = [unique('e1'), unique('e2')];
    const pushed = await gql(
      b.url,
      PushEventsDocument,
      {
        events: [
          { accessId: u1, createdAt: 100, payload: { n: 1 } },
          { accessId: u2, createdAt: 100, payload: { n: 2 } },
          { accessId: u1, createdAt: 50, payload: { n: 3 } },
        ],
      },
      service,
    );
    expect(pushed.body.data?.pushEvents.accepted).toBe(3);
    const stream = ws(a, await a.token(u1)).subscribe(AutoupdateDocument, { since: 100 });
    const first = await nextBatch(stream);
    expect(first.events.map((e) => e.payload)).toEqual([{ n: 1 }]);
    expect(first.events[0]).toMatchObject({ accessId: u1, createdAt: 100 });

    await gql(
      b.url,
      PushEventsDocument,
      {
        events: [
          { accessId: u2, createdAt: 200, payload: { n: 4 } },
          { accessId: u1, createdAt: 99, payload: { n: 5 } },
          { accessId: u1, createdAt: 100, payload: { n: 6 } },
        ],
      },
      service,
    );
    const live = await nextBatch(stream);
    expect(live.events.map((e) => e.payload)).toEqual([{ n: 6 }]);
  });

  it('rejects non-service callers and malformed input without writing anything', async () => {
    const collection = unique('guarded/item');
    const userToken = await a.token(unique('u'));
    const codeOf = (r: { body: ExecutionResult }) => r.body.errors?.[0]?.extensions?.['code'];
    const good = { key: `${collection}:1`, value: { id: 1 } };

    expect(codeOf(await gql(a.url, WriteDataDocument, { changes: [good] }))).toBe(
      'UNAUTHENTICATED',
    );
    expect(codeOf(await gql(a.url, WriteDataDocument, { changes: [good] }, userToken))).toBe(
      'FORBIDDEN',
    );
    for (const bad of [
      [good, { key: 'no-colon', value: 1 }],
      [good, { key: `${collection}:`, value: 1 }],
      [good, { key: `${collection}:2 3`, value: 1 }],
      [good, { key: `${collection}:2`, value: 1, visibleTo: [''] }],
      [],
    ]) {
      expect(codeOf(await gql(a.url, WriteDataDocument, { changes: bad }, service))).toBe(
        'BAD_USER_INPUT',
      );
    }
    const events = [{ accessId: 'x', payload: 1 }];
    expect(codeOf(await gql(a.url, PushEventsDocument, { events }, userToken))).toBe('FORBIDDEN');
    expect(
      codeOf(
        await gql(
          a.url,
          PushEventsDocument,
          { events: [...events, { accessId: '', payload: 1 }] },
          service,
        ),
      ),
    ).toBe('BAD_USER_INPUT');
    const rejectedEvent = await gql(
      a.url,
      'mutation { pushEvents(events: [{accessId: "x", payload: 1}, {accessId: "y"}]) { accepted } }',
      {},
      service,
    );
    expect(rejectedEvent.status).toBe(400);

    // Nothing of the refused calls was written: a snapshot has no trace of the collection and
    // the events of "x" are not there either.
    const snapshot = await nextBatch(ws(b, await b.token('x')).subscribe(AutoupdateDocument, {}));
    expect(changedIn(snapshot, collection)).toEqual([]);
    expect(snapshot.events).toEqual([]);

    const anonymous = ws(a);
    const refused = await anonymous.subscribe(AutoupdateDocument, {}).next();
    expect(refused.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
    const negative = await ws(a, userToken).subscribe(AutoupdateDocument, { changeId: -1 }).next();
    expect(negative.errors?.[0]?.extensions?.['code']).toBe('BAD_USER_INPUT');
  });
});

describe('autoupdate retention', () => {
  const instance = useInstances({ AUTOUPDATE_RETENTION: '5' }, 1, { redis: false });
  const { a: server, ws } = instance;

  it('answers a changeId older than the kept changes with an allData snapshot', async () => {
    const service = await server.token('connector', { service: true });
    const user = await server.token('reader');
    let last = 0;
    for (let i = 1; i <= 10; i++) {
      const r = await gql(
        server.url,
        WriteDataDocument,
        { changes: [{ key: `kept/item:${i}`, value: { id: i } }] },
        service,
      );
      last = r.body.data?.writeData as number;
    }
    await server.app.services.changeLog.prune();
    const subscribe = (changeId: number) =>
      ws(server, user).subscribe(AutoupdateDocument, { changeId });

    const tooOld = await subscribe(2).next();
    expect(tooOld.data?.autoupdate).toMatchObject({
      allData: true,
      fromChangeId: 0,
      toChangeId: last,
    });
    expect(changedIn(tooOld.data?.autoupdate as Batch, 'kept/item')).toHaveLength(10);

    const recent = await subscribe(last - 5).next();
    expect(recent.data?.autoupdate).toMatchObject({ allData: false, fromChangeId: last - 5 });
    expect(changedIn(recent.data?.autoupdate as Batch, 'kept/item').map((e) => e['id'])).toEqual([
      6, 7, 8, 9, 10,
    ]);

    const beyond = await subscribe(last + 100).next();
    expect(beyond.data?.autoupdate).toMatchObject({ allData: true, toChangeId: last });
  });

  it('prunes by age, keeping changes younger than the retention', async () => {
    const byAge = await startServer({
      DATABASE_URL: instance.databaseUrl,
      AUTOUPDATE_RETENTION: '7d',
    });
    try {
      expect(await byAge.app.services.changeLog.prune()).toBe(0);
    } finally {
      await byAge.stop();
    }
  });
});
