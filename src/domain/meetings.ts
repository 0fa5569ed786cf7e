import type { Viewer } from '../auth/index.ts';
import type { Database } from '../db/index.ts';
import { badInput, forbidden, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { PubSub } from '../pubsub/index.ts';
import { topic } from './events.ts';

/** A meeting as clients see it (GraphQL Meeting). */
export interface Meeting {
  id: string;
  applauseEnabled: boolean;
  /** The users admitted to the meeting; null when the meeting is open to everyone. */
  memberIds: string[] | null;
}

/**
 * What `configureMeeting` accepts. An absent field keeps the stored value (defaults for a new
 * meeting: applause enabled, open); `memberIds: null` opens the meeting again.
 */
export interface MeetingInput {
  id: string;
  applauseEnabled?: boolean | null | undefined;
  memberIds?: readonly string[] | null | undefined;
}

/** What a capability may do in a meeting: the settings that apply to one viewer. */
export interface MeetingAccess {
  applauseEnabled: boolean;
}

/** Longest meeting and user id accepted (they are keys in Postgres and Redis). */
const MAX_ID_LENGTH = 200;
/** Largest member list one call may set. */
const MAX_MEMBERS = 100_000;

/** The membership set of users present in a meeting (open notify or applause subscriptions). */
export const meetingPresenceSet = (meetingId: string) => `meeting:${meetingId}`;

/** Checks a meeting id from any client; throws BAD_USER_INPUT. */
export function validMeetingId(meetingId: string): string {
  if (meetingId.trim() === '' || meetingId !== meetingId.trim()) {
    throw badInput('The meeting id must be a non-empty string without surrounding spaces');
  }
  if (meetingId.length > MAX_ID_LENGTH) {
    throw badInput(`The meeting id is longer than ${MAX_ID_LENGTH} characters`);
  }
  return meetingId;
}

/**
 * Who a meeting admits now, for `onMembersChanged` listeners: the same rule as `enter` (service
 * callers always; anonymous callers only to open meetings when the stream allows them).
 */
export type Admits = (viewer: Viewer | null) => boolean;

/** A change of a meeting's settings, told to the listeners of this instance. */
export type MembersChangedListener = (admits: Admits) => void;

export interface MeetingsOptions {
  db: Database;
  /** Carries `meeting` events: each instance drops its cached copy when another one changes it. */
  pubsub: PubSub;
  /** Unique per process: an instance ignores the events it published itself. */
  instanceId: string;
  /**
   * MEETING_CACHE_TTL_S in milliseconds: a cached meeting older than this is read again in the
   * background (a safety net for a missed invalidation; the hot path never waits for it).
   */
  cacheTtlMs: number;
  logger: Logger;
}

/** What this instance keeps of one meeting. */
interface Settings {
  applauseEnabled: boolean;
  /** Null when the meeting is open to everyone. */
  members: ReadonlySet<string> | null;
}

interface CacheEntry {
  settings: Settings | null;
  /** The read in flight; a newer read replaces it, and only the newest one is kept. */
  loading: Promise<Settings> | null;
  loadedAt: number;
}

/** Meetings cached per instance; beyond this the least recently used are dropped. */
const CACHE_ENTRIES = 10_000;
const OPEN: Settings = { applauseEnabled: true, members: null };

const sameMembers = (a: Settings | null, b: Settings) => {
  if (a === null) return false;
  if (a.members === null || b.members === null) return a.members === b.members;
  if (a.members.size !== b.members.size) return false;
  for (const member of a.members) if (!b.members.has(member)) return false;
  return true;
};

/**
 * Meetings (OpenSlides): stored in Postgres so every instance sees the same settings. A meeting
 * with a member list admits only its members (and service callers) to notify, applause and
 * sendApplause; an unknown meeting is open with applause enabled.
 *
 * Each instance caches the settings it reads (members as a set), so admitting a call reads no
 * Postgres. `configure` updates the cache of its own instance at once and publishes a `meeting`
 * event; every other instance reads the meeting again on it. Listeners of `onMembersChanged`
 * hear of every change on their instance, so streams of users who lost access can end.
 */
export function createMeetings(options: MeetingsOptions) {
  const { db, pubsub, instanceId, logger } = options;
  const cache = new Map<string, CacheEntry>();
  const listeners = new Map<string, Set<MembersChangedListener>>();

  const toMeeting = (row: {
    id: string;
    applauseEnabled: boolean;
    membersOnly: boolean;
    memberIds: string[];
  }): Meeting => ({
    id: row.id,
    applauseEnabled: row.applauseEnabled,
    memberIds: row.membersOnly ? row.memberIds : null,
  });
  const toSettings = (meeting: Meeting | null): Settings =>
    meeting === null
      ? OPEN
      : {
          applauseEnabled: meeting.applauseEnabled,
          members: meeting.memberIds === null ? null : new Set(meeting.memberIds),
        };

  const admitsWith =
    (settings: Settings, allowAnonymous: boolean): Admits =>
    (viewer) => {
      if (!viewer) return allowAnonymous && settings.members === null;
      return settings.members === null || viewer.isService || settings.members.has(viewer.userId);
    };

  /** Keeps `settings` as the meeting's current state; tells listeners when the members changed. */
  const store = (meetingId: string, settings: Settings) => {
    const entry = cache.get(meetingId);
    const before = entry?.settings ?? null;
    cache.delete(meetingId);
    cache.set(meetingId, { settings, loading: null, loadedAt: Date.now() });
    if (cache.size > CACHE_ENTRIES) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) cache.delete(oldest);
    }
    // Members of an uncached meeting hold no stream here (a stream keeps its meeting cached,
    // unless evicted): telling listeners costs nothing when there are none.
    if (sameMembers(before, settings) && before?.applauseEnabled === settings.applauseEnabled) {
      return;
    }
    const interested = listeners.get(meetingId);
    if (!interested) return;
    for (const listener of [...interested]) {
      try {
        listener((viewer) => admitsWith(settings, true)(viewer));
      } catch (error) {
        logger.error({ err: error, meetingId }, 'meeting listener failed');
      }
    }
  };

  /** Reads the meeting from Postgres into the cache; concurrent reads share one query. */
  const load = (meetingId: string): Promise<Settings> => {
    const entry = cache.get(meetingId) ?? { settings: null, loading: null, loadedAt: 0 };
    const loading = db.prisma.meeting.findUnique({ where: { id: meetingId } }).then((row) => {
      const settings = toSettings(row ? toMeeting(row) : null);
      // A newer read (after an invalidation) started meanwhile: only the newest one counts.
      if (cache.get(meetingId)?.loading === loading) store(meetingId, settings);
      return settings;
    });
    entry.loading = loading;
    cache.set(meetingId, entry);
    // The caller awaits `loading` when it needs it; a background refresh only logs a failure.
    loading.catch((error: unknown) => {
      const current = cache.get(meetingId);
      if (current?.loading === loading) {
        current.loading = null;
        if (current.settings === null) cache.delete(meetingId);
      }
      logger.warn({ err: error, meetingId }, 'meeting read failed');
    });
    return loading;
  };

  /** The cached settings, read once per instance (and again in the background when old). */
  const settingsOf = (meetingId: string): Settings | Promise<Settings> => {
    const entry = cache.get(meetingId);
    if (entry?.settings) {
      if (entry.loading === null && Date.now() - entry.loadedAt > options.cacheTtlMs) {
        void load(meetingId).catch(() => {});
      }
      return entry.settings;
    }
    return entry?.loading ?? load(meetingId);
  };

  // Changes made on other instances: read the meeting again (the event carries no settings,
  // since member lists can be large). Drained synchronously, so this never overflows.
  const changes = pubsub.subscribe(topic('meeting'), { capacity: 1 });
  changes.drain({
    take: (event) => {
      if (event.origin === instanceId) return;
      const cached = cache.get(event.meetingId);
      if (!cached && !listeners.has(event.meetingId)) return;
      void load(event.meetingId).catch(() => {});
    },
  });

  const admit = (
    settings: Settings,
    viewer: Viewer | null,
    meetingId: string,
    allowAnonymous: boolean,
  ): MeetingAccess => {
    if (!viewer) {
      if (allowAnonymous && settings.members === null) {
        return { applauseEnabled: settings.applauseEnabled };
      }
      throw unauthenticated();
    }
    if (!admitsWith(settings, false)(viewer)) {
      throw forbidden(`You are not a member of meeting ${meetingId}`);
    }
    return { applauseEnabled: settings.applauseEnabled };
  };

  return {
    /** Creates or updates a meeting. Service callers only (FORBIDDEN otherwise). */
    async configure(viewer: Viewer | null, input: MeetingInput): Promise<Meeting> {
      if (!viewer) throw unauthenticated();
      if (!viewer.isService) throw forbidden('Only service callers can configure meetings');
      const id = validMeetingId(input.id);
      let members: string[] | null | undefined;
      if (input.memberIds === null) members = null;
      else if (input.memberIds !== undefined) {
        if (input.memberIds.length > MAX_MEMBERS) {
          throw badInput(`A meeting can list at most ${MAX_MEMBERS} members`);
        }
        for (const member of input.memberIds) {
          if (member === '' || member.length > MAX_ID_LENGTH) {
            throw badInput(`Invalid member id: ${JSON.stringify(member.slice(0, 50))}`);
          }
        }
        members = [...new Set(input.memberIds)];
      }
      const applauseEnabled = input.applauseEnabled ?? undefined;
      const membership =
        members === undefined ? {} : { membersOnly: members !== null, memberIds: members ?? [] };
      const row = await db.prisma.meeting.upsert({
        where: { id },
        create: { id, applauseEnabled: applauseEnabled ?? true, ...membership },
        update: { ...(applauseEnabled === undefined ? {} : { applauseEnabled }), ...membership },
      });
      // This instance follows at once, the others on the event. Read back rather than cache
      // `row`: a change made meanwhile on another instance may already have been read here,
      // and the newest read is the one that counts.
      await load(id);
      await pubsub.publish(topic('meeting'), { meetingId: id, origin: instanceId });
      return toMeeting(row);
    },

    /** The stored meeting, or null when it was never configured (reads Postgres). */
    async get(meetingId: string): Promise<Meeting | null> {
      const row = await db.prisma.meeting.findUnique({ where: { id: meetingId } });
      return row ? toMeeting(row) : null;
    },

    /**
     * Admits the viewer to a meeting or throws: UNAUTHENTICATED for anonymous callers and
     * FORBIDDEN for non-members of a meeting with a member list (service callers always pass).
     * Anonymous callers pass open meetings only when `allowAnonymous` is set. Reads the
     * instance's cache (Postgres only for a meeting this instance has not seen yet).
     */
    async enter(
      viewer: Viewer | null,
      meetingId: string,
      options: { allowAnonymous?: boolean } = {},
    ): Promise<MeetingAccess> {
      validMeetingId(meetingId);
      const settings = settingsOf(meetingId);
      const allowAnonymous = options.allowAnonymous ?? false;
      return admit(
        settings instanceof Promise ? await settings : settings,
        viewer,
        meetingId,
        allowAnonymous,
      );
    },

    /**
     * Calls `listener` on this instance after each change of the meeting's settings (by
     * `configure` here or on any other instance, within the time an event takes), with a test
     * of who the meeting admits now. Streams use it to end those of users who lost access.
     * Returns the function that removes the listener.
     */
    onMembersChanged(meetingId: string, listener: MembersChangedListener): () => void {
      let set = listeners.get(meetingId);
      if (!set) {
        set = new Set();
        listeners.set(meetingId, set);
      }
      set.add(listener);
      return () => {
        const current = listeners.get(meetingId);
        if (!current?.delete(listener)) return;
        if (current.size === 0) listeners.delete(meetingId);
      };
    },

    /** Stops listening for changes of other instances (shutdown). */
    stop(): void {
      changes.end();
    },
  };
}

export type Meetings = ReturnType<typeof createMeetings>;
