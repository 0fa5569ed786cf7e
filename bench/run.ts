/**
 * `npm run bench`: fan-out of notify events from Switchboard and two reference servers, side by
 * side (issue 7), write storms against a floor server (issue 17, `--only storm`) and Switchboard
 * on a Redis Cluster (issue 15, `--only cluster`). Servers run pinned to CPU 0, this load generator to CPU 1 (it re-executes
 * itself under taskset). See bench/README.md for what is measured and how.
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { type BenchTarget, prepareTarget } from './load/bench-target.ts';
import { closeSseAgent, type SseMode } from './load/sse-subscriber.ts';
import { withTimeout } from './load/subscriber.ts';
import {
  type BenchOptions,
  type Configuration,
  PHASES,
  type Phase,
  parseOptions,
  USAGE,
} from './options.ts';
import { evaluate, formatReport, type ServerResult, type Summary } from './report.ts';
import { type ClusterResult, measureCluster, SCALE_INSTANCES } from './scenarios/cluster.ts';
import { measureFanout } from './scenarios/fanout.ts';
import { measureLatencyAndMemory } from './scenarios/latency-memory.ts';
import { measureRequests, okSpec, publishSpec, viewerSpec } from './scenarios/requests.ts';
import {
  measureIdle,
  measureRouting,
  measureScale,
  openRoutingTarget,
  type RoutingTarget,
} from './scenarios/scale.ts';
import { measureStorm, type StormResult } from './scenarios/storm.ts';
import {
  compileServers,
  type ServerUnderTest,
  startReference,
  startSwitchboard,
} from './servers/index.ts';

/** The CPU of the load generator; the servers get CPU 0. */
const LOAD_CORE = 1;
const PINNED_FLAG = 'BENCH_PINNED';
const RESULTS_FILE = fileURLToPath(new URL('./results/latest.json', import.meta.url));
const FANOUT_WARMUP = 3;
const LATENCY_WARMUP = 2;

/** Runs this same command again under `taskset -c 1`, forwarding signals and the exit code. */
function reexecPinned(): void {
  const child = spawn(
    'taskset',
    ['-c', String(LOAD_CORE), process.execPath, ...process.execArgv, ...process.argv.slice(1)],
    { stdio: 'inherit', env: { ...process.env, [PINNED_FLAG]: '1' } },
  );
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => child.kill(signal));
  }
  child.once('error', (error) => {
    process.stderr.write(`bench: cannot run taskset: ${error.message}\n`);
    process.exit(1);
  });
  child.once('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
}

