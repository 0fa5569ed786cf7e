export { type ApplauseStore, createApplauseStore } from './applause-store.ts';
export type {
  ChangeRange,
  ChatMessageEvent,
  DropUserCommand,
  DropUserReply,
  EventMap,
  EventName,
  MeetingChangedEvent,
  NotifyEnvelope,
  PresencePingEvent,
  PresenceStatusName,
} from './events.ts';
export { createMembership, type Membership, type MembershipChange } from './membership.ts';
export { createMemoryPubSub } from './memory.ts';
export {
  createPresenceStore,
  type PresenceSnapshot,
  type PresenceStore,
  type RecordResult,
} from './presence-store.ts';
export {
  eventOfTopic,
  observePublishes,
  type PubSub,
  publishTimeOf,
  type SubscribeOptions,
} from './pubsub.ts';
export {
  createRateLimitStore,
  type InlineRate,
  RATE_CHECK_LUA,
  type Rate,
  type RateLimitStore,
} from './rate-limits.ts';
export {
  connectRedis,
  createRedisPubSub,
  pingRedis,
  type RedisClients,
  type RedisCommands,
  type RedisTarget,
  redisTarget,
} from './redis.ts';
export {
  type Consumer,
  type Ending,
  type Owner,
  Subscription,
  type SubscriptionOptions,
} from './subscription.ts';
export { type Topic, topic } from './topics.ts';
