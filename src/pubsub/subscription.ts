/** What a subscription does when its consumer falls behind. */
export interface SubscriptionOptions<T> {
  /** Events held for a consumer that has not pulled them yet; past this, `onOverflow` runs. */
  capacity: number;
  /**
   * Called once when the buffer overflows; the subscription has already ended (its buffered
   * events are dropped). Transports use it to close the connection as a slow consumer.
   */
  onOverflow?: () => void;
  /** Ends the subscription when aborted (connection closed, user dropped, shutdown). */
  signal?: AbortSignal;
  /** Events delivered first, before anything published. */
  initial?: readonly T[];
}

/**
 * A bounded push-to-pull queue: the source pushes, the consumer iterates. `return()` ends it at
 * once even while the consumer waits, which async generators cannot do; that is why domain
 * streams are built from this class rather than from `async function*`.
 */
export class Subscription<T> implements AsyncIterableIterator<T> {
  readonly #capacity: number;
  readonly #onOverflow: (() => void) | undefined;
  readonly #cleanups: (() => void)[] = [];
  #buffer: T[] = [];
  #head = 0;
  #waiting: ((result: IteratorResult<T>) => void) | null = null;
  #sink: ((value: T) => void) | null = null;
  #done = false;

  constructor(options: SubscriptionOptions<T>) {
    this.#capacity = options.capacity;
    this.#onOverflow = options.onOverflow;
    if (options.initial) this.#buffer.push(...options.initial);
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) this.#finish();
      else {
        const onAbort = () => this.#finish();
        signal.addEventListener('abort', onAbort, { once: true });
        this.#cleanups.push(() => signal.removeEventListener('abort', onAbort));
      }
    }
  }

  /** True once ended by the consumer, an abort, or an overflow. */
  get done(): boolean {
    return this.#done;
  }

  /** Registers work to run once when the subscription ends (remove listeners, timers). */
  onEnd(cleanup: () => void): void {
    if (this.#done) cleanup();
    else this.#cleanups.push(cleanup);
  }

  /** Queues an event (or hands it to the sink); returns false when the subscription has ended. */
  push(value: T): boolean {
    if (this.#done) return false;
    if (this.#sink) {
      this.#sink(value);
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
      this.#onOverflow?.();
      return false;
    }
    this.#buffer.push(value);
    return true;
  }

  /**
   * Switches to push mode: every queued event, then every later one, goes synchronously to
   * `sink` (no queue, no promise per event). For consumers that bound their own output, like
   * the fan-out writer, which checks each socket's unsent bytes. Use instead of iterating.
   */
  drain(sink: (value: T) => void): void {
    if (this.#sink) throw new Error('Subscription is already drained');
    this.#sink = sink;
    const queued = this.#buffer.slice(this.#head);
    this.#buffer = [];
    this.#head = 0;
    for (const value of queued) {
      if (this.#done) return;
      sink(value);
    }
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
    this.#buffer = [];
    this.#head = 0;
    for (const cleanup of this.#cleanups.splice(0)) cleanup();
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting?.({ value: undefined, done: true });
  }
}
