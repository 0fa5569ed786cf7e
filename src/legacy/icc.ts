import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import type { ApplauseState } from '../domain/applause.ts';
import type { Connection } from '../domain/connections.ts';
import { isNotifyChannel, type NotifyEvent, type PublishInput } from '../domain/notify.ts';
import { type AppError, badInput, isAppError, unauthenticated } from '../errors.ts';
import { closeOnExpiry, createConnection } from '../transport/connection.ts';
import type { LegacyDeps } from './index.ts';
import type { LegacyRoute } from './route.ts';

// ---------------------------------------------------------------------------------------------
// Helpers shared by the OpenSlides shims (ICC and OS3).

/** Thrown by `readBody` when a body is larger than allowed. */
class BodyTooLarge extends Error {}

/** The request body as text, at most `limit` bytes (BAD_USER_INPUT beyond). */
export function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // Discard the rest (the socket stays usable for the error response).
        req.off('data', onData);
        req.resume();
        chunks.length = 0;
        reject(new BodyTooLarge(`The body is larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

/** Reads and parses a JSON body; BAD_USER_INPUT for a body that is too large or not JSON. */
export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  let text: string;
  try {
    text = await readBody(req, limit);
  } catch (error) {
    if (error instanceof BodyTooLarge) throw badInput(error.message);
    throw error;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw badInput(`invalid json: ${(error as Error).message}`);
  }
}

/** An integer query parameter as a string id; undefined when absent, BAD_USER_INPUT when bad. */
export function intParam(url: URL, name: string, message: string): string | undefined {
  const raw = url.searchParams.get(name);
  if (raw === null) return undefined;
  if (!/^[+-]?\d{1,15}$/.test(raw)) throw badInput(message);
  return String(Number.parseInt(raw, 10));
}

/** OpenSlides user ids are integers: numeric ids go out as numbers, others as strings. */
export const wireUserId = (userId: string): number | string =>
  /^\d{1,15}$/.test(userId) ? Number(userId) : userId;

/** Reads a list of user ids (integers or strings) from a legacy body field. */
export function userIdList(value: unknown, field: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) throw badInput(`${field} has to be a list of user ids`);
  return value.map((id: unknown) => {
    if (typeof id === 'number' && Number.isSafeInteger(id)) return String(id);
    if (typeof id === 'string' && id !== '') return id;
    throw badInput(`${field} has to be a list of user ids`);
  });
}

/** Reads a list of strings from a legacy body field. */
export function stringList(value: unknown, field: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    throw badInput(`${field} has to be a list of strings`);
  }
  return value as string[];
}

/** An optional string field of a legacy body. */
export function stringField(value: unknown, field: string): string {
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') throw badInput(`${field} has to be a string`);
  return value;
}

export function writeJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(body)}\n`);
}

/**
 * A JSON-lines response tied to a legacy Connection: registered (so dropUser and shutdown end it),
 * closed at token expiry, ended when the client goes away. Nothing is sent before `start`, so a
 * refusal can still answer with a status code.
 */
export interface JsonLinesStream {
  readonly connection: Connection;
  /** Sends status 200 and the headers at once. */
  start(): void;
  /**
   * Writes one line, flushed at once: a string as it is (already JSON), anything else through
   * JSON.stringify. Ends the stream as a slow consumer when unsent bytes pass WS_MAX_BUFFERED_BYTES.
   */
  write(line: unknown): void;
  /** Writes each event of `events` as a line until either ends; then ends the stream. */
  pump<T>(events: AsyncIterable<T>, format: (event: T) => unknown): Promise<void>;
}

/**
 * Opens a JSON-lines stream for `res` (see JsonLinesStream). `_req` is unused: the response's
 * `close` event, not the request's, tells that the client went away.
 */
export function openJsonLines(
  deps: LegacyDeps,
  _req: IncomingMessage,
  res: ServerResponse,
  viewer: Viewer | null,
  contentType: string,
): JsonLinesStream {
  // Before `start` the handler still answers (a refusal gets its status); afterwards closing the
  // connection ends the response.
  const connection = createConnection('legacy-stream', viewer, () => {
    if (res.headersSent) res.end();
  });
  // The response closes when the client goes away (or after it ended).
  res.once('close', () => connection.close(CloseCode.Normal, 'client gone'));
  deps.services.connections.add(connection);
  closeOnExpiry(connection, () => connection.close(CloseCode.TokenExpired, 'token expired'));
  const limit = deps.config.WS_MAX_BUFFERED_BYTES;
  const stream: JsonLinesStream = {
    connection,
    start() {
      if (res.headersSent) return;
      if (connection.signal.aborted) return void res.end();
      res.writeHead(200, {
        'content-type': contentType,
        'cache-control': 'no-cache',
        // Proxies such as nginx would otherwise hold lines back.
        'x-accel-buffering': 'no',
      });
      res.flushHeaders();
      res.socket?.setNoDelay(true);
    },
    write(line) {
      if (connection.signal.aborted) return;
      if (res.writableLength > limit) {
        connection.close(CloseCode.SlowConsumer, 'slow consumer');
        return;
      }
      res.write(typeof line === 'string' ? `${line}\n` : `${JSON.stringify(line)}\n`);
    },
    async pump(events, format) {
      try {
        for await (const event of events) stream.write(format(event));
      } finally {
        connection.close(CloseCode.Normal, 'stream ended');
      }
    },
  };
  return stream;
}

// ---------------------------------------------------------------------------------------------
// ICC (OpenSlides 4), mounted at ICC_PREFIX (default /system/icc).

const MASKED = 'Ups, something went wrong!';

