import { setTimeout as sleep } from 'node:timers/promises';
import type { BenchTarget } from '../load/bench-target.ts';
import { DeliveryLog } from '../load/deliveries.ts';
import {
  closeMany,
  type DeliverySink,
  type OpenSubscriber,
  openMany,
  type Subscriber,
} from '../load/subscriber.ts';
import { openWsSubscriber } from '../load/ws-subscriber.ts';
import { cpuSeconds, rssBytes, waitIdle } from '../proc.ts';
import { SUBSCRIBER_QUERY } from '../protocol.ts';
import type { MemoryResult } from './latency-memory.ts';

/**
 * The lowest summed RSS of `pids` over `windowMs`, sampled every second. An idle V8 process
 * keeps the garbage of its last busy moment until its memory reducer runs (here 15 to 35 s
 * after the work stopped, and then RSS drops by 30 MB or more), so a sample taken right away
 * counts garbage as memory in use; the window's minimum is what the process holds.
 */
export async function lowestRss(pids: readonly number[], windowMs: number): Promise<number> {
  const sum = async () => (await Promise.all(pids.map(rssBytes))).reduce((a, b) => a + b, 0);
  let lowest = await sum();
  const deadline = performance.now() + windowMs;
  while (performance.now() < deadline) {
    await sleep(1_000);
    lowest = Math.min(lowest, await sum());
  }
  return lowest;
}

/** RSS of each process of a freshly started server, as it went idle. */
export interface IdleResult {
  /** VmRSS right after the process said it listens, per process (bytes). */
  atReadyBytes: number[];
  /** Lowest VmRSS over the window, per process (bytes). */
  idleBytes: number[];
  windowSeconds: number;
}

/** Idle RSS of each process: its lowest over `windowMs` once it started and nothing connected. */
export async function measureIdle(pids: readonly number[], windowMs: number): Promise<IdleResult> {
  const atReadyBytes = await Promise.all(pids.map(rssBytes));
  const idleBytes = await Promise.all(pids.map((pid) => lowestRss([pid], windowMs)));
  return { atReadyBytes, idleBytes, windowSeconds: windowMs / 1000 };
}

/** A sink for subscribers that must stay quiet: counts deliveries, remembers the first loss. */
export function quietSink(): DeliverySink & { delivered: number; lostError: Error | null } {
  const sink = {
    delivered: 0,
    lostError: null as Error | null,
    deliver: () => {
      sink.delivered += 1;
    },
    lost: (error: Error) => {
      sink.lostError ??= error;
    },
  };
  return sink;
}

/**
 * Opens `connections` idle subscribers, measures the server's memory per connection (lowest RSS
 * over `settleMs` before and after, delta / connections), runs `whileOpen` with them connected,
 * and closes them.
 */
export async function measureScale<T>(
  target: BenchTarget,
  opener: (sink: DeliverySink) => OpenSubscriber,
  options: { connections: number; settleMs: number },
  whileOpen?: () => Promise<T>,
): Promise<{ memory: MemoryResult; during: T | null }> {
  await waitIdle(target.pids, 5_000);
  const rssBeforeBytes = await lowestRss(target.pids, options.settleMs);
  const sink = quietSink();
  // At most 20 000 open files per process: this one holds one socket per subscriber.
  const subscribers = await openMany(options.connections, opener(sink), { concurrency: 128 });
  try {
    await waitIdle(target.pids, 10_000);
    const rssAfterBytes = await lowestRss(target.pids, options.settleMs);
    const memory: MemoryResult = {
      connections: options.connections,
      rssBeforeBytes,
      rssAfterBytes,
      bytesPerConnection: (rssAfterBytes - rssBeforeBytes) / options.connections,
    };
    const during = whileOpen ? await whileOpen() : null;
    if (sink.lostError) throw new Error(`an idle subscriber was lost: ${sink.lostError.message}`);
    return { memory, during };
  } finally {
    await closeMany(subscribers, 30_000);
    await waitIdle(target.pids, 10_000);
  }
}

/** Server CPU of publishes addressed to one user. */
export interface RoutingResult {
  /** Other notify subscribers connected (none of them addressed). */
  otherSubscribers: number;
  publishes: number;
  cpuSeconds: number;
  cpuMsPerPublish: number;
  startedIdle: boolean;
}

/** The one subscriber publishes are addressed to (user `bench-target`), with its delivery log. */
export interface RoutingTarget {
  log: DeliveryLog;
  subscriber: Subscriber;
  close(): Promise<void>;
}

export const ROUTING_USER = 'bench-target';

export async function openRoutingTarget(target: BenchTarget): Promise<RoutingTarget> {
  const [first] = target.server.processes;
  if (!first) throw new Error('no server process');
  const log = new DeliveryLog(1, false);
  const subscriber = await openWsSubscriber({
    url: `${first.url.replace(/^http/, 'ws')}/graphql`,
    token: await target.server.token(ROUTING_USER),
    query: SUBSCRIBER_QUERY,
    sink: { deliver: log.deliver, lost: (error) => log.fail(error) },
  });
  return {
    log,
    subscriber,
    close: async () => {
      log.close();
      await subscriber.close();
    },
  };
}

/**
 * `publishes` publishes addressed to the routing target's user (`toUsers`), at most `window` in
 * flight, each waited for until it reached that subscriber; server CPU from /proc around them.
 */
export async function measureRouting(
  target: BenchTarget,
  routing: RoutingTarget,
  options: { publishes: number; window: number; warmup: number; otherSubscribers: number },
): Promise<RoutingResult> {
  const to = { toUsers: [ROUTING_USER] };
  const publish = (seq: number) => {
    routing.log.expect(seq);
    const { done } = target.publisher.publish(seq, to);
    return Promise.all([done, routing.log.complete(seq)]);
  };
  for (let i = 0; i < options.warmup; i++) await publish(target.nextSeq());
  const startedIdle = await waitIdle(target.pids);
  const before = await cpuSeconds(target.pids[0] as number);
  const inFlight = new Set<Promise<unknown>>();
  for (let i = 0; i < options.publishes; i++) {
    if (inFlight.size >= options.window) await Promise.race(inFlight);
    const sent: Promise<unknown> = publish(target.nextSeq()).finally(() => inFlight.delete(sent));
    inFlight.add(sent);
  }
  await Promise.all(inFlight);
  const cpu = (await cpuSeconds(target.pids[0] as number)) - before;
  return {
    otherSubscribers: options.otherSubscribers,
    publishes: options.publishes,
    cpuSeconds: cpu,
    cpuMsPerPublish: (cpu * 1000) / options.publishes,
    startedIdle,
  };
}
