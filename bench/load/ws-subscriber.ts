import WebSocket from 'ws';
import { OPERATION_ID, seqOfFrame, WS_PROTOCOL } from '../protocol.ts';
import type { DeliverySink, Subscriber } from './subscriber.ts';

interface Frame {
  type?: string;
  id?: string;
  payload?: { data?: { notify?: { channelId?: string } } } | unknown[];
}

/**
 * A cheap graphql-transport-ws client written against `ws` directly: connection_init with the
 * token, one subscribe, then every `next` frame is only scanned for `"seq":` (no JSON parse).
 * Resolves when the subscription's first event arrived.
 */
export function openWsSubscriber(options: {
  url: string;
  token: string;
  query: string;
  sink: DeliverySink;
  /** Bound of the handshake and the first event; the socket is cut off after it. */
  timeoutMs?: number;
  /** Loopback source address (127.x.y.z): one address has about 28 000 ports. */
  localAddress?: string;
}): Promise<Subscriber> {
  const { sink } = options;
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(options.url, WS_PROTOCOL, {
      perMessageDeflate: false,
      handshakeTimeout: 15_000,
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
    });
    let live = false;
    let closing = false;
    const timeoutMs = options.timeoutMs ?? 15_000;
    const timer = setTimeout(() => {
      reject(new Error(`no first event within ${timeoutMs} ms`));
      closing = true;
      socket.terminate();
    }, timeoutMs);
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    const subscriber: Subscriber = {
      channelId: null,
      close() {
        closing = true;
        if (socket.readyState === WebSocket.CLOSED) return closed;
        socket.close(1000);
        // A peer that does not answer the close handshake is cut off.
        const cut = setTimeout(() => socket.terminate(), 1_000);
        return closed.finally(() => clearTimeout(cut));
      },
    };
    const lose = (error: Error) => {
      clearTimeout(timer);
      if (!live) reject(error);
      else if (!closing) sink.lost(error);
    };

    socket.on('open', () => {
      socket.send(
        JSON.stringify({
          type: 'connection_init',
          payload: { authorization: `Bearer ${options.token}` },
        }),
      );
    });
    socket.on('message', (data: Buffer) => {
      if (live) {
        const seq = seqOfFrame(data);
        if (seq >= 0) {
          sink.deliver(seq, performance.now());
          return;
        }
      }
      let frame: Frame;
      try {
        frame = JSON.parse(data.toString('utf8')) as Frame;
      } catch {
        lose(new Error('unparsable frame'));
        return;
      }
      switch (frame.type) {
        case 'connection_ack':
          socket.send(
            JSON.stringify({
              id: OPERATION_ID,
              type: 'subscribe',
              payload: { query: options.query },
            }),
          );
          break;
        case 'ping':
          socket.send('{"type":"pong"}');
          break;
        case 'next':
          if (!live) {
            live = true;
            clearTimeout(timer);
            const payload = Array.isArray(frame.payload) ? undefined : frame.payload;
            subscriber.channelId = payload?.data?.notify?.channelId ?? null;
            resolve(subscriber);
          }
          break;
        case 'error':
        case 'complete':
          lose(new Error(`subscription ended: ${data.toString('utf8').slice(0, 300)}`));
          closing = true;
          socket.terminate();
          break;
      }
    });
    socket.on('error', (error) => lose(error));
    socket.on('close', (code, reason) => {
      lose(new Error(`socket closed by the server: ${code} ${reason.toString('utf8')}`));
    });
  });
}
