import { randomUUID } from 'node:crypto';
import type { Viewer } from '../auth/index.ts';
import type { Config } from '../config.ts';
import type { Database } from '../db/index.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import {
  createApplauseStore,
  createMembership,
  createPresenceStore,
  createRateLimitStore,
  type Membership,
  type PubSub,
  type RedisClients,
} from '../pubsub/index.ts';
import { type Applause, createApplause } from './applause.ts';
import { type Autoupdate, createAutoupdate } from './autoupdate.ts';
import { type ChangeLog, createChangeLog } from './change-log.ts';
import { type Chat, createChat } from './chat.ts';
import type { ConnectionRegistry } from './connections.ts';
import { createDropUser, type DropUser, INSTANCES_SET } from './drop-user.ts';
import { createLimits, type Limits } from './limits.ts';
import { createMeetings, type Meetings } from './meetings.ts';
import { createNotify, type Notify } from './notify.ts';
import { createPresence, type Presence } from './presence.ts';
import { createProjector, type Projector } from './projector.ts';
import { createReadGate } from './read-gate.ts';
import { createSessions, type Sessions } from './sessions.ts';
import { createUsers, type Users } from './users.ts';
import { createWsTokens, type WsTokens } from './ws-tokens.ts';

/** Every capability of the server; GraphQL resolvers and legacy shims call only these. */
export interface Services {
  /** Unique per process. */
  instanceId: string;
  membership: Membership;
  notify: Notify;
  /** OpenSlides meetings: applause switch and member lists (Postgres). */
  meetings: Meetings;
  /** OpenSlides applause: level and present users per meeting, across instances. */
  applause: Applause;
  /** Presence pings, last seen and presence streams (backend-heartbeat). */
  presence: Presence;
  /** Users and their chat groups (Postgres). */
  users: Users;
  /** One-to-one chat: messages, history, who is online in a group. */
  chat: Chat;
  /** Single-use tokens for opening WebSockets (chatter's ws_token). */
  wsTokens: WsTokens;
  /** The autoupdate change log: writeData, pushEvents, pruning. */
  changeLog: ChangeLog;
  /** Autoupdate streams (keyed data and events per viewer, with replay). */
  autoupdate: Autoupdate;
  /** Projector streams rendered from the keyed data. */
  projector: Projector;
  /** In-band token refresh and expiry warnings of live connections. */
  sessions: Sessions;
  /** Closes a user's connections on every instance. */
  dropUser: DropUser;
  /** Per-user rate limits and the reporting of refused requests (logs, metrics). */
  limits: Limits;
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
  metrics: Metrics;
  /** This instance's open connections (the connection core), for dropUser. */
  connections: ConnectionRegistry;
  /** Verifies tokens (refreshToken). */
  verifyToken: (token: string) => Promise<Viewer>;
}

export function createServices({
  config,
  pubsub,
  db,
  redis,
  logger,
  metrics,
  connections,
  verifyToken,
}: ServiceDeps): Services {
  const instanceId = randomUUID();
  const limits = createLimits({
    store: createRateLimitStore({
      rates: {
        publish: config.RATE_LIMIT_PUBLISH,
        sendApplause: config.RATE_LIMIT_APPLAUSE,
        ping: config.RATE_LIMIT_PING,
        sendChatMessage: config.RATE_LIMIT_CHAT,
        createWsToken: config.RATE_LIMIT_WS_TOKEN,
      },
      ...(redis ? { redis: { client: redis.command, prefix: config.REDIS_PREFIX } } : {}),
    }),
    logger,
    metrics,
  });
  const membership = createMembership({
    pubsub,
    instanceId,
    ttlMs: config.INSTANCE_TTL_MS,
    logger,
    ...(redis ? { redis: { client: redis.command, prefix: config.REDIS_PREFIX } } : {}),
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
    store: createApplauseStore({
      windowMs: config.APPLAUSE_WINDOW_S * 1000,
      ...(redis ? { redis: { client: redis.command, prefix: config.REDIS_PREFIX } } : {}),
    }),
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
    store: createPresenceStore({
      minIntervalMs: config.PING_MIN_INTERVAL_MS,
      // The cache outlives the timeout a little; after that lastSeen reads Postgres.
      ttlMs: config.PRESENCE_TIMEOUT_S * 2000,
      ...(redis ? { redis: { client: redis.command, prefix: config.REDIS_PREFIX } } : {}),
    }),
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
