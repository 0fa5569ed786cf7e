/**
 * Writes a new migration from the changes in prisma/schema.prisma, like
 * `prisma migrate dev --create-only`:
 *
 *   npm run db:migration -- <name>
 *
 * The existing migrations are replayed on a throwaway in-memory PGlite (or, when
 * SHADOW_DATABASE_URL is set, on a temporary database created and dropped on that server), the
 * result is compared with schema.prisma, and the SQL is written to
 * prisma/migrations/<timestamp>_<name>/migration.sql. Prints "no changes" and writes nothing when
 * the schema matches the migrations. Review the SQL, then `npm run db:migrate` and
 * `npm run generate`. Exit code 2 on bad arguments, 1 on failure.
 */
import { relative } from 'node:path';
import { createMigration } from '../src/db/index.ts';
import { createLogger } from '../src/logger.ts';

const USAGE = 'usage: npm run db:migration -- <name>   (e.g. add_meetings)';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const name = args[0];
  if (args.length !== 1 || name === undefined || name.startsWith('-')) {
    console.error(USAGE);
    process.exitCode = 2;
    return;
  }
  const { LOG_LEVEL, SHADOW_DATABASE_URL } = process.env;
  const logger = createLogger(LOG_LEVEL ?? 'warn', process.stderr);
  const result = await createMigration({
    name,
    url: SHADOW_DATABASE_URL || undefined,
    logger,
  });
  if (!result.created) {
    console.log('no changes: prisma/schema.prisma matches the migrations');
    return;
  }
  console.log(`created ${relative(process.cwd(), result.path)}/migration.sql:\n`);
  console.log(result.sql);
}

main().catch((error: unknown) => {
  console.error('db:migration failed:', error);
  process.exitCode = 1;
});
