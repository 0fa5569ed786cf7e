import type { Viewer } from '../auth/index.ts';
import { type Database, Prisma } from '../db/index.ts';
import { badInput, unauthenticated, unavailable } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { Subscription } from '../pubsub/index.ts';
import {
  type ChangeLog,
  type ChangeRow,
  type DataRow,
  type EventRow,
  type FeedBatch,
  toChangeRow,
} from './change-log.ts';
import type { Binding } from './connections.ts';
import type { ReadGate } from './read-gate.ts';

/** An event as a recipient sees it. */
export interface AutoupdateEvent {
  changeId: number;
  accessId: string;
  createdAt: number;
  payload: unknown;
}

/**
 * What an autoupdate subscriber receives. Batches chain: each one's `fromChangeId` is the
 * previous one's `toChangeId` (the first one's is the changeId asked for, or 0 for allData).
 */
export interface AutoupdateBatch {
  /** Exclusive lower bound: the change id this batch continues from. */
  fromChangeId: number;
  /** Inclusive upper bound; pass it back as changeId to resume without gaps or repeats. */
  toChangeId: number;
  /** True when this is a full snapshot that replaces everything the client holds. */
  allData: boolean;
  /** `{collection: [current value, ...]}` of changed elements the viewer may see. */
  changed: Record<string, unknown[]>;
  /** `{collection: [id, ...]}`: deleted, or no longer visible to the viewer. */
  deleted: Record<string, (string | number)[]>;
  /** Events for the viewer (its user id is the access id), in change order. */
  events: AutoupdateEvent[];
}

/** What a subscription asks for. */
export interface AutoupdateRequest {
  /** Resume after this change id; 0 / null: a full snapshot (allData). */
  changeId?: number | null | undefined;
  /** Only events with createdAt >= since (inclusive), replayed and live. */
  since?: number | null | undefined;
  /** Include keyed data (default true). The notifier asks for events only. */
  data?: boolean;
  /** Include events (default true). The OS3 stream asks for data only. */
  events?: boolean;
}

export interface AutoupdateOptions {
  db: Database;
  changeLog: ChangeLog;
  /** Batches buffered per subscriber before it is closed as a slow consumer. */
  subscriptionBuffer: number;
  logger: Logger;
  /**
   * Queue of the first reads (AUTOUPDATE_SETUP_CONCURRENCY, AUTOUPDATE_SETUP_TIMEOUT_MS), so a
   * reconnect storm waits its turn instead of exhausting the database pool. Default: none.
   */
  setupGate?: ReadGate;
}

/** Prisma's "could not get a connection / start a transaction in time": the pool is saturated. */
const isPoolTimeout = (error: unknown) =>
  error instanceof Prisma.PrismaClientKnownRequestError &&
  (error.code === 'P2028' || error.code === 'P2024');

type Content = Pick<AutoupdateBatch, 'changed' | 'deleted'>;

/**
 * An empty record without a prototype: collection names such as `constructor`, `__proto__` or
 * `toString` are ordinary keys (they are valid collections and must not resolve to, or set,
 * members of Object.prototype).
 */
export const emptyRecord = <T>(): Record<string, T> => Object.create(null) as Record<string, T>;

/** Appends `value` to `record[key]`, creating the list; `record` has no prototype. */
function add<T>(record: Record<string, T[]>, key: string, value: T): void {
  const list = Object.hasOwn(record, key) ? record[key] : undefined;
  if (list) list.push(value);
  else record[key] = [value];
}

const canSee = (visibleTo: string[] | null, viewer: Viewer) =>
  visibleTo === null || viewer.isService || visibleTo.includes(viewer.userId);

/**
 * changed/deleted for the viewer from the net change of each key (its last value, and its state
 * before the first change of the range). A deletion or a withdrawn visibleTo is reported only
 * to viewers who could see the element before, so hidden ids do not leak.
 */
