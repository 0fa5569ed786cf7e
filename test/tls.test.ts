import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, constants } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startServer, type TestServer } from './support/app.ts';
import { WAIT_MS } from './support/clients.ts';
import { createTestDatabase } from './support/postgres.ts';

describe('TLS: HTTPS with HTTP/2 and an HTTP/1.1 fallback', () => {
  let server: TestServer;
  let dropDb: () => Promise<void>;
  let folder: string;
  let token: string;

  beforeAll(async () => {
    folder = mkdtempSync(join(tmpdir(), 'switchboard-tls-'));
    const [cert, key] = [join(folder, 'cert.pem'), join(folder, 'key.pem')];
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
      ],
      { stdio: 'ignore' },
    );
    const db = await createTestDatabase();
    dropDb = db.drop;
    server = await startServer({ DATABASE_URL: db.url, TLS_CERT_FILE: cert, TLS_KEY_FILE: key });
    token = await server.token('7');
  });

  afterAll(async () => {
    await server?.stop();
    await dropDb?.();
    rmSync(folder, { recursive: true, force: true });
  });

  it('listens on https', () => {
    expect(server.url).toMatch(/^https:\/\//);
  });

  it('answers GraphQL over HTTP/2, and streams SSE over it', async () => {
    const session = connect(server.url, { rejectUnauthorized: false });
    try {
      const query = session.request({
        [constants.HTTP2_HEADER_METHOD]: 'POST',
        [constants.HTTP2_HEADER_PATH]: '/graphql',
        'content-type': 'application/json',
        authorization: `Bearer ${token}`,
      });
      query.end(JSON.stringify({ query: '{ viewer { userId } }' }));
      const [headers] = (await once(query, 'response')) as [Record<string, unknown>];
      expect(headers[':status']).toBe(200);
      let body = '';
      query.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      await once(query, 'end');
      expect(JSON.parse(body)).toEqual({ data: { viewer: { userId: '7' } } });

      const stream = session.request({
        [constants.HTTP2_HEADER_METHOD]: 'POST',
        [constants.HTTP2_HEADER_PATH]: '/graphql',
        'content-type': 'application/json',
        accept: 'text/event-stream',
        authorization: `Bearer ${token}`,
      });
      stream.end(JSON.stringify({ query: 'subscription { notify { __typename } }' }));
      const [streamHeaders] = (await once(stream, 'response')) as [Record<string, unknown>];
      expect(streamHeaders[':status']).toBe(200);
      const firstEvent = await new Promise<string>((resolve, reject) => {
        let text = '';
        const timer = setTimeout(() => reject(new Error(`no event: ${text}`)), WAIT_MS);
        stream.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (text.includes('NotifyChannel')) {
            clearTimeout(timer);
            resolve(text);
          }
        });
      });
      expect(firstEvent).toContain('event: next');
      stream.close();
    } finally {
      session.close();
    }
  });

  it('falls back to HTTP/1.1 for plain requests and WebSocket upgrades', async () => {
    const req = httpsRequest(`${server.url}/healthz`, { rejectUnauthorized: false });
    req.end();
    const [res] = (await once(req, 'response')) as [import('node:http').IncomingMessage];
    expect(res.statusCode).toBe(200);
    expect(res.httpVersion).toBe('1.1');
    res.resume();

    const socket = new WebSocket(server.wsUrl, 'graphql-transport-ws', {
      rejectUnauthorized: false,
    });
    await once(socket, 'open');
    socket.send(JSON.stringify({ type: 'connection_init', payload: { token } }));
    const [ack] = await once(socket, 'message');
    expect(JSON.parse(String(ack))).toEqual({ type: 'connection_ack' });
    socket.close();
  });
});
