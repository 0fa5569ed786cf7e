/**
 * Items that fall due at a time, filed by epoch second and swept by one timer armed for the
 * earliest second: a timer per instance, not per item. The item keeps its own second (the
 * `slot` accessors), so filing costs no extra map entry per item.
 */
export class Deadlines<T> {
  readonly #buckets = new Map<number, Set<T>>();
  readonly #due: (item: T) => void;
  readonly #slot: { get(item: T): number | null; set(item: T, second: number | null): void };
  #timer: NodeJS.Timeout | null = null;
  #armedFor = Number.POSITIVE_INFINITY;

  constructor(
    due: (item: T) => void,
    slot: { get(item: T): number | null; set(item: T, second: number | null): void },
  ) {
    this.#due = due;
    this.#slot = slot;
  }

  /** Files `item` to fall due at `atMs` (epoch ms; rounded up to the second), replacing its time. */
  add(item: T, atMs: number): void {
    this.delete(item);
    const second = Math.ceil(atMs / 1000);
    let bucket = this.#buckets.get(second);
    if (!bucket) {
      bucket = new Set();
      this.#buckets.set(second, bucket);
    }
    bucket.add(item);
    this.#slot.set(item, second);
    if (second < this.#armedFor) this.#arm();
  }

  delete(item: T): void {
    const second = this.#slot.get(item);
    if (second === null) return;
    this.#slot.set(item, null);
    const bucket = this.#buckets.get(second);
    bucket?.delete(item);
    if (bucket?.size === 0) this.#buckets.delete(second);
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#armedFor = Number.POSITIVE_INFINITY;
  }

  #arm(): void {
    let next = Number.POSITIVE_INFINITY;
    for (const second of this.#buckets.keys()) if (second < next) next = second;
    if (next === this.#armedFor && this.#timer) return;
    this.stop();
    if (next === Number.POSITIVE_INFINITY) return;
    this.#armedFor = next;
    // setTimeout's range is 24.8 days; later deadlines are re-armed then.
    const wait = Math.min(Math.max(0, next * 1000 - Date.now()), 2 ** 31 - 1);
    this.#timer = setTimeout(() => this.#sweep(), wait);
    this.#timer.unref();
  }

  #sweep(): void {
    this.#timer = null;
    this.#armedFor = Number.POSITIVE_INFINITY;
    const now = Date.now();
    for (const [second, items] of this.#buckets) {
      if (second * 1000 > now) continue;
      this.#buckets.delete(second);
      for (const item of items) {
        this.#slot.set(item, null);
        this.#due(item);
      }
    }
    this.#arm();
  }
}
