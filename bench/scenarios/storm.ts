/**
 * The storm phase (issue 17): thousands of users write at once, as when a speaker finishes and a
 * meeting applauds. Measures server CPU per call of each write path against "the floor" (a bare
 * node http server answering each POST with one Redis ZADD), in the same run, and how long after
 * the last send an observer's applause level shows every sender.
 */
import { randomInt } from 'node:crypto';
import { Agent, request } from 'node:http';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { withTimeout } from '../load/subscriber.ts';
import { totalCpuSeconds, waitIdle } from '../proc.ts';
import { WS_PROTOCOL } from '../protocol.ts';
import {
  BENCH_REDIS_URL,
  deleteRedisKeys,
  type ServerUnderTest,
  startReference,
  startSwitchboard,
} from '../servers/index.ts';

/**
 * The write paths of a storm. `floor-ws` is the floor over open WebSockets (one ZADD per
 * message, answered on the socket): what the transport alone costs, without GraphQL.
 */
export const STORM_KINDS = ['floor', 'floor-ws', 'applause-ws', 'ping-ws', 'applause-icc'] as const;
const FLOORS: readonly StormKind[] = ['floor', 'floor-ws'];
export type StormKind = (typeof STORM_KINDS)[number];

/** One storm: `users` calls at once, one per user. */
export interface StormRun {
  users: number;
  /** utime + stime of the server from right before the first send until it is idle again. */
  cpuSeconds: number;
  cpuMsPerCall: number;
  /** From the first send until the last answer (harness clock). */
  wallMs: number;
  /** Calls answered with an error. */
  errors: number;
  /** From the last send until an observer's level showed every sender; null without observer. */
  levelMs: number | null;
  startedIdle: boolean;
}

/** The median storm (by CPU per call) of one kind and size, with every run. */
export interface StormRow {
  kind: StormKind;
  users: number;
  cpuMsPerCall: number;
  /** cpuMsPerCall / the floor's at the same size (same run). */
  xFloor: number | null;
  /** Median over the runs; null without observer. */
  levelMs: number | null;
  wallMs: number;
  errors: number;
  runs: StormRun[];
}

/** Server CPU while meetings with applause subscribers sit idle (issue 13, item 3). */
export interface IdleMeetings {
  meetings: number;
  seconds: number;
  /** CPU seconds per second: 0.25 is a quarter of a core. */
  coreFraction: number;
}

export interface StormResult {
  /** Switchboard instances on one Redis (sockets and ICC calls alternate between them). */
  instances: number;
  rows: StormRow[];
  idle: IdleMeetings | null;
  /** Sockets per source address and load processes used. */
  sockets: number;
  sourceAddresses: string[];
}

export interface StormOptions {
  sizes: number[];
  repeat: number;
  /** Switchboard instances sharing one Redis; CPU is summed over them. */
  instances: number;
  /** Meetings with one applause subscription each, measured idle afterwards (0: skip). */
  idleMeetings: number;
  logLevel: string;
  progress: (message: string) => void;
}

const APPLAUSE_MUTATION = 'mutation($m: ID!) { sendApplause(meetingId: $m) }';
const PING_MUTATION = 'mutation { ping { time } }';
const APPLAUSE_SUBSCRIPTION = 'subscription($m: ID!) { applause(meetingId: $m) { level } }';
/** Sockets are spread over these source addresses (about 28,000 ports each). */
const SOURCE_ADDRESSES = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];
const WAIT_MS = 30_000;
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN;
};

/** A graphql-ws connection of one user, running one operation at a time. */
interface StormSocket {
  socket: WebSocket;
  /** Sends `query`; resolves true when it completed without errors. */
  run(id: string, query: string, variables?: Record<string, unknown>): Promise<boolean>;
}