const began = performance.now();
const progress = (message: string) => {
  const at = ((performance.now() - began) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench ${at}s] ${message}\n`);
};

function startConfiguration(name: Configuration, options: BenchOptions): Promise<ServerUnderTest> {
  switch (name) {
    case 'raw':
    case 'baseline':
    case 'yoga':
      return startReference(name);
    case 'switchboard':
    case 'switchboard-sse':
      return startSwitchboard(name, { instances: 1, logLevel: options.logLevel });
    case 'switchboard-redis':
      return startSwitchboard(name, { instances: 2, logLevel: options.logLevel });
  }
}

/** Every phase of one configuration; a failed phase is recorded and the next one still runs. */
async function benchConfiguration(
  server: ServerUnderTest,
  name: Configuration,
  options: BenchOptions,
  result: ServerResult,
  interrupted: () => boolean,
): Promise<void> {
  const phase = async <T>(label: string, run: () => Promise<T>): Promise<T | null> => {
    if (interrupted()) return null;
    const started = performance.now();
    progress(`${name}: ${label}`);
    try {
      const value = await run();
      progress(`${name}: ${label} done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return value;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      progress(`${name}: ${label} FAILED: ${message}`);
      result.errors.push(`${label}: ${message}`);
      return null;
    }
  };
  const runs = (p: Phase) =>
    options.phases.includes(p) && (PHASES[p] as readonly Configuration[]).includes(name);
  const [first] = server.processes;
  if (!first) throw new Error(`${name} has no process`);
  const { pid, url } = first;
  const requestOptions = {
    requests: options.requests,
    warmup: Math.min(500, options.requests),
    inFlight: options.inFlight,
  };

  // First, before any client: what the started server holds.
  if (runs('idle')) {
    result.idle = await phase(`idle RSS (lowest over ${options.idleWindow} s)`, () =>
      measureIdle(
        server.processes.map((p) => p.pid),
        options.idleWindow * 1000,
      ),
    );
  }
  if (name === 'yoga') {
    if (runs('requests')) {
      const ok = await phase(`${options.requests} x { ok }`, () =>
        measureRequests(pid, okSpec(url), requestOptions),
      );
      result.requests = { ok };
    }
    return;
  }

  let target: BenchTarget | null = null;
  try {
    target = await prepareTarget(server, options.payload);
    await benchWithTarget(target);
  } catch (error) {
    result.errors.push(`prepare: ${(error as Error).message}`);
    progress(`${name}: FAILED: ${(error as Error).message}`);
  } finally {
    await target?.close().catch(() => {});
  }

  async function benchWithTarget(target: BenchTarget): Promise<void> {
    if (runs('requests')) {
      const tokens = await Promise.all(
        Array.from({ length: 300 }, (_, i) => server.token(`bench-user-${i}`)),
      );
      const viewer = await phase(`${options.requests} x { viewer { userId } }`, () =>
        measureRequests(pid, viewerSpec(url, tokens), requestOptions),
      );
      const publish = await phase(`${options.requests} x publish`, () =>
        measureRequests(
          pid,
          publishSpec(url, target.publisherToken, target.channelId),
          requestOptions,
        ),
      );
      result.requests = { viewer, publish };
    }

    const settle = { connections: options.scaleN, settleMs: options.idleWindow * 1000 };
    if (name === 'switchboard-sse') {
      const sse = await phase(`${options.scaleN} idle SSE (distinct) subscribers`, () =>
        measureScale(target, (sink) => target.sseOpener('distinct', sink), settle),
      );
      result.scaleSse = sse?.memory ?? null;
      return;
    }
    if (runs('memory') || runs('routing')) {
      const routingOptions = { publishes: options.routingPublishes, window: 4, warmup: 20 };
      let routing: RoutingTarget | null = null;
      if (runs('routing')) {
        routing = await phase('routing target subscriber', () => openRoutingTarget(target));
      }
      try {
        const addressed = routing;
        if (addressed) {
          result.routingNone = await phase('publish to one user, no other subscribers', () =>
            measureRouting(target, addressed, { ...routingOptions, otherSubscribers: 0 }),
          );
        }
        const scale = await phase(`${options.scaleN} idle graphql-ws subscribers`, () =>
          measureScale(
            target,
            target.wsOpener,
            settle,
            addressed
              ? () =>
                  measureRouting(target, addressed, {
                    ...routingOptions,
                    otherSubscribers: options.scaleN,
                  })
              : undefined,
          ),
        );
        result.scaleWs = scale?.memory ?? null;
        if (addressed) result.routingLoaded = scale?.during ?? null;
      } finally {
        await routing?.close();
      }
    }

    if (!runs('fanout')) return;
    const measured = {
      subscribers: options.n,
      events: options.m,
      window: options.window,
      repeat: options.repeat,
      warmup: FANOUT_WARMUP,
    };
    if (name !== 'switchboard-redis') {
      const latencyMemory = await phase(`latency + memory, ${options.latencyN} subscribers`, () =>
        measureLatencyAndMemory(target, {
          subscribers: options.latencyN,
          rounds: options.rounds,
          warmup: LATENCY_WARMUP,
        }),
      );
      // After the --scale-n phase on this process the delta counts memory those connections
      // left behind as free (even below zero): only the scale phase's figure is kept then.
      result.memory = runs('memory') ? null : (latencyMemory?.memory ?? null);
      result.latency = latencyMemory?.latency ?? null;
    }
    result.ws = await phase(`graphql-ws fan-out ${options.n} x ${options.m}`, () =>
      measureFanout(target, target.wsOpener, measured),
    );
    if (name === 'switchboard') {
      for (const [mode, key] of [
        ['distinct', 'sseDistinct'],
        ['single', 'sseSingle'],
      ] as const satisfies readonly (readonly [SseMode, keyof ServerResult])[]) {
        result[key] = await phase(`sse ${mode} fan-out ${options.n} x ${options.m}`, () =>
          measureFanout(target, (sink) => target.sseOpener(mode, sink), measured),
        );
      }
    }
  }
}

