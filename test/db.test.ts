import { execFile } from 'node:child_process';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { applyMigrations, createMigration, openDatabase } from '../src/db/index.ts';
import { createLogger } from '../src/logger.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

const { LOG_LEVEL } = process.env;
const logger = createLogger(LOG_LEVEL ?? 'silent');
const root = join(import.meta.dirname, '..');
const migrationsDir = join(root, 'prisma/migrations');

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  await Promise.allSettled(cleanups.splice(0).map((cleanup) => cleanup()));
});

async function freshDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  cleanups.push(db.drop);
  return db;
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'switchboard-db-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Names of the migration folders in the repository, in order. */
async function repositoryMigrations(): Promise<string[]> {
  const entries = await readdir(migrationsDir, { withFileTypes: true });
  return entries
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

describe('applyMigrations (Postgres)', () => {
  it('applies every migration once, then nothing', async () => {
    const { url } = await freshDatabase();
    const expected = await repositoryMigrations();
    expect(expected.length).toBeGreaterThan(0);

    expect(await applyMigrations({ url, migrationsDir, logger })).toEqual(expected);
    expect(await applyMigrations({ url, migrationsDir, logger })).toEqual([]);

    const rows = await query<{ migration_name: string }>(
      url,
      'SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL ORDER BY migration_name',
    );
    expect(rows.map((row) => row.migration_name)).toEqual(expected);
  });

  it('lets concurrent runs (two sessions and another process) apply each migration once', async () => {
    const { url } = await freshDatabase();
    const expected = await repositoryMigrations();
    // Another spelling of the same database: skips the in-process queue, so only the
    // advisory lock keeps the two runs apart, as between two server processes.
    const sameDatabase = new URL(url);
    sameDatabase.searchParams.set('application_name', 'second-runner');

    const child = promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', 'scripts/db-migrate.ts'],
      { cwd: root, timeout: 60_000, env: { ...process.env, DATABASE_URL: url, LOG_LEVEL: 'warn' } },
    );
    const results = await Promise.all([
      applyMigrations({ url, migrationsDir, logger }),
      applyMigrations({ url: sameDatabase.toString(), migrationsDir, logger }),
    ]);
    const { stdout } = await child;

    const appliedInProcess = results.flat();
    const appliedByChild = expected.filter((name) => stdout.includes(name));
    expect([...appliedInProcess, ...appliedByChild].sort()).toEqual(expected);
    const rows = await query<{ migration_name: string; applied_steps_count: number }>(
      url,
      'SELECT migration_name, applied_steps_count FROM _prisma_migrations ORDER BY migration_name',
    );
    expect(rows.map((row) => row.migration_name)).toEqual(expected);
  }, 90_000);

  it('applies scripts with semicolons inside function bodies', async () => {
    const { url } = await freshDatabase();
    const dir = await tempDir();
    await cp(migrationsDir, dir, { recursive: true });
    const folder = join(dir, '99990101000000_trigger');
    await cp(join(dir, (await repositoryMigrations())[0] ?? ''), folder, { recursive: true });
    await writeFile(
      join(folder, 'migration.sql'),
      `-- a comment; with a semicolon
CREATE FUNCTION users_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW."group" := coalesce(NEW."group", 'default;group');
  RETURN NEW;
END
$$;
CREATE TRIGGER users_touch BEFORE INSERT ON "users" FOR EACH ROW EXECUTE FUNCTION users_touch();
`,
    );
    const applied = await applyMigrations({ url, migrationsDir: dir, logger });
    expect(applied.at(-1)).toBe('99990101000000_trigger');
    const [row] = await query<{ group: string }>(
      url,
      `INSERT INTO users (id, updated_at) VALUES ('t', now()) RETURNING "group"`,
    );
    expect(row?.group).toBe('default;group');
  });
});

