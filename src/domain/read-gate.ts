import { unavailable } from '../errors.ts';

export interface ReadGateOptions {
  /** Tasks running at once; keep it below the database pool so writers always find a slot. */
  concurrency: number;
  /** Longest wait for a slot; then the task is refused with UNAVAILABLE and a retry hint. */
  maxWaitMs: number;
  /** Told about each task refused after waiting maxWaitMs. */
  onTimeout?: () => void;
}

/**
 * A FIFO queue in front of a costly database read: at most `concurrency` run at once, the others
 * wait their turn instead of all asking the pool at once (which makes Prisma give up after its
 * own short wait, P2028, for nearly all of them). A task still waiting after `maxWaitMs` is
 * refused with UNAVAILABLE (retryAfterMs) and never runs.
 */
export function createReadGate(options: ReadGateOptions) {
  let running = 0;
  const waiting: { start: () => void; timer: NodeJS.Timeout }[] = [];

  const next = () => {
    while (running < options.concurrency && waiting.length > 0) {
      const entry = waiting.shift() as (typeof waiting)[number];
      clearTimeout(entry.timer);
      running += 1;
      entry.start();
    }
  };

  return {
    /** Runs `task` once a slot is free; rejects with UNAVAILABLE when none came in time. */
    async run<T>(task: () => Promise<T>): Promise<T> {
      if (running >= options.concurrency || waiting.length > 0) {
        await new Promise<void>((resolve, reject) => {
          const entry = {
            start: resolve,
            timer: setTimeout(() => {
              const index = waiting.indexOf(entry);
              if (index >= 0) waiting.splice(index, 1);
              options.onTimeout?.();
              reject(
                unavailable(
                  'The server is busy setting up other subscriptions; try again shortly',
                  Math.min(options.maxWaitMs, 5_000),
                ),
              );
            }, options.maxWaitMs),
          };
          entry.timer.unref();
          waiting.push(entry);
        });
      } else {
        running += 1;
      }
      try {
        return await task();
      } finally {
        running -= 1;
        next();
      }
    },
    /** Tasks waiting for a slot now. */
    get waiting(): number {
      return waiting.length;
    },
  };
}

export type ReadGate = ReturnType<typeof createReadGate>;
