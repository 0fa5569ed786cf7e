import type { Connection } from '../../src/net/connection.ts';
import { WAIT_MS } from './clients.ts';

/** Resolves when the server-side connection closes, or rejects after the bound. */
export function connectionClosed(connection: Connection, timeoutMs = WAIT_MS): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('connection still open')), timeoutMs);
    connection.hold({
      end: () => {
        clearTimeout(timer);
        resolve();
      },
    });
  });
}
