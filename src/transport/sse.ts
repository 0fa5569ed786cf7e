import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Authenticator, Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import { isAppError, RateLimitedError } from '../errors.ts';
import type { Connection } from '../net/connection.ts';
import type { ConnectionCore } from '../net/core.ts';
import { ResponseWire } from '../net/wires.ts';
import { authError, requestInfo } from './context.ts';
import { encodeFrame, type OperationSink, type Running } from './fanout.ts';
import { tooManySubscriptions } from './graphql-ws.ts';
import { BodyTooLarge, readBody, sendJson } from './http.ts';
import { isRefused, type OperationParams, type OperationRunner } from './operation.ts';

export interface SseOptions {
  operations: OperationRunner;
  auth: Authenticator;
  core: ConnectionCore;
  /** Interval of the `:` comment that keeps idle streams open through proxies (SSE_KEEPALIVE_MS). */
  keepAliveMs: number;
  /** Largest request body (MAX_BODY_BYTES), also for chunked bodies; larger get 413. */
  maxBodyBytes: number;
  /** Operations running at once on one single-connection stream (MAX_SUBSCRIPTIONS_PER_CONNECTION). */
  maxSubscriptions: number;
  /** Time a reserved stream (PUT) has to be opened (GET) before it is dropped (SSE_RESERVATION_TIMEOUT_MS). */
  reservationTimeoutMs: number;
  /** Told about each refused stream or operation (logs and metrics). */
  onLimit: (limit: string, userId: string | null) => void;
}

const STREAM_TOKEN_HEADER = 'x-graphql-event-stream-token';
/** Our auth tokens (JWTs) have dots; reservation tokens (UUIDs) never do. */
const isJwt = (value: string) => value.split('.').length === 3;

/** The reservation token of a request: the header, or a `?token=` that is no JWT. */
function streamToken(req: IncomingMessage): string | null {
  const header = req.headers[STREAM_TOKEN_HEADER];
  if (typeof header === 'string' && header) return header;
  const query = new URL(req.url ?? '/', 'http://localhost').searchParams.get('token');
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

/** A reserved stream of single-connection mode: a connection whose wire opens on GET. */
interface Reservation {
  connection: Connection;
  wire: ResponseWire;
  /** Running operations by their client-chosen id; null while one is being started. */
  operations: Map<string, Running | null>;
  /** When an unopened reservation is dropped (epoch ms); null once its stream is open. */
  deadline: number | null;
}

const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  // Proxies such as nginx would otherwise hold events back.
  'x-accel-buffering': 'no',
};

/** The events of a stream of its own (distinct connections mode); it ends with its operation. */
class StreamEvents implements OperationSink {
  readonly #connection: Connection;

  constructor(connection: Connection) {
    this.#connection = connection;
  }

  next(json: string): void {
    this.#connection.send(encodeFrame('event: next\ndata: ', json, '\n\n'));
  }

  complete(): void {
    this.#connection.send('event: complete\ndata:\n\n');
    this.#connection.close(CloseCode.Normal, 'complete');
  }
}

/** The events of one operation on a reserved stream (single connection mode), by its id. */
class ReservedStreamEvents implements OperationSink {
  readonly #reservation: Reservation;
  readonly #id: string;
  readonly #prefix: string;

  constructor(reservation: Reservation, id: string) {
    this.#reservation = reservation;
    this.#id = id;
    this.#prefix = `event: next\ndata: {"id":${JSON.stringify(id)},"payload":`;
  }

  next(json: string): void {
    this.#reservation.connection.send(encodeFrame(this.#prefix, json, '}\n\n'));
  }

