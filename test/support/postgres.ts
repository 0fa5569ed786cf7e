import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * The Postgres server tests create their databases on: TEST_POSTGRES_URL, default the local
 * server with trust auth (`postgresql://postgres@127.0.0.1:5432/postgres`).
 */
const { TEST_POSTGRES_URL: fromEnv } = process.env;
export const TEST_POSTGRES_URL = fromEnv ?? 'postgresql://postgres@127.0.0.1:5432/postgres';

/** A fresh database for one test. */
export interface TestDatabase {
  /** Connection URL of the new database. */
  url: string;
  /** Drops the database, closing any connection still open on it. */
  drop(): Promise<void>;
}

/**
 * Creates an empty, uniquely named database on {@link TEST_POSTGRES_URL}. Throws a clear error
 * when the server cannot be reached: database tests fail, they are never skipped.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `switchboard_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  await admin(`CREATE DATABASE "${name}"`);
  const url = new URL(TEST_POSTGRES_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => admin(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`),
  };
}

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({
    connectionString: TEST_POSTGRES_URL,
    connectionTimeoutMillis: 5_000,
  });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(
      `Postgres is not reachable at ${TEST_POSTGRES_URL} (set TEST_POSTGRES_URL to another server). ` +
        'The database tests need a real Postgres; on the dev machines start it with ' +
        '`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`. ' +
        `Cause: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}
