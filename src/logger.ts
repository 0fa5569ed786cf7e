import { type Logger, pino } from 'pino';

export type { Logger };

/**
 * Paths whose values never reach a log line: tokens, secrets and the headers that carry them.
 */
const REDACT = [
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'req.headers.authentication',
  'req.headers.cookie',
  'headers.authorization',
  'headers.authentication',
  'connectionParams',
  '*.connectionParams',
  'secret',
  '*.secret',
];

/** Structured JSON logs on stdout (pino). `level` is LOG_LEVEL. */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    { level, redact: { paths: REDACT, censor: '[redacted]' }, base: { service: 'switchboard' } },
    destination ?? process.stdout,
  );
}
