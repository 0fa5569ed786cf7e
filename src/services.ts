import type { Viewer } from './auth/index.ts';
import type { Config } from './config.ts';
import type { Database } from './db/index.ts';
import { createApplause } from './domain/applause.ts';
import { createAutoupdate } from './domain/autoupdate.ts';
import { createChangeLog } from './domain/change-log.ts';
import { createChat } from './domain/chat.ts';
import type { ConnectionRegistry } from './domain/connections.ts';
import { createDropUser, INSTANCES_SET } from './domain/drop-user.ts';
import type { PresencePingEvent } from './domain/events.ts';
import type { Services } from './domain/index.ts';
import { createLimits, type RateLimitedOperation } from './domain/limits.ts';
import { createMeetings } from './domain/meetings.ts';
import { createMembership } from './domain/membership.ts';
import { createNotify } from './domain/notify.ts';
import { createPresence } from './domain/presence.ts';
import { createProjector } from './domain/projector.ts';
import { createReadGate } from './domain/read-gate.ts';
import { createSessions } from './domain/sessions.ts';
import { createUsers } from './domain/users.ts';
import { createWsTokens } from './domain/ws-tokens.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import type { PubSub, RedisClients } from './pubsub/index.ts';
import {
  type ApplauseStore,
  createMemoryApplauseStore,
  createMemoryMembershipStore,
  createMemoryPresenceStore,
  createMemoryRateLimitStore,
  createMemorySseReservationStore,
  createRedisApplauseStore,
  createRedisMembershipStore,
  createRedisPresenceStore,
  createRedisRateLimitStore,
  createRedisSseReservationStore,
  type MembershipStore,
  type PresenceStore,
  type Rate,
  type RateLimitStore,
  type SseReservationStore,
} from './stores/index.ts';

/*
 * The composition root of the domain: reads the configuration, picks each store (memory for one
 * instance, Redis for several: one Redis or a Redis Cluster, the same code) and hands the domain
 * stores and plain values. Nothing below src/domain/ reads the configuration or holds a Redis
 * connection.
 */

/** The stores the domain is built on, one implementation each. */
export interface Stores {
  rates: RateLimitStore<RateLimitedOperation>;
  membership: MembershipStore;
  applause: ApplauseStore;
  presence: PresenceStore<PresencePingEvent>;
  /** graphql-sse single-connection reservations (the transport's, not the domain's). */
  sseReservations: SseReservationStore;
}

/**
 * Builds the stores: over Redis when `redis` is given (REDIS_URL or REDIS_CLUSTER_NODES), in
 * memory otherwise (one instance).
 */
export function createStores(
  config: Config,
  redis: RedisClients | null,
  instanceId: string,
): Stores {
  const rates: Record<RateLimitedOperation, Rate | null> = {
    publish: config.RATE_LIMIT_PUBLISH,
    sendApplause: config.RATE_LIMIT_APPLAUSE,
    ping: config.RATE_LIMIT_PING,
    sendChatMessage: config.RATE_LIMIT_CHAT,
    createWsToken: config.RATE_LIMIT_WS_TOKEN,
  };
  const membership = { instanceId, ttlMs: config.INSTANCE_TTL_MS };
  const applause = { windowMs: config.APPLAUSE_WINDOW_S * 1000 };
  const presence = {
    minIntervalMs: config.PING_MIN_INTERVAL_MS,
    // The cache outlives the timeout a little; after that lastSeen reads Postgres.
    ttlMs: config.PRESENCE_TIMEOUT_S * 2000,
  };
  if (!redis) {
    return {
      rates: createMemoryRateLimitStore({ rates }),
      membership: createMemoryMembershipStore(membership),
      applause: createMemoryApplauseStore(applause),
      presence: createMemoryPresenceStore(presence),
      sseReservations: createMemorySseReservationStore(),
    };
  }
  const shared = { client: redis.command, prefix: config.REDIS_PREFIX };
  return {
    rates: createRedisRateLimitStore({ rates, ...shared }),
    membership: createRedisMembershipStore({ ...membership, ...shared }),
    applause: createRedisApplauseStore({ ...applause, ...shared }),
    presence: createRedisPresenceStore({ ...presence, ...shared }),
    sseReservations: createRedisSseReservationStore(shared),
  };
}

export interface ServiceDeps {
  config: Config;
  pubsub: PubSub;
  db: Database;
  /** Unique per process (the membership store keeps entries per instance). */
  instanceId: string;
  /** What `createStores` built. */
  stores: Stores;
  logger: Logger;
  metrics: Metrics;
  /** This instance's open connections (the connection core), for dropUser. */
  connections: ConnectionRegistry;
  /** Verifies tokens (refreshToken). */
  verifyToken: (token: string) => Promise<Viewer>;
}