function openSocket(url: string, token: string, localAddress: string): Promise<StormSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, WS_PROTOCOL, {
      perMessageDeflate: false,
      handshakeTimeout: 15_000,
      localAddress,
    });
    const running = new Map<string, { ok: boolean; done: (ok: boolean) => void }>();
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new Error('graphql-ws handshake timed out'));
    }, 15_000);
    socket.on('open', () =>
      socket.send(
        JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }),
      ),
    );
    socket.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString('utf8')) as {
        type: string;
        id?: string;
        payload?: { errors?: unknown };
      };
      if (frame.type === 'connection_ack') {
        clearTimeout(timer);
        resolve({
          socket,
          run: (id, query, variables) =>
            new Promise((done) => {
              running.set(id, { ok: true, done });
              socket.send(JSON.stringify({ id, type: 'subscribe', payload: { query, variables } }));
            }),
        });
        return;
      }
      if (frame.type === 'ping') return socket.send('{"type":"pong"}');
      const op = frame.id === undefined ? undefined : running.get(frame.id);
      if (!op || frame.id === undefined) return;
      if (frame.type === 'next' && frame.payload?.errors) op.ok = false;
      if (frame.type === 'error') op.ok = false;
      if (frame.type === 'complete' || frame.type === 'error') {
        running.delete(frame.id);
        op.done(op.ok);
      }
    });
    const fail = () => {
      clearTimeout(timer);
      for (const op of running.values()) op.done(false);
      running.clear();
      reject(new Error('graphql-ws socket closed'));
    };
    socket.on('error', fail);
    socket.on('close', fail);
  });
}

/** A WebSocket to the floor server: `run` writes one applause and resolves when it is answered. */
interface FloorSocket {
  socket: WebSocket;
  run(id: string, meetingId: string, user: number): Promise<boolean>;
}

function openFloorSocket(url: string, localAddress: string): Promise<FloorSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { perMessageDeflate: false, localAddress });
    let pending: ((ok: boolean) => void) | null = null;
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new Error('floor WebSocket handshake timed out'));
    }, 15_000);
    socket.on('open', () => {
      clearTimeout(timer);
      resolve({
        socket,
        run: (id, meetingId, user) =>
          new Promise((done) => {
            pending = done;
            socket.send(JSON.stringify({ id, meeting: meetingId, user: String(user) }));
          }),
      });
    });
    socket.on('message', () => {
      pending?.(true);
      pending = null;
    });
    const fail = () => {
      clearTimeout(timer);
      pending?.(false);
      pending = null;
      reject(new Error('floor WebSocket closed'));
    };
    socket.on('error', fail);
    socket.on('close', fail);
  });
}

/** A live `applause(meetingId)` subscription: `reached(n)` resolves when the level first hit n. */
function observeApplause(observer: StormSocket, meetingId: string, id: string) {
  const seen: { level: number; at: number }[] = [];
  let waiting: { level: number; resolve: (at: number) => void } | null = null;
  let first: (() => void) | null = null;
  const onMessage = (data: Buffer) => {
    const frame = JSON.parse(data.toString('utf8')) as {
      id?: string;
      type: string;
      payload?: { data?: { applause?: { level: number } } };
    };
    if (frame.id !== id || frame.type !== 'next') return;
    first?.();
    first = null;
    const event = { level: frame.payload?.data?.applause?.level ?? -1, at: performance.now() };
    seen.push(event);
    if (waiting && event.level >= waiting.level) waiting.resolve(event.at);
  };
  observer.socket.on('message', onMessage);
  const started = new Promise<void>((resolve) => {
    first = resolve;
  });
  observer.socket.send(
    JSON.stringify({
      id,
      type: 'subscribe',
      payload: { query: APPLAUSE_SUBSCRIPTION, variables: { m: meetingId } },
    }),
  );
  return {
    started: withTimeout(started, WAIT_MS, 'observer subscription'),
    /** The highest level seen: more than the senders would mean someone was counted twice. */
    max: () => Math.max(-1, ...seen.map((event) => event.level)),
    reached(level: number): Promise<number> {
      const already = seen.find((event) => event.level >= level);
      if (already) return Promise.resolve(already.at);
      return new Promise((resolve) => {
        waiting = { level, resolve };
      });
    },
    stop() {
      observer.socket.off('message', onMessage);
      observer.socket.send(JSON.stringify({ id, type: 'complete' }));
    },
  };
}

