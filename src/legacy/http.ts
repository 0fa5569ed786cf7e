import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Authenticator, Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import { badInput, unauthenticated } from '../errors.ts';
import type { Connection } from '../net/connection.ts';
import { ResponseWire } from '../net/wires.ts';
import { BodyTooLarge, readBody as readTransportBody } from '../transport/http.ts';
import { containsNul } from '../transport/input.ts';
import type { LegacyDeps } from './index.ts';

// HTTP helpers every shim may use. They know no service's wire format: each shim keeps its own
// error bodies, status codes and line formats.

/** The request URL, parsed (the host is irrelevant to the shims). */
export const requestUrl = (req: IncomingMessage): URL =>
  new URL(req.url ?? '/', 'http://localhost');

/**
 * The viewer of a token in the Authorization header, or in `?token=` on a stream (`stream`:
 * the route is a JSON-lines or SSE stream); null without one.
 */
export const viewerOf = (
  auth: Authenticator,
  req: IncomingMessage,
  { stream = false }: { stream?: boolean } = {},
): Promise<Viewer | null> => auth.fromRequest({ headers: req.headers, url: req.url, stream });

/** The viewer of the request; UNAUTHENTICATED with `message` without a token. */
export async function requireViewer(
  auth: Authenticator,
  req: IncomingMessage,
  message: string,
  options: { stream?: boolean } = {},
): Promise<Viewer> {
  const viewer = await viewerOf(auth, req, options);
  if (!viewer) throw unauthenticated(message);
  return viewer;
}

export { BodyTooLarge };

/** The request body as text, at most `limit` bytes (else BodyTooLarge). */
export async function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return (await readTransportBody(req, limit)).toString('utf8');
}

/**
 * Parses JSON text; undefined when it is not JSON (JSON itself has no undefined) or holds a
 * string with U+0000, which Postgres cannot store.
 */
export function parseJson(text: string): unknown {
  try {
    const value = JSON.parse(text) as unknown;
    return containsNul(value) ? undefined : value;
  } catch {
    return undefined;
  }
}

/** Reads and parses a JSON body; BAD_USER_INPUT for a body that is too large or not JSON. */
export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  let text: string;
  try {
    text = await readBody(req, limit);
  } catch (error) {
    if (error instanceof BodyTooLarge) throw badInput(error.message);
    throw error;
  }
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (error) {
    throw badInput(`invalid json: ${(error as Error).message}`);
  }
  // Postgres cannot store U+0000: refused here rather than failing inside a write.
  if (containsNul(value)) throw badInput('Strings must not contain the character U+0000');
  return value;
}

/**
 * An integer query parameter as a normalized string id; undefined when absent, BAD_USER_INPUT
 * with `message` when it is not an integer (with `signed: false`, also when it has a sign).
 */
export function intParam(
  url: URL,
  name: string,
  message: string,
  { signed = true }: { signed?: boolean } = {},
): string | undefined {
  const raw = url.searchParams.get(name);
  if (raw === null) return undefined;
  if (!(signed ? /^[+-]?\d{1,15}$/ : /^\d{1,15}$/).test(raw)) throw badInput(message);
  return String(Number.parseInt(raw, 10));
}

/**
 * Sends a complete response, or only ends the response when the headers already went out
 * (a stream that failed midway cannot change its status any more).
 */
export function respond(
  res: ServerResponse,
  status: number,
  headers: OutgoingHttpHeaders,
  body: string,
): void {
  if (res.headersSent) return void res.end();
  res.writeHead(status, headers);
  res.end(body);
}

/** A JSON body followed by a newline, as the OpenSlides services wrote it. */
export const writeJson = (res: ServerResponse, status: number, body: unknown): void =>
  respond(res, status, { 'content-type': 'application/json' }, `${JSON.stringify(body)}\n`);

/** A plain-text body. */
export const writeText = (res: ServerResponse, status: number, text: string): void =>
  respond(res, status, { 'content-type': 'text/plain; charset=utf-8' }, text);

/**
 * A JSON-lines response tied to a legacy Connection: registered (so dropUser and shutdown end it),
 * closed at token expiry, ended when the client goes away. Nothing is sent before `start`, so a
 * refusal can still answer with a status code.
 */
export interface JsonLinesStream {
  readonly connection: Connection;
  /** Sends status 200 and the headers at once. */
  start(): void;
  /**
   * Writes one line: a string as it is (already JSON), anything else through JSON.stringify.
   * Ends the stream as a slow consumer when unsent bytes pass WS_MAX_BUFFERED_BYTES.
   */
  write(line: unknown): void;
  /** Writes each event of `events` as a line until either ends; then ends the stream. */
  pump<T>(events: AsyncIterable<T>, format: (event: T) => unknown): Promise<void>;
}

/**
 * Opens a JSON-lines stream for `res` (see JsonLinesStream) as a connection of the core; throws
 * RateLimitedError, answering nothing, when a connection limit refuses it.
 */
export function openJsonLines(
  deps: LegacyDeps,
  res: ServerResponse,
  viewer: Viewer | null,
  contentType: string,
): JsonLinesStream {
  // JSON lines carry nothing unasked: no keep-alive (as the originals).
  const wire = new ResponseWire();
  const connection = deps.core.open('legacy-stream', viewer, wire);
  // The response (not the request) closes when the client goes away, or after it ended.
  res.once('close', () => connection.gone());
  const stream: JsonLinesStream = {
    connection,
    start() {
      if (res.headersSent) return;
      if (connection.closed) return void res.end();
      res.writeHead(200, {
        'content-type': contentType,
        'cache-control': 'no-cache',
        // Proxies such as nginx would otherwise hold lines back.
        'x-accel-buffering': 'no',
      });
      res.flushHeaders();
      res.socket?.setNoDelay(true);
      wire.open(res);
    },
    write(line) {
      connection.send(typeof line === 'string' ? `${line}\n` : `${JSON.stringify(line)}\n`);
    },
    async pump(events, format) {
      try {
        for await (const event of events) stream.write(format(event));
      } finally {
        connection.close(CloseCode.Normal, 'stream ended');
      }
    },
  };
  return stream;
}

/**
 * Opens a JSON-lines stream and runs `serve` on it (subscribe, `start`, write or pump). When
 * `serve` throws, the connection closes and the error goes on to the shim, which answers with
 * its own status and error body if the stream had not started.
 */
export async function serveJsonLines(
  deps: LegacyDeps,
  res: ServerResponse,
  viewer: Viewer | null,
  contentType: string,
  serve: (stream: JsonLinesStream) => Promise<void>,
): Promise<void> {
  const stream = openJsonLines(deps, res, viewer, contentType);
  try {
    await serve(stream);
  } catch (error) {
    stream.connection.close(CloseCode.Normal, 'refused');
    throw error;
  }
}
