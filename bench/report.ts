import type { BenchOptions, Configuration } from './options.ts';
import { type ClusterResult, EQUAL_RATE_WINDOW, type ScaleRun } from './scenarios/cluster.ts';
import type { FanoutResult } from './scenarios/fanout.ts';
import type { LatencyResult, MemoryResult } from './scenarios/latency-memory.ts';
import type { RequestsResult } from './scenarios/requests.ts';
import type { IdleResult, RoutingResult } from './scenarios/scale.ts';
import type { StormResult } from './scenarios/storm.ts';

/** Everything measured on one server configuration; null where a phase failed or did not run. */
export interface ServerResult {
  name: Configuration;
  processes: number;
  memory: MemoryResult | null;
  latency: LatencyResult | null;
  ws: FanoutResult | null;
  sseDistinct: FanoutResult | null;
  sseSingle: FanoutResult | null;
  /** HTTP requests per server CPU-second, by operation (ok on yoga; viewer, publish). */
  requests: Record<string, RequestsResult | null> | null;
  /** Memory per idle subscribed connection at --scale-n: graphql-ws, and SSE (distinct). */
  scaleWs: MemoryResult | null;
  scaleSse: MemoryResult | null;
  /** A publish to one user with no other subscribers, and with --scale-n of them. */
  routingNone: RoutingResult | null;
  routingLoaded: RoutingResult | null;
  /** RSS of the started, idle server per process. */
  idle: IdleResult | null;
  /** Phases that failed, with the reason. */
  errors: string[];
  /** Log lines at warn or above the server printed while it was measured (first 100). */
  serverWarnings: string[];
}

export interface Target {
  name: string;
  /** e.g. ">= 0.70 x raw" */
  target: string;
  /** The measured value in the target's unit (a ratio, KiB or MB). */
  measured: number | null;
  /** null: not measured in this run (or reported only). */
  pass: boolean | null;
  /** Reported beside the targets, without a bound. */
  reportOnly?: boolean;
}

export interface Summary {
  startedAt: string;
  durationSeconds: number;
  options: BenchOptions;
  machine: { cpus: number; node: string; loadAverage: number[] };
  servers: Partial<Record<Configuration, ServerResult>>;
  /** The storm phase (issue 17); null when it did not run or failed. */
  storm: StormResult | null;
  stormErrors: string[];
  /** The cluster phase (issue 15); null when it did not run or could not start. */
  cluster: ClusterResult | null;
  clusterErrors: string[];
  ratios: Record<string, number | null>;
  targets: Target[];
}

const ratio = (a: number | undefined, b: number | undefined): number | null =>
  a !== undefined && b !== undefined && b > 0 && Number.isFinite(a) ? a / b : null;

