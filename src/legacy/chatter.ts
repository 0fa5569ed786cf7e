import type { IncomingMessage, ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import type { Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import { type ChatEvent, type ChatMessage, isConnectionState } from '../domain/chat.ts';
import type { UserAdmin } from '../domain/users.ts';
import { ErrorCode, isAppError, rateLimitStatus } from '../errors.ts';
import type { Connection } from '../net/connection.ts';
import { WebSocketWire } from '../net/wires.ts';
import { refuseUpgrade } from '../transport/http.ts';
import {
  BodyTooLarge,
  parseJson,
  readBody,
  requestUrl,
  respond,
  viewerOf as tokenViewerOf,
} from './http.ts';
import type { LegacyDeps } from './index.ts';
import type { LegacyRoute } from './route.ts';

/**
 * Close code of a chatter WebSocket that sent a frame that is not a JSON object with a string
 * `username_to` (RFC 6455 1007: data inconsistent with the message type). Only that socket closes.
 */
export const CHATTER_BAD_FRAME = 1007;

/** chatter's envelope: `{"result": x, "message": null}` or `{"result": null, "message": [...]}`. */
function reply(res: ServerResponse, status: number, result: unknown): void {
  send(res, status, { result, message: null });
}

function say(res: ServerResponse, status: number, message: string): void {
  send(res, status, { result: null, message: [{ message }] });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const headers = { 'content-type': 'application/json', 'cache-control': 'no-cache' };
  respond(res, status, headers, JSON.stringify(body));
}

/**
 * A chat message as chatter framed it (empty text / image omitted, like the original). The id is
 * a JSON number, as the original's `ID int` (model/chat_message.go); ids are Postgres bigints and
 * stay below 2^53, so the number is exact. `created` is an RFC 3339 date-time string.
 */
function chatFrame(m: ChatMessage) {
  return {
    id: Number(m.id),
    username_from: m.from,
    username_to: m.to,
    ...(m.text === null ? {} : { message: m.text }),
    ...(m.imagePath === null ? {} : { image_path: m.imagePath }),
    created: m.createdAt,
  };
}

function frameOf(event: ChatEvent) {
  return isConnectionState(event)
    ? { username: event.userId, active: event.active }
    : chatFrame(event);
}

const NOT_AUTHORISED = 'Not authorised';
const isJwt = (token: string) => token.split('.').length === 3;

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const optionalString = (value: unknown) =>
  value === undefined || value === null || typeof value === 'string';

/**
 * The chatter service (EmotivesProject) under CHATTER_PREFIX: `GET healthz`, `POST user`,
 * `GET ws_token`, `GET messages`, `GET connections` and the `ws` WebSocket, with chatter's
 * envelope and status codes, on top of the chat, users and ws-token capabilities.
 */
export function createChatterRoute(deps: LegacyDeps): LegacyRoute {
  const { config, services, auth, logger, core } = deps;

  /** The caller of a JWT-protected endpoint: `Authorization: Bearer <jwt>` or a bare JWT. */
  async function viewerOf(req: IncomingMessage): Promise<Viewer | null> {
    const header = req.headers.authorization?.trim();
    if (header && !/^bearer\s/i.test(header)) return auth.verify(header);
    return tokenViewerOf(auth, req);
  }

  /** The viewer, or null after answering 400 "Not authorised" (chatter's middleware). */
  async function requireViewer(req: IncomingMessage, res: ServerResponse) {
    try {
      const viewer = await viewerOf(req);
      if (viewer) return viewer;
    } catch (error) {
      if (!isAppError(error)) throw error;
    }
    say(res, 400, NOT_AUTHORISED);
    return null;
  }

  function fail(res: ServerResponse, error: unknown, what: string): void {
    if (isAppError(error)) {
      const status = rateLimitStatus(error) ?? (error.code === ErrorCode.NotFound ? 404 : 400);
      say(res, status, error.message);
    } else {
      logger.error({ err: error }, `chatter ${what} failed`);
      say(res, 500, 'Internal server error');
    }
  }

  async function createUser(req: IncomingMessage, res: ServerResponse) {
    const header = req.headers.authorization?.trim() ?? '';
    let admin: UserAdmin = { secret: header };
    // A service token is accepted as well as the shared secret.
    if (isJwt(header.replace(/^bearer\s+/i, ''))) {
      const viewer = await viewerOf(req).catch(() => null);
      if (viewer?.isService) admin = viewer;
    }
    try {
      services.users.authorize(admin);
    } catch (error) {
      if (isAppError(error)) return say(res, 400, NOT_AUTHORISED);
      throw error;
    }
    const text = await readBody(req, config.MAX_BODY_BYTES).catch((error: unknown) => {
      if (error instanceof BodyTooLarge) return null;
      throw error;
    });
    // An oversized upload is cut off: the connection closes without an answer.
    if (text === null) return void req.destroy();
    const body = parseJson(text);
    // Only username and user_group are read, as in the original.
    if (!isObject(body) || typeof body['username'] !== 'string') {
      return say(res, 400, 'Bad body: expected {"username": "...", "user_group": "..."}');
    }
    const group = body['user_group'];
    if (!optionalString(group)) return say(res, 400, 'Bad body: user_group must be a string');
    try {
      await services.users.create(admin, {
        userId: body['username'],
        group: (group as string | null | undefined) ?? null,
      });
      say(res, 201, 'Created user');
    } catch (error) {
      fail(res, error, 'create user');
    }
  }

  async function wsToken(req: IncomingMessage, res: ServerResponse) {
    const viewer = await requireViewer(req, res);
    if (!viewer) return;
    try {
      const created = await services.wsTokens.create(viewer);
      reply(res, 201, {
        token: created.token,
        username: created.userId,
        // The original's Token.Expiration is a time.Time (model/token.go), which Go's
        // encoding/json writes as an RFC 3339 date-time string.
        expires: created.expiresAt.toISOString(),
      });
    } catch (error) {
      fail(res, error, 'ws_token');
    }
  }

  async function messages(req: IncomingMessage, res: ServerResponse, query: URLSearchParams) {
    const viewer = await requireViewer(req, res);
    if (!viewer) return;
    const from = query.get('from');
    const to = query.get('to');
    if (from !== viewer.userId || !to) return say(res, 422, 'Wrong');
    const limitText = query.get('limit');
    const limit = limitText === null || limitText === '' ? null : Number(limitText);
    if (limit !== null && !Number.isInteger(limit)) {
      return say(res, 400, 'limit must be a positive integer');
    }
    try {
      const page = await services.chat.history(viewer, to, { before: query.get('before'), limit });
      reply(res, 200, page.map(chatFrame));
    } catch (error) {
      if (isAppError(error) && error.code === ErrorCode.NotFound) return say(res, 422, 'Wrong');
      fail(res, error, 'messages');
    }
  }

  async function connections(req: IncomingMessage, res: ServerResponse) {
    const viewer = await requireViewer(req, res);
    if (!viewer) return;
    try {
      const states = await services.chat.connections(viewer);
      reply(
        res,
        200,
        states.map((s) => ({ username: s.userId, active: s.active })),
      );
    } catch (error) {
      fail(res, error, 'connections');
    }
  }

  /**
   * The viewer a `?token=` stands for: a JWT is verified, anything else is consumed as a
   * single-use ws token. Null when refused (bad, used or expired).
   */
  async function socketViewer(req: IncomingMessage): Promise<Viewer | null> {
    const token = requestUrl(req).searchParams.get('token') ?? '';
    try {
      return isJwt(token) ? await auth.verify(token) : await services.wsTokens.consume(token);
    } catch (error) {
      if (isAppError(error)) return null;
      throw error;
    }
  }

  /** Serves one chatter socket: chat and presence frames out, chat frames in. */
  function serveSocket(socket: WebSocket, viewer: Viewer) {
    let connection: Connection;
    try {
      connection = core.open(
        'legacy-ws',
        viewer,
        new WebSocketWire(socket, config.WS_KEEPALIVE_MS),
      );
    } catch (error) {
      // A connection limit passed since the upgrade was admitted.
      if (rateLimitStatus(error) === null) throw error;
      return socket.close(CloseCode.TooManyConnections, 'too many connections');
    }
    const write = (frame: unknown) => connection.send(JSON.stringify(frame));

    const subscribed = services.chat.subscribe(viewer, null, connection);
    void (async () => {
      try {
        for await (const event of await subscribed) write(frameOf(event));
      } catch (error) {
        logger.error({ err: error }, 'chatter stream failed');
        connection.close(CloseCode.InternalError, 'Internal server error');
      }
    })();

    // Frames of one socket are sent in the order they came, once the socket's own stream is
    // subscribed (so a client that sends at once still sees its own messages echoed).
    let inbound: Promise<unknown> = subscribed.catch(() => {});
    socket.on('message', (data, isBinary) => {
      const frame = isBinary ? undefined : parseJson(String(data));
      if (
        !isObject(frame) ||
        typeof frame['username_to'] !== 'string' ||
        !optionalString(frame['message']) ||
        !optionalString(frame['image_path'])
      ) {
        connection.close(CHATTER_BAD_FRAME as CloseCode, 'malformed frame');
        return;
      }
      const input = {
        to: frame['username_to'],
        text: frame['message'] as string | null | undefined,
        imagePath: frame['image_path'] as string | null | undefined,
      };
      inbound = inbound.then(async () => {
        try {
          // Delivered back to this socket through the sender's own chat topic.
          await services.chat.send(viewer, input);
        } catch (error) {
          if (!isAppError(error)) logger.error({ err: error }, 'chatter send failed');
          // Refused messages are answered on the socket, which stays open.
          write({
            result: null,
            message: [{ message: isAppError(error) ? error.message : 'Internal server error' }],
          });
        }
      });
    });
    socket.on('error', (error) => {
      logger.debug({ err: error }, 'chatter socket error');
      socket.terminate();
    });
    socket.once('close', () => connection.gone());
  }

  return {
    prefix: config.CHATTER_PREFIX,
    async handle(req, res, path) {
      const route = path.length > 1 ? path.replace(/\/+$/, '') : path;
      const query = requestUrl(req).searchParams;
      const method = req.method ?? 'GET';
      const only = (allowed: string) => {
        if (method === allowed) return true;
        res.setHeader('allow', allowed);
        say(res, 405, 'Method not allowed');
        return false;
      };
      switch (route) {
        case '/healthz':
          if (only('GET')) say(res, 200, 'Health OK');
          return;
        case '/user':
          if (only('POST')) await createUser(req, res);
          return;
        case '/ws_token':
          if (only('GET')) await wsToken(req, res);
          return;
        case '/messages':
          if (only('GET')) await messages(req, res, query);
          return;
        case '/connections':
          if (only('GET')) await connections(req, res);
          return;
        case '/ws': {
          // A plain request: the token is checked (and used up) as the original did.
          const viewer = await socketViewer(req);
          if (!viewer) return say(res, 403, 'Forbidden');
          return say(res, 400, 'Expected a WebSocket upgrade');
        }
        default:
          say(res, 404, 'Not found');
      }
    },
    upgrade(req, socket, head, path) {
      if (path.replace(/\/+$/, '') !== '/ws') return refuseUpgrade(socket, 404, 'Not Found');
      socketViewer(req).then(
        (viewer) => {
          if (!viewer) return refuseUpgrade(socket, 403, 'Forbidden');
          try {
            core.admit(viewer);
          } catch (error) {
            return refuseUpgrade(socket, rateLimitStatus(error) ?? 500, 'Too Many Connections');
          }
          deps.websockets.accept(req, socket, head, (ws) => serveSocket(ws, viewer));
        },
        (error: unknown) => {
          logger.error({ err: error }, 'chatter ws authentication failed');
          refuseUpgrade(socket, 500, 'Internal Server Error');
        },
      );
    },
  };
}
