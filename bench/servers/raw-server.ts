/**
 * "The limit": a minimal graphql-transport-ws broadcaster on `ws`. It speaks just enough of the
 * protocol (connection_init -> connection_ack, subscribe, complete, ping -> pong) and, for every
 * POST (a publish mutation body), serializes one `next` frame per distinct operation id and
 * writes the same bytes to every subscribed socket. No GraphQL, no auth, no filtering.
 * Prints `{"msg":"listening","url":...}` when ready; exits when stdin closes.
 */
import { createServer, type IncomingMessage } from 'node:http';
import { type WebSocket, WebSocketServer } from 'ws';

/** Sockets by the operation id they subscribed with. */
const groups = new Map<string, Set<WebSocket>>();
let channels = 0;

function unsubscribe(socket: WebSocket, id: string): void {
  const group = groups.get(id);
  group?.delete(socket);
  if (group?.size === 0) groups.delete(id);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

interface PublishBody {
  variables?: { input?: { name?: unknown; message?: unknown } };
}

const server = createServer((req, res) => {
  if (req.method !== 'POST') {
    res.writeHead(404).end();
    return;
  }
  readBody(req).then(
    (text) => {
      const input = (JSON.parse(text) as PublishBody).variables?.input ?? {};
      const notify = { name: input.name, message: input.message };
      for (const [id, sockets] of groups) {
        const frame = Buffer.from(
          JSON.stringify({ id, type: 'next', payload: { data: { notify } } }),
        );
        for (const socket of sockets) socket.send(frame, { binary: false });
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"data":{"publish":true}}');
    },
    () => res.writeHead(400).end(),
  );
});

const wss = new WebSocketServer({ server, path: '/graphql', perMessageDeflate: false });
wss.on('connection', (socket) => {
  const subscribed = new Set<string>();
  socket.on('message', (data: Buffer) => {
    let message: { type?: unknown; id?: unknown };
    try {
      message = JSON.parse(data.toString('utf8')) as typeof message;
    } catch {
      socket.close(4400, 'bad frame');
      return;
    }
    const id = typeof message.id === 'string' ? message.id : '';
    switch (message.type) {
      case 'connection_init':
        socket.send('{"type":"connection_ack"}');
        break;
      case 'ping':
        socket.send('{"type":"pong"}');
        break;
      case 'subscribe': {
        subscribed.add(id);
        let group = groups.get(id);
        if (!group) {
          group = new Set();
          groups.set(id, group);
        }
        group.add(socket);
        channels += 1;
        const channel = { channelId: `raw000000:raw:${channels}` };
        socket.send(JSON.stringify({ id, type: 'next', payload: { data: { notify: channel } } }));
        break;
      }
      case 'complete':
        subscribed.delete(id);
        unsubscribe(socket, id);
        break;
    }
  });
  socket.on('close', () => {
    for (const id of subscribed) unsubscribe(socket, id);
  });
});

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(
    `${JSON.stringify({ msg: 'listening', url: `http://127.0.0.1:${port}` })}\n`,
  );
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
