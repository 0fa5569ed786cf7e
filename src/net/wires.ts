import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { CloseCode } from '../close-codes.ts';
import type { Wire } from './connection.ts';

/** How a WebSocket shim says goodbye: the close frame it sends for a server-side close. */
export type CloseFrame = (code: CloseCode, reason: string) => [code: number, reason: string];

const WIRE = Symbol('wire');
/** Buffers are sent as text frames: they hold UTF-8 JSON. */
const TEXT = { binary: false } as const;
type Tagged = WebSocket & { [WIRE]?: WebSocketWire };

function heardPong(this: Tagged): void {
  const wire = this[WIRE];
  if (wire) wire.awaitingPong = false;
}

/** A WebSocket (ws) as a wire: frames are text messages, keep-alive is ping/pong. */
export class WebSocketWire implements Wire {
  awaitingPong = false;
  readonly #ws: WebSocket;
  readonly #closeFrame: CloseFrame | undefined;
  readonly keepAliveMs: number;

  constructor(ws: WebSocket, keepAliveMs: number, closeFrame?: CloseFrame) {
    this.#ws = ws;
    this.keepAliveMs = keepAliveMs;
    this.#closeFrame = closeFrame;
    (ws as Tagged)[WIRE] = this;
    ws.on('pong', heardPong);
  }

  /** The TCP socket under the WebSocket (ws keeps it private; it is there while open). */
  get #socket(): Socket | undefined {
    return (this.#ws as unknown as { _socket?: Socket })._socket;
  }

  get buffered(): number {
    return this.#ws.bufferedAmount;
  }

  write(data: string | Buffer): void {
    if (this.#ws.readyState === this.#ws.OPEN) this.#ws.send(data, TEXT);
  }

  cork(): void {
    this.#socket?.cork();
  }

  uncork(): void {
    this.#socket?.uncork();
  }

  end(code: CloseCode, reason: string): void {
    const [wireCode, wireReason] = this.#closeFrame?.(code, reason) ?? [code, reason];
    this.#ws.close(wireCode, wireReason);
  }

  destroy(): void {
    this.#ws.terminate();
  }

  keepAlive(): boolean {
    if (this.awaitingPong) return false;
    this.awaitingPong = true;
    if (this.#ws.readyState === this.#ws.OPEN) this.#ws.ping();
    return true;
  }
}

/**
 * An HTTP response carrying a stream (SSE, JSON lines) as a wire. Until `open` the response
 * has sent nothing, so a refusal can still answer with a status; writes before that are held
 * (bounded like any other unsent bytes) and go out right after the headers.
 */
export class ResponseWire implements Wire {
  #res: ServerResponse | null = null;
  #held: (string | Buffer)[] = [];
  #heldBytes = 0;
  #ended = false;
  readonly keepAliveMs: number;
  readonly #keepAlive: string;

  /**
   * @param keepAliveMs period of `keepAliveText`, 0 for none.
   * @param keepAliveText what a keep-alive writes (an SSE comment `:\n\n`).
   */
  constructor(keepAliveMs = 0, keepAliveText = '') {
    this.keepAliveMs = keepAliveMs;
    this.#keepAlive = keepAliveText;
  }

  /** Whether `open` has put the response on this wire. */
  get opened(): boolean {
    return this.#res !== null;
  }

  /** Puts the (already answered, headers sent) response on the wire and writes what was held. */
  open(res: ServerResponse): void {
    if (this.#ended) return void res.end();
    this.#res = res;
    const held = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    for (const data of held) res.write(data);
  }

  get buffered(): number {
    return this.#res ? this.#res.writableLength : this.#heldBytes;
  }

  /**
   * Takes what was written before `open`, as text (frames are UTF-8), leaving nothing held:
   * for a stream that opens on another instance than the one that held its first frames.
   */
  takeHeld(): string {
    const held = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    return held.map((data) => (typeof data === 'string' ? data : data.toString('utf8'))).join('');
  }

  write(data: string | Buffer): void {
    const res = this.#res;
    if (res === null) {
      this.#held.push(data);
      this.#heldBytes += data.length;
    } else if (!res.writableEnded && !res.destroyed) res.write(data);
  }

  cork(): void {
    this.#res?.cork?.();
  }

  uncork(): void {
    this.#res?.uncork?.();
  }

  end(): void {
    this.#ended = true;
    this.#held = [];
    const res = this.#res;
    if (res && !res.writableEnded) res.end();
  }

  destroy(): void {
    this.#ended = true;
    this.#res?.destroy();
  }

  keepAlive(): boolean {
    if (this.#res) this.write(this.#keepAlive);
    return true;
  }
}
