/**
 * "The floor" of a write storm: a bare node http server that answers each POST with one Redis
 * ZADD, the least an applause can cost (no GraphQL, no auth, no rate limit). The load names the
 * meeting and the user in the query string: `POST /?meeting=M&user=U`. REDIS_URL and
 * FLOOR_PREFIX (key prefix) come from the environment. Prints `{"msg":"listening","url":...}`
 * when ready; exits when stdin closes.
 */
import { createServer } from 'node:http';
import { Redis } from 'ioredis';

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
