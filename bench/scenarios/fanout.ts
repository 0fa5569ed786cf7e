import { setTimeout as sleep } from 'node:timers/promises';
import { type BenchTarget, sinkOf } from '../load/bench-target.ts';
import { DeliveryLog } from '../load/deliveries.ts';
import { closeMany, type DeliverySink, type OpenSubscriber, openMany } from '../load/subscriber.ts';
import { cpuSeconds, waitIdle, writeSyscalls } from '../proc.ts';

/** One measured pass of `events` events. */
export interface FanoutRun {
  /** Deliveries counted by the clients during the measured events. */
  deliveries: number;
  /** utime + stime of the server process(es) during the measured events. */
  cpuSeconds: number;
  /** The same per process (two instances: how the work was split). */
  cpuSecondsByProcess: number[];
  wallSeconds: number;
  perCpuSecond: number;
  perWallSecond: number;
  /** Write system calls of the server process(es) during the measured events. */
  writeSyscalls: number;
  /** False when the servers were still busy (previous pass, closing sockets) at the start. */
  startedIdle: boolean;
}

/** Deliveries per server CPU-second of one fan-out configuration: its median pass. */
export interface FanoutResult extends FanoutRun {
  subscribers: number;
  /** Measured events per pass (warm-up events excluded). */
  events: number;
  /** Every pass, in order (one unless --repeat). */
  runs: FanoutRun[];
}

export interface FanoutOptions {
  subscribers: number;
  events: number;
  /** Events published but not yet delivered to every subscriber, at most. */
  window: number;
  /** Events sent (one at a time) before measuring. */
  warmup: number;
  /** Measured passes on the same subscribers; the result is the median by perCpuSecond. */
  repeat: number;
  /**
   * An open loop at a fixed rate: event k is published `k * intervalMs` after the first (and
   * still only with fewer than `window` in flight), so configurations compared get the same
   * traffic whatever their speed. Without it the loop is closed (paced by `window` alone).
   */
  intervalMs?: number;
}

/**
 * Opens `subscribers` clients, warms up, then publishes `events` events keeping at most `window`
 * of them in flight (event k is published only once event k - window reached every
 * subscriber), so the server always has work queued but its queues stay bounded. Server CPU
 * is read from /proc right before the first publish and right after the last delivery.
 */
export async function measureFanout(
  target: BenchTarget,
  opener: (sink: DeliverySink) => OpenSubscriber,
  options: FanoutOptions,
): Promise<FanoutResult> {
  const log = new DeliveryLog(options.subscribers, false);
  target.setPhase(log);
  const subscribers = await openMany(options.subscribers, opener(sinkOf(log)));
  const publish = (seq: number) => {
    log.expect(seq);
    const { done } = target.publisher.publish(seq);
    done.catch((error: Error) => log.fail(error));
    return done;
  };

  const measure = async (): Promise<FanoutRun> => {
    const startedIdle = await waitIdle(target.pids);
    const before = await Promise.all(target.pids.map(cpuSeconds));
    const writesBefore = await Promise.all(target.pids.map(writeSyscalls));
    const countedBefore = log.total;
    const started = performance.now();

    const seqs = Array.from({ length: options.events }, () => target.nextSeq());
    const sent: Promise<void>[] = [];
    for (const [i, seq] of seqs.entries()) {
      const waitFor = seqs[i - options.window];
      if (waitFor !== undefined) await log.complete(waitFor);
      const due = options.intervalMs === undefined ? 0 : started + i * options.intervalMs;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      sent.push(publish(seq));
    }
    await Promise.all([...sent, ...seqs.slice(-options.window).map((seq) => log.complete(seq))]);

    const wallSeconds = (performance.now() - started) / 1000;
    const after = await Promise.all(target.pids.map(cpuSeconds));
    const writesAfter = await Promise.all(target.pids.map(writeSyscalls));
    const cpuSecondsByProcess = after.map((value, i) => value - (before[i] ?? value));
    const cpu = cpuSecondsByProcess.reduce((a, b) => a + b, 0);
    const deliveries = log.total - countedBefore;
    return {
      deliveries,
      cpuSeconds: cpu,
      cpuSecondsByProcess,
      wallSeconds,
      perCpuSecond: cpu > 0 ? deliveries / cpu : Number.NaN,
      perWallSecond: deliveries / wallSeconds,
      writeSyscalls: writesAfter.reduce(
        (sum, value, i) => sum + value - (writesBefore[i] ?? value),
        0,
      ),
      startedIdle,
    };
  };

  try {
    for (let i = 0; i < options.warmup; i++) {
      const seq = target.nextSeq();
      await Promise.all([publish(seq), log.complete(seq)]);
    }
    const runs: FanoutRun[] = [];
    for (let i = 0; i < options.repeat; i++) runs.push(await measure());
    const byRate = [...runs].sort((a, b) => a.perCpuSecond - b.perCpuSecond);
    const median = byRate[Math.floor((byRate.length - 1) / 2)];
    if (!median) throw new Error('no measured pass');
    return { ...median, subscribers: options.subscribers, events: options.events, runs };
  } finally {
    target.setPhase(null);
    log.close();
    await closeMany(subscribers);
    await waitIdle(target.pids);
  }
}