/** Ratios between configurations and the issue's targets with pass/fail. */
export function evaluate(
  servers: Summary['servers'],
  options: BenchOptions,
  storm: StormResult | null = null,
  cluster: ClusterResult | null = null,
): { ratios: Summary['ratios']; targets: Target[] } {
  const raw = servers.raw?.ws?.perCpuSecond;
  const baseline = servers.baseline?.ws?.perCpuSecond;
  const sb = servers.switchboard;
  const rawLast = servers.raw?.latency?.lastMs;
  const ratios: Record<string, number | null> = {
    'baseline.ws/raw.ws': ratio(baseline, raw),
    'switchboard.ws/raw.ws': ratio(sb?.ws?.perCpuSecond, raw),
    'switchboard.ws/baseline.ws': ratio(sb?.ws?.perCpuSecond, baseline),
    'switchboard.sseDistinct/raw.ws': ratio(sb?.sseDistinct?.perCpuSecond, raw),
    'switchboard.sseSingle/raw.ws': ratio(sb?.sseSingle?.perCpuSecond, raw),
    'switchboard.sseDistinct/baseline.ws': ratio(sb?.sseDistinct?.perCpuSecond, baseline),
    'switchboard.sseSingle/baseline.ws': ratio(sb?.sseSingle?.perCpuSecond, baseline),
    'switchboard.latencyLast/raw.latencyLast': ratio(sb?.latency?.lastMs, rawLast),
    'baseline.latencyLast/raw.latencyLast': ratio(servers.baseline?.latency?.lastMs, rawLast),
    'switchboard-redis.ws/switchboard.ws': ratio(
      servers['switchboard-redis']?.ws?.perCpuSecond,
      sb?.ws?.perCpuSecond,
    ),
  };
  const yogaOk = servers.yoga?.requests?.['ok']?.perCpuSecond;
  const rawScale = servers.raw?.scaleWs?.bytesPerConnection;
  const extra = {
    'switchboard.viewer/yoga.ok': ratio(sb?.requests?.['viewer']?.perCpuSecond, yogaOk),
    'switchboard.publish/yoga.ok': ratio(sb?.requests?.['publish']?.perCpuSecond, yogaOk),
    'switchboard.scaleWs/raw.scaleWs': ratio(sb?.scaleWs?.bytesPerConnection, rawScale),
    'switchboard-sse.scaleSse/raw.scaleWs': ratio(
      servers['switchboard-sse']?.scaleSse?.bytesPerConnection,
      rawScale,
    ),
    'switchboard.routingLoaded/routingNone': ratio(
      sb?.routingLoaded?.cpuMsPerPublish,
      sb?.routingNone?.cpuMsPerPublish,
    ),
  };
  Object.assign(ratios, extra);
  const atLeast = (name: string, value: number | null | undefined, min: number, of: string) => {
    const measured = value ?? null;
    return {
      name,
      target: `>= ${min.toFixed(2)} x ${of}`,
      measured,
      pass: measured === null ? null : measured >= min,
    } satisfies Target;
  };
  const atMost = (name: string, value: number | null | undefined, max: number, of: string) => {
    const measured = value ?? null;
    return {
      name,
      target: `<= ${max.toFixed(2)}${of ? ` x ${of}` : ''}`,
      measured,
      pass: measured === null ? null : measured <= max,
    } satisfies Target;
  };
  const idle = servers['switchboard-redis']?.idle;
  const idleMb = idle && idle.idleBytes.length > 0 ? Math.max(...idle.idleBytes) / 2 ** 20 : null;
  const sseScale = servers['switchboard-sse']?.scaleSse;
  const sseKib = sseScale ? sseScale.bytesPerConnection / 1024 : null;
  const scale = options.scaleN.toLocaleString('en-US');
  const targets: Target[] = [
    atLeast(
      `graphql-ws fan-out (${options.n} x ${options.m}), deliveries/CPU-s`,
      ratios['switchboard.ws/raw.ws'],
      0.85,
      'raw (moonshot 1.0)',
    ),
    atLeast('SSE distinct fan-out', ratios['switchboard.sseDistinct/raw.ws'], 0.75, 'raw'),
    atLeast('SSE single-connection fan-out', ratios['switchboard.sseSingle/raw.ws'], 0.75, 'raw'),
    atMost(
      `memory per idle graphql-ws connection, ${scale} subscribers`,
      extra['switchboard.scaleWs/raw.scaleWs'],
      1.25,
      'raw',
    ),
    {
      name: `memory per idle SSE connection, ${scale} subscribers (KiB)`,
      target: 'reported',
      measured: sseKib,
      pass: null,
      reportOnly: true,
    },
    atMost('idle RSS, Postgres + Redis configured (MB)', idleMb, 150, ''),
    atMost(
      `publish to one user: CPU with ${scale} others / with none`,
      extra['switchboard.routingLoaded/routingNone'],
      1.2,
      '',
    ),
    atLeast(
      'authenticated { viewer { userId } } over HTTP, req/CPU-s',
      extra['switchboard.viewer/yoga.ok'],
      0.9,
      'yoga { ok }',
    ),
    atLeast(
      'authenticated publish over HTTP, req/CPU-s',
      extra['switchboard.publish/yoga.ok'],
      0.9,
      'yoga { ok }',
    ),
    atMost(
      `keep: last delivery, 1 publish -> ${options.latencyN} subscribers`,
      ratios['switchboard.latencyLast/raw.latencyLast'],
      1.5,
      'raw',
    ),
    atLeast(
      'keep: two instances on one Redis',
      ratios['switchboard-redis.ws/switchboard.ws'],
      0.8,
      'one instance',
    ),
  ];
  // Issue 17: per-call CPU against the floor, and how soon the level shows every sender.
  const within = (name: string, measured: number | null, max: number, unit: string): Target => ({
    name,
    target: `<= ${max.toFixed(2)}${unit}`,
    measured,
    pass: measured === null ? null : measured <= max,
  });
  for (const row of storm?.rows ?? []) {
    // The floors are the references, not targets.
    if (row.kind === 'floor' || row.kind === 'floor-ws') continue;
    const limit = row.kind === 'applause-icc' ? 1.5 : 1.0;
    targets.push(
      within(`storm ${row.kind} x ${row.users} (CPU/call)`, row.xFloor, limit, ' x floor'),
    );
    if (row.kind === 'applause-ws' && row.levelMs !== null) {
      targets.push(
        within(
          `storm ${row.kind} x ${row.users}: level complete (s)`,
          row.levelMs / 1000,
          1.5,
          ' s',
        ),
      );
    }
  }
  if (storm?.idle) {
    targets.push(
      within(
        `${storm.idle.meetings} idle meetings with subscribers (cores)`,
        storm.idle.coreFraction,
        0.25,
        ' core',
      ),
    );
  }
  targets.push(...clusterTargets(cluster, ratios, options.window));
  return { ratios, targets };
}

