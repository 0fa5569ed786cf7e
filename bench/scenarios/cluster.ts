/**
 * The cluster phase (issue 15): Switchboard on a 3-master Redis Cluster with replicas. Fan-out of
 * one instance against three with the same subscribers; then `--cluster-n` graphql-ws subscribers
 * (100,000 by default) over six instances, held by several load processes, against one instance
 * holding a sixth of them; and how many publishes per second one Redis shard carries.
 */
import { execFile } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { type RedisCluster, startRedisCluster } from '../../test/support/redis-cluster.ts';
import { type BenchTarget, prepareTarget } from '../load/bench-target.ts';
import { IncompleteDelivery, type LoadPool, openLoadPool } from '../load/load-pool.ts';
import { withTimeout } from '../load/subscriber.ts';
import { cpuSeconds, rssBytes, totalCpuSeconds, waitIdle, writeSyscalls } from '../proc.ts';
import { benchMessage } from '../protocol.ts';
import { type ServerUnderTest, startSwitchboard } from '../servers/index.ts';
import { type FanoutResult, measureFanout } from './fanout.ts';
import { lowestRss } from './scale.ts';

const run = promisify(execFile);

/** Instances of the scale run; the reference run has one instance holding a sixth. */
export const SCALE_INSTANCES = 6;
/** Subscribers per load process: under 18,000 sockets, with the 20,000 open files allowed. */
const MAX_PER_LOAD_PROCESS = 17_000;
/**
 * Source addresses of the scale run's subscribers (127.0.0.10 to 127.0.0.29): one address has
 * about 28,000 ephemeral ports, and these are not the eight of the other phases, whose closed
 * sockets may still sit in TIME_WAIT.
 */
const SCALE_SOURCE_ADDRESSES = Array.from({ length: 20 }, (_, i) => `127.0.0.${10 + i}`);
const USERS = 300;
const LATENCY_WARMUP = 2;
const THROUGHPUT_WARMUP = 2;
/**
 * The equal-rate runs publish at this fraction of what one instance delivers per CPU-second
 * without coalescing (so one instance is busy about half the time), with at most
 * EQUAL_RATE_WINDOW events in flight.
 */
const EQUAL_RATE_LOAD = 0.5;
export const EQUAL_RATE_WINDOW = 16;
/** Publishes of the shard measurement, and the subscriber connections (one per instance). */
const SHARD_PUBLISHES = 300_000;
const SHARD_CLIENTS = 8;
const SHARD_PIPELINE = 32;

export interface ClusterOptions {
  /** Subscribers of the one-against-three fan-out runs (--n), events (--m), window, repeat. */
  n: number;
  m: number;
  window: number;
  repeat: number;
  payload: number;
  /** Subscribers of the scale run over six instances (--cluster-n). */
  scaleN: number;
  /** Measured events of the scale throughput runs (--cluster-events). */
  scaleEvents: number;
  /** Measured single publishes of the scale latency runs (--rounds). */
  rounds: number;
  /** Seconds over which RSS is sampled, the lowest kept (--idle-window). */
  idleWindow: number;
  logLevel: string;
  progress: (message: string) => void;
  /** Servers the bench stops (and whose databases it drops) when interrupted. */
  running: Set<ServerUnderTest>;
}

/** One publish to every subscriber of a scale run. */
export interface ScaleRound {
  /** Subscribers that had it. */
  delivered: number;
  /** From writing the publish request to the first, median and last delivery (ms). */
  firstMs: number;
  medianMs: number;
  lastMs: number;
  /** CPU of the load processes during the round (ms): near lastMs, the clients set the pace. */
  loadCpuMs: number;
}

