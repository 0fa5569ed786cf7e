import { parseArgs } from 'node:util';

/** The server configurations `--only` can pick. */
export const CONFIGURATIONS = ['raw', 'baseline', 'switchboard', 'switchboard-redis'] as const;
export type Configuration = (typeof CONFIGURATIONS)[number];

export interface BenchOptions {
  /** Subscribers of the fan-out runs (graphql-ws and both SSE modes). */
  n: number;
  /** Measured events per fan-out run. */
  m: number;
  /** Size of each event's `message` JSON, in bytes. */
  payload: number;
  /** Subscribers of the latency and memory run. */
  latencyN: number;
  /** Measured single publishes of the latency run. */
  rounds: number;
  /** Events in flight during a fan-out run. */
  window: number;
  /** Measured passes per fan-out run (median reported). */
  repeat: number;
  only: Configuration[];
  /** Also write the JSON summary here (bench/results/latest.json is always written). */
  json: string | null;
  /** LOG_LEVEL of the Switchboard processes (its URL is read from the info-level line). */
  logLevel: string;
}

export const USAGE = `Usage: npm run bench -- [options]
  --n <count>          subscribers per fan-out run (default 2000)
  --m <count>          measured events per fan-out run (default 100)
  --payload <bytes>    size of each event's message JSON (default 100)
  --latency-n <count>  subscribers of the latency and memory run (default 5000)
  --rounds <count>     measured publishes of the latency run (default 5)
  --window <count>     events in flight during a fan-out run (default 4)
  --repeat <count>     measured passes per fan-out run, median reported (default 1)
  --only <list>        comma-separated: ${CONFIGURATIONS.join(',')} (default all)
  --json <file>        also write the JSON summary to <file>
  --log-level <level>  LOG_LEVEL of Switchboard (default info; it prints its URL at info)`;

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) {
    throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

/** Parses the command line; throws an Error with a clear message on bad input. */
export function parseOptions(argv: string[]): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      n: { type: 'string' },
      m: { type: 'string' },
      payload: { type: 'string' },
      'latency-n': { type: 'string' },
      rounds: { type: 'string' },
      window: { type: 'string' },
      repeat: { type: 'string' },
      only: { type: 'string' },
      json: { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const only = (values.only ?? CONFIGURATIONS.join(','))
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  for (const name of only) {
    if (!(CONFIGURATIONS as readonly string[]).includes(name)) {
      throw new Error(`--only: unknown configuration "${name}" (${CONFIGURATIONS.join(', ')})`);
    }
  }
  return {
    n: positive('n', values.n, 2000),
    m: positive('m', values.m, 100),
    payload: positive('payload', values.payload, 100),
    latencyN: positive('latency-n', values['latency-n'], 5000),
    rounds: positive('rounds', values.rounds, 5),
    window: positive('window', values.window, 4),
    repeat: positive('repeat', values.repeat, 1),
    only: CONFIGURATIONS.filter((name) => only.includes(name)),
    json: values.json ?? null,
    logLevel: values['log-level'] ?? 'info',
  };
}
