import http from 'node:http';
import { type PublishTargets, publishBody } from '../protocol.ts';

/** Publishes bench events through the server's public `publish` mutation over HTTP. */
export interface Publisher {
  /**
   * Sends event `seq`. `sentAt` is performance.now() right before the request was written;
   * `done` resolves once the server answered `{"data":{"publish":true}}` (rejects otherwise).
   * Addressed to everyone unless `to` says otherwise.
   */
  publish(seq: number, to?: PublishTargets): { sentAt: number; done: Promise<void> };
  close(): void;
}

export function createPublisher(options: {
  /** http://127.0.0.1:<port> */
  url: string;
  token: string;
  /** The publisher's own NotifyChannel id. */
  channelId: string;
  payloadBytes: number;
  /** How long a publish may take to be answered (default 15 s). */
  timeoutMs?: number;
}): Publisher {
  const timeout = options.timeoutMs ?? 15_000;
  // A kept-alive socket idle for 2 s is closed here rather than reused: the server closes idle
  // sockets after 5 s (Node's keepAliveTimeout), and a publish written as it does so fails with
  // ECONNRESET. Between slow publishes (100,000 subscribers on a busy core) that race was real.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16, timeout: 2_000 });
  const endpoint = `${options.url}/graphql`;
  const headers = {
    'content-type': 'application/json',
    accept: 'application/json',
    authorization: `Bearer ${options.token}`,
  };
  return {
    publish(seq, to) {
      const body = publishBody(options.channelId, seq, options.payloadBytes, to);
      let sentAt = 0;
      const done = new Promise<void>((resolve, reject) => {
        const req = http.request(endpoint, { method: 'POST', headers, agent, timeout });
        req.once('timeout', () => req.destroy(new Error(`publish #${seq}: timed out`)));
        req.once('error', reject);
        req.once('response', (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.once('error', reject);
          res.once('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode === 200 && text.includes('"publish":true')) resolve();
            else reject(new Error(`publish #${seq}: ${res.statusCode} ${text.slice(0, 300)}`));
          });
        });
        sentAt = performance.now();
        req.end(body);
      });
      return { sentAt, done };
    },
    close: () => agent.destroy(),
  };
}
