import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import type { Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import type { AutoupdateBatch } from '../domain/autoupdate.ts';
import type { PushedEvent } from '../domain/change-log.ts';
import { badInput, forbidden, isAppError, rateLimitStatus, unauthenticated } from '../errors.ts';
import type { Connection } from '../net/connection.ts';
import { type CloseFrame, WebSocketWire } from '../net/wires.ts';
import { refuseUpgrade } from '../transport/http.ts';
import { readJson, viewerOf, writeText } from './http.ts';
import type { LegacyDeps } from './index.ts';
import type { LegacyRoute } from './route.ts';

/** The membership set of access ids with an open notifier socket (GET clients). */
const CLIENTS_SET = 'notifier:clients';
const WRONG_ANNOUNCEMENT = 'Wrong JSON announcement';

/** A dropped notifier client gets what the original sent: a normal close, "close". */
const notifierClose: CloseFrame = (code, reason) =>
  reason === 'dropped' ? [CloseCode.Normal, 'close'] : [code, reason];

/** Who a connector is when it authenticates with NOTIFIER_SECRET instead of a token. */
const SECRET_CONNECTOR: Viewer = {
  userId: 'notifier-connector',
  group: null,
  isService: true,
  expiresAt: null,
};

function sameSecret(given: string, secret: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(secret);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The first frame: `{"access_id": "...", "timestamp": N}`, or null when malformed. */
function parseAnnouncement(data: string): { accessId: string; timestamp: number } | null {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const { access_id: accessId, timestamp } = value as Record<string, unknown>;
  if (typeof accessId !== 'string' || accessId === '' || accessId.length > 255) return null;
  if (typeof timestamp !== 'number' || !Number.isFinite(timestamp)) return null;
  return { accessId, timestamp };
}

/** A push_events body: `[{"accessid","created_at","payload"}]` (BAD_USER_INPUT otherwise). */
function parseEvents(body: unknown, now: number): PushedEvent[] {
  if (!Array.isArray(body)) throw badInput('The body has to be a JSON array of events');
  return body.map((item: unknown, i) => {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      throw badInput(`Event ${i} is not an object`);
    }
    const e = item as Record<string, unknown>;
    const accessId = e['accessid'] ?? e['access_id'];
    if (typeof accessId !== 'string') throw badInput(`Event ${i}: accessid must be a string`);
    const createdAt = e['created_at'] ?? now;
    if (typeof createdAt !== 'number') throw badInput(`Event ${i}: created_at must be a number`);
    return { accessId, createdAt, payload: e['payload'] };
  });
}

const eventFrame = (batch: AutoupdateBatch) =>
  JSON.stringify(
    batch.events.map((e) => ({
      accessid: e.accessId,
      created_at: e.createdAt,
      payload: e.payload,
    })),
  );

/**
 * The notifier (ernius/notifier) under NOTIFIER_PREFIX: WebSocket `subscribe_to_events` (first
 * frame `{"access_id","timestamp"}`, then JSON-array frames of `{"accessid","created_at",
 * "payload"}` with created_at >= timestamp, replayed from Postgres and then live), `POST
 * push_events` and `POST drop_user` (answer `true`), `GET clients`. Unlike the original, every
 * socket of an access id receives its events, push/drop/clients need a service token or
 * NOTIFIER_SECRET, and subscribing needs a token for that access id (or NOTIFIER_OPEN=true).
 */
export function createNotifierRoute(deps: LegacyDeps): LegacyRoute {
  const { config, services, auth, logger, core } = deps;

  /** The connector behind an HTTP request: a service token or the shared secret. */
  async function connector(req: IncomingMessage): Promise<Viewer> {
    const header = req.headers.authorization;
    const secret = config.NOTIFIER_SECRET;
    if (secret !== undefined && typeof header === 'string') {
      const given = header.replace(/^bearer\s+/i, '');
      if (sameSecret(given, secret)) return SECRET_CONNECTOR;
    }
    const viewer = await viewerOf(auth, req);
    if (!viewer) throw unauthenticated();
    if (!viewer.isService) throw forbidden('Only connectors (service tokens) may do this');
    return viewer;
  }

  function requireJson(req: IncomingMessage): void {
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (type !== 'application/json') throw new UnsupportedMediaType();
  }

  /** Answers the announcement: subscribes the connection to its access id's events. */
  async function subscribe(connection: Connection, data: string): Promise<void> {
    const announcement = parseAnnouncement(data);
    if (!announcement) {
      connection.send(WRONG_ANNOUNCEMENT);
      connection.close(CloseCode.Normal, 'close');
      return;
    }
    const { accessId, timestamp } = announcement;
    const { viewer } = connection;
    const allowed =
      config.NOTIFIER_OPEN || (viewer !== null && (viewer.isService || viewer.userId === accessId));
    if (!allowed) return connection.close(CloseCode.Forbidden, 'forbidden');
    // The socket belongs to the access id: dropUser(accessId) and drop_user find it.
    const identity: Viewer = {
      userId: accessId,
      group: viewer?.group ?? null,
      isService: false,
      expiresAt: viewer?.expiresAt ?? null,
    };
    core.identify(connection, identity);
    if (connection.closed) return;
    connection.hold({ end: services.membership.join(CLIENTS_SET, accessId) });
    const batches = await services.autoupdate.subscribe(
      identity,
      { changeId: 0, since: timestamp, data: false },
      connection,
    );
    for await (const batch of batches) {
      if (batch.events.length > 0) connection.send(eventFrame(batch));
    }
  }

  /** A notifier socket: a connection of the token's viewer until its announcement names one. */
  function onSocket(socket: WebSocket, viewer: Viewer | null): void {
    let connection: Connection;
    try {
      connection = core.open(
        'legacy-ws',
        viewer,
        new WebSocketWire(socket, config.WS_KEEPALIVE_MS, notifierClose),
      );
    } catch (error) {
      if (rateLimitStatus(error) === null) throw error;
      socket.close(CloseCode.TooManyConnections, 'too many connections');
      return;
    }
    socket.on('error', (error) => {
      logger.debug({ err: error }, 'notifier socket error');
      socket.terminate();
    });
    const timer = setTimeout(
      () => connection.close(CloseCode.Normal, 'no announcement'),
      config.NOTIFIER_ANNOUNCE_TIMEOUT_MS,
    );
    socket.once('close', () => {
      clearTimeout(timer);
      connection.gone();
    });
    // The first frame is the announcement; later frames mean nothing (as in the original).
    socket.once('message', (data, isBinary) => {
      clearTimeout(timer);
      subscribe(connection, isBinary ? '' : String(data)).catch((error: unknown) => {
        if (!isAppError(error)) logger.error({ err: error }, 'notifier subscription failed');
        connection.close(CloseCode.InternalError, 'Internal server error');
      });
    });
  }

  const pushEvents = async (req: IncomingMessage, res: ServerResponse) => {
    const viewer = await connector(req);
    requireJson(req);
    const body = await readJson(req, config.MAX_BODY_BYTES);
    await services.changeLog.pushEvents(viewer, parseEvents(body, Date.now()));
    writeText(res, 200, 'true');
  };

  const dropUser = async (req: IncomingMessage, res: ServerResponse) => {
    const viewer = await connector(req);
    requireJson(req);
    const body = (await readJson(req, config.MAX_BODY_BYTES)) as Record<string, unknown> | null;
    const accessId = body?.['drop_access_id'];
    if (typeof accessId !== 'string' || accessId === '') {
      throw badInput('The body has to be {"drop_access_id": "<access id>"}');
    }
    await services.dropUser.drop(viewer, accessId, 'notifier drop_user');
    writeText(res, 200, 'true');
  };

  const clients = async (req: IncomingMessage, res: ServerResponse) => {
    await connector(req);
    const members = (await services.membership.members(CLIENTS_SET)).sort();
    writeText(res, 200, `Connected clients:${members.map((m) => `${m} `).join('')}`);
  };

  const endpoints: Record<string, [string, typeof clients]> = {
    '/push_events': ['POST', pushEvents],
    '/drop_user': ['POST', dropUser],
    '/clients': ['GET', clients],
  };

  return {
    prefix: config.NOTIFIER_PREFIX,
    async handle(req, res, path) {
      const endpoint = endpoints[path];
      if (!endpoint) return writeText(res, 404, 'Not Found');
      const [method, serve] = endpoint;
      if (req.method !== method) return writeText(res, 405, 'Method Not Allowed');
      try {
        await serve(req, res);
      } catch (error) {
        if (error instanceof UnsupportedMediaType)
          return writeText(res, 415, 'Unsupported Media Type');
        if (!isAppError(error)) {
          logger.error({ err: error, path }, 'notifier request failed');
          return writeText(res, 500, 'Internal Server Error');
        }
        const status =
          rateLimitStatus(error) ??
          { UNAUTHENTICATED: 401, FORBIDDEN: 403, NOT_FOUND: 404 }[error.code as string];
        writeText(res, status ?? 400, status ? error.message : `Bad Request: ${error.message}`);
      }
    },
    upgrade(req, socket, head, path) {
      if (path !== '/subscribe_to_events') return refuseUpgrade(socket, 404, 'Not Found');
      viewerOf(auth, req)
        .then((viewer) => {
          if (!viewer && !config.NOTIFIER_OPEN) return refuseUpgrade(socket, 401, 'Unauthorized');
          try {
            core.admit(viewer);
          } catch (error) {
            const status = rateLimitStatus(error);
            if (status !== null) return refuseUpgrade(socket, status, 'Too Many Connections');
            return refuseUpgrade(socket, isAppError(error) ? 401 : 500, 'Unauthorized');
          }
          deps.websockets.accept(req, socket, head, (ws) => onSocket(ws, viewer));
        })
        .catch(() => refuseUpgrade(socket, 401, 'Unauthorized'));
    },
  };
}

class UnsupportedMediaType extends Error {}
