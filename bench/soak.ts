import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createClient } from 'graphql-ws';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { createTestDatabase } from '../test/support/postgres.ts';
import { type ServerProcess, spawnServer } from '../test/support/process.ts';
import { rssBytes } from './proc.ts';

/**
 * Soak run (not CI): `npm run soak -- --minutes 10 [--clients 40] [--warmup 20]`.
 *
 * Two instances on one Redis; clients connect and disconnect continuously (graphql-ws with
 * notify, chat and presence subscriptions), while publishes, chat messages and pings run. Every
 * 10 s it prints RSS per instance, open Redis pub/sub channels of the run's prefix, Redis
 * clients named switchboard:* (of every run on that Redis) and the event-loop lag (from /metrics). The baseline is taken after a warm-up; after
 * the load stops it checks that memory and Redis subscriptions return to it.
 */
const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    clients: { type: 'string', default: '40' },
    warmup: { type: 'string', default: '20' },
  },
});
const MINUTES = Number(values.minutes);
const CLIENTS = Number(values.clients);
const WARMUP_S = Number(values.warmup);
const REDIS_URL = process.env['SOAK_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
/** RSS may end this much above its baseline (allocator slack, JIT code) and still pass. */
const RSS_TOLERANCE = 1.25;

const key = randomBytes(24).toString('base64url');
const secret = new TextEncoder().encode(key);
const token = (sub: string, claims: Record<string, unknown> = {}) =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setExpirationTime('2h')
    .sign(secret);

interface Sample {
  at: number;
  rssMb: number[];
  channels: number;
  redisClients: number;
  lagMs: number[];
  connections: number;
}

const gql = async (url: string, query: string, variables: object, bearer: string) => {
  const res = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(10_000),
  });
  return (await res.json()) as { data?: Record<string, unknown>; errors?: { message: string }[] };
};

async function metricValue(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').pop()) : Number.NaN;
}

async function sample(
  servers: ServerProcess[],
  redis: Redis,
  prefix: string,
  start: number,
): Promise<Sample> {
  const [rss, channels, clientList, lag, connections] = await Promise.all([
    Promise.all(servers.map((s) => rssBytes(s.child.pid ?? 0))),
    redis.pubsub('CHANNELS', `${prefix}*`) as Promise<string[]>,
    redis.client('LIST') as Promise<string>,
    Promise.all(
      servers.map((s) => metricValue(s.url, 'switchboard_nodejs_eventloop_lag_p99_seconds')),
    ),
    Promise.all(servers.map((s) => metricValue(s.url, 'switchboard_connections'))),
  ]);
  return {
    at: Math.round((Date.now() - start) / 1000),
    rssMb: rss.map((b) => Math.round(b / 1e5) / 10),
    channels: channels.length,
    redisClients: clientList.split('\n').filter((l) => l.includes('switchboard:')).length,
    lagMs: lag.map((s) => Math.round(s * 10_000) / 10),
    connections: connections.reduce((a, b) => a + (Number.isNaN(b) ? 0 : b), 0),
  };
}

const print = (label: string, s: Sample) =>
  console.log(
    `${label.padEnd(9)} t=${String(s.at).padStart(4)}s rss=${s.rssMb.map((m) => `${m}MB`).join('/')} ` +
      `channels=${s.channels} switchboardRedisClients=${s.redisClients} lagP99=${s.lagMs.map((m) => `${m}ms`).join('/')} ` +
      `connections=${s.connections}`,
  );