/** Issue 15: three instances against one on the cluster, and the scale run over six. */
function clusterTargets(
  cluster: ClusterResult | null,
  ratios: Record<string, number | null>,
  window: number,
): Target[] {
  if (!cluster) return [];
  const three = ratio(cluster.three?.perCpuSecond, cluster.one?.perCpuSecond);
  const { scaleOne, scaleAll } = cluster;
  const six = ratio(
    scaleAll?.throughput?.perCpuSecond,
    scaleOne?.throughput?.perCpuSecond ?? undefined,
  );
  ratios['cluster.three/cluster.one'] = three;
  ratios['cluster.threeSerial/cluster.oneSerial'] = ratio(
    cluster.threeSerial?.perCpuSecond,
    cluster.oneSerial?.perCpuSecond,
  );
  ratios['cluster.scaleAll/cluster.scaleOne'] = six;
  const report = (name: string, measured: number | null | undefined): Target => ({
    name,
    target: 'reported',
    measured: measured ?? null,
    pass: null,
    reportOnly: true,
  });
  ratios['cluster.threeRate/cluster.oneRate'] = ratio(
    cluster.threeRate?.perCpuSecond,
    cluster.oneRate?.perCpuSecond,
  );
  // The target compares the same traffic: both get the same events at the same times. In the
  // closed loop (the next publish waits for deliveries) one saturated instance gets its events
  // in batches and writes each batch in one call, three sharing its core do not: that figure
  // is reported beside it, as is the one with a single event in flight.
  const equal = ratios['cluster.threeRate/cluster.oneRate'];
  const rate = num(cluster.ratePerSecond);
  const targets: Target[] = [
    {
      name: `three instances on a 3-master cluster, deliveries/CPU-s at the same ${rate} events/s`,
      target: '>= 0.80 x one instance',
      measured: equal,
      pass: equal === null ? null : equal >= 0.8,
    },
    report(`three instances, closed loop with ${num(window)} events in flight`, three),
  ];
  if (cluster.threeSerial) {
    targets.push(
      report(
        'three instances, one event in flight (no coalescing)',
        ratios['cluster.threeSerial/cluster.oneSerial'],
      ),
    );
  }
  if (scaleAll) {
    const n = scaleAll.subscribers.toLocaleString('en-US');
    const instances = scaleAll.instances;
    targets.push(
      {
        name: `${n} subscribers over ${instances} instances: fewest that had a publish`,
        target: `= ${n}`,
        measured: scaleAll.deliveredMin,
        pass: scaleAll.deliveredMin === scaleAll.subscribers,
      },
      report(`${n} subscribers: publish -> last delivery (ms)`, scaleAll.lastMs),
      report(`${n} subscribers: RSS per connection (KiB)`, scaleAll.bytesPerConnection / 1024),
      report(
        `${n} subscribers: total RSS of ${instances} instances (MB)`,
        scaleAll.rssAfterBytes / 2 ** 20,
      ),
      report(`${instances} instances, deliveries/CPU-s x one instance with a sixth`, six),
    );
  }
  if (cluster.shard) {
    targets.push(
      report('one Redis shard: SPUBLISH per Redis CPU-second', cluster.shard.perRedisCpuSecond),
    );
  }
  return targets;
}

