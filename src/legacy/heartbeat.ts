import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import { isAppError, rateLimitStatus } from '../errors.ts';
import type { Connection } from '../net/connection.ts';
import { ResponseWire } from '../net/wires.ts';
import { readJson, viewerOf, writeText } from './http.ts';
import type { LegacyDeps } from './index.ts';
import type { LegacyRoute } from './route.ts';

/** Thrown while reading a request the old service would answer with 400 `Bad Request`. */
class BadRequest extends Error {}

const USER_CLAIM_HEADER = 'x-user-claim';

/** The status of a ping body `{"status":"<code>"}`; anything else is a bad request. */
function parsePingBody(body: unknown): string {
  const status = (body as { status?: unknown } | null)?.status;
  if (
    typeof body !== 'object' ||
    body === null ||
    Array.isArray(body) ||
    typeof status !== 'string'
  )
    throw new BadRequest('status must be a string');
  return status;
}

/** `X-User-Claim: {"userid": "<id>" | <integer>}` as set by a trusted gateway. */
function viewerFromClaim(header: string): Viewer {
  let claim: unknown;
  try {
    claim = JSON.parse(header);
  } catch {
    throw new BadRequest('malformed user claim');
  }
  const userid = (claim as { userid?: unknown } | null)?.userid;
  const userId =
    typeof userid === 'string' && userid !== ''
      ? userid
      : typeof userid === 'number' && Number.isSafeInteger(userid)
        ? String(userid)
        : null;
  if (userId === null) throw new BadRequest('malformed user claim');
  return { userId, group: null, isService: false, expiresAt: null };
}

/** The path's segments, URL-decoded; null when one is not valid percent-encoding. */
function segments(path: string): string[] | null {
  try {
    return path
      .split('/')
      .filter((s) => s !== '')
      .map((s) => decodeURIComponent(s));
  } catch {
    return null;
  }
}

/**
 * The backend-heartbeat endpoints under HEARTBEAT_PREFIX (default `/heartbeat`):
 *
 * - `GET subscribe/:userid` and `GET subscribe/:userid/client/:clientid`: SSE. Headers at once,
 *   the cached ping first, then `data: {"time":<unix seconds>,"status":"<code>"}` per ping and a
 *   `:` comment every HEARTBEAT_KEEPALIVE_S. A token (header or `?token=`) is optional; with it
 *   the user's own stream also shows INVISIBLE ("3") pings. A bad token gets 401.
 * - `POST ping` with `{"status":"<code>"}`: 200 with an empty body. The user comes from the
 *   token, or from `X-User-Claim: {"userid":..}` when TRUST_USER_CLAIM_HEADER=true (the claim
 *   then wins). No identity, a bad token or claim, a bad body or a non-string status: 400
 *   `Bad Request`. Pings sooner than PING_MIN_INTERVAL_MS are ignored with 200.
 */
export function createHeartbeatRoute(deps: LegacyDeps): LegacyRoute {
  const { config, services, auth, core } = deps;

  async function identify(req: IncomingMessage): Promise<Viewer> {
    const claim = req.headers[USER_CLAIM_HEADER];
    if (config.TRUST_USER_CLAIM_HEADER && typeof claim === 'string') return viewerFromClaim(claim);
    let viewer: Viewer | null;
    try {
      viewer = await viewerOf(auth, req);
    } catch {
      throw new BadRequest('bad token');
    }
    if (!viewer) throw new BadRequest('no identity');
    return viewer;
  }

  async function ping(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let viewer: Viewer;
    let status: string;
    try {
      viewer = await identify(req);
      // A body that is too large or not JSON is a BAD_USER_INPUT, answered as below.
      status = parsePingBody(await readJson(req, config.MAX_BODY_BYTES));
      await services.presence.ping(viewer, status);
    } catch (error) {
      const limited = rateLimitStatus(error);
      if (limited !== null) return writeText(res, limited, 'Too Many Requests');
      if (error instanceof BadRequest || isAppError(error)) {
        return writeText(res, 400, 'Bad Request');
      }
      throw error;
    }
    res.writeHead(200, { 'content-length': '0' });
    res.end();
  }

  async function subscribe(req: IncomingMessage, res: ServerResponse, userId: string) {
    let viewer: Viewer | null;
    try {
      viewer = await viewerOf(auth, req, { stream: true });
    } catch {
      return writeText(res, 401, 'Unauthorized');
    }
    // The connection's keep-alive is the `:` comment every HEARTBEAT_KEEPALIVE_S.
    const wire = new ResponseWire(config.HEARTBEAT_KEEPALIVE_S * 1000, ':\n\n');
    let connection: Connection;
    let pings: Awaited<ReturnType<typeof services.presence.subscribe>>;
    try {
      // Refused here, while a status can still be sent (MAX_CONNECTIONS(_PER_USER)).
      connection = core.open('legacy-stream', viewer, wire);
    } catch (error) {
      const limited = rateLimitStatus(error);
      if (limited !== null) return writeText(res, limited, 'Too Many Requests');
      // Anonymous followers where ANONYMOUS_CONNECTIONS is 0.
      if (isAppError(error)) return writeText(res, 401, 'Unauthorized');
      throw error;
    }
    res.once('close', () => connection.gone());
    try {
      pings = await services.presence.subscribe(viewer, userId, {
        owner: connection,
        // The old wire format has no "online": only real pings are sent.
        timeouts: false,
      });
    } catch (error) {
      connection.close(CloseCode.Normal, 'refused');
      if (isAppError(error)) return writeText(res, 400, 'Bad Request');
      throw error;
    }
    if (connection.closed) return;
    const headers: Record<string, string> = {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
    };
    // HTTP/2 forbids connection-specific headers.
    if (req.httpVersionMajor < 2) headers['connection'] = 'keep-alive';
    res.writeHead(200, headers);
    res.flushHeaders();
    wire.open(res);
    try {
      for await (const p of pings) {
        const time = Math.floor(p.time.getTime() / 1000);
        connection.send(`data: ${JSON.stringify({ time, status: p.statusCode })}\n\n`);
      }
    } finally {
      connection.close(CloseCode.Normal, 'stream ended');
    }
  }

  return {
    prefix: config.HEARTBEAT_PREFIX,
    async handle(req, res, path) {
      const parts = segments(path);
      if (parts === null) return writeText(res, 400, 'Bad Request');
      const [first, userId, client, clientId] = parts;
      if (first === 'ping' && parts.length === 1) {
        if (req.method !== 'POST') return writeText(res, 405, 'Method Not Allowed');
        return ping(req, res);
      }
      const isSubscribe =
        first === 'subscribe' &&
        userId !== undefined &&
        (parts.length === 2 || (parts.length === 4 && client === 'client' && clientId));
      if (isSubscribe) {
        if (req.method !== 'GET') return writeText(res, 405, 'Method Not Allowed');
        return subscribe(req, res, userId);
      }
      return writeText(res, 404, 'Not Found');
    },
  };
}
