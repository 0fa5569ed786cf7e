import { fork } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Logger } from '../logger.ts';

/** Options of {@link migrateInChildProcess}. */
export interface MigrateInChildOptions {
  /** Postgres connection URL. */
  url: string;
  /** Prisma migrations folder (resolved from the working directory). */
  migrationsDir: string;
  logger: Logger;
}

/** What the migration child sends back over IPC. */
export type ChildMessage =
  | { type: 'log'; line: string }
  | { type: 'done'; applied: string[] }
  | { type: 'failed'; message: string };

/** What the parent sends the child: the one job it has. */
export interface ChildRequest {
  url: string;
  migrationsDir: string;
  level: string;
}

/**
 * Names of the migrations in `migrationsDir` the database has not finished yet, read from
 * `_prisma_migrations` (all of them when the table does not exist). Only a hint for skipping
 * the schema engine: the engine itself decides what to apply, under the migration lock.
 */
export async function pendingMigrations(url: string, migrationsDir: string): Promise<string[]> {
  const entries = await readdir(resolve(migrationsDir), { withFileTypes: true });
  const names = entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name);
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => {});
  await client.connect();
  try {
    const { rows } = await client.query<{ migration_name: string }>(
      `SELECT migration_name FROM _prisma_migrations
        WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL`,
    );
    const done = new Set(rows.map((row) => row.migration_name));
    return names.filter((name) => !done.has(name));
  } catch (error) {
    // 42P01: undefined_table, a database that was never migrated.
    if ((error as { code?: unknown }).code === '42P01') return names;
    throw error;
  } finally {
    await client.end().catch(() => {});
  }
}

const CHILD = fileURLToPath(
  new URL(`./migrate-child${extensionOf(import.meta.url)}`, import.meta.url),
);

function extensionOf(url: string): string {
  return url.endsWith('.ts') ? '.ts' : '.js';
}

const LEVELS: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/** Re-logs a pino line of the child through this process's logger. */
function relog(logger: Logger, line: string): void {
  try {
    const {
      level,
      msg,
      time: _t,
      pid: _p,
      hostname: _h,
      service: _s,
      ...rest
    } = JSON.parse(line) as Record<string, unknown>;
    const method = LEVELS[typeof level === 'number' ? level : 30] ?? 'info';
    logger[method](rest, typeof msg === 'string' ? msg : '');
  } catch {
    logger.info(line);
  }
}

/**
 * Applies pending migrations like {@link applyMigrations}, but in a short-lived child process, so
 * the schema engine (a WebAssembly module of several MB, compiled, with its own memory) never
 * lives in the server: an engine once instantiated stays for the life of its process. When the
 * database already has every migration of the folder, no child is started at all.
 * Returns the names applied.
 */
export async function migrateInChildProcess(options: MigrateInChildOptions): Promise<string[]> {
  const { logger } = options;
  const pending = await pendingMigrations(options.url, options.migrationsDir);
  if (pending.length === 0) {
    logger.debug('database up to date');
    return [];
  }
  // Running from TypeScript sources (development, tests): the child needs the same loader.
  const execArgv = CHILD.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const child = fork(CHILD, [], {
    execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'json',
  });
  const request: ChildRequest = {
    url: options.url,
    migrationsDir: resolve(options.migrationsDir),
    level: logger.level,
  };
  return new Promise<string[]>((done, fail) => {
    let result: ChildMessage | undefined;
    child.on('message', (message: ChildMessage) => {
      if (message.type === 'log') relog(logger, message.line);
      else result = message;
    });
    child.once('error', fail);
    child.once('exit', (code, signal) => {
      if (result?.type === 'done') done(result.applied);
      else if (result?.type === 'failed') fail(new Error(result.message));
      else fail(new Error(`the migration process exited (${signal ?? code}) without a result`));
    });
    child.send(request);
  });
}
