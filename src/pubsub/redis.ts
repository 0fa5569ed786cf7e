import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../logger.ts';
import { type PubSub, pubSubOver } from './pubsub.ts';

const CONNECT_TIMEOUT_MS = 5_000;

/**
 * A command connection: one Redis, or a Redis Cluster (ioredis routes each command to the node
 * that owns its key's slot). Stores use only what both offer: single-slot commands and scripts
 * whose keys share a hash tag, and no `pipeline()` across slots.
 */
export type RedisCommands = Redis | Cluster;

/** Where Redis is: one server (REDIS_URL) or the seed nodes of a cluster (REDIS_CLUSTER_NODES). */
export type RedisTarget =
  | { url: string }
  | { clusterNodes: readonly { host: string; port: number }[] };

/** The two Redis connections of an instance: commands (and publish), and subscriptions. */
export interface RedisClients {
  command: RedisCommands;
  subscriber: RedisCommands;
  /** `cluster` when connected through REDIS_CLUSTER_NODES. */
  mode: 'single' | 'cluster';
}

/** The Redis setting of a config, or null when neither REDIS_URL nor REDIS_CLUSTER_NODES is set. */
export function redisTarget(config: {
  REDIS_URL?: string | undefined;
  REDIS_CLUSTER_NODES?: readonly { host: string; port: number }[] | undefined;
}): RedisTarget | null {
  if (config.REDIS_CLUSTER_NODES) return { clusterNodes: config.REDIS_CLUSTER_NODES };
  return config.REDIS_URL ? { url: config.REDIS_URL } : null;
}

function logStateChanges(client: RedisCommands, role: string, logger: Logger): void {
  let down = false;
  client.on('error', (error: Error) => {
    if (!down) logger.error({ err: error, role }, 'redis connection error');
    down = true;
  });
  client.on('ready', () => {
    if (down) logger.info({ role }, 'redis connection restored');
    down = false;
  });
}

/**
 * Opens the command and subscriber connections and waits until both are ready, so a wrong
 * REDIS_URL or REDIS_CLUSTER_NODES stops start-up with a clear error. Afterwards ioredis
 * reconnects by itself and subscribes every channel again; on a cluster it follows failovers
 * (a promoted replica) and slot moves, for commands and for sharded subscriptions.
 */
export async function connectRedis(target: RedisTarget, logger: Logger): Promise<RedisClients> {
  const options: RedisOptions = {
    connectTimeout: CONNECT_TIMEOUT_MS,
    // A command during an outage fails after a few retries instead of hanging the caller.
    maxRetriesPerRequest: 2,
    lazyConnect: true,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  };
  let command: RedisCommands;
  let subscriber: RedisCommands;
  if ('clusterNodes' in target) {
    const cluster: ClusterOptions = {
      lazyConnect: true,
      redisOptions: { connectTimeout: CONNECT_TIMEOUT_MS, maxRetriesPerRequest: 2 },
      clusterRetryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
      // While a failed master's replica is promoted the cluster answers CLUSTERDOWN or the
      // connection fails: wait and ask for the slots again instead of failing the command.
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 300,
      retryDelayOnTryAgain: 100,
      // Notice a promoted replica within seconds even when no command hits the failed node.
      slotsRefreshInterval: 2_000,
    };
    const nodes = target.clusterNodes.map(({ host, port }) => ({ host, port }));
    command = new Cluster(nodes, {
      ...cluster,
      redisOptions: { ...cluster.redisOptions, connectionName: 'switchboard:command' },
      // Commands of one event-loop turn go out in one write per node (see below).
      enableAutoPipelining: true,
    });
    subscriber = new Cluster(nodes, {
      ...cluster,
      redisOptions: { ...cluster.redisOptions, connectionName: 'switchboard:subscriber' },
      // One subscriber connection per master, each holding the sharded channels of its slots.
      shardedSubscribers: true,
    });
  } else {
    command = new Redis(target.url, {
      ...options,
      connectionName: 'switchboard:command',
      // Commands issued while one event-loop turn handles many sockets (an applause storm) go
      // out in one write instead of one write each: the write syscalls were most of a call's cost.
      enableAutoPipelining: true,
    });
    subscriber = new Redis(target.url, {
      ...options,
      connectionName: 'switchboard:subscriber',
      // Subscriptions made during an outage wait for the reconnect rather than fail.
      maxRetriesPerRequest: null,
    });
  }
  logStateChanges(command, 'command', logger);
  logStateChanges(subscriber, 'subscriber', logger);
  try {
    await Promise.all([command.connect(), subscriber.connect()]);
  } catch (error) {
    command.disconnect();
    subscriber.disconnect();
    const setting = 'clusterNodes' in target ? 'REDIS_CLUSTER_NODES' : 'REDIS_URL';
    throw new Error(`Redis at ${setting} is not reachable: ${(error as Error).message}`);
  }
  return { command, subscriber, mode: 'clusterNodes' in target ? 'cluster' : 'single' };
}

