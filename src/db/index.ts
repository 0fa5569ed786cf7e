import { join, resolve } from 'node:path';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import type { Logger } from '../logger.ts';
import { type EmbeddedPostgres, startEmbeddedPostgres } from './embedded.ts';
import { PrismaClient } from './generated/prisma/client.ts';
import { DEFAULT_MIGRATIONS_DIR } from './migrate.ts';
import { migrateInChildProcess } from './migrate-process.ts';
import { redactUrl } from './url.ts';

export { type EmbeddedPostgres, startEmbeddedPostgres } from './embedded.ts';
// The generated client (PrismaClient, the Prisma namespace, model and enum types): the rest of
// the code imports them from here only.
export * from './generated/prisma/client.ts';
export {
  type ApplyMigrationsOptions,
  applyMigrations,
  type CreateMigrationOptions,
  type CreateMigrationResult,
  createMigration,
} from './migrate.ts';
export { redactUrl } from './url.ts';

/** An open database: the Prisma Client plus what the server needs around it. */
export interface Database {
  prisma: PrismaClient;
  /** True when this is the embedded PGlite (no DATABASE_URL). */
  embedded: boolean;
  /** Resolves when the database answers `SELECT 1`; throws when it does not within the timeout. */
  ping(timeoutMs?: number): Promise<void>;
  /** Disconnects the client, ends the pool and stops the embedded database if any. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link openDatabase}. */
export interface OpenDatabaseOptions {
  /** Postgres connection URL (DATABASE_URL). Undefined: embedded PGlite in `dataDir`. */
  url?: string | undefined;
  /** The server's data folder (DATA_DIR); without `url` the embedded database lives in `<dataDir>/pg`. */
  dataDir: string;
  /** Connections in the pool. Default 10, or 4 for the embedded database (max 6). */
  poolSize?: number | undefined;
  logger: Logger;
  /** Apply pending migrations before returning. Default true. */
  migrate?: boolean | undefined;
  /** Prisma migrations folder. Default `prisma/migrations` (from the working directory). */
  migrationsDir?: string | undefined;
}

/** The PGlite folder inside the server's data folder: `<dataDir>/pg`, absolute. */
export function embeddedDataDir(dataDir: string): string {
  return join(resolve(dataDir), 'pg');
}

const DEFAULT_PING_TIMEOUT_MS = 2_000;
// The PGlite socket server accepts 8 connections; keep room for migrations and a ping.
const EMBEDDED_MAX_POOL = 6;

/**
 * Opens the database: the embedded PGlite in `dataDir` when `url` is undefined (served on a
 * loopback port so both cases go through `pg` and `@prisma/adapter-pg`), applies pending
 * migrations unless `migrate` is false, and builds the Prisma Client.
 */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  const { logger } = options;
  const started = performance.now();
  let embedded: EmbeddedPostgres | undefined;
  let url = options.url;
  if (url === undefined) {
    const dataDir = embeddedDataDir(options.dataDir);
    embedded = await startEmbeddedPostgres({ dataDir, logger });
    url = embedded.url;
    logger.info({ kind: 'embedded', dataDir }, 'database: embedded PGlite (DATABASE_URL unset)');
  } else {
    logger.info({ kind: 'postgres', url: redactUrl(url) }, 'database: Postgres');
  }

  let pool: pg.Pool | undefined;
  try {
    if (options.migrate ?? true) {
      // In a child process: the schema engine would otherwise stay in this one for good.
      await migrateInChildProcess({
        url,
        migrationsDir: options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR,
        logger,
      });
    }
    const poolSize = embedded
      ? Math.min(options.poolSize ?? 4, EMBEDDED_MAX_POOL)
      : (options.poolSize ?? 10);
    pool = new pg.Pool({
      connectionString: url,
      max: poolSize,
      connectionTimeoutMillis: 10_000,
      idleTimeoutMillis: 30_000,
    });
    // An idle connection dropped by the server emits 'error' on the pool; unhandled, it would
    // crash the process. The pool replaces the connection on next use.
    pool.on('error', (error) => logger.warn({ err: error }, 'idle database connection failed'));
    const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
    const database = createDatabase(prisma, pool, embedded);
    await database.ping(10_000);
    logger.info({ ms: Math.round(performance.now() - started), poolSize }, 'database ready');
    return database;
  } catch (error) {
    await pool?.end().catch(() => {});
    await embedded?.close().catch(() => {});
    throw error;
  }
}

function createDatabase(
  prisma: PrismaClient,
  pool: pg.Pool,
  embedded: EmbeddedPostgres | undefined,
): Database {
  let closing: Promise<void> | undefined;
  return {
    prisma,
    embedded: embedded !== undefined,
    async ping(timeoutMs = DEFAULT_PING_TIMEOUT_MS) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`database did not answer within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        // Straight on the pool: a health check should not depend on the ORM's query pipeline.
        await Promise.race([pool.query('SELECT 1'), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    close() {
      closing ??= (async () => {
        try {
          await prisma.$disconnect();
        } finally {
          try {
            await pool.end();
          } finally {
            await embedded?.close();
          }
        }
      })();
      return closing;
    },
  };
}
