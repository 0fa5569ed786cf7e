import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { withTimeout } from './subscriber.ts';

/** What the pool tells a load process (bench/load/load-worker.ts). */
export type PoolCommand =
  | {
      type: 'open';
      /** Global index of this process's first subscriber: it picks URL, token and address. */
      from: number;
      count: number;
      /** ws://…/graphql of every instance; subscriber i connects to urls[i % urls.length]. */
      urls: string[];
      /** Bearer tokens; subscriber i uses tokens[i % tokens.length]. */
      tokens: string[];
      /** Loopback source addresses; subscriber i binds sourceAddresses[i % length]. */
      sourceAddresses: string[];
      /** Handshakes in flight in this process. */
      concurrency: number;
      /** How long without any delivery before an expected event fails. */
      stallMs: number;
    }
  | { type: 'expect'; seq: number; withTimes: boolean }
  | { type: 'close' };

/** What a load process reports. */
export type WorkerReport =
  | { type: 'opened'; count: number }
  /** `seq` is expected: its deliveries count from now on. */
  | { type: 'expecting'; seq: number }
  | {
      type: 'complete';
      seq: number;
      delivered: number;
      /** Epoch ms (performance.timeOrigin + now) of this process's last delivery of `seq`. */
      lastAt: number;
      /** Epoch ms of every delivery, when asked for. */
      times: number[] | null;
    }
  | { type: 'incomplete'; seq: number; delivered: number; message: string }
  | { type: 'lost'; message: string }
  | { type: 'error'; message: string }
  | { type: 'closed' };

/** An event as the whole pool saw it. */
export interface PoolDelivery {
  /** Subscribers that had it (the pool's size when complete). */
  delivered: number;
  /** Epoch ms of the last delivery over every process. */
  lastAt: number;
  /** Epoch ms of every delivery (with `withTimes`), unsorted. */
  times: number[] | null;
}

/** Subscribers held by several load processes. */
export interface LoadPool {
  /** Pids of the load processes (their CPU is read from /proc). */
  readonly pids: number[];
  readonly subscribers: number;
  /** Subscribers per process, in process order. */
  readonly perProcess: number[];
  /**
   * Marks `seq` as expected in every process. `armed` resolves once every process counts its
   * deliveries (publish only then: a delivery before would be ignored); `done` resolves when
   * every subscriber had it and rejects with an IncompleteDelivery (how many had it) when a
   * process gave up (no delivery for its stall time) or failed.
   */
  expect(seq: number, withTimes: boolean): { armed: Promise<void>; done: Promise<PoolDelivery> };
  /** Closes every subscriber and ends the processes (bounded; killed when they hang). */
  close(): Promise<void>;
}

const WORKER = fileURLToPath(new URL('./load-worker.ts', import.meta.url));

/** A failure that carries how many subscribers had the event. */
export class IncompleteDelivery extends Error {
  constructor(
    message: string,
    readonly delivered: number,
  ) {
    super(message);
  }
}

interface Worker {
  child: ChildProcess;
  count: number;
  exited: Promise<unknown>;
}

/**
 * Forks `ceil(subscribers / maxPerProcess)` load processes (they inherit this process's CPU
 * affinity, the load core) and has them open `subscribers` graphql-ws subscribers, spread evenly.
 * Resolves once every subscriber is live; on any failure every process is ended and the error
 * is thrown.
 */
