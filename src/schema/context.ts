import type { Viewer } from '../auth/index.ts';
import type { Database } from '../db/index.ts';
import type { Binding, Transport } from '../domain/connections.ts';
import type { Services } from '../domain/index.ts';
import type { PubSub } from '../pubsub/index.ts';

/** The GraphQL context of one operation, whatever transport carried it. */
export interface Context {
  /** The caller, or null when anonymous. */
  viewer: Viewer | null;
  /** The connection the operation runs on; subscriptions end when it closes. */
  connection: Binding;
  /** Domain capabilities; resolvers delegate to these. */
  services: Services;
  db: Database;
  pubsub: PubSub;
  /** Where the request came from, for logs. */
  request: RequestInfo;
}

export interface RequestInfo {
  transport: Transport;
  ip: string | null;
  userAgent: string | null;
}
