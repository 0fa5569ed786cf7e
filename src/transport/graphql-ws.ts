import type { IncomingMessage } from 'node:http';
import { GraphQLError } from 'graphql';
import {
  GRAPHQL_TRANSPORT_WS_PROTOCOL,
  MessageType,
  parseMessage,
  type SubscribeMessage,
  CloseCode as WsCloseCode,
} from 'graphql-ws';
import type { RawData, WebSocket } from 'ws';
import type { Authenticator, Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import { isAppError, RateLimitedError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Connection } from '../net/connection.ts';
import type { ConnectionCore } from '../net/core.ts';
import { WebSocketWire } from '../net/wires.ts';
import type { RequestInfo } from '../schema/context.ts';
import { requestInfo } from './context.ts';
import { encodeFrame, type OperationSink, type Running } from './fanout.ts';
import { isRefused, type OperationRunner } from './operation.ts';

export interface GraphQLWsOptions {
  operations: OperationRunner;
  auth: Authenticator;
  core: ConnectionCore;
  logger: Logger;
  /** Ping interval; a peer without a pong by the next ping is terminated. */
  keepAliveMs: number;
  /** Time to send connection_init before the socket is closed with 4408. */
  initTimeoutMs: number;
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

/** Before connection_init, while it is authenticated, and once acknowledged. */
enum Phase {
  AwaitingInit = 0,
  Initialising = 1,
  Acknowledged = 2,
}

/**
 * The state of one socket, one flat record: the handlers are shared by every socket and find
 * it on the socket. Operations are created on the first subscribe.
 */
interface Session {
  phase: Phase;
  /** Set once acknowledged: the registered connection the socket's operations run on. */
  connection: Connection | null;
  /** Closes the socket when connection_init does not come in time; cleared on init. */
  initTimer: NodeJS.Timeout | null;
  /** The upgrade URL, for a `?token=` (dropped once connection_init is handled). */
  url: string | undefined;
  info: RequestInfo;
  /** Running operations by id; null until the first one. A null value is being started. */
  operations: Map<string, Running | null> | null;
}

const SESSION = Symbol('graphql-ws session');
type SessionSocket = WebSocket & { [SESSION]: Session };

const frame = {
  ack: '{"type":"connection_ack"}',
  pong: '{"type":"pong"}',
  complete: (id: string) => `{"id":${JSON.stringify(id)},"type":"complete"}`,
  error: (id: string, errors: readonly GraphQLError[]) =>
    JSON.stringify({ id, type: MessageType.Error, payload: errors.map((e) => e.toJSON()) }),
  pong_with: (payload: unknown) => JSON.stringify({ type: MessageType.Pong, payload }),
};

/** The frames of one operation (`next`, `complete`), on its socket's connection. */
class OperationFrames implements OperationSink {
  readonly #session: Session;
  readonly #connection: Connection;
  readonly #id: string;
  readonly #prefix: string;

  constructor(session: Session, connection: Connection, id: string) {
    this.#session = session;
    this.#connection = connection;
    this.#id = id;
    this.#prefix = `{"id":${JSON.stringify(id)},"type":"next","payload":`;
  }

  next(json: string): void {
    this.#connection.send(encodeFrame(this.#prefix, json));
  }

  complete(): void {
    // Only while the client still has it: after its own complete, it expects nothing.
    if (this.#session.operations?.delete(this.#id)) this.#connection.send(frame.complete(this.#id));
  }
}

/**
 * GraphQL over WebSocket (the graphql-transport-ws protocol of graphql-ws) on the connection
 * core. graphql-ws gives the protocol's definitions (message types, close codes, message
 * parsing and validation); this server keeps one small record per socket with shared handlers.
 * Once acknowledged, a socket is a registered connection: its token expires live (4401), slow
 * consumers are closed (4499), dropUser closes it (4403), shutdown sends 1001.
 */
export function createGraphQLWsServer(options: GraphQLWsOptions) {
  const { operations, auth, core, logger } = options;
  /** Sockets that have not been acknowledged yet (the core knows the others). */
  const pending = new Set<SessionSocket>();

  function onInitTimeout(socket: SessionSocket) {
    socket[SESSION].initTimer = null;
    if (socket[SESSION].phase === Phase.AwaitingInit) {
      socket.close(
        WsCloseCode.ConnectionInitialisationTimeout,
        'Connection initialisation timeout',
      );
    }
  }

  async function init(socket: SessionSocket, session: Session, payload: unknown) {
    session.phase = Phase.Initialising;
    if (session.initTimer) clearTimeout(session.initTimer);
    session.initTimer = null;
    const url = session.url;
    session.url = undefined;
    let viewer: Viewer | null;
    try {
      viewer = await auth.fromConnectionParams(payload, url);
    } catch (error) {
      logger.info({ reason: (error as Error).message }, 'graphql-ws connection refused');
      return socket.close(WsCloseCode.Forbidden, 'Forbidden');
    }
    if (socket.readyState !== socket.OPEN) return;
    try {
      session.connection = core.open(
        'graphql-ws',
        viewer,
        new WebSocketWire(socket, options.keepAliveMs),
      );
    } catch (error) {
      // Over MAX_CONNECTIONS(_PER_USER): our own close code, so the client retries later.
      if (error instanceof RateLimitedError) {
        return socket.close(CloseCode.TooManyConnections, error.message.slice(0, 120));
      }
      // No token where anonymous connections are off: as for a bad token.
      if (isAppError(error)) return socket.close(WsCloseCode.Forbidden, 'Forbidden');
      throw error;
    }
    pending.delete(socket);
    session.phase = Phase.Acknowledged;
    session.connection.send(frame.ack);
  }

  async function subscribe(socket: SessionSocket, session: Session, message: SubscribeMessage) {
    const { connection } = session;
    if (session.phase !== Phase.Acknowledged || !connection) {
      return socket.close(WsCloseCode.Unauthorized, 'Unauthorized');
    }
    const { id, payload } = message;
    session.operations ??= new Map();
    const running = session.operations;
    if (running.has(id)) {
      return socket.close(
        WsCloseCode.SubscriberAlreadyExists,
        `Subscriber for ${id} already exists`,
      );
    }
    if (running.size >= options.maxSubscriptions) {
      options.onLimit('subscriptionsPerConnection', connection.viewer?.userId ?? null);
      return connection.send(frame.error(id, [tooManySubscriptions(options.maxSubscriptions)]));
    }
    running.set(id, null);
    const started = await operations.start(
      connection,
      session.info,
      payload,
      new OperationFrames(session, connection, id),
    );
    if (isRefused(started)) {
      if (running.delete(id)) connection.send(frame.error(id, started.errors));
      return;
    }
    // Completed meanwhile (by the client, a single result, the socket closing): nothing to keep.
    if (session.operations === running && running.get(id) === null) running.set(id, started);
    else started.stop();
  }

  function onMessage(this: WebSocket, data: RawData, isBinary: boolean) {
    const socket = this as SessionSocket;
    const session = socket[SESSION];
    let message: ReturnType<typeof parseMessage>;
    try {
      if (isBinary) throw new Error('Binary messages are not supported');
      message = parseMessage(String(data));
    } catch (error) {
      return socket.close(WsCloseCode.BadRequest, (error as Error).message.slice(0, 120));
    }
    switch (message.type) {
      case MessageType.ConnectionInit:
        if (session.phase !== Phase.AwaitingInit) {
          return socket.close(
            WsCloseCode.TooManyInitialisationRequests,
            'Too many initialisation requests',
          );
        }
        return void init(socket, session, message.payload).catch((error: unknown) =>
          fail(socket, error),
        );
      case MessageType.Ping:
        if (message.payload === undefined) return send(socket, session, frame.pong);
        return send(socket, session, frame.pong_with(message.payload));
      case MessageType.Pong:
        return;
      case MessageType.Subscribe:
        return void subscribe(socket, session, message).catch((error: unknown) =>
          fail(socket, error),
        );
      case MessageType.Complete: {
        const stop = session.operations?.get(message.id);
        session.operations?.delete(message.id);
        stop?.stop();
        return;
      }
      default:
        return socket.close(
          WsCloseCode.BadRequest,
          `Unexpected message of type ${message.type} received`,
        );
    }
  }

  /** A frame outside any operation: through the connection once there is one. */
  function send(socket: SessionSocket, session: Session, data: string) {
    if (session.connection) session.connection.send(data);
    else if (socket.readyState === socket.OPEN) socket.send(data);
  }

  function fail(socket: SessionSocket, error: unknown) {
    if (isAppError(error)) logger.info({ err: error }, 'graphql-ws operation refused');
    else logger.error({ err: error }, 'graphql-ws message handling failed');
    socket.close(WsCloseCode.InternalServerError, 'Internal server error');
  }

  function onClose(this: WebSocket) {
    const session = (this as SessionSocket)[SESSION];
    pending.delete(this as SessionSocket);
    if (session.initTimer) clearTimeout(session.initTimer);
    const running = session.operations;
    session.operations = null;
    if (running) for (const operation of running.values()) operation?.stop();
    session.connection?.gone();
  }

  function onError(this: WebSocket, error: Error) {
    logger.debug({ err: error }, 'graphql-ws socket error');
    this.terminate();
  }

  return {
    /** Serves a socket accepted on /graphql. */
    serve(ws: WebSocket, request: IncomingMessage) {
      const socket = ws as SessionSocket;
      socket[SESSION] = {
        phase: Phase.AwaitingInit,
        connection: null,
        initTimer: null,
        url: request.url,
        info: requestInfo(request, 'graphql-ws'),
        operations: null,
      };
      socket.on('error', onError);
      socket.once('close', onClose);
      if (socket.protocol !== GRAPHQL_TRANSPORT_WS_PROTOCOL) {
        return socket.close(WsCloseCode.SubprotocolNotAcceptable, 'Subprotocol not acceptable');
      }
      pending.add(socket);
      socket.on('message', onMessage);
      const timer = setTimeout(onInitTimeout, options.initTimeoutMs, socket);
      timer.unref();
      socket[SESSION].initTimer = timer;
    },
    /** Closes the sockets that were never acknowledged (shutdown; the core closes the others). */
    close() {
      for (const socket of pending) socket.close(CloseCode.GoingAway, 'server shutting down');
    },
  };
}
