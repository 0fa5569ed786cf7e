import { randomBytes, randomInt } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ApplauseDocument,
  type ApplauseSubscription,
  ConfigureMeetingDocument,
  LastSeenDocument,
  NotifyDocument,
  PingDocument,
  SendApplauseDocument,
} from './generated/graphql.ts';
import { startServer, type TestServer } from './support/app.ts';
import { gql, nextMatching, type ResultQueue, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { readJsonLines } from './support/json-lines.ts';
import { createTestDatabase } from './support/postgres.ts';
import { requireRedis } from './support/redis.ts';

type ApplauseQueue = ResultQueue<ExecutionResult<ApplauseSubscription>>;

const uniqueMeeting = () => String(randomInt(1_000_000, 2_000_000_000));
/** Bound of the waits of the storm tests: hundreds of calls at once on a busy CI machine. */
const STORM_WAIT_MS = 20_000;
const codeOf = (result: ExecutionResult<unknown>) => result.errors?.[0]?.extensions?.['code'];

/** Resolves when `register` calls back, or rejects after `timeoutMs` (a bounded wait). */
function awaitCallback(register: (done: () => void) => () => void, timeoutMs = WAIT_MS) {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`no callback within ${timeoutMs} ms`));
    }, timeoutMs);
    const stop = register(() => {
      clearTimeout(timer);
      stop();
      resolve();
    });
  });
}

