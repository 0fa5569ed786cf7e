import type { Config } from '../config.ts';
import type { PubSub } from '../pubsub/index.ts';
import { type ConnectionRegistry, createConnectionRegistry } from './connections.ts';
import { createNotify, type Notify } from './notify.ts';

/** Every capability of the server; GraphQL resolvers and legacy shims call only these. */
export interface Services {
  connections: ConnectionRegistry;
  notify: Notify;
}

export interface ServiceDeps {
  config: Config;
  pubsub: PubSub;
}

export function createServices({ config, pubsub }: ServiceDeps): Services {
  return {
    connections: createConnectionRegistry(),
    notify: createNotify({
      pubsub,
      subscriptionBuffer: config.SUBSCRIPTION_BUFFER,
      messageMaxBytes: config.MESSAGE_MAX_BYTES,
    }),
  };
}
