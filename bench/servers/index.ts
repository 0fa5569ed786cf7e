import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import pg from 'pg';
import { type ChildServer, REPO_ROOT as ROOT, spawnPinned } from '../child.ts';

/** The CPU every server under test runs on; the load generator takes the other one. */
export const SERVER_CORE = 0;

/** A server configuration under test: one or more processes behind the same notify topic. */
export interface ServerUnderTest {
  name: string;
  /** Processes (CPU, RSS); subscribers are spread over their URLs in this order. */
  processes: ChildServer[];
  /** A bearer token for a user (reference servers accept anything). */
  token(userId: string): Promise<string>;
  /** Stops every process and removes what the configuration created (database, Redis keys). */
  stop(): Promise<void>;
}

const listeningUrl = (line: string): string | null => {
  try {
    const parsed = JSON.parse(line) as { msg?: unknown; url?: unknown };
    const listening = parsed.msg === 'listening' || parsed.msg === 'switchboard listening';
    return listening && typeof parsed.url === 'string' ? parsed.url : null;
  } catch {
    return null;
  }
};

/** Only what node needs: no setting of the harness' environment leaks into a server. */
function baseEnv(): NodeJS.ProcessEnv {
  const { PATH, HOME, LANG, TMPDIR } = process.env;
  return { PATH, HOME, LANG, TMPDIR };
}

const anyToken = () => Promise.resolve('bench');

/** Where the servers are compiled to (bench/tsconfig.json): they run as plain JavaScript. */
const BUILD = join(ROOT, 'node_modules/.cache/switchboard-bench');
let compiled = false;

/**
 * Compiles Switchboard and the reference servers with tsc once per run, so every server runs as
 * plain JavaScript, as the production image does (`npm run build`). Under tsx every function
 * gets its name set at creation (esbuild's keepNames), which costs each closure a property
 * backing store: about 3 KiB per subscribed connection here, and skewed comparisons.
 */
export function compileServers(): void {
  if (compiled) return;
  execFileSync(
    process.execPath,
    [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'bench/tsconfig.json'],
    {
      cwd: ROOT,
      stdio: 'inherit',
    },
  );
  mkdirSync(BUILD, { recursive: true });
  // The output lives under node_modules, outside the package scope of the root package.json.
  writeFileSync(join(BUILD, 'package.json'), '{"type":"module"}\n');
  compiled = true;
}

/** Starts one of the reference servers in bench/servers/ (raw, baseline, yoga or floor). */
export async function startReference(
  kind: 'raw' | 'baseline' | 'yoga' | 'floor',
  env: NodeJS.ProcessEnv = {},
): Promise<ServerUnderTest> {
  const server = await spawnPinned({
    name: kind,
    core: SERVER_CORE,
    args: [join(BUILD, `bench/servers/${kind}-server.js`)],
    env: { ...baseEnv(), NODE_ENV: 'production', ...env },
    readyUrl: listeningUrl,
  });
  return { name: kind, processes: [server], token: anyToken, stop: () => server.stop() };
}

