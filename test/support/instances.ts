import { afterAll, beforeAll } from 'vitest';
import { startServer, type TestServer } from './app.ts';
import { sseClient, wsClient } from './clients.ts';
import { createTestDatabase } from './postgres.ts';
import { requireRedis } from './redis.ts';
import { type RedisCluster, startRedisCluster } from './redis-cluster.ts';

type Env = Record<string, string | undefined>;

/** Client factories whose clients are disposed after all tests of the suite. */
export interface Clients {
  /** A graphql-ws client of `server` (see `wsClient`), disposed afterAll. */
  ws(server: TestServer, token?: string, lazy?: boolean): ReturnType<typeof wsClient>;
  /** A graphql-sse client of `server` (see `sseClient`), disposed afterAll. */
  sse(server: TestServer, token?: string, singleConnection?: boolean): ReturnType<typeof sseClient>;
  /** Runs each cleanup afterAll (before the servers stop), e.g. to close a socket or a stream. */
  onCleanup(...cleanups: (() => void)[]): void;
}

/** Test servers sharing one fresh database (and one Redis prefix), with client factories. */
export interface Instances extends Clients {
  /** The first instance. Like every server handle here, usable before the servers started. */
  readonly a: TestServer;
  /** The second instance. */
  readonly b: TestServer;
  /** Every instance, in start order. */
  readonly servers: readonly TestServer[];
  /** DATABASE_URL of the shared database (once started). */
  readonly databaseUrl: string;
  /** The Redis Cluster the instances share, with `redis: 'cluster'` (once started). */
  readonly cluster: RedisCluster;
}

/** Cleanups and client factories; `run` runs (and forgets) the cleanups. */
function createClients(): Clients & { run(): void } {
  const cleanups: (() => void)[] = [];
  return {
    ws(server, token, lazy = true) {
      const c = wsClient(server.wsUrl, token, { lazy });
      cleanups.push(() => void c.dispose());
      return c;
    },
    sse(server, token, singleConnection = false) {
      const c = sseClient(server.url, token, { singleConnection });
      cleanups.push(() => c.dispose());
      return c;
    },
    onCleanup: (...more) => void cleanups.push(...more),
    run() {
      for (const cleanup of cleanups.splice(0)) cleanup();
    },
  };
}

/**
 * Client factories for a suite that starts its servers itself: registers an afterAll that
 * disposes the clients. Call it after the suite's own afterAll (hooks after tests run in reverse
 * order), so the clients close before the servers stop.
 */
export function useClients(): Clients {
  const clients = createClients();
  afterAll(() => clients.run());
  return { ws: clients.ws, sse: clients.sse, onCleanup: clients.onCleanup };
}

/**
 * A handle that reads every member from the server `get` returns, so suites can destructure
 * `{ a, b }` while declaring their tests, before beforeAll started the servers.
 */
function handle(get: () => TestServer | undefined, name: string): TestServer {
  return new Proxy({} as TestServer, {
    get(_target, key) {
      const server = get();
      if (!server) throw new Error(`test server ${name} is not started (use it in tests or hooks)`);
      return Reflect.get(server, key);
    },
  });
}

/**
 * Registers the hooks of a suite that runs `count` instances on one fresh database and, unless
 * `redis: false`, one Redis with a fresh prefix (how every feature is tested across instances);
 * with `redis: 'cluster'`, a Redis Cluster of its own (three masters with a replica each),
 * stopped after the servers.
 * beforeAll creates the database and starts the servers with `env` on top (a function gives
 * each instance its own settings); afterAll runs the cleanups and disposes the clients, stops
 * the servers and drops the database. Fails loudly when Postgres or Redis is missing.
 */
export function useInstances(
  env: Env | ((index: number) => Env) = {},
  count = 2,
  { redis = true }: { redis?: boolean | 'cluster' } = {},
): Instances {
  const clients = createClients();
  const started: TestServer[] = [];
  let databaseUrl: string | undefined;
  let dropDb: (() => Promise<void>) | undefined;
  let cluster: RedisCluster | undefined;

  beforeAll(async () => {
    const [db, shared] = await Promise.all([
      createTestDatabase(),
      redis === true ? requireRedis() : Promise.resolve(null),
    ]);
    databaseUrl = db.url;
    dropDb = db.drop;
    let base: Env = { DATABASE_URL: db.url };
    if (shared) base = { ...base, REDIS_URL: shared.url, REDIS_PREFIX: shared.prefix };
    if (redis === 'cluster') {
      cluster = await startRedisCluster();
      base = { ...base, REDIS_CLUSTER_NODES: cluster.seeds };
    }
    for (let i = 0; i < count; i++) {
      started.push(await startServer({ ...base, ...(typeof env === 'function' ? env(i) : env) }));
    }
  });

  afterAll(async () => {
    clients.run();
    await Promise.all(started.map((server) => server.stop()));
    await Promise.all([dropDb?.(), cluster?.stop()]);
  });

  const servers = Array.from({ length: count }, (_, i) =>
    handle(() => started[i], String.fromCharCode(65 + i)),
  );
  return {
    ws: clients.ws,
    sse: clients.sse,
    onCleanup: clients.onCleanup,
    a: servers[0] as TestServer,
    b: servers[1] ?? handle(() => undefined, 'B'),
    servers,
    get databaseUrl() {
      if (databaseUrl === undefined) throw new Error('the test database is not created yet');
      return databaseUrl;
    },
    // Read lazily, so suites can destructure it while declaring their tests.
    cluster: new Proxy({} as RedisCluster, {
      get(_target, key) {
        if (!cluster) throw new Error("no Redis Cluster started (use { redis: 'cluster' })");
        return Reflect.get(cluster, key);
      },
    }),
  };
}