/** Fan-out of `events` publishes at scale: deliveries per CPU-second of every instance. */
export interface ScaleThroughput {
  events: number;
  deliveries: number;
  cpuSeconds: number;
  cpuSecondsByProcess: number[];
  /** Write system calls of the instances (fewer than deliveries when events were coalesced). */
  writeSyscalls: number;
  loadCpuSeconds: number;
  wallSeconds: number;
  perCpuSecond: number;
  perWallSecond: number;
  startedIdle: boolean;
}

/** Many subscribers over some instances on the cluster, as one run measured them. */
export interface ScaleRun {
  instances: number;
  subscribers: number;
  /** Subscribers per load process. */
  loadProcesses: number[];
  sourceAddresses: number;
  connectSeconds: number;
  /** Summed lowest RSS over the window, before connecting and once connected and idle. */
  rssBeforeBytes: number;
  rssAfterBytes: number;
  /** RSS of each instance at the end of the second window. */
  rssByInstanceBytes: number[];
  /** (rssAfter - rssBefore) / subscribers. */
  bytesPerConnection: number;
  /** Measured rounds (warm-up excluded) and their medians. */
  rounds: ScaleRound[];
  firstMs: number | null;
  medianMs: number | null;
  lastMs: number | null;
  loadCpuMs: number | null;
  /** The fewest subscribers any publish reached (warm-up included). */
  deliveredMin: number;
  throughput: ScaleThroughput | null;
}

/** SPUBLISH through one master with subscribers attached, driven by redis-benchmark. */
export interface ShardResult {
  port: number;
  publishes: number;
  /** Raw SSUBSCRIBE connections on the channel (one per instance of a deployment). */
  subscribers: number;
  payloadBytes: number;
  clients: number;
  pipeline: number;
  /** Publishes per second, as redis-benchmark counted them. */
  perWallSecond: number;
  /** utime + stime of that master's redis-server during the run. */
  redisCpuSeconds: number;
  perRedisCpuSecond: number;
}

export interface ClusterResult {
  masters: number;
  replicasPerMaster: number;
  /** Fan-out of --n subscribers on one instance and on three (median pass of --repeat). */
  one: FanoutResult | null;
  three: FanoutResult | null;
  /**
   * The same with one event in flight: no server can then coalesce events into one write per
   * socket, so the comparison is of the work per delivery alone.
   */
  oneSerial: FanoutResult | null;
  threeSerial: FanoutResult | null;
  /**
   * The same at one fixed rate for both (`ratePerSecond`, an open loop): the same traffic, so
   * the CPU each needs for it is compared, with whatever coalescing that traffic allows.
   */
  oneRate: FanoutResult | null;
  threeRate: FanoutResult | null;
  /** Events per second of the equal-rate runs; null when one instance was not measured. */
  ratePerSecond: number | null;
  /** One instance holding a sixth of --cluster-n, and six holding all of them. */
  scaleOne: ScaleRun | null;
  scaleAll: ScaleRun | null;
  shard: ShardResult | null;
  /** Parts that failed, with the reason (the rest still ran). */
  errors: string[];
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN;
};

