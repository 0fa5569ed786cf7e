import type { Viewer } from '../auth/index.ts';
import type { Database } from '../db/index.ts';
import { badInput, forbidden, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { PubSub } from '../pubsub/index.ts';
import { type ChangeRange, topic } from './events.ts';
import { checkJsonInput, stringProblem } from './json-input.ts';
import type { LimitReporter } from './limits.ts';

/** One keyed data write: `collection:id` -> JSON; `value` null deletes the element. */
export interface DataChange {
  key: string;
  value: unknown;
  /** When set, only these users (and service callers) see the element. */
  visibleTo: readonly string[] | null;
}

/** One event for a recipient (notifier model). */
export interface PushedEvent {
  accessId: string;
  /** The connector's own timestamp; opaque, compared with `since`. */
  createdAt: number;
  payload: unknown;
}

/** A data row of the change log as read back. */
export interface DataRow {
  kind: 'data';
  changeId: number;
  key: string;
  collection: string;
  /** The id part of the key: a number when it is a canonical integer (OS3 ids), else a string. */
  id: string | number;
  /** null: deleted. */
  value: unknown;
  visibleTo: string[] | null;
  /** The element before this write: null when it did not exist (nobody saw it). */
  previous: { visibleTo: string[] | null } | null;
}

/** An event row of the change log as read back. */
export interface EventRow {
  kind: 'event';
  changeId: number;
  accessId: string;
  createdAt: number;
  payload: unknown;
}

export type ChangeRow = DataRow | EventRow;

/**
 * Change ids `(fromChangeId, toChangeId]` as one instance read them from Postgres, handed to
 * every local listener. Shared between listeners: nobody may mutate it; `memo` holds what
 * listeners derive from it once per instance (e.g. the content per user).
 */
export interface FeedBatch {
  /** Exclusive: the highest change id of the previous batch. */
  readonly fromChangeId: number;
  readonly toChangeId: number;
  readonly rows: readonly ChangeRow[];
  readonly memo: Map<string, unknown>;
}

/** How long changes are kept: the newest `count` change ids, or those younger than `ageMs`. */
export type Retention = { count: number } | { ageMs: number };

export interface ChangeLogOptions {
  db: Database;
  pubsub: PubSub;
  logger: Logger;
  /** Most items in one writeData / pushEvents call. */
  maxBatch: number;
  /** Largest serialized value or payload of one item (AUTOUPDATE_MAX_ITEM_BYTES). Default: none. */
  maxItemBytes?: number;
  /** Deepest nesting of a value or payload (JSON_MAX_DEPTH). Default 64. */
  maxJsonDepth?: number;
  /** Told when maxItemBytes or maxJsonDepth refuses a call. */
  onLimit?: LimitReporter;
  retention: Retention;
  /** Interval of the per-instance prune timer. */
  pruneIntervalMs: number;
  /** Interval of the per-instance check for committed changes no pub/sub message announced. */
  catchupMs: number;
}

// Serializes writers on every instance, so change ids commit in increasing order and a reader
// that has seen id N has seen every id below it (or it was rolled back and never exists).
const WRITE_LOCK = 0x5b0a_7d01;
const KEY_PATTERN = /^([A-Za-z0-9_./-]+):([A-Za-z0-9_.-]+)$/;
const MAX_KEY_LENGTH = 255;
const MAX_ACCESS_ID_LENGTH = 255;
const MAX_VISIBLE_TO = 10_000;
const DEFAULT_JSON_DEPTH = 64;

/** `collection` and `id` of a key, or null when the key is malformed. */
export function parseKey(key: string): { collection: string; id: string | number } | null {
  if (key.length > MAX_KEY_LENGTH) return null;
  const match = KEY_PATTERN.exec(key);
  if (!match) return null;
  const raw = match[2] as string;
  const id = /^(0|[1-9]\d{0,14})$/.test(raw) ? Number(raw) : raw;
  return { collection: match[1] as string, id };
}

function requireService(viewer: Viewer | null, what: string): void {
  if (!viewer) throw unauthenticated();
  if (!viewer.isService) throw forbidden(`${what} is for service callers only`);
}

function checkBatch(length: number, maxBatch: number, what: string): void {
  if (length === 0) throw badInput(`${what} needs at least one item`);
  if (length > maxBatch) throw badInput(`${what} takes at most ${maxBatch} items, got ${length}`);
}

/** Validates every change before anything is written; the first bad item rejects the call. */
export function validateChanges(
  changes: readonly DataChange[],
  maxBatch: number,
  maxJsonDepth = DEFAULT_JSON_DEPTH,
  onLimit?: LimitReporter,
): void {
  checkBatch(changes.length, maxBatch, 'writeData');
  changes.forEach((change, i) => {
    const where = `changes[${i}]`;
    if (typeof change.key !== 'string' || parseKey(change.key) === null) {
      throw badInput(
        `${where}.key must look like collection:id (letters, digits, _ . / -), got ${JSON.stringify(change.key)}`,
      );
    }
    if (change.value !== null && change.value !== undefined) {
      checkJsonInput(change.value, `${where}.value`, maxJsonDepth, onLimit);
      try {
        if (JSON.stringify(change.value) === undefined) throw new Error('not JSON');
      } catch {
        throw badInput(`${where}.value is not JSON`);
      }
    }
    const visibleTo = change.visibleTo;
    if (visibleTo !== null && visibleTo !== undefined) {
      if (!Array.isArray(visibleTo) || visibleTo.length > MAX_VISIBLE_TO) {
        throw badInput(`${where}.visibleTo must be a list of at most ${MAX_VISIBLE_TO} user ids`);
      }
      for (const userId of visibleTo) {
        if (typeof userId !== 'string' || userId === '') {
          throw badInput(`${where}.visibleTo holds an empty or non-string user id`);
        }
        const problem = stringProblem(userId);
        if (problem) throw badInput(`${where}.visibleTo: user ids ${problem}`);
      }
    }
  });
}

/** Validates every event before anything is written; the first bad item rejects the call. */
export function validateEvents(
  events: readonly PushedEvent[],
  maxBatch: number,
  maxJsonDepth = DEFAULT_JSON_DEPTH,
  onLimit?: LimitReporter,
): void {
  checkBatch(events.length, maxBatch, 'pushEvents');
  events.forEach((event, i) => {
    const where = `events[${i}]`;
    if (
      typeof event.accessId !== 'string' ||
      event.accessId === '' ||
      event.accessId.length > MAX_ACCESS_ID_LENGTH
    ) {
      throw badInput(`${where}.accessId must be a non-empty string`);
    }
    const problem = stringProblem(event.accessId);
    if (problem) throw badInput(`${where}.accessId ${problem}`);
    if (typeof event.createdAt !== 'number' || !Number.isFinite(event.createdAt)) {
      throw badInput(`${where}.createdAt must be a finite number`);
    }
    if (event.payload === null || event.payload === undefined) {
      throw badInput(`${where}.payload is required`);
    }
    checkJsonInput(event.payload, `${where}.payload`, maxJsonDepth, onLimit);
  });
}

interface RawRow {
  changeId: number;
  key: string | null;
  value: unknown;
  visibleTo: unknown;
  previous?: unknown;
  accessId: string | null;
  createdAt: number | null;
  payload: unknown;
}

/** Turns a raw change-log row into a typed one (JSON arrays of visibleTo into string[]). */
export function toChangeRow(raw: RawRow): ChangeRow {
  if (raw.key !== null) {
    const parsed = parseKey(raw.key);
    return {
      kind: 'data',
      changeId: raw.changeId,
      key: raw.key,
      collection: parsed?.collection ?? raw.key,
      id: parsed?.id ?? raw.key,
      value: raw.value ?? null,
      visibleTo: asVisibleTo(raw.visibleTo),
      previous:
        raw.previous !== null && typeof raw.previous === 'object'
          ? { visibleTo: asVisibleTo((raw.previous as { visibleTo?: unknown }).visibleTo) }
          : null,
    };
  }
  return {
    kind: 'event',
    changeId: raw.changeId,
    accessId: raw.accessId ?? '',
    createdAt: raw.createdAt ?? 0,
    payload: raw.payload,
  };
}

export function asVisibleTo(value: unknown): string[] | null {
  return Array.isArray(value) ? (value as string[]) : null;
}

/**
 * The change log in Postgres and this instance's reader of it. One sequence orders data writes
 * and events; a call is one transaction with consecutive ids; after commit one pub/sub message
 * carries the id range, and one reader per instance fetches the rows once for every local
 * listener. Pruning and the catch-up check are one timer each per instance.
 */
export function createChangeLog(options: ChangeLogOptions) {
  const { db, pubsub, logger, maxBatch, retention } = options;
  const prisma = db.prisma;
  const rangeTopic = topic('autoupdate');

  /** Refuses the call when one item's value or payload serializes larger than maxItemBytes. */
  function checkItemBytes<T>(
    items: readonly T[],
    value: (item: T) => unknown,
    what: string,
    field: string,
  ): void {
    const limit = options.maxItemBytes;
    if (limit === undefined) return;
    items.forEach((item, i) => {
      const json = JSON.stringify(value(item) ?? null);
      // Characters never outnumber bytes, so most items skip the byte count.
      const size = json.length > limit / 3 ? Buffer.byteLength(json) : json.length;
      if (size <= limit) return;
      options.onLimit?.('itemBytes', { size });
      throw badInput(`${what}[${i}].${field} is ${size} bytes; the limit is ${limit}`);
    });
  }

  /** Appends items in one transaction; returns their (consecutive) change ids. */
  async function append(
    items: readonly ({ data: DataChange } | { event: PushedEvent })[],
  ): Promise<ChangeRange> {
    const range = await prisma.$transaction(async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(${WRITE_LOCK}::bigint)`;
      const ids = await tx.$queryRaw<{ id: number }[]>`
        SELECT nextval(pg_get_serial_sequence('autoupdate_changes', 'change_id'))::int AS id
        FROM generate_series(1, ${items.length}::int)`;
      const sorted = ids.map((r) => r.id).sort((a, b) => a - b);
      // Each element's state before its write: from the table for the first write of a key in
      // this batch, from the previous write of the batch after that.
      const keys = [...new Set(items.flatMap((item) => ('data' in item ? [item.data.key] : [])))];
      const state = new Map<string, { visibleTo: unknown } | null>();
      if (keys.length > 0) {
        const current = await tx.$queryRaw<{ key: string; visibleTo: unknown }[]>`
          SELECT key, visible_to AS "visibleTo" FROM autoupdate_data
          WHERE key IN (SELECT jsonb_array_elements_text(${JSON.stringify(keys)}::jsonb))`;
        for (const row of current) state.set(row.key, { visibleTo: row.visibleTo ?? null });
      }
      const rows = items.map((item, i) => {
        const changeId = sorted[i] as number;
        if ('data' in item) {
          const { key, value, visibleTo } = item.data;
          const previous = state.get(key) ?? null;
          state.set(
            key,
            value === null || value === undefined ? null : { visibleTo: visibleTo ?? null },
          );
          return {
            change_id: changeId,
            key,
            value: value ?? null,
            visible_to: visibleTo ?? null,
            previous,
          };
        }
        const { accessId, createdAt, payload } = item.event;
        return { change_id: changeId, access_id: accessId, created_at: createdAt, payload };
      });
      await tx.$executeRaw`
        INSERT INTO autoupdate_changes
          (change_id, key, value, visible_to, previous, access_id, created_at, payload)
        SELECT t.change_id, t.key, t.value, t.visible_to, t.previous, t.access_id, t.created_at,
          t.payload
        FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS t(
          change_id int, key text, value jsonb, visible_to jsonb, previous jsonb, access_id text,
          created_at float8, payload jsonb)`;

      // The current values: the last write of each key in this batch wins.
      const last = new Map<string, { change_id: number; value: unknown; visible_to: unknown }>();
      for (const row of rows) {
        if (row.key !== undefined) {
          last.set(row.key, {
            change_id: row.change_id,
            value: row.value,
            visible_to: row.visible_to,
          });
        }
      }
      const upserts: unknown[] = [];
      const deletes: string[] = [];
      for (const [key, row] of last) {
        if (row.value === null) deletes.push(key);
        else
          upserts.push({
            key,
            collection: parseKey(key)?.collection ?? key,
            value: row.value,
            visible_to: row.visible_to,
            change_id: row.change_id,
          });
      }
      if (upserts.length > 0) {
        await tx.$executeRaw`
          INSERT INTO autoupdate_data (key, collection, value, visible_to, change_id)
          SELECT t.key, t.collection, t.value, t.visible_to, t.change_id
          FROM jsonb_to_recordset(${JSON.stringify(upserts)}::jsonb) AS t(
            key text, collection text, value jsonb, visible_to jsonb, change_id int)
          ON CONFLICT (key) DO UPDATE SET collection = EXCLUDED.collection,
            value = EXCLUDED.value, visible_to = EXCLUDED.visible_to, change_id = EXCLUDED.change_id`;
      }
      if (deletes.length > 0) {
        await tx.$executeRaw`
          DELETE FROM autoupdate_data
          WHERE key IN (SELECT jsonb_array_elements_text(${JSON.stringify(deletes)}::jsonb))`;
      }
      return {
        fromChangeId: sorted[0] as number,
        toChangeId: sorted[sorted.length - 1] as number,
      };
    });
    // After commit: a reader never sees half a batch. A lost message only delays delivery
    // until the next batch or the catch-up check; the write itself succeeded.
    await pubsub.publish(rangeTopic, range).catch((error: unknown) => {
      logger.warn({ err: error, range }, 'autoupdate range publish failed; catch-up will deliver');
    });
    return range;
  }

  // ---- this instance's reader -------------------------------------------------------------
  const listeners = new Set<(batch: FeedBatch) => void>();
  /** Highest change id this instance has read (or skipped while nobody listened). */
  let last: number | null = null;
  /** Highest change id known to be committed. */
  let target = 0;
  let pumping = false;
  let stopped = false;

  async function readRange(after: number, upTo: number): Promise<ChangeRow[]> {
    const raw = await prisma.$queryRaw<RawRow[]>`
      SELECT change_id AS "changeId", key, value, visible_to AS "visibleTo", previous,
        access_id AS "accessId", created_at AS "createdAt", payload
      FROM autoupdate_changes
      WHERE change_id > ${after}::int AND change_id <= ${upTo}::int
      ORDER BY change_id`;
    return raw.map(toChangeRow);
  }

  async function maxChangeId(): Promise<number> {
    const [row] = await prisma.$queryRaw<{ max: number | null }[]>`
      SELECT max(change_id) AS max FROM autoupdate_changes`;
    return row?.max ?? 0;
  }

  async function pump(): Promise<void> {
    if (pumping || last === null || stopped) return;
    pumping = true;
    try {
      while (last !== null && target > last && !stopped) {
        const from: number = last;
        const to = target;
        if (listeners.size === 0) {
          // Nobody here needs the rows; a listener that joins later replays from Postgres.
          last = to;
          continue;
        }
        const rows = await readRange(from, to);
        last = to;
        const batch: FeedBatch = { fromChangeId: from, toChangeId: to, rows, memo: new Map() };
        for (const listener of listeners) {
          try {
            listener(batch);
          } catch (error) {
            logger.error({ err: error }, 'autoupdate listener failed');
          }
        }
      }
    } catch (error) {
      logger.warn({ err: error }, 'autoupdate read failed; retrying at the next change');
    } finally {
      pumping = false;
    }
  }

  const announce = (to: number) => {
    if (to > target) target = to;
    void pump();
  };

  // Nothing is queued: the reader only needs the highest announced id, so a burst of messages
  // can never overflow a buffer.
  const stopAnnouncements = pubsub.listen(rangeTopic, (range) => {
    if (Number.isSafeInteger(range.toChangeId)) announce(range.toChangeId);
  });

  const ready: Promise<void> = (async () => {
    for (;;) {
      try {
        const max = await maxChangeId();
        last = max;
        if (max > target) target = max;
        void pump();
        return;
      } catch (error) {
        if (stopped) return;
        logger.warn({ err: error }, 'autoupdate: reading the last change id failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, 500).unref());
      }
    }
  })();

  const catchup = setInterval(() => {
    if (listeners.size === 0 || last === null || pumping) return;
    maxChangeId()
      .then(announce)
      .catch((error: unknown) => logger.warn({ err: error }, 'autoupdate catch-up failed'));
  }, options.catchupMs);
  catchup.unref();

  async function prune(): Promise<number> {
    if ('count' in retention) {
      return prisma.$executeRaw`
        DELETE FROM autoupdate_changes
        WHERE change_id <= (SELECT max(change_id) FROM autoupdate_changes) - ${retention.count}::int`;
    }
    // Always a prefix of the ids, and never the newest row (it marks the current change id).
    return prisma.$executeRaw`
      DELETE FROM autoupdate_changes
      WHERE change_id < (SELECT max(change_id) FROM autoupdate_changes)
        AND change_id <= (
          SELECT max(change_id) FROM autoupdate_changes
          WHERE recorded_at < (now() - make_interval(secs => ${retention.ageMs / 1000}::float8))::timestamp)`;
  }

  const pruner = setInterval(() => {
    prune()
      .then((count) => {
        if (count > 0) logger.debug({ count }, 'autoupdate changes pruned');
      })
      .catch((error: unknown) => logger.warn({ err: error }, 'autoupdate prune failed'));
  }, options.pruneIntervalMs);
  pruner.unref();

  return {
    /** Validates and writes keyed data (service callers); returns the last change id. */
    async writeData(viewer: Viewer | null, changes: readonly DataChange[]): Promise<ChangeRange> {
      requireService(viewer, 'writeData');
      validateChanges(changes, maxBatch, options.maxJsonDepth, options.onLimit);
      checkItemBytes(changes, (c) => c.value, 'changes', 'value');
      return append(changes.map((data) => ({ data })));
    },

    /** Validates and stores events (service callers); returns their change id range. */
    async pushEvents(viewer: Viewer | null, events: readonly PushedEvent[]): Promise<ChangeRange> {
      requireService(viewer, 'pushEvents');
      validateEvents(events, maxBatch, options.maxJsonDepth, options.onLimit);
      checkItemBytes(events, (e) => e.payload, 'events', 'payload');
      return append(events.map((event) => ({ event })));
    },

    /** Resolves once this instance knows the last committed change id (listen after this). */
    ready: () => ready,

    /**
     * Calls `listener` with every batch this instance reads from now on, in change-id order,
     * synchronously (keep it cheap). Returns the release function.
     */
    listen(listener: (batch: FeedBatch) => void): () => void {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    /** Deletes changes past the retention now (the timer does this every prune interval). */
    prune,

    stop(): void {
      stopped = true;
      clearInterval(catchup);
      clearInterval(pruner);
      stopAnnouncements();
      listeners.clear();
    },
  };
}

export type ChangeLog = ReturnType<typeof createChangeLog>;
