import { randomUUID } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Http2SecureServer } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type Authenticator, createAuthenticator } from './auth/index.ts';
import { CloseCode } from './close-codes.ts';
import type { Config } from './config.ts';
import { type Database, openDatabase } from './db/index.ts';
import type { Services } from './domain/index.ts';
import { createLegacyRoutes, matchRoute } from './legacy/index.ts';
import type { Logger } from './logger.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { type ConnectionCore, createConnectionCore } from './net/core.ts';
import { createWebSocketAcceptor } from './net/websocket.ts';
import {
  connectRedis,
  createMemoryPubSub,
  createRedisPubSub,
  observePublishes,
  type PubSub,
  type RedisClients,
  redisTarget,
} from './pubsub/index.ts';
import { schema } from './schema/index.ts';
import { createServices, createStores } from './services.ts';
import { createAdmission } from './transport/admission.ts';
import { createContextFactory } from './transport/context.ts';
import { createDemo, isDemoPath } from './transport/demo.ts';
import { createFanout, type Fanout } from './transport/fanout.ts';
import { createGraphiQL } from './transport/graphiql.ts';
import { createGraphQLWsServer } from './transport/graphql-ws.ts';
import { createHealth } from './transport/health.ts';
import {
  BodyTooLarge,
  clientErrorResponse,
  createHttpServer,
  readBody,
  refuseUpgrade,
  sendJson,
} from './transport/http.ts';
import { createOperationRunner } from './transport/operation.ts';
import { createSseServer, isSseRequest } from './transport/sse.ts';
import { createGraphQLServer, maskError } from './transport/yoga.ts';

export interface AppDeps {
  config: Config;
  logger: Logger;
}

/** A built server: resources are open, nothing listens until `start`. */
export interface App {
  readonly server: Server | Http2SecureServer;
  readonly auth: Authenticator;
  readonly services: Services;
  readonly pubsub: PubSub;
  readonly db: Database;
  /** The subscription fan-out (its execution count shows one execution per event per group). */
  readonly fanout: Fanout;
  readonly metrics: Metrics;
  /** Every open client connection of this instance (the connection core). */
  readonly connections: ConnectionCore;
  /** Listens on PORT/HOST; resolves with the base URL (http://host:port). */
  start(): Promise<string>;
  /**
   * Graceful shutdown: /readyz says 503 for SHUTDOWN_DRAIN_MS while everything is still served,
   * then stop accepting, close WebSockets with 1001, end SSE streams, then close Postgres and
   * Redis. Bounded by SHUTDOWN_TIMEOUT_MS after the drain; remaining sockets are destroyed.
   */
  stop(): Promise<void>;
}

/** GET /metrics: the Prometheus text format. */
async function serveMetrics(metrics: Metrics, res: ServerResponse): Promise<void> {
  const body = await metrics.registry.metrics();
  res.writeHead(200, { 'content-type': metrics.registry.contentType });
  res.end(body);
}

const BODYLESS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * How long a streaming operation holds its place among MAX_OPERATIONS_IN_FLIGHT at most (see
 * transport/admission.ts): longer than any operation takes while its dependencies answer.
 */
const OPERATION_HOLD_MS = 1_000;

function tooLarge(res: ServerResponse): void {
  res.setHeader('connection', 'close');
  sendJson(res, 413, { errors: [{ message: 'Request body too large (MAX_BODY_BYTES)' }] });
}

/** The Access-Control-Allow-Origin value for `origin` under ALLOWED_ORIGINS, or null. */
function allowedOrigin(allowed: readonly string[] | undefined, origin: string | undefined) {
  if (!allowed || !origin) return null;
  if (allowed.includes('*')) return '*';
  return allowed.includes(origin) ? origin : null;
}