/** Runs every part of the cluster phase on one cluster it starts and stops. */
export async function measureCluster(options: ClusterOptions): Promise<ClusterResult> {
  const { progress } = options;
  const result: ClusterResult = {
    masters: 3,
    replicasPerMaster: 1,
    one: null,
    three: null,
    oneSerial: null,
    threeSerial: null,
    oneRate: null,
    threeRate: null,
    ratePerSecond: null,
    scaleOne: null,
    scaleAll: null,
    shard: null,
    errors: [],
  };
  progress('cluster: starting a Redis Cluster, 3 masters with a replica each');
  const cluster = await startRedisCluster({ masters: result.masters, replicasPerMaster: 1 });
  // An interrupted bench exits without running the finally below: no node may outlive it.
  const killNodes = () => {
    for (const node of cluster.nodes) node.process?.kill('SIGKILL');
  };
  process.once('exit', killNodes);
  const part = async <T>(label: string, body: () => Promise<T>): Promise<T | null> => {
    const started = performance.now();
    progress(`cluster: ${label}`);
    try {
      const value = await body();
      progress(`cluster: ${label} done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return value;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      progress(`cluster: ${label} FAILED: ${message}`);
      result.errors.push(`${label}: ${message}`);
      return null;
    }
  };
  try {
    const fanout = {
      subscribers: options.n,
      events: options.m,
      window: options.window,
      repeat: options.repeat,
      warmup: 3,
    };
    for (const [instances, key, serialKey, rateKey] of [
      [1, 'one', 'oneSerial', 'oneRate'],
      [3, 'three', 'threeSerial', 'threeRate'],
    ] as const) {
      await part(`fan-out ${options.n} x ${options.m}, ${instances} instance(s)`, () =>
        withSwitchboard(cluster, instances, options, async (target) => {
          result[key] = await measureFanout(target, target.wsOpener, fanout);
          if (options.window > 1) {
            result[serialKey] = await measureFanout(target, target.wsOpener, {
              ...fanout,
              window: 1,
            });
          }
          // The rate is set once, from one instance without coalescing, and kept for three.
          const oneSerial = result.oneSerial ?? result.one;
          if (oneSerial && result.ratePerSecond === null) {
            result.ratePerSecond =
              (EQUAL_RATE_LOAD * oneSerial.perCpuSecond) / Math.max(1, options.n);
          }
          if (result.ratePerSecond !== null) {
            result[rateKey] = await measureFanout(target, target.wsOpener, {
              ...fanout,
              window: EQUAL_RATE_WINDOW,
              intervalMs: 1000 / result.ratePerSecond,
            });
          }
        }),
      );
    }
    const perInstance = Math.ceil(options.scaleN / SCALE_INSTANCES);
    for (const [instances, subscribers, key] of [
      [1, perInstance, 'scaleOne'],
      [SCALE_INSTANCES, options.scaleN, 'scaleAll'],
    ] as const) {
      // A failed run keeps what it measured (how many subscribers had the event).
      let measured: ScaleRun | null = null;
      await part(`scale: ${subscribers} subscribers on ${instances} instance(s)`, () =>
        withSwitchboard(cluster, instances, options, (target) =>
          measureScaleRun(target, subscribers, options, (run) => {
            measured = run;
          }),
        ),
      );
      result[key] = measured;
    }
    result.shard = await part(`one shard: ${SHARD_PUBLISHES} SPUBLISH (redis-benchmark)`, () =>
      measureShard(cluster, options.payload),
    );
  } finally {
    process.off('exit', killNodes);
    await cluster.stop();
  }
  return result;
}

/** Starts `instances` on the cluster with the publisher ready, runs `body`, stops them. */
async function withSwitchboard<T>(
  cluster: RedisCluster,
  instances: number,
  options: ClusterOptions,
  body: (target: BenchTarget) => Promise<T>,
): Promise<T> {
  const server: ServerUnderTest = await startSwitchboard(`switchboard-cluster-${instances}`, {
    instances,
    logLevel: options.logLevel,
    redisCluster: cluster.seeds,
    // Keep-alive sweeps over 100,000 idle sockets would be billed to the measured publishes.
    env: { WS_KEEPALIVE_MS: '600000' },
  });
  options.running.add(server);
  let target: BenchTarget | null = null;
  try {
    // Six instances fanning out 100,000 deliveries share one core: the instance that answers
    // the publish may be busy for seconds with the events before it.
    target = await prepareTarget(server, options.payload, { publishTimeoutMs: 60_000 });
    return await body(target);
  } finally {
    await target?.close().catch(() => {});
    await withTimeout(server.stop(), 30_000, `stopping ${server.name}`).catch(() => {});
    options.running.delete(server);
  }
}

/**
 * `subscribers` graphql-ws subscribers over every instance of `target`, held by load processes:
 * RSS before and after (lowest over the window), single publishes to all of them timed from
 * the request to the last delivery, then `scaleEvents` publishes (window --window) for
 * deliveries per CPU-second of the instances.
 */
async function measureScaleRun(
  target: BenchTarget,
  subscribers: number,
  options: ClusterOptions,
  keep: (run: ScaleRun) => void,
): Promise<ScaleRun> {
  const { pids, server } = target;
  const { progress } = options;
  const windowMs = options.idleWindow * 1000;
  await waitIdle(pids, 5_000);
  const rssBeforeBytes = await lowestRss(pids, windowMs);
  const tokens = await Promise.all(
    Array.from({ length: USERS }, (_, i) => server.token(`bench-user-${i}`)),
  );
  const connectStarted = performance.now();
  const pool = await openLoadPool({
    subscribers,
    maxPerProcess: MAX_PER_LOAD_PROCESS,
    urls: server.processes.map((p) => `${p.url.replace(/^http/, 'ws')}/graphql`),
    tokens,
    sourceAddresses: SCALE_SOURCE_ADDRESSES,
    // The instances share one core: more handshakes in flight only fill their backlogs.
    concurrency: 48,
    stallMs: 30_000,
    openTimeoutMs: Math.max(120_000, subscribers * 5),
  });
  const connectSeconds = (performance.now() - connectStarted) / 1000;
  progress(`cluster: ${subscribers} subscribers live in ${connectSeconds.toFixed(1)} s`);
  try {
    await waitIdle(pids, 15_000);
    const rssAfterBytes = await lowestRss(pids, windowMs);
    const rssByInstanceBytes = await Promise.all(pids.map(rssBytes));
    const result: ScaleRun = {
      instances: pids.length,
      subscribers,
      loadProcesses: pool.perProcess,
      sourceAddresses: SCALE_SOURCE_ADDRESSES.length,
      connectSeconds,
      rssBeforeBytes,
      rssAfterBytes,
      rssByInstanceBytes,
      bytesPerConnection: (rssAfterBytes - rssBeforeBytes) / subscribers,
      rounds: [],
      firstMs: null,
      medianMs: null,
      lastMs: null,
      loadCpuMs: null,
      deliveredMin: subscribers,
      throughput: null,
    };
    keep(result);
    try {
      await latencyRounds(target, pool, options, result);
      result.throughput = await throughput(target, pool, options);
    } catch (error) {
      if (error instanceof IncompleteDelivery) {
        result.deliveredMin = Math.min(result.deliveredMin, error.delivered);
      }
      throw error;
    }
    return result;
  } finally {
    await pool.close();
    await waitIdle(pids, 15_000);
  }
}

async function latencyRounds(
  target: BenchTarget,
  pool: LoadPool,
  options: ClusterOptions,
  result: ScaleRun,
): Promise<void> {
  for (let round = 0; round < LATENCY_WARMUP + options.rounds; round++) {
    await waitIdle([...target.pids, ...pool.pids], 2_000);
    const seq = target.nextSeq();
    const { armed, done } = pool.expect(seq, true);
    await armed;
    const loadBefore = await totalCpuSeconds(pool.pids);
    const published = target.publisher.publish(seq);
    const sentAt = performance.timeOrigin + published.sentAt;
    const [delivery] = await Promise.all([done, published.done]);
    const loadCpuMs = ((await totalCpuSeconds(pool.pids)) - loadBefore) * 1000;
    result.deliveredMin = Math.min(result.deliveredMin, delivery.delivered);
    options.progress(
      `cluster: publish #${seq} reached ${delivery.delivered} subscribers, the last after ` +
        `${(delivery.lastAt - sentAt).toFixed(0)} ms`,
    );
    if (round < LATENCY_WARMUP) continue;
    const times = (delivery.times ?? []).map((at) => at - sentAt);
    result.rounds.push({
      delivered: delivery.delivered,
      firstMs: Math.min(...times),
      medianMs: median(times),
      lastMs: delivery.lastAt - sentAt,
      loadCpuMs,
    });
  }
  const { rounds } = result;
  result.firstMs = median(rounds.map((r) => r.firstMs));
  result.medianMs = median(rounds.map((r) => r.medianMs));
  result.lastMs = median(rounds.map((r) => r.lastMs));
  result.loadCpuMs = median(rounds.map((r) => r.loadCpuMs));
}

/** Like the fan-out phase: event k is published once event k - window reached everyone. */
async function throughput(
  target: BenchTarget,
  pool: LoadPool,
  options: ClusterOptions,
): Promise<ScaleThroughput> {
  const publish = async (seq: number) => {
    const { armed, done } = pool.expect(seq, false);
    await armed;
    const published = target.publisher.publish(seq);
    return { done, published: published.done };
  };
  for (let i = 0; i < THROUGHPUT_WARMUP; i++) {
    const sent = await publish(target.nextSeq());
    await Promise.all([sent.done, sent.published]);
  }
  const startedIdle = await waitIdle(target.pids);
  const before = await Promise.all(target.pids.map(cpuSeconds));
  const writesBefore = await Promise.all(target.pids.map(writeSyscalls));
  const loadBefore = await totalCpuSeconds(pool.pids);
  const started = performance.now();
  const inFlight: Promise<unknown>[] = [];
  for (let i = 0; i < options.scaleEvents; i++) {
    const back = inFlight[i - options.window];
    if (back) await back;
    const sent = await publish(target.nextSeq());
    const both = Promise.all([sent.done, sent.published]);
    // Awaited below or in a later turn; a failure meanwhile must not count as unhandled.
    both.catch(() => {});
    inFlight.push(both);
  }
  await Promise.all(inFlight);
  const wallSeconds = (performance.now() - started) / 1000;
  const after = await Promise.all(target.pids.map(cpuSeconds));
  const writesAfter = await Promise.all(target.pids.map(writeSyscalls));
  const loadCpuSeconds = (await totalCpuSeconds(pool.pids)) - loadBefore;
  const cpuSecondsByProcess = after.map((value, i) => value - (before[i] ?? value));
  const cpu = cpuSecondsByProcess.reduce((a, b) => a + b, 0);
  const deliveries = options.scaleEvents * pool.subscribers;
  return {
    events: options.scaleEvents,
    deliveries,
    cpuSeconds: cpu,
    cpuSecondsByProcess,
    writeSyscalls: writesAfter.reduce(
      (sum, value, i) => sum + value - (writesBefore[i] ?? value),
      0,
    ),
    loadCpuSeconds,
    wallSeconds,
    perCpuSecond: cpu > 0 ? deliveries / cpu : Number.NaN,
    perWallSecond: deliveries / wallSeconds,
    startedIdle,
  };
}

/** A channel whose slot `port` serves (SPUBLISH elsewhere answers MOVED). */
async function channelOn(cluster: RedisCluster, port: number): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const channel = `bench-shard:${i}`;
    if (/^\d+\s*$/.test(await cluster.cli(port, 'spublish', channel, 'probe'))) return channel;
  }
  throw new Error(`no channel of node ${port} among 200 names`);
}

