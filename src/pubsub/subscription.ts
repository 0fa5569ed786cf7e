/** What ends when its owner closes: a subscription, or anything else a connection holds. */
export interface Ending {
  end(): void;
}

/**
 * What a subscription's life is bound to: a client connection. It ends what it holds when it
 * closes, and decides what an overflow means (a connection closes as a slow consumer).
 */
export interface Owner {
  /** True once closed. */
  readonly closed: boolean;
  /** Calls `item.end()` when the owner closes, unless released before. */
  hold(item: Ending): void;
  /** Stops holding `item` (it ended by itself). */
  release(item: Ending): void;
  /** A subscription it holds overflowed (and has ended). */
  overflow(): void;
}

/** What a subscription does when its consumer falls behind, and what it is bound to. */
export interface SubscriptionOptions<T> {
  /** Events held for a consumer that has not pulled them yet; past this, it overflows. */
  capacity: number;
  /**
   * Ends the subscription when the owner closes; told (`overflow`) when the buffer overflows.
   * The usual owner is the subscriber's connection.
   */
  owner?: Owner;
  /**
   * Called once when the buffer overflows, for subscriptions without an owner; the
   * subscription has already ended (its buffered events are dropped).
   */
  onOverflow?: () => void;
  /** Events delivered first, before anything published. */
  initial?: readonly T[];
}

/** Takes a drained subscription's events synchronously (see `Subscription.drain`). */
export interface Consumer<T> {
  take(value: T): void;
  /** The subscription ended (by the consumer, its owner, or an overflow). */
  ended?(): void;
}

/** The buffer of every drained subscription (push hands events to the consumer instead). */
const DRAINED: readonly never[] = Object.freeze([]);

/**
 * A bounded push-to-pull queue: the source pushes, the consumer iterates. `return()` ends it at
 * once even while the consumer waits, which async generators cannot do; that is why domain
 * streams are built from this class rather than from `async function*`.
 */
export class Subscription<T> implements AsyncIterableIterator<T>, Ending {
  readonly #capacity: number;
  readonly #owner: Owner | undefined;
  readonly #onOverflow: (() => void) | undefined;
  #cleanups: (() => void)[] | null = null;
  #buffer: T[];
  #head = 0;
  #waiting: ((result: IteratorResult<T>) => void) | null = null;
  #sink: Consumer<T> | null = null;
  #done = false;

  constructor(options: SubscriptionOptions<T>) {
    this.#capacity = options.capacity;
    this.#onOverflow = options.onOverflow;
    this.#buffer = options.initial ? [...options.initial] : [];
    const owner = options.owner;
    this.#owner = owner;
    if (owner?.closed) this.#finish();
    else owner?.hold(this);
  }

  /** True once ended by the consumer, an abort, or an overflow. */
  get done(): boolean {
    return this.#done;
  }

  /** Registers work to run once when the subscription ends (remove listeners, timers). */
  onEnd(cleanup: () => void): void {
    if (this.#done) {
      cleanup();
      return;
    }
    // A literal allocates one slot; pushing to [] would reserve seventeen (per subscription).
    if (this.#cleanups) this.#cleanups.push(cleanup);
    else this.#cleanups = [cleanup];
  }

  /** Queues an event (or hands it to the sink); returns false when the subscription has ended. */
  push(value: T): boolean {
    if (this.#done) return false;
    if (this.#sink) {
      this.#sink.take(value);
      return !this.#done;
    }
    if (this.#waiting) {
      const resolve = this.#waiting;
      this.#waiting = null;
      resolve({ value, done: false });
      return true;
    }
    if (this.#buffer.length - this.#head >= this.#capacity) {
      this.#finish();
      this.#owner?.overflow();
      this.#onOverflow?.();
      return false;
    }
    this.#buffer.push(value);
    return true;
  }

  /**
   * Switches to push mode: every queued event, then every later one, goes synchronously to
   * `consumer` (no queue, no promise per event), which is told when the subscription ends.
   * For consumers that bound their own output, like the fan-out writer, which checks each
   * connection's unsent bytes. Use instead of iterating.
   */
  drain(consumer: Consumer<T>): void {
    if (this.#sink) throw new Error('Subscription is already drained');
    if (this.#done) return void consumer.ended?.();
    this.#sink = consumer;
    const queued = this.#buffer.slice(this.#head);
    // Nothing is queued once drained: no buffer of its own.
    this.#buffer = DRAINED as unknown as T[];
    this.#head = 0;
    for (const value of queued) {
      if (this.#done) return;
      consumer.take(value);
    }
  }

  /**
   * Ends the subscription because its consumer lost access (say, removed from a meeting). A
   * drained consumer (the GraphQL fan-out) gets `error` as its last event: a payload resolver
   * that returns its event returns the error, which GraphQL reports as the field's error (with
   * its code). An iterating consumer (a legacy stream) only sees the end, as with `end`.
   */
  endWith(error: Error): void {
    if (this.#done) return;
    this.#sink?.take(error as T);
    this.#finish();
  }

  /** Ends the subscription; the consumer sees `done` after what is already queued is dropped. */
  end(): void {
    this.#finish();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#head < this.#buffer.length) {
      const value = this.#buffer[this.#head] as T;
      this.#head += 1;
      if (this.#head > 64 && this.#head * 2 > this.#buffer.length) {
        this.#buffer = this.#buffer.slice(this.#head);
        this.#head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.#waiting = resolve;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.#finish();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(error?: unknown): Promise<IteratorResult<T>> {
    this.#finish();
    return Promise.reject(error);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.#buffer = DRAINED as unknown as T[];
    this.#head = 0;
    this.#owner?.release(this);
    const cleanups = this.#cleanups;
    this.#cleanups = null;
    for (const cleanup of cleanups ?? []) cleanup();
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting?.({ value: undefined, done: true });
    this.#sink?.ended?.();
  }
}
