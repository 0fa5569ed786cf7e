import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { isLoopback } from './auth/loopback.ts';

const port = z.coerce.number().int().min(0).max(65535);
const positiveInt = z.coerce.number().int().positive();
const nonNegativeInt = z.coerce.number().int().nonnegative();
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
const url = (protocols: string[]) =>
  z
    .string()
    .url()
    .refine((v) => protocols.some((p) => v.startsWith(`${p}:`)), {
      message: `must start with ${protocols.map((p) => `${p}:`).join(' or ')}`,
    });

/** A rate `<count>/<duration>` (units s, m, h), or `off`: null. */
const rateLimit = z
  .string()
  .regex(/^(off|[1-9]\d*\/[1-9]\d*[smh])$/, 'must look like 100/10s, 600/1m or off')
  .transform((v) => {
    if (v === 'off') return null;
    const [count, duration] = v.split('/') as [string, string];
    const unit = { s: 1, m: 60, h: 3600 }[duration.slice(-1) as 's' | 'm' | 'h'];
    return { points: Number(count), seconds: Number(duration.slice(0, -1)) * unit };
  });

interface Setting<T extends z.ZodType> {
  /** One line for the configuration table (docs/configuration.md) and for error messages. */
  description: string;
  schema: T;
  /** Used when the variable is unset or empty; undefined means "not set". */
  default?: string;
  /** Also read from `<NAME>_FILE` (a path whose trimmed content is the value). */
  secret?: boolean;
}

const setting = <S extends Setting<z.ZodType>>(s: S) => s;

/**
 * Every environment variable the server reads, its default and what it does. The table in
 * docs/configuration.md is checked against this list by a test.
 */