const num = (value: number | null | undefined, digits = 0): string =>
  value === null || value === undefined || !Number.isFinite(value)
    ? '-'
    : value.toLocaleString('en-US', {
        maximumFractionDigits: digits,
        minimumFractionDigits: digits,
      });

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** The short human-readable report. */
export function formatReport(summary: Summary): string {
  const { servers, options } = summary;
  const raw = servers.raw?.ws?.perCpuSecond;
  const baseline = servers.baseline?.ws?.perCpuSecond;
  const fanoutRows: string[][] = [];
  for (const result of Object.values(servers)) {
    const runs: [string, FanoutResult | null][] = [
      ['graphql-ws', result.ws],
      ['sse distinct', result.sseDistinct],
      ['sse single', result.sseSingle],
    ];
    for (const [transport, run] of runs) {
      if (!run) continue;
      fanoutRows.push([
        `${result.name}${result.processes > 1 ? ` (${result.processes} procs)` : ''}`,
        transport,
        num(run.subscribers),
        num(run.events),
        num(run.perCpuSecond),
        num(ratio(run.perCpuSecond, raw), 2),
        num(ratio(run.perCpuSecond, baseline), 2),
        num(run.cpuSeconds, 2),
        num(run.perWallSecond),
      ]);
    }
  }
  const rawLast = servers.raw?.latency?.lastMs;
  const latencyRows: string[][] = [];
  for (const result of Object.values(servers)) {
    if (!result.latency && !result.memory) continue;
    latencyRows.push([
      result.name,
      num(result.latency?.subscribers ?? result.memory?.connections),
      num(result.latency?.firstMs, 1),
      num(result.latency?.medianMs, 1),
      num(result.latency?.lastMs, 1),
      num(ratio(result.latency?.lastMs, rawLast), 2),
      num(result.latency?.loadGeneratorCpuMs, 1),
      num(result.memory ? result.memory.bytesPerConnection / 1024 : null, 1),
    ]);
  }
  const targetRows = summary.targets.map((t) => [
    t.name,
    t.target,
    num(t.measured, 2),
    t.reportOnly ? 'info' : t.pass === null ? 'n/a' : t.pass ? 'PASS' : 'FAIL',
  ]);
  const errors = [
    ...Object.values(servers).flatMap((r) => r.errors.map((e) => `  ${r.name}: ${e}`)),
    ...summary.stormErrors.map((e) => `  storm: ${e}`),
    ...summary.clusterErrors.map((e) => `  cluster: ${e}`),
  ];
  const stormRows = (summary.storm?.rows ?? []).map((row) => [
    row.kind,
    num(row.users),
    num(row.cpuMsPerCall, 3),
    num(row.xFloor, 2),
    num(row.levelMs),
    num(row.wallMs),
    num(row.errors),
  ]);
  const mb = (bytes: number | null | undefined) =>
    bytes === null || bytes === undefined ? null : bytes / 2 ** 20;
  const yogaOk = servers.yoga?.requests?.['ok']?.perCpuSecond;
  const requestRows: string[][] = [];
  for (const result of Object.values(servers)) {
    for (const run of Object.values(result.requests ?? {})) {
      if (!run) continue;
      requestRows.push([
        result.name,
        run.operation,
        num(run.requests),
        num(run.perCpuSecond),
        num(ratio(run.perCpuSecond, yogaOk), 2),
        num(run.cpuMsPerRequest, 2),
        num(run.perWallSecond),
      ]);
    }
  }
  const rawScale = servers.raw?.scaleWs?.bytesPerConnection;
  const scaleRows: string[][] = [];
  for (const result of Object.values(servers)) {
    for (const [transport, run] of [
      ['graphql-ws', result.scaleWs],
      ['sse distinct', result.scaleSse],
    ] as const) {
      if (!run) continue;
      scaleRows.push([
        result.name,
        transport,
        num(run.connections),
        num(mb(run.rssBeforeBytes), 1),
        num(mb(run.rssAfterBytes), 1),
        num(run.bytesPerConnection / 1024, 1),
        num(ratio(run.bytesPerConnection, rawScale), 2),
      ]);
    }
  }
  const routingRows: string[][] = [];
  for (const result of Object.values(servers)) {
    const none = result.routingNone?.cpuMsPerPublish;
    for (const run of [result.routingNone, result.routingLoaded]) {
      if (!run) continue;
      routingRows.push([
        result.name,
        num(run.otherSubscribers),
        num(run.publishes),
        num(run.cpuMsPerPublish, 2),
        num(ratio(run.cpuMsPerPublish, none), 2),
      ]);
    }
  }
  const idleRows: string[][] = [];
  for (const result of Object.values(servers)) {
    result.idle?.idleBytes.forEach((bytes, i) => {
      idleRows.push([
        `${result.name} #${i + 1}`,
        num(mb(result.idle?.atReadyBytes[i]), 1),
        num(mb(bytes), 1),
        num(result.idle?.windowSeconds),
      ]);
    });
  }
  const extraTables = [
    ...(requestRows.length > 0
      ? [
          '',
          `HTTP requests, ${options.inFlight} in flight (server CPU from /proc)`,
          table(
            [
              'server',
              'operation',
              'requests',
              'req/CPU-s',
              'x yoga ok',
              'CPU ms/req',
              'req/s wall',
            ],
            requestRows,
          ),
        ]
      : []),
    ...(scaleRows.length > 0
      ? [
          '',
          'Memory per idle subscribed connection (lowest RSS before and after, delta / N)',
          table(
            ['server', 'transport', 'N', 'RSS before MB', 'RSS after MB', 'KiB/conn', 'x raw ws'],
            scaleRows,
          ),
        ]
      : []),
    ...(routingRows.length > 0
      ? [
          '',
          'A publish addressed to one user (server CPU per publish)',
          table(
            ['server', 'other subscribers', 'publishes', 'CPU ms/publish', 'x none'],
            routingRows,
          ),
        ]
      : []),
    ...(idleRows.length > 0
      ? [
          '',
          'Idle RSS of the started server (Postgres and Redis configured)',
          table(['process', 'at ready MB', 'idle MB (lowest)', 'window s'], idleRows),
        ]
      : []),
  ];
  const fanoutTables = [
    `Fan-out: ${options.n} subscribers x ${options.m} events of ${options.payload} B, window ${options.window}` +
      (options.repeat > 1 ? `, median of ${options.repeat} passes` : ''),
    table(
      [
        'server',
        'transport',
        'subs',
        'events',
        'deliv/CPU-s',
        'x raw',
        'x base',
        'CPU s',
        'deliv/s wall',
      ],
      fanoutRows,
    ),
    '',
    `One publish -> N graphql-ws subscribers (median of ${options.rounds} rounds); memory per idle subscribed connection`,
    table(
      [
        'server',
        'N',
        'first ms',
        'median ms',
        'last ms',
        'last x raw',
        'client CPU ms',
        'KiB/conn',
      ],
      latencyRows,
    ),
  ];
  return [
    ...(fanoutRows.length > 0 || latencyRows.length > 0 ? fanoutTables : []),
    ...extraTables,
    ...(stormRows.length > 0
      ? [
          '',
          `Write storms: every user sends once at the same moment (median of ${options.stormRepeat}); server CPU until idle again` +
            (summary.storm && summary.storm.instances > 1
              ? ` (Switchboard: ${summary.storm.instances} instances on one Redis, CPU summed)`
              : ''),
          table(
            ['kind', 'users', 'CPU ms/call', 'x floor', 'level ms', 'wall ms', 'errors'],
            stormRows,
          ),
          ...(summary.storm?.idle
            ? [
                `Idle: ${summary.storm.idle.meetings} meetings with an applause subscriber each: ` +
                  `${num(summary.storm.idle.coreFraction, 3)} of a core over ${summary.storm.idle.seconds} s`,
              ]
            : []),
        ]
      : []),
    ...clusterTables(summary.cluster, options),
    '',
    'Targets (issues 12, 15 and 17)',
    table(['target', 'wanted', 'measured', 'result'], targetRows),
    ...(errors.length > 0 ? ['', 'Errors:', ...errors] : []),
    '',
    `Run took ${num(summary.durationSeconds, 1)} s`,
  ].join('\n');
}