/** Opens Postgres (or the embedded one), Redis (when configured) and wires every transport. */
export async function buildApp({ config, logger }: AppDeps): Promise<App> {
  const auth = createAuthenticator({
    tokenKey: config.AUTH_TOKEN_KEY,
    jwksUrl: config.AUTH_JWKS_URL,
    listenHost: config.HOST,
    production: config.NODE_ENV === 'production',
    // `?token=<ws token>` on the /graphql socket (services exist before any socket connects).
    consumeWsToken: (token) => services.wsTokens.consume(token),
    fakeUser: config.AUTH_FAKE_USER,
    issuer: config.AUTH_ISSUER,
    audience: config.AUTH_AUDIENCE,
    tokenCacheSize: config.AUTH_TOKEN_CACHE_SIZE,
    logger,
  });
  const db = await openDatabase({
    url: config.DATABASE_URL,
    dataDir: config.DATA_DIR,
    poolSize: config.DATABASE_POOL_SIZE,
    logger,
  });
  let redis: RedisClients | null;
  try {
    const target = redisTarget(config);
    redis = target ? await connectRedis(target, logger) : null;
  } catch (error) {
    await db.close();
    throw error;
  }
  // Counted in metrics (created below; nothing publishes before the services start).
  const pubsub = observePublishes(
    redis
      ? createRedisPubSub(redis, { prefix: config.REDIS_PREFIX, logger })
      : createMemoryPubSub(),
    (event) => metrics.eventsPublished.inc({ event }),
  );
  const dependencies = {
    postgres: () => db.ping(),
    ...(redis ? { redis: () => pubsub.ping() } : {}),
  };
  const admission = createAdmission({
    max: config.MAX_OPERATIONS_IN_FLIGHT,
    holdMs: OPERATION_HOLD_MS,
  });
  const metrics = createMetrics({
    connectionCounts: () => ({
      ...core.countByTransport(),
      // Requests still receiving their body (slow uploads), beside the open streams.
      'http-receiving': server.receiving(),
    }),
    dependencies,
    admission,
  });
  const core = createConnectionCore({
    logger,
    maxConnections: config.MAX_CONNECTIONS,
    maxPerUser: config.MAX_CONNECTIONS_PER_USER,
    maxAnonymous: config.ANONYMOUS_CONNECTIONS,
    maxBufferedBytes: config.WS_MAX_BUFFERED_BYTES,
    expiryWarningMs: config.TOKEN_EXPIRY_WARNING_S * 1000,
    // Every open connection with a user feeds chat presence (first/last connection per group).
    track: (connection) => services.chat.track(connection),
    onLimit: (limit, viewer) => services.limits.report(limit, { user: viewer?.userId ?? null }),
    onClosed: ({ closeCode, transport }) => {
      if (closeCode === CloseCode.SlowConsumer) metrics.slowConsumers.inc({ transport });
    },
  });
  // The composition root (src/services.ts) picks every store: memory, or Redis (one or a cluster).
  const instanceId = randomUUID();
  const stores = createStores(config, redis, instanceId);
  const services = createServices({
    config,
    pubsub,
    db,
    instanceId,
    stores,
    logger,
    metrics,
    connections: core,
    verifyToken: (token) => auth.verify(token),
  });

  const context = createContextFactory({ auth, services, db, pubsub });
  const yoga = createGraphQLServer({
    schema,
    context: context as never,
    logger,
    limits: {
      depth: config.GRAPHQL_MAX_DEPTH,
      aliases: config.GRAPHQL_MAX_ALIASES,
      tokens: config.GRAPHQL_MAX_TOKENS,
      directives: config.GRAPHQL_MAX_DIRECTIVES,
    },
    onLimit: (limit) => services.limits.report(limit),
    allowedOrigins: config.ALLOWED_ORIGINS,
  });
  const fanout = createFanout(metrics);
  const operations = createOperationRunner({
    yoga,
    context: (initial) => context(initial as never),
    fanout,
    maskError: maskError(logger),
    admission,
  });
  const onLimit = (limit: string, user: string | null) => services.limits.report(limit, { user });
  const websockets = createWebSocketAcceptor({ maxPayloadBytes: config.MAX_BODY_BYTES });
  const graphqlWs = createGraphQLWsServer({
    operations,
    auth,
    core,
    logger,
    keepAliveMs: config.WS_KEEPALIVE_MS,
    initTimeoutMs: config.WS_INIT_TIMEOUT_MS,
    maxSubscriptions: config.MAX_SUBSCRIPTIONS_PER_CONNECTION,
    onLimit,
  });
  const sse = createSseServer({
    operations,
    auth,
    core,
    keepAliveMs: config.SSE_KEEPALIVE_MS,
    maxBodyBytes: config.MAX_BODY_BYTES,
    maxSubscriptions: config.MAX_SUBSCRIPTIONS_PER_CONNECTION,
    reservationTimeoutMs: config.SSE_RESERVATION_TIMEOUT_MS,
    onLimit,
    // Shared by every instance through Redis: PUT, GET and POST may reach different instances.
    store: stores.sseReservations,
    pubsub,
    instanceId: services.instanceId,
    forwardTimeoutMs: config.SSE_FORWARD_TIMEOUT_MS,
    leaseMs: config.INSTANCE_TTL_MS,
    logger,
  });
  const legacy = createLegacyRoutes({
    config,
    services,
    core,
    websockets,
    auth,
    metrics,
    logger: logger.child({ legacy: true }),
  });
  const health = createHealth(dependencies);
  const demo = await createDemo({ auth, logger });
  const graphiql = await createGraphiQL({ enabled: config.GRAPHIQL, logger });

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > config.MAX_BODY_BYTES) {
      services.limits.report('bodyBytes', { path });
      return tooLarge(res);
    }
    const handled = (() => {
      if (path === '/healthz') return health.live(res);
      if (path === '/readyz') return health.ready(res);
      if (path === '/metrics') return serveMetrics(metrics, res);
      if (isDemoPath(path)) return demo.handle(req, res, path);
      if (graphiql.matches(req, path)) return graphiql.handle(req, res, path);
      if (path === '/graphql' && isSseRequest(req)) {
        // yoga answers the CORS preflight; the stream itself needs the allow header too.
        const origin = allowedOrigin(config.ALLOWED_ORIGINS, req.headers.origin);
        if (origin) res.setHeader('access-control-allow-origin', origin);
        return sse.handle(req, res);
      }
      const shim = matchRoute(legacy, path);
      if (shim) return shim.route.handle(req, res, shim.path);
      // A body without content-length (chunked) is read here, bounded, and handed to yoga.
      if (req.headers['content-length'] === undefined && !BODYLESS.has(req.method ?? 'GET')) {
        return readBody(req, config.MAX_BODY_BYTES).then(
          (body) => {
            if (body.length > 0) (req as IncomingMessage & { body?: Buffer }).body = body;
            return yoga.handle(req, res);
          },
          (error: unknown) => {
            if (!(error instanceof BodyTooLarge)) throw error;
            services.limits.report('bodyBytes', { path });
            return tooLarge(res);
          },
        );
      }
      return yoga.handle(req, res);
    })();
    Promise.resolve(handled).catch((error: unknown) => {
      logger.error({ err: error, path }, 'request failed');
      sendJson(res, 500, { errors: [{ message: 'Internal server error' }] });
    });
  };

  // Defined once, not per upgrade: a listener that outlives the handshake must not share a
  // closure scope with the (large) upgrade request.
  const onUpgradeSocketError = (error: Error) =>
    logger.debug({ err: error }, 'upgrade socket error');
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    socket.on('error', onUpgradeSocketError);
    if (path === '/graphql') return websockets.accept(req, socket, head, graphqlWs.serve);
    const shim = matchRoute(legacy, path);
    if (shim?.route.upgrade) return shim.route.upgrade(req, socket, head, shim.path);
    refuseUpgrade(socket, 404, 'Not Found');
  };

  const server = createHttpServer(
    onRequest,
    onUpgrade,
    config.TLS_CERT_FILE && config.TLS_KEY_FILE
      ? { certFile: config.TLS_CERT_FILE, keyFile: config.TLS_KEY_FILE }
      : undefined,
    {
      headersTimeoutMs: config.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: config.HTTP_REQUEST_TIMEOUT_MS,
      maxPendingRequests: config.MAX_PENDING_REQUESTS,
      onLimit: (limit) => services.limits.report(limit),
    },
  );
  server.on('clientError', (error, socket) => {
    logger.debug({ err: error }, 'client error');
    if (socket.writable) socket.end(clientErrorResponse(error));
  });

  let stopping: Promise<void> | null = null;
  return {
    server,
    auth,
    services,
    pubsub,
    db,
    fanout,
    metrics,
    connections: core,
    start: () =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.PORT, config.HOST, () => {
          server.off('error', reject);
          const { port } = server.address() as AddressInfo;
          const host =
            config.HOST === '0.0.0.0' || config.HOST === '::' ? '127.0.0.1' : config.HOST;
          const scheme = config.TLS_CERT_FILE ? 'https' : 'http';
          resolve(`${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`);
        });
      }),
    stop() {
      stopping ??= (async () => {
        if (config.SHUTDOWN_DRAIN_MS > 0) {
          // Still serving, but /readyz says 503: the proxy takes this instance out first.
          health.drain();
          logger.info({ drainMs: config.SHUTDOWN_DRAIN_MS }, 'draining before shutdown');
          await new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_DRAIN_MS));
        }
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        graphqlWs.close();
        core.closeAll(CloseCode.GoingAway, 'server shutting down');
        const deadline = new Promise<void>((resolve) =>
          setTimeout(resolve, config.SHUTDOWN_TIMEOUT_MS).unref(),
        );
        if ('closeIdleConnections' in server) server.closeIdleConnections();
        await Promise.race([closed, deadline]);
        if ('closeAllConnections' in server) server.closeAllConnections();
        sse.close();
        await services.stop();
        await Promise.allSettled([db.close(), pubsub.close()]);
      })();
      return stopping;
    },
  };
}
