/**
 * Counts deliveries per event (`seq`) as the subscribers report them, and lets the harness wait,
 * bounded, until an event has reached every subscriber. Fails fast when a subscriber is lost or
 * nothing arrives for `stallMs`.
 */
export class DeliveryLog {
  /** Deliveries counted for events this log expects. */
  total = 0;
  private readonly counts = new Map<number, number>();
  private readonly times = new Map<number, number[]>();
  private readonly waiters = new Map<number, { resolve(): void; reject(e: Error): void }[]>();
  private failure: Error | null = null;
  private lastProgress = performance.now();
  private readonly watchdog: NodeJS.Timeout;

  /**
   * @param subscribers deliveries that complete one event
   * @param recordTimes keep the arrival time (performance.now()) of every delivery
   * @param stallMs how long without any delivery before waits fail
   */
  constructor(
    readonly subscribers: number,
    private readonly recordTimes: boolean,
    private readonly stallMs = 15_000,
  ) {
    this.watchdog = setInterval(() => {
      const idle = performance.now() - this.lastProgress;
      if (this.waiters.size > 0 && idle > this.stallMs) {
        this.fail(new Error(`no delivery for ${Math.round(idle)} ms (${this.describe()})`));
      }
    }, 250);
  }

  /** Marks `seq` as expected; deliveries of unexpected events are ignored. */
  expect(seq: number): void {
    if (!this.counts.has(seq)) this.counts.set(seq, 0);
    if (this.recordTimes && !this.times.has(seq)) this.times.set(seq, []);
    this.lastProgress = performance.now();
  }

  /** One subscriber received event `seq` at `at`. */
  readonly deliver = (seq: number, at: number): void => {
    const count = this.counts.get(seq);
    if (count === undefined) return;
    this.counts.set(seq, count + 1);
    this.total += 1;
    this.lastProgress = at;
    this.times.get(seq)?.push(at);
    if (count + 1 === this.subscribers) {
      for (const waiter of this.waiters.get(seq) ?? []) waiter.resolve();
      this.waiters.delete(seq);
    }
  };

  /** Every wait now fails with `error` (a subscriber was closed, a publish failed). */
  fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    for (const list of this.waiters.values()) for (const waiter of list) waiter.reject(error);
    this.waiters.clear();
  }

  /** Resolves when `seq` has reached every subscriber. */
  complete(seq: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if ((this.counts.get(seq) ?? 0) >= this.subscribers) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const list = this.waiters.get(seq) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(seq, list);
    });
  }

  /** Deliveries of `seq` counted so far. */
  countOf(seq: number): number {
    return this.counts.get(seq) ?? 0;
  }

  /** Arrival times of `seq`, in arrival order (with recordTimes). */
  timesOf(seq: number): readonly number[] {
    return this.times.get(seq) ?? [];
  }

  describe(): string {
    const incomplete = [...this.counts].filter(([, n]) => n < this.subscribers);
    const shown = incomplete.slice(0, 3).map(([seq, n]) => `#${seq}: ${n}/${this.subscribers}`);
    return `${incomplete.length} event(s) incomplete${shown.length ? `: ${shown.join(', ')}` : ''}`;
  }

  close(): void {
    clearInterval(this.watchdog);
    this.fail(new Error('delivery log closed'));
  }
}
