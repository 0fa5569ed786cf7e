import type { MembershipChange } from './membership.ts';

/**
 * The typed event map: every event that crosses instances, keyed by event name. Payloads are
 * plain JSON (they travel through Redis as JSON when REDIS_URL is set).
 */
export interface EventMap {
  /** A notify message on its way to every matching notify subscription (at most once). */
  notify: NotifyEnvelope;
  /** A member's first join or last leave of a membership set (see membership.ts). */
  membership: MembershipChange;
  /**
   * A stored chat message, published once on `topic('chat', userId)` of each party (sender and
   * recipient), so it reaches only their subscriptions (at most once; history is in Postgres).
   */
  chat: ChatMessageEvent;
  /**
   * An accepted presence ping of a user, on `topic('presence', userId)` (at most once; the
   * last ping is also cached in Redis and kept in Postgres). INVISIBLE pings travel too: only
   * the user's own subscriptions show them.
   */
  presence: PresencePingEvent;
  /**
   * A committed autoupdate batch (writeData / pushEvents) on `topic('autoupdate')`: only the range
   * of change ids; each instance reads the rows from Postgres once. Published after commit.
   */
  autoupdate: ChangeRange;
  /**
   * A user's stored group changed (upsertUser, chatter's POST user), on `topic('userChanged')`:
   * every instance updates its cache of groups (at most once; a missed one expires with the
   * cache entry's eviction, and the database stays the truth).
   */
  userChanged: UserChange;
  /**
   * A meeting's settings changed (configureMeeting), on `topic('meeting')`: every other instance
   * reads the meeting again into its cache. At most once; a missed event is caught up by the
   * cache's age limit (MEETING_CACHE_TTL_S).
   */
  meeting: MeetingChangedEvent;
  /** A dropUser request on `topic('dropUser')`: every instance closes the user's connections. */
  dropUser: DropUserCommand;
  /** One instance's answer to a dropUser request, on `topic('dropUserReply', requesterId)`. */
  dropUserReply: DropUserReply;
}

export type EventName = keyof EventMap;

/** A published notify message with its targets; each subscriber decides if it matches. */
export interface NotifyEnvelope {
  senderUserId: string;
  senderChannelId: string;
  name: string;
  message: unknown;
  toAll: boolean;
  toMeeting: string | null;
  toUsers: string[];
  toChannels: string[];
}

/** Which meeting changed, and the instance that changed it (it has updated its cache already). */
export interface MeetingChangedEvent {
  meetingId: string;
  origin: string;
}

/** A chat message as stored: its real id and creation time (ISO-8601). */
export interface ChatMessageEvent {
  id: string;
  from: string;
  to: string;
  text: string | null;
  imagePath: string | null;
  createdAt: string;
}

/** Presence status of a ping; `statusCode` keeps the legacy code ("0".."3" or any string). */
export type PresenceStatusName = 'ACTIVE' | 'AWAY' | 'DO_NOT_DISTURB' | 'INVISIBLE';

/** One stored presence ping; `time` is when the server accepted it, in epoch milliseconds. */
export interface PresencePingEvent {
  userId: string;
  status: PresenceStatusName;
  statusCode: string;
  time: number;
}

/** Change ids `fromChangeId..toChangeId` (inclusive) were committed in one transaction. */
export interface ChangeRange {
  fromChangeId: number;
  toChangeId: number;
}

/** The stored group of `userId` is now `group`. */
export interface UserChange {
  userId: string;
  group: string | null;
}

/** Close every connection of `userId`; answer on the requester's reply topic. */
export interface DropUserCommand {
  requestId: string;
  requesterId: string;
  userId: string;
  reason: string | null;
}

/** How many connections `instanceId` closed for request `requestId`. */
export interface DropUserReply {
  requestId: string;
  instanceId: string;
  closed: number;
}