const resp = (...args: string[]) =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/**
 * A bare SSUBSCRIBE connection that only counts bytes: a subscriber that parses nothing keeps up
 * with Redis, so no output buffer limit cuts it off. Resolves once the subscription is confirmed;
 * `bytes()` counts what arrived after the confirmation.
 */
function rawSubscriber(
  port: number,
  channel: string,
): Promise<{ bytes(): number; socket: Socket }> {
  // The reply to SSUBSCRIBE of one channel: [ssubscribe, <channel>, 1].
  const confirmation = Buffer.byteLength(
    `*3\r\n$10\r\nssubscribe\r\n$${Buffer.byteLength(channel)}\r\n${channel}\r\n:1\r\n`,
  );
  return new Promise((resolve, reject) => {
    let received = 0;
    const socket = connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('SSUBSCRIBE was not confirmed within 5 s'));
    }, 5_000);
    socket.once('error', reject);
    socket.on('data', (chunk: Buffer) => {
      const confirmed = received >= confirmation;
      received += chunk.length;
      if (!confirmed && received >= confirmation) {
        clearTimeout(timer);
        resolve({ bytes: () => received - confirmation, socket });
      }
    });
    socket.write(resp('SSUBSCRIBE', channel));
  });
}

/**
 * Publishes per second one shard carries: redis-benchmark (on the server core, idle by now)
 * sends SPUBLISH of a notify envelope as Switchboard publishes it to a channel of the first
 * master, with SCALE_INSTANCES raw subscribers on it, as six instances would be. The master's
 * CPU is read from /proc around the run; every subscriber must receive every message.
 */