/**
 * Throws unless Redis serves: on one Redis, both connections answer PING; on a cluster, every
 * master answers and the cluster reports every slot served (cluster_state:ok), so /readyz
 * says 503 from a master's failure until its replica took over.
 */
export async function pingRedis({ command, subscriber }: RedisClients): Promise<void> {
  if (!(command instanceof Cluster)) {
    await Promise.all([command.ping(), subscriber.ping()]);
    return;
  }
  const masters = command.nodes('master');
  if (masters.length === 0) throw new Error('no Redis Cluster master is known');
  const [info] = await Promise.all([
    (masters[0] as Redis).cluster('INFO'),
    ...masters.map((node) => node.ping()),
  ]);
  if (!String(info).includes('cluster_state:ok')) throw new Error('cluster_state is not ok');
}

/**
 * Pub/sub through Redis sharded channels (SPUBLISH/SSUBSCRIBE, Redis 7): a channel lives on
 * the node that owns its slot, so on a cluster each master carries only its share of the
 * traffic, and on one Redis it works the same. Every instance on the same Redis sees every
 * event, with one sharded subscription per topic per instance
 * (@graphql-yoga/redis-event-target counts the listeners). Publishing goes straight to the
 * command connection and is awaited, because the event target's `dispatchEvent` would drop a
 * failed publish.
 */
export function createRedisPubSub(
  clients: RedisClients,
  options: { prefix: string; logger: Logger },
): PubSub {
  const { command, subscriber } = clients;
  const { prefix, logger } = options;
  const prefixed = (topic: string) => `${prefix}${topic}`;
  // Subscribes not yet confirmed: `ping` waits for them, so a subscription made before a ping
  // resolved is live (on a cluster the subscription travels on another connection than PING).
  const pending = new Set<Promise<unknown>>();
  // The event target speaks classic pub/sub (`subscribe`, 'message'); this adapter gives it the
  // sharded commands instead. It also logs failed (un)subscribes, which the target would leave
  // as unhandled rejections during an outage.
  const shardedSubscriber = {
    on: (event: string, listener: (channel: string, message: string) => void) =>
      subscriber.on(event === 'message' ? 'smessage' : event, listener),
    subscribe: (channel: string) => {
      const done = subscriber
        .ssubscribe(channel)
        .catch((error: Error) => {
          logger.error({ err: error, channel }, 'redis subscribe failed');
        })
        .finally(() => pending.delete(done));
      pending.add(done);
      return done;
    },
    unsubscribe: (channel: string) =>
      subscriber.sunsubscribe(channel).catch((error: Error) => {
        logger.warn({ err: error, channel }, 'redis unsubscribe failed');
      }),
  } as unknown as Redis;
  const redisTarget = createRedisEventTarget({
    publishClient: command as Redis,
    subscribeClient: shardedSubscriber,
  });
  return pubSubOver({
    kind: 'redis',
    target: {
      addEventListener: (topic, listener) =>
        redisTarget.addEventListener(prefixed(topic), listener),
      removeEventListener: (topic, listener) =>
        redisTarget.removeEventListener(prefixed(topic), listener),
    },
    publish: async (topic, payload) => {
      await command.spublish(prefixed(topic), JSON.stringify(payload));
    },
    ping: async () => {
      await Promise.all([...pending]);
      await pingRedis(clients);
    },
    close: async () => {
      await Promise.allSettled([command.quit(), subscriber.quit()]);
    },
  });
}
