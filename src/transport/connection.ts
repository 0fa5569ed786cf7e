import { randomUUID } from 'node:crypto';
import type { Viewer } from '../auth/index.ts';
import type { CloseCode } from '../close-codes.ts';
import type { Connection, Transport } from '../domain/connections.ts';

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
    closeCode: null as CloseCode | null,
    close(code: CloseCode, reason: string) {
      if (controller.signal.aborted) return;
      // Before the abort, whose listeners (the registry) read it.
      connection.closeCode = code;
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