/** The ICC's error body and status for a failure. */
function iccError(error: unknown): { status: number; body: { error: string; msg: string } } {
  if (!isAppError(error)) return { status: 500, body: { error: 'internal', msg: MASKED } };
  const e: AppError = error;
  if (e.code === 'UNAUTHENTICATED')
    return { status: 401, body: { error: 'not-allowed', msg: e.message } };
  if (e.code === 'FORBIDDEN')
    return { status: 400, body: { error: 'not-allowed', msg: e.message } };
  return { status: 400, body: { error: 'invalid', msg: e.message } };
}

/** The first line of an ICC or OS3 notify stream, spelled as the originals did. */
export const channelLine = (channelId: string) => `{"channel_id": ${JSON.stringify(channelId)}}`;

/** A notify event as the old JSON-lines streams write it. */
export function notifyLine(event: NotifyEvent): string | object {
  if (isNotifyChannel(event)) return channelLine(event.channelId);
  return {
    sender_user_id: wireUserId(event.senderUserId),
    sender_channel_id: event.senderChannelId,
    name: event.name,
    message: event.message,
  };
}

/** Turns an ICC publish body into the domain's PublishInput (BAD_USER_INPUT when malformed). */
function publishInput(body: unknown): PublishInput {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw badInput('The body has to be a JSON object');
  }
  const b = body as Record<string, unknown>;
  let toMeeting: string | null = null;
  if (b['to_meeting'] !== undefined && b['to_meeting'] !== null && b['to_meeting'] !== 0) {
    if (typeof b['to_meeting'] !== 'number' || !Number.isSafeInteger(b['to_meeting'])) {
      throw badInput('to_meeting has to be a meeting id');
    }
    toMeeting = String(b['to_meeting']);
  }
  return {
    channelId: stringField(b['channel_id'], 'channel_id'),
    name: stringField(b['name'], 'name'),
    message: b['message'] ?? null,
    toMeeting,
    toUsers: userIdList(b['to_users'], 'to_users'),
    toChannels: stringList(b['to_channels'], 'to_channels'),
  };
}

/**
 * The OpenSlides ICC endpoints: `GET notify[?meeting_id=N]` (JSON lines), `POST notify/publish`,
 * `GET applause?meeting_id=N` (JSON lines), `GET|POST applause/send?meeting_id=N`, `GET health`.
 * Errors are `{"error":"not-allowed"|"invalid"|"internal","msg":...}` with 401, 400 or 500.
 */
export function createIccRoute(deps: LegacyDeps): LegacyRoute {
  const { config, services, auth, logger } = deps;

  const viewerOf = async (req: IncomingMessage): Promise<Viewer | null> =>
    auth.fromRequest({ headers: req.headers, url: req.url });

  const requireViewer = async (req: IncomingMessage, message: string): Promise<Viewer> => {
    const viewer = await viewerOf(req);
    if (!viewer) throw unauthenticated(message);
    return viewer;
  };

  const notify = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const viewer = await requireViewer(req, 'Anonymous user can not receive icc messages.');
    const meetingId = intParam(url, 'meeting_id', 'url query meeting_id has to be an int');
    const stream = openJsonLines(deps, req, res, viewer, 'application/octet-stream');
    try {
      const events = await services.notify.subscribe(
        viewer,
        meetingId === undefined || meetingId === '0' ? null : meetingId,
        stream.connection,
      );
      stream.start();
      await stream.pump(events, notifyLine);
    } catch (error) {
      stream.connection.close(CloseCode.Normal, 'refused');
      throw error;
    }
  };

  const publish = async (req: IncomingMessage, res: ServerResponse) => {
    const viewer = await requireViewer(req, 'Anonymous user can not send icc messages.');
    const input = publishInput(await readJson(req, config.MAX_BODY_BYTES));
    await services.notify.publish(viewer, input);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end();
  };

  const applause = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const meetingId = intParam(url, 'meeting_id', 'Query meeting has to be an int.');
    if (meetingId === undefined) throw badInput('Query meeting has to be an int.');
    const viewer = await viewerOf(req);
    const stream = openJsonLines(deps, req, res, viewer, 'application/json');
    try {
      const events = await services.applause.subscribe(viewer, meetingId, stream.connection);
      stream.start();
      await stream.pump(events, (s: ApplauseState) => ({
        level: s.level,
        present_users: s.presentUsers,
      }));
    } catch (error) {
      stream.connection.close(CloseCode.Normal, 'refused');
      throw error;
    }
  };

  const sendApplause = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const viewer = await requireViewer(req, 'Anonymous user can not send applause.');
    const meetingId = intParam(url, 'meeting_id', 'Query meeting has to be an int.');
    if (meetingId === undefined) throw badInput('Query meeting has to be an int.');
    await services.applause.send(viewer, meetingId);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end();
  };

  return {
    prefix: config.ICC_PREFIX,
    async handle(req, res, path) {
      const url = new URL(req.url ?? '/', 'http://localhost');
      try {
        switch (path) {
          case '/notify':
            return await notify(req, res, url);
          case '/notify/publish':
            return await publish(req, res);
          case '/applause':
            return await applause(req, res, url);
          case '/applause/send':
            return await sendApplause(req, res, url);
          case '/health':
            return writeJson(res, 200, { healthy: true, service: 'icc' });
          default:
            res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
            return void res.end('404 page not found\n');
        }
      } catch (error) {
        if (!isAppError(error)) logger.error({ err: error, path }, 'icc request failed');
        const { status, body } = iccError(error);
        writeJson(res, status, body);
      }
    },
  };
}