function contentFor(lastRows: Iterable<DataRow>, viewer: Viewer): Content {
  const changed = emptyRecord<unknown[]>();
  const deleted = emptyRecord<(string | number)[]>();
  for (const row of lastRows) {
    if (row.value !== null && canSee(row.visibleTo, viewer)) {
      add(changed, row.collection, row.value);
    } else if (row.previous !== null && canSee(row.previous.visibleTo, viewer)) {
      add(deleted, row.collection, row.id);
    }
  }
  return { changed, deleted };
}

/** The net change per key: its last row, carrying the state before its first row. */
function lastPerKey(rows: readonly ChangeRow[]): DataRow[] {
  const last = new Map<string, DataRow>();
  for (const row of rows) {
    if (row.kind !== 'data') continue;
    const first = last.get(row.key);
    last.set(row.key, first ? { ...row, previous: first.previous } : row);
  }
  return [...last.values()];
}

const isEmpty = (record: Record<string, unknown>) => Object.keys(record).length === 0;

/** Per-batch facts shared by every local subscriber (computed once per instance). */
interface Prepared {
  lastRows: DataRow[];
  restricted: boolean;
  eventsByAccess: Map<string, EventRow[]>;
}

function prepare(batch: FeedBatch): Prepared {
  let prepared = batch.memo.get('prepared') as Prepared | undefined;
  if (!prepared) {
    const lastRows = lastPerKey(batch.rows);
    const eventsByAccess = new Map<string, EventRow[]>();
    for (const row of batch.rows) {
      if (row.kind !== 'event') continue;
      const list = eventsByAccess.get(row.accessId);
      if (list) list.push(row);
      else eventsByAccess.set(row.accessId, [row]);
    }
    prepared = {
      lastRows,
      restricted: lastRows.some(
        (row) =>
          row.visibleTo !== null || (row.previous !== null && row.previous.visibleTo !== null),
      ),
      eventsByAccess,
    };
    batch.memo.set('prepared', prepared);
  }
  return prepared;
}

/** The content of a whole batch for a viewer, shared by all viewers who see the same. */
function sharedContent(batch: FeedBatch, viewer: Viewer): Content {
  const prepared = prepare(batch);
  // Without restricted rows everybody sees the same; service callers see everything.
  const memoKey = !prepared.restricted
    ? 'content:*'
    : viewer.isService
      ? 'content:service'
      : `content:user:${viewer.userId}`;
  let content = batch.memo.get(memoKey) as Content | undefined;
  if (!content) {
    content = contentFor(prepared.lastRows, viewer);
    batch.memo.set(memoKey, content);
  }
  return content;
}

const toEvent = (row: EventRow): AutoupdateEvent => ({
  changeId: row.changeId,
  accessId: row.accessId,
  createdAt: row.createdAt,
  payload: row.payload,
});

/**
 * Autoupdate: keyed data and events from the change log, per viewer. A subscription first
 * yields everything after its changeId (a full snapshot when changeId is 0, unknown or older
 * than what is kept), then one batch per new change range that holds something for the viewer.
 * It listens to live batches before it reads the replay, and drops live rows the replay already
 * covered, so resuming from a toChangeId misses nothing and repeats nothing.
 */
