export type { EventMap, EventName, NotifyEnvelope } from './events.ts';
export { createMembership, type Membership, type MembershipChange } from './membership.ts';
export { createMemoryPubSub } from './memory.ts';
export type { PubSub, SubscribeOptions } from './pubsub.ts';
export { connectRedis, createRedisPubSub, type RedisClients } from './redis.ts';
export { Subscription, type SubscriptionOptions } from './subscription.ts';
export { type Topic, topic } from './topics.ts';
