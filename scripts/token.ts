/**
 * Mints a Switchboard token with the configured HS256 key, so curl and GraphiQL work at once.
 *
 *   npm run token -- --sub 5 [--group g] [--service] [--ttl 1h]
 *
 * The key comes from AUTH_TOKEN_KEY or AUTH_TOKEN_KEY_FILE (content trimmed); AUTH_ISSUER and
 * AUTH_AUDIENCE are added as `iss` / `aud` when set. Prints the token alone on stdout.
 * Exit code 2 on bad arguments or a missing key.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createAuthenticator } from '../src/auth/index.ts';
import { createLogger } from '../src/logger.ts';

const USAGE =
  'usage: npm run token -- --sub <userId> [--group <group>] [--service] [--ttl <3600|30s|15m|1h|7d>]';

/** A usage or configuration problem: reported without a stack trace, exit code 2. */
class UsageError extends Error {}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** Parses "3600", "30s", "15m", "1h" or "7d" into seconds. */
function parseTtl(text: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(text.trim());
  const amount = match?.[1];
  if (match === null || amount === undefined) {
    throw new UsageError(`invalid --ttl "${text}": use seconds or 30s / 15m / 1h / 7d`);
  }
  const seconds = Number(amount) * (UNIT_SECONDS[match[2] || 's'] ?? 1);
  if (seconds <= 0) throw new UsageError('--ttl must be greater than zero');
  return seconds;
}

function readKey(env: NodeJS.ProcessEnv): string {
  const { AUTH_TOKEN_KEY: inline, AUTH_TOKEN_KEY_FILE: file } = env;
  if (inline && file) {
    throw new UsageError('set only one of AUTH_TOKEN_KEY and AUTH_TOKEN_KEY_FILE');
  }
  if (file) {
    let content: string;
    try {
      content = readFileSync(file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new UsageError(`cannot read AUTH_TOKEN_KEY_FILE ${file} (${code})`);
    }
    const key = content.trim();
    if (key === '') throw new UsageError(`AUTH_TOKEN_KEY_FILE ${file} is empty`);
    return key;
  }
  if (inline) return inline;
  throw new UsageError(
    'no signing key: set AUTH_TOKEN_KEY (the HS256 secret) or AUTH_TOKEN_KEY_FILE (a file holding it), the same as the server uses',
  );
}

async function main(argv: string[]): Promise<void> {
  let values: { sub?: string; group?: string; service?: boolean; ttl?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        sub: { type: 'string' },
        group: { type: 'string' },
        service: { type: 'boolean' },
        ttl: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (values.sub === undefined || values.sub.trim() === '')
    throw new UsageError('--sub is required');
  const ttlSeconds = values.ttl === undefined ? 3600 : parseTtl(values.ttl);
  const tokenKey = readKey(process.env);

  const { AUTH_ISSUER: issuer, AUTH_AUDIENCE: audience } = process.env;
  const authenticator = createAuthenticator({
    tokenKey,
    issuer: issuer || undefined,
    audience: audience || undefined,
    // Warnings (e.g. a short key) go to stderr so stdout stays the token alone.
    logger: createLogger('warn', process.stderr),
  });
  const token = await authenticator.sign({
    sub: values.sub.trim(),
    group: values.group,
    service: values.service === true,
    ttlSeconds,
  });
  process.stdout.write(`${token}\n`);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof UsageError) {
    process.stderr.write(`token: ${error.message}\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  process.stderr.write(`token: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
