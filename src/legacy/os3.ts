import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ApplauseState } from '../domain/applause.ts';
import type { PublishInput } from '../domain/notify.ts';
import { badInput, isAppError, rateLimitStatus } from '../errors.ts';
import { readJson, requireViewer, serveJsonLines, writeJson, writeText } from './http.ts';
import { notifyLine, stringField, stringList, userIdList } from './icc.ts';
import type { LegacyDeps } from './index.ts';
import type { LegacyRoute } from './route.ts';

/**
 * OS3's error body for a failure: 400 with `invalid_request` or `auth_required`, 500 (masked)
 * otherwise. Also used by the OS3 autoupdate and projector routes.
 */
export function os3Error(error: unknown): {
  status: number;
  body: { error: { type: string; msg: string } };
} {
  if (!isAppError(error)) {
    return {
      status: 500,
      body: { error: { type: 'InternalError', msg: 'Ups, something went wrong!' } },
    };
  }
  const limited = rateLimitStatus(error);
  if (limited !== null) {
    return { status: limited, body: { error: { type: 'rate_limited', msg: error.message } } };
  }
  const type = error.code === 'UNAUTHENTICATED' ? 'auth_required' : 'invalid_request';
  return { status: 400, body: { error: { type, msg: error.message } } };
}

/** Turns an OS3 notify/send body into the domain's PublishInput (BAD_USER_INPUT when malformed). */
function publishInput(body: unknown): PublishInput {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw badInput('The body has to be a JSON object');
  }
  const b = body as Record<string, unknown>;
  if (b['to_all'] !== undefined && b['to_all'] !== null && typeof b['to_all'] !== 'boolean') {
    throw badInput('to_all has to be a boolean');
  }
  return {
    channelId: stringField(b['channel_id'], 'channel_id'),
    name: stringField(b['name'], 'name'),
    message: b['message'] ?? null,
    toAll: b['to_all'] === true,
    toUsers: userIdList(b['to_users'], 'to_users'),
    toChannels: stringList(b['to_channels'], 'to_channels'),
  };
}

/** How applause travels in an OS3 notify stream: a server message named "applause". */
const applauseLine = (state: ApplauseState) => ({
  sender_user_id: 0,
  sender_channel_id: 'Server',
  name: 'applause',
  message: { level: state.level, presentUsers: state.presentUsers },
});

/**
 * The OpenSlides 3 notify and applause endpoints, mounted at OS3_PREFIX (default /system):
 * `GET notify` (JSON lines: `{"connected":true}`, the channel id, then messages and the applause
 * of meeting OS3_MEETING_ID), `POST notify/send`, `GET|POST applause`, `GET health`. Errors are
 * `{"error": {"type": "invalid_request"|"auth_required", "msg": ...}}` with status 400.
 * `autoupdate` and `projector` under the same prefix are separate routes.
 */
export function createOs3Route(deps: LegacyDeps): LegacyRoute {
  const { config, services, auth, logger } = deps;
  const meetingId = config.OS3_MEETING_ID;
  const LOGIN_TO_NOTIFY = 'You have to be logged in to use the notify system.';

  const notify = async (req: IncomingMessage, res: ServerResponse) => {
    const viewer = await requireViewer(auth, req, LOGIN_TO_NOTIFY, { stream: true });
    await serveJsonLines(deps, res, viewer, 'application/octet-stream', async (stream) => {
      // OS3 has one meeting: its notify streams are present there and get its applause.
      const messages = await services.notify.subscribe(viewer, meetingId, stream.connection);
      const applause = await services.applause.subscribe(
        viewer,
        meetingId,
        stream.connection,
        'while-applauding',
      );
      stream.start();
      stream.write({ connected: true });
      await Promise.all([stream.pump(messages, notifyLine), stream.pump(applause, applauseLine)]);
    });
  };

  const send = async (req: IncomingMessage, res: ServerResponse) => {
    const viewer = await requireViewer(auth, req, LOGIN_TO_NOTIFY);
    const input = publishInput(await readJson(req, config.MAX_BODY_BYTES));
    await services.notify.publish(viewer, input);
    res.writeHead(200);
    res.end();
  };

  const applause = async (req: IncomingMessage, res: ServerResponse) => {
    const viewer = await requireViewer(auth, req, 'You have to be logged in to send applause.');
    await services.applause.send(viewer, meetingId);
    res.writeHead(200);
    res.end();
  };

  return {
    prefix: config.OS3_PREFIX,
    async handle(req, res, path) {
      try {
        if (req.method !== 'GET' && req.method !== 'POST') {
          throw badInput('Only GET or POST requests are supported');
        }
        switch (path) {
          case '/notify':
            return await notify(req, res);
          case '/notify/send':
            return await send(req, res);
          case '/applause':
            return await applause(req, res);
          case '/health':
            return writeJson(res, 200, { healthy: true });
          default:
            return writeText(res, 404, '404 page not found\n');
        }
      } catch (error) {
        if (!isAppError(error)) logger.error({ err: error, path }, 'os3 request failed');
        const { status, body } = os3Error(error);
        writeJson(res, status, body);
      }
    },
  };
}
