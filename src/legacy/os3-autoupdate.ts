import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import type { AutoupdateBatch } from '../domain/autoupdate.ts';
import type { ProjectorUpdate } from '../domain/projector.ts';
import { badInput, isAppError, unauthenticated } from '../errors.ts';
import { openJsonLines, writeJson } from './icc.ts';
import type { LegacyDeps } from './index.ts';
import type { LegacyRoute } from './route.ts';

/** OS3's error body: 400 with `invalid_request` or `auth_required`; 500 (masked) otherwise. */
function os3Error(error: unknown): { status: number; body: unknown } {
  if (!isAppError(error)) {
    return {
      status: 500,
      body: { error: { type: 'InternalError', msg: 'Ups, something went wrong!' } },
    };
  }
  const type = error.code === 'UNAUTHENTICATED' ? 'auth_required' : 'invalid_request';
  return { status: 400, body: { error: { type, msg: error.message } } };
}

/** An autoupdate batch as an OS3 line (OS3 has no events). */
const autoupdateLine = (batch: AutoupdateBatch) => ({
  changed: batch.changed,
  deleted: batch.deleted,
  from_change_id: batch.fromChangeId,
  to_change_id: batch.toChangeId,
  all_data: batch.allData,
});

const projectorLine = (update: ProjectorUpdate) => ({
  change_id: update.changeId,
  data: update.data,
});

/**
 * The OpenSlides 3 autoupdate and projector streams, two routes beside the OS3 route:
 * `GET <OS3_PREFIX>/autoupdate[?change_id=N]` (JSON lines: `{"connected":true}`, then
 * `{"changed","deleted","from_change_id","to_change_id","all_data"}` per batch) and
 * `GET <OS3_PREFIX>/projector?projector_ids=1,2` (lines `{"change_id":N,"data":{...}}`).
 * Errors: 400 `{"error": {"type": "invalid_request"|"auth_required", "msg": ...}}`.
 */
export function createOs3AutoupdateRoutes(deps: LegacyDeps): LegacyRoute[] {
  const { config, services, auth, logger } = deps;

  const requireViewer = async (req: IncomingMessage): Promise<Viewer> => {
    const viewer = await auth.fromRequest({ headers: req.headers, url: req.url });
    if (!viewer) throw unauthenticated('You have to be logged in to get autoupdates.');
    return viewer;
  };

  const autoupdate = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const raw = url.searchParams.get('change_id');
    if (raw !== null && !/^\d{1,15}$/.test(raw)) {
      throw badInput('The change_id has to be an int.');
    }
    const viewer = await requireViewer(req);
    const stream = openJsonLines(deps, req, res, viewer, 'application/octet-stream');
    try {
      const batches = await services.autoupdate.subscribe(
        viewer,
        { changeId: raw === null ? 0 : Number(raw), events: false },
        stream.connection,
      );
      stream.start();
      stream.write({ connected: true });
      await stream.pump(batches, autoupdateLine);
    } catch (error) {
      stream.connection.close(CloseCode.Normal, 'refused');
      throw error;
    }
  };

  const projector = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const raw = url.searchParams.get('projector_ids') ?? '';
    if (!/^\d{1,15}(,\d{1,15})*$/.test(raw)) {
      throw badInput('The projector_ids has to be a list of ints separated by commas.');
    }
    const viewer = await requireViewer(req);
    const stream = openJsonLines(deps, req, res, viewer, 'application/octet-stream');
    try {
      const updates = await services.projector.subscribe(
        viewer,
        raw.split(',').map((id) => String(Number(id))),
        stream.connection,
      );
      stream.start();
      await stream.pump(updates, projectorLine);
    } catch (error) {
      stream.connection.close(CloseCode.Normal, 'refused');
      throw error;
    }
  };

  const route = (
    name: string,
    serve: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  ): LegacyRoute => ({
    prefix: `${config.OS3_PREFIX}/${name}`,
    async handle(req, res, path) {
      try {
        if (path !== '/') {
          res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
          return void res.end('404 page not found\n');
        }
        if (req.method !== 'GET') throw badInput('Only GET requests are supported');
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
