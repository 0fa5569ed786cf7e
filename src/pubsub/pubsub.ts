import type { EventMap, EventName } from './events.ts';
import { Subscription, type SubscriptionOptions } from './subscription.ts';
import type { Topic } from './topics.ts';

/** Options of `PubSub.subscribe`. */
export interface SubscribeOptions<E, T = E> extends SubscriptionOptions<T> {
  /** Keeps only the events this subscriber should see; runs synchronously per event. */
  filter?: (event: E) => boolean;
  /** Turns a published event into what the subscriber yields; required when E is not a T. */
  map?: (event: E) => T;
}

type MapRequired<E, T> = E extends T ? unknown : { map: (event: E) => T };

/**
 * Typed publish/subscribe across instances. Delivery is at most once: an event published while
 * a subscriber is not connected is not replayed (durable streams keep their own log in Postgres).
 */
export interface PubSub {
  /** `memory` (one instance) or `redis` (every instance sharing REDIS_URL). */
  readonly kind: 'memory' | 'redis';
  /** Resolves once the event is handed to every local listener or to Redis; rejects otherwise. */
  publish<K extends EventName>(topic: Topic<K>, payload: EventMap[K]): Promise<void>;
  /** A bounded subscription to one topic; see `SubscriptionOptions` for overflow and abort. */
  subscribe<K extends EventName, T = EventMap[K]>(
    topic: Topic<K>,
    options: SubscribeOptions<EventMap[K], T> & MapRequired<EventMap[K], T>,
  ): Subscription<T>;
  /** Number of topics this instance listens to (one Redis channel subscription each). */
  topicCount(): number;
  /** Throws when the backing service does not answer (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** The part of an EventTarget both backends provide (Node's EventTarget, the Redis target). */
export interface TopicTarget {
  addEventListener(topic: string, listener: (event: Event) => void): void;
  removeEventListener(topic: string, listener: (event: Event) => void): void;
}

/**
 * Builds a PubSub over an event target: subscriptions attach one listener each, reference
 * counting of topics is the target's job (the Redis target subscribes a channel on its first
 * listener and unsubscribes after its last).
 */
export function pubSubOver(backend: {
  kind: PubSub['kind'];
  target: TopicTarget;
  publish: (topic: string, payload: unknown) => Promise<void>;
  ping: () => Promise<void>;
  close: () => Promise<void>;
}): PubSub {
  const listenerCounts = new Map<string, number>();
  return {
    kind: backend.kind,
    publish: (topic, payload) => backend.publish(topic, payload),
    subscribe<K extends EventName, T>(topic: Topic<K>, options: SubscribeOptions<EventMap[K], T>) {
      const subscription = new Subscription<T>(options);
      if (subscription.done) return subscription;
      const { filter, map } = options;
      const listener = (event: Event) => {
        const payload = (event as CustomEvent<EventMap[K]>).detail;
        if (filter && !filter(payload)) return;
        subscription.push(map ? map(payload) : (payload as unknown as T));
      };
      backend.target.addEventListener(topic, listener);
      listenerCounts.set(topic, (listenerCounts.get(topic) ?? 0) + 1);
      subscription.onEnd(() => {
        backend.target.removeEventListener(topic, listener);
        const left = (listenerCounts.get(topic) ?? 1) - 1;
        if (left === 0) listenerCounts.delete(topic);
        else listenerCounts.set(topic, left);
      });
      return subscription;
    },
    topicCount: () => listenerCounts.size,
    ping: backend.ping,
    close: backend.close,
  };
}