  complete(): void {
    // Only while the client still has it: after its DELETE, it expects nothing.
    if (!this.#reservation.operations.delete(this.#id)) return;
    const id = JSON.stringify(this.#id);
    this.#reservation.connection.send(`event: complete\ndata: {"id":${id}}\n\n`);
  }
}

const errorBody = (message: string, code?: string) => ({
  errors: [{ message, ...(code ? { extensions: { code } } : {}) }],
});

/** Thrown for a request the protocol answers with a status and a JSON error body. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

/**
 * GraphQL over Server-Sent Events (the graphql-sse protocol) at /graphql, in both modes, on the
 * connection core. Distinct connections: one stream per operation (GET or POST with
 * `Accept: text/event-stream`). Single connection: PUT reserves a stream (the reservation is
 * already a registered connection, counted against the limits, dropped unless opened within
 * SSE_RESERVATION_TIMEOUT_MS), GET opens it, operations are POSTed with the stream token and
 * stopped with DELETE. Every operation runs as the stream's identity (a request of another
 * identity is refused, FORBIDDEN) and goes through the fan-out into the stream's bounded wire,
 * also before the stream is open. Reserved streams live in the instance that made them.
 */
export function createSseServer(options: SseOptions) {
  const { operations, auth, core } = options;
  const reservations = new Map<string, Reservation>();
  /** Unopened reservations in the order they were made (so their deadlines are in order too). */
  const unopened = new Map<string, Reservation>();
  let sweep: NodeJS.Timeout | null = null;

  function sweepReservations() {
    const now = Date.now();
    for (const [token, reservation] of unopened) {
      if ((reservation.deadline ?? 0) > now) break;
      unopened.delete(token);
      reservation.connection.close(CloseCode.Normal, 'reservation not opened in time');
    }
    if (unopened.size === 0 && sweep) {
      clearInterval(sweep);
      sweep = null;
    }
  }

  async function viewerOf(req: IncomingMessage): Promise<Viewer | null> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const token = url.searchParams.get('token');
    if (token !== null && !isJwt(token)) url.searchParams.delete('token');
    try {
      // Every request here is part of a graphql-sse stream (reservation, stream, operation).
      return await auth.fromRequest({
        headers: req.headers,
        url: url.pathname + url.search,
        stream: true,
      });
    } catch (error) {
      throw new Refusal(401, authError(error).message, 'UNAUTHENTICATED');
    }
  }

  function open(viewer: Viewer | null, wire: ResponseWire): Connection {
    try {
      return core.open('sse', viewer, wire);
    } catch (error) {
      // MAX_CONNECTIONS or the anonymous pool (503), MAX_CONNECTIONS_PER_USER (429).
      if (error instanceof RateLimitedError) {
        throw new Refusal(error.status, error.message, 'RATE_LIMITED');
      }
      // No token where anonymous connections are off.
      if (isAppError(error)) throw new Refusal(401, error.message, 'UNAUTHENTICATED');
      throw error;
    }
  }

  async function paramsOf(req: IncomingMessage): Promise<OperationParams> {
    let raw: Record<string, unknown>;
    if (req.method === 'GET') {
      const search = new URL(req.url ?? '/', 'http://localhost').searchParams;
      raw = {
        query: search.get('query') ?? undefined,
        operationName: search.get('operationName') ?? undefined,
      };
      for (const key of ['variables', 'extensions']) {
        const value = search.get(key);
        if (value === null) continue;
        try {
          raw[key] = JSON.parse(value);
        } catch {
          throw new Refusal(400, `Unparsable ${key}`);
        }
      }
    } else {
      if (!req.headers['content-type']?.includes('application/json')) {
        throw new Refusal(415, 'Send the operation as application/json');
      }
      let text: string;
      try {
        text = (await readBody(req, options.maxBodyBytes)).toString('utf8');
      } catch (error) {
        if (!(error instanceof BodyTooLarge)) throw error;
        options.onLimit('bodyBytes', null);
        throw new Refusal(413, 'Request body too large (MAX_BODY_BYTES)');
      }
      try {
        raw = JSON.parse(text) as Record<string, unknown>;
      } catch {
        throw new Refusal(400, 'The body is not JSON');
      }
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        throw new Refusal(400, 'JSON body must be an object');
      }
    }
    if (typeof raw['query'] !== 'string') throw new Refusal(400, 'Missing query');
    const isMap = (v: unknown) => v == null || (typeof v === 'object' && !Array.isArray(v));
    if (!isMap(raw['variables'])) throw new Refusal(400, 'Invalid variables');
    if (!isMap(raw['extensions'])) throw new Refusal(400, 'Invalid extensions');
    const operationName = raw['operationName'];
    if (operationName != null && typeof operationName !== 'string') {
      throw new Refusal(400, 'Invalid operationName');
    }
    return raw as unknown as OperationParams;
  }

  /** The reservation a request names, checked against the request's identity. */
  function reservationOf(req: IncomingMessage, viewer: Viewer | null): Reservation {
    const token = streamToken(req);
    const reservation = token === null ? undefined : reservations.get(token);
    if (!reservation) throw new Refusal(404, 'Stream not found');
    if ((reservation.connection.viewer?.userId ?? null) !== (viewer?.userId ?? null)) {
      throw new Refusal(403, 'This stream belongs to another identity', 'FORBIDDEN');
    }
    return reservation;
  }

  function respondHeaders(req: IncomingMessage, res: ServerResponse) {
    // HTTP/2 forbids connection-specific headers.
    res.writeHead(
      200,
      req.httpVersionMajor >= 2 ? SSE_HEADERS : { ...SSE_HEADERS, connection: 'keep-alive' },
    );
    // An empty comment, because some browsers do not count a flush of headers alone.
    res.write(':\n\n');
    res.socket?.setNoDelay(true);
  }

