import WebSocket from 'ws';
import { ResultQueue, WAIT_MS } from './clients.ts';

/** A raw WebSocket with a queue of its text frames and its close, for protocol-level tests. */
export interface RawSocket {
  socket: WebSocket;
  /** Text frames received, parsed as JSON when they are JSON. */
  messages: ResultQueue<unknown>;
  /** Resolves with the close code and reason (bounded by `timeoutMs`). */
  closed(timeoutMs?: number): Promise<{ code: number; reason: string }>;
  /** Sends a value as JSON, or a string / buffer as it is. */
  send(data: unknown): void;
}

/**
 * Opens a WebSocket (default subprotocol graphql-transport-ws) and resolves once it is open;
 * rejects when the upgrade is refused (the error names the status).
 */
export function openRaw(
  url: string,
  options: { protocol?: string | null; headers?: Record<string, string>; autoPong?: boolean } = {},
): Promise<RawSocket> {
  const protocol = options.protocol === undefined ? 'graphql-transport-ws' : options.protocol;
  const socket = new WebSocket(url, protocol ? [protocol] : [], {
    headers: options.headers ?? {},
    autoPong: options.autoPong ?? true,
  });
  const messages = new ResultQueue<unknown>();
  let close: { code: number; reason: string } | null = null;
  const waiters: ((value: { code: number; reason: string }) => void)[] = [];
  socket.on('message', (data, isBinary) => {
    const text = String(data);
    if (isBinary) return messages.push(data);
    try {
      messages.push(JSON.parse(text));
    } catch {
      messages.push(text);
    }
  });
  socket.on('close', (code, reason) => {
    close = { code, reason: String(reason) };
    for (const waiter of waiters.splice(0)) waiter(close);
    messages.end();
  });
  const raw: RawSocket = {
    socket,
    messages,
    closed: (timeoutMs = WAIT_MS) =>
      close
        ? Promise.resolve(close)
        : new Promise((resolve, reject) => {
            const timer = setTimeout(
              () => reject(new Error(`socket not closed within ${timeoutMs} ms`)),
              timeoutMs,
            );
            waiters.push((value) => {
              clearTimeout(timer);
              resolve(value);
            });
          }),
    send: (data) =>
      socket.send(typeof data === 'string' || Buffer.isBuffer(data) ? data : JSON.stringify(data)),
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new Error('socket did not open'));
    }, WAIT_MS);
    socket.once('open', () => {
      clearTimeout(timer);
      resolve(raw);
    });
    socket.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      socket.terminate();
      reject(new Error(`upgrade refused: ${res.statusCode}`));
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/** Opens a graphql-transport-ws socket and completes connection_init (ack awaited). */
export async function openAcked(url: string, token?: string): Promise<RawSocket> {
  const raw = await openRaw(url);
  raw.send({
    type: 'connection_init',
    payload: token ? { authorization: `Bearer ${token}` } : {},
  });
  const ack = await raw.messages.next();
  if ((ack as { type?: string }).type !== 'connection_ack') {
    throw new Error(`expected connection_ack, got ${JSON.stringify(ack)}`);
  }
  return raw;
}
