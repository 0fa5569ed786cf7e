import type { Viewer } from '../auth/index.ts';
import type { Database } from '../db/index.ts';
import { badInput, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { type Owner, type PubSub, Subscription } from '../pubsub/index.ts';
import type { PresenceSnapshot, PresenceStore } from '../stores/index.ts';
import { type PresencePingEvent, type PresenceStatusName, topic } from './events.ts';
import type { InlineRateLimit } from './limits.ts';

export type PresenceStatus = PresenceStatusName;

/** A ping as a viewer sees it: `online` is computed when it is sent. */
export interface PresencePing {
  userId: string;
  status: PresenceStatus;
  /** The raw code: "0".."3" for the four statuses, or any string a legacy client sent. */
  statusCode: string;
  time: Date;
  /** True while the ping is younger than the presence timeout. */
  online: boolean;
}

/** The legacy status codes of the four statuses (backend-heartbeat). */
export const STATUS_CODES: Readonly<Record<PresenceStatus, string>> = {
  ACTIVE: '0',
  AWAY: '1',
  DO_NOT_DISTURB: '2',
  INVISIBLE: '3',
};

const STATUS_BY_CODE = new Map(
  Object.entries(STATUS_CODES).map(([status, code]) => [code, status as PresenceStatus]),
);

/** "0".."3" map to their status; any other string counts as ACTIVE (the code is kept). */
export const statusOfCode = (code: string): PresenceStatus => STATUS_BY_CODE.get(code) ?? 'ACTIVE';

/** Whether others may see a ping: INVISIBLE pings are for the user's own streams only. */
const visibleToOthers = (ping: PresencePingEvent) => ping.status !== 'INVISIBLE';

/** Longest status code and user id accepted. */
const MAX_CODE_LENGTH = 64;
const MAX_USER_ID_LENGTH = 256;

export interface PresenceOptions {
  pubsub: PubSub;
  db: Database;
  /** The live cache (Redis or memory) with the per-user minimum interval. */
  store: PresenceStore<PresencePingEvent>;
  /** PRESENCE_TIMEOUT_S in milliseconds: a ping older than this is offline. */
  timeoutMs: number;
  /** Events buffered per subscriber before it is closed as a slow consumer. */
  subscriptionBuffer: number;
  logger: Logger;
  /**
   * The per-user rate of `ping` (RATE_LIMIT_PING), on top of the store's minimum interval;
   * checked by the store together with the ping.
   */
  rateLimit?: InlineRateLimit;
  /**
   * PRESENCE_FLUSH_MS: accepted pings are written to Postgres in one statement per interval
   * (the newest ping of each user); `close` writes what is pending. Default 1000.
   */
  flushIntervalMs?: number;
}

/** What is waiting to be written to Postgres for one user: the newest ping of each kind. */
interface Pending {
  own: PresencePingEvent;
  visible: PresencePingEvent | null;
}

/** How a presence stream is bound to its connection. */
export interface PresenceStreamOptions {
  /** Ends the stream when it closes; told when the subscriber falls `subscriptionBuffer` behind. */
  owner: Owner;
  /** Also send online=false when the last ping times out. Default true. */
  timeouts?: boolean;
}

interface Subscriber {
  /** The subscriber is the watched user: sees every ping, INVISIBLE included. */
  own: boolean;
  timeouts: boolean;
  /** False until its first event (the cached ping) is queued; live events wait until then. */
  ready: boolean;
  out: Subscription<PresencePing>;
}

/**
 * What this instance knows of one watched user (a user with at least one local subscriber):
 * the newest ping of each kind, and one timer for the next offline transition. Every instance
 * computes the transition itself from the pings it received, so instances never coordinate.
 */
interface Watch {
  userId: string;
  own: PresencePingEvent | null;
  visible: PresencePingEvent | null;
  /** online=false already sent (or implied) for the current `own` / `visible` ping. */
  ownOffline: boolean;
  visibleOffline: boolean;
  subscribers: Set<Subscriber>;
  source: Subscription<PresencePingEvent>;
  timer: NodeJS.Timeout | null;
}

// Pings from the pub/sub are consumed at once by the watch loop; this only bounds a stall.
const SOURCE_CAPACITY = 10_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

const checkUserId = (userId: string) => {
  if (userId.length === 0 || userId.length > MAX_USER_ID_LENGTH) {
    throw badInput(`userId must be 1 to ${MAX_USER_ID_LENGTH} characters`);
  }
};

/**
 * Presence (backend-heartbeat): users ping with a status; `presence(userId)` streams the
 * cached ping at once and then every ping, and online=false when the last ping times out.
 * INVISIBLE pings reach only the user's own subscriptions; everyone else keeps the last
 * visible ping, which times out as if the user had stopped pinging. Delivery is at most once;
 * the last ping is cached in Redis (TTL) and kept in Postgres, so `lastSeen` survives restarts.
 * Postgres is written in batches (one statement per PRESENCE_FLUSH_MS for every user who
 * pinged), so a ping costs one Redis script and one publish; a graceful shutdown writes what is
 * pending, a crash loses at most the last interval's pings.
 */
export function createPresence(options: PresenceOptions) {
  const { pubsub, db, store, timeoutMs, logger } = options;
  const watches = new Map<string, Watch>();

  const isOnline = (ping: PresencePingEvent, now = Date.now()) => now - ping.time < timeoutMs;
  const view = (ping: PresencePingEvent, online = isOnline(ping)): PresencePing => ({
    userId: ping.userId,
    status: ping.status,
    statusCode: ping.statusCode,
    time: new Date(ping.time),
    online,
  });

  /** The cached pings, with what Redis no longer holds read from Postgres. */
  async function load(userId: string): Promise<PresenceSnapshot<PresencePingEvent>> {
    const cached = await store.get(userId);
    if (cached.own && cached.visible) return cached;
    // Not written yet (this instance's next flush): newer than what Postgres holds.
    const waiting = pending.get(userId);
    if (waiting) {
      cached.own ??= waiting.own;
      cached.visible ??= waiting.visible;
      if (cached.own && cached.visible) return cached;
    }
    const row = await db.prisma.presencePing.findUnique({ where: { userId } });
    if (!row) return cached;
    const own: PresencePingEvent = {
      userId,
      status: row.status as PresenceStatus,
      statusCode: row.statusCode,
      time: row.time.getTime(),
    };
    const visible: PresencePingEvent | null =
      row.visibleStatus !== null && row.visibleStatusCode !== null && row.visibleTime !== null
        ? {
            userId,
            status: row.visibleStatus as PresenceStatus,
            statusCode: row.visibleStatusCode,
            time: row.visibleTime.getTime(),
          }
        : null;
    return { own: cached.own ?? own, visible: cached.visible ?? visible };
  }

  // Pings waiting for the next flush, per user; at most one entry per user, so this is bounded
  // by the users pinging within one interval.
  let pending = new Map<string, Pending>();
  let flushTimer: NodeJS.Timeout | null = null;
  let flushing: Promise<void> | null = null;
  const flushIntervalMs = options.flushIntervalMs ?? 1000;

  const newer = (a: PresencePingEvent | null, b: PresencePingEvent | null) =>
    a === null ? b : b === null || a.time >= b.time ? a : b;

  /** Adds a ping (or the pings of a failed flush) to what the next flush writes. */
  const enqueue = (userId: string, entry: Pending) => {
    const before = pending.get(userId);
    pending.set(
      userId,
      before
        ? {
            own: newer(before.own, entry.own) as PresencePingEvent,
            visible: newer(before.visible, entry.visible),
          }
        : entry,
    );
    if (flushTimer === null && flushing === null) {
      flushTimer = setTimeout(() => void flush(), flushIntervalMs);
      flushTimer.unref();
    }
  };

  /**
   * Writes every pending ping in one statement; an older ping than the stored one (another
   * instance, late) changes nothing. On failure the pings wait for the next flush.
   */
  async function write(batch: Map<string, Pending>): Promise<void> {
    const rows = [...batch].map(([userId, { own, visible }]) => ({
      user_id: userId,
      status: own.status,
      status_code: own.statusCode,
      time: own.time,
      visible_status: visible?.status ?? null,
      visible_status_code: visible?.statusCode ?? null,
      visible_time: visible?.time ?? null,
    }));
    // One JSON parameter rather than one per value: any number of users, one statement.
    await db.prisma.$executeRaw`
      INSERT INTO "presence_pings" AS p ("user_id", "status", "status_code", "time",
        "visible_status", "visible_status_code", "visible_time")
      SELECT r.user_id, r.status, r.status_code,
        to_timestamp(r.time / 1000.0) AT TIME ZONE 'UTC',
        r.visible_status, r.visible_status_code,
        to_timestamp(r.visible_time / 1000.0) AT TIME ZONE 'UTC'
      FROM json_to_recordset(${JSON.stringify(rows)}::json) AS r(user_id text, status text,
        status_code text, time double precision, visible_status text,
        visible_status_code text, visible_time double precision)
      ON CONFLICT ("user_id") DO UPDATE SET
        "status" = CASE WHEN p."time" < EXCLUDED."time" THEN EXCLUDED."status" ELSE p."status" END,
        "status_code" = CASE WHEN p."time" < EXCLUDED."time"
          THEN EXCLUDED."status_code" ELSE p."status_code" END,
        "time" = GREATEST(p."time", EXCLUDED."time"),
        "visible_status" = CASE WHEN EXCLUDED."visible_time" > p."visible_time"
          OR (p."visible_time" IS NULL AND EXCLUDED."visible_time" IS NOT NULL)
          THEN EXCLUDED."visible_status" ELSE p."visible_status" END,
        "visible_status_code" = CASE WHEN EXCLUDED."visible_time" > p."visible_time"
          OR (p."visible_time" IS NULL AND EXCLUDED."visible_time" IS NOT NULL)
          THEN EXCLUDED."visible_status_code" ELSE p."visible_status_code" END,
        "visible_time" = CASE WHEN EXCLUDED."visible_time" > p."visible_time"
          OR (p."visible_time" IS NULL AND EXCLUDED."visible_time" IS NOT NULL)
          THEN EXCLUDED."visible_time" ELSE p."visible_time" END
      WHERE p."time" < EXCLUDED."time" OR EXCLUDED."visible_time" > p."visible_time"
        OR (p."visible_time" IS NULL AND EXCLUDED."visible_time" IS NOT NULL)`;
  }

  /** Writes what is pending now (and, if more arrived meanwhile, schedules the next flush). */
  function flush(): Promise<void> {
    if (flushTimer !== null) clearTimeout(flushTimer);
    flushTimer = null;
    if (flushing !== null) return flushing;
    if (pending.size === 0) return Promise.resolve();
    const batch = pending;
    pending = new Map();
    flushing = write(batch)
      .catch((error: unknown) => {
        logger.warn({ err: error, users: batch.size }, 'presence flush failed; retrying');
        for (const [userId, entry] of batch) enqueue(userId, entry);
      })
      .finally(() => {
        flushing = null;
        if (pending.size > 0 && flushTimer === null) {
          flushTimer = setTimeout(() => void flush(), flushIntervalMs);
          flushTimer.unref();
        }
      });
    return flushing;
  }

  const deliver = (watch: Watch, own: boolean, ping: PresencePing, timeout: boolean) => {
    for (const sub of watch.subscribers) {
      if (sub.ready && sub.own === own && (sub.timeouts || !timeout)) sub.out.push(ping);
    }
  };

  const schedule = (watch: Watch) => {
    if (watch.timer) clearTimeout(watch.timer);
    watch.timer = null;
    let due = Number.POSITIVE_INFINITY;
    if (watch.own && !watch.ownOffline) due = Math.min(due, watch.own.time + timeoutMs);
    if (watch.visible && !watch.visibleOffline) due = Math.min(due, watch.visible.time + timeoutMs);
    if (due === Number.POSITIVE_INFINITY) return;
    const delay = Math.min(Math.max(0, due - Date.now()), MAX_TIMER_MS);
    watch.timer = setTimeout(() => expire(watch), delay);
    watch.timer.unref();
  };

  /** The offline transition: sent once per ping that times out, then the timer re-arms. */
  const expire = (watch: Watch) => {
    watch.timer = null;
    const now = Date.now();
    if (watch.own && !watch.ownOffline && !isOnline(watch.own, now)) {
      watch.ownOffline = true;
      deliver(watch, true, view(watch.own, false), true);
    }
    if (watch.visible && !watch.visibleOffline && !isOnline(watch.visible, now)) {
      watch.visibleOffline = true;
      deliver(watch, false, view(watch.visible, false), true);
    }
    schedule(watch);
  };

  /** Takes a ping into the watch if it is newer than what it knows, and sends it on. */
  const apply = (watch: Watch, ping: PresencePingEvent, slot: 'own' | 'visible') => {
    const current = watch[slot];
    if (current && current.time >= ping.time) return;
    watch[slot] = ping;
    const online = isOnline(ping);
    // A ping that is already old implies online=false: no separate offline event for it.
    if (slot === 'own') watch.ownOffline = !online;
    else watch.visibleOffline = !online;
    deliver(watch, slot === 'own', view(ping, online), false);
    schedule(watch);
  };

  const applyPing = (watch: Watch, ping: PresencePingEvent) => {
    apply(watch, ping, 'own');
    if (visibleToOthers(ping)) apply(watch, ping, 'visible');
  };

  const closeWatch = (watch: Watch) => {
    if (watches.get(watch.userId) === watch) watches.delete(watch.userId);
    if (watch.timer) clearTimeout(watch.timer);
    watch.timer = null;
    watch.source.end();
  };

  /** The watch of a user: one pub/sub subscription and one timer per user on this instance. */
  const watchOf = (userId: string): Watch => {
    const existing = watches.get(userId);
    if (existing) return existing;
    const source = pubsub.subscribe(topic('presence', userId), {
      capacity: SOURCE_CAPACITY,
      onOverflow: () => {
        logger.error({ userId }, 'presence watch overflowed; closing its subscribers');
        for (const sub of watch.subscribers) sub.out.end();
      },
    });
    const watch: Watch = {
      userId,
      own: null,
      visible: null,
      ownOffline: false,
      visibleOffline: false,
      subscribers: new Set(),
      source,
      timer: null,
    };
    watches.set(userId, watch);
    void (async () => {
      try {
        for await (const ping of source) applyPing(watch, ping);
      } catch (error) {
        logger.error({ err: error, userId }, 'presence watch failed');
      }
    })();
    return watch;
  };

  return {
    /**
     * Records the viewer's ping with a legacy status code ("0".."3" or any string, see
     * `statusOfCode`) and sends it to every presence subscriber of the viewer. A ping sooner
     * than PING_MIN_INTERVAL_MS after the last accepted one changes nothing and is not sent;
     * the caller then gets the last accepted ping, without an error.
     */
    async ping(viewer: Viewer | null, statusCode: string): Promise<PresencePing> {
      if (!viewer) throw unauthenticated('Anonymous users cannot ping');
      if (statusCode.length > MAX_CODE_LENGTH) {
        throw badInput(`The status code is longer than ${MAX_CODE_LENGTH} characters`);
      }
      const ping: PresencePingEvent = {
        userId: viewer.userId,
        status: statusOfCode(statusCode),
        statusCode,
        time: Date.now(),
      };
      const limit = options.rateLimit;
      const result = await store.record(ping.userId, ping, {
        visible: visibleToOthers(ping),
        rate: limit?.of(viewer) ?? null,
      });
      if ('retryAfterMs' in result) {
        // Only a given rate refuses.
        throw limit?.refusal(viewer, result.retryAfterMs) ?? new Error('refused without a rate');
      }
      if (!result.accepted) {
        const current = result.current ?? (await load(viewer.userId)).own;
        return view(current ?? ping);
      }
      enqueue(ping.userId, { own: ping, visible: visibleToOthers(ping) ? ping : null });
      await pubsub.publish(topic('presence', ping.userId), ping);
      return view(ping);
    },

    /** The last ping of `userId` as the viewer may see it (INVISIBLE only for the user itself). */
    async lastSeen(viewer: Viewer | null, userId: string): Promise<PresencePing | null> {
      checkUserId(userId);
      const snapshot = await load(userId);
      const ping = viewer?.userId === userId ? snapshot.own : snapshot.visible;
      return ping ? view(ping) : null;
    },

    /**
     * A presence stream of `userId`: first the cached ping (if any) at once, then every newer
     * ping, and (unless `timeouts` is false) the last ping again with online=false when it
     * times out. The user's own streams see INVISIBLE pings; other streams do not. Ends with
     * its owner. At most once: pings while not subscribed are not replayed (the next stream
     * starts with the cached one).
     */
    async subscribe(
      viewer: Viewer | null,
      userId: string,
      stream: PresenceStreamOptions,
    ): Promise<Subscription<PresencePing>> {
      checkUserId(userId);
      const out = new Subscription<PresencePing>({
        capacity: options.subscriptionBuffer,
        owner: stream.owner,
      });
      if (out.done) return out;
      const sub: Subscriber = {
        own: viewer?.userId === userId,
        timeouts: stream.timeouts ?? true,
        ready: false,
        out,
      };
      // Subscribe before reading the cache, so a ping in between is not lost.
      const watch = watchOf(userId);
      watch.subscribers.add(sub);
      out.onEnd(() => {
        watch.subscribers.delete(sub);
        if (watch.subscribers.size === 0) closeWatch(watch);
      });
      let snapshot: PresenceSnapshot<PresencePingEvent>;
      try {
        snapshot = await load(userId);
      } catch (error) {
        out.end();
        throw error;
      }
      if (out.done) return out;
      if (snapshot.own) apply(watch, snapshot.own, 'own');
      if (snapshot.visible) apply(watch, snapshot.visible, 'visible');
      sub.ready = true;
      const first = sub.own ? watch.own : watch.visible;
      if (first) out.push(view(first));
      return out;
    },

    /** The user's own last ping (INVISIBLE included), for server-side use only; null: none. */
    async ownPing(userId: string): Promise<PresencePingEvent | null> {
      return (await load(userId)).own;
    },

    /** Writes the pings not yet in Postgres now (the next flush would write them anyway). */
    flush,

    /**
     * Ends every presence stream and timer of this instance and writes the pending pings to
     * Postgres (shutdown; call before Postgres closes).
     */
    async close(): Promise<void> {
      for (const watch of [...watches.values()]) {
        for (const sub of watch.subscribers) sub.out.end();
        closeWatch(watch);
      }
      // A flush may be running: wait for it, then write what came after it.
      await flush();
      await flush();
    },
  };
}

export type Presence = ReturnType<typeof createPresence>;
