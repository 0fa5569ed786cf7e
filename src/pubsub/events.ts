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
