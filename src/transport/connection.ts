import { randomUUID } from 'node:crypto';
import type { Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import type { Connection, ConnectionRegistry, Transport } from '../domain/connections.ts';

/** Listeners of slow-consumer closes in this process (one per app; see countSlowConsumers). */
const slowConsumerListeners = new Set<(connection: Connection) => void>();

/**
 * Calls `count` with the transport of every connection of `registry` that is closed as a slow
 * consumer (4499), for `switchboard_slow_consumers_total`. Several apps may share a process
 * (tests), so each counts only its own registry's connections. Returns the stop function.
 */
export function countSlowConsumers(
  registry: ConnectionRegistry,
  count: (transport: Transport) => void,
): () => void {
  const listener = (connection: Connection) => {
    // Rare (a client too slow to read), so a scan of the registry is affordable here.
    const userId = connection.viewer?.userId;
    const candidates = userId === undefined ? registry.all() : registry.forUser(userId);
    for (const candidate of candidates) {
      if (candidate === connection) return count(connection.transport);
    }
  };
  slowConsumerListeners.add(listener);
  return () => slowConsumerListeners.delete(listener);
}

/**
 * A Connection whose `close` runs `onClose` once and aborts its signal, so everything bound to
 * it (domain streams, the registry entry, the expiry timer) ends together.
 */
export function createConnection(
  transport: Transport,
  viewer: Viewer | null,
  onClose: (code: CloseCode, reason: string) => void,
): Connection & { readonly controller: AbortController } {
  const controller = new AbortController();
  const connection = {
    id: randomUUID(),
    transport,
    viewer,
    controller,
    signal: controller.signal,
    close(code: CloseCode, reason: string) {
      if (controller.signal.aborted) return;
      // Before the abort, which takes the connection out of its registry.
      if (code === CloseCode.SlowConsumer)
        for (const notify of slowConsumerListeners) notify(connection);
      controller.abort();
      onClose(code, reason);
    },
  };
  return connection;
}

/**
 * Closes the connection when the viewer's token expires (enforced `exp` for live connections).
 * Timers beyond setTimeout's 24.8-day range are clamped; such tokens are re-checked then.
 */
export function closeOnExpiry(connection: Connection, close: () => void): void {
  const expiresAt = connection.viewer?.expiresAt;
  if (expiresAt == null) return;
  const arm = () => {
    const left = expiresAt - Date.now();
    if (left <= 0) return close();
    const timer = setTimeout(arm, Math.min(left, 2 ** 31 - 1));
    timer.unref();
    connection.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  };
  arm();
}
