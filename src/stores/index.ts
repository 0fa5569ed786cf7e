export {
  type ApplauseStore,
  createMemoryApplauseStore,
  createRedisApplauseStore,
} from './applause.ts';
export {
  createMemoryMembershipStore,
  createRedisMembershipStore,
  type MembershipMemory,
  type MembershipStore,
  type MembershipStoreOptions,
} from './membership.ts';
export {
  createMemoryPresenceStore,
  createRedisPresenceStore,
  type PresenceSnapshot,
  type PresenceStore,
  type PresenceStoreOptions,
  type RecordOptions,
  type RecordResult,
} from './presence.ts';
export {
  createMemoryRateLimitStore,
  createRedisRateLimitStore,
  type InlineRate,
  RATE_CHECK_LUA,
  type Rate,
  type RateLimitStore,
} from './rate-limits.ts';
export {
  createMemorySseReservationStore,
  createRedisSseReservationStore,
  type SseClaim,
  type SseReservationStore,
  type SseRoute,
} from './sse-reservations.ts';
