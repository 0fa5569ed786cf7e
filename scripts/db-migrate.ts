/**
 * Applies pending Prisma migrations (prisma/migrations) like `prisma migrate deploy`, through the
 * WebAssembly schema engine (no native engine download, no Node flag).
 *
 *   npm run db:migrate
 *
 * Target: DATABASE_URL, or the embedded database in DATA_DIR (default ./.data, PGlite folder
 * <DATA_DIR>/pg) when DATABASE_URL is unset. LOG_LEVEL (default warn) sets the JSON log level.
 * Prints the migrations applied; exit code 1 on failure.
 */
import {
  applyMigrations,
  embeddedDataDir,
  redactUrl,
  startEmbeddedPostgres,
} from '../src/db/index.ts';
import { createLogger } from '../src/logger.ts';

async function main(): Promise<void> {
  const { LOG_LEVEL, DATABASE_URL, DATA_DIR } = process.env;
  const logger = createLogger(LOG_LEVEL ?? 'warn', process.stderr);
  const databaseUrl = DATABASE_URL || undefined;
  const dataDir = embeddedDataDir(DATA_DIR || './.data');
  const embedded =
    databaseUrl === undefined ? await startEmbeddedPostgres({ dataDir, logger }) : undefined;
  const target = embedded ? `embedded database ${dataDir}` : redactUrl(databaseUrl ?? '');
  try {
    const started = performance.now();
    const applied = await applyMigrations({ url: embedded?.url ?? databaseUrl ?? '', logger });
    const ms = Math.round(performance.now() - started);
    if (applied.length === 0) {
      console.log(`${target}: up to date (${ms} ms)`);
    } else {
      console.log(`${target}: applied ${applied.length} migration(s) in ${ms} ms`);
      for (const name of applied) console.log(`  ${name}`);
    }
  } finally {
    await embedded?.close();
  }
}

main().catch((error: unknown) => {
  console.error('db:migrate failed:', error);
  process.exitCode = 1;
});
