import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { GRAPHQL_TRANSPORT_WS_PROTOCOL } from 'graphql-ws';
import { type WebSocket, WebSocketServer } from 'ws';

/**
 * The one WebSocket server of an instance: it only performs handshakes. What a socket is for
 * (graphql-ws, the chatter or notifier shim) is decided by the route that accepted it; the
 * connection core tracks the sockets, so `ws` keeps no client list of its own.
 */
export function createWebSocketAcceptor(options: { maxPayloadBytes: number }) {
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: options.maxPayloadBytes,
    // Only graphql-ws clients offer a subprotocol; legacy clients offer none.
    handleProtocols: (protocols) =>
      protocols.has(GRAPHQL_TRANSPORT_WS_PROTOCOL) ? GRAPHQL_TRANSPORT_WS_PROTOCOL : false,
  });
  return {
    /** Completes the handshake of an upgrade request and hands over the socket. */
    accept(
      request: IncomingMessage,
      socket: Duplex,
      head: Buffer,
      onSocket: (ws: WebSocket, request: IncomingMessage) => void,
    ): void {
      wss.handleUpgrade(request, socket, head, onSocket);
    },
  };
}

export type WebSocketAcceptor = ReturnType<typeof createWebSocketAcceptor>;