/** The cluster phase's tables (issue 15); nothing when it did not run. */
function clusterTables(cluster: ClusterResult | null, options: BenchOptions): string[] {
  if (!cluster) return [];
  const mb = (bytes: number) => num(bytes / 2 ** 20, 1);
  const fanoutRows = (
    [
      ['one instance', options.window, cluster.one, cluster.one],
      ['three instances', options.window, cluster.three, cluster.one],
      ['one instance', 1, cluster.oneSerial, cluster.oneSerial],
      ['three instances', 1, cluster.threeSerial, cluster.oneSerial],
      [
        `one instance, ${num(cluster.ratePerSecond)}/s`,
        EQUAL_RATE_WINDOW,
        cluster.oneRate,
        cluster.oneRate,
      ],
      [
        `three instances, ${num(cluster.ratePerSecond)}/s`,
        EQUAL_RATE_WINDOW,
        cluster.threeRate,
        cluster.oneRate,
      ],
    ] as const
  ).flatMap(([label, window, run, reference]) =>
    run
      ? [
          [
            label,
            num(run.cpuSecondsByProcess.length),
            num(window),
            num(run.subscribers),
            num(run.events),
            num(run.perCpuSecond),
            num(ratio(run.perCpuSecond, reference?.perCpuSecond), 2),
            run.cpuSecondsByProcess.map((cpu) => num(cpu, 2)).join(' + '),
            num(run.writeSyscalls / run.deliveries, 2),
            num(run.perWallSecond),
          ],
        ]
      : [],
  );
  const scaleOne = cluster.scaleOne?.throughput?.perCpuSecond;
  const scaleRow = (run: ScaleRun) => [
    num(run.instances),
    num(run.subscribers),
    run.loadProcesses.map((count) => num(count)).join('+'),
    num(run.connectSeconds, 1),
    mb(run.rssBeforeBytes),
    mb(run.rssAfterBytes),
    num(run.bytesPerConnection / 1024, 1),
    num(run.firstMs, 1),
    num(run.medianMs, 1),
    num(run.lastMs, 1),
    num(run.loadCpuMs),
    num(run.deliveredMin),
    num(run.throughput ? run.throughput.writeSyscalls / run.throughput.deliveries : null, 2),
    num(run.throughput?.perCpuSecond),
    num(ratio(run.throughput?.perCpuSecond, scaleOne ?? undefined), 2),
  ];
  const scaleRows = [cluster.scaleOne, cluster.scaleAll].flatMap((run) =>
    run ? [scaleRow(run)] : [],
  );
  const { shard } = cluster;
  return [
    '',
    `Redis Cluster, ${cluster.masters} masters with ${cluster.replicasPerMaster} replica each: ` +
      `fan-out of ${options.n} subscribers x ${options.m} events, spread over the instances` +
      (options.repeat > 1 ? `, median of ${options.repeat} passes` : ''),
    table(
      [
        'switchboard',
        'procs',
        'window',
        'subs',
        'events',
        'deliv/CPU-s',
        'x one',
        'CPU s',
        'writes/deliv',
        'deliv/s wall',
      ],
      fanoutRows,
    ),
    '',
    `Scale on the cluster: subscribers held by load processes; one publish to all (median of ${options.rounds} rounds), ` +
      `then ${options.clusterEvents} publishes (window ${options.window}) for deliveries per CPU-second of all instances`,
    table(
      [
        'instances',
        'subs',
        'load procs',
        'connect s',
        'RSS before MB',
        'RSS after MB',
        'KiB/conn',
        'first ms',
        'median ms',
        'last ms',
        'load CPU ms',
        'fewest had it',
        'writes/deliv',
        'deliv/CPU-s',
        'x one',
      ],
      scaleRows,
    ),
    ...(shard
      ? [
          '',
          `One Redis shard: ${num(shard.publishes)} SPUBLISH of ${shard.payloadBytes} B to ${shard.subscribers} ` +
            `subscribers (redis-benchmark -c ${shard.clients} -P ${shard.pipeline}): ` +
            `${num(shard.perWallSecond)}/s wall, ${num(shard.perRedisCpuSecond)} per Redis CPU-second ` +
            `(${num(shard.redisCpuSeconds, 2)} CPU s)`,
        ]
      : []),
  ];
}