export async function openLoadPool(options: {
  subscribers: number;
  maxPerProcess: number;
  urls: string[];
  tokens: string[];
  sourceAddresses: string[];
  concurrency: number;
  stallMs: number;
  openTimeoutMs: number;
}): Promise<LoadPool> {
  const processes = Math.ceil(options.subscribers / options.maxPerProcess);
  const base = Math.floor(options.subscribers / processes);
  const counts = Array.from(
    { length: processes },
    (_, i) => base + (i < options.subscribers % processes ? 1 : 0),
  );
  const workers: Worker[] = counts.map((count) => {
    // No stdout: the bench's stdout carries the JSON summary.
    const child = fork(WORKER, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    // A send to a process that just died emits 'error' here; its exit is reported below
    // (events.once would reject on that 'error', so the exit is awaited by hand).
    child.on('error', () => {});
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    return { child, count, exited };
  });
  let failure: Error | null = null;
  const waiting = new Map<
    number,
    { reports: WorkerReport[]; armed: number; arm: () => void; settle: () => void }
  >();
  const fail = (error: Error) => {
    failure ??= error;
    for (const entry of waiting.values()) entry.settle();
  };
  const opened = workers.map(
    (worker, w) =>
      new Promise<void>((resolve, reject) => {
        worker.child.on('message', (report: WorkerReport) => {
          switch (report.type) {
            case 'opened':
              resolve();
              break;
            case 'expecting': {
              const entry = waiting.get(report.seq);
              if (entry && ++entry.armed === workers.length) entry.arm();
              break;
            }
            case 'complete':
            case 'incomplete': {
              const entry = waiting.get(report.seq);
              entry?.reports.push(report);
              if (entry && entry.reports.length === workers.length) entry.settle();
              break;
            }
            case 'lost':
            case 'error': {
              const error = new Error(`load process ${w + 1}: ${report.message}`);
              reject(error);
              fail(error);
              break;
            }
          }
        });
        worker.exited.then(() => {
          const error = new Error(`load process ${w + 1} exited`);
          reject(error);
          fail(error);
        });
      }),
  );

  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      for (const { child } of workers) if (child.connected) child.send({ type: 'close' });
      await Promise.all(
        workers.map(async ({ child, exited }) => {
          const closed = new Promise<void>((resolve) =>
            child.on('message', (report: WorkerReport) => {
              if (report.type === 'closed') resolve();
            }),
          );
          await withTimeout(closed, 40_000, 'closing a load process').catch(() => {});
          if (child.connected) child.disconnect();
          const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await exited;
          clearTimeout(timer);
        }),
      );
    })();
    return closing;
  };

  let from = 0;
  workers.forEach(({ child, count }) => {
    const command: PoolCommand = {
      type: 'open',
      from,
      count,
      urls: options.urls,
      tokens: options.tokens,
      sourceAddresses: options.sourceAddresses,
      concurrency: options.concurrency,
      stallMs: options.stallMs,
    };
    child.send(command);
    from += count;
  });
  try {
    await withTimeout(Promise.all(opened), options.openTimeoutMs, 'opening the subscribers');
  } catch (error) {
    await close();
    throw error;
  }

  return {
    pids: workers.map(({ child }) => child.pid as number),
    subscribers: options.subscribers,
    perProcess: counts,
    expect(seq, withTimes) {
      let arm = () => {};
      let disarm = (_error: Error) => {};
      const armed = new Promise<void>((resolve, reject) => {
        arm = resolve;
        disarm = reject;
      });
      const done = new Promise<PoolDelivery>((resolve, reject) => {
        if (failure) {
          disarm(failure);
          reject(failure);
          return;
        }
        const reports: WorkerReport[] = [];
        waiting.set(seq, {
          reports,
          armed: 0,
          arm,
          settle: () => {
            waiting.delete(seq);
            let delivered = 0;
            let lastAt = 0;
            const times: number[] = [];
            const problems: string[] = [];
            for (const report of reports) {
              if (report.type === 'complete') {
                lastAt = Math.max(lastAt, report.lastAt);
                if (report.times) times.push(...report.times);
              }
              if (report.type === 'incomplete') problems.push(report.message);
              if (report.type === 'complete' || report.type === 'incomplete') {
                delivered += report.delivered;
              }
            }
            if (failure || problems.length > 0 || delivered < options.subscribers) {
              const reason = failure?.message ?? problems[0] ?? 'a load process did not answer';
              const error = new IncompleteDelivery(
                `event #${seq} reached ${delivered} of ${options.subscribers} subscribers: ${reason}`,
                delivered,
              );
              disarm(error);
              reject(error);
              return;
            }
            resolve({ delivered, lastAt, times: withTimes ? times : null });
          },
        });
        for (const { child } of workers) {
          child.send({ type: 'expect', seq, withTimes } satisfies PoolCommand);
        }
      });
      // Either promise may go unawaited when the other one failed first.
      armed.catch(() => {});
      done.catch(() => {});
      return { armed, done };
    },
    close,
  };
}
