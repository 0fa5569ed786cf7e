import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import type { Logger } from '../logger.ts';

/** A running embedded Postgres, reachable by any Postgres client at `url`. */
export interface EmbeddedPostgres {
  /** `postgresql://postgres@127.0.0.1:<port>/postgres` (no password: loopback only). */
  url: string;
  /** Stops the socket server, then closes the database (flushing it to `dataDir`). */
  close(): Promise<void>;
}

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** Data folder, created when missing. Undefined: an in-memory database, gone on close. */
  dataDir?: string | undefined;
  /** Concurrent client connections the socket server accepts. Default 8. */
  maxConnections?: number;
  logger?: Logger;
}

/**
 * Starts PGlite (Postgres compiled to WebAssembly) on `dataDir` and serves it over the Postgres
 * wire protocol on 127.0.0.1 with a free port, so `pg` and `@prisma/adapter-pg` use it exactly
 * like a real server. All connections share one PGlite backend: queries run one at a time.
 *
 * A data folder may be used by one process only; a `<dataDir>.lock` file holding the owner's pid
 * makes a second process fail with a clear error instead of corrupting the data.
 */
export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions = {},
): Promise<EmbeddedPostgres> {
  const dataDir = options.dataDir === undefined ? undefined : resolve(options.dataDir);
  const releaseLock = dataDir === undefined ? async () => {} : await lockDataDir(dataDir);
  let db: PGlite | undefined;
  try {
    if (dataDir !== undefined) await mkdir(dataDir, { recursive: true });
    db = await PGlite.create(dataDir === undefined ? {} : { dataDir });
    // Port 0: the OS picks a free port; the server reads it back once listening.
    const server = new PGLiteSocketServer({
      db,
      host: '127.0.0.1',
      port: 0,
      maxConnections: options.maxConnections ?? 8,
    });
    await server.start();
    const url = `postgresql://postgres@${server.getServerConn()}/postgres`;
    options.logger?.debug({ dataDir: dataDir ?? 'memory', url }, 'embedded Postgres listening');
    const opened = db;
    let closing: Promise<void> | undefined;
    return {
      url,
      close() {
        closing ??= (async () => {
          try {
            await server.stop();
          } finally {
            try {
              await opened.close();
            } finally {
              await releaseLock();
            }
          }
        })();
        return closing;
      },
    };
  } catch (error) {
    await db?.close().catch(() => {});
    await releaseLock();
    throw error;
  }
}

/** Takes `<dataDir>.lock` for this process; returns its release. */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const lockPath = `${dataDir}.lock`;
  await mkdir(dirname(lockPath), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(lockPath, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(lockPath, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(owner) && isAlive(owner)) {
        throw new Error(
          `The embedded database in ${dataDir} is in use by process ${owner}` +
            `${owner === process.pid ? ' (this process)' : ''}. PGlite serves one process only: ` +
            'stop the other one, use another DATA_DIR, or set DATABASE_URL to share a real Postgres.',
        );
      }
      // The owner is gone (crash, kill -9): the lock is stale.
      await rm(lockPath, { force: true });
    }
  }
  throw new Error(`Could not lock ${lockPath}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