export const SETTINGS = {
  PORT: setting({ description: 'TCP port of the HTTP server.', schema: port, default: '4000' }),
  HOST: setting({
    description:
      'Interface to listen on. Without AUTH_TOKEN_KEY and AUTH_JWKS_URL the default is 127.0.0.1, and any non-loopback HOST refuses to start (a generated development key exists only on loopback).',
    schema: z.string().min(1),
    default: '0.0.0.0',
  }),
  NODE_ENV: setting({
    description:
      '`production` never generates a development key: AUTH_TOKEN_KEY (or AUTH_JWKS_URL) is then required, on any HOST.',
    schema: z.string(),
  }),
  LOG_LEVEL: setting({
    description: 'pino log level: fatal, error, warn, info, debug, trace or silent.',
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    default: 'info',
  }),
  DATABASE_URL: setting({
    description:
      'Postgres connection string. Unset: an embedded Postgres (PGlite) in DATA_DIR, single process only.',
    schema: url(['postgres', 'postgresql']),
    secret: true,
  }),
  DATABASE_POOL_SIZE: setting({
    description: 'Connections in the Postgres pool of one instance.',
    schema: positiveInt,
    default: '10',
  }),
  DATA_DIR: setting({
    description: 'Folder of the embedded database (used only without DATABASE_URL).',
    schema: z.string().min(1),
    default: './.data',
  }),
  REDIS_URL: setting({
    description:
      'Redis connection string; set it to run several instances. Unset: in-memory pub/sub, one instance.',
    schema: url(['redis', 'rediss']),
    secret: true,
  }),
  REDIS_CLUSTER_NODES: setting({
    description:
      'Seed nodes of a Redis Cluster, `host:port,host:port,...`; set it instead of REDIS_URL to run several instances on a cluster (events travel by sharded pub/sub). When set, REDIS_URL is not used.',
    schema: z
      .string()
      .regex(
        /^[^\s,:]+:\d{1,5}(,[^\s,:]+:\d{1,5})*$/,
        'must be a comma-separated list of host:port',
      )
      .transform((v) =>
        v.split(',').map((node) => {
          const at = node.lastIndexOf(':');
          return { host: node.slice(0, at), port: Number(node.slice(at + 1)) };
        }),
      ),
  }),
  REDIS_PREFIX: setting({
    description:
      'Prefix of every Redis channel and key, so several deployments can share a Redis. No braces: the keys carry their own cluster hash tags (`{...}`).',
    schema: z
      .string()
      .min(1)
      .regex(/^[^{}]*$/, 'must not contain { or } (keys carry their own cluster hash tags)'),
    default: 'switchboard:',
  }),
  AUTH_TOKEN_KEY: setting({
    description:
      'HS256 key for JWTs. Unset (and no AUTH_JWKS_URL): only on a loopback HOST and outside NODE_ENV=production, a key is generated at start-up, sample tokens are logged and /demo/token mints tokens; otherwise the server refuses to start.',
    schema: z.string().min(16, 'must be at least 16 characters'),
    secret: true,
  }),
  AUTH_JWKS_URL: setting({
    description: 'JWKS URL for asymmetric JWTs (instead of AUTH_TOKEN_KEY).',
    schema: url(['http', 'https']),
  }),
  AUTH_ISSUER: setting({
    description: 'When set, tokens must carry this `iss` claim (and minted tokens get it).',
    schema: z.string().min(1),
  }),
  AUTH_AUDIENCE: setting({
    description: 'When set, tokens must carry this `aud` claim (and minted tokens get it).',
    schema: z.string().min(1),
  }),
  AUTH_TOKEN_CACHE_SIZE: setting({
    description:
      'HS256 tokens remembered after verifying, until their exp (least recently used evicted; tokens over 2 KiB never kept). 0: verify every time.',
    schema: z.coerce.number().int().min(0),
    default: '10000',
  }),
  AUTH_FAKE_USER: setting({
    description: 'Development only: every request without a token is this user id.',
    schema: z.string().min(1),
  }),
  TLS_CERT_FILE: setting({
    description: 'PEM certificate; with TLS_KEY_FILE the server speaks HTTPS and HTTP/2.',
    schema: z.string().min(1),
  }),
  TLS_KEY_FILE: setting({
    description: 'PEM private key for TLS_CERT_FILE.',
    schema: z.string().min(1),
  }),
  GRAPHIQL: setting({
    description: 'Serve GraphiQL to browsers at /graphql.',
    schema: bool,
    default: 'true',
  }),
  MAX_BODY_BYTES: setting({
    description: 'Largest accepted HTTP request body; larger requests get 413.',
    schema: positiveInt,
    default: '1048576',
  }),
  HTTP_HEADERS_TIMEOUT_MS: setting({
    description:
      'Time a client has to send the headers of a request; then 408 and the connection closes.',
    schema: positiveInt,
    default: '10000',
  }),
  HTTP_REQUEST_TIMEOUT_MS: setting({
    description:
      'Time a client has to send a whole request, body included (not the life of a stream or socket); then 408.',
    schema: positiveInt,
    default: '30000',
  }),
  MAX_PENDING_REQUESTS: setting({
    description:
      'Requests of one instance whose body is still arriving; more get 503 at once (slow uploads cannot starve the server).',
    schema: positiveInt,
    default: '1000',
  }),
  MESSAGE_MAX_BYTES: setting({
    description: 'Largest notify message (serialized JSON) a client may publish.',
    schema: positiveInt,
    default: '65536',
  }),
  NOTIFY_MAX_TARGETS: setting({
    description:
      'Most entries in each of `toUsers` and `toChannels` of one notify publish (GraphQL, ICC, OS3); more are refused.',
    schema: positiveInt,
    default: '1000',
  }),
  NOTIFY_MAX_NAME_LENGTH: setting({
    description: 'Longest notify message `name`, in characters; longer names are refused.',
    schema: positiveInt,
    default: '256',
  }),
  JSON_MAX_DEPTH: setting({
    description:
      'Deepest nesting of a JSON value a client sends (notify message, writeData value, pushEvents payload); deeper values are refused.',
    schema: positiveInt,
    default: '64',
  }),
  SUBSCRIPTION_BUFFER: setting({
    description:
      'Events queued for one subscription before its connection is closed as a slow consumer (4499).',
    schema: positiveInt,
    default: '1000',
  }),
  WS_MAX_BUFFERED_BYTES: setting({
    description: 'Bytes a WebSocket may have unsent before it is closed as a slow consumer (4499).',
    schema: positiveInt,
    default: '8388608',
  }),
  WS_KEEPALIVE_MS: setting({
    description:
      'Interval of WebSocket pings; a peer that does not answer within the next interval is dropped.',
    schema: positiveInt,
    default: '12000',
  }),
  WS_INIT_TIMEOUT_MS: setting({
    description: 'Time a graphql-ws client has to send connection_init (else close 4408).',
    schema: positiveInt,
    default: '3000',
  }),
  SSE_KEEPALIVE_MS: setting({
    description: 'Interval of keep-alive comments (`:`) on graphql-sse streams.',
    schema: positiveInt,
    default: '12000',
  }),
  SSE_RESERVATION_TIMEOUT_MS: setting({
    description:
      'Time a graphql-sse single-connection reservation (PUT) has to be opened (GET) before it is dropped with its operations.',
    schema: positiveInt,
    default: '15000',
  }),
  SSE_FORWARD_TIMEOUT_MS: setting({
    description:
      'How long an instance waits for the instance that holds a graphql-sse single-connection stream or reservation to answer a request it forwarded: an operation (POST) or stop (DELETE) then gets 503 UNAVAILABLE; a stream (GET) opens without what the reserving instance held.',
    schema: positiveInt,
    default: '3000',
  }),
  INSTANCE_TTL_MS: setting({
    description:
      'How long the shared entries of an instance (present users, open connections, graphql-sse streams) outlive it when it dies.',
    schema: positiveInt,
    default: '15000',
  }),
  ICC_PREFIX: setting({
    description: 'Mount point of the OpenSlides ICC endpoints.',
    schema: z.string().startsWith('/'),
    default: '/system/icc',
  }),
  OS3_PREFIX: setting({
    description:
      'Mount point of the OpenSlides 3 endpoints (notify, applause, autoupdate, projector).',
    schema: z.string().startsWith('/'),
    default: '/system',
  }),
  CHATTER_PREFIX: setting({
    description: 'Mount point of the chatter endpoints.',
    schema: z.string().startsWith('/'),
    default: '/chatter',
  }),
  CHAT_MAX_LENGTH: setting({
    description: 'Longest chat message text, in characters; longer texts are refused.',
    schema: positiveInt,
    default: '4000',
  }),
  TOKEN_EXPIRY_WARNING_S: setting({
    description:
      'Seconds before a connection token expires at which `subscription { session }` yields TokenExpiring (once per token).',
    schema: positiveInt,
    default: '60',
  }),
  WS_TOKEN_TTL_S: setting({
    description: 'Lifetime of a single-use ws token (createWsToken, chatter ws_token), in seconds.',
    schema: positiveInt,
    default: '300',
  }),
  CHATTER_SERVICE_SECRET: setting({
    description:
      'Secret a service sends as Authorization to chatter POST user. Unset: only service tokens.',
    schema: z.string().min(1),
    secret: true,
  }),
  NOTIFIER_PREFIX: setting({
    description: 'Mount point of the notifier endpoints.',
    schema: z.string().startsWith('/'),
    default: '/notifier',
  }),
  HEARTBEAT_PREFIX: setting({
    description: 'Mount point of the heartbeat endpoints.',
    schema: z.string().startsWith('/'),
    default: '/heartbeat',
  }),
  APPLAUSE_INTERVAL_MS: setting({
    description:
      'How often each instance recomputes the applause level of meetings it has subscribers for.',
    schema: positiveInt,
    default: '1000',
  }),
  APPLAUSE_WINDOW_S: setting({
    description:
      'Applause level = distinct users who applauded within this many seconds (fractions allowed).',
    schema: z.coerce.number().positive(),
    default: '5',
  }),
  MEETING_CACHE_TTL_S: setting({
    description:
      'Each instance caches meeting settings and member lists; configureMeeting updates every instance at once through pub/sub, and a cached meeting older than this is also read again in the background.',
    schema: z.coerce.number().positive(),
    default: '60',
  }),
  OS3_MEETING_ID: setting({
    description:
      'The meeting the OpenSlides 3 endpoints act in (applause, notify presence and membership).',
    schema: z.string().min(1),
    default: '1',
  }),
  PING_MIN_INTERVAL_MS: setting({
    description:
      'Shortest interval between two presence pings of one user; faster pings are ignored (no error, no fan-out).',
    schema: positiveInt,
    default: '1000',
  }),
  PRESENCE_FLUSH_MS: setting({
    description:
      'Presence pings are written to Postgres in one statement per this interval (lastSeen after a restart is exact to it); pending pings are written on graceful shutdown.',
    schema: positiveInt,
    default: '1000',
  }),
  PRESENCE_TIMEOUT_S: setting({
    description:
      'Seconds after its last ping a user counts as offline; presence subscribers then get online=false.',
    schema: z.coerce.number().positive(),
    default: '60',
  }),
  HEARTBEAT_KEEPALIVE_S: setting({
    description: 'Seconds between `:` keep-alive comments on the heartbeat SSE streams.',
    schema: z.coerce.number().positive(),
    default: '25',
  }),
  TRUST_USER_CLAIM_HEADER: setting({
    description:
      'Heartbeat `POST ping`: take the user from the `X-User-Claim` header (set by a trusted gateway).',
    schema: bool,
    default: 'false',
  }),
  AUTOUPDATE_RETENTION: setting({
    description:
      'Autoupdate changes and events kept for replay: a count of change ids (e.g. 10000) or an age (e.g. 7d, 12h, 30m, 90s). Older ones are pruned; clients resuming from before them get an allData snapshot.',
    schema: z
      .string()
      .regex(/^[1-9]\d*[smhd]?$/, 'must be a count like 10000 or an age like 7d, 12h, 30m, 90s')
      .transform((v) => {
        const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[v.slice(-1)];
        return unit === undefined ? { count: Number(v) } : { ageMs: Number(v.slice(0, -1)) * unit };
      }),
    default: '10000',
  }),
  AUTOUPDATE_PRUNE_INTERVAL_MS: setting({
    description: 'How often each instance prunes autoupdate changes past AUTOUPDATE_RETENTION.',
    schema: positiveInt,
    default: '60000',
  }),
  AUTOUPDATE_CATCHUP_MS: setting({
    description:
      'How often each instance checks Postgres for committed changes it was not told about (a lost pub/sub message); live delivery does not wait for it.',
    schema: positiveInt,
    default: '5000',
  }),
  AUTOUPDATE_MAX_BATCH: setting({
    description: 'Most items one writeData or pushEvents call may carry.',
    schema: positiveInt,
    default: '1000',
  }),
  AUTOUPDATE_SETUP_CONCURRENCY: setting({
    description:
      'First reads of new autoupdate subscriptions (snapshot or replay) run at once per instance; the others queue, so a reconnect storm leaves pool connections for writers. Capped at DATABASE_POOL_SIZE - 1.',
    schema: positiveInt,
    default: '4',
  }),
  AUTOUPDATE_SETUP_TIMEOUT_MS: setting({
    description:
      'Longest wait of a new autoupdate subscription in that queue; then UNAVAILABLE with extensions.retryAfterMs (legacy 503).',
    schema: positiveInt,
    default: '30000',
  }),
  DROP_USER_TIMEOUT_MS: setting({
    description:
      'How long dropUser waits for the other instances to report their closed connections.',
    schema: positiveInt,
    default: '2000',
  }),
  NOTIFIER_SECRET: setting({
    description:
      'Shared secret legacy connectors may send as Authorization (bare or Bearer) to notifier push_events, drop_user and clients. Unset: service tokens only.',
    schema: z.string().min(1),
    secret: true,
  }),
  NOTIFIER_OPEN: setting({
    description:
      'Notifier subscribe_to_events: let anyone subscribe to any access id without a token (the original behaviour; trusted networks only).',
    schema: bool,
    default: 'false',
  }),
  NOTIFIER_ANNOUNCE_TIMEOUT_MS: setting({
    description:
      'Time a notifier socket has to send its first frame {"access_id","timestamp"} before it is closed.',
    schema: positiveInt,
    default: '10000',
  }),
  MAX_CONNECTIONS: setting({
    description:
      'Open client connections (WebSockets, SSE and legacy streams) one instance accepts; more get close 4029 or HTTP 503.',
    schema: positiveInt,
    default: '10000',
  }),
  ANONYMOUS_CONNECTIONS: setting({
    description:
      "Open connections without a token one instance accepts, in a pool of their own beside MAX_CONNECTIONS (so they never take a user's place); 0 refuses them (graphql-ws 4403, SSE and legacy streams 401).",
    schema: nonNegativeInt,
    default: '0',
  }),
  MAX_CONNECTIONS_PER_USER: setting({
    description:
      'Open connections of one user on one instance (service tokens exempt); more get close 4029 or HTTP 429.',
    schema: positiveInt,
    default: '50',
  }),
  MAX_SUBSCRIPTIONS_PER_CONNECTION: setting({
    description:
      'Operations running at once on one graphql-ws connection or SSE stream; more get a RATE_LIMITED error.',
    schema: positiveInt,
    default: '100',
  }),
  MAX_OPERATIONS_IN_FLIGHT: setting({
    description:
      'graphql-ws and SSE operations an instance starts at once (a mutation until its result is sent, a subscription until it is subscribed); more wait their turn in order. One running longer than 1 s stops counting, so a stalled dependency cannot hold every place.',
    schema: positiveInt,
    default: '128',
  }),
  AUTOUPDATE_MAX_ITEM_BYTES: setting({
    description:
      'Largest serialized value (writeData) or payload (pushEvents, notifier push_events) of one item; larger items refuse the call.',
    schema: positiveInt,
    default: '262144',
  }),
  GRAPHQL_MAX_DEPTH: setting({
    description: 'Deepest selection set of an operation (introspection exempt); deeper is refused.',
    schema: positiveInt,
    default: '12',
  }),
  GRAPHQL_MAX_ALIASES: setting({
    description: 'Most aliases in one operation; more are refused.',
    schema: positiveInt,
    default: '30',
  }),
  GRAPHQL_MAX_TOKENS: setting({
    description: 'Most lexical tokens in one GraphQL document; longer documents are refused.',
    schema: positiveInt,
    default: '2000',
  }),
  GRAPHQL_MAX_DIRECTIVES: setting({
    description: 'Most directives in one operation; more are refused.',
    schema: positiveInt,
    default: '50',
  }),
  RATE_LIMIT_PUBLISH: setting({
    description:
      'Per-user rate of publish (GraphQL, ICC, OS3): `<count>/<duration>` (e.g. 200/10s, units s m h) or `off`. Over it: RATE_LIMITED / HTTP 429.',
    schema: rateLimit,
    default: '200/10s',
  }),
  RATE_LIMIT_APPLAUSE: setting({
    description:
      "Rate of sendApplause (GraphQL, ICC, OS3) per user and meeting, as RATE_LIMIT_PUBLISH (counted beside the meeting's applause, so one Redis script checks and records a call).",
    schema: rateLimit,
    default: '50/10s',
  }),
  RATE_LIMIT_PING: setting({
    description:
      'Per-user rate of presence pings (GraphQL, heartbeat), as RATE_LIMIT_PUBLISH; on top of PING_MIN_INTERVAL_MS.',
    schema: rateLimit,
    default: '120/10s',
  }),
  RATE_LIMIT_CHAT: setting({
    description:
      'Per-user rate of sendChatMessage (GraphQL, chatter socket), as RATE_LIMIT_PUBLISH.',
    schema: rateLimit,
    default: '150/10s',
  }),
  RATE_LIMIT_WS_TOKEN: setting({
    description:
      'Per-user rate of createWsToken (GraphQL, chatter ws_token), as RATE_LIMIT_PUBLISH.',
    schema: rateLimit,
    default: '60/1m',
  }),
  ALLOWED_ORIGINS: setting({
    description:
      'Comma-separated origins (e.g. https://app.example.org) browsers may call /graphql from (CORS), or `*`. Unset: no cross-origin access.',
    schema: z.string().transform((v) =>
      v
        .split(',')
        .map((o) => o.trim())
        .filter((o) => o !== ''),
    ),
  }),
  SHUTDOWN_DRAIN_MS: setting({
    description:
      'On SIGTERM, how long /readyz answers 503 while everything is still served, before the server stops accepting: a proxy that checks /readyz (the Caddyfile every 3 s) takes the instance out first, so no request reaches a closed port. 0 stops at once.',
    schema: nonNegativeInt,
    default: '0',
  }),
  SHUTDOWN_TIMEOUT_MS: setting({
    description: 'Longest graceful shutdown before the process exits anyway.',
    schema: positiveInt,
    default: '10000',
  }),
} as const;

