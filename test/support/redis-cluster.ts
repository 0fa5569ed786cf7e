import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A node of a test cluster: its port and process (null once stopped). */
export interface ClusterNode {
  readonly port: number;
  process: ChildProcess | null;
}

/** A Redis Cluster of real `redis-server` processes, for tests and the bench. */
export interface RedisCluster {
  readonly nodes: readonly ClusterNode[];
  /** `127.0.0.1:port,...` of every node, as REDIS_CLUSTER_NODES takes it. */
  readonly seeds: string;
  /** Runs `redis-cli -p <port> <args>` and resolves its output. */
  cli(port: number, ...args: string[]): Promise<string>;
  /** Ports of the nodes that are masters now (asked of a live node). */
  masters(): Promise<number[]>;
  /** Kills a node at once (SIGKILL), as a crashed machine would go. */
  kill(port: number): Promise<void>;
  /** Resolves once every slot is served again (cluster_state:ok on every live node); bounded. */
  waitOk(timeoutMs?: number): Promise<void>;
  /** Stops every node and deletes its files. */
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 whose cluster bus port (port + 10000) is free too. */
async function freeClusterPort(): Promise<number> {
  const listen = (port: number) =>
    new Promise<number | null>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(null));
      server.listen(port, '127.0.0.1', () => {
        const { port: bound } = server.address() as { port: number };
        server.close(() => resolve(bound));
      });
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    // The bus port must stay below 65536.
    const port = 20_000 + Math.floor(Math.random() * 30_000);
    if ((await listen(port)) !== null && (await listen(port + 10_000)) !== null) return port;
  }
  throw new Error('no free port pair for a Redis Cluster node');
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what} within ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ''}`);
}

/**
 * Starts `masters * (1 + replicasPerMaster)` cluster nodes on free ports (nothing kept on disk
 * but the cluster config in a temp dir), creates the cluster with `redis-cli --cluster create`
 * and resolves once it reports cluster_state:ok. Fails loudly when redis-server is missing.
 * Call `stop()` at the end, also on failure (a failed start stops what it started).
 */
export async function startRedisCluster({
  masters = 3,
  replicasPerMaster = 1,
  nodeTimeoutMs = 2_000,
} = {}): Promise<RedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'sb-cluster-'));
  const nodes: ClusterNode[] = [];
  const cli = async (port: number, ...args: string[]) =>
    (await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args])).stdout;
  const stop = async () => {
    await Promise.all(
      nodes.map(async (node) => {
        const child = node.process;
        node.process = null;
        if (!child || child.exitCode !== null) return;
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
      }),
    );
    await rm(dir, { recursive: true, force: true });
  };
  const live = () => nodes.filter((node) => node.process !== null);
  const cluster: RedisCluster = {
    nodes,
    get seeds() {
      return nodes.map((node) => `127.0.0.1:${node.port}`).join(',');
    },
    cli,
    async masters() {
      const node = live()[0];
      if (!node) throw new Error('no live cluster node');
      return (await cli(node.port, 'cluster', 'nodes'))
        .split('\n')
        .filter((line) => /\bmaster\b/.test(line) && !/\bfail\b/.test(line))
        .map((line) => Number(/:(\d+)@/.exec(line)?.[1]));
    },
    async kill(port) {
      const node = nodes.find((each) => each.port === port);
      const child = node?.process;
      if (!node || !child) throw new Error(`no live cluster node on port ${port}`);
      node.process = null;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
    async waitOk(timeoutMs = 20_000) {
      await waitFor(
        async () => {
          const states = await Promise.all(live().map((node) => cli(node.port, 'cluster', 'info')));
          return states.every((info) => info.includes('cluster_state:ok'));
        },
        timeoutMs,
        'the Redis Cluster did not reach cluster_state:ok',
      );
    },
    stop,
  };
  try {
    const count = masters * (1 + replicasPerMaster);
    for (let i = 0; i < count; i++) {
      const port = await freeClusterPort();
      const child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          '--cluster-node-timeout',
          String(nodeTimeoutMs),
          '--dir',
          dir,
          '--save',
          '',
          '--appendonly',
          'no',
        ],
        { stdio: 'ignore' },
      );
      nodes.push({ port, process: child });
      await new Promise<void>((resolve, reject) => {
        child.once('error', (error) =>
          reject(new Error(`redis-server could not start (is Redis installed?): ${error.message}`)),
        );
        child.once('spawn', () => resolve());
      });
    }
    for (const node of nodes) {
      await waitFor(
        async () => (await cli(node.port, 'ping')).trim() === 'PONG',
        10_000,
        `cluster node ${node.port} did not answer`,
      );
    }
    await run('redis-cli', [
      '--cluster',
      'create',
      ...nodes.map((node) => `127.0.0.1:${node.port}`),
      '--cluster-replicas',
      String(replicasPerMaster),
      '--cluster-yes',
    ]);
    await cluster.waitOk();
    // Replicas report ok before they finished syncing; failover tests need them in sync.
    await waitFor(
      async () => {
        const infos = await Promise.all(nodes.map((node) => cli(node.port, 'info', 'replication')));
        return infos.every(
          (info) => info.includes('role:master') || info.includes('master_link_status:up'),
        );
      },
      20_000,
      'the cluster replicas did not sync',
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return cluster;
}
