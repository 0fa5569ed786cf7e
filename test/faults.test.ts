import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../src/auth/index.ts';
import { createLogger } from '../src/logger.ts';
import {
  ApplauseDocument,
  AutoupdateDocument,
  ConnectionsDocument,
  NotifyDocument,
  PingDocument,
  PresenceDocument,
  PublishDocument,
  UpsertUserDocument,
  WriteDataDocument,
} from './generated/graphql.ts';
import { TEST_TOKEN_KEY } from './support/app.ts';
import { gql, nextMatching, WAIT_MS, warmUp, wsClient } from './support/clients.ts';
import { createTestDatabase } from './support/postgres.ts';
import { type ServerProcess, spawnServer } from './support/process.ts';
import { requireRedis } from './support/redis.ts';

const run = promisify(execFile);
const unique = (name: string) => `${name}-${randomBytes(4).toString('hex')}`;
const auth = createAuthenticator({ tokenKey: TEST_TOKEN_KEY, logger: createLogger('silent') });
const token = (sub: string, options: { group?: string; service?: boolean } = {}) =>
  auth.sign({ sub, ...options });

/** Cleanups run after the file, last registered first. */
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => {});
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns true (bounded). */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

const readyStatus = async (server: ServerProcess) =>
  (await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(4_000) })).status;

/** Stops a server process unless it already exited (also by a signal). */
const stopProcess = (server: ServerProcess) =>
  server.child.exitCode === null && server.child.signalCode === null
    ? server.stop('SIGKILL')
    : undefined;

async function spawn2(env: Record<string, string>): Promise<[ServerProcess, ServerProcess]> {
  // One after the other: the first applies the migrations.
  const first = await spawnServer(env);
  cleanups.push(() => stopProcess(first));
  const second = await spawnServer(env);
  cleanups.push(() => stopProcess(second));
  return [first, second];
}

const baseEnv = { AUTH_TOKEN_KEY: TEST_TOKEN_KEY, LOG_LEVEL: 'info', PING_MIN_INTERVAL_MS: '1' };

/** A redis-server of this test alone on `port`, killed and restarted at will. */
async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
  cleanups.push(() => child.kill('SIGKILL'));
  const client = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0 });
  client.on('error', () => {});
  await until('redis started', async () => {
    await client.connect().catch(() => {});
    return (await client.ping()) === 'PONG';
  });
  client.disconnect();
  return child;
}

const step = (what: string) => {
  if (process.env['FAULTS_DEBUG']) console.log(new Date().toISOString(), what);
};

