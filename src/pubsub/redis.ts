import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../logger.ts';
import { type PubSub, pubSubOver } from './pubsub.ts';

const CONNECT_TIMEOUT_MS = 5_000;

/** The two Redis connections of an instance: commands (and publish), and subscriptions. */
export interface RedisClients {
  command: Redis;
  subscriber: Redis;
}

/**
 * Opens the command and subscriber connections and waits until both are ready, so a wrong
 * REDIS_URL stops start-up with a clear error. Afterwards ioredis reconnects by itself and
 * re-subscribes every channel.
 */
export async function connectRedis(url: string, logger: Logger): Promise<RedisClients> {
  const options: RedisOptions = {
    connectTimeout: CONNECT_TIMEOUT_MS,
    // A command during an outage fails after a few retries instead of hanging the caller.
    maxRetriesPerRequest: 2,
    lazyConnect: true,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  };
  const command = new Redis(url, {
    ...options,
    connectionName: 'switchboard:command',
    // Commands issued while one event-loop turn handles many sockets (an applause storm) go out
    // in one write instead of one write each: the write syscalls were most of a call's cost.
    enableAutoPipelining: true,
  });
  const subscriber = new Redis(url, {
    ...options,
    connectionName: 'switchboard:subscriber',
    // Subscriptions made during an outage wait for the reconnect rather than fail.
    maxRetriesPerRequest: null,
  });
  for (const [role, client] of [
    ['command', command],
    ['subscriber', subscriber],
  ] as const) {
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
  try {
    await Promise.all([command.connect(), subscriber.connect()]);
  } catch (error) {
    command.disconnect();
    subscriber.disconnect();
    throw new Error(`Redis at REDIS_URL is not reachable: ${(error as Error).message}`);
  }
  return { command, subscriber };
}

/**
 * Pub/sub through Redis channels: every instance on the same Redis sees every event, one Redis
 * channel subscription per topic per instance (@graphql-yoga/redis-event-target counts the
 * listeners). Publishing goes straight to the command connection and is awaited, because the
 * event target's `dispatchEvent` would drop a failed publish.
 */
export function createRedisPubSub(
  clients: RedisClients,
  options: { prefix: string; logger: Logger },
): PubSub {
  const { command, subscriber } = clients;
  const { prefix, logger } = options;
  const prefixed = (topic: string) => `${prefix}${topic}`;
  // The event target fires subscribe/unsubscribe without handling their promises; an outage
  // would turn them into unhandled rejections. These wrappers log instead.
  const guardedSubscriber = {
    on: subscriber.on.bind(subscriber),
    subscribe: (channel: string) =>
      subscriber.subscribe(channel).catch((error: Error) => {
        logger.error({ err: error, channel }, 'redis subscribe failed');
      }),
    unsubscribe: (channel: string) =>
      subscriber.unsubscribe(channel).catch((error: Error) => {
        logger.warn({ err: error, channel }, 'redis unsubscribe failed');
      }),
  } as unknown as Redis;
  const redisTarget = createRedisEventTarget({
    publishClient: command,
    subscribeClient: guardedSubscriber,
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
      await command.publish(prefixed(topic), JSON.stringify(payload));
    },
    ping: async () => {
      await Promise.all([command.ping(), subscriber.ping()]);
    },
    close: async () => {
      await Promise.allSettled([command.quit(), subscriber.quit()]);
    },
  });
}
