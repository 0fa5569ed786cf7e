import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type ExecutionArgs, GraphQLError, getOperationAST } from 'graphql';
import { handleProtocols, makeServer } from 'graphql-ws';
import { type WebSocket, WebSocketServer } from 'ws';
import type { Authenticator } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import type { Connection, ConnectionRegistry } from '../domain/connections.ts';
import type { Logger } from '../logger.ts';
import type { RequestInfo } from '../schema/context.ts';
import { closeOnExpiry, createConnection } from './connection.ts';
import { requestInfo } from './context.ts';
import type { Fanout } from './fanout.ts';
import { nulError } from './input.ts';
import type { Yoga } from './yoga.ts';

export interface GraphQLWsOptions {
  yoga: Yoga;
  /** Subscriptions run through it: one execution per event per operation, bytes to every socket. */
  fanout: Fanout;
  maskError: (error: unknown, message: string) => Error;
  auth: Authenticator;
  connections: ConnectionRegistry;
  logger: Logger;
  /** Ping interval; a peer without a pong by the next ping is terminated. */
  keepAliveMs: number;
  /** Time to send connection_init before the socket is closed with 4408. */
  initTimeoutMs: number;
  /** Unsent bytes tolerated before the socket is closed as a slow consumer (4499). */
  maxBufferedBytes: number;
  /** Largest accepted inbound frame. */
  maxPayloadBytes: number;
  /** Operations running at once on one socket (MAX_SUBSCRIPTIONS_PER_CONNECTION). */
  maxSubscriptions: number;
  /** Told about each refused operation (logs and metrics). */
  onLimit: (limit: string, userId: string | null) => void;
}

/** The error an operation over MAX_SUBSCRIPTIONS_PER_CONNECTION gets (graphql-ws and SSE). */
export const tooManySubscriptions = (max: number) =>
  new GraphQLError(`Too many operations on this connection: at most ${max}`, {
    extensions: { code: 'RATE_LIMITED' },
  });

interface Extra {
  socket: WebSocket;
  /** The upgrade request, until connection_init is handled (then dropped: it is large). */
  request: IncomingMessage | null;
  /** What the context keeps of the upgrade request. */
  info: RequestInfo;
  connection?: Connection & { controller: AbortController };
}

type RootValue = {
  execute: (args: ExecutionArgs) => unknown;
  subscribe: (args: ExecutionArgs) => unknown;
};

/**
 * GraphQL over WebSocket (graphql-transport-ws) on yoga's envelop: the graphql-ws protocol core
 * with our own socket adapter, so that connections are registered (dropUser, presence), tokens
 * expire live (4401), slow consumers are closed (4499) and shutdown sends 1001.
 */