describe('openDatabase', () => {
  it('connects to Postgres, migrates, and reads and writes users', async () => {
    const { url } = await freshDatabase();
    const db = await openDatabase({ url, dataDir: await tempDir(), logger });
    try {
      expect(db.embedded).toBe(false);
      await db.ping();
      const created = await db.prisma.user.create({ data: { id: 'user-1', group: 'blue' } });
      expect(created.createdAt).toBeInstanceOf(Date);
      const found = await db.prisma.user.findUnique({ where: { id: 'user-1' } });
      expect(found).toMatchObject({ id: 'user-1', group: 'blue' });
    } finally {
      await db.close();
    }
    await db.close();
    await expect(db.ping()).rejects.toThrow();
  });

  it('fails clearly when Postgres is unreachable', async () => {
    await expect(
      openDatabase({
        url: 'postgresql://postgres:secret@127.0.0.1:1/nowhere',
        dataDir: await tempDir(),
        logger,
      }),
    ).rejects.toThrow();
  });

  it('keeps data in the embedded database across restarts', async () => {
    const dataDir = await tempDir();
    const first = await openDatabase({ dataDir, logger });
    try {
      expect(first.embedded).toBe(true);
      await first.ping();
      const migrations = await first.prisma.$queryRaw<{ migration_name: string }[]>`
        SELECT migration_name FROM _prisma_migrations ORDER BY migration_name`;
      expect(migrations.map((row) => row.migration_name)).toEqual(await repositoryMigrations());
      await first.prisma.user.create({ data: { id: 'kept', group: 'g' } });
      // One process per data folder: a second open fails instead of corrupting it.
      await expect(openDatabase({ dataDir, logger })).rejects.toThrow(/in use/);
    } finally {
      await first.close();
    }

    const second = await openDatabase({ dataDir, logger });
    try {
      expect(await second.prisma.user.findUnique({ where: { id: 'kept' } })).toMatchObject({
        id: 'kept',
        group: 'g',
      });
      const count = await second.prisma.$queryRaw<{ n: number }[]>`
        SELECT count(*)::int AS n FROM _prisma_migrations`;
      expect(count[0]?.n).toBe((await repositoryMigrations()).length);
    } finally {
      await second.close();
    }
  }, 60_000);
});

describe('createMigration', () => {
  async function workspace(): Promise<{ migrations: string; schemaPath: string }> {
    const dir = await tempDir();
    const migrations = join(dir, 'migrations');
    await cp(migrationsDir, migrations, { recursive: true });
    const schemaPath = join(dir, 'schema.prisma');
    await cp(join(root, 'prisma/schema.prisma'), schemaPath);
    return { migrations, schemaPath };
  }

  const meetingModel = `
model MigrationProbe {
  id   Int    @id @default(autoincrement())
  name String
  @@map("migration_probes")
}
`;

  it('writes nothing when the schema matches the migrations', async () => {
    const { migrations, schemaPath } = await workspace();
    const before = await readdir(migrations);
    const result = await createMigration({
      name: 'nothing',
      migrationsDir: migrations,
      schemaPath,
      logger,
    });
    expect(result).toEqual({ created: false });
    expect(await readdir(migrations)).toEqual(before);
  });

  it('writes the SQL for a schema change (embedded scratch database), then applies it', async () => {
    const { migrations, schemaPath } = await workspace();
    await writeFile(schemaPath, (await readFile(schemaPath, 'utf8')) + meetingModel);
    const result = await createMigration({
      name: 'Add migration probes',
      migrationsDir: migrations,
      schemaPath,
      logger,
      now: new Date('2030-01-02T03:04:05Z'),
    });
    if (!result.created) throw new Error('expected a migration');
    expect(result.name).toBe('20300102030405_add_migration_probes');
    expect(result.sql).toContain('CREATE TABLE "migration_probes"');
    expect(result.sql).not.toContain('"users"');
    expect(await readFile(join(result.path, 'migration.sql'), 'utf8')).toBe(result.sql);

    const again = await createMigration({
      name: 'again',
      migrationsDir: migrations,
      schemaPath,
      logger,
    });
    expect(again).toEqual({ created: false });

    const { url } = await freshDatabase();
    const applied = await applyMigrations({ url, migrationsDir: migrations, logger });
    expect(applied.at(-1)).toBe(result.name);
  }, 60_000);

  it('can replay migrations on a temporary database of a real server', async () => {
    const { migrations, schemaPath } = await workspace();
    await writeFile(schemaPath, (await readFile(schemaPath, 'utf8')) + meetingModel);
    const { url } = await freshDatabase();
    const result = await createMigration({
      name: 'migration probes',
      url,
      migrationsDir: migrations,
      schemaPath,
      logger,
    });
    expect(result.created && result.sql).toContain('CREATE TABLE "migration_probes"');
    const leftovers = await query<{ datname: string }>(
      url,
      "SELECT datname FROM pg_database WHERE datname LIKE 'switchboard_scratch_%'",
    );
    expect(leftovers).toEqual([]);
  });
});
