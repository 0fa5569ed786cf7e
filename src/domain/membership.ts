import type { Logger } from '../logger.ts';
import type { PubSub, Subscription, SubscriptionOptions } from '../pubsub/index.ts';
import type { MembershipStore } from '../stores/index.ts';
import { type MembershipChange, topic } from './events.ts';

export type { MembershipChange };

/**
 * Who is present where, across instances: "users with an open connection in group g", "users
 * subscribed to meeting m", "live instances". Each instance joins members while it holds them
 * (reference-counted locally) and keeps its entries alive with a heartbeat; entries of an
 * instance that dies expire after `ttlMs`, and a sweep then reports the members as gone.
 */
export interface Membership {
  /** Holds `member` in `set` until the returned release runs (idempotent). */
  join(set: string, member: string): () => void;
  /** The distinct live members of `set`, on every instance. */
  members(set: string): Promise<string[]>;
  /** How many distinct live members each of `sets` has, in the same order. */
  counts(sets: readonly string[]): Promise<number[]>;
  /**
   * Changes of `set`: a member's first join anywhere (present) and its last leave or expiry
   * (absent). At most once, in the order this instance sees them.
   */
  watch(
    set: string,
    options: SubscriptionOptions<MembershipChange>,
  ): Subscription<MembershipChange>;
  /** Releases every local entry and stops the heartbeat. */
  close(): Promise<void>;
}

export interface MembershipOptions {
  pubsub: PubSub;
  /** This instance's entries (the store was made with its instance id and `ttlMs`). */
  store: MembershipStore;
  /** How long an entry outlives its last heartbeat; the heartbeat runs three times per TTL. */
  ttlMs: number;
  logger: Logger;
}

/**
 * Creates the membership registry over a store (memory for one instance, Redis for several) and
 * pub/sub: local reference counts decide when this instance adds or removes its entry, the store
 * decides first join and last leave across instances, pub/sub announces them, and a heartbeat
 * refreshes this instance's entries and sweeps the expired ones of watched sets.
 */
export function createMembership(options: MembershipOptions): Membership {
  const { pubsub, store, logger } = options;
  /** Local reference counts: set -> member -> holders on this instance. */
  const local = new Map<string, Map<string, number>>();
  /** Sets watched on this instance, with their watcher counts (they are swept). */
  const watched = new Map<string, number>();
  // Operations on one (set, member) run in order, so a quick leave never overtakes its join.
  const queues = new Map<string, Promise<void>>();

  const announce = (set: string, member: string, present: boolean) =>
    pubsub.publish(topic('membership', set), { set, member, present });

  const enqueue = (set: string, member: string, work: () => Promise<void>) => {
    const key = `${set}\u0000${member}`;
    const next = (queues.get(key) ?? Promise.resolve()).then(work).catch((error: unknown) => {
      logger.error({ err: error, set }, 'membership update failed');
    });
    queues.set(key, next);
    void next.then(() => {
      if (queues.get(key) === next) queues.delete(key);
    });
  };

  const heartbeat = setInterval(
    () => {
      const entries: [string, string][] = [];
      for (const [set, members] of local)
        for (const member of members.keys()) entries.push([set, member]);
      if (entries.length > 0) {
        store.refresh(entries).catch((error: unknown) => {
          logger.warn({ err: error }, 'membership heartbeat failed');
        });
      }
      for (const set of watched.keys()) {
        store
          .sweep(set)
          .then((gone) => Promise.all(gone.map((member) => announce(set, member, false))))
          .catch((error: unknown) => logger.warn({ err: error, set }, 'membership sweep failed'));
      }
    },
    Math.max(50, Math.floor(options.ttlMs / 3)),
  );
  heartbeat.unref();

  return {
    join(set, member) {
      const members = local.get(set) ?? new Map<string, number>();
      local.set(set, members);
      const count = (members.get(member) ?? 0) + 1;
      members.set(member, count);
      if (count === 1) {
        enqueue(set, member, async () => {
          if (await store.add(set, member)) await announce(set, member, true);
        });
      }
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const current = local.get(set);
        const left = (current?.get(member) ?? 1) - 1;
        if (left > 0) {
          current?.set(member, left);
          return;
        }
        current?.delete(member);
        if (current?.size === 0) local.delete(set);
        enqueue(set, member, async () => {
          // Re-joined meanwhile on this instance: keep the entry.
          if (local.get(set)?.has(member)) return;
          if (await store.remove(set, member)) await announce(set, member, false);
        });
      };
    },
    members: (set) => store.members(set),
    counts: (sets) => store.counts(sets),
    watch(set, subscriptionOptions) {
      const subscription = pubsub.subscribe(topic('membership', set), subscriptionOptions);
      watched.set(set, (watched.get(set) ?? 0) + 1);
      subscription.onEnd(() => {
        const left = (watched.get(set) ?? 1) - 1;
        if (left === 0) watched.delete(set);
        else watched.set(set, left);
      });
      return subscription;
    },
    async close() {
      clearInterval(heartbeat);
      const entries: [string, string][] = [];
      for (const [set, members] of local)
        for (const member of members.keys()) entries.push([set, member]);
      local.clear();
      await Promise.allSettled(
        entries.map(async ([set, member]) => {
          if (await store.remove(set, member)) await announce(set, member, false);
        }),
      );
    },
  };
}