describe('applause storms across two instances on one Redis', () => {
  // A long window: nothing expires while the test runs, so the level must be exact. Four places
  // for operations on each instance: most of a storm's sends wait their turn, and none is lost.
  const { a, b, ws, onCleanup } = useInstances({
    APPLAUSE_INTERVAL_MS: '100',
    APPLAUSE_WINDOW_S: '120',
    MAX_OPERATIONS_IN_FLIGHT: '4',
  });

  it('counts every distinct user once: no applause counted twice or lost', async () => {
    const meetingId = uniqueMeeting();
    const observers = await Promise.all(
      [a, b].map(async (server, i) => {
        const queue: ApplauseQueue = ws(server, await server.token(`obs-${i}`)).subscribe(
          ApplauseDocument,
          { meetingId },
        );
        expect((await queue.next()).data?.applause.level).toBe(0);
        return queue;
      }),
    );
    // 120 users on open graphql-ws sockets, half on each instance; each sends three times, the
    // last one through the other instance over HTTP.
    const users = Array.from({ length: 120 }, (_, i) => `storm-${meetingId}-${i}`);
    const tokens = await Promise.all(users.map((user) => a.token(user)));
    const clients = tokens.map((token, i) => ws(i % 2 ? b : a, token));
    const viaSocket = (i: number) => {
      const queue = clients[i]?.subscribe(SendApplauseDocument, { meetingId });
      if (!queue) throw new Error('no client');
      return queue.next(STORM_WAIT_MS);
    };
    const results = await Promise.all([
      ...users.map((_, i) => viaSocket(i)),
      ...users.map((_, i) => viaSocket(i)),
      ...users.map((_, i) =>
        gql(i % 2 ? a.url : b.url, SendApplauseDocument, { meetingId }, tokens[i]).then(
          (r) => r.body,
        ),
      ),
    ]);
    for (const result of results) expect(result).toEqual({ data: { sendApplause: true } });

    for (const observer of observers) {
      const seen: number[] = [];
      await nextMatching(
        observer,
        (result) => {
          expect(result.errors).toBeUndefined();
          seen.push(result.data?.applause.level ?? -1);
          return result.data?.applause.level === users.length;
        },
        { timeoutMs: STORM_WAIT_MS },
      );
      // Never above the number of distinct users on the way up.
      expect(Math.max(...seen)).toBe(users.length);
    }
    // And it stays there: the next recomputations on both instances give the same level.
    const [check] = await Promise.all([
      gql(a.url, SendApplauseDocument, { meetingId }, tokens[0]),
      gql(b.url, SendApplauseDocument, { meetingId }, tokens[1]),
    ]);
    expect(check.body.errors).toBeUndefined();
    const more = ws(b, await b.token('obs-late')).subscribe(ApplauseDocument, { meetingId });
    expect((await more.next()).data?.applause.level).toBe(users.length);
    // Nothing is left waiting for a place.
    for (const server of [a, b]) {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      expect(text).toMatch(/^switchboard_operations_waiting 0$/m);
    }
  });

  it('recomputes many meetings in one pass: each subscriber sees its own meeting', async () => {
    const meetings = Array.from({ length: 40 }, () => uniqueMeeting());
    const watchers = await Promise.all(
      meetings.map(async (meetingId, i) => {
        const server = i % 2 ? b : a;
        const queue: ApplauseQueue = ws(server, await server.token(`watch-${meetingId}`)).subscribe(
          ApplauseDocument,
          { meetingId },
        );
        expect((await queue.next()).data?.applause.level).toBe(0);
        return queue;
      }),
    );
    // Meeting i gets i % 5 distinct senders.
    await Promise.all(
      meetings.flatMap((meetingId, i) =>
        Array.from({ length: i % 5 }, async (_, j) => {
          const token = await a.token(`sender-${j}`);
          const sent = await gql(
            (i + j) % 2 ? a.url : b.url,
            SendApplauseDocument,
            { meetingId },
            token,
          );
          expect(sent.body.errors).toBeUndefined();
        }),
      ),
    );
    await Promise.all(
      // (Meetings without senders stay at their first event, level 0.)
      watchers.map((queue, i) =>
        i % 5 === 0
          ? Promise.resolve()
          : nextMatching(queue, (result) => {
              const level = result.data?.applause.level ?? -1;
              expect(level).toBeLessThanOrEqual(i % 5);
              return level === i % 5;
            }),
      ),
    );
  });

  it('refuses sends over RATE_LIMIT_APPLAUSE in the same step and counts nothing then', async () => {
    const meetingId = uniqueMeeting();
    const token = await a.token(`limited-${meetingId}`);
    const client = ws(a, token);
    // Default 50 per 10 s: 60 sends, some of them on the other instance, share one counter.
    const sends = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        i % 3 === 0
          ? gql(b.url, SendApplauseDocument, { meetingId }, token).then((r) => r.body)
          : client.subscribe(SendApplauseDocument, { meetingId }).next(),
      ),
    );
    const codes = sends.map((r) => codeOf(r) ?? 'ok');
    expect(codes.filter((c) => c === 'ok')).toHaveLength(50);
    expect(codes.filter((c) => c === 'RATE_LIMITED')).toHaveLength(10);
    const limited = sends.find((r) => codeOf(r) === 'RATE_LIMITED');
    expect(limited?.errors?.[0]?.extensions?.['retryAfterMs']).toBeGreaterThan(0);
  });

  it('follows configureMeeting on the other instance: its cached member list changes', async () => {
    const meetingId = uniqueMeeting();
    const service = await a.token('svc', { service: true });
    const [x, y] = await Promise.all([b.token(`x-${meetingId}`), b.token(`y-${meetingId}`)]);
    const configure = (memberIds: string[]) =>
      gql(a.url, ConfigureMeetingDocument, { input: { id: meetingId, memberIds } }, service);
    expect((await configure([`x-${meetingId}`])).body.errors).toBeUndefined();
    // B reads the meeting once and caches it: x is admitted, y is not.
    expect((await gql(b.url, SendApplauseDocument, { meetingId }, x)).body.errors).toBeUndefined();
    expect(codeOf((await gql(b.url, SendApplauseDocument, { meetingId }, y)).body)).toBe(
      'FORBIDDEN',
    );

    // A swaps the members; B hears of it through the meeting event.
    const changed = awaitCallback((done) =>
      b.app.services.meetings.onMembersChanged(meetingId, done),
    );
    expect((await configure([`y-${meetingId}`])).body.errors).toBeUndefined();
    await changed;
    expect(codeOf((await gql(b.url, SendApplauseDocument, { meetingId }, x)).body)).toBe(
      'FORBIDDEN',
    );
    expect((await gql(b.url, SendApplauseDocument, { meetingId }, y)).body.errors).toBeUndefined();
    // Opening the meeting again admits both.
    const opened = awaitCallback((done) =>
      b.app.services.meetings.onMembersChanged(meetingId, done),
    );
    await gql(
      a.url,
      ConfigureMeetingDocument,
      { input: { id: meetingId, memberIds: null } },
      service,
    );
    await opened;
    expect((await gql(b.url, SendApplauseDocument, { meetingId }, x)).body.errors).toBeUndefined();
  });

  it('ends the streams of a removed member on every instance; presentUsers drops them', async () => {
    const meetingId = uniqueMeeting();
    const service = await a.token('svc', { service: true });
    // Integer user ids: the ICC streams speak OpenSlides' integer ids.
    const stay = String(randomInt(1_000_000, 2_000_000));
    const leave = String(randomInt(2_000_001, 3_000_000));
    const configure = (memberIds: string[]) =>
      gql(a.url, ConfigureMeetingDocument, { input: { id: meetingId, memberIds } }, service);
    expect((await configure([stay, leave])).body.errors).toBeUndefined();
    const [stayToken, leaveToken] = await Promise.all([a.token(stay), a.token(leave)]);

    const observer = ws(a, stayToken).subscribe(ApplauseDocument, { meetingId });
    expect((await observer.next()).data?.applause.presentUsers).toBe(1);
    // The member who leaves holds streams on both instances, over GraphQL and the ICC shim.
    const leaving = ws(b, leaveToken);
    const applauseOnB = leaving.subscribe(ApplauseDocument, { meetingId });
    expect((await applauseOnB.next()).data?.applause).toBeDefined();
    const notifyOnA = ws(a, leaveToken).subscribe(NotifyDocument, { meetingId });
    expect((await notifyOnA.next()).data?.notify.__typename).toBe('NotifyChannel');
    const auth = { authorization: `Bearer ${leaveToken}` };
    const iccApplause = await readJsonLines(
      `${b.url}/system/icc/applause?meeting_id=${meetingId}`,
      auth,
    );
    const iccNotify = await readJsonLines(
      `${a.url}/system/icc/notify?meeting_id=${meetingId}`,
      auth,
    );
    onCleanup(iccApplause.close, iccNotify.close);
    expect(await iccApplause.lines.next()).toMatchObject({ level: 0 });
    expect(await iccNotify.lines.next()).toEqual({ channel_id: expect.any(String) });
    await nextMatching(observer, (r) => r.data?.applause.presentUsers === 2);

    expect((await configure([stay])).body.errors).toBeUndefined();
    for (const stream of [applauseOnB, notifyOnA]) {
      const last = await stream.next();
      expect(codeOf(last)).toBe('FORBIDDEN');
      await stream.waitForEnd();
    }
    await iccApplause.lines.waitForEnd();
    await iccNotify.lines.waitForEnd();
    await nextMatching(observer, (r) => r.data?.applause.presentUsers === 1);
    // The remaining member keeps its stream; the removed one cannot come back.
    const again = leaving.subscribe(ApplauseDocument, { meetingId });
    expect(codeOf(await again.next())).toBe('FORBIDDEN');
  });
});