async function measureShard(cluster: RedisCluster, payloadBytes: number): Promise<ShardResult> {
  const [port] = await cluster.masters();
  const node = cluster.nodes.find((each) => each.port === port);
  const pid = node?.process?.pid;
  if (port === undefined || pid === undefined) throw new Error('no live master');
  const channel = await channelOn(cluster, port);
  const payload = JSON.stringify({
    senderUserId: 'bench-publisher',
    senderChannelId: '00000000-0000-4000-8000-000000000000',
    name: 'bench',
    message: benchMessage(1, payloadBytes),
    toAll: true,
    toMeeting: null,
    toUsers: [],
    toChannels: [],
  });
  const frame = Buffer.byteLength(
    `*3\r\n$8\r\nsmessage\r\n$${Buffer.byteLength(channel)}\r\n${channel}\r\n$${Buffer.byteLength(payload)}\r\n${payload}\r\n`,
  );
  const subscribers = await Promise.all(
    Array.from({ length: SCALE_INSTANCES }, () => rawSubscriber(port, channel)),
  );
  try {
    const before = await cpuSeconds(pid);
    const { stdout } = await run(
      'taskset',
      [
        '-c',
        '0',
        'redis-benchmark',
        ...['-h', '127.0.0.1', '-p', String(port)],
        ...['-n', String(SHARD_PUBLISHES), '-c', String(SHARD_CLIENTS)],
        ...['-P', String(SHARD_PIPELINE), '--csv'],
        ...['SPUBLISH', channel, payload],
      ],
      { timeout: 120_000 },
    );
    const expected = SHARD_PUBLISHES * frame;
    const deadline = performance.now() + 30_000;
    while (subscribers.some((s) => s.bytes() < expected) && performance.now() < deadline) {
      await sleep(50);
    }
    const redisCpuSeconds = (await cpuSeconds(pid)) - before;
    const short = subscribers.filter((s) => s.bytes() < expected).length;
    if (short > 0) {
      throw new Error(`${short} of ${subscribers.length} subscribers missed messages`);
    }
    // The test name is the quoted command, which holds quotes itself: take the numbers at the end.
    const rps = /"([\d.]+)"(?:,"[\d.]+"){6}\s*$/.exec(stdout.trim())?.[1];
    if (!rps) throw new Error(`unexpected redis-benchmark output: ${stdout.slice(0, 300)}`);
    return {
      port,
      publishes: SHARD_PUBLISHES,
      subscribers: subscribers.length,
      payloadBytes: Buffer.byteLength(payload),
      clients: SHARD_CLIENTS,
      pipeline: SHARD_PIPELINE,
      perWallSecond: Number(rps),
      redisCpuSeconds,
      perRedisCpuSecond: redisCpuSeconds > 0 ? SHARD_PUBLISHES / redisCpuSeconds : Number.NaN,
    };
  } finally {
    for (const { socket } of subscribers) socket.destroy();
  }
}
