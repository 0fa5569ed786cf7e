import type { Viewer } from '../auth/index.ts';
import { type Database, Prisma } from '../db/index.ts';
import { badInput, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { Subscription } from '../pubsub/index.ts';
import { emptyRecord } from './autoupdate.ts';
import { asVisibleTo, type ChangeLog, type FeedBatch } from './change-log.ts';
import type { Binding } from './connections.ts';

/** One projector stream event: the rendered projectors that are new or changed. */
export interface ProjectorUpdate {
  /** The change id the render reflects. */
  changeId: number;
  /** `{"<projectorId>": [{"element": {...}, "data": {...}} | {"error": "..."}]}` */
  data: Record<string, unknown[]>;
}

export interface ProjectorOptions {
  db: Database;
  changeLog: ChangeLog;
  subscriptionBuffer: number;
  logger: Logger;
}

/** The collection of projectors: projector P is the element `core/projector:P`. */
export const PROJECTOR_COLLECTION = 'core/projector';
const MAX_IDS = 100;
const ID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

type Entry = { element: unknown; data: unknown; visibleTo: string[] | null } | { error: string };

/** A projector as rendered once per instance; viewers differ only by what they may see. */
interface Render {
  exists: boolean;
  visibleTo: string[] | null;
  entries: Entry[];
  /** Collections the projector refers to (a change in one may change the render). */
  names: Set<string>;
  /** Any entry restricted to some users: bytes are then computed per viewer. */
  restricted: boolean;
  publicBytes?: string;
}

interface Watcher {
  viewer: Viewer;
  subscription: Subscription<ProjectorUpdate>;
  /** Last bytes sent per projector id. */
  sent: Map<string, string>;
}

interface Watched {
  watchers: Set<Watcher>;
  render: Render | null;
}

const canSee = (visibleTo: string[] | null, viewer: Viewer) =>
  visibleTo === null || viewer.isService || visibleTo.includes(viewer.userId);

/** The rendered list as the viewer sees it, or null when the projector does not exist for it. */
function view(render: Render, viewer: Viewer): unknown[] | null {
  if (!render.exists || !canSee(render.visibleTo, viewer)) return null;
  return render.entries.map((entry) =>
    'error' in entry
      ? { error: entry.error }
      : { element: entry.element, data: canSee(entry.visibleTo, viewer) ? entry.data : null },
  );
}

function bytesFor(render: Render, viewer: Viewer): string | null {
  if (!render.restricted && render.exists && render.visibleTo === null) {
    render.publicBytes ??= JSON.stringify(view(render, viewer));
    return render.publicBytes;
  }
  const list = view(render, viewer);
  return list === null ? null : JSON.stringify(list);
}

const json = (value: unknown) => JSON.stringify(value);

/**
 * Projectors rendered from the keyed data. Each element `{name, id, ...}` of projector P's
 * `elements` renders as `{"element": <element>, "data": <current value of name:id>}`, or
 * `{"error": "unknwown slide <name>"}` (the original's spelling) when no data of kind `name`
 * exists. One render per projector per relevant change per instance; each subscriber gets a
 * projector again only when its rendered bytes changed.
 */
export function createProjector(options: ProjectorOptions) {
  const { changeLog, logger } = options;
  const prisma = options.db.prisma;
  const watched = new Map<string, Watched>();
  let release: (() => void) | null = null;
  // Renders and deliveries run one at a time, in change order.
  let queue: Promise<void> = Promise.resolve();
  const enqueue = (task: () => Promise<void>) => {
    const run = queue.then(task);
    queue = run.catch((error: unknown) => logger.error({ err: error }, 'projector task failed'));
    return run;
  };

  async function renderMany(ids: readonly string[]): Promise<{
    changeId: number;
    renders: Map<string, Render>;
  }> {
    return prisma.$transaction(
      async (tx) => {
        const [bounds] = await tx.$queryRaw<{ max: number | null }[]>`
          SELECT max(change_id) AS max FROM autoupdate_changes`;
        const keys = ids.map((id) => `${PROJECTOR_COLLECTION}:${id}`);
        const projectors = await tx.$queryRaw<
          { key: string; value: unknown; visibleTo: unknown }[]
        >`SELECT key, value, visible_to AS "visibleTo" FROM autoupdate_data
          WHERE key IN (SELECT jsonb_array_elements_text(${json(keys)}::jsonb))`;
        const byId = new Map(
          projectors.map((p) => [p.key.slice(PROJECTOR_COLLECTION.length + 1), p]),
        );
        const elementsOf = (value: unknown): unknown[] => {
          const elements = (value as { elements?: unknown } | null)?.elements;
          return Array.isArray(elements) ? elements : [];
        };
        const refKeys = new Set<string>();
        const names = new Set<string>();
        for (const p of projectors) {
          for (const element of elementsOf(p.value)) {
            const { name, id } = (element ?? {}) as { name?: unknown; id?: unknown };
            if (typeof name !== 'string') continue;
            names.add(name);
            if (typeof id === 'string' || typeof id === 'number') refKeys.add(`${name}:${id}`);
          }
        }
        const data = await tx.$queryRaw<{ key: string; value: unknown; visibleTo: unknown }[]>`
          SELECT key, value, visible_to AS "visibleTo" FROM autoupdate_data
          WHERE key IN (SELECT jsonb_array_elements_text(${json([...refKeys])}::jsonb))`;
        const dataByKey = new Map(data.map((d) => [d.key, d]));
        const existing = await tx.$queryRaw<{ collection: string }[]>`
          SELECT DISTINCT collection FROM autoupdate_data
          WHERE collection IN (SELECT jsonb_array_elements_text(${json([...names])}::jsonb))`;
        const kinds = new Set(existing.map((row) => row.collection));

        const renders = new Map<string, Render>();
        for (const id of ids) {
          const projector = byId.get(id);
          const entries: Entry[] = [];
          const projectorNames = new Set<string>();
          let restricted = false;
          for (const element of projector ? elementsOf(projector.value) : []) {
            const { name, id: elementId } = (element ?? {}) as { name?: unknown; id?: unknown };
            if (typeof name === 'string') projectorNames.add(name);
            if (typeof name !== 'string' || !kinds.has(name)) {
              entries.push({ error: `unknwown slide ${String(name)}` });
              continue;
            }
            const row = dataByKey.get(`${name}:${String(elementId)}`);
            const visibleTo = asVisibleTo(row?.visibleTo);
            if (visibleTo !== null) restricted = true;
            entries.push({ element, data: row?.value ?? null, visibleTo });
          }
          renders.set(id, {
            exists: projector !== undefined,
            visibleTo: asVisibleTo(projector?.visibleTo),
            entries,
            names: projectorNames,
            restricted,
          });
        }
        return { changeId: bounds?.max ?? 0, renders };
      },
      { isolationLevel: Prisma.TransactionIsolationLevel.RepeatableRead },
    );
  }

  /** Pushes to each watcher the projectors among `ids` whose bytes changed for it. */
  function deliver(ids: readonly string[], changeId: number, watchers: Iterable<Watcher>): void {
    for (const watcher of watchers) {
      const data = emptyRecord<unknown[]>();
      let any = false;
      for (const id of ids) {
        const render = watched.get(id)?.render;
        if (!render) continue;
        const bytes = bytesFor(render, watcher.viewer);
        const before = watcher.sent.get(id);
        if (bytes === null) {
          // Gone (deleted or hidden) after having been sent: an empty list.
          if (before !== undefined && before !== '[]') {
            watcher.sent.set(id, '[]');
            data[id] = [];
            any = true;
          }
          continue;
        }
        if (bytes === before) continue;
        watcher.sent.set(id, bytes);
        data[id] = JSON.parse(bytes) as unknown[];
        any = true;
      }
      if (any) watcher.subscription.push({ changeId, data });
    }
  }

  function onBatch(batch: FeedBatch): void {
    const affected = new Set<string>();
    for (const row of batch.rows) {
      if (row.kind !== 'data') continue;
      if (row.collection === PROJECTOR_COLLECTION && watched.has(String(row.id))) {
        affected.add(String(row.id));
      }
      for (const [id, entry] of watched) {
        // Not rendered yet (its first render is under way and may predate this change): again.
        if (!entry.render || entry.render.names.has(row.collection)) affected.add(id);
      }
    }
    if (affected.size === 0) return;
    void enqueue(async () => {
      const ids = [...affected].filter((id) => watched.has(id));
      if (ids.length === 0) return;
      const { changeId, renders } = await renderMany(ids);
      const watchers = new Set<Watcher>();
      for (const id of ids) {
        const entry = watched.get(id);
        if (!entry) continue;
        entry.render = renders.get(id) ?? null;
        for (const watcher of entry.watchers) watchers.add(watcher);
      }
      deliver(ids, Math.max(changeId, batch.toChangeId), watchers);
    });
  }

  function unwatch(ids: readonly string[], watcher: Watcher): void {
    for (const id of ids) {
      const entry = watched.get(id);
      entry?.watchers.delete(watcher);
      if (entry?.watchers.size === 0) watched.delete(id);
    }
    if (watched.size === 0 && release) {
      release();
      release = null;
    }
  }

  return {
    /**
     * Opens a projector stream: first every requested projector that exists (possibly none),
     * then updates with only the projectors whose rendered output changed. Throws
     * UNAUTHENTICATED for anonymous callers, BAD_USER_INPUT for an empty list or a malformed id.
     */
    async subscribe(
      viewer: Viewer | null,
      requested: readonly string[],
      connection: Binding,
    ): Promise<Subscription<ProjectorUpdate>> {
      if (!viewer) throw unauthenticated('Anonymous users cannot watch projectors');
      const ids = [...new Set(requested.map(String))];
      if (ids.length === 0) throw badInput('ids must name at least one projector');
      if (ids.length > MAX_IDS) throw badInput(`At most ${MAX_IDS} projectors per stream`);
      const bad = ids.find((id) => !ID_PATTERN.test(id));
      if (bad !== undefined) throw badInput(`Invalid projector id: ${JSON.stringify(bad)}`);

      await changeLog.ready();
      const subscription = new Subscription<ProjectorUpdate>({
        capacity: options.subscriptionBuffer,
        owner: connection,
      });
      const watcher: Watcher = { viewer, subscription, sent: new Map() };
      await enqueue(async () => {
        if (subscription.done) return;
        // Listen before reading, so a change committed meanwhile is rendered again after.
        release ??= changeLog.listen(onBatch);
        for (const id of ids) {
          const entry = watched.get(id) ?? { watchers: new Set(), render: null };
          entry.watchers.add(watcher);
          watched.set(id, entry);
        }
        subscription.onEnd(() => unwatch(ids, watcher));
        const missing = ids.filter((id) => !watched.get(id)?.render);
        let changeId: number;
        if (missing.length > 0) {
          const result = await renderMany(missing);
          changeId = result.changeId;
          for (const [id, render] of result.renders) {
            const entry = watched.get(id);
            if (entry) entry.render = render;
          }
        } else {
          const [row] = await prisma.$queryRaw<{ max: number | null }[]>`
            SELECT max(change_id) AS max FROM autoupdate_changes`;
          changeId = row?.max ?? 0;
        }
        // The first update always comes, even when none of the projectors exists.
        const data = emptyRecord<unknown[]>();
        for (const id of ids) {
          const render = watched.get(id)?.render;
          const bytes = render ? bytesFor(render, viewer) : null;
          if (bytes === null) continue;
          watcher.sent.set(id, bytes);
          data[id] = JSON.parse(bytes) as unknown[];
        }
        subscription.push({ changeId, data });
      });
      return subscription;
    },

    stop(): void {
      release?.();
      release = null;
      watched.clear();
    },
  };
}

export type Projector = ReturnType<typeof createProjector>;
