import { Subscription, type SubscriptionOptions } from './subscription.ts';
import type { Topic } from './topics.ts';

/**
 * What travels on a topic: the payload and its publish time (epoch ms, stamped once by the
 * publishing instance), so every instance can measure delivery latency without a clock read
 * per subscriber. Instances compare their own clock with the publisher's (keep them in NTP).
 */
interface Envelope {
  /** Publish time, epoch milliseconds. */
  t: number;
  /** The event payload. */
  p: unknown;
}

/** Publish time of what a subscription yielded, keyed by the yielded object. */
const publishTimes = new WeakMap<object, number>();

/**
 * When the event a subscriber yields was published (epoch ms, publisher's clock), if it came
 * from pub/sub as is; undefined for objects a subscription mapped or a domain stream made
 * itself (initial events, timers, rows read from Postgres).
 */
export function publishTimeOf(event: unknown): number | undefined {
  return typeof event === 'object' && event !== null ? publishTimes.get(event) : undefined;
}

/** The event name of a topic (`presence:5` -> `presence`), for metrics. */
export function eventOfTopic(topic: string): string {
  const end = topic.indexOf(':');
  return end === -1 ? topic : topic.slice(0, end);
}

/**
 * The same PubSub, calling `onPublish` with the event name after each successful publish
 * (the app counts them in `switchboard_events_published_total`).
 */
export function observePublishes(pubsub: PubSub, onPublish: (event: string) => void): PubSub {
  return {
    ...pubsub,
    publish: async (topic, payload) => {
      await pubsub.publish(topic, payload);
      onPublish(eventOfTopic(topic));
    },
  };
}

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
 * Payloads are plain JSON; what travels on a topic is its type (`Topic<P>`), from the event map
 * the app declares (src/domain/events.ts), so pub/sub itself knows no event.
 */
export interface PubSub {
  /** `memory` (one instance) or `redis` (every instance sharing REDIS_URL or a Redis Cluster). */
  readonly kind: 'memory' | 'redis';
  /** Resolves once the event is handed to every local listener or to Redis; rejects otherwise. */
  publish<P>(topic: Topic<P>, payload: NoInfer<P>): Promise<void>;
  /** A bounded subscription to one topic; see `SubscriptionOptions` for overflow and abort. */
  subscribe<P, T = P>(
    topic: Topic<P>,
    options: SubscribeOptions<P, T> & MapRequired<P, T>,
  ): Subscription<T>;
  /**
   * Calls `handler` synchronously with every event on `topic` until the returned function is
   * called. For per-instance dispatchers that route events themselves (nothing is queued, so
   * `handler` must not block); subscribers that need a bounded queue use `subscribe`.
   */
  listen<P>(topic: Topic<P>, handler: (event: P) => void): () => void;
  /** Number of topics this instance listens to (one Redis channel subscription each). */
  topicCount(): number;
  /**
   * Throws when the backing service does not answer (readiness). Resolves only after every
   * subscription made before the call is live.
   */
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
 * listener and unsubscribes after its last). The backend publishes and dispatches an
 * `Envelope` (payload plus publish time); listeners unwrap it.
 */
export function pubSubOver(backend: {
  kind: PubSub['kind'];
  target: TopicTarget;
  publish: (topic: string, payload: unknown) => Promise<void>;
  ping: () => Promise<void>;
  close: () => Promise<void>;
}): PubSub {
  // One backend listener per topic; local subscribers are called from a plain Set, which is
  // cheaper per subscriber than an EventTarget listener each (time and memory).
  type Listener = (envelope: Envelope) => void;
  const topics = new Map<string, { listeners: Set<Listener>; dispatch: (event: Event) => void }>();
  return {
    kind: backend.kind,
    publish: (topic, payload) => backend.publish(topic, { t: Date.now(), p: payload }),
    subscribe<P, T>(topic: Topic<P>, options: SubscribeOptions<P, T>) {
      const subscription = new Subscription<T>(options);
      if (subscription.done) return subscription;
      const { filter, map } = options;
      subscription.onEnd(
        attach(topic, (envelope) => {
          const payload = envelope.p as P;
          if (filter && !filter(payload)) return;
          if (map) return void subscription.push(map(payload));
          subscription.push(payload as unknown as T);
        }),
      );
      return subscription;
    },
    listen<P>(topic: Topic<P>, handler: (event: P) => void) {
      return attach(topic, (envelope) => handler(envelope.p as P));
    },
    topicCount: () => topics.size,
    ping: backend.ping,
    close: backend.close,
  };

  /** Adds a local listener to a topic (listening on the backend for its first); returns its removal. */
  function attach(topic: string, listener: Listener): () => void {
    let entry = topics.get(topic);
    if (!entry) {
      const listeners = new Set<Listener>();
      const dispatch = (event: Event) => {
        const envelope = (event as CustomEvent<Envelope>).detail;
        // Once per event per instance: the payload object is what unmapped subscribers yield.
        const payload = envelope.p;
        if (typeof payload === 'object' && payload !== null) publishTimes.set(payload, envelope.t);
        for (const each of listeners) each(envelope);
      };
      entry = { listeners, dispatch };
      topics.set(topic, entry);
      backend.target.addEventListener(topic, dispatch);
    }
    const { listeners, dispatch } = entry;
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size > 0 || topics.get(topic)?.listeners !== listeners) return;
      topics.delete(topic);
      backend.target.removeEventListener(topic, dispatch);
    };
  }
}
