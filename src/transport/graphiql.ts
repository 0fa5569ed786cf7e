import { open, readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../logger.ts';
import { sendJson } from './http.ts';

/** URL path of GraphiQL's assets: `/graphiql/<name>.<content hash>.<ext>`. */
export const GRAPHIQL_ASSETS = '/graphiql/';

/** What scripts/generate.mjs writes beside the assets (src/transport/generated/graphiql/). */
interface Manifest {
  /** URL paths of the page's script, style sheet and icon. */
  script: string;
  style: string;
  icon: string | null;
  /** Every asset file by name, with its content type. */
  files: Record<string, { type: string; bytes: number }>;
}

export interface GraphiQLOptions {
  /** GRAPHIQL: serve the page at all (when false, /graphql is only the API). */
  enabled: boolean;
  logger: Logger;
}

/** A year: the assets' names change with their content, so a cached copy is never stale. */
const IMMUTABLE = 'public, max-age=31536000, immutable';

/**
 * Same origin only. Monaco's workers are files of this server; GraphiQL sets inline styles and
 * its style sheet carries fonts as data: URLs.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "worker-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "font-src 'self' data:",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const DEFAULT_QUERY =
  '# Paste a token into the headers tab as {"Authorization": "Bearer <token>"}\n{\n  viewer {\n    userId\n    group\n  }\n}\n';

/** The encoding to send for an Accept-Encoding header: brotli, else gzip, else none. */
export function pickEncoding(header: string | undefined): 'br' | 'gzip' | null {
  const accepted = new Set<string>();
  for (const part of (header ?? '').split(',')) {
    const [name = '', ...params] = part.trim().toLowerCase().split(';');
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    if (q !== undefined && Number(q.slice(2)) === 0) continue;
    accepted.add(name.trim());
  }
  if (accepted.has('br')) return 'br';
  if (accepted.has('gzip')) return 'gzip';
  return null;
}

/** JSON for a <script type="application/json"> element: nothing in it can close the element. */
const scriptJson = (value: unknown) =>
  JSON.stringify(value).replace(/</g, '\\u003c').replace(/>/g, '\\u003e');

const escapeHtml = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * GraphiQL at /graphql (a browser's GET, `Accept: text/html`) as a page of about 1 KB whose
 * script, style sheet, Monaco workers and icon are separate files under /graphiql/, made from
 * @graphql-yoga/render-graphiql by scripts/generate.mjs (`npm run generate`): content-hashed
 * names, served precompressed (brotli or gzip, by Accept-Encoding) with
 * `Cache-Control: public, max-age=31536000, immutable`. Nothing comes from another host.
 *
 * Subscriptions go over graphql-sse by default; `/graphql?subscriptions=ws` opens the page with
 * graphql-ws instead. The page itself is `no-cache` (it names the current assets).
 * When the generated files are missing the page answers 503 and says how to make them.
 */
export async function createGraphiQL({ enabled, logger }: GraphiQLOptions) {
  const dir = new URL('./generated/graphiql/', import.meta.url);
  let manifest: Manifest | null = null;
  if (enabled) {
    try {
      manifest = JSON.parse(await readFile(new URL('manifest.json', dir), 'utf8')) as Manifest;
    } catch (error) {
      logger.warn({ err: error }, 'GraphiQL assets not found (run `npm run generate`)');
    }
  }

  function page(req: IncomingMessage, res: ServerResponse): void {
    if (!manifest) {
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' });
      return void res.end('GraphiQL assets are missing: run `npm run generate`.\n');
    }
    const url = new URL(req.url ?? '/', 'http://localhost');
    const ws = url.searchParams.get('subscriptions') === 'ws';
    const options = {
      title: 'Switchboard',
      defaultQuery: DEFAULT_QUERY,
      // Both at /graphql itself: app.ts hands graphql-sse requests to the SSE server and
      // upgrades to graphql-ws.
      subscriptionsProtocol: ws ? 'WS' : 'GRAPHQL_SSE',
      subscriptionsEndpoint: '/graphql',
    };
    const body = Buffer.from(
      `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>Switchboard GraphiQL</title>
    ${manifest.icon ? `<link rel="icon" href="${escapeHtml(manifest.icon)}" />` : ''}
    <link rel="stylesheet" href="${escapeHtml(manifest.style)}" />
    <script defer src="${escapeHtml(manifest.script)}"></script>
  </head>
  <body id="body" class="no-focus-outline">
    <noscript>GraphiQL needs JavaScript.</noscript>
    <div id="root"></div>
    <script type="application/json" id="graphiql-options">${scriptJson(options)}</script>
  </body>
</html>
`,
    );
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-length': body.length,
      'cache-control': 'no-cache',
      'content-security-policy': CSP,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  async function asset(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const name = path.slice(GRAPHIQL_ASSETS.length);
    // Only names the manifest lists: nothing else of the disk is reachable.
    const entry = manifest && Object.hasOwn(manifest.files, name) ? manifest.files[name] : null;
    if (!entry) return sendJson(res, 404, { errors: [{ message: 'Not found' }] });
    const encoding = pickEncoding(req.headers['accept-encoding']);
    const file = new URL(encoding === 'br' ? `${name}.br` : encoding ? `${name}.gz` : name, dir);
    // Opened before the headers go out, so a missing file still gets a clean 500.
    const handle = await open(file);
    const { size } = await handle.stat();
    res.writeHead(200, {
      'content-type': entry.type,
      'content-length': size,
      ...(encoding ? { 'content-encoding': encoding } : {}),
      'cache-control': IMMUTABLE,
      vary: 'accept-encoding',
      'x-content-type-options': 'nosniff',
    });
    if (req.method === 'HEAD') {
      await handle.close();
      return void res.end();
    }
    await pipeline(handle.createReadStream(), res).catch((error: unknown) => {
      logger.debug({ err: error, name }, 'GraphiQL asset not sent completely');
    });
  }

  return {
    /** Whether this request is GraphiQL's: its page (when enabled) or one of its assets. */
    matches(req: IncomingMessage, path: string): boolean {
      if (path.startsWith(GRAPHIQL_ASSETS)) return true;
      return (
        enabled &&
        path === '/graphql' &&
        (req.method === 'GET' || req.method === 'HEAD') &&
        (req.headers.accept ?? '').includes('text/html')
      );
    },

    /** Serves the page or an asset (GET or HEAD; 405 otherwise, 404 for unknown assets). */
    async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' });
        return void res.end();
      }
      if (path === '/graphql') return page(req, res);
      return asset(req, res, path);
    },
  };
}

export type GraphiQL = Awaited<ReturnType<typeof createGraphiQL>>;
