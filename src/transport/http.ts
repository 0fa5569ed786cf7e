import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createSecureServer, type Http2SecureServer } from 'node:http2';
import type { Duplex } from 'node:stream';

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

/**
 * The one HTTP server: plain HTTP/1.1, or with TLS files HTTPS with HTTP/2 and an HTTP/1.1
 * fallback (WebSocket upgrades need HTTP/1.1).
 */
export function createHttpServer(
  onRequest: RequestHandler,
  onUpgrade: UpgradeHandler,
  tls?: TlsFiles,
): Server | Http2SecureServer {
  const server = tls
    ? createSecureServer(
        {
          cert: readFileSync(tls.certFile),
          key: readFileSync(tls.keyFile),
          allowHTTP1: true,
        },
        onRequest as never,
      )
    : createServer(onRequest);
  server.on('upgrade', onUpgrade);
  return server;
}

/** Rejects an upgrade request before any WebSocket handshake. */
export function refuseUpgrade(socket: Duplex, status: number, message: string): void {
  socket.end(`HTTP/1.1 ${status} ${message}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}

/** Rejected by `readBody` when a body is larger than allowed. */
export class BodyTooLarge extends Error {}

/**
 * The request body, at most `limit` bytes (whatever the content-length says, so chunked bodies
 * are bounded too); beyond that it rejects with BodyTooLarge and discards the rest, so the
 * socket stays usable for the error response.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      req.off('data', onData);
      req.resume();
      chunks.length = 0;
      reject(new BodyTooLarge(`The body is larger than ${limit} bytes`));
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}
