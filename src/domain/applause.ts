import type { Viewer } from '../auth/index.ts';
import { forbidden, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import {
  type ApplauseStore,
  type Membership,
  type MembershipChange,
  Subscription,
} from '../pubsub/index.ts';
import type { Binding } from './connections.ts';
import type { RateLimit } from './limits.ts';
import { type Meetings, meetingPresenceSet, validMeetingId } from './meetings.ts';

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
  /** How often the level of a meeting with subscribers is recomputed (APPLAUSE_INTERVAL_MS). */
  intervalMs: number;
  /** Events buffered per subscriber before its connection is closed as a slow consumer. */
  subscriptionBuffer: number;
  logger: Logger;
  /** The per-user rate of `send` (RATE_LIMIT_APPLAUSE). */
  rateLimit?: RateLimit;
}

interface Watcher {
  subscription: Subscription<ApplauseState>;
  mode: ApplauseMode;
  /** The last state this watcher was sent; null before the first. */
  last: ApplauseState | null;
  /** True until the watcher got its initial state; ticks skip it meanwhile. */
  starting: boolean;
}

/** The per-instance state of one meeting with local subscribers: one timer, one watch. */
interface Room {
  meetingId: string;
  watchers: Set<Watcher>;
  timer: NodeJS.Timeout;
  presence: Subscription<MembershipChange>;
  running: boolean;
  again: boolean;
}

const sameState = (a: ApplauseState | null, b: ApplauseState) =>
  a !== null && a.level === b.level && a.presentUsers === b.presentUsers;

/**
 * Applause (OpenSlides): users applaud in a meeting; the level is the number of distinct users
 * who applauded within the window, read from a store all instances share. Each instance
 * recomputes the level of the meetings it has subscribers for with one timer per meeting, and
 * sends each subscriber what changed. Delivery is at most once; a subscriber always gets the
 * current state first.
 */
export function createApplause(options: ApplauseOptions) {
  const { store, meetings, membership, logger } = options;
  const rooms = new Map<string, Room>();

  const compute = async (meetingId: string, alsoPresent?: string): Promise<ApplauseState> => {
    const [level, present] = await Promise.all([
      store.level(meetingId, Date.now()),
      membership.members(meetingPresenceSet(meetingId)),
    ]);
    // A new subscriber's own join may not have reached the store yet; count it anyway.
    const extra = alsoPresent !== undefined && !present.includes(alsoPresent) ? 1 : 0;
    return { meetingId, level, presentUsers: present.length + extra };
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

  // Recomputes one meeting; calls that arrive while one runs are folded into one more run.
  const refresh = (room: Room) => {
    if (room.running) {
      room.again = true;
      return;
    }
    room.running = true;
    compute(room.meetingId)
      .then((state) => deliver(room, state))
      .catch((error: unknown) =>
        logger.warn({ err: error, meetingId: room.meetingId }, 'applause refresh failed'),
      )
      .finally(() => {
        room.running = false;
        if (room.again && rooms.get(room.meetingId) === room) {
          room.again = false;
          refresh(room);
        }
      });
  };

  const openRoom = (meetingId: string): Room => {
    const existing = rooms.get(meetingId);
    if (existing) return existing;
    const room: Room = {
      meetingId,
      watchers: new Set(),
      timer: setInterval(() => refresh(room), options.intervalMs),
      // Joins and leaves on any instance (and expiries of dead instances) refresh at once.
      presence: membership.watch(meetingPresenceSet(meetingId), { capacity: 1000 }),
      running: false,
      again: false,
    };
    room.timer.unref();
    rooms.set(meetingId, room);
    void (async () => {
      for await (const _change of room.presence) refresh(room);
    })();
    return room;
  };

  const closeRoom = (room: Room) => {
    clearInterval(room.timer);
    room.presence.end();
    if (rooms.get(room.meetingId) === room) rooms.delete(room.meetingId);
  };

  return {
    /**
     * Counts one applause of the viewer in a meeting (again within the window only refreshes
     * it). UNAUTHENTICATED for anonymous callers; FORBIDDEN when applause is disabled in the
     * meeting or the viewer is not one of its members.
     */
    async send(viewer: Viewer | null, meetingId: string): Promise<void> {
      if (!viewer) throw unauthenticated('Anonymous users cannot applaud');
      await options.rateLimit?.(viewer);
      const access = await meetings.enter(viewer, meetingId);
      if (!access.applauseEnabled) throw forbidden(`Applause is disabled in meeting ${meetingId}`);
      await store.add(meetingId, viewer.userId, Date.now());
    },

    /**
     * Opens an applause stream on a meeting (see ApplauseMode). Anonymous callers may watch open
     * meetings; a meeting with members admits only members. A signed-in viewer counts as present
     * in the meeting while the stream is open. Ends with the connection.
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
      const watcher: Watcher = { subscription, mode, last: null, starting: true };
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

    /** Stops every timer and ends every applause stream of this instance (shutdown). */
    stop(): void {
      for (const room of [...rooms.values()]) {
        for (const watcher of [...room.watchers]) watcher.subscription.end();
        closeRoom(room);
      }
    },
  };
}

export type Applause = ReturnType<typeof createApplause>;