type Settings = typeof SETTINGS;
type SettingName = keyof Settings;
type Value<K extends SettingName> = z.output<Settings[K]['schema']>;

/** The validated configuration; optional settings without a default may be undefined. */
export type Config = {
  [K in SettingName]: Settings[K] extends { default: string } ? Value<K> : Value<K> | undefined;
};

/** Raised at start-up for invalid settings; the message names every bad variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

function rawValue(name: string, s: Setting<z.ZodType>, env: Env): string | undefined {
  const direct = env[name];
  if (direct !== undefined && direct !== '') return direct;
  const file = s.secret ? env[`${name}_FILE`] : undefined;
  if (file) {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch (error) {
      throw new ConfigError(`${name}_FILE: cannot read ${file}: ${(error as Error).message}`);
    }
  }
  return s.default;
}

/**
 * Reads and validates every setting from `env` (default: process.env). Throws ConfigError
 * naming each invalid variable, so a mistake stops the process before it serves anything.
 */
export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(SETTINGS) as [string, Setting<z.ZodType>][]) {
    const raw = rawValue(name, s, env);
    if (raw === undefined) {
      out[name] = undefined;
      continue;
    }
    const parsed = s.schema.safeParse(raw);
    if (parsed.success) out[name] = parsed.data;
    else problems.push(`${name}: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  }
  if (Boolean(env['TLS_CERT_FILE']) !== Boolean(env['TLS_KEY_FILE'])) {
    problems.push('TLS_CERT_FILE and TLS_KEY_FILE: set both or neither');
  }
  if (env['AUTH_TOKEN_KEY'] && env['AUTH_JWKS_URL']) {
    problems.push('AUTH_TOKEN_KEY and AUTH_JWKS_URL: set one, not both');
  }
  if (out['AUTH_TOKEN_KEY'] === undefined && out['AUTH_JWKS_URL'] === undefined) {
    if (!env['HOST']) out['HOST'] = '127.0.0.1';
    const host = String(out['HOST']);
    if (env['NODE_ENV'] === 'production') {
      problems.push(
        'AUTH_TOKEN_KEY: set it (or AUTH_TOKEN_KEY_FILE, or AUTH_JWKS_URL); with NODE_ENV=production no development key is generated',
      );
    } else if (!isLoopback(host)) {
      problems.push(
        `AUTH_TOKEN_KEY: set it (or AUTH_TOKEN_KEY_FILE, or AUTH_JWKS_URL) to listen on HOST=${host}; a development key is generated only on a loopback HOST (127.0.0.1, ::1, localhost)`,
      );
    }
  }
  if (problems.length > 0) {
    throw new ConfigError(`Invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  return out as Config;
}

/** The configuration table of docs/configuration.md (markdown), one row per setting. */
export function configTable(): string {
  const rows = Object.entries(SETTINGS).map(([name, s]: [string, Setting<z.ZodType>]) => {
    const fallback = s.default === undefined ? 'unset' : `\`${s.default}\``;
    const file = s.secret ? ` Also \`${name}_FILE\`.` : '';
    return `| \`${name}\` | ${fallback} | ${s.description.replaceAll('|', '\\|')}${file} |`;
  });
  return `${['| Variable | Default | What it does |', '| --- | --- | --- |', ...rows].join('\n')}\n`;
}