/** Makes `agent` open all its sockets to the origin of `url` (one GET on each) and keep them. */
async function openConnections(agent: Agent, url: string): Promise<void> {
  const sockets = agent.maxSockets;
  const gets = Array.from(
    { length: sockets },
    () =>
      new Promise<void>((resolve) => {
        const req = request(url, { agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        });
        req.on('error', () => resolve());
        req.end();
      }),
  );
  await withTimeout(Promise.all(gets), WAIT_MS, 'opening the agent connections');
}

/** POSTs to each URL (one per user) through a keep-alive agent; resolves the error count. */
async function httpStorm(
  agent: Agent,
  urls: string[],
  headers: (i: number) => Record<string, string>,
): Promise<{ errors: number; lastSend: number }> {
  let errors = 0;
  // The agent queues what its sockets cannot take yet: a call is sent when its request is written.
  let lastSend = performance.now();
  const calls = urls.map(
    (url, i) =>
      new Promise<void>((resolve) => {
        const req = request(url, { method: 'POST', agent, headers: headers(i) });
        req.on('finish', () => {
          lastSend = Math.max(lastSend, performance.now());
        });
        req.on('response', (res) => {
          if (res.statusCode !== 200) errors += 1;
          res.resume();
          res.on('end', resolve);
        });
        req.on('error', () => {
          errors += 1;
          resolve();
        });
        req.end();
      }),
  );
  await withTimeout(Promise.all(calls), WAIT_MS * 2, 'http storm');
  return { errors, lastSend };
}

/**
 * Starts the floor and Switchboard (`instances` on one Redis and one Postgres), all pinned to the
 * server core, opens one graphql-ws socket per user (the largest size) and runs every storm kind
 * `repeat` times per size. Returns the medians and their ratios to the floor.
 */
