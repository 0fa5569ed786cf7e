import { setTimeout as sleep } from 'node:timers/promises';
import { type BenchTarget, sinkOf } from '../load/bench-target.ts';
import { DeliveryLog } from '../load/deliveries.ts';
import { closeMany, openMany } from '../load/subscriber.ts';
import { rssBytes, waitIdle } from '../proc.ts';

/** Server memory held per idle, subscribed graphql-ws connection. */
export interface MemoryResult {
  connections: number;
  rssBeforeBytes: number;
  rssAfterBytes: number;
  bytesPerConnection: number;
}

/** Time from sending one publish until the first, median and last subscriber had the event. */
export interface LatencyRound {
  firstMs: number;
  medianMs: number;
  lastMs: number;
  /**
   * CPU the load generator spent on the round (ms). Close to lastMs means the clients, not the
   * server, set the pace of the last deliveries.
   */
  loadGeneratorCpuMs: number;
}

export interface LatencyResult extends LatencyRound {
  subscribers: number;
  /** Measured rounds (warm-up rounds excluded); the summary values are their medians. */
  rounds: LatencyRound[];
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN;
};

/**
 * RSS once it settles: idle servers still shrink for a few seconds (V8 collects the garbage
 * that subscribing left and gives pages back), so an early sample counts that garbage as
 * per-connection memory. Samples every second until two in a row differ by under 0.5 %, at
 * most 15 s.
 */
async function settledRss(rss: () => Promise<number>): Promise<number> {
  let last = await rss();
  for (let i = 0; i < 15; i++) {
    await sleep(1_000);
    const now = await rss();
    if (Math.abs(now - last) < last * 0.005) return now;
    last = now;
  }
  return last;
}

/**
 * Memory, then latency, on one set of `subscribers` graphql-ws clients. Memory: summed RSS of
 * the server process(es) before connecting and after all are subscribed, the servers went idle
 * and their RSS settled, delta / subscribers. Latency: `warmup + rounds` single publishes,
 * each waited for until every subscriber had it; the clock is the harness's performance.now().
 */
export async function measureLatencyAndMemory(
  target: BenchTarget,
  options: { subscribers: number; rounds: number; warmup: number },
): Promise<{ memory: MemoryResult; latency: LatencyResult }> {
  const rss = async () => (await Promise.all(target.pids.map(rssBytes))).reduce((a, b) => a + b, 0);
  await waitIdle(target.pids);
  const rssBeforeBytes = await rss();
  const log = new DeliveryLog(options.subscribers, true);
  target.setPhase(log);
  const subscribers = await openMany(options.subscribers, target.wsOpener(sinkOf(log)));
  try {
    await waitIdle(target.pids, 5_000);
    const rssAfterBytes = await settledRss(rss);
    const memory: MemoryResult = {
      connections: options.subscribers,
      rssBeforeBytes,
      rssAfterBytes,
      bytesPerConnection: (rssAfterBytes - rssBeforeBytes) / options.subscribers,
    };

    const rounds: LatencyRound[] = [];
    for (let round = 0; round < options.warmup + options.rounds; round++) {
      const seq = target.nextSeq();
      log.expect(seq);
      const cpuBefore = process.cpuUsage();
      const { sentAt, done } = target.publisher.publish(seq);
      await Promise.all([done, log.complete(seq)]);
      const cpu = process.cpuUsage(cpuBefore);
      const times = log.timesOf(seq).map((at) => at - sentAt);
      if (round >= options.warmup) {
        rounds.push({
          firstMs: Math.min(...times),
          medianMs: median(times),
          lastMs: Math.max(...times),
          loadGeneratorCpuMs: (cpu.user + cpu.system) / 1000,
        });
      }
      await waitIdle(target.pids, 1_000);
    }
    const latency: LatencyResult = {
      subscribers: options.subscribers,
      rounds,
      firstMs: median(rounds.map((r) => r.firstMs)),
      medianMs: median(rounds.map((r) => r.medianMs)),
      lastMs: median(rounds.map((r) => r.lastMs)),
      loadGeneratorCpuMs: median(rounds.map((r) => r.loadGeneratorCpuMs)),
    };
    return { memory, latency };
  } finally {
    target.setPhase(null);
    log.close();
    await closeMany(subscribers);
    await waitIdle(target.pids);
  }
}
