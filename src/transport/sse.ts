import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type DocumentNode, GraphQLError, getOperationAST } from 'graphql';
import { createHandler, type Request as SseRequest } from 'graphql-sse';
import type { Authenticator, Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import type { Connection, ConnectionRegistry } from '../domain/connections.ts';
import { rateLimitStatus } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { closeOnExpiry, createConnection } from './connection.ts';
import { authError, requestInfo } from './context.ts';
import type { Fanout } from './fanout.ts';
import { tooManySubscriptions } from './graphql-ws.ts';
import { BodyTooLarge, readBody, sendJson } from './http.ts';
import { nulError } from './input.ts';
import type { Yoga } from './yoga.ts';

export interface SseOptions {
  yoga: Yoga;
  /** Subscriptions run through it: one execution per event per operation. */
  fanout: Fanout;
  maskError: (error: unknown, message: string) => Error;
  auth: Authenticator;
  connections: ConnectionRegistry;
  logger: Logger;
  /** Unsent bytes tolerated on one stream before it is ended as a slow consumer. */
  maxBufferedBytes: number;
  /** Largest request body (MAX_BODY_BYTES), also for chunked bodies; larger get 413. */
  maxBodyBytes: number;
  /** Operations running at once on one single-connection stream (MAX_SUBSCRIPTIONS_PER_CONNECTION). */
  maxSubscriptions: number;
  /** Told about each refused stream or operation (logs and metrics). */
  onLimit: (limit: string, userId: string | null) => void;
}

interface RequestContext {
  viewer: Viewer | null;
  /** Set on event-stream requests: the stream the operation's events go to. */
  stream?: EventStream;
}

const STREAM_TOKEN_HEADER = 'x-graphql-event-stream-token';
/** Our auth tokens (JWTs) have dots; graphql-sse reservation tokens (UUIDs) never do. */
const isJwt = (value: string) => value.split('.').length === 3;

function queryToken(url: string): string | null {
  return new URL(url, 'http://localhost').searchParams.get('token');
}

/** The graphql-sse reservation token of a request: the header, or a `?token=` that is no JWT. */
function streamToken(req: IncomingMessage): string | null {
  const header = req.headers[STREAM_TOKEN_HEADER];
  if (typeof header === 'string' && header) return header;
  const query = queryToken(req.url ?? '/');
  return query && !isJwt(query) ? query : null;
}

/** Does this /graphql request belong to the graphql-sse protocol rather than plain HTTP? */
export function isSseRequest(req: IncomingMessage): boolean {
  return (
    req.method === 'PUT' ||
    req.headers.accept === 'text/event-stream' ||
    typeof req.headers[STREAM_TOKEN_HEADER] === 'string' ||
    (req.method === 'DELETE' && streamToken(req) !== null)
  );
}

/** An open event stream: its connection, and a writer the fan-out writes events through. */
interface EventStream {
  connection: Connection & { readonly controller: AbortController };
  /** Writes one SSE message; held until the response headers are out. */
  write(message: string): void;
  /** Operations running on it (single-connection mode), for MAX_SUBSCRIPTIONS_PER_CONNECTION. */
  operations: number;
}

/**
 * GraphQL over Server-Sent Events (the graphql-sse protocol) at /graphql, in both modes:
 * distinct connections (one stream per operation) and single connection (PUT reserves a stream,
 * GET opens it, operations are POSTed with the stream token and stopped with DELETE). Reserved
 * streams live in the instance that made them: put single-connection clients on sticky sessions.
 * Subscription events are written by the fan-out straight to the stream; each stream's unsent
 * bytes are bounded, and a stream over the bound ends (slow consumer).
 */
export function createSseHandler(options: SseOptions) {
  const { yoga, fanout, auth, connections, logger } = options;
  const streamsByToken = new Map<string, EventStream>();

  function openStream(res: ServerResponse, viewer: Viewer | null): EventStream {
    let pending: string[] | null = [];
    let body: AsyncGenerator<string> | null = null;
    const connection = createConnection('sse', viewer, (code, reason) => {
      logger.debug({ code, reason }, 'sse stream closed by server');
      void body?.return(undefined);
      res.end();
    });
    const stream: EventStream & { start(generator: AsyncGenerator<string>): void } = {
      connection,
      operations: 0,
      write(message) {
        if (pending) {
          pending.push(message);
          return;
        }
        if (res.writableEnded || res.destroyed) return;
        res.write(message);
        if (res.writableLength > options.maxBufferedBytes && !connection.signal.aborted) {
          logger.warn({ user: viewer?.userId }, 'slow sse consumer closed');
          connection.close(CloseCode.SlowConsumer, 'slow consumer');
        }
      },
      start(generator) {
        body = generator;
        const held = pending ?? [];
        pending = null;
        for (const message of held) stream.write(message);
      },
    };
    return stream;
  }

  const handler = createHandler<IncomingMessage, RequestContext>({
    // Reservation tokens only from the header or a non-JWT `?token=` (ours carry auth tokens);
    // a request without one gets a fresh token, as the protocol's PUT expects.
    authenticate: (req) => streamToken(req.raw) ?? randomUUID(),
    onComplete(_ctx, req) {
      const token = req.context.stream ? null : streamToken(req.raw);
      const stream = token ? streamsByToken.get(token) : undefined;
      if (stream && stream.operations > 0) stream.operations -= 1;
    },
    async onSubscribe(req, params) {
      const { viewer } = req.context;
      const token = streamToken(req.raw);
      // Distinct mode: the request is its own stream. Single mode: the token's stream.
      const distinct = req.context.stream;
      const stream = distinct ?? (token ? streamsByToken.get(token) : undefined);
      if (stream && !distinct) {
        if (stream.operations >= options.maxSubscriptions) {
          options.onLimit('subscriptionsPerConnection', viewer?.userId ?? null);
          const body = { errors: [tooManySubscriptions(options.maxSubscriptions).toJSON()] };
          return [JSON.stringify(body), { status: 429, statusText: 'Too Many Requests' }];
        }
        // Counted down in onComplete, which graphql-sse calls when the operation ends.
        stream.operations += 1;
      }
      const connection = stream?.connection ?? createConnection('sse', viewer, () => {});
      const enveloped = yoga.getEnveloped({
        viewer,
        connection,
        requestInfo: requestInfo(req.raw, 'sse'),
        req: req.raw,
        params,
      } as never);
      const nul = nulError(params);
      if (nul) return { errors: [nul] };
      let document: DocumentNode;
      try {
        document = enveloped.parse(params.query);
      } catch (error) {
        return { errors: [error as never] };
      }
      // graphql-armor's limits throw their GraphQLError from validate rather than return it.
      let errors: readonly GraphQLError[];
      try {
        errors = enveloped.validate(enveloped.schema, document);
      } catch (error) {
        if (error instanceof GraphQLError) return { errors: [error] };
        throw error;
      }
      if (errors.length > 0) return { errors };
      const args = {
        schema: enveloped.schema,
        document,
        contextValue: await enveloped.contextFactory(),
        variableValues: params.variables ?? null,
        operationName: params.operationName ?? null,
      };
      const operation = getOperationAST(document, params.operationName);
      if (operation?.operation !== 'subscription') return enveloped.execute(args);
      if (!stream) return enveloped.subscribe(args);
      const operationId = params.extensions?.['operationId'];
      const frame =
        distinct || typeof operationId !== 'string'
          ? (json: string) => `event: next\ndata: ${json}\n\n`
          : (json: string) =>
              `event: next\ndata: {"id":${JSON.stringify(operationId)},"payload":${json}}\n\n`;
      return fanout.subscribe({ args, maskError: options.maskError, query: params.query }, (json) =>
        stream.write(frame(json)),
      );
    },
  });

  return {
    async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
      let viewer: Viewer | null;
      try {
        const url = new URL(req.url ?? '/', 'http://localhost');
        const token = url.searchParams.get('token');
        if (token !== null && !isJwt(token)) url.searchParams.delete('token');
        viewer = await auth.fromRequest({ headers: req.headers, url: url.pathname + url.search });
      } catch (error) {
        const { message, extensions } = authError(error);
        return sendJson(res, 401, {
          errors: [{ message, extensions: { code: extensions['code'] } }],
        });
      }

      if (req.headers.accept === 'text/event-stream') {
        try {
          connections.admit(viewer);
        } catch (error) {
          // MAX_CONNECTIONS (503) or MAX_CONNECTIONS_PER_USER (429), before any header went out.
          const status = rateLimitStatus(error);
          if (status === null) throw error;
          return sendJson(res, status, {
            errors: [{ message: (error as Error).message, extensions: { code: 'RATE_LIMITED' } }],
          });
        }
      }
      const stream =
        req.headers.accept === 'text/event-stream' ? openStream(res, viewer) : undefined;
      let bodyTooLarge = false;
      const context: RequestContext = stream ? { viewer, stream } : { viewer };
      const sseRequest: SseRequest<IncomingMessage, RequestContext> = {
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        headers: {
          get: (key) => {
            const value = req.headers[key.toLowerCase()];
            return Array.isArray(value) ? value.join(', ') : value;
          },
        },
        body: () =>
          readBody(req, options.maxBodyBytes).then(
            (body) => body.toString('utf8'),
            (error: unknown) => {
              bodyTooLarge = error instanceof BodyTooLarge;
              throw error;
            },
          ),
        raw: req,
        context,
      };
      const [result, init] = await handler(sseRequest);
      if (bodyTooLarge) {
        stream?.connection.controller.abort();
        options.onLimit('bodyBytes', viewer?.userId ?? null);
        res.setHeader('connection', 'close');
        return sendJson(res, 413, {
          errors: [{ message: 'Request body too large (MAX_BODY_BYTES)' }],
        });
      }
      const headers = { ...(init.headers as Record<string, string>) };
      // HTTP/2 forbids connection-specific headers.
      if (req.httpVersionMajor >= 2) delete headers['connection'];
      res.writeHead(init.status, headers);
      if (result === null || typeof result === 'string' || !stream) {
        res.end(typeof result === 'string' ? result : undefined);
        stream?.connection.controller.abort();
        return;
      }
      // An event stream: register it, bind it to the response, write what graphql-sse emits
      // (pings, completes, query results) beside what the fan-out writes.
      const body = result as AsyncGenerator<string>;
      const { connection } = stream;
      const token = streamToken(req);
      try {
        connections.add(connection);
      } catch {
        // Another stream took the last place since `admit`: end this one at once.
        connection.controller.abort();
        void body.return(undefined);
        return void res.end();
      }
      if (token) streamsByToken.set(token, stream);
      closeOnExpiry(connection, () => connection.close(CloseCode.TokenExpired, 'token expired'));
      res.flushHeaders();
      (stream as EventStream & { start(generator: AsyncGenerator<string>): void }).start(body);
      res.once('close', () => {
        if (token && streamsByToken.get(token) === stream) streamsByToken.delete(token);
        connection.controller.abort();
        void body.return(undefined);
      });
      try {
        for await (const chunk of body) {
          if (connection.signal.aborted || res.writableEnded || res.destroyed) break;
          stream.write(chunk);
        }
      } catch (error) {
        logger.error({ err: error }, 'sse stream failed');
      }
      if (!res.writableEnded) res.end();
    },
    /** Ends every open stream (shutdown). */
    closeAll() {
      for (const connection of connections.all()) {
        if (connection.transport === 'sse') connection.close(CloseCode.GoingAway, 'shutdown');
      }
    },
  };
}
