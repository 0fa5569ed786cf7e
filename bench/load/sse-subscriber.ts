import http from 'node:http';
import { OPERATION_ID, seqOfText } from '../protocol.ts';
import type { DeliverySink, Subscriber } from './subscriber.ts';

/** graphql-sse modes: one stream per operation, or one reserved stream carrying operations. */
export type SseMode = 'distinct' | 'single';

const STREAM_TOKEN_HEADER = 'x-graphql-event-stream-token';

/** Short requests (reservation, operation) reuse a few kept-alive sockets. */
const shortAgent = new http.Agent({ keepAlive: true, maxSockets: 32 });

function shortRequest(
  url: string,
  method: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: shortAgent, timeout: 15_000 });
    req.once('timeout', () => req.destroy(new Error(`${method} ${url}: timed out`)));
    req.once('error', reject);
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.once('error', reject);
    });
    req.end(body);
  });
}

/**
 * A cheap graphql-sse client on plain `http`: the event stream is split into blocks at blank
 * lines and each `next` block is only scanned for `"seq":`. Resolves on the first event.
 * distinct: POST the operation with `accept: text/event-stream`.
 * single: PUT reserves a stream token, GET opens the stream, POST sends the operation with the
 * `x-graphql-event-stream-token` header (202).
 */
export function openSseSubscriber(options: {
  /** http://127.0.0.1:<port> */
  url: string;
  token: string;
  query: string;
  mode: SseMode;
  sink: DeliverySink;
  timeoutMs?: number;
  /** Loopback source address of the stream (127.x.y.z). */
  localAddress?: string;
}): Promise<Subscriber> {
  const { sink, mode } = options;
  const endpoint = `${options.url}/graphql`;
  const auth = { authorization: `Bearer ${options.token}` };
  const timeoutMs = options.timeoutMs ?? 15_000;

  return new Promise((resolve, reject) => {
    let live = false;
    let closing = false;
    let stream: http.ClientRequest | null = null;
    let closed: Promise<void> = Promise.resolve();
    const subscriber: Subscriber = {
      channelId: null,
      close() {
        closing = true;
        stream?.destroy();
        return closed;
      },
    };
    const timer = setTimeout(() => {
      reject(new Error(`${mode} sse: no first event within ${timeoutMs} ms`));
      void subscriber.close();
    }, timeoutMs);
    const lose = (error: Error) => {
      clearTimeout(timer);
      if (!live) {
        reject(error);
        void subscriber.close();
      } else if (!closing) {
        sink.lost(error);
      }
    };

    let pending = '';
    const onBlock = (block: string) => {
      if (live) {
        const seq = seqOfText(block);
        if (seq >= 0) {
          sink.deliver(seq, performance.now());
          return;
        }
      }
      if (block.startsWith('event: next')) {
        if (!live) {
          live = true;
          clearTimeout(timer);
          const channel = /"channelId":"([^"]+)"/.exec(block);
          subscriber.channelId = channel?.[1] ?? null;
          resolve(subscriber);
        }
      } else if (block.startsWith('event: complete')) {
        lose(new Error('sse operation completed by the server'));
      }
    };
    const onData = (chunk: string) => {
      pending += chunk;
      let end = pending.indexOf('\n\n');
      while (end >= 0) {
        onBlock(pending.slice(0, end));
        pending = pending.slice(end + 2);
        end = pending.indexOf('\n\n');
      }
    };

    const openStream = (method: string, headers: Record<string, string>, body?: string) =>
      new Promise<void>((opened, failed) => {
        const req = http.request(endpoint, {
          method,
          agent: false,
          headers: { accept: 'text/event-stream', ...auth, ...headers },
          ...(options.localAddress ? { localAddress: options.localAddress } : {}),
        });
        stream = req;
        closed = new Promise((done) => req.once('close', () => done()));
        req.once('error', (error) => {
          failed(error);
          lose(error);
        });
        req.once('response', (res) => {
          if (res.statusCode !== 200) {
            const error = new Error(`${mode} sse: ${method} answered ${res.statusCode}`);
            failed(error);
            lose(error);
            return;
          }
          res.setEncoding('utf8');
          res.on('data', onData);
          res.once('close', () => lose(new Error(`${mode} sse: stream ended by the server`)));
          opened();
        });
        req.end(body);
      });

    const start = async () => {
      const operation = { query: options.query, extensions: { operationId: OPERATION_ID } };
      if (mode === 'distinct') {
        const body = JSON.stringify({ query: options.query });
        await openStream('POST', { 'content-type': 'application/json' }, body);
        return;
      }
      const reservation = await shortRequest(endpoint, 'PUT', auth);
      if (reservation.status !== 201) {
        throw new Error(`single sse: PUT answered ${reservation.status} ${reservation.body}`);
      }
      const streamToken = reservation.body.trim();
      await openStream('GET', { [STREAM_TOKEN_HEADER]: streamToken });
      const accepted = await shortRequest(
        endpoint,
        'POST',
        { ...auth, 'content-type': 'application/json', [STREAM_TOKEN_HEADER]: streamToken },
        JSON.stringify(operation),
      );
      if (accepted.status !== 202) {
        throw new Error(`single sse: POST answered ${accepted.status} ${accepted.body}`);
      }
    };
    start().catch((error: unknown) =>
      lose(error instanceof Error ? error : new Error(String(error))),
    );
  });
}

/** Releases the kept-alive sockets of the short requests. */
export function closeSseAgent(): void {
  shortAgent.destroy();
}