describe('presence pings written to Postgres in batches', () => {
  let databaseUrl = '';
  let drop: (() => Promise<void>) | undefined;
  const servers: TestServer[] = [];

  beforeAll(async () => {
    const db = await createTestDatabase();
    databaseUrl = db.url;
    drop = db.drop;
  });
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await drop?.();
  });

  const start = async (flushMs: string) => {
    const redis = await requireRedis();
    const server = await startServer({
      DATABASE_URL: databaseUrl,
      REDIS_URL: redis.url,
      // A fresh prefix per start: after a restart only Postgres knows the pings.
      REDIS_PREFIX: redis.prefix,
      PING_MIN_INTERVAL_MS: '50',
      PRESENCE_FLUSH_MS: flushMs,
    });
    servers.push(server);
    return server;
  };

  const storedRows = async (users: string[]) => {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ user_id: string }>(
        'SELECT user_id FROM presence_pings WHERE user_id = ANY($1)',
        [users],
      );
      return rows.map((row) => row.user_id).sort();
    } finally {
      await client.end();
    }
  };

  it('keeps lastSeen right across a restart: pending pings are written on shutdown', async () => {
    // No flush falls within the test: only the shutdown writes the rows.
    const first = await start('600000');
    const users = Array.from({ length: 5 }, () => `batch-${randomBytes(4).toString('hex')}`);
    const tokens = await Promise.all(users.map((user) => first.token(user)));
    const pinged = await Promise.all(
      tokens.map((token) => gql(first.url, PingDocument, { status: 'AWAY' }, token)),
    );
    // The newest ping of each user is what must survive: ping once more after the interval.
    const last = await Promise.all(
      tokens.map(async (token, i) => {
        const before = pinged[i]?.body.data?.ping.time;
        for (let attempt = 0; attempt < 100; attempt++) {
          const result = await gql(first.url, PingDocument, { status: 'DO_NOT_DISTURB' }, token);
          const ping = result.body.data?.ping;
          if (ping?.status === 'DO_NOT_DISTURB' && ping.time !== before) return ping;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        throw new Error('the second ping was never accepted');
      }),
    );
    // Batched: nothing is in Postgres before the flush.
    expect(await storedRows(users)).toEqual([]);
    await first.stop();
    expect(await storedRows(users)).toEqual([...users].sort());

    const second = await start('1000');
    for (const [i, user] of users.entries()) {
      const seen = await gql(second.url, LastSeenDocument, { userId: user }, tokens[i]);
      expect(seen.body.data?.lastSeen).toEqual({ ...last[i], online: expect.any(Boolean) });
    }
  });

  it('writes them within the flush interval while running', async () => {
    const server = await start('50');
    const user = `flush-${randomBytes(4).toString('hex')}`;
    const token = await server.token(user);
    const written = awaitCallback((done) => {
      // The flush after this ping is what the test waits for (bounded).
      const stop = setInterval(() => {
        void storedRows([user]).then((rows) => rows.length === 1 && done());
      }, 25);
      return () => clearInterval(stop);
    });
    expect((await gql(server.url, PingDocument, {}, token)).body.errors).toBeUndefined();
    await written;
  });
});
