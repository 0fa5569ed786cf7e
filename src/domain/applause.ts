import type { Viewer } from '../auth/index.ts';
import { forbidden, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { Subscription } from '../pubsub/index.ts';
import type { ApplauseStore } from '../stores/index.ts';
import type { Binding } from './connections.ts';
import type { InlineRateLimit } from './limits.ts';
import { type Admits, type Meetings, meetingPresenceSet, validMeetingId } from './meetings.ts';
import type { Membership, MembershipChange } from './membership.ts';

/** One applause event: the level and the number of present users of a meeting. */
export interface ApplauseState {
  meetingId: string;
  /** Distinct users who applauded within the window. */
  level: number;
  /** Distinct users with an open notify or applause subscription on the meeting (any instance). */
  presentUsers: number;
}

/**
 * How a stream reports: `changes` yields the current state at once and then every change of
 * level or presentUsers (GraphQL, ICC); `while-applauding` yields the state every interval while
 * the level is above 0 and once more when it falls to 0 (OpenSlides 3 notify).
 */
export type ApplauseMode = 'changes' | 'while-applauding';

export interface ApplauseOptions {
  store: ApplauseStore;
  meetings: Meetings;
  membership: Membership;
  /** How often the levels of meetings with subscribers are recomputed (APPLAUSE_INTERVAL_MS). */
  intervalMs: number;
  /** Events buffered per subscriber before its connection is closed as a slow consumer. */
  subscriptionBuffer: number;
  logger: Logger;
  /**
   * The rate of `send` per user and meeting (RATE_LIMIT_APPLAUSE), checked by the store with its
   * write: counted within the meeting, a Redis Cluster keeps the counter in the meeting's slot.
   */
  rateLimit?: InlineRateLimit;
}

interface Watcher {
  subscription: Subscription<ApplauseState>;
  viewer: Viewer | null;
  mode: ApplauseMode;
  /** The last state this watcher was sent; null before the first. */
  last: ApplauseState | null;
  /** True until the watcher got its initial state; ticks skip it meanwhile. */
  starting: boolean;
}

/** The per-instance state of one meeting with local subscribers. */
interface Room {
  meetingId: string;
  watchers: Set<Watcher>;
  /** Joins and leaves of present users on any instance. */
  presence: Subscription<MembershipChange>;
  /** Removes the room's members-changed listener. */
  stopListening: () => void;
}

const sameState = (a: ApplauseState | null, b: ApplauseState) =>
  a !== null && a.level === b.level && a.presentUsers === b.presentUsers;

/**
 * Applause (OpenSlides): users applaud in a meeting; the level is the number of distinct users
 * who applauded within the window, read from a store all instances share. Each instance
 * recomputes the levels of all meetings it has subscribers for with one timer, in one Redis
 * pipeline per tick (and a meeting whose present users changed at once, batched the same way),
 * and sends each subscriber what changed. Delivery is at most once; a subscriber always gets
 * the current state first. A subscriber the meeting no longer admits (configureMeeting removed
 * it) is ended with FORBIDDEN.
 */
export function createApplause(options: ApplauseOptions) {
  const { store, meetings, membership, logger } = options;
  const rooms = new Map<string, Room>();

  const compute = async (meetingId: string, alsoPresent?: string): Promise<ApplauseState> => {
    const [[level], present] = await Promise.all([
      store.levels([meetingId], Date.now()),
      membership.members(meetingPresenceSet(meetingId)),
    ]);
    // A new subscriber's own join may not have reached the store yet; count it anyway.
    const extra = alsoPresent !== undefined && !present.includes(alsoPresent) ? 1 : 0;
    return { meetingId, level: level ?? 0, presentUsers: present.length + extra };
  };

  const send = (watcher: Watcher, state: ApplauseState) => {
    watcher.last = state;
    watcher.subscription.push(state);
  };

  const deliver = (room: Room, state: ApplauseState) => {
    for (const watcher of room.watchers) {
      if (watcher.starting) continue;
      if (watcher.mode === 'changes') {
        if (!sameState(watcher.last, state)) send(watcher, state);
      } else if (state.level > 0 || (watcher.last?.level ?? 0) > 0) {
        send(watcher, state);
      }
    }
  };

  // Recomputation: the timer asks for every room, presence changes for one; requests that
  // arrive while a pass runs are folded into one more pass, so a slow Redis never piles up work.
  let timer: NodeJS.Timeout | null = null;
  let running = false;
  let wantAll = false;
  const wanted = new Set<Room>();

  const pass = async () => {
    const targets = wantAll ? [...rooms.values()] : [...wanted];
    wantAll = false;
    wanted.clear();
    const ids = targets.map((room) => room.meetingId);
    const [levels, present] = await Promise.all([
      store.levels(ids, Date.now()),
      membership.counts(ids.map(meetingPresenceSet)),
    ]);
    targets.forEach((room, i) => {
      if (rooms.get(room.meetingId) !== room) return;
      deliver(room, {
        meetingId: room.meetingId,
        level: levels[i] ?? 0,
        presentUsers: present[i] ?? 0,
      });
    });
  };

  const run = () => {
    running = true;
    pass()
      .catch((error: unknown) => logger.warn({ err: error }, 'applause refresh failed'))
      .finally(() => {
        running = false;
        if (wantAll || wanted.size > 0) run();
      });
  };

  const refresh = (room?: Room) => {
    if (room) wanted.add(room);
    else wantAll = true;
    if (!running) run();
  };

  const revoke = (room: Room, admits: Admits) => {
    for (const watcher of [...room.watchers]) {
      if (admits(watcher.viewer)) continue;
      watcher.subscription.endWith(
        forbidden(`You are no longer admitted to meeting ${room.meetingId}`),
      );
    }
  };

  const openRoom = (meetingId: string): Room => {
    const existing = rooms.get(meetingId);
    if (existing) return existing;
    const room: Room = {
      meetingId,
      watchers: new Set(),
      // Joins and leaves on any instance (and expiries of dead instances) refresh at once.
      presence: membership.watch(meetingPresenceSet(meetingId), { capacity: 1000 }),
      stopListening: () => {},
    };
    room.stopListening = meetings.onMembersChanged(meetingId, (admits) => revoke(room, admits));
    rooms.set(meetingId, room);
    room.presence.drain({ take: () => refresh(room) });
    if (timer === null) {
      timer = setInterval(() => refresh(), options.intervalMs);
      timer.unref();
    }
    return room;
  };

  const closeRoom = (room: Room) => {
    room.presence.end();
    room.stopListening();
    wanted.delete(room);
    if (rooms.get(room.meetingId) === room) rooms.delete(room.meetingId);
    if (rooms.size === 0 && timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  };

  return {
    /**
     * Counts one applause of the viewer in a meeting (again within the window only refreshes
     * it). UNAUTHENTICATED for anonymous callers; FORBIDDEN when applause is disabled in the
     * meeting or the viewer is not one of its members; RATE_LIMITED over RATE_LIMIT_APPLAUSE.
     * Reads no Postgres (meetings are cached) and makes one Redis call (rate check and write).
     */
    async send(viewer: Viewer | null, meetingId: string): Promise<void> {
      if (!viewer) throw unauthenticated('Anonymous users cannot applaud');
      const access = await meetings.enter(viewer, meetingId);
      if (!access.applauseEnabled) throw forbidden(`Applause is disabled in meeting ${meetingId}`);
      const limit = options.rateLimit;
      const refusedMs = await store.add(
        meetingId,
        viewer.userId,
        Date.now(),
        limit?.of(viewer, meetingId) ?? null,
      );
      // Only a given rate refuses.
      if (refusedMs !== null && limit) throw limit.refusal(viewer, refusedMs);
    },

    /**
     * Opens an applause stream on a meeting (see ApplauseMode). Anonymous callers may watch open
     * meetings; a meeting with members admits only members. A signed-in viewer counts as present
     * in the meeting while the stream is open. Ends with the connection, or with FORBIDDEN when
     * the meeting stops admitting the viewer.
     */
    async subscribe(
      viewer: Viewer | null,
      meetingId: string,
      connection: Binding,
      mode: ApplauseMode = 'changes',
    ): Promise<Subscription<ApplauseState>> {
      validMeetingId(meetingId);
      await meetings.enter(viewer, meetingId, { allowAnonymous: true });
      const subscription = new Subscription<ApplauseState>({
        capacity: options.subscriptionBuffer,
        owner: connection,
      });
      if (subscription.done) return subscription;
      const release = viewer ? membership.join(meetingPresenceSet(meetingId), viewer.userId) : null;
      const room = openRoom(meetingId);
      const watcher: Watcher = { subscription, viewer, mode, last: null, starting: true };
      room.watchers.add(watcher);
      subscription.onEnd(() => {
        release?.();
        room.watchers.delete(watcher);
        if (room.watchers.size === 0) closeRoom(room);
      });
      try {
        const state = await compute(meetingId, viewer?.userId);
        watcher.starting = false;
        if (mode === 'changes' || state.level > 0) send(watcher, state);
      } catch (error) {
        subscription.end();
        throw error;
      }
      return subscription;
    },

    /** Stops the timer and ends every applause stream of this instance (shutdown). */
    stop(): void {
      for (const room of [...rooms.values()]) {
        for (const watcher of [...room.watchers]) watcher.subscription.end();
        closeRoom(room);
      }
    },
  };
}

export type Applause = ReturnType<typeof createApplause>;
