import type { Viewer } from '../auth/index.ts';
import { CloseCode } from '../close-codes.ts';
import type { Binding, SessionEvent, Transport } from '../domain/connections.ts';
import type { Ending } from '../pubsub/index.ts';

/**
 * How the core reaches one client: the protocol adapter's side of a connection (a WebSocket,
 * an HTTP response carrying an event stream or JSON lines). Wires never decide anything; the
 * core bounds what is written through them and ends them.
 */
export interface Wire {
  /** Bytes written but not yet taken by the kernel (the slow-consumer bound applies to it). */
  readonly buffered: number;
  /** Writes one frame or chunk as it is (text). Only called while the connection is open. */
  write(data: string | Buffer): void;
  /** Holds writes until `uncork`, so the frames of one flush leave in one system call. */
  cork(): void;
  uncork(): void;
  /** Ends the wire the protocol's way: a WebSocket close frame with `code`, a stream's end. */
  end(code: CloseCode, reason: string): void;
  /** Drops the wire at once, without a goodbye (a peer that stopped answering). */
  destroy(): void;
  /** Period of `keepAlive` in ms; 0 for wires that send nothing unasked (JSON lines). */
  readonly keepAliveMs: number;
  /**
   * Sends a keep-alive (a WebSocket ping, an SSE comment). Returns false when the previous one
   * was never answered: the core then destroys the wire.
   */
  keepAlive(): boolean;
}

/** What a connection needs from the core that registered it. */
export interface ConnectionHost {
  /** Unsent bytes tolerated on one wire before the connection is closed as a slow consumer. */
  readonly maxBufferedBytes: number;
  /** Uncorks `connection` once the current burst of writes is over. */
  scheduleFlush(connection: Connection): void;
  /** Called once when the connection ends, whoever ended it. */
  released(connection: Connection): void;
  /** Gives the connection a newer token of its user (limits, expiry and tracking follow). */
  renew(connection: Connection, viewer: Viewer): void;
  /** The connection's session got its first watcher, or lost its last. */
  sessionWatched(connection: Connection, watched: boolean): void;
}

let lastId = 0;

/**
 * One client connection of this instance, whatever its protocol: who it is (the viewer), a
 * bounded write, and a close that ends everything bound to it. The only way to write to a client.
 */
export class Connection implements Binding {
  readonly id = ++lastId;
  readonly transport: Transport;
  /** The caller; null for an anonymous connection. */
  viewer: Viewer | null;
  /** The code the server closed it with; null while open or when the peer went away. */
  closeCode: CloseCode | null = null;
  #closed = false;
  /** What ends with the connection (domain streams, cleanups); null once closed. */
  #held: Ending[] | null = null;
  readonly #host: ConnectionHost;
  readonly #wire: Wire;
  #corked = false;
  /** The expiry bucket (epoch second) the core filed this connection under, if any. */
  expiryBucket: number | null = null;
  /** The bucket of the session warning before expiry, while the session is watched. */
  warningBucket: number | null = null;
  #sessionListeners: Set<(event: SessionEvent) => void> | null = null;
  /** The token expiry already warned about: each token is warned once. */
  #warnedFor: number | null = null;
  /** Ends what follows the connection's user (chat presence); set by the core's tracker. */
  untrack: (() => void) | null = null;

  constructor(host: ConnectionHost, transport: Transport, viewer: Viewer | null, wire: Wire) {
    this.#host = host;
    this.transport = transport;
    this.viewer = viewer;
    this.#wire = wire;
  }

  /** True once the connection closed, by either side. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Ends `item` when the connection closes (at once if it is closed). */
  hold(item: Ending): void {
    if (this.#closed) {
      item.end();
      return;
    }
    // A literal allocates one slot; pushing to [] would reserve seventeen (per connection).
    if (this.#held) this.#held.push(item);
    else this.#held = [item];
  }

  release(item: Ending): void {
    const held = this.#held;
    const index = held ? held.indexOf(item) : -1;
    if (index >= 0) held?.splice(index, 1);
  }

  get wire(): Wire {
    return this.#wire;
  }

  /**
   * Writes pre-serialized bytes (a Buffer is UTF-8 text already encoded, e.g. one frame shared
   * by many connections). Writes of one burst (one tick) are corked and leave together; a
   * connection whose unsent bytes pass the bound is closed as a slow consumer.
   */
  send(data: string | Buffer): void {
    if (this.closed) return;
    const wire = this.#wire;
    if (!this.#corked) {
      this.#corked = true;
      wire.cork();
      this.#host.scheduleFlush(this);
    }
    wire.write(data);
    if (wire.buffered > this.#host.maxBufferedBytes) this.overflow();
  }

  /** Sends what the current burst corked (called by the core once per tick). */
  flush(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.#wire.uncork();
  }

  /** Whether something listens to the connection's session events. */
  get sessionWatched(): boolean {
    return (this.#sessionListeners?.size ?? 0) > 0;
  }

  renew(viewer: Viewer): void {
    if (this.closed) return;
    // A new token is warned about again, even when it expires in the same second.
    this.#warnedFor = null;
    this.#host.renew(this, viewer);
    if (viewer.expiresAt !== null) this.#emit({ kind: 'refreshed', expiresAt: viewer.expiresAt });
  }

  watchSession(listener: (event: SessionEvent) => void): () => void {
    this.#sessionListeners ??= new Set();
    const first = this.#sessionListeners.size === 0;
    this.#sessionListeners.add(listener);
    if (first) this.#host.sessionWatched(this, true);
    return () => {
      if (!this.#sessionListeners?.delete(listener) || this.#sessionListeners.size > 0) return;
      this.#host.sessionWatched(this, false);
    };
  }

  /** The token expires within the warning time (called by the core's sweep). */
  warnExpiring(): void {
    const expiresAt = this.viewer?.expiresAt ?? null;
    if (expiresAt === null || this.#warnedFor === expiresAt) return;
    this.#warnedFor = expiresAt;
    this.#emit({ kind: 'expiring', expiresAt });
  }

  #emit(event: SessionEvent): void {
    for (const listener of this.#sessionListeners ?? []) listener(event);
  }

  /** Its consumer fell behind (a full subscription buffer, too many unsent bytes). */
  overflow(): void {
    this.close(CloseCode.SlowConsumer, 'slow consumer');
  }

  /** Closes the connection with `code` (WebSockets get it; streams simply end). Idempotent. */
  close(code: CloseCode, reason: string): void {
    if (this.closed) return;
    this.closeCode = code;
    this.flush();
    this.#end();
    this.#wire.end(code, reason);
  }

  /** The peer went away or the wire broke: ends what is bound to the connection. Idempotent. */
  gone(): void {
    if (this.closed) return;
    this.#end();
  }

  /** Drops a peer that stopped answering keep-alives. */
  terminate(): void {
    if (this.closed) return;
    this.#end();
    this.#wire.destroy();
  }

  #end(): void {
    this.#corked = false;
    this.#closed = true;
    const held = this.#held;
    this.#held = null;
    this.#host.released(this);
    for (const item of held ?? []) item.end();
  }
}
