import { topicsOf } from '../pubsub/index.ts';

/**
 * The typed event map: every event that crosses instances, keyed by event name. Payloads are
 * plain JSON (they travel through Redis as JSON when Redis is configured). Pub/sub knows none of
 * them: `topic` below types each topic with its event's payload.
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
  /**
   * A request for the instance that owns a graphql-sse single-connection reservation, on
   * `topic('sseCommand', ownerId)`: run or stop an operation posted to another instance, or
   * hand the reservation over to the instance that opened its stream. Answered once on
   * `topic('sseReply', requesterId)`; at most once, so the requester waits a bounded time.
   */
  sseCommand: SseCommand;
  /** The answer to an `sseCommand`, on `topic('sseReply', requesterId)`. */
  sseReply: SseReply;
}

export type EventName = keyof EventMap;

/**
 * The one place topics are named: `topic('notify')` or `topic('presence', userId)`, typed with
 * the event's payload (see `topicsOf`).
 */
export const topic = topicsOf<EventMap>();

/** A member's first join or last leave of a set, across all instances. */
export interface MembershipChange {
  set: string;
  member: string;
  present: boolean;
}

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

/** An operation as a graphql-sse client posts it (plain JSON). */
export interface SseOperationParams {
  query: string;
  variables?: Record<string, unknown> | null | undefined;
  operationName?: string | null | undefined;
  extensions?: Record<string, unknown> | null | undefined;
}

/** Where a forwarded request came from, for the owner's logs. */
export interface SseRequestInfo {
  ip: string | null;
  userAgent: string | null;
}

/** One operation that runs on a reservation, as a hand-over carries it. */
export interface SseHandedOperation {
  id: string;
  params: SseOperationParams;
  info: SseRequestInfo;
}

/**
 * What the owner of reservation `token` is asked. `operate` and `stop` come from an instance
 * that took a POST or DELETE and checked the caller (`userId`) against the reservation; the
 * owner checks it again against its stream. `handOver` comes from the instance that opened the
 * reservation's stream.
 */
export type SseCommand = { requestId: string; requesterId: string; token: string } & (
  | { kind: 'operate'; userId: string | null; params: SseOperationParams; info: SseRequestInfo }
  | { kind: 'stop'; userId: string | null; operationId: string }
  | { kind: 'handOver' }
);

/**
 * The owner's answer: the HTTP status and JSON body the requester answers with (`done`); the
 * reservation is no longer here (`moved`: the requester asks the store again); or what the
 * reservation held before its stream opened elsewhere (`handedOver`: the events not yet sent,
 * and the operations still running, to be started again on the stream).
 */
export type SseReply = { requestId: string } & (
  | { kind: 'done'; status: number; body: unknown }
  | { kind: 'moved' }
  | { kind: 'handedOver'; frames: string; operations: SseHandedOperation[] }
);