describe('faults', { timeout: 60_000 }, () => {
  it('survives a Redis restart under two instances: fan-out and presence come back by themselves', async () => {
    const port = await freePort();
    let redis = await startRedis(port);
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const [a, b] = await spawn2({
      ...baseEnv,
      DATABASE_URL: db.url,
      REDIS_URL: `redis://127.0.0.1:${port}`,
      REDIS_PREFIX: `faults:${randomBytes(4).toString('hex')}:`,
    });
    step('redis: instances up');
    const [sender, receiver] = [unique('sender'), unique('receiver')];
    const [ts, tr] = [await token(sender), await token(receiver)];
    const senderClient = wsClient(a.wsUrl, ts);
    const receiverClient = wsClient(b.wsUrl, tr);
    cleanups.push(
      () => senderClient.dispose(),
      () => receiverClient.dispose(),
    );
    const own = senderClient.subscribe(NotifyDocument, {});
    const first = await own.next();
    const channelId = (first.data?.notify as { channelId?: string } | undefined)?.channelId ?? '';
    const inbox = receiverClient.subscribe(NotifyDocument, {});
    await inbox.next();
    const presence = receiverClient.subscribe(PresenceDocument, { userId: sender });
    let n = 0;
    const publish = () => {
      n += 1;
      return gql(
        a.url,
        PublishDocument,
        { input: { channelId, name: 'm', toUsers: [receiver], message: n } },
        ts,
      );
    };
    const arrived = (queue: typeof inbox) => (ms: number) =>
      nextMatching(queue, (r) => r.data?.notify.__typename === 'NotifyMessage', { timeoutMs: ms });
    expect(await warmUp(publish, arrived(inbox))).not.toBeNull();

    step('redis: warm');
    redis.kill('SIGKILL');
    await until('readyz reports the outage', async () => (await readyStatus(a)) === 503);
    const outage = await fetch(`${b.url}/readyz`);
    expect(outage.status).toBe(503);
    expect(JSON.stringify(await outage.json())).toMatch(/"redis":"down/);
    // Publishing fails while Redis is gone, with an error rather than a hang or a crash.
    const failed = await publish();
    expect(failed.body.errors?.length ?? 0).toBeGreaterThan(0);

    step('redis: outage seen');
    redis = await startRedis(port);
    await until(
      'readyz recovers',
      async () => (await readyStatus(a)) === 200 && (await readyStatus(b)) === 200,
    );
    step('redis: recovered');
    // The subscriptions made before the outage receive again: nothing was re-subscribed by hand.
    expect(await warmUp(publish, arrived(inbox))).not.toBeNull();
    const pinged = await warmUp(
      () => gql(a.url, PingDocument, { status: 'AWAY' }, ts),
      (ms) => nextMatching(presence, (r) => r.data?.presence.status === 'AWAY', { timeoutMs: ms }),
    );
    expect(pinged).not.toBeNull();
    expect([a.child.exitCode, b.child.exitCode]).toEqual([null, null]);
  });

  it('survives a Postgres restart: clear errors meanwhile, success after, no server restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sb-faults-pg-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    chmodSync(dir, 0o700);
    const { uid, gid } = await run('id', ['-u', 'postgres']).then(async ({ stdout }) => ({
      uid: Number(stdout.trim()),
      gid: Number((await run('id', ['-g', 'postgres'])).stdout.trim()),
    }));
    chownSync(dir, uid, gid);
    const bin = '/usr/lib/postgresql/15/bin';
    const asPostgres = (command: string, args: string[]) =>
      run('runuser', ['-u', 'postgres', '--', `${bin}/${command}`, ...args], { timeout: 30_000 });
    await asPostgres('initdb', ['-D', join(dir, 'data'), '-A', 'trust', '-U', 'postgres']);
    const port = await freePort();
    const pgCtl = (action: 'start' | 'stop') =>
      asPostgres('pg_ctl', [
        '-D',
        join(dir, 'data'),
        '-w',
        ...(action === 'start'
          ? ['-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`, '-l', join(dir, 'log')]
          : ['-m', 'fast']),
        action,
      ]);
    step('pg: initdb done');
    await pgCtl('start');
    step('pg: started');
    cleanups.push(() => pgCtl('stop'));
    const [server] = await Promise.all([
      spawnServer({ ...baseEnv, DATABASE_URL: `postgresql://postgres@127.0.0.1:${port}/postgres` }),
    ]);
    cleanups.push(() => stopProcess(server));
    const service = await token('svc', { service: true });
    const upsert = (userId: string) =>
      gql(server.url, UpsertUserDocument, { input: { userId, group: 'g' } }, service);
    expect((await upsert(unique('before'))).body.errors).toBeUndefined();

    step('pg: server up');
    await pgCtl('stop');
    step('pg: stopped');
    await until('readyz reports the outage', async () => (await readyStatus(server)) === 503);
    const during = await upsert(unique('during'));
    expect(during.body.errors?.[0]?.extensions?.['code']).toBe('INTERNAL_SERVER_ERROR');
    expect(during.body.errors?.[0]?.message).toMatch(/database|unavailable|unexpected/i);

    await pgCtl('start');
    await until('readyz recovers', async () => (await readyStatus(server)) === 200);
    let after = await upsert(unique('after'));
    for (let i = 0; i < 20 && after.body.errors; i++) after = await upsert(unique('after'));
    expect(after.body.errors).toBeUndefined();
    expect(server.child.exitCode).toBeNull();
  });

  it('one of two instances killed: clients resume on the other, missing nothing; its presence expires', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const shared = await requireRedis();
    const [a, b] = await spawn2({
      ...baseEnv,
      DATABASE_URL: db.url,
      REDIS_URL: shared.url,
      REDIS_PREFIX: shared.prefix,
      INSTANCE_TTL_MS: '1000',
    });
    step('kill: instances up');
    const service = await token('svc', { service: true });
    const group = unique('group');
    const [doomed, survivor] = [unique('doomed'), unique('survivor')];
    for (const userId of [doomed, survivor]) {
      await gql(b.url, UpsertUserDocument, { input: { userId, group } }, service);
    }
    const collection = unique('col').replaceAll('-', '_');
    const write = (id: number) =>
      gql(
        b.url,
        WriteDataDocument,
        { changes: [{ key: `${collection}:${id}`, value: { id } }] },
        service,
      );

    // On A: an autoupdate subscriber, and a user present in a meeting and in its chat group.
    // The reader is no chat user: its reconnect to B must not count as the doomed user's.
    const reader = unique('reader');
    const readerOnA = wsClient(a.wsUrl, await token(reader));
    const onA = wsClient(a.wsUrl, await token(doomed, { group }));
    cleanups.push(
      () => onA.dispose(),
      () => readerOnA.dispose(),
    );
    const feed = readerOnA.subscribe(AutoupdateDocument, {});
    let last = (await feed.next()).data?.autoupdate.toChangeId ?? 0;
    const meetingId = String(Math.floor(Math.random() * 1e9));
    const applauseOnA = onA.subscribe(ApplauseDocument, { meetingId });
    await applauseOnA.next();
    await write(1);
    const live = await nextMatching(feed, (r) =>
      JSON.stringify(r.data?.autoupdate.changed ?? {}).includes(collection),
    );
    last = live.data?.autoupdate.toChangeId ?? last;

    // On B: who is present, seen by another user.
    const onB = wsClient(b.wsUrl, await token(survivor, { group }));
    cleanups.push(() => onB.dispose());
    const watch = onB.subscribe(ApplauseDocument, { meetingId });
    await nextMatching(watch, (r) => r.data?.applause.presentUsers === 2);
    const ts = await token(survivor, { group });
    const doomedActive = async () => {
      const states = (await gql(b.url, ConnectionsDocument, {}, ts)).body.data?.connections ?? [];
      return states.find((s) => s.userId === doomed)?.active;
    };
    await until('the doomed user shows as connected', async () => (await doomedActive()) === true);

    step('kill: ready');
    await a.stop('SIGKILL');
    // Written while the subscriber is cut off.
    for (let id = 2; id <= 4; id++) expect((await write(id)).body.errors).toBeUndefined();

    const resumed = wsClient(b.wsUrl, await token(reader));
    cleanups.push(() => resumed.dispose());
    const again = resumed.subscribe(AutoupdateDocument, { changeId: last });
    const seen = new Set<number>();
    const deadline = Date.now() + WAIT_MS * 2;
    while (seen.size < 3 && Date.now() < deadline) {
      const batch = (await again.next()).data?.autoupdate;
      expect(batch?.fromChangeId).toBeGreaterThanOrEqual(last);
      const changed = (batch?.changed as Record<string, { id: number }[]> | undefined)?.[
        collection
      ];
      for (const element of changed ?? []) seen.add(element.id);
    }
    expect([...seen].sort()).toEqual([2, 3, 4]);

    // The dead instance's entries expire: presentUsers drops, the user shows as gone.
    await nextMatching(watch, (r) => r.data?.applause.presentUsers === 1, { timeoutMs: 10_000 });
    await until('the doomed user shows as gone', async () => (await doomedActive()) === false);
    expect(b.child.exitCode).toBeNull();
  });
});