async function main() {
  const db = await createTestDatabase();
  const prefix = `soak:${randomBytes(4).toString('hex')}:`;
  const env = {
    AUTH_TOKEN_KEY: key,
    DATABASE_URL: db.url,
    REDIS_URL,
    REDIS_PREFIX: prefix,
    LOG_LEVEL: 'info',
    GRAPHIQL: 'false',
    PING_MIN_INTERVAL_MS: '1',
    // Two publishing users at 50/s each: far above a person's rate, so the limit is lifted.
    RATE_LIMIT_PUBLISH: 'off',
  };
  const servers: ServerProcess[] = [];
  const redis = new Redis(REDIS_URL);
  const stopAll = async () => {
    await Promise.allSettled(servers.map((s) => s.stop()));
    redis.disconnect();
    await db.drop();
  };
  try {
    servers.push(await spawnServer(env), await spawnServer(env));
    const start = Date.now();
    const service = await token('soak-service', { scope: 'service' });
    const users = Array.from({ length: 30 }, (_, i) => `soak-${i}`);
    for (const userId of users) {
      await gql(
        servers[0]?.url ?? '',
        'mutation($u: ID!) { upsertUser(input: { userId: $u, group: "soak" }) { userId } }',
        { u: userId },
        service,
      );
    }
    const tokens = await Promise.all(users.map((u) => token(u, { group: 'soak' })));
    const pick = <T>(list: readonly T[]) => list[Math.floor(Math.random() * list.length)] as T;
    const server = () => pick(servers);

    // A publisher per instance, with its own notify channel.
    const publishers = await Promise.all(
      servers.map(async (s, i) => {
        const bearer = tokens[i] ?? '';
        const client = createClient({
          url: s.wsUrl,
          webSocketImpl: WebSocket,
          connectionParams: { authorization: `Bearer ${bearer}` },
        });
        const channelId = await new Promise<string>((resolve, reject) => {
          client.subscribe(
            { query: 'subscription { notify { ... on NotifyChannel { channelId } } }' },
            {
              next: (r) =>
                resolve(String((r.data?.['notify'] as { channelId?: string })?.channelId)),
              error: reject,
              complete: () => {},
            },
          );
        });
        return { client, channelId, bearer, url: s.url };
      }),
    );

    let running = true;
    const counts = { connects: 0, publishes: 0, chats: 0, pings: 0, errors: 0 };
    const failed = (error: unknown) => {
      counts.errors += 1;
      if (counts.errors <= 5) console.error('load error:', (error as Error).message ?? error);
    };

    // Churn: keep about CLIENTS clients, each living 0.5-3 s.
    const churn = async () => {
      while (running) {
        const s = server();
        const bearer = pick(tokens);
        const client = createClient({
          url: s.wsUrl,
          webSocketImpl: WebSocket,
          retryAttempts: 0,
          connectionParams: { authorization: `Bearer ${bearer}` },
        });
        const sink = { next: () => {}, error: () => {}, complete: () => {} };
        client.subscribe({ query: 'subscription { notify { __typename } }' }, sink);
        client.subscribe({ query: 'subscription { chat { __typename } }' }, sink);
        client.subscribe(
          { query: `subscription { presence(userId: "${pick(users)}") { userId } }` },
          sink,
        );
        counts.connects += 1;
        setTimeout(() => void client.dispose(), 500 + Math.random() * 2_500);
        await sleep(Math.max(5, 1_750 / CLIENTS));
      }
    };
    const every = async (ms: number, work: () => Promise<unknown>) => {
      while (running) {
        work().catch(failed);
        await sleep(ms);
      }
    };
    /** Starts churn, publishes, chat and pings; they run until `running` is false. */
    const startLoad = () => [
      churn(),
      every(20, async () => {
        const p = pick(publishers);
        const input = {
          channelId: p.channelId,
          name: 'soak',
          toAll: true,
          message: { at: Date.now() },
        };
        const r = await gql(
          p.url,
          'mutation($i: PublishInput!) { publish(input: $i) }',
          { i: input },
          p.bearer,
        );
        if (r.errors) throw new Error(r.errors[0]?.message);
        counts.publishes += 1;
      }),
      every(50, async () => {
        const from = Math.floor(Math.random() * users.length);
        const query = 'mutation($to: ID!) { sendChatMessage(to: $to, text: "soak") { id } }';
        const r = await gql(server().url, query, { to: pick(users) }, tokens[from] ?? '');
        if (r.errors) throw new Error(r.errors[0]?.message);
        counts.chats += 1;
      }),
      every(50, async () => {
        const r = await gql(
          server().url,
          'mutation { ping(status: ACTIVE) { userId } }',
          {},
          pick(tokens),
        );
        if (r.errors) throw new Error(r.errors[0]?.message);
        counts.pings += 1;
      }),
    ];
    const load = startLoad();

    const samples: Sample[] = [];
    const quiet = async (label: string) => {
      // Let closes, expiries and GC settle: wait for the connections to drain, then a little more.
      for (let i = 0; i < 30; i++) {
        const s = await sample(servers, redis, prefix, start);
        if (s.connections <= publishers.length) break;
        await sleep(1_000);
      }
      await sleep(5_000);
      const s = await sample(servers, redis, prefix, start);
      print(label, s);
      return s;
    };

    console.log(
      `soak: 2 instances, ~${CLIENTS} churning clients, warm-up ${WARMUP_S}s, then ${MINUTES} min`,
    );
    await sleep(WARMUP_S * 1000);
    running = false;
    await Promise.all(load);
    const baseline = await quiet('baseline');

    running = true;
    const again = startLoad();
    const end = Date.now() + MINUTES * 60_000;
    while (Date.now() < end) {
      await sleep(Math.min(10_000, end - Date.now()));
      const s = await sample(servers, redis, prefix, start);
      samples.push(s);
      print('load', s);
    }
    running = false;
    await Promise.all(again);
    const after = await quiet('after');

    const peak = samples.reduce((m, s) => Math.max(m, ...s.rssMb), 0);
    const maxLag = samples.reduce((m, s) => Math.max(m, ...s.lagMs), 0);
    console.log(
      `\nload: ${counts.connects} connects, ${counts.publishes} publishes, ${counts.chats} chat messages, ${counts.pings} pings, ${counts.errors} errors`,
    );
    console.log(`peak RSS ${peak} MB, max event-loop lag p99 ${maxLag} ms`);
    const rssOk = after.rssMb.every((m, i) => m <= (baseline.rssMb[i] ?? 0) * RSS_TOLERANCE);
    const channelsOk = after.channels <= baseline.channels;
    console.log(
      `memory back to baseline (within ${Math.round((RSS_TOLERANCE - 1) * 100)}%): ${rssOk ? 'yes' : 'NO'}`,
    );
    console.log(
      `Redis channels back to baseline (${baseline.channels}): ${channelsOk ? 'yes' : `NO (${after.channels})`}`,
    );
    for (const p of publishers) await p.client.dispose();
    process.exitCode =
      rssOk && channelsOk && servers.every((s) => s.child.exitCode === null) ? 0 : 1;
  } finally {
    await stopAll();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