export function createGraphQLWsServer(options: GraphQLWsOptions) {
  const { yoga, fanout, auth, connections, logger } = options;
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (protocols) => handleProtocols(protocols),
    maxPayload: options.maxPayloadBytes,
  });

  const server = makeServer<Record<string, unknown> | undefined, Extra>({
    connectionInitWaitTimeout: options.initTimeoutMs,
    async onConnect(ctx) {
      const { socket, request } = ctx.extra;
      ctx.extra.request = null;
      let viewer: Awaited<ReturnType<Authenticator['fromConnectionParams']>>;
      try {
        viewer = await auth.fromConnectionParams(ctx.connectionParams, request?.url);
      } catch (error) {
        logger.info({ reason: (error as Error).message }, 'graphql-ws connection refused');
        return false;
      }
      const connection = createConnection('graphql-ws', viewer, (code, reason) =>
        socket.close(code, reason),
      );
      try {
        connections.add(connection);
      } catch (error) {
        // Over MAX_CONNECTIONS(_PER_USER): our own close code, so the client retries later.
        socket.close(CloseCode.TooManyConnections, (error as Error).message.slice(0, 120));
        return false;
      }
      ctx.extra.connection = connection;
      closeOnExpiry(connection, () => connection.close(CloseCode.TokenExpired, 'token expired'));
      return true;
    },
    async onSubscribe(ctx, id, payload) {
      const { connection, info, socket } = ctx.extra;
      // The new operation is already listed in ctx.subscriptions.
      if (Object.keys(ctx.subscriptions).length > options.maxSubscriptions) {
        options.onLimit('subscriptionsPerConnection', connection?.viewer?.userId ?? null);
        return [tooManySubscriptions(options.maxSubscriptions)];
      }
      const nul = nulError(payload);
      if (nul) return [nul];
      const enveloped = yoga.getEnveloped({
        viewer: connection?.viewer ?? null,
        ...(connection ? { connection } : {}),
        requestInfo: info,
        params: payload,
      } as never);
      let document: ExecutionArgs['document'];
      try {
        document = enveloped.parse(payload.query);
      } catch (error) {
        return [error as never];
      }
      // graphql-armor's limits throw their GraphQLError from validate rather than return it.
      let errors: readonly GraphQLError[];
      try {
        errors = enveloped.validate(enveloped.schema, document);
      } catch (error) {
        if (error instanceof GraphQLError) return [error];
        throw error;
      }
      if (errors.length > 0) return [...errors];
      const isSubscription =
        getOperationAST(document, payload.operationName)?.operation === 'subscription';
      const prefix = `{"id":${JSON.stringify(id)},"type":"next","payload":`;
      const rootValue: RootValue = {
        execute: enveloped.execute,
        subscribe: isSubscription
          ? (args) => {
              const stream = fanout.subscribe(
                {
                  args: { ...args, rootValue: undefined },
                  maskError: options.maskError,
                  query: payload.query,
                },
                (json) => {
                  if (socket.readyState !== socket.OPEN) return;
                  if (socket.bufferedAmount > options.maxBufferedBytes)
                    return slowConsumer(ctx.extra);
                  socket.send(`${prefix}${json}}`);
                },
              );
              // graphql-ws keeps its execution args for the life of the operation; the fan-out
              // has what it needs, so let the per-request context and envelop closures go.
              Object.assign(args, { rootValue: undefined, contextValue: undefined });
              return stream;
            }
          : enveloped.subscribe,
      };
      return {
        schema: enveloped.schema,
        document,
        operationName: payload.operationName ?? null,
        variableValues: payload.variables ?? null,
        contextValue: await enveloped.contextFactory(),
        rootValue,
      };
    },
    execute: (args) => (args.rootValue as RootValue).execute(args) as never,
    subscribe: (args) => (args.rootValue as RootValue).subscribe(args) as never,
  });

  function slowConsumer(extra: Extra) {
    if (extra.connection?.signal.aborted) return;
    logger.warn({ user: extra.connection?.viewer?.userId }, 'slow graphql-ws consumer closed');
    if (extra.connection) extra.connection.close(CloseCode.SlowConsumer, 'slow consumer');
    else extra.socket.close(CloseCode.SlowConsumer, 'slow consumer');
  }

  // Keep-alive: one sweep per instance rather than a timer per socket. A socket that has not
  // answered the previous sweep's ping is terminated.
  const awaitingPong = new WeakSet<WebSocket>();
  function heardPong(this: WebSocket) {
    awaitingPong.delete(this);
  }
  const keepAlive = setInterval(() => {
    for (const client of wss.clients) {
      if (awaitingPong.has(client)) {
        client.terminate();
        continue;
      }
      awaitingPong.add(client);
      client.ping();
    }
  }, options.keepAliveMs);
  keepAlive.unref();

  wss.on('connection', (socket: WebSocket, request: IncomingMessage) => {
    const extra: Extra = { socket, request, info: requestInfo(request, 'graphql-ws') };
    const closed = server.opened(
      {
        protocol: socket.protocol,
        // Not awaiting the write callback: the per-socket bound is bufferedAmount, checked here.
        send: (data) => {
          if (socket.readyState !== socket.OPEN) return;
          if (socket.bufferedAmount > options.maxBufferedBytes) return slowConsumer(extra);
          socket.send(data);
        },
        close: (code, reason) => socket.close(code, reason),
        onMessage: (cb) =>
          socket.on('message', async (data) => {
            try {
              await cb(String(data));
            } catch (error) {
              logger.error({ err: error }, 'graphql-ws message handling failed');
              socket.close(CloseCode.InternalError, 'Internal server error');
            }
          }),
      },
      extra,
    );

    socket.on('pong', heardPong);
    socket.on('error', (error) => {
      logger.warn({ err: error }, 'graphql-ws socket error');
      socket.terminate();
    });
    socket.once('close', (code, reason) => {
      extra.connection?.controller.abort();
      closed(code, String(reason)).catch((error: unknown) =>
        logger.error({ err: error }, 'graphql-ws close handling failed'),
      );
    });
  });

  return {
    /** Takes over an HTTP upgrade request for /graphql. */
    handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer) {
      wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request));
    },
    /** Closes every socket with 1001 (going away) and stops accepting new ones. */
    async close() {
      clearInterval(keepAlive);
      for (const client of wss.clients) client.close(CloseCode.GoingAway, 'server shutting down');
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
    get size() {
      return wss.clients.size;
    },
  };
}
