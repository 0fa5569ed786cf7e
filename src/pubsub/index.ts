export { createMemoryPubSub } from './memory.ts';
export {
  eventOfTopic,
  observePublishes,
  type PubSub,
  publishTimeOf,
  type SubscribeOptions,
} from './pubsub.ts';
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
export { type Topic, topicsOf } from './topics.ts';
