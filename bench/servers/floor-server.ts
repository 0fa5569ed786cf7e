/**
 * "The floor" of a write storm: a bare node http server that answers each POST with one Redis
 * ZADD, the least an applause can cost (no GraphQL, no auth, no rate limit). The load names the
 * meeting and the user in the query string: `POST /?meeting=M&user=U`. REDIS_URL and
 * FLOOR_PREFIX (key prefix) come from the environment. Prints `{"msg":"listening","url":...}`
 * when ready; exits when stdin closes.
 *
 * The same over a WebSocket (the floor of a write on an open socket): each text message
 * `{"id":..,"meeting":..,"user":..}` gets one ZADD, then `{"id":..}` back.
 */
import { createServer } from 'node:http';
import { Redis } from 'ioredis';
import { WebSocketServer } from 'ws';

const redis = new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379');
const prefix = process.env['FLOOR_PREFIX'] ?? 'floor:';

const server = createServer((req, res) => {
  if (req.method !== 'POST') {
    res.writeHead(404).end();
    return;
  }
  const url = new URL(req.url ?? '/', 'http://floor');
  const meeting = url.searchParams.get('meeting') ?? '0';
  const user = url.searchParams.get('user') ?? '0';
  // The body (if any) is read and dropped, as a real endpoint would.
  req.resume();
  req.once('end', () => {
    redis.zadd(`${prefix}${meeting}`, Date.now(), user).then(
      () => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '0' });
        res.end();
      },
      () => res.writeHead(500).end(),
    );
  });
});

const sockets = new WebSocketServer({ server });
sockets.on('connection', (socket) => {
  socket.on('message', (data) => {
    const { id, meeting, user } = JSON.parse(String(data)) as Record<string, string>;
    redis.zadd(`${prefix}${meeting}`, Date.now(), user ?? '0').then(
      () => socket.send(JSON.stringify({ id })),
      () => socket.close(1011),
    );
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