async function main(): Promise<number> {
  let options: BenchOptions;
  try {
    const parsed = parseOptions(process.argv.slice(2));
    if (parsed === 'help') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    options = parsed;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${USAGE}\n`);
    return 2;
  }

  progress('compiling the servers (tsc -p bench/tsconfig.json)');
  compileServers();

  const running = new Set<ServerUnderTest>();
  const stopServer = async (server: ServerUnderTest) => {
    try {
      await withTimeout(server.stop(), 20_000, `stopping ${server.name}`);
    } catch (error) {
      progress(`${server.name}: cleanup failed: ${(error as Error).message}`);
    } finally {
      running.delete(server);
    }
  };
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    progress(`${signal}: stopping servers and dropping databases`);
    void Promise.allSettled([...running].map(stopServer)).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const startedAt = new Date().toISOString();
  const servers: Summary['servers'] = {};
  for (const name of options.only) {
    if (interrupted) break;
    const result: ServerResult = {
      name,
      processes: 0,
      memory: null,
      latency: null,
      ws: null,
      sseDistinct: null,
      sseSingle: null,
      requests: null,
      scaleWs: null,
      scaleSse: null,
      routingNone: null,
      routingLoaded: null,
      idle: null,
      errors: [],
      serverWarnings: [],
    };
    servers[name] = result;
    progress(`${name}: starting`);
    let server: ServerUnderTest;
    try {
      server = await startConfiguration(name, options);
    } catch (error) {
      result.errors.push(`start: ${(error as Error).message}`);
      progress(`${name}: start FAILED: ${(error as Error).message}`);
      continue;
    }
    running.add(server);
    result.processes = server.processes.length;
    try {
      await benchConfiguration(server, name, options, result, () => interrupted);
    } catch (error) {
      result.errors.push(`${(error as Error).message}`);
      progress(`${name}: FAILED: ${(error as Error).message}`);
    } finally {
      result.serverWarnings = server.processes.flatMap((p) => p.warnings).slice(0, 100);
      await stopServer(server);
    }
  }
  closeSseAgent();

  let storm: StormResult | null = null;
  const stormErrors: string[] = [];
  if (options.storm && !interrupted) {
    progress(`storm: ${options.stormSizes.join(', ')} users, ${options.stormRepeat} runs each`);
    try {
      storm = await measureStorm({
        sizes: options.stormSizes,
        repeat: options.stormRepeat,
        idleMeetings: options.idleMeetings,
        instances: options.stormInstances,
        logLevel: options.logLevel,
        progress,
      });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      progress(`storm FAILED: ${message}`);
      stormErrors.push(message);
    }
  }

  let cluster: ClusterResult | null = null;
  const clusterErrors: string[] = [];
  if (options.cluster && !interrupted) {
    progress(`cluster: ${options.clusterN} subscribers over ${SCALE_INSTANCES} instances`);
    try {
      cluster = await measureCluster({
        n: options.n,
        m: options.m,
        window: options.window,
        repeat: options.repeat,
        payload: options.payload,
        scaleN: options.clusterN,
        scaleEvents: options.clusterEvents,
        rounds: options.rounds,
        idleWindow: options.idleWindow,
        logLevel: options.logLevel,
        progress,
        running,
      });
      clusterErrors.push(...cluster.errors);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      progress(`cluster FAILED: ${message}`);
      clusterErrors.push(message);
    }
  }

  const { ratios, targets } = evaluate(servers, options, storm, cluster);
  const summary: Summary = {
    startedAt,
    durationSeconds: (performance.now() - began) / 1000,
    options,
    machine: { cpus: availableParallelism(), node: process.version, loadAverage: loadavg() },
    servers,
    storm,
    stormErrors,
    cluster,
    clusterErrors,
    ratios,
    targets,
  };
  const json = `${JSON.stringify(summary, null, 2)}\n`;
  await mkdir(fileURLToPath(new URL('./results/', import.meta.url)), { recursive: true });
  await writeFile(RESULTS_FILE, json);
  if (options.json) await writeFile(options.json, json);
  process.stdout.write(json);
  process.stdout.write(`\n${formatReport(summary)}\n`);
  process.stdout.write(
    `JSON summary: ${RESULTS_FILE}${options.json ? ` and ${options.json}` : ''}\n`,
  );
  const failed =
    Object.values(servers).some((r) => r.errors.length > 0) ||
    stormErrors.length > 0 ||
    clusterErrors.length > 0;
  return failed ? 1 : 0;
}

if (process.env[PINNED_FLAG] === '1') {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`);
      process.exit(1);
    },
  );
} else {
  reexecPinned();
}
