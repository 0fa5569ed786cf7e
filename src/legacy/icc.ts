import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ApplauseState } from '../domain/applause.ts';
import { isNotifyChannel, type NotifyEvent, type PublishInput } from '../domain/notify.ts';
import { type AppError, badInput, isAppError, rateLimitStatus } from '../errors.ts';
import {
  intParam,
  readJson,
  requestUrl,
  requireViewer,
  serveJsonLines,
  viewerOf,
  writeJson,
  writeText,
} from './http.ts';
import type { LegacyDeps } from './index.ts';
import type { LegacyRoute } from './route.ts';

// ---------------------------------------------------------------------------------------------
// OpenSlides formats shared by the ICC and OS3 shims (generic HTTP helpers are in http.ts).

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
  const limited = rateLimitStatus(e);
  if (limited !== null) return { status: limited, body: { error: 'too-many', msg: e.message } };
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

  const notify = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const viewer = await requireViewer(auth, req, 'Anonymous user can not receive icc messages.', {
      stream: true,
    });
    const meetingId = intParam(url, 'meeting_id', 'url query meeting_id has to be an int');
    await serveJsonLines(deps, res, viewer, 'application/octet-stream', async (stream) => {
      const events = await services.notify.subscribe(
        viewer,
        meetingId === undefined || meetingId === '0' ? null : meetingId,
        stream.connection,
      );
      stream.start();
      await stream.pump(events, notifyLine);
    });
  };

  const publish = async (req: IncomingMessage, res: ServerResponse) => {
    const viewer = await requireViewer(auth, req, 'Anonymous user can not send icc messages.');
    const input = publishInput(await readJson(req, config.MAX_BODY_BYTES));
    // The original ICC accepts a message without a target (it reaches no one) and the name
    // "applause" (only OS3 reserves it); the GraphQL publish keeps refusing both.
    await services.notify.publish(viewer, input, { requireTarget: false, reserveNames: false });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end();
  };

  const applause = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const meetingId = intParam(url, 'meeting_id', 'Query meeting has to be an int.');
    if (meetingId === undefined) throw badInput('Query meeting has to be an int.');
    const viewer = await viewerOf(auth, req, { stream: true });
    await serveJsonLines(deps, res, viewer, 'application/json', async (stream) => {
      const events = await services.applause.subscribe(viewer, meetingId, stream.connection);
      stream.start();
      await stream.pump(events, (s: ApplauseState) => ({
        level: s.level,
        present_users: s.presentUsers,
      }));
    });
  };

  const sendApplause = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const viewer = await requireViewer(auth, req, 'Anonymous user can not send applause.');
    const meetingId = intParam(url, 'meeting_id', 'Query meeting has to be an int.');
    if (meetingId === undefined) throw badInput('Query meeting has to be an int.');
    await services.applause.send(viewer, meetingId);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end();
  };

  return {
    prefix: config.ICC_PREFIX,
    async handle(req, res, path) {
      const url = requestUrl(req);
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
            return writeText(res, 404, '404 page not found\n');
        }
      } catch (error) {
        if (!isAppError(error)) logger.error({ err: error, path }, 'icc request failed');
        const { status, body } = iccError(error);
        writeJson(res, status, body);
      }
    },
  };
}
