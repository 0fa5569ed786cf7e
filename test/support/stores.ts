import { afterAll } from 'vitest';
import { createLogger } from '../../src/logger.ts';
import { connectRedis, type RedisClients, type RedisTarget } from '../../src/pubsub/index.ts';
import { requireRedis } from './redis.ts';
import { type RedisCluster, startRedisCluster } from './redis-cluster.ts';

/** What a contract suite runs on: memory (one instance), one Redis, or a Redis Cluster. */
export type BackendName = 'memory' | 'redis' | 'cluster';

/** One connection to a backend, with a fresh key prefix. */
export interface Backend {
  readonly name: BackendName;
  /** Null for memory. */
  readonly redis: RedisClients | null;
  /** Where the Redis is, to open more connections (another "instance"); null for memory. */
  readonly target: RedisTarget | null;
  /** A fresh key prefix, so concurrent tests never see each other's keys. */
  readonly prefix: string;
  /** Another connection to the same Redis (as a second instance has); null for memory. */
  connectAgain(): Promise<RedisClients | null>;
  /** Closes every connection this backend opened. */
  close(): Promise<void>;
}

const logger = createLogger('silent');

/**
 * The backends of a shared store contract suite, for `describe.each(useStoreBackends())`.
 * The cluster (six real `redis-server` nodes, three masters) starts on the first use in the
 * file and stops after all its tests, also on failure. Redis and the cluster fail loudly when
 * Redis is not installed or not running.
 */
export function useStoreBackends(): [BackendName, () => Promise<Backend>][] {
  let cluster: Promise<RedisCluster> | null = null;
  afterAll(async () => {
    const started = await cluster?.catch(() => null);
    await started?.stop();
  }, 30_000);

  const connect = async (name: BackendName): Promise<Backend> => {
    if (name === 'memory') {
      return {
        name,
        redis: null,
        target: null,
        prefix: '',
        connectAgain: async () => null,
        close: async () => {},
      };
    }
    let target: RedisTarget;
    let prefix: string;
    if (name === 'redis') {
      const shared = await requireRedis();
      target = { url: shared.url };
      prefix = shared.prefix;
    } else {
      cluster ??= startRedisCluster();
      const { nodes } = await cluster;
      target = { clusterNodes: nodes.map(({ port }) => ({ host: '127.0.0.1', port })) };
      prefix = `sbtest:${Math.random().toString(36).slice(2, 10)}:`;
    }
    const opened: RedisClients[] = [];
    const open = async () => {
      const clients = await connectRedis(target, logger);
      opened.push(clients);
      return clients;
    };
    return {
      name,
      redis: await open(),
      target,
      prefix,
      connectAgain: open,
      close: async () => {
        await Promise.allSettled(
          opened.flatMap(({ command, subscriber }) => [command.quit(), subscriber.quit()]),
        );
      },
    };
  };
  return (['memory', 'redis', 'cluster'] as const).map((name) => [name, () => connect(name)]);
}
