import { type PubSub, pubSubOver } from './pubsub.ts';

/**
 * In-process pub/sub (no REDIS_URL): events reach subscribers of this instance only, synchronously
 * during `publish`. Payload objects are shared between subscribers, so nobody may mutate them.
 */
export function createMemoryPubSub(): PubSub {
  const target = new EventTarget();
  return pubSubOver({
    kind: 'memory',
    target,
    publish: (topic, payload) => {
      target.dispatchEvent(new CustomEvent(topic, { detail: payload }));
      return Promise.resolve();
    },
    ping: () => Promise.resolve(),
    close: () => Promise.resolve(),
  });
}
