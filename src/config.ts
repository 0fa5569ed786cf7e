import { readFileSync } from 'node:fs';
import { z } from 'zod';

const port = z.coerce.number().int().min(0).max(65535);
const positiveInt = z.coerce.number().int().positive();
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
const url = (protocols: string[]) =>
  z
    .string()
    .url()
    .refine((v) => protocols.some((p) => v.startsWith(`${p}:`)), {
      message: `must start with ${protocols.map((p) => `${p}:`).join(' or ')}`,
    });

interface Setting<T extends z.ZodType> {
  /** One line for the README's table and for error messages. */
  description: string;
  schema: T;
  /** Used when the variable is unset or empty; undefined means "not set". */
  default?: string;
  /** Also read from `<NAME>_FILE` (a path whose trimmed content is the value). */
  secret?: boolean;
}

const setting = <S extends Setting<z.ZodType>>(s: S) => s;

/**
 * Every environment variable the server reads, its default and what it does. The README's
 * configuration table is checked against this list by a test.
 */
export const SETTINGS = {
  PORT: setting({ description: 'TCP port of the HTTP server.', schema: port, default: '4000' }),
  HOST: setting({ description: 'Interface to listen on.', schema: z.string(), default: '0.0.0.0' }),
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
  REDIS_PREFIX: setting({
    description: 'Prefix of every Redis channel and key, so several deployments can share a Redis.',
    schema: z.string().min(1),
    default: 'switchboard:',
  }),
  AUTH_TOKEN_KEY: setting({
    description:
      'HS256 key for JWTs. Unset (and no AUTH_JWKS_URL): a key is generated at start-up and sample tokens are logged.',
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
  MESSAGE_MAX_BYTES: setting({
    description: 'Largest notify message (serialized JSON) a client may publish.',
    schema: positiveInt,
    default: '65536',
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
    description: 'Interval of keep-alive comments on SSE streams.',
    schema: positiveInt,
    default: '12000',
  }),
  INSTANCE_TTL_MS: setting({
    description:
      'How long the shared entries of an instance (present users, open connections) outlive it when it dies.',
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
  if (problems.length > 0) {
    throw new ConfigError(`Invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  return out as Config;
}
