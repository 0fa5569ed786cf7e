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

/** How long a client may take to send a request, and how many bodies may arrive at once. */
export interface RequestLimits {
  /** Time to receive the request headers (HTTP_HEADERS_TIMEOUT_MS); then 408. */
  headersTimeoutMs: number;
  /** Time to receive the whole request, body included (HTTP_REQUEST_TIMEOUT_MS); then 408. */
  requestTimeoutMs: number;
  /** Requests whose body is still arriving (MAX_PENDING_REQUESTS); more get 503 at once. */
  maxPendingRequests: number;
  /** Told about each request refused by maxPendingRequests. */
  onLimit?: (limit: 'pendingRequests') => void;
}

/** The HTTP server, and how many requests are still receiving their body now. */
export type HttpServer = (Server | Http2SecureServer) & { readonly receiving: () => number };

const hasBody = (req: IncomingMessage) =>
  req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;

/**
 * The one HTTP server: plain HTTP/1.1, or with TLS files HTTPS with HTTP/2 and an HTTP/1.1
 * fallback (WebSocket upgrades need HTTP/1.1). With `limits`, a client that trickles its headers
 * or body gets 408 after the timeout (checked every second), and requests still receiving a
 * body are counted: past `maxPendingRequests` a new one gets 503 and the connection closes, so
 * slow uploads cannot pile up and starve everything else (health checks keep answering).
 * Streams are not affected: their request is complete when the stream starts.
 */
export function createHttpServer(
  onRequest: RequestHandler,
  onUpgrade: UpgradeHandler,
  tls?: TlsFiles,
  limits?: RequestLimits,
): HttpServer {
  let receiving = 0;
  const guarded: RequestHandler = (req, res) => {
    if (!limits || req.complete || !hasBody(req)) return onRequest(req, res);
    if (receiving >= limits.maxPendingRequests) {
      limits.onLimit?.('pendingRequests');
      res.shouldKeepAlive = false;
      res.setHeader('retry-after', '1');
      res.setHeader('connection', 'close');
      sendJson(res, 503, {
        errors: [
          { message: 'Too many requests are still sending their body (MAX_PENDING_REQUESTS)' },
        ],
      });
      return;
    }
    receiving += 1;
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      receiving -= 1;
    };
    req.once('end', release);
    req.once('close', release);
    onRequest(req, res);
  };
  const timeouts = limits
    ? {
        headersTimeout: limits.headersTimeoutMs,
        requestTimeout: limits.requestTimeoutMs,
        // Node checks the two timeouts on this interval (default 30 s).
        connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
      }
    : {};
  const server = tls
    ? createSecureServer(
        {
          cert: readFileSync(tls.certFile),
          key: readFileSync(tls.keyFile),
          allowHTTP1: true,
        },
        guarded as never,
      )
    : createServer(timeouts, guarded);
  server.on('upgrade', onUpgrade);
  return Object.assign(server, { receiving: () => receiving });
}

/**
 * What a server's `clientError` listener writes for `error`: 408 for a request that was not
 * received in time (HTTP_HEADERS_TIMEOUT_MS / HTTP_REQUEST_TIMEOUT_MS), else 400.
 */
export function clientErrorResponse(error: Error & { code?: string }): string {
  const timeout =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT' || error.code === 'ERR_HTTP_HEADERS_TIMEOUT';
  return timeout
    ? 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'
    : 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n';
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
