/**
 * A place among the operations an instance runs at once: `take` or `wait` gives one, `release`
 * hands it back.
 */
export interface Place {
  /** When it was given (ms, monotonic clock). */
  readonly at: number;
}

export interface AdmissionOptions {
  /** Operations that run at once; more wait for a place, first come first served. */
  max: number;
  /**
   * How long a place is held at most: an operation still running then stops counting and the
   * next one starts, so one stalled dependency (a query that never answers) cannot hold every
   * place. Its own work goes on; only the bound is lifted for it.
   */
  holdMs: number;
}

/**
 * Admission of the operations of the streaming transports (graphql-ws, graphql-sse): at most
 * `max` of them are being started at once on an instance; the others wait in order, each as a
 * parked callback rather than a half-run execution. A write storm (thousands of mutations
 * arriving on open sockets within milliseconds) then keeps a bounded amount of execution state
 * alive at a time: what survives young-generation garbage collections, and is copied by each,
 * is a few hundred operations instead of thousands, which halved the time spent in GC during a
 * storm. Plain HTTP needs no such bound: a request holds its connection until it is answered.
 *
 * Written here rather than taken from a queue library because the bound on how long a place is
 * held must cost nothing per operation: one timer for the instance, armed only while
 * operations wait, instead of a timer per operation.
 */
export function createAdmission(options: AdmissionOptions) {
  const { max, holdMs } = options;
  /** Places given and not yet handed back or lifted, oldest first (a Set keeps its order). */
  const held = new Set<Place>();
  /** Waiting operations in order; `head` is the next. Compacted as it is consumed. */
  let queue: ((place: Place) => void)[] = [];
  let head = 0;
  let timer: NodeJS.Timeout | null = null;
  let lifted = 0;

  const give = (): Place => {
    const place = { at: performance.now() };
    held.add(place);
    return place;
  };

  /** Gives free places to waiting operations, in order; arms or stops the hold timer. */
  const admit = () => {
    while (held.size < max && head < queue.length) {
      const next = queue[head] as (place: Place) => void;
      queue[head] = undefined as never;
      head += 1;
      next(give());
    }
    if (head === queue.length) {
      queue = [];
      head = 0;
    } else if (head > 1024 && head * 2 > queue.length) {
      queue = queue.slice(head);
      head = 0;
    }
    if (head < queue.length) {
      if (timer === null) {
        // When the oldest place's bound runs out (while some wait, every place is taken).
        const oldest = held.values().next().value;
        const delay = oldest ? oldest.at + holdMs - performance.now() : holdMs;
        timer = setTimeout(lift, Math.max(1, delay));
        timer.unref();
      }
    } else if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  };

  /** Lifts the bound for places held longer than `holdMs` (they leave `held`), then admits. */
  function lift() {
    timer = null;
    const before = performance.now() - holdMs;
    for (const place of held) {
      if (place.at > before) break;
      held.delete(place);
      lifted += 1;
    }
    admit();
  }

  return {
    /** A place at once if one is free and nobody waits; otherwise null (then `wait`). */
    take(): Place | null {
      return held.size < max && head === queue.length ? give() : null;
    },
    /** A place once one is free; operations get them in the order they asked. */
    wait(): Promise<Place> {
      return new Promise((resolve) => {
        queue.push(resolve);
        admit();
      });
    },
    /** Hands a place back (again, or after its bound was lifted, changes nothing). */
    release(place: Place): void {
      if (held.delete(place) && head < queue.length) admit();
    },
    /** Operations running with a place. */
    get running(): number {
      return held.size;
    },
    /** Operations waiting for a place. */
    get waiting(): number {
      return queue.length - head;
    },
    /** Places whose bound was lifted because their operation ran longer than `holdMs`. */
    get lifted(): number {
      return lifted;
    },
  };
}

export type Admission = ReturnType<typeof createAdmission>;