export async function measureStorm(options: StormOptions): Promise<StormResult> {
  const { progress } = options;
  const maxUsers = Math.max(...options.sizes);
  const floorPrefix = `switchboard-bench-floor:${randomInt(1e9)}:`;
  const servers: ServerUnderTest[] = [];
  const sockets: StormSocket[] = [];
  const floorSockets: FloorSocket[] = [];
  const agents: Agent[] = [];
  try {
    const floor = await startReference('floor', {
      REDIS_URL: BENCH_REDIS_URL,
      FLOOR_PREFIX: floorPrefix,
    });
    servers.push(floor);
    const switchboard = await startSwitchboard('switchboard-storm', {
      instances: options.instances,
      logLevel: options.logLevel,
      redis: true,
      env: {
        // Keep-alive sweeps of thousands of idle sockets are not part of a call's cost.
        WS_KEEPALIVE_MS: '600000',
        MAX_CONNECTIONS: String(maxUsers + 100),
      },
    });
    servers.push(switchboard);
    const sbProcesses = switchboard.processes;
    const sbProcess = sbProcesses[0];
    const floorProcess = floor.processes[0];
    if (!sbProcess || !floorProcess) throw new Error('a storm server has no process');
    const sbPids = sbProcesses.map((p) => p.pid);
    /** The instance user `i` talks to: they alternate. */
    const instanceUrl = (i: number) => (sbProcesses[i % sbProcesses.length] ?? sbProcess).url;
    const wsUrl = (i: number) => `${instanceUrl(i).replace(/^http/, 'ws')}/graphql`;

    progress(`storm: opening ${maxUsers} graphql-ws sockets`);
    const users = Array.from({ length: maxUsers }, (_, i) => String(1_000_000 + i));
    const tokens = await Promise.all(users.map((user) => switchboard.token(user)));
    const address = (i: number) => SOURCE_ADDRESSES[i % SOURCE_ADDRESSES.length] ?? '127.0.0.1';
    for (let start = 0; start < maxUsers; start += 64) {
      const batch = tokens.slice(start, start + 64);
      sockets.push(
        ...(await Promise.all(
          batch.map((token, j) => openSocket(wsUrl(start + j), token, address(start + j))),
        )),
      );
    }
    progress(`storm: opening ${maxUsers} WebSockets to the floor`);
    const floorWsUrl = floorProcess.url.replace(/^http/, 'ws');
    for (let start = 0; start < maxUsers; start += 64) {
      const count = Math.min(64, maxUsers - start);
      floorSockets.push(
        ...(await Promise.all(
          Array.from({ length: count }, (_, j) => openFloorSocket(floorWsUrl, address(start + j))),
        )),
      );
    }
    const observer = await openSocket(
      wsUrl(0),
      await switchboard.token('storm-observer'),
      '127.0.0.1',
    );
    const agent = () => {
      const created = new Agent({ keepAlive: true, maxSockets: 128 });
      agents.push(created);
      return created;
    };
    const floorAgent = agent();
    const iccAgent = agent();
    let operation = 0;
    const lastPing = { at: 0 };

    const runOnce = async (kind: StormKind, size: number): Promise<StormRun> => {
      const meetingId = String(randomInt(1_000_000, 2_000_000_000));
      const pids = FLOORS.includes(kind) ? [floorProcess.pid] : sbPids;
      const observed =
        kind === 'applause-ws' || kind === 'applause-icc'
          ? observeApplause(observer, meetingId, `observe-${++operation}`)
          : null;
      await observed?.started;
      if (kind === 'ping-ws') {
        // PING_MIN_INTERVAL_MS (1 s): a user's next ping must count.
        const wait = lastPing.at + 1_100 - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
      // The agent's connections are open before the storm, as a real ICC client keeps them:
      // the servers close idle ones after 5 s, and reopening 128 would be billed to the calls.
      if (kind === 'floor') await openConnections(floorAgent, `${floorProcess.url}/`);
      if (kind === 'applause-icc') {
        for (const server of sbProcesses) await openConnections(iccAgent, `${server.url}/healthz`);
      }
      const startedIdle = await waitIdle(pids);
      const before = await totalCpuSeconds(pids);
      const started = performance.now();
      let errors = 0;
      let lastSend = started;
      if (kind === 'floor') {
        const urls = users
          .slice(0, size)
          .map((user) => `${floorProcess.url}/?meeting=${meetingId}&user=${user}`);
        ({ errors, lastSend } = await httpStorm(floorAgent, urls, () => ({})));
      } else if (kind === 'floor-ws') {
        const id = `floor-${++operation}`;
        const calls = floorSockets.slice(0, size).map((socket, i) => socket.run(id, meetingId, i));
        lastSend = performance.now();
        const results = await withTimeout(Promise.all(calls), WAIT_MS * 2, `${kind} storm`);
        errors = results.filter((ok) => !ok).length;
      } else if (kind === 'applause-icc') {
        const urls = users
          .slice(0, size)
          .map((_, i) => `${instanceUrl(i)}/system/icc/applause/send?meeting_id=${meetingId}`);
        ({ errors, lastSend } = await httpStorm(iccAgent, urls, (i) => ({
          authorization: `Bearer ${tokens[i]}`,
        })));
      } else {
        const id = `${kind}-${++operation}`;
        const calls = sockets
          .slice(0, size)
          .map((s) =>
            kind === 'ping-ws'
              ? s.run(id, PING_MUTATION)
              : s.run(id, APPLAUSE_MUTATION, { m: meetingId }),
          );
        lastSend = performance.now();
        const results = await withTimeout(Promise.all(calls), WAIT_MS * 2, `${kind} storm`);
        errors = results.filter((ok) => !ok).length;
        if (kind === 'ping-ws') lastPing.at = performance.now();
      }
      const wallMs = performance.now() - started;
      let levelMs: number | null = null;
      if (observed) {
        const at = await withTimeout(observed.reached(size - errors), WAIT_MS, 'observer level');
        levelMs = Math.max(0, at - lastSend);
        observed.stop();
        if (observed.max() > size - errors) {
          throw new Error(`${kind}: level ${observed.max()} for ${size - errors} senders`);
        }
      }
      // Pings reach Postgres in the next flush (PRESENCE_FLUSH_MS, 1 s): that is part of their cost.
      if (kind === 'ping-ws') await new Promise((resolve) => setTimeout(resolve, 1_200));
      await waitIdle(pids);
      const cpu = (await totalCpuSeconds(pids)) - before;
      if (FLOORS.includes(kind)) {
        const cleanup = new Redis(BENCH_REDIS_URL);
        await cleanup.del(`${floorPrefix}${meetingId}`).finally(() => cleanup.disconnect());
      }
      return {
        users: size,
        cpuSeconds: cpu,
        cpuMsPerCall: (cpu * 1000) / size,
        wallMs,
        errors,
        levelMs,
        startedIdle,
      };
    };

    /** `count` meetings, one applause subscription each (100 per socket), then CPU while idle. */
    const measureIdle = async (count: number): Promise<IdleMeetings> => {
      progress(`storm: ${count} idle meetings with an applause subscriber each`);
      let started = 0;
      const live = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error('idle meetings: not all started')),
          WAIT_MS,
        );
        const onMessage = (data: Buffer) => {
          if (!data.toString('utf8', 0, 30).includes('"idle-')) return;
          started += 1;
          if (started === count) {
            clearTimeout(timer);
            resolve();
          }
        };
        for (let k = 0; k < count; k++) {
          const socket = sockets[Math.floor(k / 100)]?.socket;
          if (!socket) throw new Error('idle meetings: not enough sockets');
          if (k % 100 === 0) socket.on('message', onMessage);
          socket.send(
            JSON.stringify({
              id: `idle-${k}`,
              type: 'subscribe',
              payload: {
                query: APPLAUSE_SUBSCRIPTION,
                variables: { m: String(3_000_000_000 + k) },
              },
            }),
          );
        }
      });
      await live;
      // Let the joins settle, then measure whole seconds of the steady state.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const seconds = 10;
      const before = await totalCpuSeconds(sbPids);
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
      const cpu = (await totalCpuSeconds(sbPids)) - before;
      return { meetings: count, seconds, coreFraction: cpu / seconds };
    };

    // Warm-up, not measured: every kind at every size, twice. The first storms of a kind cost
    // two to three times the later ones (code is optimized, the heap grows), and a kind run
    // after the others can meet code they made polymorphic: a standalone probe measured the ICC
    // path at 2,000 users at up to 1.7 times its steady cost until every path had run twice.
    progress('storm: warm-up');
    for (let round = 0; round < 2; round++) {
      for (const size of options.sizes) {
        for (const kind of STORM_KINDS) await runOnce(kind, size);
      }
    }

    const rows: StormRow[] = [];
    for (const size of options.sizes) {
      for (const kind of STORM_KINDS) {
        const runs: StormRun[] = [];
        for (let r = 0; r < options.repeat; r++) {
          const run = await runOnce(kind, size);
          progress(
            `storm: ${kind} x ${size}: ${run.cpuMsPerCall.toFixed(3)} ms CPU/call, ` +
              `${run.errors} errors${run.levelMs === null ? '' : `, level after ${run.levelMs.toFixed(0)} ms`}`,
          );
          runs.push(run);
        }
        const cpuMsPerCall = median(runs.map((run) => run.cpuMsPerCall));
        const levels = runs.flatMap((run) => (run.levelMs === null ? [] : [run.levelMs]));
        rows.push({
          kind,
          users: size,
          cpuMsPerCall,
          xFloor: null,
          levelMs: levels.length > 0 ? median(levels) : null,
          wallMs: median(runs.map((run) => run.wallMs)),
          errors: runs.reduce((sum, run) => sum + run.errors, 0),
          runs,
        });
      }
    }
    for (const row of rows) {
      const floorRow = rows.find((r) => r.kind === 'floor' && r.users === row.users);
      row.xFloor =
        floorRow && floorRow.cpuMsPerCall > 0 ? row.cpuMsPerCall / floorRow.cpuMsPerCall : null;
    }
    const idle = options.idleMeetings > 0 ? await measureIdle(options.idleMeetings) : null;
    return {
      instances: options.instances,
      rows,
      idle,
      sockets: sockets.length,
      sourceAddresses: SOURCE_ADDRESSES,
    };
  } finally {
    for (const s of sockets) s.socket.terminate();
    for (const s of floorSockets) s.socket.terminate();
    for (const a of agents) a.destroy();
    await Promise.allSettled(servers.map((server) => server.stop()));
    await deleteRedisKeys(floorPrefix).catch(() => {});
  }
}
