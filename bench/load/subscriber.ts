/** What a subscriber reports to the harness. */
export interface DeliverySink {
  /** A bench event `seq` arrived at `at` (performance.now()). */
  deliver(seq: number, at: number): void;
  /** The subscription ended without the harness asking (closed, error, complete). */
  lost(error: Error): void;
}

/** An open, subscribed client. */
export interface Subscriber {
  /** The NotifyChannel id of the first event, when the operation selected it. */
  channelId: string | null;
  /** Closes the connection; resolves when it is gone (bounded by the caller). */
  close(): Promise<void>;
}

/** Opens subscriber `index`; resolves once its first event (the subscription is live) arrived. */
export type OpenSubscriber = (index: number) => Promise<Subscriber>;

/** Rejects after `ms` unless `promise` settles first. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/**
 * Opens `count` subscribers with at most `concurrency` handshakes in flight (so the servers'
 * accept backlog never overflows), each bounded by `timeoutMs`. On any failure the ones already
 * open are closed and the error is thrown.
 */
export async function openMany(
  count: number,
  open: OpenSubscriber,
  options: { concurrency?: number; timeoutMs?: number } = {},
): Promise<Subscriber[]> {
  const concurrency = options.concurrency ?? 64;
  // A safety net only: every opener bounds its own handshake (and cleans up after it).
  const timeoutMs = options.timeoutMs ?? 30_000;
  const opened: Subscriber[] = [];
  let next = 0;
  let failure: unknown = null;
  const worker = async () => {
    while (failure === null && next < count) {
      const index = next++;
      try {
        opened.push(await withTimeout(open(index), timeoutMs, `subscriber ${index}`));
      } catch (error) {
        failure ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  if (failure !== null) {
    await closeMany(opened);
    throw failure;
  }
  return opened;
}

/** Closes every subscriber, waiting at most `timeoutMs` for all of them. */
export async function closeMany(subscribers: readonly Subscriber[], timeoutMs = 5_000) {
  await withTimeout(
    Promise.allSettled(subscribers.map((s) => s.close())),
    timeoutMs,
    'closing subscribers',
  ).catch(() => {});
}
