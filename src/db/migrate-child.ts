/**
 * Entry of the migration child process started by `migrateInChildProcess`: receives one
 * {@link ChildRequest} over IPC, applies the migrations, sends its log lines and the result back
 * and exits (the schema engine's memory goes with it).
 */
import { pino } from 'pino';
import { applyMigrations } from './migrate.ts';
import type { ChildMessage, ChildRequest } from './migrate-process.ts';

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, undefined, () => resolve());
  });
}

process.once('message', (request: ChildRequest) => {
  const pending: Promise<void>[] = [];
  const logger = pino(
    { level: request.level },
    { write: (line: string) => void pending.push(send({ type: 'log', line: line.trimEnd() })) },
  );
  applyMigrations({ url: request.url, migrationsDir: request.migrationsDir, logger })
    .then(
      (applied): ChildMessage => ({ type: 'done', applied }),
      (error: unknown): ChildMessage => ({
        type: 'failed',
        message: error instanceof Error ? error.message : String(error),
      }),
    )
    .then(async (result) => {
      await Promise.all(pending);
      await send(result);
      process.disconnect();
    });
});