  /** PUT: reserves a stream for this identity and answers its token. */
  async function reserve(req: IncomingMessage, res: ServerResponse) {
    const viewer = await viewerOf(req);
    const wire = new ResponseWire(options.keepAliveMs, ':\n\n');
    const connection = open(viewer, wire);
    const token = randomUUID();
    const reservation: Reservation = {
      connection,
      wire,
      operations: new Map(),
      deadline: Date.now() + options.reservationTimeoutMs,
    };
    reservations.set(token, reservation);
    unopened.set(token, reservation);
    connection.hold({
      end: () => {
        reservations.delete(token);
        unopened.delete(token);
        const running = [...reservation.operations.values()];
        reservation.operations.clear();
        for (const operation of running) operation?.stop();
      },
    });
    sweep ??= setInterval(sweepReservations, Math.min(1000, options.reservationTimeoutMs));
    sweep.unref();
    res.writeHead(201, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(token);
  }

  /** GET with a reservation token: opens the reserved stream and writes what it held. */
  async function openReserved(req: IncomingMessage, res: ServerResponse) {
    const viewer = await viewerOf(req);
    const reservation = reservationOf(req, viewer);
    if (reservation.wire.opened) throw new Refusal(409, 'Stream already open');
    const token = streamToken(req) as string;
    unopened.delete(token);
    reservation.deadline = null;
    respondHeaders(req, res);
    res.once('close', () => reservation.connection.gone());
    reservation.wire.open(res);
  }

  /** POST with a reservation token: runs an operation on the reserved stream. */
  async function operate(req: IncomingMessage, res: ServerResponse) {
    const viewer = await viewerOf(req);
    const reservation = reservationOf(req, viewer);
    const params = await paramsOf(req);
    const id = params.extensions?.['operationId'];
    if (typeof id !== 'string' || id === '') throw new Refusal(400, 'Operation ID is missing');
    const { connection, operations: running } = reservation;
    if (running.has(id)) throw new Refusal(409, 'Operation with ID already exists');
    if (running.size >= options.maxSubscriptions) {
      options.onLimit('subscriptionsPerConnection', viewer?.userId ?? null);
      const error = tooManySubscriptions(options.maxSubscriptions);
      return sendJson(res, 429, { errors: [error.toJSON()] });
    }
    running.set(id, null);
    const sink = new ReservedStreamEvents(reservation, id);
    const started = await operations.start(connection, requestInfo(req, 'sse'), params, sink);
    if (isRefused(started)) {
      running.delete(id);
      return sendJson(res, 400, { errors: started.errors.map((e) => e.toJSON()) });
    }
    if (running.get(id) === null && !connection.closed) running.set(id, started);
    else started.stop();
    res.writeHead(202);
    res.end();
  }

  /** DELETE with a reservation token and `?operationId=`: stops that operation. */
  async function stop(req: IncomingMessage, res: ServerResponse) {
    const viewer = await viewerOf(req);
    const reservation = reservationOf(req, viewer);
    const id = new URL(req.url ?? '/', 'http://localhost').searchParams.get('operationId');
    if (!id) throw new Refusal(400, 'Operation ID is missing');
    const operation = reservation.operations.get(id);
    reservation.operations.delete(id);
    operation?.stop();
    res.writeHead(200);
    res.end();
  }

  /** A stream of its own for one operation (distinct connections mode). */
  async function distinct(req: IncomingMessage, res: ServerResponse) {
    const viewer = await viewerOf(req);
    const params = await paramsOf(req);
    const wire = new ResponseWire(options.keepAliveMs, ':\n\n');
    const connection = open(viewer, wire);
    respondHeaders(req, res);
    res.once('close', () => connection.gone());
    wire.open(res);
    const sink = new StreamEvents(connection);
    const started = await operations.start(connection, requestInfo(req, 'sse'), params, sink, {
      mutations: req.method !== 'GET',
    });
    if (!isRefused(started)) {
      // The stream ends with the operation; the client ends it by going away.
      connection.hold({ end: () => started.stop() });
      return;
    }
    sink.next(JSON.stringify({ errors: started.errors.map((e) => e.toJSON()) }));
    sink.complete();
  }

  return {
    async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
      try {
        const method = req.method ?? 'GET';
        const reserved = streamToken(req) !== null;
        if (method === 'PUT') return await reserve(req, res);
        if (method === 'DELETE') return await stop(req, res);
        if (method !== 'GET' && method !== 'POST') {
          res.setHeader('allow', 'GET, POST, PUT, DELETE');
          throw new Refusal(405, 'Method not allowed');
        }
        if (req.headers.accept === 'text/event-stream') {
          return await (reserved ? openReserved(req, res) : distinct(req, res));
        }
        return await operate(req, res);
      } catch (error) {
        if (!(error instanceof Refusal)) throw error;
        sendJson(res, error.status, errorBody(error.message, error.code));
      }
    },
  };
}
