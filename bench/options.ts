import { parseArgs } from 'node:util';

/** The server configurations `--only` can pick. */
export const CONFIGURATIONS = [
  'raw',
  'baseline',
  'yoga',
  'switchboard',
  // Switchboard again, started fresh for the SSE subscribers of the memory phase: memory the
  // graphql-ws subscribers held is not all given back, and would be counted as free.
  'switchboard-sse',
  'switchboard-redis',
] as const;
export type Configuration = (typeof CONFIGURATIONS)[number];

/** The phases `--only` can pick, and the configurations each one runs on. */
export const PHASES = {
  /** Fan-out of notify (graphql-ws, SSE), latency and memory at --latency-n, two instances. */
  fanout: ['raw', 'baseline', 'switchboard', 'switchboard-redis'],
  /** HTTP requests per server CPU-second: `{ ok }` on bare yoga, viewer and publish on Switchboard. */
  requests: ['yoga', 'switchboard'],
  /** Memory per idle subscribed connection at --scale-n (graphql-ws on raw and Switchboard, SSE). */
  memory: ['raw', 'switchboard', 'switchboard-sse'],
  /** A publish addressed to one user, with --scale-n other subscribers connected and with none. */
  routing: ['switchboard'],
  /** Idle RSS of a started Switchboard with Postgres and Redis configured. */
  idle: ['switchboard-redis'],
  /** Write storms against the floor server (issue 17): starts its own servers, after the rest. */
  storm: [],
  /**
   * Switchboard on a Redis Cluster (issue 15): one instance against three, --cluster-n
   * subscribers over six instances, one shard's publishes. Starts its own cluster and servers.
   */
  cluster: [],
} as const satisfies Record<string, readonly Configuration[]>;
export type Phase = keyof typeof PHASES;
const PHASE_NAMES = Object.keys(PHASES) as Phase[];

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
  /** Configurations to start, in order (those the chosen phases use, unless named). */
  only: Configuration[];
  /** Phases to run. */
  phases: Phase[];
  /** Connections of the memory and routing phases. */
  scaleN: number;
  /** Measured requests per operation of the requests phase. */
  requests: number;
  /** Requests in flight during the requests phase. */
  inFlight: number;
  /** Measured publishes of each routing run. */
  routingPublishes: number;
  /** Seconds over which idle RSS is sampled (its lowest value counts). */
  idleWindow: number;
  /** Run the storm phase (write storms against the floor server). */
  storm: boolean;
  /** Users per storm (each sends once, at the same moment). */
  stormSizes: number[];
  /** Storms per kind and size; the median is reported. */
  stormRepeat: number;
  /** Switchboard instances of the storm phase (on one Redis). */
  stormInstances: number;
  /** Meetings with an applause subscriber, measured idle after the storms (0: skip). */
  idleMeetings: number;
  /** Run the cluster phase. */
  cluster: boolean;
  /** Subscribers of the cluster phase's scale run over six instances. */
  clusterN: number;
  /** Measured publishes to all of them for deliveries per CPU-second. */
  clusterEvents: number;
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
  --only <list>        comma-separated phases and/or configurations (default: everything)
                       phases: ${PHASE_NAMES.join(',')}
                       configurations: ${CONFIGURATIONS.join(',')}
                       e.g. --only memory, --only requests, --only switchboard,routing
  --scale-n <count>    connections of the memory and routing phases (default 15000)
  --requests <count>   measured requests per operation of the requests phase (default 3000)
  --in-flight <count>  requests in flight in the requests phase (default 32)
  --routing-publishes <count>  measured publishes per routing run (default 1000)
  --idle-window <s>    seconds over which idle RSS is sampled, lowest kept (default 40)
  --storm-sizes <list> users per write storm, comma-separated (default 2000,5000)
  --storm-repeat <n>   storms per kind and size, median reported (default 3)
  --storm-instances <n> Switchboard instances on one Redis in the storm phase, 1 or 2 (default 1)
  --idle-meetings <n>  meetings with an applause subscriber each, server CPU while idle
                       (default 3000; 100 per socket, so at most 100 x the largest storm size)
  --cluster-n <count>  subscribers over 6 instances on a Redis Cluster in the cluster phase
                       (default 100000; held by load processes of at most 17000 each)
  --cluster-events <n> measured publishes to all of them, deliveries per CPU-second (default 10)
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
      'storm-sizes': { type: 'string' },
      'storm-repeat': { type: 'string' },
      'idle-meetings': { type: 'string' },
      'storm-instances': { type: 'string' },
      'scale-n': { type: 'string' },
      'cluster-n': { type: 'string' },
      'cluster-events': { type: 'string' },
      requests: { type: 'string' },
      'in-flight': { type: 'string' },
      'routing-publishes': { type: 'string' },
      'idle-window': { type: 'string' },
      json: { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const named = (values.only ?? '')
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  for (const name of named) {
    if (!(CONFIGURATIONS as readonly string[]).includes(name) && !(name in PHASES)) {
      throw new Error(
        `--only: unknown phase or configuration "${name}" (${[...PHASE_NAMES, ...CONFIGURATIONS].join(', ')})`,
      );
    }
  }
  const namedPhases = PHASE_NAMES.filter((phase) => named.includes(phase));
  const phases = namedPhases.length > 0 ? namedPhases : PHASE_NAMES;
  const used = new Set<Configuration>(phases.flatMap((phase) => PHASES[phase]));
  const namedConfigurations = CONFIGURATIONS.filter((name) => named.includes(name));
  const only = CONFIGURATIONS.filter((name) =>
    namedConfigurations.length > 0
      ? namedConfigurations.includes(name) && used.has(name)
      : used.has(name),
  );
  if (only.length === 0 && !phases.includes('storm') && !phases.includes('cluster')) {
    throw new Error('--only: no chosen phase runs on the chosen configurations');
  }
  const stormInstances = positive('storm-instances', values['storm-instances'], 1);
  if (stormInstances > 2) throw new Error('--storm-instances: 1 or 2');
  const stormSizes = (values['storm-sizes'] ?? '2000,5000')
    .split(',')
    .map((size) => positive('storm-sizes', size.trim(), 0));
  // One load process holds two sockets per user (graphql-ws and the floor's), under 20,000 files.
  if (stormSizes.some((size) => size > 9_000)) {
    throw new Error('--storm-sizes: at most 9000 users (one load process holds the sockets)');
  }
  return {
    n: positive('n', values.n, 2000),
    m: positive('m', values.m, 100),
    payload: positive('payload', values.payload, 100),
    latencyN: positive('latency-n', values['latency-n'], 5000),
    rounds: positive('rounds', values.rounds, 5),
    window: positive('window', values.window, 4),
    repeat: positive('repeat', values.repeat, 1),
    only,
    phases,
    scaleN: positive('scale-n', values['scale-n'], 15_000),
    requests: positive('requests', values.requests, 3000),
    inFlight: positive('in-flight', values['in-flight'], 32),
    routingPublishes: positive('routing-publishes', values['routing-publishes'], 1000),
    idleWindow: positive('idle-window', values['idle-window'], 40),
    storm: phases.includes('storm'),
    stormSizes,
    stormRepeat: positive('storm-repeat', values['storm-repeat'], 3),
    stormInstances,
    idleMeetings:
      values['idle-meetings'] === '0'
        ? 0
        : positive('idle-meetings', values['idle-meetings'], 3000),
    cluster: phases.includes('cluster'),
    clusterN: positive('cluster-n', values['cluster-n'], 100_000),
    clusterEvents: positive('cluster-events', values['cluster-events'], 10),
    json: values.json ?? null,
    logLevel: values['log-level'] ?? 'info',
  };
}
