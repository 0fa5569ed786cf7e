import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Authenticator, isLoopback } from '../auth/index.ts';
import type { Logger } from '../logger.ts';
import { sendJson } from './http.ts';

/** The page's files (src/transport/demo/), read once at start-up. */
const FILES: Record<string, { file: string; type: string }> = {
  '/demo': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/demo/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/demo/demo.js': { file: 'demo.js', type: 'text/javascript; charset=utf-8' },
  '/demo/demo.css': { file: 'demo.css', type: 'text/css; charset=utf-8' },
};

/** Same-origin only: the page talks to /graphql over fetch and WebSocket, nothing else. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Demo tokens are valid this long (a demo session). */
const DEMO_TOKEN_TTL_S = 8 * 3600;
/** The chat group of demo tokens, so demo users can chat with each other. */
const DEMO_GROUP = 'demo';
const USER_ID = /^[A-Za-z0-9_.-]{1,64}$/;

export interface DemoOptions {
  auth: Authenticator;
  logger: Logger;
}

/** Whether a request path belongs to the demo. */
export const isDemoPath = (path: string): boolean => path === '/demo' || path.startsWith('/demo/');

/**
 * The live demo page at /demo: applause, presence, notify and chat of one meeting, all over the
 * public GraphQL API (see src/transport/demo/). Routes (GET or HEAD):
 *
 * - `/demo[?token=<jwt>][&meeting=1][&users=ada,grace,linus]`: the page;
 * - `/demo/demo.js`, `/demo/demo.css`: its script and style;
 * - `/demo/token?user=<id>`: `{"token","userId"}`, a token for that user in chat group `demo`,
 *   only when the server generated its own key (development: no AUTH_TOKEN_KEY, no
 *   AUTH_JWKS_URL, which the configuration allows only on a loopback HOST outside production)
 *   and the request arrived on a loopback address. Otherwise it answers 404: tokens then come
 *   from their issuer.
 *
 * When the files are missing (a build without them) the demo answers 404 and the server runs on.
 */
export async function createDemo({ auth, logger }: DemoOptions) {
  const dir = new URL('./demo/', import.meta.url);
  const bodies = new Map<string, Buffer>();
  try {
    for (const { file } of Object.values(FILES)) {
      if (!bodies.has(file)) bodies.set(file, await readFile(new URL(file, dir)));
    }
  } catch (error) {
    logger.warn({ err: error }, 'demo page files not found; /demo is disabled');
    bodies.clear();
  }

  return {
    async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' });
        return void res.end();
      }
      if (path === '/demo/token') return token(req, res);
      const entry = FILES[path];
      const body = entry && bodies.get(entry.file);
      if (!entry || !body) return sendJson(res, 404, { errors: [{ message: 'Not found' }] });
      res.writeHead(200, {
        'content-type': entry.type,
        'content-length': body.length,
        'cache-control': 'no-cache',
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
        ...(entry.file === 'index.html' ? { 'content-security-policy': CSP } : {}),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    },
  };

  async function token(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!auth.generatedKey || !isLoopback(req.socket.localAddress)) {
      return sendJson(res, 404, {
        errors: [{ message: 'Demo tokens exist only with a generated key; pass ?token=<jwt>' }],
      });
    }
    const userId = new URL(req.url ?? '/', 'http://demo').searchParams.get('user') ?? '';
    if (!USER_ID.test(userId)) {
      return sendJson(res, 400, {
        errors: [{ message: 'user must be 1 to 64 letters, digits, "_", "." or "-"' }],
      });
    }
    const jwt = await auth.sign({ sub: userId, group: DEMO_GROUP, ttlSeconds: DEMO_TOKEN_TTL_S });
    res.setHeader('cache-control', 'no-store');
    sendJson(res, 200, { token: jwt, userId });
  }
}

export type Demo = Awaited<ReturnType<typeof createDemo>>;
