import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

const SLOW = 1_100;
const MAX_PENDING = 1_000;

/** Opens a socket that sends `head` and then nothing; resolves its first status code (bounded). */
function trickle(url: URL, head: string, timeoutMs: number) {
  const socket: Socket = connect({ host: url.hostname, port: Number(url.port) });
  socket.setNoDelay(true);
  const status = new Promise<number>((resolve, reject) => {
    let received = '';
    const timer = setTimeout(() => reject(new Error('no answer')), timeoutMs);
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3})/.exec(received);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`closed without an answer: ${JSON.stringify(received)}`));
    });
  });
  socket.write(head);
  return { socket, status };
}

async function gauge(base: string, text: string): Promise<number> {
  const body = await (
    await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(WAIT_MS) })
  ).text();
  const line = body.split('\n').find((l) => l.startsWith(text));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('slow requests', () => {
  const { a, onCleanup } = useInstances(
    {
      HTTP_HEADERS_TIMEOUT_MS: '1000',
      HTTP_REQUEST_TIMEOUT_MS: '4000',
      MAX_PENDING_REQUESTS: String(MAX_PENDING),
    },
    1,
    { redis: false },
  );

  it('get 408 after the timeouts, are counted and capped, and /healthz keeps answering', async () => {
    const url = new URL(a.url);
    const head =
      'POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
      'Content-Length: 100\r\n\r\n{"query":';
    const bound = 30_000;
    const slow = Array.from({ length: SLOW }, () => trickle(url, head, bound));
    const headersOnly = trickle(url, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', bound);
    onCleanup(() => {
      for (const { socket } of [...slow, headersOnly]) socket.destroy();
    });
    const statuses = slow.map(({ status }) => status.catch((error: Error) => error.message));
    const headersStatus = headersOnly.status.catch((error: Error) => error.message);

    // Meanwhile the server answers everything else.
    const health = await fetch(`${a.url}/healthz`, { signal: AbortSignal.timeout(WAIT_MS) });
    expect(health.status).toBe(200);
    const receiving = await gauge(a.url, 'switchboard_connections{transport="http-receiving"}');
    expect(receiving).toBeGreaterThan(0);
    expect(receiving).toBeLessThanOrEqual(MAX_PENDING);

    // Every slow request gets an answer: 503 past the cap (at once), 408 once its time is up.
    const all = await Promise.all(statuses);
    const refused = all.filter((s) => s === 503).length;
    expect(all.filter((s) => s === 408).length + refused).toBe(SLOW);
    expect(refused).toBeGreaterThanOrEqual(SLOW - MAX_PENDING);
    expect(await headersStatus).toBe(408);
    expect(await gauge(a.url, 'switchboard_limit_rejections_total{limit="pendingRequests"}')).toBe(
      refused,
    );
    expect(await gauge(a.url, 'switchboard_connections{transport="http-receiving"}')).toBe(0);
  });
});