/** The Postgres server the bench creates its databases on. */
const POSTGRES_URL =
  process.env['BENCH_POSTGRES_URL'] ??
  process.env['TEST_POSTGRES_URL'] ??
  'postgresql://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env['BENCH_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(
      `Postgres is not reachable at ${POSTGRES_URL} (set BENCH_POSTGRES_URL): ${(error as Error).message}`,
    );
  }
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function createDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `switchboard_bench_${process.pid}_${randomBytes(4).toString('hex')}`;
  await adminQuery(`CREATE DATABASE "${name}"`);
  const url = new URL(POSTGRES_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => adminQuery(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`),
  };
}

function redisClient(): Redis {
  return new Redis(REDIS_URL, {
    lazyConnect: true,
    connectTimeout: 2_000,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
}

async function requireRedis(): Promise<void> {
  const client = redisClient();
  try {
    await client.connect();
    await client.ping();
  } catch (error) {
    throw new Error(`Redis is not reachable at ${REDIS_URL}: ${(error as Error).message}`);
  } finally {
    client.disconnect();
  }
}

/** Deletes every key under `prefix` (membership entries the instances left behind). */
async function deleteRedisKeys(prefix: string): Promise<void> {
  const client = redisClient();
  try {
    await client.connect();
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      if (keys.length > 0) await client.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
}

/** Runs every step, even when one fails; throws the first failure afterwards. */
async function runAll(steps: (() => Promise<void>)[]): Promise<void> {
  const results = await Promise.allSettled(steps.map((step) => step()));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * Starts Switchboard (compiled `src/main.ts`, see `compileServers`) on a fresh database: one instance with
 * in-memory pub/sub, or `instances` of them sharing that database and one Redis prefix (on the
 * bench Redis, or on a Redis Cluster with `redisCluster`). Tokens
 * are HS256 with a random AUTH_TOKEN_KEY, claims `sub` and `exp` (one hour).
 */
export async function startSwitchboard(
  name: string,
  options: {
    instances: number;
    logLevel: string;
    /** Use Redis with one instance too (two or more always do). */
    redis?: boolean;
    /**
     * REDIS_CLUSTER_NODES (`host:port,...`) of a Redis Cluster the caller started, used instead
     * of the bench Redis even with one instance; its keys go away with the cluster.
     */
    redisCluster?: string;
    /** More settings for every instance. */
    env?: NodeJS.ProcessEnv;
  },
): Promise<ServerUnderTest & { redisPrefix: string | null }> {
  const key = randomBytes(24).toString('base64url');
  const secret = new TextEncoder().encode(key);
  const redisPrefix = `switchboard-bench:${randomBytes(6).toString('hex')}:`;
  const cluster = options.redisCluster ?? null;
  const useRedis = cluster === null && (options.instances > 1 || options.redis === true);
  if (useRedis) await requireRedis();
  const database = await createDatabase();
  const processes: ChildServer[] = [];
  const stop = async () => {
    try {
      await runAll(processes.map((p) => () => p.stop()));
    } finally {
      await runAll([database.drop, ...(useRedis ? [() => deleteRedisKeys(redisPrefix)] : [])]);
    }
  };
  try {
    // One after the other: the first applies the migrations.
    for (let i = 0; i < options.instances; i++) {
      processes.push(
        await spawnPinned({
          name: `${name}#${i + 1}`,
          core: SERVER_CORE,
          args: [join(BUILD, 'src/main.js')],
          env: {
            ...baseEnv(),
            NODE_ENV: 'production',
            PORT: '0',
            HOST: '127.0.0.1',
            LOG_LEVEL: options.logLevel,
            AUTH_TOKEN_KEY: key,
            DATABASE_URL: database.url,
            SHUTDOWN_TIMEOUT_MS: '3000',
            GRAPHIQL: 'false',
            // The publisher is one user; its per-user rate limit would throttle the fan-out.
            RATE_LIMIT_PUBLISH: 'off',
            // The 15 000-subscriber phase: 50 connections for each of 300 users, and more.
            MAX_CONNECTIONS: '40000',
            MAX_CONNECTIONS_PER_USER: '1000',
            ...(useRedis ? { REDIS_URL, REDIS_PREFIX: redisPrefix } : {}),
            ...(cluster ? { REDIS_CLUSTER_NODES: cluster, REDIS_PREFIX: redisPrefix } : {}),
            ...options.env,
          },
          readyUrl: listeningUrl,
        }),
      );
    }
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }
  const tokens = new Map<string, Promise<string>>();
  const token = (userId: string) => {
    let signed = tokens.get(userId);
    if (!signed) {
      signed = new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(userId)
        .setExpirationTime('1h')
        .sign(secret);
      tokens.set(userId, signed);
    }
    return signed;
  };
  return {
    name,
    processes,
    token,
    stop,
    redisPrefix: useRedis || cluster ? redisPrefix : null,
  };
}

/** REDIS_URL of the bench (BENCH_REDIS_URL), for the floor server. */
export const BENCH_REDIS_URL = REDIS_URL;
export { deleteRedisKeys };
