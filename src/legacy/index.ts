import type { Authenticator } from '../auth/index.ts';
import type { Config } from '../config.ts';
import type { Services } from '../domain/index.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { ConnectionCore } from '../net/core.ts';
import type { WebSocketAcceptor } from '../net/websocket.ts';
import { createChatterRoute } from './chatter.ts';
import { createHeartbeatRoute } from './heartbeat.ts';
import { createIccRoute } from './icc.ts';
import { createNotifierRoute } from './notifier.ts';
import { createOs3Route } from './os3.ts';
import { createOs3AutoupdateRoutes } from './os3-autoupdate.ts';
import type { LegacyRoute } from './route.ts';

export { type LegacyRoute, matchRoute } from './route.ts';

/**
 * What every shim may use: the same services the GraphQL resolvers call, and the connection
 * core that holds every client connection (shims never write to a socket themselves).
 */
export interface LegacyDeps {
  config: Config;
  services: Services;
  core: ConnectionCore;
  /** Completes WebSocket handshakes for the shims' sockets. */
  websockets: WebSocketAcceptor;
  auth: Authenticator;
  logger: Logger;
  metrics: Metrics;
}

/** The old endpoints of every replaced service, one factory per file in this folder. */
export function createLegacyRoutes(deps: LegacyDeps): LegacyRoute[] {
  return [
    createChatterRoute(deps),
    createHeartbeatRoute(deps),
    createIccRoute(deps),
    createOs3Route(deps),
    ...createOs3AutoupdateRoutes(deps),
    createNotifierRoute(deps),
  ];
}
