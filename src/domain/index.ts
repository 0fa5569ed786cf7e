import { randomUUID } from 'node:crypto';
import type { Config } from '../config.ts';
import type { Database } from '../db/index.ts';
import type { Logger } from '../logger.ts';
import {
  createMembership,
  type Membership,
  type PubSub,
  type RedisClients,
} from '../pubsub/index.ts';
import { type ConnectionRegistry, createConnectionRegistry } from './connections.ts';
import { createNotify, type Notify } from './notify.ts';

/** Every capability of the server; GraphQL resolvers and legacy shims call only these. */
export interface Services {
  /** Unique per process. */
  instanceId: string;
  connections: ConnectionRegistry;
  membership: Membership;
  notify: Notify;
  /** Stops timers and releases shared entries (shutdown). */
  stop(): Promise<void>;
}

export interface ServiceDeps {
  config: Config;
  pubsub: PubSub;
  db: Database;
  /** Redis connections when REDIS_URL is set; stores in src/pubsub/ choose memory otherwise. */
  redis: RedisClients | null;
  logger: Logger;
}

export function createServices({ config, pubsub, redis, logger }: ServiceDeps): Services {
  const instanceId = randomUUID();
  const membership = createMembership({
    pubsub,
    instanceId,
    ttlMs: config.INSTANCE_TTL_MS,
    logger,
    ...(redis ? { redis: { client: redis.command, prefix: config.REDIS_PREFIX } } : {}),
  });
  const connections = createConnectionRegistry();
  return {
    instanceId,
    connections,
    membership,
    notify: createNotify({
      pubsub,
      subscriptionBuffer: config.SUBSCRIPTION_BUFFER,
      messageMaxBytes: config.MESSAGE_MAX_BYTES,
    }),
    async stop() {
      await membership.close();
    },
  };
}
