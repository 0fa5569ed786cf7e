import type { BenchOptions, Configuration } from './options.ts';
import type { FanoutResult } from './scenarios/fanout.ts';
import type { LatencyResult, MemoryResult } from './scenarios/latency-memory.ts';
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
  /** Phases that failed, with the reason. */
  errors: string[];
  /** Log lines at warn or above the server printed while it was measured (first 100). */
  serverWarnings: string[];
}

export interface Target {
  name: string;
  /** e.g. ">= 0.70 x raw" */
  target: string;
  /** The measured value in the target's unit (a ratio, or KiB). */
  measured: number | null;
  /** null: not measured in this run. */
  pass: boolean | null;
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
): { ratios: Summary['ratios']; targets: Target[] } {
  const raw = servers.raw?.ws?.perCpuSecond;
  const baseline = servers.baseline?.ws?.perCpuSecond;
  const sb = servers.switchboard;
  const rawLast = servers.raw?.latency?.lastMs;
  const ratios = {
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
  const atLeast = (name: string, measured: number | null, min: number, of: string): Target => ({
    name,
    target: `>= ${min.toFixed(2)} x ${of}`,
    measured,
    pass: measured === null ? null : measured >= min,
  });
  const memory = sb?.memory ? sb.memory.bytesPerConnection / 1024 : null;
  const latency = ratios['switchboard.latencyLast/raw.latencyLast'];
  const targets: Target[] = [
    atLeast('graphql-ws fan-out (deliveries/CPU-s)', ratios['switchboard.ws/raw.ws'], 0.7, 'raw'),
    atLeast('SSE distinct fan-out', ratios['switchboard.sseDistinct/raw.ws'], 0.6, 'raw ws'),
    atLeast('SSE single-connection fan-out', ratios['switchboard.sseSingle/raw.ws'], 0.6, 'raw ws'),
    {
      name: `last delivery, 1 publish -> ${options.latencyN} subscribers`,
      target: '<= 1.50 x raw',
      measured: latency,
      pass: latency === null ? null : latency <= 1.5,
    },
    {
      name: 'memory per idle graphql-ws connection (KiB)',
      target: '<= 16 KiB',
      measured: memory,
      pass: memory === null ? null : memory <= 16,
    },
    atLeast(
      'two instances on one Redis',
      ratios['switchboard-redis.ws/switchboard.ws'],
      0.8,
      'one instance',
    ),
  ];
  // Issue 17: per-call CPU against the floor, and how soon the level shows every sender.
  const atMost = (name: string, measured: number | null, max: number, unit: string): Target => ({
    name,
    target: `<= ${max.toFixed(2)}${unit}`,
    measured,
    pass: measured === null ? null : measured <= max,
  });
  for (const row of storm?.rows ?? []) {
    if (row.kind === 'floor') continue;
    const limit = row.kind === 'applause-icc' ? 1.5 : 1.0;
    targets.push(
      atMost(`storm ${row.kind} x ${row.users} (CPU/call)`, row.xFloor, limit, ' x floor'),
    );
    if (row.kind === 'applause-ws' && row.levelMs !== null) {
      targets.push(
        atMost(
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
      atMost(
        `${storm.idle.meetings} idle meetings with subscribers (cores)`,
        storm.idle.coreFraction,
        0.25,
        ' core',
      ),
    );
  }
  return { ratios, targets };
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
    t.pass === null ? 'n/a' : t.pass ? 'PASS' : 'FAIL',
  ]);
  const errors = [
    ...Object.values(servers).flatMap((r) => r.errors.map((e) => `  ${r.name}: ${e}`)),
    ...summary.stormErrors.map((e) => `  storm: ${e}`),
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
  return [
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
    '',
    'Targets (issues 7 and 17)',
    table(['target', 'wanted', 'measured', 'result'], targetRows),
    ...(errors.length > 0 ? ['', 'Errors:', ...errors] : []),
    '',
    `Run took ${num(summary.durationSeconds, 1)} s`,
  ].join('\n');
}