/** Builds every capability over the stores `createStores` picks. */
export function createServices({
  config,
  pubsub,
  db,
  instanceId,
  stores,
  logger,
  metrics,
  connections,
  verifyToken,
}: ServiceDeps): Services {
  const limits = createLimits({ store: stores.rates, logger, metrics });
  const membership = createMembership({
    pubsub,
    store: stores.membership,
    ttlMs: config.INSTANCE_TTL_MS,
    logger,
  });
  // Every live instance is a member: dropUser knows how many answers to wait for.
  membership.join(INSTANCES_SET, instanceId);
  const changeLog = createChangeLog({
    db,
    pubsub,
    logger,
    maxBatch: config.AUTOUPDATE_MAX_BATCH,
    maxItemBytes: config.AUTOUPDATE_MAX_ITEM_BYTES,
    maxJsonDepth: config.JSON_MAX_DEPTH,
    onLimit: limits.report,
    retention: config.AUTOUPDATE_RETENTION,
    pruneIntervalMs: config.AUTOUPDATE_PRUNE_INTERVAL_MS,
    catchupMs: config.AUTOUPDATE_CATCHUP_MS,
  });
  const users = createUsers({ db, pubsub, serviceSecret: config.CHATTER_SERVICE_SECRET });
  const chat = createChat({
    db,
    pubsub,
    membership,
    users,
    logger,
    maxLength: config.CHAT_MAX_LENGTH,
    subscriptionBuffer: config.SUBSCRIPTION_BUFFER,
    rateLimit: limits.rate('sendChatMessage'),
    onLimit: limits.report,
    // Presence is created below; chat asks only once connections are tracked.
    ownPing: (userId) => presence.ownPing(userId),
  });
  const wsTokens = createWsTokens({
    db,
    ttlSeconds: config.WS_TOKEN_TTL_S,
    logger,
    rateLimit: limits.rate('createWsToken'),
  });
  const meetings = createMeetings({
    db,
    pubsub,
    instanceId,
    cacheTtlMs: config.MEETING_CACHE_TTL_S * 1000,
    logger,
  });
  const applause = createApplause({
    store: stores.applause,
    meetings,
    membership,
    intervalMs: config.APPLAUSE_INTERVAL_MS,
    subscriptionBuffer: config.SUBSCRIPTION_BUFFER,
    logger,
    rateLimit: limits.inline('sendApplause'),
  });
  const presence = createPresence({
    pubsub,
    db,
    store: stores.presence,
    timeoutMs: config.PRESENCE_TIMEOUT_S * 1000,
    subscriptionBuffer: config.SUBSCRIPTION_BUFFER,
    logger,
    rateLimit: limits.inline('ping'),
    flushIntervalMs: config.PRESENCE_FLUSH_MS,
  });
  const projector = createProjector({
    db,
    changeLog,
    subscriptionBuffer: config.SUBSCRIPTION_BUFFER,
    logger,
  });
  const dropUser = createDropUser({
    pubsub,
    membership,
    connections,
    instanceId,
    timeoutMs: config.DROP_USER_TIMEOUT_MS,
    logger,
  });
  return {
    instanceId,
    membership,
    notify: createNotify({
      pubsub,
      meetings,
      membership,
      subscriptionBuffer: config.SUBSCRIPTION_BUFFER,
      messageMaxBytes: config.MESSAGE_MAX_BYTES,
      maxTargets: config.NOTIFY_MAX_TARGETS,
      maxNameLength: config.NOTIFY_MAX_NAME_LENGTH,
      maxJsonDepth: config.JSON_MAX_DEPTH,
      rateLimit: limits.rate('publish'),
      onLimit: limits.report,
    }),
    meetings,
    applause,
    presence,
    users,
    chat,
    wsTokens,
    changeLog,
    autoupdate: createAutoupdate({
      db,
      changeLog,
      subscriptionBuffer: config.SUBSCRIPTION_BUFFER,
      logger,
      setupGate: createReadGate({
        // Leave at least one pool connection for writers and everything else.
        concurrency: Math.max(
          1,
          Math.min(config.AUTOUPDATE_SETUP_CONCURRENCY, config.DATABASE_POOL_SIZE - 1),
        ),
        maxWaitMs: config.AUTOUPDATE_SETUP_TIMEOUT_MS,
        onTimeout: () => limits.report('autoupdateSetupWait'),
      }),
    }),
    projector,
    sessions: createSessions({
      verify: verifyToken,
      subscriptionBuffer: config.SUBSCRIPTION_BUFFER,
    }),
    dropUser,
    limits,
    async stop() {
      dropUser.stop();
      projector.stop();
      changeLog.stop();
      wsTokens.stop();
      applause.stop();
      meetings.stop();
      // Writes the pings not yet in Postgres (Postgres closes after this).
      await presence.close();
      await membership.close();
    },
  };
}
