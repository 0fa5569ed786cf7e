import type { IncomingMessage } from 'node:http';
import { GraphQLError } from 'graphql';
import type { YogaInitialContext } from 'graphql-yoga';
import type { Authenticator, Viewer } from '../auth/index.ts';
import type { Database } from '../db/index.ts';
import type { Binding } from '../domain/connections.ts';
import type { Services } from '../domain/index.ts';
import { isAppError } from '../errors.ts';
import type { Ending, PubSub } from '../pubsub/index.ts';
import type { Context, RequestInfo } from '../schema/context.ts';

/**
 * What a transport hands to yoga's context factory. graphql-ws and SSE authenticate when the
 * connection opens and pass the result; plain HTTP requests are authenticated here.
 */
export interface TransportContext {
  viewer?: Viewer | null;
  connection?: Binding;
  requestInfo?: RequestInfo;
  /** The Node request, set by the Node HTTP adapter. */
  req?: IncomingMessage;
}

export interface ContextDeps {
  auth: Authenticator;
  services: Services;
  db: Database;
  pubsub: PubSub;
}

/** Request facts worth logging, from a Node request. */
export function requestInfo(
  req: IncomingMessage | undefined,
  transport: RequestInfo['transport'],
): RequestInfo {
  const ua = req?.headers['user-agent'];
  return {
    transport,
    ip: req?.socket.remoteAddress ?? null,
    userAgent: typeof ua === 'string' ? ua : null,
  };
}

/** Turns a failed authentication into the GraphQL error clients see (401 over HTTP). */
export function authError(error: unknown): GraphQLError {
  const message = isAppError(error) ? error.message : 'Authentication failed';
  return new GraphQLError(message, {
    extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } },
  });
}

/**
 * The binding of a plain HTTP request: it lives as long as the request. Nothing it holds
 * outlives the request (a subscription over plain HTTP ends when the client goes away).
 */
function requestBinding(viewer: Viewer | null, signal: AbortSignal): Binding {
  let held: Ending[] | null = null;
  const binding: Binding = {
    viewer,
    get closed() {
      return signal.aborted;
    },
    hold(item) {
      if (signal.aborted) return item.end();
      if (held === null) {
        held = [];
        signal.addEventListener('abort', () => {
          for (const each of held?.splice(0) ?? []) each.end();
        });
      }
      held.push(item);
    },
    release(item) {
      const index = held?.indexOf(item) ?? -1;
      if (index >= 0) held?.splice(index, 1);
    },
    // Nothing to close: the response stream bounds itself.
    overflow() {},
  };
  return binding;
}

/** Builds the per-operation GraphQL context from what the transport knows. */
export function createContextFactory(deps: ContextDeps) {
  return async (initial: YogaInitialContext & TransportContext): Promise<Context> => {
    let viewer = initial.viewer;
    if (viewer === undefined) {
      try {
        viewer = await deps.auth.fromRequest({
          headers: initial.request.headers,
          url: initial.request.url,
        });
      } catch (error) {
        throw authError(error);
      }
    }
    const connection = initial.connection ?? requestBinding(viewer, initial.request.signal);
    return {
      viewer,
      connection,
      services: deps.services,
      db: deps.db,
      pubsub: deps.pubsub,
      request: initial.requestInfo ?? requestInfo(initial.req, 'http'),
    };
  };
}
