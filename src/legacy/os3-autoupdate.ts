import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AutoupdateBatch } from '../domain/autoupdate.ts';
import type { ProjectorUpdate } from '../domain/projector.ts';
import { badInput, isAppError } from '../errors.ts';
import {
  intParam,
  requestUrl,
  requireViewer,
  serveJsonLines,
  writeJson,
  writeText,
} from './http.ts';
import type { LegacyDeps } from './index.ts';
import { os3Error } from './os3.ts';
import type { LegacyRoute } from './route.ts';

/** An autoupdate batch as an OS3 line (OS3 has no events). */
const autoupdateLine = (batch: AutoupdateBatch) => ({
  changed: batch.changed,
  deleted: batch.deleted,
  from_change_id: batch.fromChangeId,
  to_change_id: batch.toChangeId,
  all_data: batch.allData,
});

/** The batches of `batches` that carry data; empty ones are dropped, as OS3 never sent them. */
async function* skipEmpty(batches: AsyncIterable<AutoupdateBatch>) {
  for await (const batch of batches) {
    if (Object.keys(batch.changed).length > 0 || Object.keys(batch.deleted).length > 0) {
      yield batch;
    }
  }
}

const projectorLine = (update: ProjectorUpdate) => ({
  change_id: update.changeId,
  data: update.data,
});

/**
 * The OpenSlides 3 autoupdate and projector streams, two routes beside the OS3 route:
 * `GET <OS3_PREFIX>/autoupdate[?change_id=N]` (JSON lines: `{"connected":true}`, then
 * `{"changed","deleted","from_change_id","to_change_id","all_data"}` per batch) and
 * `GET <OS3_PREFIX>/projector?projector_ids=1,2` (application/json lines: `{"connected":true}`,
 * then `{"change_id":N,"data":{...}}`). Both also answer POST, as the original did.
 * Errors: 400 `{"error": {"type": "invalid_request"|"auth_required", "msg": ...}}`.
 */
export function createOs3AutoupdateRoutes(deps: LegacyDeps): LegacyRoute[] {
  const { config, services, auth, logger } = deps;
  const LOGIN = 'You have to be logged in to get autoupdates.';

  const autoupdate = async (req: IncomingMessage, res: ServerResponse) => {
    const changeId = intParam(requestUrl(req), 'change_id', 'The change_id has to be an int.', {
      signed: false,
    });
    const viewer = await requireViewer(auth, req, LOGIN, { stream: true });
    await serveJsonLines(deps, res, viewer, 'application/octet-stream', async (stream) => {
      const batches = await services.autoupdate.subscribe(
        viewer,
        { changeId: Number(changeId ?? 0), events: false },
        stream.connection,
      );
      stream.start();
      stream.write({ connected: true });
      // The original (OS3 `internal/http/http.go`) writes a line only when there is data
      // (`if len(data) == 0 { continue }`): a resume at the current change id, or an empty
      // snapshot, waits silently for the next change. The next line's from_change_id still
      // chains from the skipped batch's to_change_id.
      await stream.pump(skipEmpty(batches), autoupdateLine);
    });
  };

  const projector = async (req: IncomingMessage, res: ServerResponse) => {
    const raw = requestUrl(req).searchParams.get('projector_ids') ?? '';
    if (!/^\d{1,15}(,\d{1,15})*$/.test(raw)) {
      throw badInput('The projector_ids has to be a list of ints separated by commas.');
    }
    const viewer = await requireViewer(auth, req, LOGIN, { stream: true });
    // As the original: application/json, and `{"connected":true}` before the first data line.
    await serveJsonLines(deps, res, viewer, 'application/json', async (stream) => {
      const updates = await services.projector.subscribe(
        viewer,
        raw.split(',').map((id) => String(Number(id))),
        stream.connection,
      );
      stream.start();
      stream.write({ connected: true });
      await stream.pump(updates, projectorLine);
    });
  };

  const route = (
    name: string,
    serve: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  ): LegacyRoute => ({
    prefix: `${config.OS3_PREFIX}/${name}`,
    async handle(req, res, path) {
      try {
        if (path !== '/') return writeText(res, 404, '404 page not found\n');
        // OS3's getOrPOSTMiddleware (`internal/http/http.go`): both streams take GET or POST.
        if (req.method !== 'GET' && req.method !== 'POST') {
          throw badInput('Only GET or POST requests are supported');
        }
        await serve(req, res);
      } catch (error) {
        if (!isAppError(error)) logger.error({ err: error, name }, 'os3 stream failed');
        const { status, body } = os3Error(error);
        writeJson(res, status, body);
      }
    },
  });

  return [route('autoupdate', autoupdate), route('projector', projector)];
}
