import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Authenticator, Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import type { SseCommand, SseHandedOperation, SseRequestInfo } from '../domain/events.ts';
import { isAppError, RateLimitedError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Connection } from '../net/connection.ts';
import type { ConnectionCore } from '../net/core.ts';
import { ResponseWire } from '../net/wires.ts';
import type { PubSub } from '../pubsub/index.ts';
import type { SseClaim, SseReservationStore } from '../stores/sse-reservations.ts';
import { authError, requestInfo } from './context.ts';
import { encodeFrame, type OperationSink, type Running } from './fanout.ts';
import { tooManySubscriptions } from './graphql-ws.ts';
import { BodyTooLarge, readBody, sendJson } from './http.ts';
import {
  isRefused,
  type OperationParams,
  type OperationRunner,
  type Started,
} from './operation.ts';
import { createSseForwarding, type SseAnswer, type SseRequest } from './sse-forward.ts';

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
  /** Reservations shared by every instance (memory for one instance). */
  store: SseReservationStore;
  /** Carries requests to the instance that owns a reservation, and their answers. */
  pubsub: PubSub;
  /** This instance, as the store and the other instances name it. */
  instanceId: string;
  /**
   * How long a request forwarded to the instance owning a reservation waits for its answer
   * (SSE_FORWARD_TIMEOUT_MS): a POST or DELETE then gets 503, a GET opens the stream without
   * what the reserving instance held.
   */
  forwardTimeoutMs: number;
  /**
   * How long the store keeps an open stream's entry without renewal (INSTANCE_TTL_MS): the
   * entries of an instance that died expire after it. Renewed every third of it.
   */
  leaseMs: number;
  logger: Logger;
}

const STREAM_TOKEN_HEADER = 'x-graphql-event-stream-token';
/** The reservation tokens this server makes (UUIDs); no other is looked up. */
const TOKEN_SHAPE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
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

/** An operation of a reserved stream: what runs, and what started it (for a hand-over). */
interface StreamOperation {
  /** Null while it is being started. */
  running: Running | null;
  params: OperationParams;
  info: SseRequestInfo;
}

/**
 * A reservation this instance owns: a registered connection whose wire opens on GET. Made here
 * by a PUT, or claimed here by a GET that found it reserved on another instance.
 */
interface Reservation {
  token: string;
  connection: Connection;
  wire: ResponseWire;
  /** Operations by their client-chosen id. */
  operations: Map<string, StreamOperation>;
  /** Operations being started; a hand-over waits for them. */
  starting: Set<Promise<unknown>>;
  /** When an unopened reservation is dropped (epoch ms); null once a GET took it. */
  deadline: number | null;
  /** A GET took it, here or on another instance: no second stream may. */
  claimed: boolean;
  /** Resolves once what another instance handed over runs here (at once for a PUT made here). */
  ready: Promise<void>;
  /** Its stream opened on another instance: requests go there, the store entry is not ours. */
  moving: boolean;
}

/** What an HTTP request on a reservation is answered with, here or by a forwarded request. */
interface Outcome {
  status: number;
  /** The JSON body; null for none (202, 200). */
  body: unknown;
}

/** The reservation is no longer on the instance asked: ask the store where it went. */
const MOVED = Symbol('moved');
/** How often a request follows a reservation that moved before it gives up (404). */
const MAX_HOPS = 3;

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
 * also before the stream is open.
 *
 * No request of a reservation needs the instance of another: the reservation store tells every
 * instance whose each reservation is and which instance owns it. Its owner is the instance of the
 * PUT until a stream opens, then the instance of the stream. A POST or DELETE that reaches
 * another instance is checked there (token, identity, body) and forwarded to the owner through
 * pub/sub, which decides the answer (202, 409, 429, 400...); no answer within
 * SSE_FORWARD_TIMEOUT_MS is a 503. A GET on another instance than the PUT's claims the
 * reservation and asks the reserving instance to hand it over: the events its operations
 * produced so far, and the operations still running, which start again on the stream (events
 * between the two are lost, at most once). The reserving instance then closes its reservation
 * connection.
 */