export function createAutoupdate(options: AutoupdateOptions) {
  const { changeLog } = options;
  const prisma = options.db.prisma;

  // Routing by recipient: a batch with keyed data reaches every stream that wants data; events
  // reach only the streams of their access ids. A stream skipped for a batch has nothing in it.
  type Listener = (batch: FeedBatch) => void;
  const dataStreams = new Set<Listener>();
  const eventStreams = new Map<string, Set<Listener>>();
  let streams = 0;
  let stopListening: (() => void) | null = null;

  function route(batch: FeedBatch) {
    const { lastRows, eventsByAccess } = prepare(batch);
    if (eventsByAccess.size === 0) {
      if (lastRows.length > 0) for (const listener of dataStreams) listener(batch);
      return;
    }
    const recipients = new Set<Listener>(lastRows.length > 0 ? dataStreams : undefined);
    for (const accessId of eventsByAccess.keys()) {
      for (const listener of eventStreams.get(accessId) ?? []) recipients.add(listener);
    }
    for (const listener of recipients) listener(batch);
  }

  /** Routes batches to `listener` until the returned function is called. */
  function follow(userId: string, wantData: boolean, wantEvents: boolean, listener: Listener) {
    if (wantData) dataStreams.add(listener);
    if (wantEvents) {
      let set = eventStreams.get(userId);
      if (!set) {
        set = new Set();
        eventStreams.set(userId, set);
      }
      set.add(listener);
    }
    streams += 1;
    stopListening ??= changeLog.listen(route);
    return () => {
      dataStreams.delete(listener);
      const set = eventStreams.get(userId);
      set?.delete(listener);
      if (set?.size === 0) eventStreams.delete(userId);
      streams -= 1;
      if (streams === 0) {
        stopListening?.();
        stopListening = null;
      }
    };
  }

  /** The first batch: a replay after changeId, or a full snapshot; one consistent read. */
  async function initialBatch(
    viewer: Viewer,
    changeId: number,
    since: number | null,
    wantData: boolean,
    wantEvents: boolean,
  ): Promise<AutoupdateBatch> {
    return prisma.$transaction(
      async (tx) => {
        const [bounds] = await tx.$queryRaw<{ min: number | null; max: number | null }[]>`
          SELECT min(change_id) AS min, max(change_id) AS max FROM autoupdate_changes`;
        const max = bounds?.max ?? 0;
        const min = bounds?.min ?? 0;
        // Older than the oldest kept change (pruned), or from a log we never wrote: snapshot.
        const allData = changeId === 0 || changeId > max || changeId < min - 1;
        const after = allData ? 0 : changeId;
        let content: Content = { changed: emptyRecord(), deleted: emptyRecord() };
        if (wantData && allData) {
          const rows = await tx.$queryRaw<
            { key: string; collection: string; value: unknown; visibleTo: unknown }[]
          >`SELECT key, collection, value, visible_to AS "visibleTo" FROM autoupdate_data
            WHERE ${viewer.isService}::boolean OR visible_to IS NULL OR jsonb_exists(visible_to, ${viewer.userId})
            ORDER BY key`;
          const changed = emptyRecord<unknown[]>();
          for (const row of rows) add(changed, row.collection, row.value);
          content = { changed, deleted: emptyRecord() };
        } else if (wantData) {
          const raw = await tx.$queryRaw<Parameters<typeof toChangeRow>[0][]>`
            SELECT * FROM (
              SELECT DISTINCT ON (key) change_id AS "changeId", key, value,
                visible_to AS "visibleTo",
                first_value(previous) OVER (PARTITION BY key ORDER BY change_id) AS previous,
                NULL AS "accessId", NULL::float8 AS "createdAt", NULL::jsonb AS payload
              FROM autoupdate_changes WHERE change_id > ${after}::int AND key IS NOT NULL
              ORDER BY key, change_id DESC
            ) AS latest ORDER BY "changeId"`;
          content = contentFor(raw.map(toChangeRow) as DataRow[], viewer);
        }
        let events: AutoupdateEvent[] = [];
        if (wantEvents) {
          const rows = await tx.$queryRaw<
            { changeId: number; createdAt: number; payload: unknown }[]
          >`SELECT change_id AS "changeId", created_at AS "createdAt", payload
            FROM autoupdate_changes
            WHERE access_id = ${viewer.userId} AND change_id > ${after}::int
              AND (${since}::float8 IS NULL OR created_at >= ${since}::float8)
            ORDER BY change_id`;
          events = rows.map((row) => ({ ...row, accessId: viewer.userId }));
        }
        return {
          fromChangeId: after,
          toChangeId: allData ? max : Math.max(max, changeId),
          allData,
          ...content,
          events,
        };
      },
      { isolationLevel: Prisma.TransactionIsolationLevel.RepeatableRead },
    );
  }

  return {
    /**
     * Opens an autoupdate stream for the viewer (see the module comment). Throws
     * UNAUTHENTICATED for anonymous callers and BAD_USER_INPUT for a negative or non-integer
     * changeId or a non-finite since, UNAVAILABLE (retryAfterMs) when its first read could not
     * get a database connection in time (it waits its turn in `setupGate` first). Ends with the
     * connection; a subscriber that falls `subscriptionBuffer` batches behind is closed as a
     * slow consumer.
     */
    async subscribe(
      viewer: Viewer | null,
      request: AutoupdateRequest,
      connection: Binding,
    ): Promise<Subscription<AutoupdateBatch>> {
      if (!viewer) throw unauthenticated('Anonymous users cannot subscribe to autoupdate');
      const changeId = request.changeId ?? 0;
      if (!Number.isSafeInteger(changeId) || changeId < 0) {
        throw badInput('changeId must be a non-negative integer');
      }
      const since = request.since ?? null;
      if (since !== null && !Number.isFinite(since)) throw badInput('since must be a number');
      const wantData = request.data ?? true;
      const wantEvents = request.events ?? true;

      await changeLog.ready();
      const subscription = new Subscription<AutoupdateBatch>({
        capacity: options.subscriptionBuffer,
        owner: connection,
      });
      /** Rows up to here were delivered (or covered by the replay). */
      let cursor = 0;
      /** The toChangeId of the last batch sent: the next one's fromChangeId. */
      let sentTo = 0;
      let pending: FeedBatch[] | null = [];

      const deliver = (batch: FeedBatch) => {
        if (batch.toChangeId <= cursor) return;
        let content: Content = { changed: emptyRecord(), deleted: emptyRecord() };
        let eventRows: readonly EventRow[] = [];
        if (batch.fromChangeId >= cursor) {
          if (wantData) content = sharedContent(batch, viewer);
          if (wantEvents) eventRows = prepare(batch).eventsByAccess.get(viewer.userId) ?? [];
        } else {
          // Partly covered by the replay: only the rows after it.
          const rows = batch.rows.filter((row) => row.changeId > cursor);
          if (wantData) content = contentFor(lastPerKey(rows), viewer);
          if (wantEvents) {
            eventRows = rows.filter(
              (row): row is EventRow => row.kind === 'event' && row.accessId === viewer.userId,
            );
          }
        }
        cursor = batch.toChangeId;
        const events = (
          since === null ? eventRows : eventRows.filter((row) => row.createdAt >= since)
        ).map(toEvent);
        if (isEmpty(content.changed) && isEmpty(content.deleted) && events.length === 0) return;
        subscription.push({
          fromChangeId: sentTo,
          toChangeId: batch.toChangeId,
          allData: false,
          ...content,
          events,
        });
        sentTo = batch.toChangeId;
      };

      /**
       * A batch that cannot be delivered is never skipped: the next one would claim continuity
       * over the gap. The connection is closed instead (as a consumer that lost events), and
       * the client resumes from the last toChangeId it received.
       */
      const deliverOrClose = (batch: FeedBatch) => {
        try {
          deliver(batch);
        } catch (error) {
          options.logger.error({ err: error }, 'autoupdate batch failed; closing the connection');
          subscription.end();
          connection.overflow();
        }
      };

      // Live first, then the replay: a change committed in between is in one or both.
      subscription.onEnd(
        follow(viewer.userId, wantData, wantEvents, (batch) => {
          if (pending) pending.push(batch);
          else deliverOrClose(batch);
        }),
      );
      try {
        const read = () => initialBatch(viewer, changeId, since, wantData, wantEvents);
        const first = options.setupGate
          ? await options.setupGate.run(async () => (subscription.done ? null : read()))
          : await read();
        if (first === null) return subscription;
        cursor = first.toChangeId;
        sentTo = first.toChangeId;
        subscription.push(first);
      } catch (error) {
        subscription.end();
        if (isPoolTimeout(error)) {
          options.logger.warn({ err: error }, 'autoupdate: database pool saturated');
          throw unavailable('The database is busy; try again shortly', 1_000);
        }
        throw error;
      }
      const queued = pending;
      pending = null;
      for (const batch of queued) deliverOrClose(batch);
      return subscription;
    },
  };
}

export type Autoupdate = ReturnType<typeof createAutoupdate>;