export function createSseServer(options: SseOptions) {
  const { operations, auth, core, store, instanceId, logger } = options;
  /** The reservations this instance owns, by token. */
  const reservations = new Map<string, Reservation>();
  /** Unopened reservations in the order they were made (so their deadlines are in order too). */
  const unopened = new Map<string, Reservation>();
  let sweep: NodeJS.Timeout | null = null;
  /** Streams open here whose store entries this instance keeps alive. */
  const leased = new Set<string>();
  let renewal: NodeJS.Timeout | null = null;
  const forwarding = createSseForwarding({
    pubsub: options.pubsub,
    instanceId,
    timeoutMs: options.forwardTimeoutMs,
    logger,
    answer,
  });

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

  function lease(token: string) {
    leased.add(token);
    if (renewal) return;
    renewal = setInterval(() => {
      store.renew([...leased], options.leaseMs).catch((error: unknown) => {
        logger.warn({ err: error }, 'sse reservation renewal failed');
      });
    }, options.leaseMs / 3);
    renewal.unref();
  }

  function unlease(token: string) {
    if (!leased.delete(token) || leased.size > 0 || !renewal) return;
    clearInterval(renewal);
    renewal = null;
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

  /** A store call; a store that does not answer (Redis down) is a 503 the client may retry. */
  async function fromStore<T>(call: Promise<T>): Promise<T> {
    try {
      return await call;
    } catch (error) {
      logger.warn({ err: error }, 'sse reservation store failed');
      throw new Refusal(503, 'Streams cannot be reserved or found now; retry', 'UNAVAILABLE');
    }
  }

  const notFound = () => new Refusal(404, 'Stream not found');
  const forbidden = () => new Refusal(403, 'This stream belongs to another identity', 'FORBIDDEN');
  const userOf = (reservation: Reservation) => reservation.connection.viewer?.userId ?? null;

  /**
   * Where the requests of reservation `token` of `userId` go: a reservation of this instance, or
   * the instance that owns it (the store says). 404 without one, 403 for another identity.
   */
  async function locate(
    token: string | null,
    userId: string | null,
  ): Promise<Reservation | { owner: string }> {
    // Ours are UUIDs: anything else is no reservation (and never becomes a Redis key).
    if (token === null || !TOKEN_SHAPE.test(token)) throw notFound();
    const local = reservations.get(token);
    if (local) {
      if (userOf(local) !== userId) throw forbidden();
      return local;
    }
    const route = await fromStore(store.route(token));
    if (!route) throw notFound();
    if (route.userId !== userId) throw forbidden();
    return { owner: route.owner };
  }

  /**
   * Runs `here` on the reservation where it is, or asks its owner; follows a reservation that
   * moved (its stream opened elsewhere) at most MAX_HOPS times.
   */
  async function dispatch(
    token: string,
    userId: string | null,
    first: Reservation | { owner: string },
    here: (reservation: Reservation) => Promise<Outcome | typeof MOVED>,
    request: SseRequest,
  ): Promise<Outcome> {
    let target = first;
    for (let hop = 1; ; hop++) {
      const outcome = 'owner' in target ? await remote(target.owner, request) : await here(target);
      if (outcome !== MOVED) return outcome;
      if (hop >= MAX_HOPS) throw notFound();
      target = await locate(token, userId);
    }
  }

  async function remote(owner: string, request: SseRequest): Promise<Outcome | typeof MOVED> {
    const answer = await forwarding.ask(owner, request);
    if (answer === null) {
      return {
        status: 503,
        body: errorBody('The instance holding this stream did not answer; retry', 'UNAVAILABLE'),
      };
    }
    if (answer.kind === 'moved') return MOVED;
    if (answer.kind === 'done') return { status: answer.status, body: answer.body };
    throw new Error(`unexpected answer ${answer.kind} to ${request.kind}`);
  }

  /** Answers a request forwarded by another instance. */
  async function answer(command: SseCommand): Promise<SseAnswer> {
    if (command.kind === 'handOver') return handOver(command.token);
    const reservation = reservations.get(command.token);
    const outcome = !reservation
      ? MOVED
      : command.kind === 'operate'
        ? await operateOn(reservation, command.userId, command.params, command.info)
        : await stopOn(reservation, command.userId, command.operationId);
    return outcome === MOVED ? { kind: 'moved' } : { kind: 'done', ...outcome };
  }

  /** Registers a reservation owned here: it ends with its connection. */
  function register(reservation: Reservation) {
    const { token, connection } = reservation;
    reservations.set(token, reservation);
    connection.hold({
      end: () => {
        if (reservations.get(token) === reservation) reservations.delete(token);
        unopened.delete(token);
        unlease(token);
        const running = [...reservation.operations.values()];
        reservation.operations.clear();
        for (const operation of running) operation.running?.stop();
        // Once handed over, the entry belongs to the instance of the stream.
        if (reservation.moving) return;
        store.release(token, instanceId).catch((error: unknown) => {
          logger.warn({ err: error }, 'sse reservation release failed');
        });
      },
    });
  }

  /** Starts an operation on a reservation of this instance; its answer. */
  async function operateOn(
    reservation: Reservation,
    userId: string | null,
    params: OperationParams,
    info: SseRequestInfo,
  ): Promise<Outcome | typeof MOVED> {
    await reservation.ready;
    if (reservation.moving) return MOVED;
    if (userOf(reservation) !== userId) return refusal(forbidden());
    const id = params.extensions?.['operationId'];
    if (typeof id !== 'string' || id === '')
      return refusal(new Refusal(400, 'Operation ID is missing'));
    if (reservation.operations.has(id)) {
      return refusal(new Refusal(409, 'Operation with ID already exists'));
    }
    if (reservation.operations.size >= options.maxSubscriptions) {
      options.onLimit('subscriptionsPerConnection', userId);
      const error = tooManySubscriptions(options.maxSubscriptions);
      return { status: 429, body: { errors: [error.toJSON()] } };
    }
    const started = await start(reservation, id, params, info);
    if (isRefused(started)) {
      return { status: 400, body: { errors: started.errors.map((e) => e.toJSON()) } };
    }
    return { status: 202, body: null };
  }

  /**
   * Starts operation `id` on `reservation` (the caller checked the limits) and records it while
   * it runs; a hand-over waits for it.
   */
  async function start(
    reservation: Reservation,
    id: string,
    params: OperationParams,
    info: SseRequestInfo,
  ): Promise<Started> {
    const { connection, operations: running } = reservation;
    const operation: StreamOperation = { running: null, params, info };
    running.set(id, operation);
    const sink = new ReservedStreamEvents(reservation, id);
    const starting = operations.start(connection, { transport: 'sse', ...info }, params, sink);
    reservation.starting.add(starting);
    let started: Started;
    try {
      started = await starting;
    } finally {
      reservation.starting.delete(starting);
    }
    if (isRefused(started)) {
      if (running.get(id) === operation) running.delete(id);
      return started;
    }
    // Not stopped (DELETE), completed or closed meanwhile.
    if (running.get(id) === operation && !connection.closed) operation.running = started;
    else started.stop();
    return started;
  }

  /** Stops an operation of a reservation of this instance. */
  async function stopOn(
    reservation: Reservation,
    userId: string | null,
    id: string,
  ): Promise<Outcome | typeof MOVED> {
    await reservation.ready;
    // Until the hand-over took its operations, stopping one here keeps it from moving.
    if (reservation.moving && reservation.connection.closed) return MOVED;
    if (userOf(reservation) !== userId) return refusal(forbidden());
    const operation = reservation.operations.get(id);
    reservation.operations.delete(id);
    operation?.running?.stop();
    return { status: 200, body: null };
  }

  /**
   * The stream of a reservation made here opened on another instance: waits for operations
   * being started, then gives away the events not yet sent and the operations still running,
   * and closes the reservation here (its count, its operations).
   */
  async function handOver(token: string): Promise<SseAnswer> {
    const reservation = reservations.get(token);
    const nothing: SseAnswer = { kind: 'handedOver', frames: '', operations: [] };
    if (!reservation || reservation.moving) return nothing;
    reservation.moving = true;
    reservation.claimed = true;
    unopened.delete(token);
    reservations.delete(token);
    // No operation starts here any more (`moving`); those under way finish first.
    await Promise.allSettled([...reservation.starting]);
    const { connection, wire } = reservation;
    if (connection.closed) return nothing;
    const frames = wire.takeHeld();
    const handed: SseHandedOperation[] = [];
    for (const [id, operation] of reservation.operations) {
      if (!operation.running) continue;
      handed.push({ id, params: operation.params, info: operation.info });
      operation.running.stop();
    }
    reservation.operations.clear();
    connection.close(CloseCode.Normal, 'stream opened on another instance');
    return { kind: 'handedOver', frames, operations: handed };
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
    try {
      await fromStore(
        store.reserve(
          token,
          { userId: viewer?.userId ?? null, instanceId },
          options.reservationTimeoutMs,
        ),
      );
    } catch (error) {
      connection.close(CloseCode.Normal, 'reservation not stored');
      throw error;
    }
    const reservation: Reservation = {
      token,
      connection,
      wire,
      operations: new Map(),
      starting: new Set(),
      deadline: Date.now() + options.reservationTimeoutMs,
      claimed: false,
      ready: Promise.resolve(),
      moving: false,
    };
    register(reservation);
    // Dropped (dropUser, shutdown) while the store wrote it: it is gone again.
    if (connection.closed) throw new Refusal(503, 'The reservation was closed at once; retry');
    unopened.set(token, reservation);
    sweep ??= setInterval(sweepReservations, Math.min(1000, options.reservationTimeoutMs));
    sweep.unref();
    res.writeHead(201, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(token);
  }

  /** GET with a reservation token: opens the reserved stream and writes what it held. */
  async function openReserved(req: IncomingMessage, res: ServerResponse) {
    const viewer = await viewerOf(req);
    const userId = viewer?.userId ?? null;
    const token = streamToken(req);
    if (token === null || !TOKEN_SHAPE.test(token)) throw notFound();
    const local = reservations.get(token);
    if (!local) return openClaimed(req, res, viewer, token);
    if (userOf(local) !== userId) throw forbidden();
    if (local.claimed || local.wire.opened) throw new Refusal(409, 'Stream already open');
    local.claimed = true;
    let claim: SseClaim;
    try {
      claim = await fromStore(store.claim(token, { userId, instanceId }, options.leaseMs));
    } catch (error) {
      // The store did not answer: the client may try again.
      local.claimed = false;
      throw error;
    }
    // Taken by a GET on another instance meanwhile (the hand-over is on its way), or expired.
    if (claim.status === 'open') throw new Refusal(409, 'Stream already open');
    if (claim.status !== 'claimed' || local.connection.closed) throw notFound();
    unopened.delete(token);
    local.deadline = null;
    lease(token);
    respondHeaders(req, res);
    res.once('close', () => local.connection.gone());
    local.wire.open(res);
  }

  /**
   * GET with the token of a reservation another instance made: opens a connection here, claims
   * the reservation for it and takes over what the reserving instance held.
   */
  async function openClaimed(
    req: IncomingMessage,
    res: ServerResponse,
    viewer: Viewer | null,
    token: string,
  ) {
    const userId = viewer?.userId ?? null;
    const wire = new ResponseWire(options.keepAliveMs, ':\n\n');
    const connection = open(viewer, wire);
    let claim: SseClaim;
    try {
      claim = await fromStore(store.claim(token, { userId, instanceId }, options.leaseMs));
    } catch (error) {
      connection.close(CloseCode.Normal, 'reservation not claimed');
      throw error;
    }
    if (claim.status !== 'claimed') {
      connection.close(CloseCode.Normal, 'reservation not claimed');
      if (claim.status === 'forbidden') throw forbidden();
      if (claim.status === 'open') throw new Refusal(409, 'Stream already open');
      throw notFound();
    }
    let handedOver = () => {};
    const reservation: Reservation = {
      token,
      connection,
      wire,
      operations: new Map(),
      starting: new Set(),
      deadline: null,
      claimed: true,
      // Requests that reach this instance before the hand-over wait for it (order, ids).
      ready: new Promise<void>((resolve) => {
        handedOver = resolve;
      }),
      moving: false,
    };
    register(reservation);
    lease(token);
    let gone = false;
    res.once('close', () => {
      gone = true;
      connection.gone();
    });
    try {
      if (claim.reservedBy !== instanceId) await takeOver(reservation, claim.reservedBy);
    } finally {
      handedOver();
    }
    if (gone) return;
    respondHeaders(req, res);
    wire.open(res);
  }

  /** Asks the reserving instance for what it held and runs it on `reservation`. */
  async function takeOver(reservation: Reservation, reservedBy: string) {
    const answer = await forwarding.ask(reservedBy, { kind: 'handOver', token: reservation.token });
    if (answer?.kind !== 'handedOver') {
      // It died or did not answer in time: the stream opens without what it held.
      logger.warn({ reservedBy }, 'sse reservation not handed over');
      return;
    }
    const { connection } = reservation;
    if (connection.closed) return;
    if (answer.frames) connection.send(answer.frames);
    for (const { id, params, info } of answer.operations) {
      start(reservation, id, params, info).catch((error: unknown) => {
        logger.error({ err: error }, 'sse operation not started again');
      });
    }
  }

  /** POST with a reservation token: runs an operation on the reserved stream. */
  async function operate(req: IncomingMessage, res: ServerResponse) {
    const viewer = await viewerOf(req);
    const userId = viewer?.userId ?? null;
    const token = streamToken(req);
    const target = await locate(token, userId);
    const params = await paramsOf(req);
    const id = params.extensions?.['operationId'];
    if (typeof id !== 'string' || id === '') throw new Refusal(400, 'Operation ID is missing');
    const info = requestInfo(req, 'sse');
    const from: SseRequestInfo = { ip: info.ip, userAgent: info.userAgent };
    const outcome = await dispatch(
      token as string,
      userId,
      target,
      (reservation) => operateOn(reservation, userId, params, from),
      { kind: 'operate', token: token as string, userId, params, info: from },
    );
    answerWith(res, outcome);
  }

  /** DELETE with a reservation token and `?operationId=`: stops that operation. */
  async function stop(req: IncomingMessage, res: ServerResponse) {
    const viewer = await viewerOf(req);
    const userId = viewer?.userId ?? null;
    const token = streamToken(req);
    const target = await locate(token, userId);
    const id = new URL(req.url ?? '/', 'http://localhost').searchParams.get('operationId');
    if (!id) throw new Refusal(400, 'Operation ID is missing');
    const outcome = await dispatch(
      token as string,
      userId,
      target,
      (reservation) => stopOn(reservation, userId, id),
      { kind: 'stop', token: token as string, userId, operationId: id },
    );
    answerWith(res, outcome);
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

    /** Stops answering other instances and the timers (shutdown, after the connections closed). */
    close(): void {
      forwarding.close();
      if (sweep) clearInterval(sweep);
      if (renewal) clearInterval(renewal);
      sweep = null;
      renewal = null;
    },
  };
}

/** A refusal as an answer (for a request that may have come from another instance). */
function refusal(error: Refusal): Outcome {
  return { status: error.status, body: errorBody(error.message, error.code) };
}

function answerWith(res: ServerResponse, outcome: Outcome) {
  if (outcome.body !== null) return sendJson(res, outcome.status, outcome.body);
  res.writeHead(outcome.status);
  res.end();
}
